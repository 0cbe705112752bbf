"""The x86 backend: modules compiled with LLVM for this machine's CPU, run in this process."""

from __future__ import annotations

import os

from .base import Backend


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. znver3)."""
    from tvm.target import codegen
    return codegen.llvm_get_system_cpu()


class X86(Backend):
    kind = "x86"
    tunes_in_process = True

    def claims(self, target: dict) -> bool:
        return target.get("kind") == "llvm" and "aarch64" not in str(target.get("mtriple", ""))

    def target(self, base, arm_cpu, cuda_arch, num_cores):
        return {**base, "mcpu": host_cpu(), "num-cores": num_cores or os.cpu_count() or 1}

    def verifies_records(self) -> bool:
        return True

    def carries_records(self) -> bool:
        return True


BACKEND = X86()
