"""Untuned schedules: never a naive loop nest.

CPU (x86, arm): every reduction (convolution, pooling) gets a register-tiled accumulator
(cache_write to "local"), elementwise epilogues fused into its write-back, padding inlined,
a parallel outer loop, a vectorised inner loop and unrolled register tiles. The knobs (vector
lanes, register tile, unroll) come from schedules/<target>.json "fallback".

CUDA: TVM's dlight GPU rules, in the order schedules/cuda.json lists them.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import Schedule, ScheduleError

_REDUCE = 2  # IterVar.CommReduce


def apply(func, kind: str, cfg: dict, target) -> tvm.IRModule:
    if kind == "cuda":
        return _gpu(func, cfg, target)
    return _cpu(func, cfg)


def _gpu(func, cfg, target) -> tvm.IRModule:
    from tvm.s_tir import dlight as dl
    rules = [getattr(dl.gpu, name)() for name in cfg["dlight_rules"]]
    mod = tvm.IRModule({"main": func})
    with target:
        return dl.ApplyDefaultSchedule(*rules)(mod)


def _is_reduction(sch: Schedule, block) -> bool:
    return any(iv.iter_type == _REDUCE for iv in sch.get(block).iter_vars)


def _pick(extent: int, choices) -> int:
    return next((c for c in choices if extent % c == 0 and extent >= c), 1)


def _cpu(func, cfg) -> tvm.IRModule:
    sch = Schedule(tvm.IRModule({"main": func}))
    reductions = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if _is_reduction(sch, b)]
    writebacks = []
    for red in reductions:
        wb = sch.cache_write(red, 0, "local")
        # fuse the elementwise consumers (bias, batch-norm + SiLU, average divisor) into the write-back
        while True:
            consumers = sch.get_consumers(wb)
            if len(consumers) != 1:
                break
            try:
                sch.reverse_compute_inline(consumers[0])
            except ScheduleError:
                break
        writebacks.append(wb)
    tiled = {sch.get(b).name_hint for b in reductions + writebacks}
    # inline injective producers into their consumers, except padding, which stays a cheap
    # separate pass so that the reductions read without bounds checks
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        name = sch.get(block).name_hint
        if name in tiled or name.startswith(("pad", "dilate_pad")) or not sch.get_consumers(block):
            continue
        try:
            sch.compute_inline(block)
        except ScheduleError:
            pass
    elementwise = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
                   if sch.get(b).name_hint not in tiled and sch.get_loops(b)]
    for red, wb in zip(reductions, writebacks):
        _tile_reduction(sch, red, wb, cfg)
    for block in elementwise:
        _elementwise(sch, block, cfg)
    return sch.mod


def _tile_reduction(sch: Schedule, red, wb, cfg) -> None:
    loops = sch.get_loops(red)
    kinds = [iv.iter_type for iv in sch.get(red).iter_vars]
    spatial = [lp for lp, k in zip(loops, kinds) if k != _REDUCE]
    reduce = [lp for lp, k in zip(loops, kinds) if k == _REDUCE]
    extents = [int(sch.get(lp).extent) for lp in spatial]
    lanes = _pick(extents[-1], cfg["vector_lanes"])
    inner = []
    if len(spatial) >= 2:
        tile = _pick(extents[-2], cfg["register_tile"])
        outer2, in2 = sch.split(spatial[-2], [None, tile])
        spatial[-2] = outer2
        inner.append(in2)
    outer1, in1 = sch.split(spatial[-1], [None, lanes])
    spatial[-1] = outer1
    inner.append(in1)
    sch.reorder(*spatial, *reduce, *inner)
    fused = sch.fuse(*spatial)
    sch.parallel(fused)
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
    loops = sch.get_loops(block)
    extent = int(sch.get(loops[-1]).extent)
    lanes = _pick(extent, cfg["vector_lanes"])
    if lanes > 1:
        outer, inner = sch.split(loops[-1], [None, lanes])
        sch.vectorize(inner)
        loops = [*loops[:-1], outer]
    sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
