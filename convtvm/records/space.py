"""A target's search space and replaying a trace in it: the schedule rules and postprocessors of
``schedules/<target>.json``'s tuning config, and a trace applied to a workload with some of its
sampling decisions changed, its postprocessors run again."""

from __future__ import annotations

import contextlib
import os
import sys
import types

from ..targets import TargetInfo


def _rules(cfg: dict):
    """The schedule rules of a target's tuning config (its ``rules`` section)."""
    from tvm.s_tir import meta_schedule as ms
    r = cfg["rules"]
    mlt = dict(r["multi_level_tiling"])
    if "reuse_write" in mlt:
        mlt["reuse_write"] = ms.schedule_rule.ReuseType(**mlt["reuse_write"])
    return [ms.schedule_rule.ApplyCustomRule(),  # blocks annotated "schedule_rule": Winograd's transforms
            ms.schedule_rule.AutoInline(**r["auto_inline"]),
            ms.schedule_rule.AddRFactor(**r["add_rfactor"]),
            ms.schedule_rule.MultiLevelTiling(**mlt),
            ms.schedule_rule.ParallelizeVectorizeUnroll(**r["parallel_vectorize_unroll"]),
            ms.schedule_rule.RandomComputeLocation()]


@contextlib.contextmanager
def skip_tensor_intrinsics(info: TargetInfo):
    """TuneContext imports every tensor intrinsic of every target (CUDA, ROCm, Hexagon, ...):
    ~50 s on a 2-core machine. While the contexts are built, a stand-in package loads only the
    intrinsics this target's search space can use."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules or info.backend.tensor_intrinsics is None:
        yield
        return
    import importlib.util
    stub = types.ModuleType(name)
    stub.__path__ = [os.path.dirname(importlib.util.find_spec(name).origin)]
    sys.modules[name] = stub
    try:
        for sub in info.backend.tensor_intrinsics:
            importlib.import_module(f"{name}.{sub}")
        yield
    finally:
        del sys.modules[name]


def make_context(mod, info: TargetInfo, name: str, seed: int | None = None):
    """A TuneContext for one IRModule with the target's search space from schedules/."""
    from tvm.s_tir import meta_schedule as ms
    cfg = info.config["tuning"]
    rules = _rules(cfg) if "rules" in cfg else "from-target"
    space = ms.space_generator.PostOrderApply(sch_rules=rules, postprocs="from-target",
                                              mutator_probs="from-target")
    return ms.TuneContext(mod=mod, target=info.target, space_generator=space,
                          search_strategy=ms.search_strategy.EvolutionarySearch(**cfg["search"]),
                          task_name=name, rand_state=-1 if seed is None else seed,
                          num_threads=os.cpu_count()).clone()


def replay(mod, trace, decisions: dict, postprocs, provider=None):
    """``mod`` scheduled by ``trace`` with ``decisions`` (instruction -> decision) changed, or each
    decision replaced as it is applied by ``provider(sch)``, a function of the new schedule that
    returns TVM's ``decision_provider(inst, inputs, attrs, decision) -> decision`` (``inputs`` are
    ``sch``'s random variables, so a loop's extent in ``mod`` can be read), and the postprocessors run
    again; None when a postprocessor rejects the result. Raises what
    the schedule raises for a trace that does not apply to ``mod``."""
    from tvm.s_tir import Schedule
    t = trace
    for inst, d in decisions.items():
        t = t.with_decision(inst, d, remove_postproc=True)
    sch = Schedule(mod)
    t.apply_to_schedule(sch, remove_postproc=True, decision_provider=provider(sch) if provider else None)
    sch.enter_postproc()
    return sch if all(p.apply(sch) for p in postprocs) else None


def postprocs(mod, info: TargetInfo) -> list:
    """The target's postprocessors, initialised for ``mod`` (what a tuning run of ``mod`` applies to each
    candidate)."""
    with skip_tensor_intrinsics(info):
        return list(make_context(mod, info, "main").space_generator.postprocs)
