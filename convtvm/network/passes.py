"""Relax passes on an imported network: folds that save work, and the bounds of its gathers.

- ``fold_batchnorm``: an inference BatchNorm after a convolution with constant weights folds into
  that convolution's weight and a bias (numpy, at compile time); any other BatchNorm is decomposed
  into elementwise ops.
- ``fold_input_scales``: a convolution of ``x * s`` (s per sample and input channel, the product read
  by that convolution only: a squeeze-excitation's scale) becomes one convtvm kernel that scales the
  weights it loads, so the scaled map is never written.
- ``index_bounds`` / ``safe_takes``: the inputs that index a table, checked before every run
  (``runtime.check_indices``), and every other gather clipped to its table.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from .legalize import (CONV_OPS, computed_on_nchw_view, conv_workload, emit_convtvm, int_tuple, static_shape,
                       takes_winograd)


_GATHERS = ("relax.take", "relax.gather_elements")
_SAME_VALUES = ("relax.astype", "relax.reshape", "relax.permute_dims", "relax.expand_dims", "relax.squeeze",
                "relax.flatten", "relax.broadcast_to")  # every element of the input, unchanged (casts: in range)


def index_bounds(mod) -> list[dict]:
    """The network inputs that index a table: for every ``take`` (an embedding, ``index_select``,
    ``x[idx]``) and ``gather_elements`` whose indices are one of ``main``'s inputs (through reshapes,
    transposes, broadcasts and integer casts, which keep every value), ``{"input": position,
    "name": its name, "size": the table's extent along the gathered axis, "op": the op}``; the
    tightest per input. ``Model`` checks those inputs before it runs the network: the compiled gather
    itself checks nothing, and read outside the table (garbage, or a crash)."""
    from tvm import relax
    func = mod["main"]
    n_in = int(func.attrs["num_input"]) if func.attrs is not None and "num_input" in func.attrs else len(func.params)
    inputs = {p: k for k, p in enumerate(func.params[:n_in])}
    bound, found = {}, {}
    for block in func.body.blocks:
        for b in block.bindings:
            bound[b.var] = b.value
    for value in bound.values():
        name = getattr(value.op, "name", None) if isinstance(value, relax.Call) else None
        if name not in _GATHERS:
            continue
        data, idx = value.args[0], value.args[1]
        try:
            shape = static_shape(data)
        except (TypeError, ValueError, AttributeError):  # not a static shape
            continue
        axis = value.attrs.axis
        size = math.prod(shape) if axis is None else shape[int(axis) % len(shape)]
        while isinstance(idx, relax.Var) and idx in bound and isinstance(bound[idx], relax.Call) \
                and getattr(bound[idx].op, "name", None) in _SAME_VALUES:
            idx = bound[idx].args[0]
        if idx in inputs:
            k = inputs[idx]
            if k not in found or size < found[k]["size"]:
                found[k] = {"input": k, "name": str(idx.name), "size": int(size), "op": name.split(".")[-1]}
    return [found[k] for k in sorted(found)]


def safe_takes(mod):
    """Every ``take`` in "fast" mode (no bounds check: an index outside the table reads outside it)
    in "clip" mode: an index that ``Model`` cannot check before the run (one the network computes)
    never reads outside the table."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator
    take = tvm.ir.Op.get("relax.take")

    @mutator
    class Clipper(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op != take or str(call.attrs.mode) != "fast":
                return call
            return self.builder_.normalize(relax.op.take(call.args[0], call.args[1], axis=call.attrs.axis,
                                                         mode="clip"))

    clipper = Clipper(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            clipper.builder_.update_func(gv, clipper.visit_expr(func))
    return clipper.builder_.get()


def fold_batchnorm(mod):
    """Fold ``batch_norm(conv(x, W) [+ b])[0]`` (inference, constant W, b and statistics) into
    ``conv(x, W * s) + (b - mean) * s + beta``, s = gamma / sqrt(var + eps); decompose the rest."""
    from tvm import relax
    from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, rewrite_call, wildcard

    func = mod["main"]
    for op in CONV_OPS:
        x, w, b = wildcard(), is_const(), is_const()
        conv = is_op(op)(x, w)
        biased = is_op("relax.add")(conv, b | is_op("relax.reshape")(b, wildcard()))
        stats = [is_const() for _ in range(4)]
        bn = is_op("relax.nn.batch_norm")(conv | biased, *stats)

        def rewriter(expr, m, conv=conv, bn=bn, x=x, w=w, b=b, stats=stats):
            c, norm = m[conv], m[bn]
            channels = int(c.ty.shape[int(norm.attrs.axis)])
            bias = m[b].value.numpy().astype(np.float64) if b in m else np.zeros(channels)
            if norm.attrs.training or int(norm.attrs.axis) != str(c.attrs.data_layout).index("C") \
                    or bias.size != channels:
                return expr
            gamma, beta, mean, var = (m[s].value.numpy().astype(np.float64) for s in stats)
            scale = (gamma if norm.attrs.scale else 1.0) / np.sqrt(var + float(norm.attrs.epsilon))
            shift = (bias.reshape(-1) - mean) * scale + (beta if norm.attrs.center else 0.0)
            weight = m[w].value.numpy()
            new_w = relax.const((weight * _per_weight(scale, c, weight)).astype(weight.dtype))
            shape = [1] * len(c.ty.shape)
            shape[int(norm.attrs.axis)] = -1
            return relax.op.add(relax.Call(c.op, [m[x], new_w], c.attrs),
                                relax.const(shift.reshape(shape).astype(weight.dtype)))

        func = rewrite_call(TupleGetItemPattern(bn, 0), rewriter, func)
    mod["main"] = func
    return relax.transform.DecomposeOpsForInference()(mod)


def _per_weight(scale: np.ndarray, conv, weight: np.ndarray) -> np.ndarray:
    """The per-output-channel ``scale`` laid out to multiply the convolution's weight."""
    layout = str(conv.attrs.kernel_layout)
    o_axis, i_axis = layout.index("O"), layout.index("I")
    shape = [1] * weight.ndim
    if "transpose" not in conv.op.name:
        shape[o_axis] = -1
        return scale.reshape(shape)
    # transposed: weight (Cin, Cout / groups, ...); input channel i feeds outputs group(i) * ocg + o
    groups = int(conv.attrs.groups)
    cin, ocg = weight.shape[i_axis], weight.shape[o_axis]
    per = scale.reshape(groups, ocg)[np.arange(cin) // (cin // groups)]  # (Cin, ocg)
    if i_axis > o_axis:
        per = per.T
    shape[min(i_axis, o_axis)], shape[max(i_axis, o_axis)] = per.shape
    return per.reshape(shape)


def fold_input_scales(mod, lowered: Counter, workloads: list, errors: list, winograd: dict | None = None):
    """``conv(x * s, W)``, s one value per (sample, input channel) (a squeeze-excitation's sigmoid
    scale) and ``x * s`` used by that convolution only, as one convtvm kernel that multiplies each
    weight it loads by the scale of its input channel: the scaled feature map is never written. The
    convolution must be one convtvm computes in the data's own layout, and not one that Winograd
    would take."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    conv_ops = [tvm.ir.Op.get(op) for op in CONV_OPS if "transpose" not in op]
    multiply = tvm.ir.Op.get("relax.multiply")
    uses = Counter()
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            for block in func.body.blocks:  # a dataflow var is used in its own block only
                if isinstance(block, relax.DataflowBlock):
                    for var, users in relax.analysis.udchain(block).items():
                        uses[var] += len(users)

    def shape_of(e):
        ty = getattr(e, "ty", None)
        return int_tuple(ty.shape) if isinstance(ty, relax.TensorType) and ty.shape is not None else None

    def scale_of(call, producer):
        """(x, s) when ``producer`` (the conv's data) is such a product x * s, else None."""
        if not isinstance(producer, relax.Call) or producer.op != multiply:
            return None
        shape, dtype, c = static_shape(call.args[0]), str(call.args[0].ty.dtype), str(call.attrs.data_layout).index("C")
        for x, s in (producer.args, producer.args[::-1]):
            per_channel = shape_of(s)
            if shape_of(x) == shape and per_channel is not None and len(per_channel) == len(shape) \
                    and str(s.ty.dtype) == dtype and per_channel[0] in (1, shape[0]) and per_channel[c] == shape[c] \
                    and all(d == 1 for k, d in enumerate(per_channel) if k not in (0, c)):
                return x, s
        return None

    @mutator
    class Folder(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op not in conv_ops or computed_on_nchw_view(call) \
                    or not isinstance(call.args[0], relax.DataflowVar) or uses[call.args[0]] != 1:
                return call
            found = scale_of(call, self.lookup_binding(call.args[0]))
            try:
                if found is None or (winograd and takes_winograd(call, conv_workload(call), winograd)):
                    return call
            except ValueError:  # unsupported: LegalizeOps reports it
                return call
            x, s = found
            unscaled = self.builder_.normalize(relax.Call(call.op, [x, call.args[1]], call.attrs))
            return emit_convtvm(self.builder_, unscaled, lowered, workloads, errors, input_scale=s)

    folder = Folder(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            folder.builder_.update_func(gv, folder.visit_expr(func))
    return relax.transform.DeadCodeElimination()(folder.builder_.get())
