"""The tuning engine: MetaSchedule's evolutionary search and XGBoost cost model over one task or
many, shared by a gradient task scheduler (``EagerGradient``).

Tuning runs on a private copy of the log (``TuningLog.open``); after every measured batch the copy is
written back (``TuningLog.sync_from``, atomic), so Ctrl-C or a crash never leaves a half-written log.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..records.log import TuningLog
from ..records.verify import scheduled, tuned_ir_module
from ..targets import TargetInfo, resolve
from ..variants import Workload
from .measure import (_ARTIFACTS, ALREADY_MEASURED, MEASURED, STATS, kernel_key, make_builder_runner, make_context,
                      skip_tensor_intrinsics)
from .progress import ProgressLine

@dataclass
class TaskProgress:
    """One task's progress in a tuning run: trials measured, best mean seconds, and the curve
    [(trial, best seconds so far), ...]."""

    name: str
    flops: int
    trials: int = 0
    best_s: float = float("inf")
    curve: list = None

    @property
    def best_gflops(self) -> float:
        return self.flops / self.best_s / 1e9 if self.best_s < float("inf") else 0.0


def tune(workloads, target="x86", trials: int = 64, log=None, *, weights=None, names=None, **kwargs) -> dict:
    """Tune one workload or many (the task scheduler shares ``trials`` among them).

    Records go to ``log`` (default: the user's log, ``TuningLog.default``, seeded from the shipped one); a
    second run continues from them. ``kwargs`` go to ``tune_modules`` (``progress``: a callable given
    each message; a batch's is a ``progress.ProgressLine``). Returns {"log", "trials", "seconds",
    "tasks": [TaskProgress...]}.
    """
    ws = [workloads] if isinstance(workloads, Workload) else list(workloads)
    if not ws:
        raise ValueError("nothing to tune: no workloads given")
    info = resolve(target)
    names = names or [str(w) for w in ws]
    tasks = [(n, tuned_ir_module(w, info), w.flops) for n, w in zip(names, ws)]
    return tune_modules(tasks, info, trials, log, weights=weights, curve_keys=[w.key for w in ws], **kwargs)


def tune_modules(tasks, info: TargetInfo, trials: int, log=None, *, weights=None, trials_per_iter: int = 32,
                 isolated: bool = False, seed: int | None = None, progress=print,
                 exit_on_sigint: bool = False, curve_keys=None, cost_model=None) -> dict:
    """The tuning engine: ``tasks`` are (name, IRModule, flops) triples.

    Each task's tuning curve goes to the log's curves.json under its ``curve_keys`` entry (default: its
    name) after every batch: the best time at trial 0 (what the log held), at each new best and at the
    end of the run, with the seconds since tuning began (``TuningLog.curves``; a resumed run continues
    the trial and seconds counts). ``cost_model``: MetaSchedule's cost model to search with (default: a
    fresh XGBoost model; ``warm.pretrained_cost_model`` gives one trained on other logs' records).

    Ctrl-C: the log is written atomically after every batch, so an interrupt never loses a committed
    record. With ``exit_on_sigint`` (the CLI), the first Ctrl-C finishes the current batch, writes
    it and exits with status 130; a second one stops at once."""
    from tvm.s_tir import meta_schedule as ms

    if int(trials) < 1:
        raise ValueError(f"trials={trials} must be positive")
    log = TuningLog(log or TuningLog.default(info).path).check(info, must_exist=False)
    rows = [TaskProgress(name, flops, curve=[]) for name, _, flops in tasks]
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="convtvm_tune_") as tmp:
        work = Path(tmp)
        database, _ = log.seed(info).open(work)  # a line it cannot read is skipped, not written back
        builder, runner = make_builder_runner(info, isolated)
        interrupted: list = []
        curves = Curves(log, log.seed(info).curves(), curve_keys or [_task_key(name, mod) for name, mod, _ in tasks],
                        _logged_best_ms(database, tasks), start)

        def after_batch():
            log.sync_from(work, info)
            exiting = bool(interrupted and exit_on_sigint)
            curves.write(rows, end=exiting)
            if exiting:  # a safe point: every measured record is in the log
                progress(f"interrupted: the log {log} holds every measured batch")
                shutil.rmtree(tmp, ignore_errors=True)
                os._exit(130)

        in_process = not isolated and info.backend.tunes_in_process
        if in_process:
            MEASURED.clear()
            MEASURED.update(_measured_hashes(database, tasks))
        callbacks = [_add_new_to_database(database, tasks, info.target) if in_process
                     else ms.measure_callback.AddToDatabase(),
                     ms.measure_callback.UpdateCostModel(),
                     _progress_callback(rows, start, progress, after_batch, int(trials))]
        if not in_process:
            callbacks.insert(1, ms.measure_callback.RemoveBuildArtifact())
        with skip_tensor_intrinsics(info):
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
                          cost_model=cost_model if cost_model is not None else ms.cost_model.XGBModel(
                              num_tuning_cores=os.cpu_count()),
                          measure_callbacks=callbacks,
                          task_scheduler=EagerGradient(seed, _logged_best_ms(database, tasks)))
        except Exception:
            if interrupted:  # Ctrl-C inside a MetaSchedule callback surfaces as an FFI error
                raise KeyboardInterrupt from None
            raise
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, previous)
            log.sync_from(work, info)
            curves.write(rows, end=True)
            _ARTIFACTS.clear()
    done = sum(t.trials for t in rows)
    secs = time.time() - start
    progress(f"done: {done} trials in {secs:.0f} s ({60 * done / max(secs, 1e-9):.1f} trials/min; "
             f"compile {STATS['build_s']:.0f} s, measure {STATS['run_s']:.0f} s, search and cost model the rest); "
             f"log {log}")
    return {"log": str(log), "trials": done, "seconds": secs, "tasks": rows}


def _task_key(name: str, mod) -> str:
    """A curve key for a task known by its name alone (a network's): the name and the structural hash
    of its IRModule, since the same name recurs across models and input sizes."""
    import tvm_ffi
    return f"{name} {tvm_ffi.structural_hash(mod) & (2 ** 64 - 1):016x}"


class Curves:
    """The tuning curves of one run's tasks, written to ``log`` under ``keys`` and continued from
    ``old`` (the curves of the log the run starts from): trial and seconds offsets from the last
    points of these tasks' curves, and a trial-0 point from ``logged_ms`` (each task's best logged
    time before the run, or None) for a curve that does not exist yet."""

    def __init__(self, log: TuningLog, old: dict, keys: list, logged_ms: list, start: float):
        self.log, self.keys, self.start = log, keys, start
        self.points = [list(old.get(k) or ([[0, _sig(ms), 0.0]] if ms is not None else [])) for k, ms in
                       zip(keys, logged_ms)]
        self.trials0 = [int(p[-1][0]) if p else 0 for p in self.points]
        self.seconds0 = max((p[-1][2] for p in self.points if p and len(p[-1]) > 2), default=0.0)

    def write(self, rows: list, end: bool = False) -> None:
        """Add each task's new bests (``rows``: TaskProgress) and, with ``end``, its last trial; write
        the curves of the tasks that have points."""
        seconds = round(self.seconds0 + time.time() - self.start, 1)
        changed = {}
        for key, row, pts, t0 in zip(self.keys, rows, self.points, self.trials0):
            if not row.trials or row.best_s == float("inf"):
                continue
            ms, trial = _sig(row.best_s * 1e3), t0 + row.trials
            if not pts or ms < pts[-1][1]:
                pts.append([trial, ms, seconds])
            elif end and trial > pts[-1][0]:
                pts.append([trial, pts[-1][1], seconds])
            else:
                continue
            changed[key] = pts
        if changed:
            self.log.update_curves(changed)


def _sig(x: float) -> float:
    """``x`` to 6 significant digits (a curve's milliseconds: a 10 us kernel keeps its precision)."""
    return float(f"{x:.6g}")


def EagerGradient(seed: int | None = None, logged_ms=None):  # noqa: N802 - a class factory (live FFI)
    """MetaSchedule's gradient-based task scheduler (Ansor's: the next task is the one whose weighted
    latency is falling fastest), ported, with two changes:

    - every measured batch is joined -- records written, cost model updated, progress shown --
      before the next task is picked (MetaSchedule's own joins nothing until each task has had a
      first batch, so a Ctrl-C before then loses every trial);
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


def _progress_callback(tasks, start, progress, sync, budget: int):
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
            elapsed = time.time() - start
            first = next((s for _, s in t.curve if s < float("inf")), float("inf"))
            progress(ProgressLine(f"  [{elapsed:6.0f}s] {t.name[:60]}: {t.trials} trials, best "
                                  f"{t.best_s * 1e3:.3f} ms = {t.best_gflops:.1f} GFLOP/s  (all tasks: {total} trials)",
                                  done=total, total=budget, elapsed=elapsed, task=t.name[:40], best_s=t.best_s,
                                  first_s=first, gflops=t.best_gflops))

    return _Progress()
