"""A register-tile sweep around a task's best tuning record.

MetaSchedule's evolutionary search mutates one random tile decision at a time and trusts its cost
model to rank the results, so a record can keep a poor register tile that a small, exhaustive search
would fix. For every multi-level-tiled block (``meta_schedule.tiling_structure``, SSRSRS) of the
record's trace, the sweep sets the innermost tile to ``rows`` x ``lanes`` (rows on one spatial
axis, lanes on the last, vectorised one), the tiles between it and the reduction to 1, and the
reduction whole or as it was; it replays the trace with those decisions, runs the target's
postprocessors again, times every candidate alone, interleaved with the record itself, and adds
the fastest few that beat it to the log, each checked against the unscheduled TIR. Their run times
are the record's, scaled by the ratio measured here, so they rank against the log's other records.
The in-network choice (``tuning.network.pick_in_network``) then decides between them in the network.
"""

from __future__ import annotations

import math
import tempfile

from ..records.log import Record, TuningLog
from ..records.space import make_context, replay, skip_tensor_intrinsics  # noqa: F401 - replay re-exported
from ..records.verify import matches_unscheduled
from .measure import kernel_timer

SPATIAL, REDUCTION = 4, 2  # SamplePerfectTile's n for the S and R loops of SSRSRS


def tiled_blocks(trace) -> list[list]:
    """Per multi-level-tiled block of ``trace`` (before its postprocessing): its SamplePerfectTile
    instructions, one per loop of the block, in order."""
    blocks, current = [], None
    for inst in trace.insts:
        kind = inst.kind.name
        if kind == "EnterPostproc":
            break
        if kind == "Annotate" and str(inst.attrs[0]) == "meta_schedule.tiling_structure":
            current = []
            blocks.append(current)
        elif kind == "SamplePerfectTile" and current is not None:
            current.append(inst)
        elif kind not in ("GetLoops", "Split", "SamplePerfectTile") and current:
            current = None  # the tiling of that block is complete
    return [b for b in blocks if any(int(i.attrs[0]) == SPATIAL for i in b)]


def _factors(decision) -> list[int]:
    return [int(v) for v in decision]


def _spatial(extent: int, outer: int, inner: int) -> list[int]:
    """[outer, rest, 1, inner]: the register tile ``inner`` innermost, nothing between it and the
    reduction, the rest on the second (parallel) level; ``outer`` kept where it still divides."""
    outer = outer if extent % (outer * inner) == 0 else 1
    return [outer, extent // (outer * inner), 1, inner]


def candidate_decisions(trace, rows, lanes, max_inner: int = 64) -> dict:
    """label -> {instruction: decision} for every register tile of every tiled block of ``trace``."""
    out = {}
    for b, insts in enumerate(tiled_blocks(trace)):
        dec = {i: _factors(trace.decisions[i]) for i in insts}
        spatial = [i for i in insts if int(i.attrs[0]) == SPATIAL]
        reduction = [i for i in insts if int(i.attrs[0]) == REDUCTION]
        lane_axis = spatial[-1]
        reductions = [{i: dec[i] for i in reduction}]
        whole = {}
        for i in reduction:
            k = math.prod(dec[i])
            inner = max(d for d in range(1, min(k, max_inner) + 1) if k % d == 0)
            whole[i] = [k // inner, inner]
        if whole != reductions[0]:
            reductions.append(whole)
        fitting_lanes = [lane for lane in lanes if math.prod(dec[lane_axis]) % lane == 0]
        for a, row_axis in enumerate(spatial[:-1]):
            extent = math.prod(dec[row_axis])
            for r in rows:
                if extent % r:
                    continue
                for lane in fitting_lanes:
                    new = {}
                    for i in spatial:
                        e = math.prod(dec[i])
                        inner = r if i is row_axis else lane if i is lane_axis else 1
                        new[i] = _spatial(e, dec[i][0], inner)
                    for red in reductions:
                        label = f"block {b}: {r}x{lane} on axis {a}, reduction " + \
                                "/".join("x".join(map(str, red[i])) for i in reduction)
                        out[label] = {**new, **red}
    return out


def register_tiles(target) -> tuple[tuple, tuple]:
    """(rows, lanes) the sweep tries on ``target``'s CPU: one and two vectors of lanes, and as many
    rows as leave registers for the loads (AVX2: 16 vector registers of 8 fp32; AVX-512: 32 of 16)."""
    from tvm.target import codegen
    if codegen.llvm_cpu_has_features("avx512f", target):
        return (2, 4, 6, 7, 8, 12, 14), (16, 32)
    return (2, 4, 6, 7, 8), (8, 16)


def sweep(log, mod, *, name: str = "task", keep: int = 2, rounds: int = 7, rows=None, lanes=None,
          progress=print) -> list[tuple[str, float]]:
    """Sweep the register tiles of ``mod``'s best record in ``log`` (see the module's docstring); add
    the ``keep`` fastest candidates that beat it to ``log`` (rewritten atomically). Run the machine
    quiet. ``rows`` and ``lanes`` default to ``register_tiles`` of the log's target. Returns
    [(label, ms alone)] of the record and the candidates, fastest first."""
    from tvm.s_tir import meta_schedule as ms

    from ..timing import time_interleaved
    log = TuningLog(log)
    info = log.target()
    if not info.backend.runs_in_process():
        raise ValueError(f"the sweep times kernels on this machine's CPU; {log} is for {info.kind}")
    if int(keep) < 1 or int(rounds) < 1:
        raise ValueError(f"keep={keep} and rounds={rounds} must be positive")
    default_rows, default_lanes = register_tiles(info.target)
    rows, lanes = rows or default_rows, lanes or default_lanes
    line = next(iter(log.workload_lines_of([mod])), None)
    if line is None:
        raise ValueError(f"{log} has no record for {name}: tune it first")
    wl_json = log.workloads()[line]
    base = min((r for r in log.records() if r.workload == line), key=lambda r: r.mean_secs)
    with tempfile.TemporaryDirectory(prefix="convtvm_retile_") as tmp:
        # the candidates are serialised by a scratch database (a trace with an IndexMap, from
        # RewriteLayout, has no Python JSON form)
        db = log.scratch_db(tmp)
        record = ms.database.TuningRecord.from_json(base.body, ms.database.Workload.from_json(wl_json))
        with skip_tensor_intrinsics(info):
            postprocs = make_context(mod, info, name).space_generator.postprocs
        labels = []
        for label, decisions in candidate_decisions(record.trace, rows, lanes).items():
            sch = replay(mod, record.trace, decisions, postprocs)
            if sch is not None:
                db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(mod), record.run_secs,
                                                                 info.target, record.args_info))
                labels.append(label)
        recs = {"record": base.body, **{k: r.body for k, r in zip(labels, TuningLog(tmp).records())}}
    progress(f"{name}: {len(recs) - 1} register tiles around its record, timed {rounds} times each")
    timed = time_interleaved({k: kernel_timer(info, wl_json, r) for k, r in recs.items()}, rounds)
    base_ms = timed["record"]
    ranked = sorted(timed.items(), key=lambda kv: kv[1])
    for label, t in ranked[:keep + 3]:
        progress(f"  {t:8.3f} ms  {label}")
    better = [label for label, t in ranked if t < base_ms][:keep]
    secs = base.mean_secs
    rows_new = []
    for label in better:
        if not matches_unscheduled(info, wl_json, recs[label]):
            progress(f"  {label}: differs from the unscheduled TIR, left out")
            continue
        rec = list(recs[label])
        rec[1] = [round(secs * timed[label] / base_ms, 9)]
        rows_new.append(rec)
    if rows_new:
        log.write_records(log.records() + [Record(line, rec) for rec in rows_new])
    progress(f"{name}: {len(rows_new)} records added (fastest alone: {ranked[0][1]:.3f} ms, record {base_ms:.3f} ms)")
    return ranked
