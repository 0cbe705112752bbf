"""Compiled modules: build, call, export (atomically, with a JSON manifest) and load."""

from __future__ import annotations

import threading

import numpy as np

from . import exports, relayout
from .records import defaults, verify
from .records.log import log_argument
from .targets import TargetInfo, resolve
from .variants import Workload, from_json

_DTYPES = {"float32": np.float32, "float64": np.float64, "float16": np.float16}


def build(w: Workload, target="x86", tuning_log=None, **target_options) -> "Module":
    """Compile a workload for a target. ``tuning_log``: None (the default) applies the default records
    (``records.defaults.default_schedule``: the user's log, the shipped one, or one carried over from the nearest
    CPU's); a folder applies that log's records only; False applies none. A channels-first workload
    without a record of its own runs its channels-last twin's record, if any (``relayout``). With the
    default records and no record of either, a record borrowed from the nearest tuned workloads
    (``defaults.borrowed_schedule``: for the workload or its twin, whichever runs faster). Without a record that
    reproduces torch here, the target's fallback schedule from schedules/. The Module's ``schedule``
    says which ran ("tuned", "carried over", "borrowed" or "fallback"), ``schedule_source`` from which
    log (and, borrowed, which workload), and ``kernel`` which workload the compiled kernel computes.
    Raises ValueError for a log that is not a folder or is for another target."""
    if not isinstance(w, Workload):
        raise TypeError(f"build takes a Workload (convtvm.workload(...)), got {type(w).__name__}")
    tuning_log = log_argument(tuning_log, "build")
    info = resolve(target, **target_options)
    backend = info.backend
    backend.prepare()
    in_process = backend.runs_in_process()
    kernel, chosen = w, _schedule_for(w, info, tuning_log)
    twin = relayout.twin(w) if chosen.mod is None and tuning_log is not False and in_process else None
    if twin is not None:  # a channels-first workload without records: its channels-last twin's, if any
        twin_chosen = _schedule_for(twin, info, tuning_log)
        if twin_chosen.mod is not None:
            kernel, chosen = twin, twin_chosen
    if chosen.mod is None and tuning_log is None:  # no record of either: borrow one, for the faster
        lent = defaults.borrowed_schedule([w] + ([twin] if twin is not None else []), info)
        if lent is not None:
            kernel, chosen = lent
    packing = None
    if chosen.mod is not None:
        mod, packing = split_weight_packing(chosen.mod, kernel)
    else:
        mod = backend.fallback(w.prim_func(), info)
    if kernel is not w:  # the twin's kernel: the data's relayout compiled beside it
        mod = _with_function(mod, relayout.TO_CHANNELS_LAST, relayout.data_to_channels_last(w))
    lib = backend.compile(mod, info)
    m = Module(lib, w, info, chosen.kind, packing=packing, schedule_source=chosen.source, kernel=kernel)
    if in_process:
        m.function("main")  # linked, loaded and looked up now, as part of the build, not in the first call (~50 ms)
    return m


def _with_function(mod, name: str, func):
    """A copy of the IRModule ``mod`` with the PrimFunc ``func`` added as ``name``."""
    import tvm
    out = tvm.IRModule(dict(mod.functions_items()))
    out[name] = func
    return out


def _schedule_for(w: Workload, info: TargetInfo, tuning_log) -> defaults.Schedule:
    """The record ``build`` applies to ``w`` (see ``build`` for ``tuning_log``)."""
    if tuning_log is None:
        return defaults.default_schedule(w, info, lend=False)
    if tuning_log is False:
        return defaults.Schedule(None, "fallback", None)
    mod = verify.best_schedule(w, info, tuning_log)
    return defaults.Schedule(mod, "tuned" if mod is not None else "fallback", str(tuning_log) if mod else None)


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


ALIGNMENT = 64  # bytes: TVM allocates, and its compiled kernels assume, buffers aligned to this


def _torch_arg(x, name: str):
    """A torch tensor as a compiled CPU kernel may read it in place: on the CPU, dense, row-major and
    ``ALIGNMENT``-aligned, no gradient, conjugation or negation pending. A tensor that is all that
    goes through DLPack as it is (zero-copy); any other is copied once into one that is."""
    if x.device.type != "cpu":
        raise ValueError(f"input {name!r} is on {x.device}; this module runs on the CPU")
    if x.requires_grad:
        x = x.detach()
    if x.is_conj() or x.is_neg():
        x = x.resolve_conj().resolve_neg()
    if x.is_contiguous() and x.data_ptr() % ALIGNMENT == 0:
        return x
    import torch
    y = torch.empty(x.shape, dtype=x.dtype)
    # copied on this thread: torch's own copy is parallel, and its OpenMP threads then spin on the cores
    # TVM's pool is about to need (a permuted 1x64x56x56 input: ~3 ms a call instead of ~0.1 ms)
    np.copyto(y.numpy(), x.numpy())
    if y.data_ptr() % ALIGNMENT:  # torch's allocator aligns to 64 bytes; this guards another allocator
        import tvm
        return tvm.runtime.tensor(y.numpy())
    return y


def _numpy(x, name: str) -> np.ndarray:
    """A C-contiguous numpy array of ``x`` (numpy, or a CPU torch tensor)."""
    if _is_torch(x):
        if x.device.type != "cpu":
            raise ValueError(f"input {name!r} is on {x.device}; this module runs on the CPU")
        x = x.detach().resolve_conj().resolve_neg().numpy()
    return np.ascontiguousarray(x)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


class Module:
    """A compiled workload. ``m(*xs)`` takes numpy arrays (returns numpy) or torch tensors (returns
    torch). Torch tensors are read in place through DLPack when they are what the kernel assumes
    (CPU, contiguous, 64-byte aligned) and copied once when not; numpy arrays are always copied.
    ``m.bind(*constants)`` returns a callable of the data alone."""

    def __init__(self, lib, workload: Workload, target: TargetInfo, schedule: str, path: str | None = None,
                 packing: dict | None = None, schedule_source: str | None = None, kernel: Workload | None = None):
        self.lib, self.workload, self.target, self.schedule, self.path = lib, workload, target, schedule, path
        self.schedule_source = schedule_source  # the log the record came from; None for the fallback
        self.packing = packing  # see split_weight_packing; None: the kernel reads the weights as given
        self.kernel = kernel or workload  # what the compiled kernel computes: the workload or its twin
        self._perms = relayout.input_perms(workload) if self.kernel is not workload else None
        self._remote = None  # the library loaded where it runs, for a target that does not run here
        self._backend = target.backend
        self._in_process = self._backend.runs_in_process()
        self._functions: dict = {}
        self._to_channels_last = self._optional_function(relayout.TO_CHANNELS_LAST) if self._perms else None
        self._scratch = threading.local()  # per thread: the data in the twin's layout (_data_to_channels_last)

    def _optional_function(self, name: str):
        """``function(name)``, or None when the library has no such function (an older export)."""
        if not self._in_process:
            return None
        try:
            return self.function(name)
        except Exception:  # noqa: BLE001 - TVM raises its own error types for a missing function
            return None

    def function(self, name: str):
        """The compiled function ``name`` of the library (looked up once: a lookup costs ~15 us)."""
        if name not in self._functions:
            self._functions[name] = self.lib[name]
        return self._functions[name]

    def __repr__(self) -> str:
        source = f" from {self.schedule_source}" if self.schedule_source else ""
        twin = f", on the {self.kernel.params['layout']} kernel" if self._perms else ""
        return f"<convtvm.Module {self.workload} on {self.target.tag} ({self.schedule}{source}{twin})>"

    # -- calling ----------------------------------------------------------------------------------
    def check_inputs(self, xs, names=None, shapes=None) -> None:
        """Raise ValueError naming the input unless each of ``xs`` is a numpy array or torch tensor of
        the workload's shape and dtype (``names``/``shapes``: a subset of the inputs, in order)."""
        w = self.workload
        names = w.input_names if names is None else names
        shapes = w.input_shapes if shapes is None else shapes
        if len(xs) != len(shapes):
            raise ValueError(f"{w.variant} takes {len(shapes)} inputs ({', '.join(names)}), got {len(xs)}")
        for name, shape, x in zip(names, shapes, xs):
            if not (isinstance(x, np.ndarray) or _is_torch(x) and hasattr(x, "data_ptr")):
                raise ValueError(f"input {name!r} must be a numpy array or a torch tensor, got {type(x).__name__}")
            if tuple(x.shape) != tuple(shape):
                raise ValueError(f"input {name!r} has shape {tuple(x.shape)}, expected {tuple(shape)}")
            dtype = str(x.dtype).replace("torch.", "")
            if dtype != w.dtype:
                raise ValueError(f"input {name!r} has dtype {dtype}, expected {w.dtype}")

    def __call__(self, *xs):
        self.check_inputs(xs)
        if not self._in_process:
            return self._backend.run(self, xs)
        return self._run("main", self._to_kernel(xs), self.workload.input_names)

    def _to_kernel(self, xs, first: int = 0) -> list:
        """Inputs ``first``, ``first + 1``, ... as the kernel reads them: views permuted to the
        channels-last twin's layouts when the kernel is the twin's (copied later where not dense)."""
        if self._perms is None:
            return list(xs)
        perms = self._perms[first:first + len(xs)]
        out = [x if p is None else x.permute(p) if _is_torch(x) else np.transpose(x, p) for x, p in zip(xs, perms)]
        if first == 0 and self._to_channels_last is not None and _is_torch(xs[0]):
            out[0] = self._data_to_channels_last(xs[0], out[0])
        return out

    def _data_to_channels_last(self, x, view):
        """The torch data ``x`` in the twin's layout: ``view`` (the permuted view) where that is dense
        already (a tensor in torch's channels_last memory format), else written by the compiled
        relayout when ``x`` itself is dense (``_torch_arg``'s copy otherwise). The relayout writes into
        a buffer kept per thread and overwritten by the thread's next call: it is only ever the
        kernel's input, never returned, and a fresh one a call would cost its page faults."""
        if view.is_contiguous() or x.device.type != "cpu":
            return view
        x = x.detach().resolve_conj().resolve_neg()
        if not x.is_contiguous() or x.data_ptr() % ALIGNMENT:
            return view
        y = getattr(self._scratch, "data", None)
        if y is None or y.dtype != x.dtype:
            import torch
            y = torch.empty(view.shape, dtype=x.dtype)
            if y.data_ptr() % ALIGNMENT:  # torch's allocator aligns to 64 bytes; this guards another allocator
                return view
            self._scratch.data = y
        self._to_channels_last(x, y)
        return y

    def _run(self, fname: str, xs, names, bound=()):
        """Call ``fname`` on ``xs`` (then the already converted ``bound`` arguments) and a new output:
        torch out when every one of ``xs`` is torch, numpy out otherwise; in the workload's layout
        (a channels-first view of the twin's channels-last output where the kernel is the twin's)."""
        import tvm
        k = self.kernel
        if all(_is_torch(x) for x in xs):
            import torch
            args = [_torch_arg(x, n) for x, n in zip(xs, names)]
            out = torch.empty(k.output_shape, dtype=getattr(torch, k.dtype))
            self.function(fname)(*args, *bound, out)
            return out if self._perms is None else out.permute(relayout.output_perm(self.workload))
        args = [tvm.runtime.tensor(_numpy(x, n)) for x, n in zip(xs, names)]
        out = tvm.runtime.empty(k.output_shape, k.dtype)
        self.function(fname)(*args, *bound, out)
        out = out.numpy()
        return out if self._perms is None else np.transpose(out, relayout.output_perm(self.workload))

    def bind(self, *constants) -> "BoundModule":
        """``m.bind(weight[, bias, ...])``: every input after the data, bound once, as a callable of the
        data alone (``bound(x)``, numpy or torch as ``m(*xs)``). Where the tuned kernel reads its
        weights in a packed layout they are packed here, once, not on every call."""
        return BoundModule(self, constants)

    def time(self, *xs, number: int = 10, repeat: int = 5) -> list[float]:
        """Per-repeat mean seconds of the kernel (TVM's time_evaluator)."""
        import tvm
        if not self._in_process:
            return self._backend.time(self, xs, number, repeat)
        name, args = self.kernel_args(xs)
        f = getattr(self.lib, "mod", self.lib).time_evaluator(name, tvm.cpu(), number=number, repeat=repeat)
        return list(f(*args).results)

    def kernel_args(self, xs) -> tuple[str, list]:
        """(function, its arguments with an output buffer) for timing the kernel on these inputs, the
        weights packed beforehand when the tuned kernel reads them packed (as MetaSchedule measured it)."""
        import tvm
        args = [tvm.runtime.tensor(_numpy(x, n)) for x, n in zip(self._to_kernel(xs), self.workload.input_names)]
        out = tvm.runtime.empty(self.kernel.output_shape, self.kernel.dtype)
        name, order = self._prepacked_args(args)
        return name, [*order, out]

    def _prepacked_args(self, args) -> tuple[str, list]:
        """(function, its input arguments) for TVM tensors ``args`` in the workload's order: ``main`` and
        ``args`` when the kernel reads the weights as given; else ``prepacked`` and the inputs with the
        weights packed (``weight_prepack`` run once here)."""
        import tvm
        if not self.packing:
            return "main", list(args)
        packed = [tvm.runtime.empty(shape, dtype) for shape, dtype in self.packing["packed"]]
        self.function("weight_prepack")(*[args[i] for i in self.packing["weights"]], *packed)
        pick = {"input": args, "packed": packed}
        return "prepacked", [pick[kind][i] for kind, i in self.packing["args"]]

    # -- export -----------------------------------------------------------------------------------
    def export(self, path) -> str:
        """Write ``path`` (a shared library) and ``path.json`` (its sealed manifest), each atomically.
        Raises ValueError when either path exists and is not a regular file."""
        fields = {"workload": self.workload.to_json(), "schedule": self.schedule,
                  "schedule_source": self.schedule_source, "packing": self.packing,
                  "kernel": self.kernel.to_json() if self._perms else None}
        self.path = exports.export_with_manifest(path, self.lib, self.target, fields)
        return self.path


class BoundModule:
    """A Module with every input after the data bound (``Module.bind``): ``bound(x)`` -> output."""

    def __init__(self, module: Module, constants):
        import tvm
        w = module.workload
        module.check_inputs(constants, w.input_names[1:], w.input_shapes[1:])
        self.module = module
        self._constants = constants
        self._fast = None
        if not module._in_process:
            return
        k = module.kernel
        data_slot = tvm.runtime.empty(k.input_shapes[0], k.dtype)  # stands for the data while packing
        args = [data_slot] + [tvm.runtime.tensor(_numpy(c, n))
                              for c, n in zip(module._to_kernel(constants, first=1), w.input_names[1:])]
        self._fname, order = module._prepacked_args(args)
        if not any(a is data_slot for a in order):
            raise RuntimeError(f"the {w.variant} kernel does not read its data input")
        if order[0] is not data_slot:  # convtvm kernels take the data first
            raise RuntimeError(f"the {w.variant} kernel does not take its data first")
        self._bound = order[1:]
        self._kernel = module.function(self._fname)
        import torch
        # what a torch call needs checked and made, prepared once: this call is the hot path
        self._fast = (torch.Tensor, torch.Size(w.input_shapes[0]), getattr(torch, w.dtype), k.output_shape, torch.empty)
        self._out_perm = relayout.output_perm(w) if module._perms else None

    def __repr__(self) -> str:
        return f"<convtvm.BoundModule {self.module!r}>"

    def __call__(self, x):
        if self._fast and type(x) is self._fast[0]:  # the common torch call, checked
            _, shape, dtype, out_shape, empty = self._fast
            m = self.module
            if x.shape == shape and x.dtype == dtype and m._perms is None:
                out = empty(out_shape, dtype=dtype)
                self._kernel(_torch_arg(x, "data"), *self._bound, out)
                return out
            if x.shape == shape and x.dtype == dtype and m._to_channels_last is not None:
                # the twin's kernel: relayout, kernel, a channels-first view of its output
                data = m._data_to_channels_last(x, x.permute(m._perms[0]))
                out = empty(out_shape, dtype=dtype)
                self._kernel(_torch_arg(data, "data"), *self._bound, out)
                return out.permute(self._out_perm)
        m, w = self.module, self.module.workload
        m.check_inputs([x], w.input_names[:1], w.input_shapes[:1])
        if not m._in_process:
            return m(x, *self._constants)
        return m._run(self._fname, m._to_kernel([x]), w.input_names[:1], self._bound)


def load(path, manifest: dict | None = None) -> Module:
    """Load a single op written by ``Module.export``; ``manifest``: its manifest, already read by
    ``exports.read`` (else read here). Raises FileNotFoundError when ``path`` is missing, ValueError when
    its manifest is missing, malformed, edited or a network's, or when the library's sha256 does not
    match the manifest's."""
    if manifest is None:
        path, manifest = exports.read(path)
    mpath = exports.manifest_path(path)
    if manifest.get("kind") == "model":
        raise ValueError(f"{path} is a compiled network: load it with convtvm.load")
    try:
        w = from_json(manifest["workload"])
        kernel = from_json(manifest["kernel"]) if manifest.get("kernel") else None
        info = resolve(manifest["target"]["tvm_target"])
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{mpath}: the manifest lacks a field convtvm needs ({e!r})") from None
    lib = info.backend.load(info, str(path))
    return Module(lib, w, info, manifest.get("schedule", "?"), str(path), packing=manifest.get("packing"),
                  schedule_source=manifest.get("schedule_source"), kernel=kernel)
