"""A compiled network at run time: ``Model`` (call, profile, export) and its FLOP counts."""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np

from ..exports import export_with_manifest
from ..targets import TargetInfo
from ..fallback import is_reduction


class Model:
    """A compiled network. ``net(*xs)``: numpy in -> numpy out, torch in -> torch out (a tuple when
    the network returns several tensors). It runs where its target is: in this process (x86), on
    the ARM device over RPC, or on the local GPU; the executable is loaded there on the first call."""

    def __init__(self, lib, target: TargetInfo, inputs: list, outputs: list, lowered_ops: dict, schedules: dict,
                 path: str | None = None, index_bounds: list | None = None):
        self.lib, self.target, self.inputs, self.outputs, self.path = lib, target, inputs, outputs, path
        self.index_bounds = list(index_bounds or [])  # inputs that index a table: checked at every call
        self.lowered_ops, self.schedules = lowered_ops, schedules  # op -> count; how -> TIR functions
        self._vm = self._dev = self._remote = None
        self.workloads, self.tir, self.compile_times = [], None, {}

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(i["shape"])) for i in self.inputs)
        return (f"<convtvm.Model ({shapes}) on {self.target.tag}: {sum(self.lowered_ops.values())} convtvm ops, "
                f"schedules {self.schedules}>")

    @property
    def vm(self):
        """The Relax VM, on the target's device (started on first use)."""
        if self._vm is None:
            self._vm, self._dev = self._open()
        return self._vm

    def _open(self):
        return self.target.backend.open_vm(self)

    def run(self, *arrays) -> list:
        """numpy arrays in, list of numpy arrays out. An input that indexes a table must hold indices
        inside it (IndexError otherwise, before anything runs)."""
        import tvm
        check_indices(self.index_bounds, arrays)
        vm = self.vm
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), self._dev) for a in arrays]
        out = self.target.backend.call_vm(vm, args)
        return [o.numpy() for o in _flatten(out)]

    def __call__(self, *xs):
        """The network on ``xs``: torch tensors in, torch tensors out; numpy arrays in, numpy out. Each
        input must have the shape and dtype compiled for. Raises ValueError (TypeError for an input that
        is no array) naming the input otherwise."""
        if len(xs) != len(self.inputs):
            raise ValueError(f"the network takes {len(self.inputs)} input(s), got {len(xs)}")
        for k, (x, spec) in enumerate(zip(xs, self.inputs)):
            if not (hasattr(x, "shape") and hasattr(x, "dtype")):
                raise TypeError(f"input {k} is a {type(x).__name__}: give a torch tensor or a numpy array of "
                                f"shape {tuple(spec['shape'])} {spec['dtype']}")
            dtype = str(x.dtype).replace("torch.", "")
            if list(x.shape) != list(spec["shape"]) or dtype != spec["dtype"]:
                raise ValueError(f"input {k} is {tuple(x.shape)} {dtype}; the network was compiled for "
                                 f"{tuple(spec['shape'])} {spec['dtype']}")
        is_torch = all(type(x).__module__.startswith("torch") for x in xs)
        outs = self.run(*[x.detach().cpu().numpy() if is_torch else np.asarray(x) for x in xs])
        if is_torch:
            import torch
            outs = [torch.from_numpy(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def profile(self, *xs, runs: int = 5) -> list[dict]:
        """Where an inference's time goes: each function the VM calls (the TIR kernels, the VM's own
        builtins) with its calls and milliseconds per inference, slowest first, measured with a VM
        instrument around every call (``runs`` inferences after one warm-up). The instrument is a Python
        call before and after each VM call, so the figures add up to more than an uninstrumented
        inference; their shares are what they are for. ``gflops`` where the function's FLOPs are known
        (an in-memory model: ``self.tir``)."""
        import tvm
        from tvm import relax
        if not self.target.backend.runs_in_process():
            raise ValueError(f"profile runs on this machine's CPU; this model's target is {self.target.kind}")
        xs = [x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x) for x in xs]
        check_indices(self.index_bounds, xs)
        vm = relax.VirtualMachine(self.lib, tvm.cpu())  # its own VM: an instrument cannot be removed
        args = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in xs]
        secs, started = Counter(), {}
        calls = Counter()

        def instrument(func, symbol, before, ret, *_):
            if before:
                started[symbol] = time.perf_counter()
            else:
                secs[symbol] += time.perf_counter() - started[symbol]
                calls[symbol] += 1
            return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

        vm.set_instrument(instrument)
        vm["main"](*args)  # warm-up, not counted
        secs.clear()
        calls.clear()
        for _ in range(runs):
            vm["main"](*args)
        flops = _function_flops(self.tir) if self.tir is not None else {}
        rows = [{"function": name, "calls": calls[name] // runs, "ms": 1e3 * s / runs,
                 "gflops": flops[name] * calls[name] / s / 1e9 if flops.get(name) else None}
                for name, s in secs.items()]
        return sorted(rows, key=lambda r: -r["ms"])

    def export(self, path) -> str:
        """Write ``path`` (a shared library) and ``path.json`` (its manifest), each atomically."""
        fields = {"kind": "model", "inputs": self.inputs, "outputs": self.outputs,
                  "lowered_ops": self.lowered_ops, "schedules": self.schedules, "index_bounds": self.index_bounds}
        self.path = export_with_manifest(path, self.lib, self.target, fields)
        return self.path


def profile_table(rows: list, top: int = 12) -> str:
    """Markdown table of ``Model.profile`` rows: the ``top`` slowest, with their share of the total."""
    total = sum(r["ms"] for r in rows) or 1.0
    lines = ["| function | calls | ms per inference | share | GFLOP/s |", "|---|---|---|---|---|"]
    for r in rows[:top]:
        gf = f"{r['gflops']:.1f}" if r.get("gflops") else "n/a"
        lines.append(f"| {r['function']} | {r['calls']} | {r['ms']:.3f} | {100 * r['ms'] / total:.1f}% | {gf} |")
    return "\n".join(lines)


def _function_flops(mod) -> dict:
    """TIR function name -> FLOPs per call of its reductions: 2 per multiply-add of the convolution,
    the Winograd GEMM and transforms, the pooling sums. An elementwise epilogue is not counted (TVM's
    ``estimate_tir_flops`` counts its every float op: SiLU's polynomial made EfficientNetV2-S's 1x1 convs
    read 25% above their arithmetic), so GFLOP/s compare with the CPU's peak. Functions without a
    reduction are left out."""
    from tvm import tirx
    flops = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            n = reduction_flops(func)
            if n:
                flops[gv.name_hint] = n
    return flops


def reduction_flops(func) -> int:
    """2 x the iterations of every reduction block of a TIR function, scheduled or not: a block's
    iteration domain is the whole computation it does, however its loops are split."""
    import tvm
    from tvm import s_tir, tirx
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    total, todo = 0, list(sch.get_child_blocks(sch.get_sblock("root")))
    while todo:
        rv = todo.pop()
        block = sch.get(rv)
        todo += sch.get_child_blocks(rv)
        extents = [iv.dom.extent for iv in block.iter_vars]
        if is_reduction(sch, rv) and all(isinstance(e, tirx.IntImm) for e in extents):  # symbolic: not counted
            total += 2 * math.prod(int(e) for e in extents)
    return total


def _flatten(out) -> list:
    import tvm
    if isinstance(out, tvm.runtime.Tensor):
        return [out]
    return [t for o in out for t in _flatten(o)]


def check_indices(bounds: list[dict], arrays) -> None:
    """IndexError naming the input, the index and the range, when an input that indexes a table
    (``passes.index_bounds``) holds an index outside it; before anything runs."""
    for b in bounds:
        a = np.asarray(arrays[b["input"]])
        if not a.size:
            continue
        lo, hi = a.min(), a.max()
        if lo < 0 or hi >= b["size"]:
            bad = int(lo if lo < 0 else hi)
            raise IndexError(f"input {b['input']} ({b['name']!r}) holds index {bad}, outside the {b['size']} entries "
                             f"its {b['op']} reads: every index must be in [0, {b['size'] - 1}]")
