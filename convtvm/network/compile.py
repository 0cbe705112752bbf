"""A torch.nn.Module compiled into one Relax VM executable, and an exported one loaded back.

    net = convtvm.compile_model(model, [x], target="x86", tuning_log=None)
    y = net(x)                      # numpy in -> numpy out, torch in -> torch out
    net.export("build/effnet.so")   # + build/effnet.so.json (manifest, "kind": "model")
    net = convtvm.load("build/effnet.so")

``compile_model`` runs the stages (``importer``, ``passes``, ``legalize``, ``schedule``), then
``tvm.compile`` (Relax VM) with the target backend's dataflow-lowering and finalisation passes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections import Counter

from ..metrics import TOLERANCE, close
from ..records import defaults
from ..records.log import log_argument
from ..exports import tvm_version
from ..targets import TargetInfo, check_target_options, resolve
from .importer import OnnxModel, import_model, reference_outputs
from .passes import index_bounds, safe_takes
from .runtime import Model
from .schedule import lower, schedule


def compile_model(module, example_inputs, target="x86", tuning_log=None, **target_options) -> Model:
    """Compile a network for ``example_inputs``' shapes into one executable: its inference. The network
    is a torch.nn.Module, a ``torch.export.ExportedProgram`` or an ``importer.OnnxModel``
    (``importer.load_model_file`` reads both from files, with their example inputs).

    x86 runs here; "arm" cross-compiles for aarch64 and runs on the ARM device (the emulated one
    unless ``convtvm.backends.arm.set_remote`` names a board); "cuda" builds here (nvcc) and runs
    where a GPU is. ``target_options``: arm_cpu, cuda_arch, num_cores (any other keyword is a
    ValueError). ``tuning_log``: None for the default records, False for the untuned schedules, or a
    tuning log folder. Returns a ``Model``.

    Training mode: the module is exported in eval mode and left as it was given (every submodule's
    training flag restored). A module in training mode whose BatchNorm, InstanceNorm (with running
    statistics), Dropout or RReLU layers are in training mode is refused (``UnsupportedOp``, a
    ValueError, naming the layer): in training mode torch answers with the batch's statistics or
    random drops, which an inference executable cannot reproduce; call ``module.eval()`` first. Any
    other module in training mode (e.g. a freshly made ``nn.Embedding``) compiles as in eval mode: a
    custom submodule that branches on ``self.training`` compiles its eval branch.

    Float32 networks only (integer inputs, such as indices, are fine). An integer input that indexes
    a table (an embedding, ``index_select``, ``x[idx]``, ``gather``) is checked at every call: an
    index outside the table is an IndexError naming the input, raised before the network runs."""
    import tvm
    check_target_options(target_options, "compile_model", ("module", "example_inputs", "target", "tuning_log"))
    import torch
    if not isinstance(module, (torch.nn.Module, torch.export.ExportedProgram, OnnxModel)):
        raise TypeError(f"compile_model takes a torch.nn.Module (or an ExportedProgram, or an OnnxModel from "
                        f"network.importer.load_model_file), got {type(module).__name__}")
    if not isinstance(example_inputs, (list, tuple)):
        raise TypeError(f"compile_model's example_inputs is a list or tuple of tensors, got "
                        f"{type(example_inputs).__name__}: write [x]")
    tuning_log = log_argument(tuning_log, "compile_model")
    info = resolve(target, **target_options)
    info.backend.prepare()  # e.g. CUDA: device code compiled ahead of time, for the target's arch
    example_inputs = list(example_inputs)
    times = {}
    t0 = time.time()
    mod = import_model(module, example_inputs)
    bounds = index_bounds(mod)
    mod = safe_takes(mod)
    times["import_s"] = time.time() - t0
    t0 = time.time()
    lowered, workloads = Counter(), []
    lowered_mod = lower(mod, info, lowered, workloads)
    logs = (defaults.network_logs(info) if tuning_log is None else
            [] if tuning_log is False else [(tuning_log, False)])
    mod, how = schedule(lowered_mod, info, logs)
    times["lower_s"] = time.time() - t0
    net = _build(mod, how, info, example_inputs, lowered, bounds, times)
    # another CPU's records, replayed here: the network must still compute torch's result
    if how["carried over"] and not _matches_torch(net, module, example_inputs):
        own = [(log, carried) for log, carried in logs if not carried]
        warnings.warn(f"{', '.join(str(log) for log, c in logs if c)}'s records, replayed for {info.tag}, do not "
                      f"reproduce torch's result on this network: compiled without them", stacklevel=2)
        mod, how = schedule(lowered_mod, info, own)
        net = _build(mod, how, info, example_inputs, lowered, bounds, times)
    net.workloads = workloads
    return net


def _build(mod, how, info: TargetInfo, example_inputs, lowered, bounds, times) -> Model:
    """``tvm.compile`` of the scheduled ``mod`` into a Model; its build time goes into ``times``."""
    import tvm
    t0 = time.time()
    outputs = _tensor_specs(mod["main"].ret_ty)
    ex = tvm.compile(mod, target=info.backend.vm_target(info), relax_pipeline=_vm_pipeline(info))
    times["build_s"] = time.time() - t0
    inputs = [{"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")} for x in example_inputs]
    net = Model(ex, info, inputs, outputs, dict(lowered), dict(how), index_bounds=bounds)
    net.tir, net.compile_times = mod, times
    return net


def _matches_torch(net: Model, module, example_inputs, tol: float = TOLERANCE) -> bool:
    """The compiled network gives the network's own (eval-mode) result on ``example_inputs`` (each
    output ``metrics.close`` to the reference's within ``tol``); False where nothing here runs the
    network (``importer.reference_outputs``)."""
    ref = reference_outputs(module, example_inputs)
    if ref is None:
        return False
    got = net(*[x.numpy() for x in example_inputs])
    got = list(got) if isinstance(got, tuple) else [got]
    return all(close(g, r, tol) for g, r in zip(got, ref))


def _vm_pipeline(info: TargetInfo):
    import tvm
    backend = info.backend.relax_backend()
    target = info.backend.vm_target(info)
    return tvm.transform.Sequential(backend.pipeline.dataflow_lower_passes(target)
                                    + backend.pipeline.finalize_passes(target))


def _tensor_specs(ty) -> list:
    if hasattr(ty, "fields"):
        return [spec for f in ty.fields for spec in _tensor_specs(f)]
    return [{"shape": [int(d) for d in ty.shape], "dtype": str(ty.dtype)}]


def load_model(path, manifest: dict) -> Model:
    """The Model exported at ``path`` with its ``manifest`` (``convtvm.load`` has checked its sha256).
    Raises ValueError when it was exported with another TVM version."""
    if manifest.get("tvm") != tvm_version():
        raise ValueError(f"{path}: exported with TVM {manifest.get('tvm')}, this is TVM {tvm_version()}")
    info = resolve(manifest["target"]["tvm_target"])
    with _drop_scope_warnings():
        lib = info.backend.load(info, str(path))
    return Model(lib, info, manifest["inputs"], manifest["outputs"], manifest.get("lowered_ops", {}),
                 manifest.get("schedules", {}), str(path), index_bounds=manifest.get("index_bounds"))


@contextlib.contextmanager
def _drop_scope_warnings():
    """TVM 0.27 logs a "Scope Loaded:" warning per constant when it loads an executable (hundreds
    for a network): drop those lines from stderr, keep everything else."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            sys.stderr.writelines(ln for ln in f.read().decode(errors="replace").splitlines(keepends=True)
                                  if "Scope Loaded:" not in ln)
