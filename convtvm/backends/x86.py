"""The x86 backend: modules compiled with LLVM for this machine's CPU, run in this process. Tuning
measures here, or (``connect``) on the x86 servers of a TVM RPC tracker with the same CPU."""

from __future__ import annotations

import os

from . import rpc as remote
from .base import Backend


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. znver3)."""
    from tvm.target import codegen
    return codegen.llvm_get_system_cpu()


FLOPS_PER_CYCLE = 32  # per core: AVX2 2 FMA x 8 fp32 x 2
AVX512_FLOPS_PER_CYCLE = 64  # 2 FMA x 16 fp32 x 2 (Zen 5; Zen 4, CPU family 25, splits each in two: 32)


class X86(Backend):
    kind = "x86"
    # TVM's defaults for a CPU with AVX-512 VNNI (Zen 4/5, Intel since Cascade Lake) build an int8 dot-product rule
    tensor_intrinsics = ("x86",)

    def __init__(self):
        self.remote: dict = {}  # where tuning measures: {} here; {"rpc": ...} or {"tracker": ..., "key": ...}

    @property
    def tunes_in_process(self) -> bool:
        return not self.remote

    def claims(self, target: dict) -> bool:
        return target.get("kind") == "llvm" and "aarch64" not in str(target.get("mtriple", ""))

    def target(self, base, arm_cpu, cuda_arch, num_cores):
        return {**base, "mcpu": host_cpu(), "num-cores": num_cores or os.cpu_count() or 1}

    def flops_per_cycle(self, cpuinfo: dict) -> int | None:
        if "avx512f" in cpuinfo.get("flags", []) and cpuinfo.get("cpu family") != ["25"]:
            return AVX512_FLOPS_PER_CYCLE
        return FLOPS_PER_CYCLE

    def connect(self, rpc: str | None = None, tracker: str | None = None, key: str | None = None,
                tuning: bool = False) -> None:
        """With ``tuning``: measure tuning candidates on the x86 servers a TVM RPC tracker holds under
        ``key`` (``tracker`` HOST:PORT), or on one server (``rpc`` HOST:PORT); none named: on this
        machine. Modules themselves run here, so without ``tuning`` naming any is a ValueError."""
        given = [f for f, v in (("--rpc", rpc), ("--rpc-tracker", tracker), ("--rpc-key", key)) if v]
        if given and not tuning:
            raise ValueError(f"{', '.join(given)}: x86 modules run on this machine; only `convtvm tune` "
                             "measures on x86 RPC servers")
        if rpc and tracker:
            raise ValueError("--rpc and --rpc-tracker: give one server (--rpc) or a tracker, not both")
        if tracker and not key:
            raise ValueError("--rpc-tracker needs --rpc-key: the key its x86 servers registered under")
        if key and not tracker:
            raise ValueError("--rpc-key names the servers at a tracker: give --rpc-tracker HOST:PORT too")
        for addr, what in ((rpc, "--rpc"), (tracker, "--rpc-tracker")):
            if addr:
                remote.probe(addr, what)
        self.remote = {k: v for k, v in dict(rpc=rpc, tracker=tracker, key=key).items() if v}

    def builder_runner(self, evaluator, initializer=None, info=None):
        """Measuring here: the base's process pools. Over RPC: a LocalBuilder with a worker per core,
        linking shared objects, and an RPCRunner with one worker per server, after every server was
        checked to report the CPU of ``info``'s target and to run kernels on its core count
        (ValueError otherwise; a server that joins later with another CPU fails each candidate it is
        handed)."""
        if not self.remote:
            return super().builder_runner(evaluator, initializer, info)
        from tvm.s_tir.meta_schedule.builder import LocalBuilder
        target = info.target.export() if info is not None else self.target({}, None, "", None)
        cpu, threads = str(target["mcpu"]), int(target["num-cores"])
        servers = remote.check_servers(cpu, threads, **self.remote)
        remote.ensure_importable_in_workers()
        builder = LocalBuilder(f_build=remote.build_candidate, f_export=remote.export_shared,
                               max_workers=os.cpu_count() or 1, timeout_sec=120)
        runner = remote.remote_runner(evaluator, cpu=cpu, max_workers=servers, **self.remote)
        return builder, runner

    def verifies_records(self) -> bool:
        return True

    def carries_records(self) -> bool:
        return True


BACKEND = X86()
