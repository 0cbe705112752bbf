"""Target names ("x86", "arm", "cuda") to TVM targets, and their per-target data in schedules/."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import backends

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent  # the checkout, in an editable install
# schedules/ and tuning_logs/: package data in a wheel (setup.py), top-level folders of the checkout otherwise
DATA = PACKAGE / "data" if (PACKAGE / "data" / "schedules").is_dir() else ROOT
SCHEDULES = Path(os.environ.get("CONVTVM_SCHEDULES", DATA / "schedules"))
SHIPPED_LOGS = DATA / "tuning_logs"  # read-only: nothing convtvm does writes there


def cache_dir() -> Path:
    """The user's folder for convtvm's records: $CONVTVM_CACHE, default ~/.cache/convtvm."""
    return Path(os.environ.get("CONVTVM_CACHE") or Path.home() / ".cache" / "convtvm")


KINDS = backends.KINDS  # the target kinds, one backend each


@dataclass(frozen=True)
class TargetInfo:
    kind: str  # "x86", "arm" or "cuda"
    target_json: str  # canonical TVM target dict, as JSON

    @property
    def target(self):
        import tvm
        return tvm.target.Target(json.loads(self.target_json))

    @property
    def config(self) -> dict:
        return schedule_config(self.kind)

    @property
    def backend(self):
        """This kind's backend (``convtvm.backends``)."""
        return backends.get(self.kind)

    @property
    def tag(self) -> str:
        """Short name for log folders: x86-znver3, arm-cortex-a72, cuda-sm90."""
        return self.backend.tag(json.loads(self.target_json))


def cpu_threads() -> int:
    """Threads for CPU kernels, TVM's and torch's alike: TVM_NUM_THREADS (or OMP_NUM_THREADS) if
    set, else every core this process may use."""
    value = os.environ.get("TVM_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return int(value) if value else len(os.sched_getaffinity(0))


def configure_cpu_threads() -> None:
    """Set up TVM's CPU thread pool (it reads these variables when it first starts, so convtvm sets
    them on import, before any kernel runs; a value already set is kept):

    - TVM_NUM_THREADS: TVM takes x86 cores for hyper-threads and otherwise starts
      hardware_concurrency / 2 threads: on a 2-core machine without SMT one thread beside torch's two
      (every tuned timing halved);
    - TVM_THREAD_POOL_SPIN_COUNT: between tasks TVM's workers spin 300000 yields by default. Beside
      torch's OpenMP threads in the same process that spinning took torch's cores (torch's 0.1 ms
      conv1d read 6-26 ms after a TVM kernel had run, even a second later); 1000 still keeps the
      workers warm across back-to-back calls (0 would make every call wake them: 0.044 -> 0.068 ms)."""
    os.environ.setdefault("TVM_NUM_THREADS", str(cpu_threads()))
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "1000")
    global _AT_FORK
    if not _AT_FORK and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_single_threaded_after_fork)
        _AT_FORK = True


_AT_FORK = False


def _single_threaded_after_fork() -> None:
    """In a child of ``os.fork()`` (``multiprocessing``'s fork context too): TVM's CPU kernels run on
    the calling thread alone.

    TVM's thread pool is made once per thread, on its first parallel kernel, and its worker threads do
    not survive a fork: in a child of a parent that had run a kernel, the next kernel hands its tasks
    to workers that do not exist and waits for them for ever. TVM 0.27 has no call that rebuilds the
    pool (``runtime.config_threadpool`` re-pins the old workers' thread ids, which in the child are the
    parent's threads), but every parallel launch first reads TVM_NUM_THREADS (``MaxConcurrency``) and
    with 1 runs the kernel on the calling thread, without the pool. So the child gets
    TVM_NUM_THREADS=1, whatever it was (processes it starts inherit that). ``subprocess`` (fork + exec)
    runs no at-fork hook and is not affected."""
    if "tvm" in sys.modules:  # the parent loaded TVM (and may have started its pool); else nothing to undo
        os.environ["TVM_NUM_THREADS"] = "1"


@lru_cache(maxsize=None)
def schedule_config(kind: str) -> dict:
    path = SCHEDULES / f"{kind}.json"
    with open(path) as f:
        return json.load(f)


TARGET_OPTIONS = ("arm_cpu", "cuda_arch", "num_cores")


def check_target_options(options: dict, func: str = "resolve", params: tuple = ()) -> dict:
    """``options`` (keyword arguments that ``func`` passes on to ``resolve``), or a ValueError naming
    the keyword that is not one of them and every keyword ``func`` accepts (its own ``params`` first)."""
    unknown = [k for k in options if k not in TARGET_OPTIONS]
    if unknown:
        raise ValueError(f"{func}() got an unknown keyword argument {unknown[0]!r}; it accepts "
                         f"{', '.join((*params, *TARGET_OPTIONS))}")
    return options


def resolve(target, arm_cpu: str | None = None, cuda_arch: str = "sm_90", num_cores: int | None = None) -> TargetInfo:
    """"x86" | "arm" | "cuda" | a TVM target dict -> TargetInfo (a TargetInfo is returned as it is).
    ``arm_cpu`` adds an ARM target's mcpu, ``cuda_arch`` is a CUDA target's sm_XX, ``num_cores`` a
    CPU target's cores. Raises ValueError for an unknown name, a dict of another kind than llvm or
    cuda, an invalid arch or an mcpu LLVM does not know."""
    if isinstance(target, TargetInfo):
        return target
    if isinstance(target, dict):
        return TargetInfo(backends.claiming(target).kind, _canon(target))
    backend = backends.get(target) if isinstance(target, str) else None
    if backend is None:
        raise ValueError(f"unknown target {target!r}; use one of {', '.join(KINDS)} or a TVM target dict")
    base = dict(schedule_config(target)["target"])
    return TargetInfo(target, _canon(backend.target(base, arm_cpu, cuda_arch, num_cores)))


def _canon(d: dict) -> str:
    import tvm
    if d.get("kind") == "llvm" and d.get("mcpu"):
        _check_mcpu(d)
    t = tvm.target.Target(d)
    keep = {k: v for k, v in d.items()}
    str(t)  # validates the dict
    return json.dumps(keep, sort_keys=True)


def _check_mcpu(d: dict) -> None:
    """An LLVM target's ``mcpu`` must be a CPU that LLVM knows for its triple (the host's when it names
    none): LLVM itself only warns, and builds generic code under the unknown name."""
    from tvm.target import codegen
    mcpu, triple = str(d["mcpu"]), str(d.get("mtriple") or codegen.llvm_get_system_triple())
    if codegen.llvm_is_valid_cpu(mcpu, triple):
        return
    try:
        import tvm
        known = sorted(str(c) for c in codegen.llvm_get_cpu_archlist(tvm.target.Target(
            {"kind": "llvm", **({"mtriple": d["mtriple"]} if d.get("mtriple") else {})})))
    except Exception:  # noqa: BLE001 - only for the message
        known = []
    hint = f"; LLVM knows {len(known)}, e.g. {', '.join(known[:12])}" if known else ""
    raise ValueError(f"mcpu={mcpu!r} is not a CPU that LLVM knows for {triple}{hint}")
