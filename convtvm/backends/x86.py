"""The x86 backend: modules compiled with LLVM for this machine's CPU, run in this process."""

from __future__ import annotations

import os

from .base import Backend


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. znver3)."""
    from tvm.target import codegen
    return codegen.llvm_get_system_cpu()


FLOPS_PER_CYCLE = 32  # per core: AVX2 2 FMA x 8 fp32 x 2
AVX512_FLOPS_PER_CYCLE = 64  # 2 FMA x 16 fp32 x 2 (Zen 5; Zen 4, CPU family 25, splits each in two: 32)


class X86(Backend):
    kind = "x86"
    tunes_in_process = True
    # TVM's defaults for a CPU with AVX-512 VNNI (Zen 4/5, Intel since Cascade Lake) build an int8 dot-product rule
    tensor_intrinsics = ("x86",)

    def claims(self, target: dict) -> bool:
        return target.get("kind") == "llvm" and "aarch64" not in str(target.get("mtriple", ""))

    def target(self, base, arm_cpu, cuda_arch, num_cores):
        return {**base, "mcpu": host_cpu(), "num-cores": num_cores or os.cpu_count() or 1}

    def flops_per_cycle(self, cpuinfo: dict) -> int | None:
        if "avx512f" in cpuinfo.get("flags", []) and cpuinfo.get("cpu family") != ["25"]:
            return AVX512_FLOPS_PER_CYCLE
        return FLOPS_PER_CYCLE

    def verifies_records(self) -> bool:
        return True

    def carries_records(self) -> bool:
        return True


BACKEND = X86()
