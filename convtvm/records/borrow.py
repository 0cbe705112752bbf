"""Records for a shape that no log holds, borrowed from the nearest tuned shapes.

MetaSchedule applies a record only to the workload it was tuned on (structural equality). A record's
trace, though, names blocks and loops, not extents: it replays on any workload of the same
computation. Before a build falls back to the untuned schedule, ``borrow``:

1. finds the *neighbours* of the workload in the logs it is given: the logged workloads with the
   same ``signature`` (the same blocks, loop kinds, buffers, dtypes and buffer-access pattern, so the
   same variant family, layout and dtype, whatever their extents, strides or dilations), nearest
   first by ``distance`` (the log-ratio of their loop extents), at most ``MAX_CANDIDATES`` of them;
   only searched records lend (a record borrowed itself does not, so what a build borrows does not
   depend on what earlier builds borrowed);
2. replays each neighbour's fastest record on the workload with every ``SamplePerfectTile`` decision
   refitted to the new loop extents (``refit_tile``; other sampled decisions are kept) and runs the
   target's postprocessors again (``space.replay``); a candidate whose trace does not apply or that a
   postprocessor rejects is dropped;
3. compiles and times the candidates here (``timing.time_interleaved``; weights prepacked, as the
   module runs them), and applies the fastest that reproduces PyTorch's result
   (``verify.reproduces_torch``); a candidate that does not is dropped.

The chosen record can be kept in the user's log (``TuningLog.default``) with its measured time, and
its source noted in ``borrowed.json``, so a later build applies it directly (``defaults``).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import dataclass

from ..targets import TargetInfo
from ..variants import Workload
from . import space, verify
from .log import TuningLog, target_key

MAX_CANDIDATES = 8  # neighbours whose records are replayed, compiled and timed per borrow
ROUNDS = 3  # interleaved timing rounds per candidate

_signatures: dict = {}  # (log path, workload file mtime, size) -> [(line, signature, extents, wl json)]


@dataclass(frozen=True)
class Borrowed:
    """A borrowed schedule of ``workload``: ``trace`` (postprocessing included), ``mod`` (the scheduled
    IRModule), ``source`` (``"<log>: <workload>"``, the tuned workload it came from), ``ms`` (its
    kernel's milliseconds here, weights prepacked) and ``tried`` (candidates timed)."""

    workload: Workload
    trace: object
    mod: object
    source: str
    ms: float
    tried: int


def signature(mod) -> tuple[tuple, tuple]:
    """(signature, extents) of an IRModule's ``main``: the signature holds, per block, its name, its
    loops' kinds and, per buffer it reads or writes, the buffer's name, dtype and which of the block's
    loops index each dimension; ``extents`` the block loops' extents, in the same order. Two workloads
    with the same signature differ only in extents and index constants (stride, dilation, padding
    amount, groups), so one's trace replays on the other."""
    from tvm.s_tir import Schedule
    from tvm.tirx.analysis import undefined_vars
    sch = Schedule(mod)
    sig, extents = [], []
    for rv in sch.get_child_blocks(sch.get_sblock("root")):
        block = sch.get(rv)
        names = [iv.var.name for iv in block.iter_vars]

        def accesses(regions):
            return tuple((r.source.name, str(r.source.dtype),
                          tuple(tuple(sorted(names.index(v.name) for v in undefined_vars(rng.min) if v.name in names))
                                for rng in r.region)) for r in regions)
        sig.append((block.name_hint, tuple(int(iv.iter_type) for iv in block.iter_vars),
                    accesses(block.reads), accesses(block.writes)))
        extents += [int(iv.dom.extent) for iv in block.iter_vars]
    params = tuple((str(b.dtype), len(b.shape)) for b in mod["main"].params)
    return (params, tuple(sig)), tuple(extents)


def distance(a: tuple, b: tuple) -> float:
    """How far two workloads of one signature are apart: the sum of |log2| of their loop extents' ratios."""
    return sum(abs(math.log2(x / y)) for x, y in zip(a, b))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def refit_tile(old: list[int], extent: int, max_innermost: int = -1) -> list[int]:
    """A perfect tiling of ``extent`` (factors whose product is ``extent``) near the tiling ``old`` of
    another extent: innermost first, each level takes the divisor of what is left nearest ``old``'s
    factor (log scale), a divisor that divides or is a multiple of it preferred (it keeps the vector
    width and unroll it was tuned for); the outermost level takes the rest. The innermost factor stays
    at most ``max_innermost`` (when positive)."""
    new, rest = [1] * len(old), extent
    for i in range(len(old) - 1, 0, -1):
        cap = max_innermost if i == len(old) - 1 and max_innermost > 0 else rest
        o = max(int(old[i]), 1)

        def score(d):
            return abs(math.log2(d / o)) + (0 if o % d == 0 or d % o == 0 else 1)
        new[i] = min((d for d in _divisors(rest) if d <= cap), key=lambda d: (score(d), -d))
        rest //= new[i]
    new[0] = rest
    return new


def _refit(sch):
    """A decision provider for ``space.replay`` that refits each SamplePerfectTile to its loop in ``sch``."""
    def provider(inst, inputs, attrs, decision):
        if inst.kind.name != "SamplePerfectTile" or decision is None:
            return decision
        extent = int(sch.get(inputs[0]).extent)
        old = [int(v) for v in decision]
        return old if math.prod(old) == extent else refit_tile(old, extent, int(attrs[1]))
    return provider


def _logged(log: TuningLog) -> list:
    """[(workload line, signature, extents, workload json)] of a log's workloads (cached per file)."""
    from tvm.s_tir import meta_schedule as ms
    f = log.workload_file
    try:
        stat = f.stat()
    except OSError:
        return []
    key = (str(f), stat.st_mtime_ns, stat.st_size)
    if key not in _signatures:
        rows = []
        for line, wl in enumerate(log.workloads()):
            try:
                sig, ext = signature(ms.database.Workload.from_json(wl).mod)
            except Exception:  # noqa: BLE001 - a workload that is no single-op TIR: never a neighbour
                continue
            rows.append((line, sig, ext, wl))
        _signatures[key] = rows
    return _signatures[key]


def neighbours(mod, logs: list, exclude=()) -> list:
    """[(distance, log, workload line, workload json)] of the logged workloads with ``mod``'s signature,
    nearest first (a workload in several logs: its first log's), ``mod`` itself and the workloads whose
    structural hash is in ``exclude`` left out."""
    import tvm_ffi
    sig, ext = signature(mod)
    own = str(tvm_ffi.structural_hash(mod))
    found, seen = [], {str(h) for h in exclude}
    for rank, log in enumerate(logs):
        for line, s, e, wl in _logged(TuningLog(log)):
            if s != sig or str(wl[0]) in seen or str(wl[0]) == own:
                continue
            seen.add(str(wl[0]))
            found.append((distance(ext, e), rank, TuningLog(log), line, wl))
    return [(d, log, line, wl) for d, _, log, line, wl in sorted(found, key=lambda t: t[:2])]


def _best_record(log: TuningLog, line: int, wl):
    """The fastest measured record of workload ``line`` in ``log`` for the log's own target, rebuilt
    on its workload (a TuningRecord), or None."""
    from tvm.s_tir import meta_schedule as ms
    try:
        key = target_key(json.loads(log.target().target_json))
        rows = [r for r in log.records() if r.workload == line and r.run_secs and target_key(r.target) == key]
        if not rows:
            return None
        best = min(rows, key=lambda r: r.mean_secs)
        return ms.database.TuningRecord.from_json(best.body, ms.database.Workload.from_json(wl))
    except Exception:  # noqa: BLE001 - an unreadable record: not a candidate
        return None


def describe(wl) -> str:
    """A logged workload (its JSON line) as its buffers' shapes (``shapes``)."""
    from tvm.s_tir import meta_schedule as ms
    return shapes(ms.database.Workload.from_json(wl).mod)


def shapes(mod) -> str:
    """An IRModule's ``main`` as its buffers' shapes: ``data[1,56,56,64] weight[3,3,64,64] -> conv[1,56,56,64]``."""
    func = mod["main"]
    bufs = [f"{b.name}[{','.join(str(int(d)) for d in b.shape)}]" for b in func.params]
    return " ".join(bufs[:-1]) + " -> " + bufs[-1]


def timer(info: TargetInfo, scheduled_mod):
    """A contender (``timing``) for the scheduled kernel with prepacked weights, on random inputs."""
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from ..timing import kernel_contender
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(scheduled_mod)
    with info.target:
        lib = tvm.compile(mod, target=info.target)
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.uniform(-1, 1, [int(d) for d in a.shape]).astype(str(a.dtype)))
            for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"])]
    return kernel_contender(getattr(lib, "mod", lib), "main", args, tvm.cpu())


def _borrowed_hashes(info: TargetInfo, logs: list) -> set:
    """Structural hashes of the workloads whose records in ``logs`` were themselves borrowed: only
    searched records lend, so a borrow does not depend on what was borrowed before it."""
    import tvm_ffi

    from ..variants import from_json
    out = set()
    for log in logs:
        for key in TuningLog(log).borrowed():
            try:
                out.add(str(tvm_ffi.structural_hash(verify.tuned_ir_module(from_json(json.loads(key)), info))))
            except Exception:  # noqa: BLE001 - a key this version cannot read: nothing to leave out
                continue
    return out


def candidates(w: Workload, info: TargetInfo, logs: list, limit: int | None = None) -> list:
    """[(source, schedule)] for ``w`` from the ``limit`` (default ``MAX_CANDIDATES``) nearest neighbours
    in ``logs`` (records borrowed themselves left out) that have a
    record whose refitted trace replays on ``w`` and passes the postprocessors (steps 1-2 of the
    module doc), nearest first."""
    limit = MAX_CANDIDATES if limit is None else limit
    mod = verify.tuned_ir_module(w, info)
    out, posts = [], None
    for _, log, line, wl in neighbours(mod, logs, _borrowed_hashes(info, logs)):
        if len(out) >= limit:
            break
        record = _best_record(log, line, wl)
        if record is None:
            continue
        posts = posts if posts is not None else space.postprocs(mod, info)
        try:
            sch = space.replay(mod, record.trace, {}, posts, provider=_refit)
        except Exception:  # noqa: BLE001 - a trace that does not apply to w: not a candidate
            continue
        if sch is not None:
            out.append((f"{log}: {describe(wl)}", sch))
    return out


def borrow(w: Workload, info: TargetInfo, logs: list, *, keep: bool = True, limit: int | None = None,
           check=None) -> Borrowed | None:
    """The fastest of ``w``'s borrowed candidates from ``logs`` (see the module doc) that reproduces
    PyTorch here, or None when no candidate does (no neighbour, none replays, none passes). With
    ``keep`` it is kept (``keep_borrowed``: the user's log, borrowed.json, one line on stderr).
    ``check(w, info, mod)`` replaces ``verify.reproduces_torch``."""
    check = check or verify.reproduces_torch
    found = candidates(w, info, logs, limit)
    timers = {}
    for k, (source, sch) in enumerate(found):
        try:
            timers[k] = timer(info, sch.mod)
        except Exception:  # noqa: BLE001 - a candidate that does not build here: dropped
            continue
    if not timers:
        return None
    from ..timing import time_interleaved
    ms_ = time_interleaved(timers, ROUNDS, settle=0.02)
    for k in sorted(ms_, key=ms_.get):
        source, sch = found[k]
        try:
            ok = check(w, info, sch.mod)
        except Exception:  # noqa: BLE001 - does not build: dropped
            ok = False
        if not ok:
            continue
        lent = Borrowed(w, sch.trace, sch.mod, source, ms_[k], len(ms_))
        if keep:
            keep_borrowed(lent, info)
        return lent
    return None


def keep_borrowed(lent: Borrowed, info: TargetInfo) -> None:
    """Add a borrowed record to the user's log (``TuningLog.default``), as one measured on ``info``,
    atomically; note its source in borrowed.json; say so in one line on stderr."""
    from tvm.s_tir import meta_schedule as ms
    w, log = lent.workload, TuningLog.default(info)
    log.path.mkdir(parents=True, exist_ok=True)
    mod = verify.tuned_ir_module(w, info)
    with tempfile.TemporaryDirectory(prefix="convtvm_borrow_") as tmp:
        db, _ = log.open(tmp)
        db.commit_tuning_record(ms.database.TuningRecord(lent.trace, db.commit_workload(mod), [lent.ms / 1e3],
                                                         info.target, ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
        log.sync_from(tmp, info)
    log.record_borrowed(w.key, lent.source)
    print(f"convtvm: no record of {w.variant} {shapes(mod)}; borrowed the one of {lent.source}, refitted "
          f"({lent.tried} candidates timed, {lent.ms:.3f} ms), into {log.path}", file=sys.stderr)
