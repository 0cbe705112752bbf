"""Running modules that cannot run in this process: ARM (emulated aarch64 device or a real board
over TVM RPC) and CUDA (a local GPU)."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

# Where ARM modules run: None = the emulated device; or {"rpc": "HOST:PORT"} /
# {"tracker": "HOST:PORT", "key": KEY} for a real board. Set by the CLI's --rpc / --rpc-tracker.
ARM_REMOTE: dict = {}
_SESSION = None


def arm_session():
    """The process-wide ARM session (started on first use)."""
    global _SESSION
    if _SESSION is None:
        from .arm import device
        _SESSION = device.open_session(**ARM_REMOTE)
    return _SESSION


def set_arm_remote(rpc: str | None = None, tracker: str | None = None, key: str | None = None) -> None:
    global _SESSION
    ARM_REMOTE.clear()
    ARM_REMOTE.update({k: v for k, v in dict(rpc=rpc, tracker=tracker, key=key).items() if v})
    _SESSION = None


def cuda_device():
    import tvm
    dev = tvm.cuda(0)
    if not dev.exist:
        raise RuntimeError("no CUDA GPU is present on this machine: a CUDA module can be built and exported "
                           "here, but runs only where a GPU is (convtvm.load it there)")
    return dev


def load_library(info, path: str):
    """Load an exported library for its target: here (x86, or ARM on an aarch64 host), on the local
    GPU (CUDA: a clear error where none is), or lazily on the ARM device."""
    import tvm
    if info.kind == "cuda":
        cuda_device()
    elif info.is_remote:
        from .arm import device
        return _ArmLibrary(path, device)
    return _load_fresh(path)


def _load_fresh(path: str):
    """``tvm.runtime.load_module`` of a private copy of ``path``: the dynamic loader hands back a library
    already loaded under the same name, so a module exported again to the same path, then loaded in
    the same process, would run the old code."""
    import tvm
    with tempfile.TemporaryDirectory(prefix="convtvm_load_") as tmp:
        copy = Path(tmp) / Path(path).name
        shutil.copyfile(path, copy)
        return tvm.runtime.load_module(str(copy))  # mapped: the copy may go once it is loaded


class _ArmLibrary:
    """An exported aarch64 library, loaded into the ARM session on first call. With ``temp_dir``
    (where a library built in this process was cross-linked), that folder goes with the object."""

    def __init__(self, path, device, temp_dir: str | None = None):
        self.path, self._device, self._mod = path, device, None
        if temp_dir is not None:
            weakref.finalize(self, shutil.rmtree, temp_dir, ignore_errors=True)

    def remote(self):
        if self._mod is None:
            self._mod = self._device.load_module(arm_session(), self.path)
        return self._mod


def arm_remote_library(module):
    """(``module.lib`` loaded on the ARM session, the session's CPU device) for a convtvm Module or
    Model. A library built here is cross-linked to a temp folder first, removed with the module; the
    handle is cached on the module (``module._remote``) and its own ``lib`` stays as built, so it
    still exports."""
    if module._remote is None:
        lib = module.lib
        if not isinstance(lib, _ArmLibrary):
            from .arm import device
            temp_dir = tempfile.mkdtemp(prefix="convtvm_arm_")
            path = os.path.join(temp_dir, "library.so")
            lib = _ArmLibrary(path, device, temp_dir)  # owns temp_dir from here, also if the export fails
            device.export_library(module.lib, path)
        module._remote = lib
    return module._remote.remote(), arm_session().cpu()


def _args(module, xs, dev):
    import tvm
    args = [tvm.runtime.tensor(np.ascontiguousarray(np.asarray(x)), dev) for x in xs]
    out = tvm.runtime.empty(module.workload.output_shape, module.workload.dtype, dev)
    return args, out


def _remote(module):
    if module.target.kind == "cuda":
        dev = cuda_device()
        return module.lib, dev
    return arm_remote_library(module)


def run(module, xs):
    torch_in = all(type(x).__module__.startswith("torch") for x in xs)
    if torch_in:
        xs = [x.detach().cpu().numpy() for x in xs]
    lib, dev = _remote(module)
    args, out = _args(module, xs, dev)
    lib["main"](*args, out)
    y = out.numpy()
    if torch_in:
        import torch
        return torch.from_numpy(y)
    return y


def time(module, xs, number, repeat):
    lib, dev = _remote(module)
    args, out = _args(module, xs, dev)
    f = getattr(lib, "mod", lib).time_evaluator("main", dev, number=number, repeat=repeat)
    return list(f(*args, out).results)
