"""A cost model that starts warm: MetaSchedule's XGBoost model trained on the measured records of
tuning logs before a search begins, so that its first batches are ranked by what other workloads
taught it rather than at random.

``pretrained_cost_model(logs, info)`` returns the model ``tune(..., cost_model=...)`` takes. The model
learns within each workload which schedules run faster (MetaSchedule normalises each workload's costs by
its best), so a log pruned to one record per workload teaches it nothing: it needs working logs.
"""

from __future__ import annotations

import os
import tempfile

from ..records.log import TuningLog
from ..records.space import make_context
from ..targets import TargetInfo


def pretrained_cost_model(logs, info: TargetInfo, exclude=(), progress=print, per_workload: int = 512):
    """An ``XGBModel`` trained on the records of ``logs`` (folders of ``info``'s target) that ran, at most
    ``per_workload`` of each workload (the fastest). ``exclude``: IRModules whose own records are
    left out (to measure how a warm start helps on workloads the model has not seen). Raises
    ValueError when no log holds two or more measured records of a workload."""
    import tvm_ffi
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms
    model = ms.cost_model.XGBModel(num_tuning_cores=os.cpu_count() or 1)
    skip = {tvm_ffi.structural_hash(m) for m in exclude}
    groups = trained = 0
    for path in logs:
        log = TuningLog(path).check(info, must_exist=True)
        with tempfile.TemporaryDirectory(prefix="convtvm_warm_") as tmp:
            db, _ = log.open(tmp)
            by_workload: dict = {}
            for rec in db.get_all_tuning_records():
                if rec.run_secs and max(float(s) for s in rec.run_secs) < 1e9:
                    by_workload.setdefault(tvm_ffi.structural_hash(rec.workload.mod), (rec.workload.mod, []))[1].append(rec)
            for mod, recs in by_workload.values():
                if len(recs) < 2 or tvm_ffi.structural_hash(mod) in skip:
                    continue
                recs = sorted(recs, key=lambda r: sum(float(s) for s in r.run_secs))[:per_workload]
                candidates, results = [], []
                func = next(f for _, f in mod.functions_items())  # a task module holds one function
                args = ms.arg_info.ArgInfo.from_prim_func(func)
                for rec in recs:
                    sch = Schedule(mod)
                    try:
                        rec.trace.apply_to_schedule(sch, remove_postproc=False)
                    except Exception:  # noqa: BLE001 - a trace this TVM no longer replays teaches nothing
                        continue
                    candidates.append(ms.MeasureCandidate(sch, args))
                    results.append(ms.runner.RunnerResult(run_secs=rec.run_secs, error_msg=None))
                if len(candidates) >= 2:
                    model.update(make_context(mod, info, "warm"), candidates, results)
                    groups, trained = groups + 1, trained + len(candidates)
    if not groups:
        raise ValueError(f"no log of {', '.join(map(str, logs))} holds two or more measured records of a "
                         "workload: a warm start needs working logs, not pruned ones")
    progress(f"cost model trained on {trained} records of {groups} workloads")
    return model
