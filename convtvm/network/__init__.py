"""Whole networks: a torch.nn.Module compiled into one Relax VM executable built from convtvm's kernels.

The pipeline, one module per stage:

- ``importer``: ``torch.export`` -> Relax, weights bound as constants; training-mode layers and
  ops, and dtypes other than float32, refused;
- ``passes``: BatchNorm folded into the convolutions, a squeeze-excitation's scale folded into the
  convolution that reads it, the bounds of the gathers;
- ``legalize``: every convolution and pooling op as a convtvm kernel (Winograd where the target
  says so), the target's sigmoid/SiLU;
- ``schedule``: ``lower`` (passes, legalization, fusion) and ``schedule`` (tuned records, else the
  fallback schedule, else a generic loop nest);
- ``compile``: ``compile_model`` and ``load_model``;
- ``runtime``: ``Model`` (call, profile, export) and ``profile_table``.

Model tuning lives in ``convtvm.tuning.network``, ``bench_model`` in ``convtvm.bench.network``.
"""

from .compile import compile_model, load_model
from .importer import UnsupportedOp, import_torch
from .runtime import Model, profile_table
from .schedule import lower

__all__ = ["compile_model", "load_model", "UnsupportedOp", "import_torch", "Model", "profile_table", "lower"]
