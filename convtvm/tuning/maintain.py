"""Maintaining tuning logs: prune to the best records (verified, optionally re-timed), merge one log
into another, carry a log over to another CPU (retarget), and summarise how records were found."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..records.log import Record, TuningLog, target_key
from ..records.verify import record_matches_torch, matches_unscheduled, tuned_ir_module
from ..targets import TargetInfo, resolve
from .measure import kernel_timer


def _workload_index(log: TuningLog, workloads: dict, info: TargetInfo) -> dict:
    """Workload line of ``log`` -> the Workload it holds (matched structurally)."""
    ws = list(workloads.values())
    return {i: ws[j] for i, j in log.workload_lines_of([tuned_ir_module(w, info) for w in ws]).items()}


def summarize(log, workloads: dict, info: TargetInfo, index: dict | None = None) -> dict:
    """Per workload key of ``workloads`` (key -> Workload): trials measured and the tuning curve, from
    the log folder ``log``: the one its tuning runs wrote (``TuningLog.curves``, with seconds), else
    [[trial, best ms so far], ...] in measurement order; trials: its records, or its trials.json's count
    where that is more (a pruned log). ``index``: workload line -> Workload, when
    already known. Written beside pruned logs (trials.json, curves.json), which keep only the best."""
    log = TuningLog(log)
    written = log.curves()
    index = index if index is not None else _workload_index(log, workloads, info)
    keys = {i: w.key for i, w in index.items()}
    summary: dict = {}
    for r in log.records():
        if r.workload not in index:
            continue
        entry = summary.setdefault(keys[r.workload], {"trials": 0, "curve": [], "best": float("inf")})
        entry["trials"] += 1
        if r.run_secs:
            entry["best"] = min(entry["best"], 1e3 * sum(r.run_secs) / len(r.run_secs))
        if entry["best"] < float("inf"):
            entry["curve"].append([entry["trials"], round(entry["best"], 5)])
    counted = log.trials()  # a pruned log's own count: more than its records
    for key, entry in summary.items():
        entry["trials"] = max(entry["trials"], counted.get(key, 0))
        if written.get(key):
            entry["curve"] = written[key]
    return summary


def merge(src, dst, trials: dict | None = None, progress=print) -> int:
    """Add every record of the log ``src`` (same target) that ``dst`` does not hold to the log ``dst``,
    src's trials.json and curves.json where they hold the longer history, and ``trials`` (name ->
    trials measured) to dst's trials.json; dst is rewritten atomically.
    Returns records added. Raises ValueError when ``dst`` is for another target."""
    src, dst = TuningLog(src), TuningLog(dst)
    info = src.target()
    dst.check(info, must_exist=False)
    from tvm.s_tir import meta_schedule as ms
    with tempfile.TemporaryDirectory(prefix="convtvm_merge_") as tmp:
        work = TuningLog(tmp)
        (work.path / "src").mkdir()
        db, added = dst.open(work.path)[0], 0
        for rec in src.open(work.path / "src")[0].get_all_tuning_records():
            wl = db.commit_workload(rec.workload.mod)
            db.commit_tuning_record(ms.database.TuningRecord(rec.trace, wl, rec.run_secs, rec.target, rec.args_info))
            added += 1
        rows = work.records()
        unique = work.unique(rows)  # a record dst already held is not added twice
        if len(unique) < len(rows):
            work.write_records(unique)
            added -= len(rows) - len(unique)
        dst.sync_from(work.path, info)
    dst.compact()
    _merge_summaries(src, dst, trials or {})
    progress(f"merged {added} records of {src} into {dst}")
    return added


def _merge_summaries(src: TuningLog, dst: TuningLog, trials: dict) -> None:
    """src's trials.json and curves.json into dst's, per name: the longer history wins (more trials; a
    curve that reaches a later trial), so merging a working log that continued dst's records extends
    them and one that started afresh does not shorten them. ``trials`` (name -> count) is set as given."""
    theirs, mine = src.trials(), dst.trials()
    counts = {k: v for k, v in theirs.items() if v > mine.get(k, -1)}
    counts.update(trials)
    if counts:
        dst.record_trials(counts)
    have = dst.curves()
    curves = {k: c for k, c in src.curves().items() if c and (not have.get(k) or c[-1][0] >= have[k][-1][0])}
    if curves:
        dst.update_curves(curves)


def retarget(src, target, out=None, progress=print) -> int:
    """Carry the records of the log ``src`` over to another CPU of the same kind (a log tuned on a
    Zen 3 machine, used on a Zen 5 one): each workload's best record is replayed and compiled for
    ``target``, checked against the unscheduled TIR and timed here, then merged into ``out`` (default
    the user's log of ``target``) as that target's record. A record is never applied to a target it
    was not measured on; this is how one becomes a measured starting point for the new target's
    tuning (which starts each task from its best logged record). Returns records carried over.
    Raises ValueError for another kind of target, a remote one, or the log's own target."""
    src = TuningLog(src)
    have, info = src.target(), resolve(target)
    if info.kind != have.kind or not info.backend.runs_in_process():
        raise ValueError(f"retarget carries records between CPUs of this machine's kind; {src} is for "
                         f"{have.kind}, target is {info.kind}")
    if target_key(json.loads(have.target_json)) == target_key(json.loads(info.target_json)):
        raise ValueError(f"{src} already holds records for {info.tag}")
    out = TuningLog(out or TuningLog.default(info)).check(info, must_exist=False)
    exported = {k: (list(v) if k == "keys" else v) for k, v in info.target.export().items()}
    with tempfile.TemporaryDirectory(prefix="convtvm_retarget_") as tmp:
        moved, pruned = Path(tmp) / "moved", Path(tmp) / "pruned"
        moved = src.copy_to(moved, target=False)
        moved.write_target(info)
        moved.write_records([r.with_(target=exported) for r in src.records()])
        progress(f"replaying {src}'s best records for {info.tag}: each checked and timed here")
        kept = prune(moved, keep=1, out=pruned, retime=1, progress=progress)
        merge(pruned, out, progress=progress)
    return kept


def _retimed(info: TargetInfo, wl_lines, candidates: list, rounds: int = 7) -> list:
    """``candidates`` (Records) re-timed in interleaved rounds on a quiet machine, fastest first, each
    with its median as its run_secs: the search measured them while other work ran, and a lucky
    sample can rank a slower schedule first."""
    from ..timing import time_interleaved
    ms = time_interleaved({i: kernel_timer(info, wl_lines[r.workload], r.body) for i, r in enumerate(candidates)},
                          rounds)
    out = [r.with_(run_secs=[round(ms[i] / 1e3, 9)]) for i, r in enumerate(candidates)]
    return sorted(out, key=lambda r: r.run_secs[0])


def _fallback_record(info: TargetInfo, w, like: Record) -> Record | None:
    """The target's fallback schedule of ``w`` as an untimed record of ``like``'s workload and target,
    or None where the fallback is not one traced schedule. Re-timed beside the search's records, it
    keeps a log from holding a record slower than the build would run without one."""
    from tvm.s_tir import meta_schedule as ms
    mod = tuned_ir_module(w, info)
    trace = info.backend.fallback_trace(mod["main"], info)
    if trace is None:
        return None
    with tempfile.TemporaryDirectory(prefix="convtvm_fallback_") as tmp:  # the trace as MetaSchedule writes it
        db = ms.database.JSONDatabase(work_dir=tmp)
        args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
        db.commit_tuning_record(ms.database.TuningRecord(trace, db.commit_workload(mod), [1.0], info.target, args))
        written = TuningLog(tmp).records()[0]
    return Record(like.workload, [written.trace, [], like.body[2], like.body[3]])


def prune(log, keep: int = 1, out=None, workloads: dict | None = None, retime: int = 0, only: bool = False,
          progress=print) -> int:
    """Keep the ``keep`` best records per workload (and target) of the log ``log``, in ``out``
    (default: ``log`` itself), rewritten atomically. Returns records kept.
    A kept record must reproduce the right result on this machine (a record that does not is dropped
    and the next best taken): PyTorch's for the ``workloads`` given, the unscheduled TIR's for any
    other task (a network's fused functions). With ``retime`` >= 1, the ``retime`` best verified
    records of each workload are timed again here, interleaved, and the fastest kept with its new
    time (run the machine quiet; ``retime=1`` re-times a log measured under other conditions); the
    fallback's schedule of each of the ``workloads`` is timed beside them and kept as the record where
    it is the fastest. With
    ``workloads``, trials.json and curves.json record how their kept records were found, and
    ``only`` drops the records of every other task."""
    log = TuningLog(log)
    out = TuningLog(out or log)
    info = log.target()
    wl_lines = log.workloads()
    index = {}
    if workloads:
        index = _workload_index(log, workloads, info)
        summary = summarize(log, workloads, info, index)
        out.record_trials({k: v["trials"] for k, v in summary.items()})
        out.update_curves({k: v["curve"] for k, v in summary.items()})

    def verify(r: Record) -> bool:
        wl, rec = r.workload, r.body
        if not info.backend.runs_in_process():  # built here, runs elsewhere: nothing to compare with on this machine
            return True
        if wl in index:
            if record_matches_torch(index[wl], info, wl_lines[wl], rec):
                return True
            progress(f"dropped a record of {index[wl]}: its output does not match torch")
        elif matches_unscheduled(info, wl_lines[wl], rec):
            return True
        else:
            progress(f"dropped a record of workload {wl}: its output differs from the unscheduled TIR's")
        return False

    by_wl: dict = {}
    for r in log.records():
        if not r.run_secs or (only and r.workload not in index):
            continue
        by_wl.setdefault((r.workload, json.dumps(r.target, sort_keys=True)), []).append((r.mean_secs, r))
    kept = []
    for lst in by_wl.values():
        good = (r for _, r in sorted(lst, key=lambda x: x[0]) if verify(r))
        best = [r for _, r in zip(range(max(keep, retime)), good)]
        if retime and best and info.backend.runs_in_process():
            before = best[0].run_secs
            untuned = _fallback_record(info, index[best[0].workload], best[0]) if best[0].workload in index else None
            best = _retimed(info, wl_lines, best + ([untuned] if untuned else []))
            won = " (the fallback's schedule: it beat every record)" if untuned and best[0].trace == untuned.trace else ""
            progress(f"  workload {best[0].workload}: re-timed its {len(best)} best records here: kept one at "
                     f"{best[0].run_secs[0] * 1e3:.3f} ms{won} "
                     f"(the search's best read {sum(before) / len(before) * 1e3:.3f} ms)")
        kept += best[:keep]
    out = log.copy_to(out)
    out.write_records(kept)
    out.compact()
    return len(kept)
