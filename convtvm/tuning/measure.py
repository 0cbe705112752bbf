"""Measuring candidates: MetaSchedule's builders and runners for a target, the in-process ones, the
search space (schedule rules, TuneContext) and one record's kernel timed on its own.

By default an x86 search compiles and times candidates in this process (``InProcessBuilder`` /
``InProcessRunner``): no worker start-up, no tar/link/load of a shared object per candidate.
``isolated=True`` uses MetaSchedule's process pools (``LocalBuilder``/``LocalRunner``) with an
initializer that pays the slow imports once per worker, for kernels that might crash.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time

from ..records.space import _rules, make_context, skip_tensor_intrinsics  # noqa: F401 - re-exported
from ..records.verify import scheduled
from ..targets import TargetInfo

_ARTIFACTS: dict[str, object] = {}
MEASURED: set = set()  # kernel_key of the candidates in the log or measured in this run
ALREADY_MEASURED = "already measured: skipped"
# where in-process tuning time goes; on_measured reports batches before MetaSchedule joins them
STATS = {"build_s": 0.0, "run_s": 0.0, "measured": 0, "on_measured": lambda n: None}
_COUNTER = itertools.count()


def make_builder_runner(info: TargetInfo, isolated: bool):
    """(builder, runner) that measure candidates for ``info``: in process on a local x86 CPU unless
    ``isolated``; MetaSchedule's process pools for CUDA or ``isolated``; the ARM device's RPC runner."""
    from tvm.s_tir import meta_schedule as ms
    measure = info.config["tuning"]["measure"]
    evaluator = ms.runner.EvaluatorConfig(number=measure["number"], repeat=measure["repeat"],
                                          min_repeat_ms=measure["min_repeat_ms"], enable_cpu_cache_flush=False)
    if isolated or not info.backend.tunes_in_process:
        return info.backend.builder_runner(evaluator, initializer=_warm_worker, info=info)
    return InProcessBuilder(info.target), InProcessRunner(evaluator)


def _warm_worker() -> None:
    """Worker initializer: pay the slow imports once per worker, outside any build timeout."""
    import tvm.s_tir.tensor_intrin  # noqa: F401


def _in_process_classes():
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.runner import PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import LocalRunnerFuture

    @derived_object
    class _Builder(PyBuilder):
        def __init__(self, target):
            super().__init__()
            self.target = target

        def build(self, build_inputs):
            import tvm
            from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
            t0 = time.time()
            results = []
            for inp in build_inputs:
                key = kernel_key(inp.mod)
                if key in MEASURED:  # resumed runs never measure a candidate twice
                    results.append(BuilderResult(None, ALREADY_MEASURED))
                    continue
                MEASURED.add(key)
                try:
                    # as MetaSchedule's default_build: time the kernel on pre-packed weights
                    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(inp.mod)
                    lib = tvm.compile(mod, target=self.target)
                    key = f"inproc:{next(_COUNTER)}"
                    _ARTIFACTS[key] = lib
                    results.append(BuilderResult(key, None))
                except Exception as e:  # noqa: BLE001 - reported to MetaSchedule as a build error
                    results.append(BuilderResult(None, f"build error: {e}"))
            STATS["build_s"] += time.time() - t0
            return results

    @derived_object
    class _Runner(PyRunner):
        def __init__(self, evaluator):
            super().__init__()
            self.evaluator = evaluator

        def run(self, runner_inputs):
            import tvm
            from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common
            dev = tvm.cpu()
            fill = tvm.get_global_func("tvm.contrib.random.random_fill", True)
            futures = []
            t0 = time.time()
            for inp in runner_inputs:
                lib = _ARTIFACTS.pop(inp.artifact_path, None)
                try:
                    args = alloc_argument_common(fill or (lambda a: None), dev, [a.as_json() for a in inp.args_info], 1)
                    mod = lib.mod if hasattr(lib, "mod") else lib
                    costs = run_evaluator_common(mod, dev, self.evaluator, args)
                    futures.append(LocalRunnerFuture(res=costs))
                except Exception as e:  # noqa: BLE001 - reported as a run error
                    futures.append(LocalRunnerFuture(error_message=f"run error: {e}"))
            STATS["run_s"] += time.time() - t0
            STATS["measured"] += len(runner_inputs)
            STATS["on_measured"](len(runner_inputs))
            return futures

    return _Builder, _Runner


def InProcessBuilder(target):  # noqa: N802 - a class factory (MetaSchedule objects need a live FFI)
    return _in_process_classes()[0](target)


def InProcessRunner(evaluator):  # noqa: N802
    return _in_process_classes()[1](evaluator)


def kernel_key(mod) -> str:
    """Identity of a scheduled candidate. Its printed TIR, with booleans spelled as integers: a
    trace read back from a log replays annotations such as layout_rewrite_preproc as 1, not True."""
    return hashlib.sha1(re.sub(r"\bTrue\b", "1", mod.script()).encode()).hexdigest()


def kernel_timer(info: TargetInfo, wl_json, rec_json):
    """A zero-arg callable: seconds per call of one record's kernel (its workload line and record body,
    as JSON), measured as MetaSchedule measures it (weight-layout rewrite removed: the weights come
    pre-packed), on random inputs, on this machine's CPU."""
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    workload = ms.database.Workload.from_json(wl_json)
    record = ms.database.TuningRecord.from_json(rec_json, workload)
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(scheduled(workload.mod, record))
    with info.target:
        lib = tvm.compile(mod, target=info.target)
    lib = getattr(lib, "mod", lib)  # the runtime module of an Executable
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in a.shape]).astype(str(a.dtype)))
            for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"])]
    first = lib.time_evaluator("main", tvm.cpu(), number=1, repeat=3)(*args).results
    f = lib.time_evaluator("main", tvm.cpu(), number=max(1, min(100, int(0.02 / max(min(first), 1e-7)))), repeat=1)
    return lambda: f(*args).mean
