"""The interface every target's backend implements, with the behaviour of a CPU that runs modules
in this process (x86; aarch64 on an aarch64 host).

A backend receives a ``TargetInfo`` (``convtvm.targets``) as ``info``: it reads ``info.kind``,
``info.target`` (the TVM target), ``info.target_json`` and ``info.config`` (schedules/<kind>.json),
and imports nothing of convtvm above this package.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np


class Backend:
    """One target kind. Subclasses set ``kind`` and override what differs from a local CPU."""

    kind = ""
    #: MetaSchedule may measure this target's candidates in this process (no worker processes).
    tunes_in_process = False
    #: ``fallback`` schedules any function (no generic schedule is needed behind it).
    fallback_is_total = False
    #: The ``tvm.s_tir.tensor_intrin`` submodules this target's search space may ask for; None: all.
    tensor_intrinsics: tuple | None = None

    # -- targets ------------------------------------------------------------------------------------
    def claims(self, target: dict) -> bool:
        """Whether a TVM target dict is for this backend."""
        return False

    def target(self, base: dict, arm_cpu: str | None, cuda_arch: str, num_cores: int | None) -> dict:
        """The TVM target dict for this kind: ``base`` (schedules/<kind>.json "target") completed with
        the options ``targets.resolve`` takes. Raises ValueError for an option value that is invalid."""
        return dict(base)

    def tag(self, target: dict) -> str:
        """The short name of a target (for log folders): ``<kind>-<mcpu or generic>``."""
        return f"{self.kind}-{target.get('mcpu', 'generic')}"

    def runs_in_process(self) -> bool:
        """Whether this target's modules run in this process, on this machine's CPU."""
        return True

    def verifies_records(self) -> bool:
        """Whether a tuned record is checked against torch here before it is applied."""
        return False

    def carries_records(self) -> bool:
        """Whether records of another CPU of this kind may be carried over (replayed and checked here)."""
        return False

    def flops_per_cycle(self, cpuinfo: dict) -> int | None:
        """fp32 FLOPs one core retires per cycle at peak (FMA), given /proc/cpuinfo's fields (name ->
        words of its value); None where no peak is known."""
        return None

    def has_device(self) -> bool:
        """Whether modules built here can run from this machine (else they can only be built and exported)."""
        return True

    # -- compiling ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Install what TVM needs to compile for this target (idempotent). Called before a build."""

    def compile(self, mod, info):
        """``tvm.compile`` of a scheduled TIR (or Relax) module for ``info``'s target; returns the library."""
        import tvm
        self.prepare()
        with info.target:
            return tvm.compile(mod, target=info.target)

    def fallback(self, func, info):
        """The untuned schedule of a TIR PrimFunc as an IRModule with ``main`` (``convtvm.fallback``).
        Raises what the schedule raises for a structure it does not handle."""
        from .. import fallback
        return fallback.cpu(func, info.config["fallback"])

    def fallback_trace(self, func, info):
        """The fallback's schedule of ``func`` as a trace that replays on it (as a tuning record's
        does), or None where the target's fallback is not one traced schedule."""
        from .. import fallback
        return fallback.cpu_schedule(func, info.config["fallback"]).trace

    def vm_target(self, info):
        """The TVM target a Relax VM executable is compiled for."""
        return info.target

    def relax_backend(self):
        """The ``tvm.relax.backend`` module whose pipeline lowers a network for this target."""
        from tvm.relax.backend import cpu_generic
        return cpu_generic

    # -- artifacts ----------------------------------------------------------------------------------
    def export(self, lib, info, path: str) -> None:
        """Write a built library to ``path`` as a shared object this target loads."""
        lib.export_library(path)

    def manifest_entry(self, path: str) -> dict:
        """Manifest fields describing the exported library at ``path`` beyond the common ones."""
        return {}

    def load(self, info, path: str):
        """The library exported at ``path``, loaded where it runs. Raises RuntimeError when it cannot
        run from this machine."""
        return load_fresh(path)

    # -- running ------------------------------------------------------------------------------------
    def connect(self, rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                tuning: bool = False) -> None:
        """Run this target's modules (``tuning``: measure its tuning candidates) on the device a TVM RPC
        server (``rpc`` HOST:PORT) or tracker (``tracker`` HOST:PORT, ``key``) names. Raises ValueError
        when any is given to a target that does not run over RPC (the flags would be ignored)."""
        given = [f for f, v in (("--rpc", rpc), ("--rpc-tracker", tracker), ("--rpc-key", key)) if v]
        if given:
            raise ValueError(f"{', '.join(given)}: target {self.kind} runs on this machine, not over RPC "
                             "(--target arm runs on a device; x86 tunes on RPC servers)")

    def device(self):
        """The TVM device this target's modules run on."""
        import tvm
        return tvm.cpu()

    def remote_library(self, module):
        """(library, device) to call ``module.lib`` with, for a target that does not run in process."""
        return module.lib, self.device()

    def run(self, module, xs):
        """``module``'s ``main`` on ``xs`` (numpy arrays, or torch tensors: then a torch output), for a
        target that does not run in process; returns the output."""
        torch_in = all(type(x).__module__.startswith("torch") for x in xs)
        if torch_in:
            xs = [x.detach().cpu().numpy() for x in xs]
        lib, dev = self.remote_library(module)
        args, out = _args(module, xs, dev)
        lib["main"](*args, out)
        y = out.numpy()
        if torch_in:
            import torch
            return torch.from_numpy(y)
        return y

    def time(self, module, xs, number: int, repeat: int) -> list[float]:
        """Per-repeat mean seconds of ``module``'s ``main`` on ``xs`` (TVM's time_evaluator), for a
        target that does not run in process."""
        lib, dev = self.remote_library(module)
        args, out = _args(module, xs, dev)
        f = getattr(lib, "mod", lib).time_evaluator("main", dev, number=number, repeat=repeat)
        return list(f(*args, out).results)

    def open_vm(self, model):
        """(Relax VirtualMachine of ``model.lib``, its device)."""
        from tvm import relax
        dev = self.device()
        return relax.VirtualMachine(model.lib, dev), dev

    def call_vm(self, vm, args):
        """The outputs of the VM's ``main`` on ``args`` (tensors on the VM's device)."""
        return vm["main"](*args)

    # -- tuning -------------------------------------------------------------------------------------
    def builder_runner(self, evaluator, initializer=None, info=None):
        """(MetaSchedule builder, runner) measuring in worker processes of this machine; ``evaluator``
        is the runner's EvaluatorConfig, ``initializer`` runs once in each worker, ``info`` the
        TargetInfo tuned for."""
        import os

        from tvm.s_tir import meta_schedule as ms
        builder = ms.builder.LocalBuilder(max_workers=os.cpu_count(), timeout_sec=120, initializer=initializer)
        runner = ms.runner.LocalRunner(evaluator_config=evaluator, timeout_sec=60, initializer=initializer)
        return builder, runner


def load_fresh(path: str):
    """``tvm.runtime.load_module`` of a private copy of ``path``: the dynamic loader hands back a library
    already loaded under the same name, so a module exported again to the same path, then loaded in
    the same process, would run the old code."""
    import tvm
    with tempfile.TemporaryDirectory(prefix="convtvm_load_") as tmp:
        copy = Path(tmp) / Path(path).name
        shutil.copyfile(path, copy)
        return tvm.runtime.load_module(str(copy))  # mapped: the copy may go once it is loaded


def _args(module, xs, dev):
    """(input tensors on ``dev``, an empty output tensor) for ``module``'s workload."""
    import tvm
    args = [tvm.runtime.tensor(np.ascontiguousarray(np.asarray(x)), dev) for x in xs]
    out = tvm.runtime.empty(module.workload.output_shape, module.workload.dtype, dev)
    return args, out
