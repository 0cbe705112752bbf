"""Tuning a whole network: its tasks, the tuning of a named model, the in-network choice of records,
and the merge of a model's records into a shipped log.

- ``extract_tasks``: the unique TIR functions of a lowered network, heaviest (calls x FLOPs) first;
- ``model_and_input``: a named model, or a network read from a ``.pt2`` / ``.onnx`` file, and its inputs;
- ``tune_model`` / ``choose_tasks`` / ``tune_tasks``: tune all of a model's tasks or some;
- ``pick_in_network``: keep, per task, the record whose kernel runs fastest in the network;
- ``merge_task_records``: a working log's records of a model's tasks pruned into a shipped log, with
  the trial count recorded beside them (``model_trials_key``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifact import write_json_atomic
from ..network.compile import compile_model
from ..network.importer import import_model, is_model_file, load_model_file
from ..network.legalize import PREFIX
from ..network.runtime import reduction_flops
from ..network.schedule import lower
from ..records.log import TuningLog, target_key
from ..targets import TargetInfo, resolve


DEFAULT_INPUT_SIZE = 224


def model_and_input(name: str, input_size: int | None = None, batch: int = 1, seed: int = 0) -> tuple:
    """(network, its inputs as a list of torch tensors) for ``convtvm ... --model NAME``.

    A model file (``network.importer.is_model_file``: a ``.pt2`` ExportedProgram or an ONNX model) is
    read by ``load_model_file``: its saved example inputs (ONNX: seeded inputs of its graph's shapes)
    define the shapes, so ``input_size`` must be None and ``batch`` 1. A named model is the seeded,
    BN-calibrated model in eval mode with a seeded batch of ``batch`` images of ``input_size`` x
    ``input_size`` (None: 224). Raises ValueError for a name convtvm does not know, an ``input_size``
    or ``batch`` given with a file, and a file it cannot read (FileNotFoundError when missing)."""
    import torch
    from ..models import efficientnet
    if is_model_file(name):
        if input_size is not None or batch != 1:
            raise ValueError(f"--input-size applies to named models; {name}'s saved example inputs define its "
                             f"input shapes")
        return load_model_file(name, seed=seed)
    if name not in efficientnet.V2_CONFIGS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(efficientnet.V2_CONFIGS)}, "
                         f"or a .pt2 (torch.export.save) or .onnx file")
    input_size = DEFAULT_INPUT_SIZE if input_size is None else input_size
    model = efficientnet.seeded_model(name, seed=seed, input_size=input_size)
    x = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed + 1))
    return model, [x]


def describe_inputs(name: str, input_size: int | None, inputs: list, batch: int = 1) -> str:
    """``name`` and its input shapes for a progress line."""
    if is_model_file(name):
        return f"{name} ({', '.join('x'.join(map(str, x.shape)) for x in inputs)})"
    size = DEFAULT_INPUT_SIZE if input_size is None else input_size
    return f"{name} at {size}x{size}, batch {batch}"


@dataclass
class Task:
    """One unique TIR function of a lowered model: what MetaSchedule tunes."""
    name: str
    mod: object  # tvm.IRModule with "main"
    count: int  # calls in the network
    flops: int  # per call

    def __str__(self) -> str:
        return (f"{self.name:58s} x{self.count:<3d} {self.flops / 1e6:9.2f} MFLOP  "
                f"weight {self.count * self.flops / 1e6:10.2f}")


def extract_tasks(mod, info: TargetInfo, convtvm_only: bool = True) -> list[Task]:
    """The unique TIR functions of a ``lower``-ed module (structurally deduplicated, as the tuning
    database identifies them), heaviest first; only convtvm's conv/pool kernels by default. A task's
    FLOPs are its reductions' (``reduction_flops``, as the profile counts them: not the epilogue's
    SiLU polynomial), TVM's estimate for a function without a reduction."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops
    tasks = []
    for t in ms.relax_integration.extract_tasks(mod, info.target, module_equality="structural"):
        if convtvm_only and PREFIX not in t.task_name:
            continue
        m = t.dispatched[0]
        tasks.append(Task(t.task_name, m, int(t.weight), reduction_flops(m["main"]) or int(estimate_tir_flops(m))))
    return sorted(tasks, key=lambda t: -t.count * t.flops)


def tune_model(name: str, input_size: int | None, target_info, trials: int, log=None, *, batch: int = 1,
               progress=print, seed: int | None = None, trials_per_iter: int = 32,
               exit_on_sigint: bool = False, heaviest: int | None = None, untuned: bool = False,
               names: list[str] | None = None) -> dict:
    """Tune the conv/pool kernels of a model (``model_and_input``: a name or a model file; after BN
    folding and fusion) into ``log``: all of them, or those named in ``names``, or the ``heaviest`` N
    (calls x FLOPs), or with ``untuned`` those the log has no record for (e.g. the kernels a new
    fusion made)."""
    info = resolve(target_info)
    model, xs = model_and_input(name, input_size, batch)
    mod = lower(import_model(model, xs), info)
    tasks = extract_tasks(mod, info)
    log = TuningLog(log or TuningLog.default(info)).check(info, must_exist=False).path
    chosen = choose_tasks(tasks, log, heaviest, untuned, names)
    total = sum(t.count * t.flops for t in tasks)
    progress(f"{describe_inputs(name, input_size, xs, batch)}: {len(tasks)} unique conv/pool tasks, "
             f"{total / 1e9:.2f} GFLOP per inference in them; tuning {len(chosen)} (*)")
    for t in tasks:
        progress(f"{'*' if any(t is c for c in chosen) else ' '} {t}  ({100 * t.count * t.flops / max(total, 1):4.1f}%)")
    if not chosen:
        progress(f"every task has a record in {log}: nothing to tune")
        return {}
    return tune_tasks(chosen, info, trials, log, progress=progress, seed=seed, trials_per_iter=trials_per_iter,
                      exit_on_sigint=exit_on_sigint)


def choose_tasks(tasks: list[Task], log, heaviest: int | None = None, untuned: bool = False,
                 names: list[str] | None = None) -> list[Task]:
    """Of ``tasks`` (heaviest first), those named in ``names`` (as ``convtvm tune --model`` lists
    them), then the ``heaviest`` N, and with ``untuned`` only those that ``log`` holds no record for."""
    if heaviest is not None and int(heaviest) < 1:
        raise ValueError(f"--tasks={heaviest} must be positive")
    chosen = list(tasks)
    if names:
        known = {t.name for t in tasks}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"--task {unknown[0]} is not a task of this model; its tasks are: "
                             + ", ".join(sorted(known)))
        chosen = [t for t in chosen if t.name in names]
    chosen = chosen[:heaviest] if heaviest else chosen
    if untuned and TuningLog(log).has_workloads():
        lines = TuningLog(log).workload_lines_of([t.mod for t in chosen])
        with_rows = {r.workload for r in TuningLog(log).records()}
        recorded = {k for line, k in lines.items() if line in with_rows}
        chosen = [t for k, t in enumerate(chosen) if k not in recorded]
    return chosen


def tune_tasks(tasks: list[Task], info: TargetInfo, trials: int, log, *, progress=print, seed=None,
               trials_per_iter: int = 32, exit_on_sigint: bool = False) -> dict:
    """tuning's engine on the model's TIR tasks; the gradient task scheduler weighs each task by
    its call count. The constant weights are layout-free (``lower``): a record may pre-pack them."""
    from ..tuning.engine import tune_modules
    if not tasks:
        raise ValueError("nothing to tune: the model has no convolution or pooling task")
    return tune_modules([(t.name, t.mod, t.flops) for t in tasks], info, trials, log,
                        weights=[float(t.count) for t in tasks], progress=progress, seed=seed,
                        trials_per_iter=trials_per_iter, exit_on_sigint=exit_on_sigint)


def pick_in_network(module, example_inputs, target_info, log, *, candidates: int = 3, rounds: int = 8,
                    incumbent=None, progress=print) -> dict:
    """Choose each task's record by how fast its kernel runs in the network, not alone.

    A kernel alone runs on warm caches; in the network its weights arrive cold and its input from
    another kernel, and the record that was fastest alone is often not the fastest there. For every
    task of the model, the ``candidates`` best records of ``log`` that reproduce the unscheduled TIR
    are taken; as many networks are compiled, each with one of every task's records, the ranks rotated
    over the networks from task to task (``network_rank``); the networks are profiled in ``rounds``
    interleaved rounds (each round starting with the next network); each kernel's times are divided by
    its network's factor (``network_factors``: how fast that copy of the network ran its kernels as a
    whole), and each task keeps the record ``pick_rank`` chooses from its kernel's times a call, with
    its median time as its run time. ``incumbent``, a log (a shipped one, as it was before a merge into
    ``log``), puts each task's record there first, as rank 0, ahead of the ``candidates - 1`` best of
    ``log`` alone: a record chosen in the network earlier then stays unless a new one is clearly faster
    there, instead of dropping out because new records are faster alone. ``log`` is rewritten atomically:
    the model's tasks keep one record each, every other record stays. Run it on a quiet machine.
    Returns task name -> (rank chosen, ms a call by rank). Raises ValueError for a target that does not
    run on this CPU, for ``candidates`` or ``rounds`` below 1, and when ``log`` has no usable record of
    the network's tasks."""
    import statistics

    from ..tuning.maintain import prune
    info = resolve(target_info)
    if not info.backend.runs_in_process():
        raise ValueError(f"pick_in_network profiles on this machine's CPU; target {info.kind} does not run here")
    log = TuningLog(log).check(info, must_exist=True)
    if int(candidates) < 1 or int(rounds) < 1:
        raise ValueError(f"candidates={candidates} and rounds={rounds} must be positive")
    example_inputs = list(example_inputs)
    tasks = extract_tasks(lower(import_model(module, example_inputs), info), info)
    task_of = log.workload_lines_of([t.mod for t in tasks])
    if not task_of:
        raise ValueError(f"{log} has no record for this network's tasks: tune it first")
    rows = log.records()
    others = [r for r in rows if r.workload not in task_of]
    with tempfile.TemporaryDirectory(prefix="convtvm_pick_") as tmp:
        pool = TuningLog(Path(tmp) / "pool")
        shutil.copytree(log.path, pool.path)
        pool.write_records([r for r in rows if r.workload in task_of])
        prune(pool, keep=candidates, progress=progress)  # the verified best of each task
        ranked: dict = {}
        for r in sorted(pool.records(), key=lambda r: r.mean_secs):
            ranked.setdefault(r.workload, []).append(r)
        if incumbent is not None:
            held: dict = {}
            for r in sorted(_rows_of_tasks(Path(incumbent), tasks, task_of)[0], key=lambda r: r.mean_secs):
                held.setdefault(r.workload, r)  # the incumbent's fastest record of each task
            for wl, r in held.items():
                trace = json.dumps(r.trace)
                rest = [x for x in ranked.get(wl, []) if json.dumps(x.trace) != trace]
                ranked[wl] = ([r] + rest)[:candidates]
        if not ranked:
            raise ValueError(f"no record in {log} of this network's tasks reproduces the unscheduled TIR")
        depth = max(len(v) for v in ranked.values())
        order = list(ranked)  # task i's rank-q record runs in network (q - i) % depth: network_rank

        nets = []
        for k in range(depth):
            trial_log = TuningLog(Path(tmp) / f"net{k}")
            shutil.copytree(log.path, trial_log.path)
            trial_log.write_records(others + [ranked[wl][network_rank(k, i, depth, len(ranked[wl]))]
                                       for i, wl in enumerate(order)])
            nets.append(compile_model(module, example_inputs, info, tuning_log=trial_log.path))
            progress(f"compiled network {k} of {depth}")
        xs = [np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x) for x in example_inputs]
        samples = [{} for _ in nets]  # per network: function -> ms a call, one per round
        for r in range(rounds):
            for k in [(r + i) % depth for i in range(depth)]:  # each round starts with the next network
                for row in nets[k].profile(*xs, runs=3):
                    samples[k].setdefault(row["function"], []).append(row["ms"] / max(row["calls"], 1))
            progress(f"  profiled round {r + 1} of {rounds}")
    factor = network_factors(samples)
    progress("each network's kernels against all networks' (median over kernels, taken out of the times "
             "below): " + " ".join(f"{f:.3f}" for f in factor))
    picked, result, same = {}, {}, []
    for i, wl in enumerate(order):
        rs, t = ranked[wl], tasks[task_of[wl]]
        fn = next((f for f in samples[0] if f in (t.name, t.name + "_prepacked")), None)
        if fn is None:  # not called under that name: keep the best alone
            picked[wl] = rs[0]
            continue
        normed = [[ms / factor[k] for ms in samples[k][fn]] for k in range(depth)]  # by network
        times = [normed[(q - i) % depth] for q in range(len(rs))]  # by rank: the network that ran it
        if len(rs) == 1:  # the same kernel in every network: what the networks alone make of it
            same.append(max(abs(_median_ratio(normed[k], normed[0]) - 1) for k in range(depth)))
        k = pick_rank(times)
        per = [statistics.median(ts) for ts in times]
        picked[wl] = rs[k].with_(workload=wl, run_secs=[round(per[k] / 1e3, 9)])
        result[t.name] = (k, per)
        progress(f"  {t.name}: ms a call in the network by rank: {' '.join(f'{p:.3f}' for p in per)} -> rank {k}")
    if same:
        progress(f"after that, the same kernel read up to {100 * max(same):.0f}% apart between networks "
                 f"(median {100 * statistics.median(same):.0f}%, {len(same)} tasks with one record)")
    log.write_records(others + list(picked.values()))
    return result


def network_rank(k: int, i: int, depth: int, records: int) -> int:
    """Which of task i's records network k of ``depth`` runs in ``pick_in_network``: rank (k + i) mod
    depth (its last when it has fewer). The ranks rotate over the networks from task to task, so each
    network holds a mix of ranks: separately compiled copies of the same network run the same kernel
    several percent apart as a whole, and with rank k always in network k that difference would go to
    one rank in every task."""
    return min((k + i) % depth, records - 1)


def network_factors(samples: list, min_ms: float = 0.02) -> list[float]:
    """How much faster or slower each network ran its kernels than all networks together:
    ``samples[k][function]`` are network k's ms a call, one per round. Per kernel of at least
    ``min_ms``, each network's median over its geometric mean over the networks; the median of that
    over the kernels. With the ranks rotated over the networks (``network_rank``), a record's own
    speed evens out in that median and what is left is the network's."""
    import statistics
    medians = [[statistics.median(s[f]) for s in samples] for f in samples[0] if all(f in s for s in samples)]
    medians = [med for med in medians if min(med) >= min_ms]
    if not medians:
        return [1.0] * len(samples)
    ratios = [med / np.exp(np.mean(np.log(med))) for med in np.array(medians)]
    return [float(np.median(r)) for r in np.array(ratios).T]


IN_NETWORK_MIN_GAIN = 0.05  # a record other than the fastest alone must be this much faster in the network
IN_NETWORK_MIN_WINS = 0.75  # ... and faster in this share of the rounds


def _median_ratio(times, base) -> float:
    import statistics
    return statistics.median(a / b for a, b in zip(times, base))


def pick_rank(times: list, min_gain: float = IN_NETWORK_MIN_GAIN, min_wins: float = IN_NETWORK_MIN_WINS) -> int:
    """Which of a task's records to keep, from ``times[k][r]``: its rank-k record's ms a call in the
    network in round r (rank 0: the fastest alone, or the record in use). Rank 0 stays unless another is faster by
    ``min_gain`` in the median of its per-round ratios to rank 0 and faster in ``min_wins`` of the
    rounds; of those, the fastest. Networks compiled apart differ by themselves (the same kernel can read
    tens of percent apart between them), so a smaller difference decides nothing."""
    best, best_ratio = 0, 1.0 - min_gain
    for k in range(1, len(times)):
        ratio = _median_ratio(times[k], times[0])
        wins = sum(a < b for a, b in zip(times[k], times[0])) / len(times[0])
        if ratio < best_ratio and wins >= min_wins:
            best, best_ratio = k, ratio
    return best


def merge_task_records(worklog, into, tasks: list[Task], trials_key: str, *, keep: int = 1, retime: int = 0,
                       progress=print) -> tuple[int, int]:
    """Prune a working log's records of ``tasks`` (a model's) into a shipped log; returns (records
    kept, the trial count now recorded under ``trials_key`` in ``into``). Records of other
    workloads in ``worklog`` (single ops, other models) are left out. The count grows by the
    measured records of ``worklog`` that ``into`` does not already hold and that no earlier merge of
    ``worklog`` into ``into`` counted (``worklog``'s ``counted_trials.json`` names them), so neither
    a working log that began as a copy of the shipped one nor a second merge of the same working log
    counts a trial twice.

    With ``retime`` >= 1, ``into``'s records of the same tasks are timed again beside the working
    log's (``tuning.maintain.prune``'s ``retime``) and replace them: logged times from another day (a machine's
    speed drifts between days) would otherwise rank a slower new record ahead of a faster old one.
    Raises ValueError when ``worklog`` holds no record of ``tasks``."""
    from ..tuning.maintain import merge, prune
    worklog, into = Path(worklog), Path(into)
    work_log, into_log = TuningLog(worklog), TuningLog(into)
    mine = work_log.workload_lines_of([t.mod for t in tasks])
    rows = [r for r in work_log.records() if r.workload in mine]
    if not rows:
        raise ValueError(f"{worklog} has no records of these {len(tasks)} tasks")
    into_exists = into_log.has_records()
    have = set(into_log.record_keys()) if into_exists else set()
    book_file, entry = worklog / "counted_trials.json", f"{trials_key} into {into.resolve()}"
    book = json.loads(book_file.read_text()) if book_file.exists() else {}
    counted = set(book.get(entry, []))
    measured = [(_record_digest(k), k in have) for r, k in zip(rows, work_log.record_keys(rows)) if r.run_secs]
    new = sum(1 for d, held in measured if not held and d not in counted)
    trials = (recorded_trials(into, trials_key) or 0) + new
    with tempfile.TemporaryDirectory(prefix="convtvm_model_") as tmp:
        target = into_log
        if retime and into_exists:  # into's records of these tasks join the working log's, to be re-timed
            target = TuningLog(Path(tmp) / "into")
            shutil.copytree(into, target.path)
            theirs, lines = _rows_of_tasks(target.path, tasks, mine)
            target.write_records([r for r in target.records() if r.workload not in lines])
            rows = work_log.unique(rows + theirs)
        only = TuningLog(Path(tmp) / "model")  # worklog with these tasks' records alone
        shutil.copytree(worklog, only.path)
        only.write_records(rows)
        pruned = Path(tmp) / "pruned"
        kept = prune(only, keep=keep, out=pruned, retime=retime, progress=progress)
        merge(pruned, target, trials={trials_key: trials}, progress=progress)
        if target != into_log:
            into_log.sync_from(target.path, into_log.target())
            into_log.copy_trials_from(target)
    # every measured record is booked, those ``into`` held too: one it drops later is no new trial
    write_json_atomic(book_file, {**book, entry: sorted(counted.union(d for d, _ in measured))})
    progress(f"{trials_key}: {new} new trials, {trials} in all")
    return kept, trials


def _rows_of_tasks(log: Path, tasks: list[Task], worklog_lines: dict) -> tuple[list, set]:
    """``log``'s records of ``tasks`` as rows of a working log whose workload lines are
    ``worklog_lines`` (line -> task index), and the lines of ``log`` they came from (tasks the working
    log does not hold are left out)."""
    line_of_task = {k: line for line, k in worklog_lines.items()}
    theirs = {line: k for line, k in TuningLog(log).workload_lines_of([t.mod for t in tasks]).items()
              if k in line_of_task}
    rows = [r.with_(workload=line_of_task[theirs[r.workload]]) for r in TuningLog(log).records()
            if r.workload in theirs]
    return rows, set(theirs)


def _record_digest(key) -> str:
    """A short fingerprint of a ``tuning.record_keys`` key (a workload hash and a trace)."""
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]


def model_trials_key(name: str, input_size: int | None, batch: int = 1) -> str:
    """The key under which a shipped log's trials.json records how many trials a model's tuning took
    (a model file: by its file name, its shapes being its own)."""
    if is_model_file(name):
        return f"model:{Path(name).name}"
    size = DEFAULT_INPUT_SIZE if input_size is None else input_size
    return f"model:{name}:{size}x{size}:batch{batch}"


def recorded_trials(log, key: str) -> int | None:
    """The trial count a shipped log's trials.json records under ``key`` (a pruned log keeps only
    the best records, so counting them would say how many tasks, not how many trials)."""
    return TuningLog(log).trials().get(key)


def log_trials(tasks: list[Task], info: TargetInfo, log) -> int:
    """Measured records in ``log`` for these tasks."""
    mine = target_key(json.loads(info.target_json))
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        db, _ = TuningLog(log).open(tmp)
        for t in tasks:
            if db.has_workload(t.mod):
                n += sum(1 for r in db.get_top_k(db.commit_workload(t.mod), 1 << 30)
                         if r.run_secs and target_key(r.target.export()) == mine)
    return n
