"""Whole networks: a torch.nn.Module compiled into one Relax VM executable built from convtvm's kernels.

The pipeline, one module per stage:

- ``importer``: ``torch.export`` (or an ExportedProgram, or an ONNX model, read from a ``.pt2`` or
  ``.onnx`` file by ``load_model_file``) -> Relax, weights bound as constants; training-mode layers
  and ops, dtypes other than float32, and ops the frontends do not convert refused;
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
from .importer import OnnxModel, UnsupportedOp, import_model, import_torch, load_model_file
from .runtime import Model, profile_table
from .schedule import lower

__all__ = ["compile_model", "load_model", "OnnxModel", "UnsupportedOp", "import_model", "import_torch",
           "load_model_file", "Model", "profile_table", "lower"]
