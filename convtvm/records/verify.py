"""The best record of a workload in a tuning log, checked before it is applied.

MetaSchedule can emit a wrong kernel (spatially separable convs got schedules that never write the
second stage's zero padding, and returned NaNs), so a record is applied only when its kernel
reproduces the right result on this machine: PyTorch's for a convtvm workload
(``reproduces_torch``), the unscheduled TIR's for any other task (``matches_unscheduled``).
"""

from __future__ import annotations

import json
import tempfile
import warnings

from ..metrics import close
from ..targets import TargetInfo
from ..variants import Workload
from .log import LogWarning, TuningLog, first_line, target_key


def tuned_ir_module(w: Workload, info: TargetInfo):
    """The IRModule a tuning log holds ``w``'s records under on ``info`` (its weights layout-free where
    the target's tuning config says so)."""
    import tvm
    layout_free = info.config["tuning"].get("layout_free_weights", False)
    return tvm.IRModule({"main": w.prim_func(layout_free_weights=layout_free)})


def scheduled(mod, record):
    """``mod`` with a tuning record's schedule (its trace, postprocessing included) applied."""
    from tvm.s_tir import Schedule
    sch = Schedule(mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod


def best_record(w: Workload, info: TargetInfo, log):
    """(fastest TuningRecord for ``w`` on ``info`` in the log folder ``log``, its IRModule), or
    (None, IRModule) when the log holds none. On a local x86 target the record must also reproduce
    torch's result here; a faster one that does not is passed over, and one that does not build is
    skipped with a ``LogWarning`` naming its line. Raises ValueError for a log that is missing, not a
    folder, or for another target."""
    log = TuningLog(log).check(info, must_exist=True)
    mod = tuned_ir_module(w, info)
    with tempfile.TemporaryDirectory() as tmp:
        db, lines = log.open(tmp)
        if not db.has_workload(mod):
            return None, mod
        mine = target_key(json.loads(info.target_json))
        records = [r for r in db.get_top_k(db.commit_workload(mod), 1 << 30)
                   if target_key(r.target.export()) == mine and r.run_secs]
        check = info.backend.verifies_records()
        for r in records:
            try:
                if not check or record_reproduces_torch(w, info, mod, r):
                    return r, mod
            except Exception as e:  # noqa: BLE001 - a record that replays but does not build: the next
                where = _record_line(TuningLog(tmp), lines, mod, r)
                warnings.warn(f"{log.record_file}{f':{where}' if where else ''}: a record of {w} does not "
                              f"build ({first_line(e)}); skipped (the log's other records still apply)",
                              LogWarning, stacklevel=2)
    return None, mod


def best_schedule(w: Workload, info: TargetInfo, log):
    """The tuned IRModule for ``w`` from the log folder ``log`` (see ``best_record``), or None when the
    log has no record of it that passes."""
    record, mod = best_record(w, info, log)
    return None if record is None else scheduled(mod, record)


def _record_line(copy: TuningLog, lines: list, mod, record) -> int | None:
    """The line of the original log that a record of ``mod`` in its ``TuningLog.open`` copy came from,
    found by its run times (a trace with an index map cannot be written back as JSON); None unless
    exactly one record of ``mod`` has those times."""
    try:
        wl = set(copy.workload_lines_of([mod]))
        secs = [float(x) for x in record.run_secs]
        found = [lines[k] for k, r in enumerate(copy.records()) if r.workload in wl and r.run_secs == secs]
        return found[0] if len(found) == 1 else None
    except Exception:  # noqa: BLE001 - only for the message
        return None


def record_reproduces_torch(w: Workload, info: TargetInfo, mod, record) -> bool:
    """Build ``mod`` with one record's schedule for this machine and compare its output with PyTorch's
    on random inputs. Raises whatever the build raises (a trace that does not build here)."""
    return reproduces_torch(w, info, scheduled(mod, record))


def reproduces_torch(w: Workload, info: TargetInfo, scheduled_mod) -> bool:
    """Build the scheduled IRModule of ``w`` for this machine and compare its output with PyTorch's on
    random inputs. Raises whatever the build raises."""
    import numpy as np
    import tvm
    with info.target:
        lib = tvm.compile(scheduled_mod, target=info.target)
    xs = w.random_inputs(seed=7)
    args = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in xs]
    out = tvm.runtime.empty(w.output_shape, w.dtype)
    lib["main"](*args, out)
    return close(out.numpy(), w.reference(*xs))


def record_matches_torch(w: Workload, info: TargetInfo, wl_json, rec_json) -> bool:
    """Build one record (its workload line and record body, as JSON) and compare it with PyTorch on
    random inputs."""
    from tvm.s_tir import meta_schedule as ms
    record = ms.database.TuningRecord.from_json(rec_json, ms.database.Workload.from_json(wl_json))
    return record_reproduces_torch(w, info, tuned_ir_module(w, info), record)


def matches_unscheduled(info: TargetInfo, wl_json, rec_json) -> bool:
    """Build one record of a task that is no convtvm workload (a fused function of a network) and
    compare it with the same TIR unscheduled (plain loops, as written) on random inputs: the schedule
    must not change the result."""
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms
    workload = ms.database.Workload.from_json(wl_json)
    record = ms.database.TuningRecord.from_json(rec_json, workload)
    rng = np.random.default_rng(7)
    args = [rng.standard_normal([int(d) for d in a.shape]).astype(str(a.dtype))
            for a in ms.arg_info.ArgInfo.from_prim_func(workload.mod["main"])]
    outs = []
    for mod in (scheduled(workload.mod, record), workload.mod):
        with info.target:
            lib = tvm.compile(mod, target=info.target)
        tensors = [tvm.runtime.tensor(a) for a in args]
        lib["main"](*tensors)
        outs.append(tensors[-1].numpy())
    return close(*outs)
