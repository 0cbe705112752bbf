"""Compiled modules: build, call, export (atomically, with a JSON manifest) and load."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from . import __version__
from .targets import TargetInfo, resolve
from .variants import Workload, from_json

_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}


def build(w: Workload, target="x86", tuning_log=None, **target_options) -> "Module":
    """Compile a workload for a target: the best tuning record when the log has one, otherwise the
    target's fallback schedule from schedules/."""
    import tvm

    from . import fallback, tuning

    info = resolve(target, **target_options)
    if info.kind == "cuda":
        from . import cuda
        cuda.register()  # compile device code ahead of time with the chosen compiler, for the target's arch
    record = tuning.best_schedule(w, info, tuning_log) if tuning_log else None
    packing = None
    if record is not None:
        mod, schedule = record, "tuned"
        mod, packing = split_weight_packing(mod, w)
    else:
        mod, schedule = fallback.apply(w.prim_func(), info.kind, info.config["fallback"], info.target), "fallback"
    with info.target:
        lib = tvm.compile(mod, target=info.target)
    return Module(lib, w, info, schedule, packing=packing)


def split_weight_packing(mod, w: Workload):
    """A tuned kernel may read its weights in a packed layout (MetaSchedule's RewriteLayout) and repack
    them on every call. Add two functions beside ``main`` (which still does both): ``weight_prepack``
    (weights -> packed weights) and ``prepacked`` (inputs with packed weights -> output), so that
    inference with fixed weights, and the benchmark, pack once. Returns (module, packing), packing
    None when the kernel repacks nothing; else {"weights": input positions prepack reads,
    "packed": [[shape, dtype]...], "args": [["input", i] | ["packed", j]...] of ``prepacked``}."""
    import tvm
    from tvm import relax
    bb = relax.BlockBuilder()
    params = [relax.Var(f"in{i}", relax.TensorType(s, w.dtype)) for i, s in enumerate(w.input_shapes)]
    kernel = bb.add_func(mod["main"], "kernel")
    with bb.function("main", params):
        bb.emit_func_output(bb.emit(relax.call_tir(kernel, params, relax.TensorType(w.output_shape, w.dtype))))
    split = relax.transform.SplitLayoutRewritePreproc()(bb.get())
    names = {gv.name_hint for gv, _ in split.functions_items()}
    if "kernel_weight_prepack" not in names:
        return mod, None
    where = {p: ["input", i] for i, p in enumerate(params)}
    packing = {"weights": [], "packed": [], "args": []}
    for binding in split["main"].body.blocks[0].bindings:
        value = binding.value
        if isinstance(value, relax.Call) and value.op.name == "relax.call_tir":
            callee, args = value.args[0].name_hint, list(value.args[1].fields)
            if callee == "kernel_weight_prepack":
                packing["weights"] = [where[a][1] for a in args]
                outs = value.ty.fields if hasattr(value.ty, "fields") else [value.ty]
                packing["packed"] = [[[int(d) for d in t.shape], str(t.dtype)] for t in outs]
                packed_var = binding.var
                if len(outs) == 1:
                    where[binding.var] = ["packed", 0]
            elif callee == "kernel_prepacked":
                packing["args"] = [where[a] for a in args]
        elif isinstance(value, relax.TupleGetItem) and value.tuple_value.same_as(packed_var):
            where[binding.var] = ["packed", int(value.index)]
        elif isinstance(value, relax.Var) and value in where:
            where[binding.var] = where[value]
    if len(packing["args"]) != len(w.input_shapes):
        raise RuntimeError(f"unexpected weight-packing split of the tuned {w.variant} kernel")
    out = tvm.IRModule({"main": mod["main"]})
    for name in ("weight_prepack", "prepacked"):
        out[name] = split[f"kernel_{name}"].with_attr("global_symbol", name)
    return out, packing


class Module:
    """A compiled workload. ``m(*xs)`` takes numpy arrays (returns numpy) or torch tensors (returns
    torch, zero-copy through DLPack)."""

    def __init__(self, lib, workload: Workload, target: TargetInfo, schedule: str, path: str | None = None,
                 packing: dict | None = None):
        self.lib, self.workload, self.target, self.schedule, self.path = lib, workload, target, schedule, path
        self.packing = packing  # see split_weight_packing; None: the kernel reads the weights as given
        self._remote = None

    def __repr__(self) -> str:
        return f"<convtvm.Module {self.workload} on {self.target.tag} ({self.schedule})>"

    # -- calling ----------------------------------------------------------------------------------
    def check_inputs(self, xs) -> None:
        w = self.workload
        if len(xs) != len(w.input_shapes):
            raise ValueError(f"{w.variant} takes {len(w.input_shapes)} inputs ({', '.join(w.input_names)}), "
                             f"got {len(xs)}")
        for name, shape, x in zip(w.input_names, w.input_shapes, xs):
            if tuple(x.shape) != tuple(shape):
                raise ValueError(f"input {name!r} has shape {tuple(x.shape)}, expected {tuple(shape)}")
            dtype = str(x.dtype).replace("torch.", "")
            if dtype != w.dtype:
                raise ValueError(f"input {name!r} has dtype {dtype}, expected {w.dtype}")

    def __call__(self, *xs):
        self.check_inputs(xs)
        if self.target.is_remote:
            return self._run_remote(xs)
        import tvm
        if all(type(x).__module__.startswith("torch") for x in xs):
            import torch
            args = [x.contiguous() for x in xs]
            out = torch.empty(self.workload.output_shape, dtype=getattr(torch, self.workload.dtype), device=args[0].device)
            self.lib["main"](*args, out)
            return out
        args = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in xs]
        out = tvm.runtime.empty(self.workload.output_shape, self.workload.dtype)
        self.lib["main"](*args, out)
        return out.numpy()

    def _run_remote(self, xs):
        from . import devices
        return devices.run(self, xs)

    def time(self, *xs, number: int = 10, repeat: int = 5) -> list[float]:
        """Per-repeat mean seconds of the kernel (TVM's time_evaluator)."""
        import tvm
        from . import devices
        if self.target.is_remote:
            return devices.time(self, xs, number, repeat)
        name, args = self.kernel_args(xs)
        f = getattr(self.lib, "mod", self.lib).time_evaluator(name, tvm.cpu(), number=number, repeat=repeat)
        return list(f(*args).results)

    def kernel_args(self, xs) -> tuple[str, list]:
        """(function, its arguments with an output buffer) for timing the kernel on these inputs, the
        weights packed beforehand when the tuned kernel reads them packed (as MetaSchedule measured it)."""
        import tvm
        args = [tvm.runtime.tensor(np.ascontiguousarray(np.asarray(x))) for x in xs]
        out = tvm.runtime.empty(self.workload.output_shape, self.workload.dtype)
        if not self.packing:
            return "main", [*args, out]
        packed = [tvm.runtime.empty(shape, dtype) for shape, dtype in self.packing["packed"]]
        self.lib["weight_prepack"](*[args[i] for i in self.packing["weights"]], *packed)
        pick = {"input": args, "packed": packed}
        return "prepacked", [pick[kind][i] for kind, i in self.packing["args"]] + [out]

    # -- export -----------------------------------------------------------------------------------
    def export(self, path) -> str:
        """Write ``path`` (a shared library) and ``path.json`` (its manifest), each atomically."""
        fields = {"workload": self.workload.to_json(), "schedule": self.schedule, "packing": self.packing}
        self.path = export_with_manifest(path, self.lib, self.target, fields)
        return self.path


def write_library(lib, target: TargetInfo, path: str) -> None:
    """A built library as a shared object for its target: cross-linked for ARM; for CUDA carrying the
    kernels compiled for the target's arch, not CUDA source."""
    if target.kind == "arm":
        from .arm import device
        device.export_library(lib, path)
    elif target.kind == "cuda":
        from . import cuda
        cuda.export_library(lib, path, arch=json.loads(target.target_json).get("arch", "sm_90"))
    else:
        lib.export_library(path)


def export_with_manifest(path, lib, target: TargetInfo, fields: dict) -> str:
    """Write ``lib`` (``write_library``) and its manifest beside it, each atomically: the library goes
    to a temp file in the same folder and is renamed into place after the manifest. ``fields`` are
    the kind-specific manifest entries; a CUDA library's also records the arch, format and kernels."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".so")
    os.close(fd)
    try:
        write_library(lib, target, tmp)
        if target.kind == "cuda":  # arch, format, kernels of the compiled code in the file
            from . import cuda
            fields = {**fields, "cuda": cuda.manifest_entry(tmp)}
        manifest = {"convtvm": __version__,
                    "target": {"kind": target.kind, "tvm_target": json.loads(target.target_json)},
                    "tvm": _tvm_version(), "sha256": _sha256(tmp),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        write_json_atomic(manifest_path(path), manifest)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(path)


def manifest_path(path) -> Path:
    return Path(str(path) + ".json")


def write_json_atomic(path, data) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tvm_version() -> str:
    import tvm
    return tvm.__version__


def load(path) -> Module:
    """Load a module written by ``Module.export`` (checks the manifest and the file's sha256)."""
    path = Path(path).resolve()
    mpath = manifest_path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such module")
    if not mpath.exists():
        raise ValueError(f"{path}: manifest {mpath.name} is missing; export modules with Module.export")
    manifest = json.loads(mpath.read_text())
    if manifest.get("sha256") != _sha256(path):
        raise ValueError(f"{path}: sha256 does not match its manifest (file changed after export)")
    if manifest.get("kind") == "model":
        from .graph import load_model
        return load_model(path, manifest)
    w = from_json(manifest["workload"])
    info = resolve(manifest["target"]["tvm_target"])
    from . import devices
    lib = devices.load_library(info, str(path))
    return Module(lib, w, info, manifest.get("schedule", "?"), str(path), packing=manifest.get("packing"))
