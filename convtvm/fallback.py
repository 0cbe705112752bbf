"""Untuned schedules: never a naive loop nest.

CPU (x86, arm): every reduction (convolution, pooling) gets a register-tiled accumulator
(cache_write to "local"), elementwise epilogues fused into its write-back, padding inlined,
a parallel outer loop, a vectorised inner loop and unrolled register tiles (``cpu``). The knobs
(vector lanes, register tile, unroll) come from schedules/<target>.json "fallback".

CUDA (``gpu``): the rules schedules/cuda.json "fallback.rules" lists, first match wins: "convtvm.Direct"
(below: convolution and pooling reductions as one thread per register tile of outputs, accumulator
in registers, padding inlined into the loads, epilogue fused into the write-back) and TVM's dlight
GPU rules by name (global pooling: dl.gpu.Reduction; pure data movement: dl.gpu.Fallback).
"""

from __future__ import annotations

import tvm
from tvm.s_tir import Schedule, ScheduleError

REDUCE = 2  # IterVar.CommReduce: the iter_type of a reduction axis


def gpu(func, cfg: dict, target) -> tvm.IRModule:
    """The CUDA fallback of a PrimFunc: the first of ``cfg["rules"]`` that binds every block to
    threads, as an IRModule with a scheduled ``main``. ``target``: the CUDA target. Raises ValueError
    naming what each rule did when none applies."""
    tried = []
    with target:
        for name in cfg["rules"]:
            rule = _gpu_rule(name, cfg)
            try:
                sch = rule.apply(func, target, False)
            except Exception as e:  # noqa: BLE001 - a rule that cannot handle this structure: the next one
                tried.append(f"{name}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__}")
                continue
            if sch is None:
                tried.append(f"{name}: does not apply")
                continue
            sch = sch[0] if isinstance(sch, (list, tuple)) else sch
            unbound = _gpu_unbound_blocks(sch)
            if unbound:
                tried.append(f"{name}: left {', '.join(unbound)} without a thread binding")
                continue
            return tvm.IRModule({"main": sch.mod["main"].with_attr("tirx.is_scheduled", True)})
    raise ValueError("no CUDA fallback rule schedules this function (an unscheduled kernel would not compile): "
                     + "; ".join(tried))


def _gpu_unbound_blocks(sch) -> list[str]:
    """Blocks not under a blockIdx/threadIdx loop: they would not compile for a GPU."""
    out = []
    for block in sch.get_child_blocks(sch.get_sblock("root", func_name="main")):
        if not any(sch.get(lp).thread_binding is not None for lp in sch.get_loops(block)):
            out.append(sch.get(block).name_hint)
    return out


def _gpu_rule(name: str, cfg):
    if name == "convtvm.Direct":
        return _direct_rule(cfg["direct"])
    from tvm.s_tir import dlight as dl
    if not hasattr(dl.gpu, name):
        raise ValueError(f"schedules/cuda.json: unknown GPU rule {name!r} (convtvm.Direct or a tvm dlight.gpu rule)")
    return getattr(dl.gpu, name)()


def _direct_rule(knobs):
    class _Direct:
        def apply(self, func, target, _tunable):
            return _gpu_direct(func, knobs, target)
    return _Direct()


def _gpu_direct(func, knobs, target):
    """Conv / pooling reductions, one thread per output register tile.

    Every reduction gets a "local" accumulator (registers) whose write-back carries the fused
    elementwise epilogue (bias, batch-norm + SiLU, average divisor); padding / dilation producers are
    inlined into the loads. The spatial loops are fused (innermost output axis fastest, so a warp reads
    and writes consecutive addresses) and split over blockIdx.x / threadIdx.x; each thread runs the
    reduction serially over a register tile of ``channel_tile`` outputs along the axis the largest input
    does not depend on (the output channel of a convolution: one input load feeds every tile FMA).
    Returns None (the next rule decides) for functions without a reduction, or with a reduction that
    has fewer than ``min_outputs`` outputs, each longer than ``max_serial_reduction`` (global pooling:
    dlight's cross-thread Reduction rule fits those better)."""
    sch = Schedule(tvm.IRModule({"main": func}))
    root = sch.get_sblock("root")
    reductions = [b for b in sch.get_child_blocks(root) if is_reduction(sch, b)]
    if not reductions:
        return None
    for red in reductions:
        outputs, reduced = 1, 1
        for iv in sch.get(red).iter_vars:
            if iv.iter_type == REDUCE:
                reduced *= int(iv.dom.extent)
            else:
                outputs *= int(iv.dom.extent)
        if outputs < knobs["min_outputs"] and reduced > knobs["max_serial_reduction"]:
            return None  # few outputs, long reductions (global pooling): a cross-thread reduction rule
    writebacks, tiled = _accumulate_locally(sch, reductions, keep=())  # padding, dilation: into the loads
    threads = int(knobs["threads_per_block"])
    rest = [b for b in sch.get_child_blocks(root)  # what is left (e.g. a channel shuffle): one thread each
            if sch.get(b).name_hint not in tiled and sch.get_loops(b)]
    for red, wb in zip(reductions, writebacks):
        _gpu_tile_reduction(sch, red, wb, knobs, threads)
    for block in rest:
        loops = sch.get_loops(block)
        _gpu_bind(sch, sch.fuse(*loops) if len(loops) > 1 else loops[0], threads)
    return sch


def _gpu_bind(sch, fused, threads: int):
    extent = int(sch.get(fused).extent)
    threads = min(threads, max(32, 1 << (extent - 1).bit_length()))
    bx, tx = sch.split(fused, [None, threads])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    return bx, tx


def _gpu_tile_reduction(sch, red, wb, knobs, threads: int) -> None:
    loops = sch.get_loops(red)
    ivs = list(sch.get(red).iter_vars)
    kinds = [iv.iter_type for iv in ivs]
    spatial = [lp for lp, k in zip(loops, kinds) if k != REDUCE]
    reduce = [lp for lp, k in zip(loops, kinds) if k == REDUCE]
    inner = []
    axis, tile = _gpu_reuse_axis(sch, red, ivs, knobs["channel_tile"]) if len(loops) == len(ivs) else (None, 1)
    if tile > 1:
        pos = [i for i, k in enumerate(kinds) if k != REDUCE].index(axis)
        outer, tile_loop = sch.split(spatial[pos], [None, tile])
        spatial[pos] = outer
        inner.append(tile_loop)
    sch.reorder(*spatial, *reduce, *inner)
    bx, tx = _gpu_bind(sch, sch.fuse(*spatial) if len(spatial) > 1 else spatial[0], threads)
    sch.annotate(bx, "pragma_auto_unroll_max_step", int(knobs["unroll_max_step"]))
    sch.annotate(bx, "pragma_unroll_explicit", 1)
    sch.reverse_compute_at(wb, tx)
    if reduce:
        sch.decompose_reduction(red, reduce[0])
    for block in (red, wb):
        block_loops = sch.get_loops(block)
        if inner and int(sch.get(block_loops[-1]).extent) == tile:
            sch.unroll(block_loops[-1])


def _buffer_of(region):
    return getattr(region, "buffer", None) or region.source  # BufferRegion / TensorRegion (0.27)


def _gpu_reuse_axis(sch, red, ivs, tiles):
    """(index among the spatial iter vars, tile) of the axis to tile in registers: not the innermost
    (it is the thread axis), and one the block's largest input does not depend on within a tile, so
    one load serves the whole tile. (None, 1) when there is none."""
    from tvm import tirx
    from tvm.sym import Analyzer
    block = sch.get(red)
    reads = [r for r in block.reads if _buffer_of(r).scope() != "local"]
    if not reads:
        return None, 1

    def size(region):
        n = 1
        for s in _buffer_of(region).shape:
            n *= int(s)
        return n

    largest = max(reads, key=size)
    spatial = [iv for iv in ivs if iv.iter_type != REDUCE]
    for i, iv in enumerate(spatial[:-1]):
        extent = int(iv.dom.extent)
        for tile in tiles:
            if extent % tile or extent < tile:
                continue
            ana = Analyzer()
            for other in ivs:
                if not other.var.same_as(iv.var):
                    ana.bind(other.var, other.dom)
            vo, vi = tirx.Var("vo", iv.var.ty), tirx.Var("vi", iv.var.ty)
            ana.bind(vo, tvm.ir.Range(0, extent // tile))
            ana.bind(vi, tvm.ir.Range(0, tile))
            ana.bind(iv.var, vo * tile + vi)
            uses = [v for r in largest.region for v in tirx.analysis.undefined_vars(ana.simplify(r.min))]
            if not any(v.same_as(vi) for v in uses):
                return i, tile
    return None, 1


def is_reduction(sch: Schedule, block) -> bool:
    """Whether ``block`` reduces over an axis (a convolution's or pool's accumulation)."""
    return any(iv.iter_type == REDUCE for iv in sch.get(block).iter_vars)


def _pick(extent: int, choices) -> int:
    return next((c for c in choices if extent % c == 0 and extent >= c), 1)


def _accumulate_locally(sch: Schedule, reductions, keep) -> tuple[list, set]:
    """Give every reduction a local accumulator (cache_write) with its elementwise consumers (bias,
    batch-norm + SiLU, average divisor) fused into the write-back, then inline the injective
    producers whose names do not start with ``keep``. Returns (write-backs, names of the blocks done)."""
    _inline_producers(sch, set(), keep)  # e.g. a sigmoid's stages into the SiLU epilogue: one epilogue left
    writebacks = []
    for red in reductions:
        wb = sch.cache_write(red, 0, "local")
        # only same-shape (elementwise) epilogues: one that re-indexes (a transposed convolution's
        # phase pick) stays a pass of its own
        while len(consumers := sch.get_consumers(wb)) == 1 and _same_shape(sch, wb, consumers[0]):
            try:
                sch.reverse_compute_inline(consumers[0])
            except (ScheduleError, tvm.error.InternalError):
                break
        writebacks.append(wb)
    tiled = {sch.get(b).name_hint for b in reductions + writebacks}
    _inline_producers(sch, tiled, keep)
    return writebacks, tiled


def _inline_producers(sch: Schedule, skip: set, keep) -> None:
    """Inline every injective block that feeds another (not the reductions, not names in ``skip``
    or starting with ``keep``)."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        name = sch.get(block).name_hint
        if name in skip or (keep and name.startswith(keep)) or not sch.get_consumers(block) \
                or is_reduction(sch, block):
            continue
        try:
            sch.compute_inline(block)
        except (ScheduleError, tvm.error.InternalError):
            pass


def _same_shape(sch: Schedule, producer, consumer) -> bool:
    def shape(block):
        return [int(d) for d in _buffer_of(sch.get(block).writes[0]).shape]
    return shape(producer) == shape(consumer)


def cpu(func, cfg: dict) -> tvm.IRModule:
    """The CPU fallback of a PrimFunc as an IRModule with a scheduled ``main``; ``cfg``: the knobs
    (schedules/<target>.json "fallback"). Raises TVM's ScheduleError for a structure it cannot
    schedule (e.g. a broadcasting epilogue it cannot inline)."""
    return cpu_schedule(func, cfg).mod


def cpu_schedule(func, cfg: dict) -> Schedule:
    """``cpu``'s schedule itself: its ``trace`` replays the fallback on the same PrimFunc, as a tuning
    record's does."""
    sch = Schedule(tvm.IRModule({"main": func}))
    reductions = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if is_reduction(sch, b)]
    # padding stays a cheap separate pass so that the reductions read without bounds checks
    writebacks, tiled = _accumulate_locally(sch, reductions, keep=("pad", "dilate_pad"))
    elementwise = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
                   if sch.get(b).name_hint not in tiled and sch.get_loops(b)]
    for red, wb in zip(reductions, writebacks):
        _tile_reduction(sch, red, wb, cfg)
    for block in elementwise:
        _elementwise(sch, block, cfg)
    return sch


def _work(sch: Schedule, block) -> int:
    """Iterations of a block's loop nest (multiply-adds for a convolution)."""
    work = 1
    for lp in sch.get_loops(block):
        work *= int(sch.get(lp).extent)
    return work


def _parallel(sch: Schedule, loop, work: int, cfg) -> None:
    """Parallelise ``loop`` only where the block is worth the threads' fork and join: at least
    ``parallel_min_work`` iterations (schedules/<target>.json; measured, see docs/design.md). A smaller
    op runs on one thread: on two cores the fork-join costs more than it gains, and waits a scheduler
    tick whenever another process holds a core."""
    if work >= cfg.get("parallel_min_work", 0):
        sch.parallel(loop)


def _tile_reduction(sch: Schedule, red, wb, cfg) -> None:
    work = _work(sch, red)
    loops = sch.get_loops(red)
    kinds = [iv.iter_type for iv in sch.get(red).iter_vars]
    spatial = [lp for lp, k in zip(loops, kinds) if k != REDUCE]
    reduce = [lp for lp, k in zip(loops, kinds) if k == REDUCE]
    extents = [int(sch.get(lp).extent) for lp in spatial]
    lanes = _pick(extents[-1], cfg["vector_lanes"])
    inner = []
    if lanes == 1 and len(spatial) >= 3 and extents[-1] * extents[-2] <= cfg["small_tile"]:
        # no lane count divides the last axis (a transposed conv's odd (u, r) phase grid): the last two
        # axes whole are the tile, so each weight load serves a row of outputs, not one
        inner, spatial = spatial[-2:], spatial[:-2]
    elif len(spatial) >= 2:
        tile = _pick(extents[-2], cfg["register_tile"])
        outer2, in2 = sch.split(spatial[-2], [None, tile])
        spatial[-2] = outer2
        inner.append(in2)
    outer1, in1 = sch.split(spatial[-1], [None, lanes])
    spatial[-1] = outer1
    inner.append(in1)
    sch.reorder(*spatial, *reduce, *inner)
    fused = sch.fuse(*spatial)
    _parallel(sch, fused, work, cfg)
    sch.annotate(fused, "pragma_auto_unroll_max_step", cfg["unroll_max_step"])
    sch.annotate(fused, "pragma_unroll_explicit", 1)
    sch.reverse_compute_at(wb, fused)
    _vectorize_last(sch, red, lanes)
    _vectorize_last(sch, wb, lanes)
    if reduce:
        sch.decompose_reduction(red, reduce[0])


def _vectorize_last(sch, block, lanes) -> None:
    loops = sch.get_loops(block)
    if lanes > 1 and len(loops) > 1 and int(sch.get(loops[-1]).extent) == lanes:
        try:
            sch.vectorize(loops[-1])
        except ScheduleError:  # e.g. a max-reduction TVM cannot prove compact: LLVM vectorises it
            pass


def _elementwise(sch: Schedule, block, cfg) -> None:
    work = _work(sch, block)
    loops = sch.get_loops(block)
    extent = int(sch.get(loops[-1]).extent)
    lanes = _pick(extent, cfg["vector_lanes"])
    if lanes > 1:
        outer, inner = sch.split(loops[-1], [None, lanes])
        sch.vectorize(inner)
        loops = [*loops[:-1], outer]
    _parallel(sch, sch.fuse(*loops) if len(loops) > 1 else loops[0], work, cfg)
