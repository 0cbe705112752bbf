"""Which tuning records a default build applies, and where they come from.

A build that names no log (``build(w)``, ``compile_model(...)``, ``convtvm check``, ``convtvm bench``)
looks for a record of its workload, in this order:

1. the user's log, ``<cache>/tuning_logs/<target tag>`` (``<cache>`` is ``$CONVTVM_CACHE``, default
   ``~/.cache/convtvm``): records the user tuned, and records carried over by step 3;
2. the shipped log of this target, ``tuning_logs/<target tag>`` (read-only: nothing writes there);
3. on an x86 CPU that no shipped log is for, the nearest shipped log's record of the workload (the same
   vector ISA first: AVX-512 from an AVX-512 CPU's log, AVX2 from an AVX2 one's), replayed for this
   CPU, compiled, checked against PyTorch and timed here, then kept in the user's log. That costs one
   workload's compile and check on its first build, never a whole log's carry-over;
4. (``borrowed_schedule``) for a workload none of these logs holds, the record of its nearest tuned
   neighbours in them (same computation, layout and dtype), refitted to its extents, checked against
   PyTorch, timed here and kept in the user's log (``borrow``): a few candidates, seconds per build.

A record is applied only when its kernel reproduces PyTorch's result on this machine (see
``verify.best_record``); otherwise the build falls back to the target's untuned schedule.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..targets import SHIPPED_LOGS as SHIPPED
from ..targets import TargetInfo
from ..variants import Workload
from . import borrow, verify
from .log import TuningLog, target_key

_told: set = set()  # target tags whose record source this process has announced


def user_log(info: TargetInfo) -> Path:
    """The user's log of ``info``'s target (``TuningLog.default``)."""
    return TuningLog.default(info).path


def shipped_log(info: TargetInfo) -> Path | None:
    """The shipped log of ``info``'s target, or None when none is shipped."""
    log = SHIPPED / info.tag
    return log if TuningLog(log).has_target() else None


@dataclass(frozen=True)
class Schedule:
    """What a build applies: ``mod`` (the scheduled IRModule, None for the fallback), ``kind`` ("tuned",
    "carried over", "borrowed" or "fallback") and ``source`` (the log it came from; for a borrowed
    record, ``"<log>: <workload>"``, the tuned workload it was refitted from; None for the fallback)."""

    mod: object
    kind: str
    source: str | None


def default_schedule(w: Workload, info: TargetInfo, lend: bool = True) -> Schedule:
    """The record a build of ``w`` for ``info`` applies when no log is named (see the module doc);
    ``lend=False`` leaves out step 4 (borrowing)."""
    mine = user_log(info)
    for log in (mine, shipped_log(info)):
        if log is not None and TuningLog(log).has_target():
            mod = verify.best_schedule(w, info, log)
            if mod is not None:
                if log == mine and w.key in TuningLog(log).borrowed():
                    return Schedule(mod, "borrowed", TuningLog(log).borrowed()[w.key])
                donor = TuningLog(log).carried().get(w.key) if log == mine else None
                return Schedule(mod, "carried over" if donor else "tuned", str(SHIPPED / donor if donor else log))
    if info.backend.carries_records() and shipped_log(info) is None:
        for donor in donor_logs(info):
            mod = carry_over(w, info, donor)
            if mod is not None:
                return Schedule(mod, "carried over", str(donor))
    lent = borrowed_schedule([w], info) if lend else None
    return lent[1] if lent else Schedule(None, "fallback", None)


def borrow_logs(info: TargetInfo) -> list[Path]:
    """The logs a default build borrows from, first first: the user's log, this target's shipped log,
    and (an x86 CPU no log is shipped for) the other CPUs' shipped logs, nearest first."""
    logs = [log for log in (user_log(info), shipped_log(info)) if log is not None and TuningLog(log).has_records()]
    if info.backend.carries_records() and shipped_log(info) is None:
        logs += donor_logs(info)
    return logs


def borrowed_schedule(ws: list, info: TargetInfo) -> tuple[Workload, Schedule] | None:
    """(workload, its borrowed Schedule) for the faster call of the workloads ``ws`` (one computation
    in different layouts: a channels-first workload and its channels-last twin, whose kernel's time
    counts with the data's relayout, ``relayout_ms``) whose records are
    borrowed from their nearest tuned neighbours in ``borrow_logs`` (``borrow.borrow``); the winner is
    kept in the user's log. None when no candidate passes, or for a target whose kernels do not run
    on this machine (candidates cannot be timed)."""
    if not info.backend.runs_in_process():
        return None
    logs = borrow_logs(info)
    lent = [b for b in (borrow.borrow(w, info, logs, keep=False) for w in ws) if b is not None]
    if not lent:
        return None
    extra = relayout_ms(ws[0], info) if len(lent) > 1 else 0.0  # a call on the twin's kernel relayouts the data too
    best = min(lent, key=lambda b: b.ms + (0.0 if b.workload is ws[0] else extra))
    borrow.keep_borrowed(best, info)
    return best.workload, Schedule(best.mod, "borrowed", best.source)


def relayout_ms(w: Workload, info: TargetInfo) -> float:
    """Milliseconds here of the channels-first ``w``'s data relayout (``relayout.data_to_channels_last``):
    what each call on its channels-last twin's kernel adds to that kernel's time."""
    import statistics

    import tvm

    from .. import relayout
    func = relayout.data_to_channels_last(w).with_attr("global_symbol", "main")
    timer = borrow.timer(info, tvm.IRModule({"main": func}))
    return statistics.median(timer() for _ in range(3)) * 1e3


def network_logs(info: TargetInfo) -> list[tuple[Path, bool]]:
    """The logs a network compiled with no log named takes its tasks' records from, first match first,
    each with whether it is another CPU's: the user's log, this target's shipped log, and (x86, where no
    log is shipped for this CPU) the nearest shipped log, whose records the network compile replays for
    this CPU and then checks, by running the network, against torch."""
    logs = [(log, False) for log in (user_log(info), shipped_log(info))
            if log is not None and TuningLog(log).record_file.is_file()]
    if info.backend.carries_records() and shipped_log(info) is None:
        logs += [(donor, True) for donor in donor_logs(info)[:1]]
    return logs


def isa(info: TargetInfo) -> tuple[bool, bool]:
    """(AVX-512, AVX2) of an x86 target's mcpu, as LLVM knows it."""
    from tvm.target import codegen
    t = info.target
    return bool(codegen.llvm_cpu_has_features(["avx512f"], t)), bool(codegen.llvm_cpu_has_features(["avx2"], t))


# LLVM features that tell x86 CPUs of one vector ISA apart; SSE4a marks AMD's cores
FEATURES = ("avx512bw", "avx512vl", "avx512vnni", "avx512bf16", "avx512fp16", "amx-tile", "avxvnni", "sse4a")


def features(info: TargetInfo) -> set:
    """Which of ``FEATURES`` an x86 target's mcpu has, as LLVM knows it."""
    from tvm.target import codegen
    return {f for f in FEATURES if codegen.llvm_cpu_has_features([f], info.target)}


def donor_logs(info: TargetInfo) -> list[Path]:
    """The shipped logs of ``info``'s kind, nearest first: same AVX-512 and AVX2 support, then same
    AVX-512 support, then the rest; among equals, the fewest ``FEATURES`` that differ, then by name
    (for a stable order)."""
    mine, my_features = isa(info), features(info)
    logs = []
    for log in sorted(SHIPPED.glob(f"{info.kind}-*")):
        if not TuningLog(log).has_target() or log.name == info.tag:
            continue
        target = TuningLog(log).target()
        theirs = isa(target)
        logs.append(((theirs != mine) + (theirs[0] != mine[0]), len(features(target) ^ my_features), log))
    return [log for *_, log in sorted(logs, key=lambda t: t[:2])]


def carry_over(w: Workload, info: TargetInfo, donor: Path):
    """``w``'s best record in the log ``donor`` (another CPU's), replayed and compiled for ``info``,
    checked against PyTorch and timed here; kept in the user's log when it passes. Returns the
    scheduled IRModule, or None when ``donor`` holds no record of ``w`` that passes here."""
    records, mod = _donor_records(w, info, donor)
    record = next((r for r in records[:3] if _passes_here(w, info, mod, r)), None)
    if record is None:
        return None
    _announce(info, donor)
    secs = _time_here(w, info, mod, record)
    _keep(w, info, mod, record, secs, donor)
    return verify.scheduled(mod, record)


def _passes_here(w: Workload, info: TargetInfo, mod, record) -> bool:
    """The record replays, builds for ``info`` and reproduces torch here (a donor's trace may not build
    for this CPU: then it is passed over, as a wrong one is)."""
    try:
        return verify.record_reproduces_torch(w, info, mod, record)
    except Exception:  # noqa: BLE001 - a trace that does not build here: not carried over
        return False


def _donor_records(w: Workload, info: TargetInfo, donor: Path):
    """(the records of ``w`` that ``donor`` measured on its own CPU, fastest first; ``w``'s tuning
    IRModule). None is run here for the donor's CPU: its code may use instructions this CPU lacks."""
    donor_key = target_key(json.loads(TuningLog(donor).target().target_json))
    mod = verify.tuned_ir_module(w, info)
    with tempfile.TemporaryDirectory(prefix="convtvm_donor_") as tmp:
        db, _ = TuningLog(donor).open(tmp)  # a bad line is skipped with a warning naming it
        if not db.has_workload(mod):
            return [], mod
        records = [r for r in db.get_top_k(db.commit_workload(mod), 1 << 30)
                   if target_key(r.target.export()) == donor_key and r.run_secs]
    return records, mod


def _time_here(w: Workload, info: TargetInfo, mod, record) -> float:
    """Seconds per call of the record's kernel on this machine (a short measurement: a starting point
    for tuning here, not a benchmark)."""
    import tvm
    with info.target:
        lib = tvm.compile(verify.scheduled(mod, record), target=info.target)
    args = [tvm.runtime.tensor(a) for a in w.random_inputs(seed=3)] + [tvm.runtime.empty(w.output_shape, w.dtype)]
    timer = getattr(lib, "mod", lib).time_evaluator("main", tvm.cpu(), number=3, repeat=3)
    return min(timer(*args).results)


def _keep(w: Workload, info: TargetInfo, mod, record, secs: float, donor: Path) -> None:
    """Add the carried record to the user's log, as one measured on ``info``, atomically."""
    from tvm.s_tir import meta_schedule as ms
    log = TuningLog.default(info)
    log.path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="convtvm_carry_") as tmp:
        db, _ = log.open(tmp)
        db.commit_tuning_record(ms.database.TuningRecord(record.trace, db.commit_workload(mod), [secs],
                                                         info.target, record.args_info))
        log.sync_from(tmp, info)
    log.record_carried(w.key, donor.name)


def _announce(info: TargetInfo, donor: Path) -> None:
    if info.tag in _told:
        return
    _told.add(info.tag)
    print(f"convtvm: no shipped records for {info.tag}; carrying {donor.name}'s over, one workload at a time "
          f"(each checked against torch here), into {user_log(info)}", file=sys.stderr)

