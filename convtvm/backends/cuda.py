"""The CUDA backend: modules built here (the device code compiled ahead of time for the target's
arch, see :mod:`convtvm.backends.cuda_tools`) and run on this machine's GPU."""

from __future__ import annotations

import json

from .base import Backend, load_fresh


class Cuda(Backend):
    kind = "cuda"
    fallback_is_total = True  # its rules end with dlight's Fallback, which binds any loop nest to threads

    def claims(self, target: dict) -> bool:
        return target.get("kind") == "cuda"

    def target(self, base, arm_cpu, cuda_arch, num_cores):
        if not (cuda_arch.startswith("sm_") and cuda_arch[3:].isdigit()):
            raise ValueError(f"cuda arch {cuda_arch!r} must look like sm_XX (e.g. sm_90)")
        return {**base, "arch": cuda_arch}

    def tag(self, target: dict) -> str:
        return "cuda-" + target.get("arch", "sm_90").replace("_", "")

    def runs_in_process(self) -> bool:
        return False

    def has_device(self) -> bool:
        import tvm
        return tvm.cuda(0).exist

    def prepare(self) -> None:
        """Install convtvm's CUDA compile hooks: device code compiled ahead of time with the chosen
        compiler, for the target's arch."""
        from . import cuda_tools
        cuda_tools.register()

    def fallback(self, func, info):
        from .. import fallback
        self.prepare()
        return fallback.gpu(func, info.config["fallback"], info.target)

    def fallback_trace(self, func, info):
        return None  # the first GPU rule that applies: not one traced schedule to replay

    def vm_target(self, info):
        import tvm
        return tvm.target.Target({**json.loads(info.target_json), "host": {"kind": "llvm"}})

    def relax_backend(self):
        from tvm.relax.backend import cuda
        return cuda

    def export(self, lib, info, path: str) -> None:
        """A shared object carrying the kernels compiled for the target's arch, not CUDA source."""
        from . import cuda_tools
        cuda_tools.export_library(lib, path, arch=json.loads(info.target_json).get("arch", "sm_90"))

    def manifest_entry(self, path: str) -> dict:
        """{"cuda": arch, format and kernels of the compiled code in the file}."""
        from . import cuda_tools
        return {"cuda": cuda_tools.manifest_entry(path)}

    def load(self, info, path: str):
        self.device()
        return load_fresh(path)

    def device(self):
        """The local GPU. Raises RuntimeError where there is none."""
        import tvm
        dev = tvm.cuda(0)
        if not dev.exist:
            raise RuntimeError("no CUDA GPU is present on this machine: a CUDA module can be built and exported "
                               "here, but runs only where a GPU is (convtvm.load it there)")
        return dev


BACKEND = Cuda()
