"""Auto-scheduling with MetaSchedule (TVM's in-tree successor of Ansor): XGBoost cost model,
evolutionary search, gradient task scheduler.

A tuning log is a MetaSchedule JSON database directory plus ``target.json``::

    tuning_logs/x86-znver3/
        target.json                   which target the records were measured on
        database_workload.json        one line per workload (the IRModule, identified structurally)
        database_tuning_record.json   one line per measured candidate (trace, run times, target)

Tuning runs on a private copy of the log; after every measured batch the copy is written back
atomically (write a temp file, rename), so Ctrl-C or a crash never leaves a half-written log.

Throughput: by default candidates are compiled and timed in this process (``InProcessBuilder`` /
``InProcessRunner``): no worker start-up, no tar/link/load of a shared object per candidate.
``isolated=True`` uses MetaSchedule's process pools (``LocalBuilder``/``LocalRunner``) with an
initializer that pays the slow imports once per worker, for kernels that might crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

from .targets import ROOT, SHIPPED_LOGS, TargetInfo, cache_dir, resolve
from .variants import Workload

DB_FILES = ("database_workload.json", "database_tuning_record.json")


# ----------------------------------------------------------------------------------------------
# Logs
# ----------------------------------------------------------------------------------------------

def default_log(info: TargetInfo) -> Path:
    """Where records go when no log is named: the user's log of the target,
    ``<cache>/tuning_logs/<tag>`` (``targets.cache_dir``); never the shipped logs."""
    return cache_dir() / "tuning_logs" / info.tag


def _seed(log: Path, info: TargetInfo) -> Path:
    """The log a tuning run starts from: ``log`` itself, or, for the user's log before its first
    record, the target's shipped log (so the user's log layers their records over the shipped ones)."""
    shipped = SHIPPED_LOGS / info.tag
    if log == default_log(info) and not (log / DB_FILES[1]).exists() and (shipped / "target.json").is_file():
        return shipped
    return log


def _target_key(t: dict) -> tuple:
    return tuple(str(t.get(k, "")) for k in ("kind", "mcpu", "mtriple", "arch"))


def log_target(log) -> TargetInfo:
    """The target a tuning log's records were measured on (its target.json)."""
    _must_be_folder(log)
    meta = Path(log) / "target.json"
    if not meta.exists():
        raise ValueError(f"tuning log {log} has no target.json: cannot tell which target it was tuned for")
    try:
        return resolve(json.loads(meta.read_text())["tvm_target"])
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{meta}: corrupt tuning log metadata ({e!r})") from None


def _must_be_folder(log) -> None:
    if Path(log).exists() and not Path(log).is_dir():
        raise ValueError(f"tuning log {log} must be a folder (a MetaSchedule database: target.json, "
                         f"{DB_FILES[0]}, {DB_FILES[1]}), not a file")


def check_log(log, info: TargetInfo, must_exist: bool) -> Path:
    """Validate a log directory: a folder, and it belongs to ``info``'s target. Its lines are checked
    where the log is read (``open_log``): a bad one is skipped with a warning, not fatal."""
    log = Path(log)
    _must_be_folder(log)
    meta = log / "target.json"
    if not log.exists():
        if must_exist:
            raise ValueError(f"tuning log {log} does not exist")
        return log
    if meta.exists():
        try:
            recorded = json.loads(meta.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta}: corrupt tuning log metadata ({e})") from None
        mine = json.loads(info.target_json)
        if _target_key(recorded.get("tvm_target", {})) != _target_key(mine):
            raise ValueError(f"tuning log {log} holds records for target {recorded.get('tvm_target')}, "
                             f"not {mine}: records for another target are never applied")
    elif any((log / f).exists() for f in DB_FILES):
        raise ValueError(f"tuning log {log} has no target.json: cannot tell which target it was tuned for")
    return log


class LogWarning(UserWarning):
    """A line of a tuning log that cannot be read (skipped; the log's other records still apply)."""


def _skipped(path: Path, lineno: int, why: str) -> None:
    warnings.warn(f"{path}:{lineno}: {why}; skipped (the log's other records still apply)", LogWarning,
                  stacklevel=4)


def _nonblank_lines(path: Path) -> list:
    """[(line number, text)] of a database file's non-blank lines (the lines MetaSchedule reads; a
    record's workload index counts these)."""
    if not path.exists():
        return []
    with open(path) as f:
        return [(n, line.rstrip("\n")) for n, line in enumerate(f, 1) if line.strip()]


def _workload_problem(obj) -> str | None:
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], (str, int)) and isinstance(obj[1], str)):
        return "not a [structural hash, module] workload line"
    return None


def _record_problem(obj, workloads: int) -> str | None:
    """Why a parsed record line is not one MetaSchedule can read, or None. (MetaSchedule's loader
    crashes the process on some malformed records, e.g. an object instead of a list.)"""
    if not (isinstance(obj, list) and len(obj) == 2):
        return "not a [workload index, record] line"
    wl, rec = obj
    if not isinstance(wl, int) or isinstance(wl, bool) or not 0 <= wl < workloads:
        return f"workload index {wl!r} is not one of the log's {workloads} workloads"
    if not (isinstance(rec, list) and len(rec) == 4):
        return "the record is not [trace, run_secs, target, args_info]"
    trace, secs, target, args = rec
    if not (isinstance(trace, list) and len(trace) == 2 and isinstance(trace[0], list) and isinstance(trace[1], list)
            and all(isinstance(i, list) and len(i) == 4 for i in trace[0])
            and all(isinstance(d, list) and len(d) == 2 for d in trace[1])):
        return "malformed trace"
    if secs is not None and not (isinstance(secs, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in secs)):
        return "malformed run times"
    if not isinstance(target, dict) or not isinstance(args, list):
        return "malformed target or argument info"
    return None


def _parse_log(log: Path) -> tuple[list, list, bool]:
    """The readable lines of ``log``'s database files: ([(line, workload json)], [(line, [workload
    position in the first list, record json])], whether every line was). A line that does not
    parse, or is not shaped as MetaSchedule writes it, is skipped with a warning; so is a record of a
    skipped workload line, and the records after it are renumbered."""
    wl_path, rec_path = log / DB_FILES[0], log / DB_FILES[1]
    wl_lines, rec_lines = _nonblank_lines(wl_path), _nonblank_lines(rec_path)
    workloads, position = [], {}
    for index, (n, text) in enumerate(wl_lines):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            _skipped(wl_path, n, f"corrupt workload line ({e.msg}), and every record of it")
            continue
        why = _workload_problem(obj)
        if why:
            _skipped(wl_path, n, f"{why}, and every record of it")
            continue
        position[index] = len(workloads)
        workloads.append((n, obj))
    records = []
    for n, text in rec_lines:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            _skipped(rec_path, n, f"corrupt tuning record line ({e.msg})")
            continue
        why = _record_problem(obj, len(wl_lines))
        if why:
            _skipped(rec_path, n, why)
            continue
        if obj[0] not in position:
            _skipped(rec_path, n, f"a record of {wl_path.name} line {wl_lines[obj[0]][0]}, which was skipped")
            continue
        records.append((n, [position[obj[0]], obj[1]]))
    return workloads, records, len(workloads) == len(wl_lines) and len(records) == len(rec_lines)


def _write_lines(path: Path, objs) -> None:
    with open(path, "w") as f:
        f.write("".join(json.dumps(o) + "\n" for o in objs))


def open_log(log, into) -> tuple:
    """Copy ``log``'s database into the folder ``into`` without the lines MetaSchedule cannot read
    (each skipped with a ``LogWarning`` naming its file and line: one bad record never takes the
    others with it) and open the copy: (JSONDatabase, the original line number of each record
    line of the copy). A line can be unreadable as JSON, malformed, or hold a workload or trace
    that MetaSchedule cannot rebuild (a trace that no longer replays on its workload)."""
    from tvm.s_tir import meta_schedule as ms
    log, into = Path(log), Path(into)
    workloads, records, clean = _parse_log(log)
    for name in DB_FILES:
        if (into / name).exists():
            (into / name).unlink()
    if clean:  # the usual case: the files as they are
        for name in DB_FILES:
            if (log / name).exists():
                shutil.copyfile(log / name, into / name)
    else:
        _write_lines(into / DB_FILES[0], [o for _, o in workloads])
        _write_lines(into / DB_FILES[1], [o for _, o in records])
    try:
        return _open_db(into), [n for n, _ in records]
    except Exception:  # noqa: BLE001 - a line MetaSchedule cannot rebuild: find it, line by line
        pass
    built, keep_wl, position = [], [], {}
    for k, (n, obj) in enumerate(workloads):
        try:
            built.append(ms.database.Workload.from_json(obj))
        except Exception as e:  # noqa: BLE001
            _skipped(log / DB_FILES[0], n,
                     f"a workload MetaSchedule cannot read ({_first_line(e)}), and every record of it")
            continue
        position[k] = len(keep_wl)
        keep_wl.append(obj)
    keep_rec, lines = [], []
    for n, (wl, rec) in records:
        if wl not in position:
            continue
        try:
            ms.database.TuningRecord.from_json(rec, built[position[wl]])  # replays the trace on the workload
        except Exception as e:  # noqa: BLE001
            _skipped(log / DB_FILES[1], n, f"its trace does not replay on its workload ({_first_line(e)})")
            continue
        keep_rec.append([position[wl], rec])
        lines.append(n)
    _write_lines(into / DB_FILES[0], keep_wl)
    _write_lines(into / DB_FILES[1], keep_rec)
    try:
        return _open_db(into), lines
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"tuning log {log} cannot be read ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    """``e`` in one line for a message: its type and the first line of its text (TVM's errors run to
    many lines; a ScheduleError's text is often not rendered at all)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip() and ln.strip() != "(not rendered)"]
    return f"{type(e).__name__}: {lines[0]}"[:300] if lines else type(e).__name__


def _copy_atomic(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sync(work: Path, log: Path, info: TargetInfo) -> None:
    log.mkdir(parents=True, exist_ok=True)
    if not (log / "target.json").exists():
        _write_target(log, info)
    for name in DB_FILES:
        if (work / name).exists():
            _copy_atomic(work / name, log / name)


def _write_target(log: Path, info: TargetInfo) -> None:
    """``log``'s target.json: the target its records are measured on."""
    from .module import write_json_atomic
    write_json_atomic(log / "target.json", {"kind": info.kind, "tag": info.tag, "tvm_target": json.loads(info.target_json)})


def _open_db(directory: Path):
    from tvm.s_tir import meta_schedule as ms
    return ms.database.JSONDatabase(str(directory / DB_FILES[0]), str(directory / DB_FILES[1]),
                                    allow_missing=True, module_equality="structural")


def tuned_ir_module(w: Workload, info: TargetInfo):
    import tvm
    layout_free = info.config["tuning"].get("layout_free_weights", False)
    return tvm.IRModule({"main": w.prim_func(layout_free_weights=layout_free)})


def best_record(w: Workload, info: TargetInfo, log):
    """(fastest TuningRecord for this workload on this target, its IRModule) or (None, mod).
    On x86 the record must also reproduce torch's result here; a faster one that does not is passed
    over (MetaSchedule can emit a wrong kernel: spatially separable convs got schedules that never
    write the second stage's zero padding, and returned NaNs)."""
    log = check_log(log, info, must_exist=True)
    mod = tuned_ir_module(w, info)
    with tempfile.TemporaryDirectory() as tmp:
        db, lines = open_log(log, tmp)
        if not db.has_workload(mod):
            return None, mod
        mine = _target_key(json.loads(info.target_json))
        records = [r for r in db.get_top_k(db.commit_workload(mod), 1 << 30)
                   if _target_key(r.target.export()) == mine and r.run_secs]
        check = info.kind == "x86" and not info.is_remote
        for r in records:
            try:
                if not check or _reproduces_torch(w, info, mod, r):
                    return r, mod
            except Exception as e:  # noqa: BLE001 - a record that replays but does not build: the next
                where = _record_line(Path(tmp), lines, mod, r)
                warnings.warn(f"{log / DB_FILES[1]}{f':{where}' if where else ''}: a record of {w} does not "
                              f"build ({_first_line(e)}); skipped (the log's other records still apply)",
                              LogWarning, stacklevel=2)
    return None, mod


def _record_line(copy: Path, lines: list, mod, record) -> int | None:
    """The line of the original log that a record of ``mod`` in its ``open_log`` copy came from,
    found by its run times (a trace with an index map cannot be written back as JSON); None unless
    exactly one record of ``mod`` has those times."""
    try:
        wl = set(workload_lines_of(copy, [mod]))
        secs = [float(x) for x in record.run_secs]
        found = [lines[k] for k, (i, rec) in enumerate(_rows(copy)) if i in wl and rec[1] == secs]
        return found[0] if len(found) == 1 else None
    except Exception:  # noqa: BLE001 - only for the message
        return None


def _reproduces_torch(w: Workload, info: TargetInfo, mod, record) -> bool:
    """Build ``mod`` with one record's schedule and compare it with PyTorch on random inputs."""
    import tvm

    from .module import Module
    with info.target:
        m = Module(tvm.compile(scheduled(mod, record), target=info.target), w, info, "tuned")
    xs = w.random_inputs(seed=7)
    return _close(m(*xs), w.reference(*xs))


def scheduled(mod, record):
    """``mod`` with a tuning record's schedule (its trace, postprocessing included) applied."""
    from tvm.s_tir import Schedule
    sch = Schedule(mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod


def best_schedule(w: Workload, info: TargetInfo, log):
    """The tuned IRModule for ``w`` from ``log``, or None when the log has no record for it."""
    record, mod = best_record(w, info, log)
    return None if record is None else scheduled(mod, record)


# ----------------------------------------------------------------------------------------------
# Fast in-process builder and runner
# ----------------------------------------------------------------------------------------------

_ARTIFACTS: dict[str, object] = {}
MEASURED: set = set()  # kernel_key of the candidates in the log or measured in this run
ALREADY_MEASURED = "already measured: skipped"
# where in-process tuning time goes; on_measured reports batches before MetaSchedule joins them
STATS = {"build_s": 0.0, "run_s": 0.0, "measured": 0, "on_measured": lambda n: None}
_COUNTER = itertools.count()


def _make_builder_runner(info: TargetInfo, isolated: bool):
    from tvm.s_tir import meta_schedule as ms
    measure = info.config["tuning"]["measure"]
    evaluator = ms.runner.EvaluatorConfig(number=measure["number"], repeat=measure["repeat"],
                                          min_repeat_ms=measure["min_repeat_ms"], enable_cpu_cache_flush=False)
    if info.kind == "arm":
        return info.backend.builder_runner(evaluator)
    if isolated or info.kind == "cuda":
        builder = ms.builder.LocalBuilder(max_workers=os.cpu_count(), timeout_sec=120, initializer=_warm_worker)
        runner = ms.runner.LocalRunner(evaluator_config=evaluator, timeout_sec=60, initializer=_warm_worker)
        return builder, runner
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


# ----------------------------------------------------------------------------------------------
# Tuning
# ----------------------------------------------------------------------------------------------

@dataclass
class TaskProgress:
    name: str
    flops: int
    trials: int = 0
    best_s: float = float("inf")
    curve: list = None

    @property
    def best_gflops(self) -> float:
        return self.flops / self.best_s / 1e9 if self.best_s < float("inf") else 0.0


def _rules(cfg: dict):
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


# tensor intrinsics each CPU search space may ask for: TVM's defaults for a CPU with AVX-512 VNNI
# (Zen 4/5, Intel since Cascade Lake) build an int8 dot-product rule, its ARM ones check NEON dot products
_INTRINSICS = {"x86": ("x86",), "arm": ("arm_cpu",)}


@contextlib.contextmanager
def _skip_tensor_intrinsics(info: TargetInfo):
    """TuneContext imports every tensor intrinsic of every target (CUDA, ROCm, Hexagon, ...):
    ~50 s on a 2-core machine. While the contexts are built, a stand-in package loads only the
    intrinsics this target's search space can use."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules or info.kind not in _INTRINSICS:
        yield
        return
    import importlib.util
    stub = types.ModuleType(name)
    stub.__path__ = [os.path.dirname(importlib.util.find_spec(name).origin)]
    sys.modules[name] = stub
    try:
        for sub in _INTRINSICS[info.kind]:
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


def tune(workloads, target="x86", trials: int = 64, log=None, *, weights=None, names=None, **kwargs) -> dict:
    """Tune one workload or many (the task scheduler shares ``trials`` among them).

    Records go to ``log`` (default ``tuning_logs/<target tag>``); a second run continues from them.
    Returns {"log", "trials", "seconds", "tasks": [TaskProgress...]}.
    """
    ws = [workloads] if isinstance(workloads, Workload) else list(workloads)
    if not ws:
        raise ValueError("nothing to tune: no workloads given")
    info = resolve(target)
    names = names or [str(w) for w in ws]
    tasks = [(n, tuned_ir_module(w, info), w.flops) for n, w in zip(names, ws)]
    return tune_modules(tasks, info, trials, log, weights=weights, **kwargs)


def tune_modules(tasks, info: TargetInfo, trials: int, log=None, *, weights=None, trials_per_iter: int = 32,
                 isolated: bool = False, seed: int | None = None, progress=print,
                 exit_on_sigint: bool = False) -> dict:
    """The tuning engine: ``tasks`` are (name, IRModule, flops) triples.

    Ctrl-C: the log is written atomically after every batch, so an interrupt never loses a committed
    record. With ``exit_on_sigint`` (the CLI), the first Ctrl-C finishes the current batch, writes
    it and exits with status 130; a second one stops at once."""
    from tvm.s_tir import meta_schedule as ms

    if int(trials) < 1:
        raise ValueError(f"trials={trials} must be positive")
    log = check_log(log or default_log(info), info, must_exist=False)
    rows = [TaskProgress(name, flops, curve=[]) for name, _, flops in tasks]
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="convtvm_tune_") as tmp:
        work = Path(tmp)
        database, _ = open_log(_seed(log, info), work)  # a line it cannot read is skipped, not written back
        builder, runner = _make_builder_runner(info, isolated)
        interrupted: list = []

        def after_batch():
            _sync(work, log, info)
            if interrupted and exit_on_sigint:  # a safe point: every measured record is in the log
                progress(f"interrupted: the log {log} holds every measured batch")
                shutil.rmtree(tmp, ignore_errors=True)
                os._exit(130)

        in_process = not isolated and info.kind == "x86"
        if in_process:
            MEASURED.clear()
            MEASURED.update(_measured_hashes(database, tasks))
        callbacks = [_add_new_to_database(database, tasks, info.target) if in_process
                     else ms.measure_callback.AddToDatabase(),
                     ms.measure_callback.UpdateCostModel(),
                     _progress_callback(rows, start, progress, after_batch)]
        if not in_process:
            callbacks.insert(1, ms.measure_callback.RemoveBuildArtifact())
        with _skip_tensor_intrinsics(info):
            contexts = [make_context(mod, info, name, seed) for name, mod, _ in tasks]
        progress(f"tuning {len(tasks)} task(s) for {info.tag}: {trials} trials, log {log}")
        STATS.update(build_s=0.0, run_s=0.0, measured=0, on_measured=lambda n: progress(
            f"  [{time.time() - start:6.0f}s] measured {n} candidates ({STATS['measured']} in all)"))
        previous = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _on_sigint(interrupted, previous, exit_on_sigint, progress))
        try:
            ms.tune_tasks(tasks=contexts, task_weights=list(weights or [1.0] * len(tasks)), work_dir=tmp,
                          max_trials_global=int(trials), num_trials_per_iter=min(trials_per_iter, int(trials)),
                          builder=builder, runner=runner, database=database,
                          cost_model=ms.cost_model.XGBModel(num_tuning_cores=os.cpu_count()),
                          measure_callbacks=callbacks,
                          task_scheduler=EagerGradient(seed, _logged_best_ms(database, tasks)))
        except Exception:
            if interrupted:  # Ctrl-C inside a MetaSchedule callback surfaces as an FFI error
                raise KeyboardInterrupt from None
            raise
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, previous)
            _sync(work, log, info)
            _ARTIFACTS.clear()
    done = sum(t.trials for t in rows)
    secs = time.time() - start
    progress(f"done: {done} trials in {secs:.0f} s ({60 * done / max(secs, 1e-9):.1f} trials/min; "
             f"compile {STATS['build_s']:.0f} s, measure {STATS['run_s']:.0f} s, search and cost model the rest); "
             f"log {log}")
    return {"log": str(log), "trials": done, "seconds": secs, "tasks": rows}


def EagerGradient(seed: int | None = None, logged_ms=None):  # noqa: N802 - a class factory (live FFI)
    """MetaSchedule's gradient-based task scheduler (Ansor's: the next task is the one whose weighted
    latency is falling fastest), ported, with two changes:

    - every measured batch is joined -- records written, cost model updated, progress shown --
      before the next task is picked. MetaSchedule's own joins nothing until each task has had a
      first batch: on the 36-op suite, 1152 trials with no record in the log and no progress line,
      all lost to a Ctrl-C;
    - a task the log already holds records for (``logged_ms``: its best, or None) starts from that
      best instead of a first batch of its own, so a resumed run spends its trials where the
      weighted latency is, not one batch on every task."""
    import random

    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

    alpha, window = 0.2, 3  # MetaSchedule's defaults

    @derived_object
    class _EagerGradient(PyTaskScheduler):
        def __init__(self):
            super().__init__()
            self.rng = random.Random(seed)
            self.history: list = []  # per task: best ms after each joined batch
            self.best: list = []

        def next_task_id(self) -> int:
            tasks = self._outer().tasks_
            if not self.history:  # 1e100 ms until a candidate runs, as MetaSchedule's own
                known = list(logged_ms or [None] * len(tasks))
                self.best = [1e100 if ms is None else ms for ms in known]
                self.history = [[] if ms is None else [ms] for ms in known]
            for i, task in enumerate(tasks):
                if not task.is_terminated and task.measure_candidates is not None:
                    self._joined(i, self.join_running_task(i))  # in the log before the next is picked
            alive = [i for i, t in enumerate(tasks) if not t.is_terminated]
            if not alive:
                return -1
            first = [i for i in alive if not self.history[i]]
            if first:  # every task gets one batch before the gradients mean anything
                return first[0]
            grads = []
            for i in alive:
                h = self.history[i]
                g1 = (h[-1 - window] - h[-1]) / window if len(h) > window else 0.0
                grads.append((alpha * g1 + (1 - alpha) * h[-1] / len(h)) * float(tasks[i].task_weight))
            if max(grads) == min(grads):
                return self.rng.choice(alive)
            return alive[grads.index(max(grads))]

        def _joined(self, task_id: int, results) -> None:
            for r in results:
                if r.error_msg is None and r.run_secs:
                    secs = sorted(float(x) for x in r.run_secs)
                    self.best[task_id] = min(self.best[task_id], 1e3 * secs[len(secs) // 2])
            self.history[task_id].append(self.best[task_id])

    return _EagerGradient()


def kernel_key(mod) -> str:
    """Identity of a scheduled candidate. Its printed TIR, with booleans spelled as integers: a
    trace read back from a log replays annotations such as layout_rewrite_preproc as 1, not True."""
    return hashlib.sha1(re.sub(r"\bTrue\b", "1", mod.script()).encode()).hexdigest()


def _logged_best_ms(database, tasks) -> list:
    """Per task, the best mean time (ms) of its records in the database, or None."""
    best = []
    for _, mod, _ in tasks:
        top = database.get_top_k(database.commit_workload(mod), 1) if database.has_workload(mod) else []
        secs = [float(x) for x in top[0].run_secs] if top and top[0].run_secs else None
        best.append(1e3 * sum(secs) / len(secs) if secs else None)
    return best


def _measured_hashes(database, tasks) -> set:
    """Keys (kernel_key) of every candidate the database already holds for these tasks."""
    hashes = set()
    for _, mod, _ in tasks:
        if not database.has_workload(mod):
            continue
        for record in database.get_top_k(database.commit_workload(mod), 1 << 30):
            hashes.add(kernel_key(scheduled(mod, record)))
    return hashes


def _add_new_to_database(database, tasks, target):
    """MetaSchedule's AddToDatabase, minus the candidates the builder skipped as already measured."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.database import TuningRecord
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class _AddNew(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            workload = database.commit_workload(tasks[task_id][1])
            for cand, built, ran in zip(measure_candidates, builder_results, runner_results):
                if built.error_msg == ALREADY_MEASURED:
                    continue
                secs = [float(x) for x in ran.run_secs] if ran.run_secs and not ran.error_msg else None
                database.commit_tuning_record(TuningRecord(cand.sch.trace, workload, secs, target, cand.args_info))

    return _AddNew()


def _on_sigint(interrupted: list, previous, exit_on_sigint: bool, progress):
    chain = previous if callable(previous) else signal.default_int_handler

    def handler(signum, frame):
        if exit_on_sigint and not interrupted:
            interrupted.append(True)
            progress("\nCtrl-C: stopping after the current batch (Ctrl-C again to stop now)")
            return
        interrupted.append(True)
        chain(signum, frame)

    return handler


def _progress_callback(tasks, start, progress, sync):
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
    from tvm.ir.utils import derived_object

    @derived_object
    class _Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            t = tasks[task_id]
            skipped = sum(b.error_msg == ALREADY_MEASURED for b in builder_results)
            errors = [b.error_msg or r.error_msg for b, r in zip(builder_results, runner_results)
                      if (b.error_msg or r.error_msg) and b.error_msg != ALREADY_MEASURED]
            if errors:
                progress(f"  {len(errors)} of {len(runner_results)} candidates failed; first: "
                         f"{str(errors[0]).strip().splitlines()[-1][:300]}")
            if skipped:
                progress(f"  {skipped} candidate(s) already in the log: not measured again")
            for built, res in zip(builder_results, runner_results):
                if built.error_msg == ALREADY_MEASURED:
                    continue
                t.trials += 1
                if res.run_secs and not res.error_msg:
                    secs = sum(float(s) for s in res.run_secs) / len(res.run_secs)
                    t.best_s = min(t.best_s, secs)
                t.curve.append((t.trials, t.best_s))
            sync()
            total = sum(x.trials for x in tasks)
            progress(f"  [{time.time() - start:6.0f}s] {t.name[:60]}: {t.trials} trials, best "
                     f"{t.best_s * 1e3:.3f} ms = {t.best_gflops:.1f} GFLOP/s  (all tasks: {total} trials)")

    return _Progress()


# ----------------------------------------------------------------------------------------------
# Pruning: ship only the best records
# ----------------------------------------------------------------------------------------------

def _rows(log: Path) -> list:
    """``log``'s tuning records as ``[workload line, record]`` rows; a line that does not parse is
    skipped with a warning."""
    rows, path = [], Path(log) / DB_FILES[1]
    for n, text in _nonblank_lines(path):
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            _skipped(path, n, f"corrupt tuning record line ({e.msg})")
            continue
        if not (isinstance(row, list) and len(row) == 2 and isinstance(row[1], list) and len(row[1]) >= 2):
            _skipped(path, n, "not a [workload index, record] line")
            continue
        rows.append(row)
    return rows


def row_secs(row) -> float:
    """A ``[workload line, record]`` row's mean run time, in seconds."""
    secs = row[1][1]
    return sum(secs) / len(secs)


def record_trials(log: Path, trials: dict) -> None:
    """Set ``trials`` (name -> trials measured) in ``log``'s trials.json, atomically; other names stay."""
    from .module import write_json_atomic
    meta = Path(log) / "trials.json"
    counts = json.loads(meta.read_text()) if meta.exists() else {}
    write_json_atomic(meta, {**counts, **trials})


def write_rows(log: Path, rows: list) -> None:
    """Rewrite ``log``'s tuning records (``[workload line, record]`` rows), atomically."""
    fd, tmp = tempfile.mkstemp(dir=log, prefix=".records.")
    with os.fdopen(fd, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, log / DB_FILES[1])


def record_keys(log: Path, rows: list | None = None) -> list:
    """One key per record of ``log`` (or per row of ``rows``, rows of ``log``): its workload's structural
    hash and its trace, the same for the same record in any log, wherever its workload line sits."""
    with open(log / DB_FILES[0]) as f:
        hashes = [json.loads(line)[0] for line in f if line.strip()]
    return [(hashes[wl], json.dumps(rec[0])) for wl, rec in (_rows(log) if rows is None else rows)]


def unique_rows(log: Path, rows: list) -> list:
    """``rows`` of ``log`` without a record held twice (the first of each kept)."""
    seen, out = set(), []
    for row, key in zip(rows, record_keys(log, rows)):
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def workload_lines_of(log: Path, mods: list) -> dict:
    """Database workload line number -> index in ``mods`` of the IRModule it holds (structurally)."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms
    with open(log / DB_FILES[0]) as f:
        logged = [ms.database.Workload.from_json(json.loads(line)).mod for line in f if line.strip()]
    return {i: j for i, m in enumerate(logged) for j, mod in enumerate(mods) if tvm_ffi.structural_equal(m, mod)}


def _workload_index(log: Path, workloads: dict, info: TargetInfo) -> dict:
    """Database workload line number -> the Workload it holds (matched structurally)."""
    ws = list(workloads.values())
    return {i: ws[j] for i, j in workload_lines_of(log, [tuned_ir_module(w, info) for w in ws]).items()}


def summarize(log, workloads: dict, info: TargetInfo, index: dict | None = None) -> dict:
    """Per workload key: trials measured and the tuning curve [[trial, best ms so far], ...], in
    measurement order. Written beside pruned logs (trials.json, curves.json), which keep only the best."""
    log = Path(log)
    index = index if index is not None else _workload_index(log, workloads, info)
    keys = {i: w.key for i, w in index.items()}
    summary: dict = {}
    for wl, rec in _rows(log):
        if wl not in index:
            continue
        entry = summary.setdefault(keys[wl], {"trials": 0, "curve": [], "best": float("inf")})
        entry["trials"] += 1
        if rec[1]:
            entry["best"] = min(entry["best"], 1e3 * sum(rec[1]) / len(rec[1]))
        if entry["best"] < float("inf"):
            entry["curve"].append([entry["trials"], round(entry["best"], 5)])
    return summary


def _matches_torch(w: Workload, info: TargetInfo, wl_json, rec_json) -> bool:
    """Build one record and compare it with PyTorch on random inputs."""
    from tvm.s_tir import meta_schedule as ms
    record = ms.database.TuningRecord.from_json(rec_json, ms.database.Workload.from_json(wl_json))
    return _reproduces_torch(w, info, tuned_ir_module(w, info), record)


def _close(y, ref) -> bool:
    """max|y - ref| <= 1e-4 max|ref|: the float32 bar every kernel meets. A NaN must sit where the
    reference has one (random inputs give a network's fused batch-norm negative variances), and
    every other element must meet the bar."""
    import numpy as np
    y, ref = np.asarray(y), np.asarray(ref)
    nan = np.isnan(ref)
    if not np.array_equal(np.isnan(y), nan) or nan.all():
        return False
    y, ref = y[~nan], ref[~nan]
    return float(np.abs(y - ref).max()) <= 1e-4 * max(float(np.abs(ref).max()), 1e-30)


def _matches_unscheduled(info: TargetInfo, wl_json, rec_json) -> bool:
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
    return _close(*outs)


def compact_workloads(log) -> None:
    """Rewrite ``log``'s workload file (atomically) without the indentation MetaSchedule puts in each
    serialised IRModule (base64 of an 8-byte length and a pretty-printed JSON graph): ~3x smaller,
    read back the same (the structural hash is stored beside it, unchanged)."""
    import base64
    path = Path(log) / DB_FILES[0]
    lines = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            shash, blob = json.loads(line)
            raw = base64.b64decode(blob)
            size = int.from_bytes(raw[:8], "little")
            if size != len(raw) - 8:  # not the layout this was written for: keep it as it is
                lines.append(line.rstrip("\n"))
                continue
            text = json.dumps(json.loads(raw[8:]), separators=(",", ":")).encode()
            lines.append(json.dumps([shash, base64.b64encode(len(text).to_bytes(8, "little") + text).decode()]))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".compact.")
    with os.fdopen(fd, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def merge(src, dst, trials: dict | None = None, progress=print) -> int:
    """Add every record of the log ``src`` (same target) that ``dst`` does not hold to the log ``dst``,
    and ``trials`` (name -> trials measured) to dst's trials.json; dst is rewritten atomically.
    Returns records added."""
    src, dst = Path(src), Path(dst)
    info = log_target(src)
    check_log(dst, info, must_exist=False)
    from tvm.s_tir import meta_schedule as ms
    with tempfile.TemporaryDirectory(prefix="convtvm_merge_") as tmp:
        work = Path(tmp)
        (work / "src").mkdir()
        db, added = open_log(dst, work)[0], 0
        for rec in open_log(src, work / "src")[0].get_all_tuning_records():
            wl = db.commit_workload(rec.workload.mod)
            db.commit_tuning_record(ms.database.TuningRecord(rec.trace, wl, rec.run_secs, rec.target, rec.args_info))
            added += 1
        rows = _rows(work)
        unique = unique_rows(work, rows)  # a record dst already held is not added twice
        if len(unique) < len(rows):
            write_rows(work, unique)
            added -= len(rows) - len(unique)
        _sync(work, dst, info)
    compact_workloads(dst)
    if trials:
        record_trials(dst, trials)
    progress(f"merged {added} records of {src} into {dst}")
    return added


def retarget(src, target, out=None, progress=print) -> int:
    """Carry the records of the log ``src`` over to another CPU of the same kind (a log tuned on a
    Zen 3 machine, used on a Zen 5 one): each workload's best record is replayed and compiled for
    ``target``, checked against the unscheduled TIR and timed here, then merged into ``out`` (default
    ``tuning_logs/<target tag>``) as that target's record. A record is never applied to a target it
    was not measured on; this is how one becomes a measured starting point for the new target's
    tuning (which starts each task from its best logged record). Returns records carried over."""
    src = Path(src)
    have, info = log_target(src), resolve(target)
    if info.kind != have.kind or info.is_remote:
        raise ValueError(f"retarget carries records between CPUs of this machine's kind; {src} is for "
                         f"{have.kind}, target is {info.kind}")
    if _target_key(json.loads(have.target_json)) == _target_key(json.loads(info.target_json)):
        raise ValueError(f"{src} already holds records for {info.tag}")
    out = check_log(out or default_log(info), info, must_exist=False)
    exported = {k: (list(v) if k == "keys" else v) for k, v in info.target.export().items()}
    with tempfile.TemporaryDirectory(prefix="convtvm_retarget_") as tmp:
        moved, pruned = Path(tmp) / "moved", Path(tmp) / "pruned"
        moved.mkdir()
        shutil.copyfile(src / DB_FILES[0], moved / DB_FILES[0])
        _write_target(moved, info)
        write_rows(moved, [[wl, [rec[0], rec[1], exported, *rec[3:]]] for wl, rec in _rows(src)])
        progress(f"replaying {src}'s best records for {info.tag}: each checked and timed here")
        kept = prune(moved, keep=1, out=pruned, retime=1, progress=progress)
        merge(pruned, out, progress=progress)
    return kept


def _kernel_timer(info: TargetInfo, wl_json, rec_json):
    """A zero-arg callable: seconds per call of one record's kernel, measured as MetaSchedule measures
    it (weight-layout rewrite removed: the weights come pre-packed), on random inputs."""
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


def _retimed(info: TargetInfo, wl_lines, candidates, rounds: int = 7) -> list:
    """``candidates`` ([wl, rec] rows) re-timed in interleaved rounds on a quiet machine, fastest first,
    each with its median as its run_secs: the search measured them while other work ran, and a
    lucky sample can rank a slower schedule first."""
    from .bench import time_interleaved
    ms = time_interleaved({i: _kernel_timer(info, wl_lines[wl], rec) for i, (wl, rec) in enumerate(candidates)},
                          rounds)
    out = [[wl, [rec[0], [round(ms[i] / 1e3, 9)], *rec[2:]]] for i, (wl, rec) in enumerate(candidates)]
    return sorted(out, key=lambda r: r[1][1][0])


def prune(log, keep: int = 1, out=None, workloads: dict | None = None, retime: int = 0, only: bool = False,
          progress=print) -> int:
    """Keep the ``keep`` best records per workload (and target). Rewrites the log atomically.
    A kept record must reproduce the right result on this machine (a record that does not is dropped
    and the next best taken): PyTorch's for the ``workloads`` given, the unscheduled TIR's for any
    other task (a network's fused functions). With ``retime`` >= 1, the ``retime`` best verified
    records of each workload are timed again here, interleaved, and the fastest kept with its new
    time (run the machine quiet; ``retime=1`` re-times a log measured under other conditions). With
    ``workloads``, trials.json and curves.json record how their kept records were found, and
    ``only`` drops the records of every other task."""
    log = Path(log)
    out = Path(out or log)
    info = log_target(log)
    with open(log / DB_FILES[0]) as f:
        wl_lines = [json.loads(line) for line in f if line.strip()]
    index = {}
    if workloads:
        index = _workload_index(log, workloads, info)
        summary = summarize(log, workloads, info, index)
        from .module import write_json_atomic
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "trials.json", {k: v["trials"] for k, v in summary.items()})
        write_json_atomic(out / "curves.json", {k: v["curve"] for k, v in summary.items()})

    def verify(wl, rec) -> bool:
        if info.is_remote:  # built here, runs elsewhere: nothing to compare with on this machine
            return True
        if wl in index:
            if _matches_torch(index[wl], info, wl_lines[wl], rec):
                return True
            progress(f"dropped a record of {index[wl]}: its output does not match torch")
        elif _matches_unscheduled(info, wl_lines[wl], rec):
            return True
        else:
            progress(f"dropped a record of workload {wl}: its output differs from the unscheduled TIR's")
        return False

    rows = _rows(log)
    by_wl: dict = {}
    for wl, rec in rows:
        secs = rec[1]
        if not secs or (only and wl not in index):
            continue
        mean = sum(secs) / len(secs)
        by_wl.setdefault((wl, json.dumps(rec[2], sort_keys=True)), []).append((mean, [wl, rec]))
    kept = []
    for lst in by_wl.values():
        good = (r for _, r in sorted(lst, key=lambda x: x[0]) if verify(*r))
        best = [r for _, r in zip(range(max(keep, retime)), good)]
        if retime and best and not info.is_remote:
            before = best[0][1][1]
            best = _retimed(info, wl_lines, best)
            progress(f"  workload {best[0][0]}: re-timed its {len(best)} best records here: kept one at "
                     f"{best[0][1][1][0] * 1e3:.3f} ms (the search's best read {sum(before) / len(before) * 1e3:.3f} ms)")
        kept += best[:keep]
    out.mkdir(parents=True, exist_ok=True)
    for name in (DB_FILES[0], "target.json"):
        if out != log:
            shutil.copyfile(log / name, out / name)
    write_rows(out, kept)
    compact_workloads(out)
    return len(kept)
