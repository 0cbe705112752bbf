"""Stages 4-5 of a network's compilation: from the imported module to scheduled TIR.

``lower`` runs the passes (BN fold, the target's activation layout, the input-scale fold), convtvm's
legalizations and fusion (``AnnotateTIROpPattern`` + ``FoldConstant`` + ``FuseOps`` + ``FuseTIR``: the
elementwise epilogues fuse into the convolution kernels). ``schedule`` gives every TIR function the
tuning log's best record when one has it (``MetaScheduleApplyDatabase``), else convtvm's fallback
schedule, else, for a structure the fallback cannot handle, a generic parallel/vectorised loop nest.
"""

from __future__ import annotations

import tempfile
from collections import Counter

from ..fallback import REDUCE, is_reduction
from ..targets import TargetInfo
from .legalize import check_calls, convtvm_legalizations, epilogue_legalizations
from .passes import fold_batchnorm, fold_input_scales


def lower(mod, info: TargetInfo, lowered: Counter | None = None, workloads: list | None = None):
    """BN folding, the target's activation layout, convtvm legalization and fusion: a module of
    unscheduled fused TIR functions, their constant weights marked layout-free (so that a tuned
    schedule may pre-pack them) when the target's search space says so. ``lowered`` (op name -> calls) and
    ``workloads`` receive what convtvm lowered. Raises UnsupportedOp for a convolution or pooling op
    convtvm does not cover (naming its node in the source graph where the importer recorded it)."""
    import tvm
    from tvm import relax
    lowered = Counter() if lowered is None else lowered
    workloads = [] if workloads is None else workloads
    errors = []
    check_calls(mod)  # before any pass renames its vars: the refusal names the node
    mod = fold_batchnorm(mod)
    graph_cfg = info.config.get("graph", {})
    layouts = {f"relax.nn.{op}": list(pair) for op, pair in graph_cfg.get("convert_layout", {}).items()}
    layout_free = info.config.get("tuning", {}).get("layout_free_weights", False)
    with info.target:
        try:
            mod = tvm.transform.Sequential([
                *([relax.transform.ConvertLayout(layouts), relax.transform.FoldConstant()] if layouts else []),
                relax.transform.CanonicalizeBindings(),
            ])(mod)
            mod = fold_input_scales(mod, lowered, workloads, errors, graph_cfg.get("winograd"))
            mod = tvm.transform.Sequential([
                relax.transform.LegalizeOps(customize_legalize_map={
                    **convtvm_legalizations(lowered, workloads, errors, graph_cfg.get("winograd")),
                    **epilogue_legalizations(info)}),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                relax.transform.DeadCodeElimination(),
                *([relax.transform.AttachAttrLayoutFreeBuffers()] if layout_free else []),
            ])(mod)
        except Exception:
            if errors:
                raise errors[0] from None
            raise
    return mod


SCHEDULED = "tirx.is_scheduled"


def schedule(mod, info: TargetInfo, logs=()) -> tuple:
    """Schedule every TIR function for ``info``: from the first of ``logs`` ((log, carried) pairs) that
    holds a record of it, else the fallback. A log's records must be for ``info``, or, where ``carried``,
    for another CPU of its kind (their traces replayed for this one). Returns (module, Counter of how:
    tuned / carried over / fallback / generic)."""
    from tvm import relax, tirx

    from ..records.log import TuningLog
    how, carried_funcs = Counter(), set()
    for tuning_log, carried in logs:
        log = TuningLog(tuning_log)
        log.check(log.target() if carried else info, must_exist=True)
        before = _scheduled(mod)
        with tempfile.TemporaryDirectory() as tmp:  # the database may rewrite its files: use a copy
            db, _ = log.open(tmp)  # without the lines it cannot read (each named in a warning)
            with info.target, db:
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
        if carried:
            carried_funcs |= _scheduled(mod) - before
    cfg = info.config["fallback"]
    for gv, func in list(mod.functions_items()):
        if not isinstance(func, tirx.PrimFunc):
            continue
        if gv.name_hint in _scheduled(mod):
            how["carried over" if gv.name_hint in carried_funcs else "tuned"] += 1
            continue
        func, kind = _schedule_one(func, info, cfg)
        how[kind] += 1
        mod[gv] = func.with_attr(SCHEDULED, True)
    if how["tuned"] or how["carried over"]:
        mod = prepack_weights(mod, info)
    return mod, how


def _scheduled(mod) -> set:
    """Names of the TIR functions of ``mod`` that are scheduled already."""
    from tvm import tirx
    return {gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)
            and f.attrs is not None and SCHEDULED in f.attrs and bool(f.attrs[SCHEDULED])}


def prepack_weights(mod, info: TargetInfo):
    """A tuned kernel may read its weight in a packed layout (MetaSchedule's RewriteLayout): split
    that repacking into its own function and run it once, at compile time, on the constant weights.
    The folding leaves each kernel's packed weights bound as a tuple of constants; canonicalizing
    the bindings passes the constants straight to the kernel, so the VM does not build and unpack
    that tuple at every call (4 VM instructions a kernel)."""
    import tvm
    from tvm import relax
    with info.target:
        mod = relax.transform.SplitLayoutRewritePreproc()(mod)
    with tvm.target.Target({"kind": "llvm"}):  # the packing runs here, on this machine
        mod = relax.transform.FoldConstant()(mod)
    return relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(mod))


def _schedule_one(func, info: TargetInfo, cfg):
    """convtvm's fallback schedule; for a structure it does not handle, a generic one."""
    if info.backend.fallback_is_total:  # e.g. CUDA's rules end with dlight's Fallback, binding any loop nest
        return info.backend.fallback(func, info)["main"], "fallback"
    try:
        return info.backend.fallback(func, info)["main"], "fallback"
    except Exception:  # noqa: BLE001 - e.g. TVM cannot inline a broadcasting epilogue (SE scale)
        return _generic(func, cfg), "generic"


def _generic(func, cfg):
    """Inline the elementwise producers, then per block: the leading spatial loops fused and
    parallel, the innermost loop of an elementwise block vectorised. (dlight's CPU GEMV rule
    would do for the squeeze-excitation GEMVs, but it unrolls them into minutes of LLVM time.)"""
    from tvm.s_tir import Schedule
    sch = Schedule(func)
    root = sch.get_sblock("root")
    for block in sch.get_child_blocks(root):
        if sch.get_consumers(block) and not is_reduction(sch, block):
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001 - not inlinable: it gets its own loop nest
                pass
    for block in sch.get_child_blocks(root):
        loops = sch.get_loops(block)
        kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
        if not loops or len(loops) != len(kinds):
            continue
        lead = []
        for lp, kind in zip(loops, kinds):
            if kind == REDUCE:
                break
            lead.append(lp)
        if len(lead) == len(loops):  # elementwise: vectorise the innermost loop
            extent = int(sch.get(lead[-1]).extent)
            lanes = next((c for c in cfg["vector_lanes"] if extent % c == 0), 1)
            if lanes > 1:
                outer, inner = sch.split(lead[-1], [None, lanes])
                sch.vectorize(inner)
                lead[-1] = outer
        if lead:
            sch.parallel(sch.fuse(*lead) if len(lead) > 1 else lead[0])
    return sch.mod["main"]
