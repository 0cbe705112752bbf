"""Whole networks: a torch.nn.Module as one Relax VM executable built from convtvm's kernels.

    net = convtvm.compile_model(model, [x], target="x86", tuning_log=None)
    y = net(x)                      # numpy in -> numpy out, torch in -> torch out
    net.export("build/effnet.so")   # + build/effnet.so.json (manifest, "kind": "model")
    net = convtvm.load("build/effnet.so")

The pipeline (``lower``), one Relax pass after the other:

1. import: ``torch.export`` -> ``from_exported_program(keep_params_as_input=True)``, on the
   exported ATen graph as it is (no decomposition: ~20x faster, and conv/pool/BN stay whole ops;
   decomposed only if that fails); the weights are then bound as constants (``BindParams``) so
   that they can be folded;
2. ``fold_batchnorm``: every inference BatchNorm that follows a convolution with a constant weight
   is folded into that convolution's weight and a bias (numpy, at compile time); any other
   BatchNorm is decomposed into elementwise ops (``DecomposeOpsForInference``);
3. ``fold_input_scales``: a convolution of ``x * s`` (s per sample and input channel, the product read
   by that convolution only: a squeeze-excitation's scale) becomes one convtvm kernel that scales
   the weights it loads, so the scaled map is never written;
   ``LegalizeOps`` with convtvm's own legalizations for every convolution and pooling op
   (``relax.nn.conv1d/2d/3d``, ``conv1d/2d/3d_transpose``, ``max_pool*``, ``avg_pool*``,
   ``adaptive_avg_pool*`` to 1x1 and ``mean`` over all spatial axes): each builds a convtvm
   ``Workload`` from the op's attributes (which validates them) and emits ``call_te`` on
   ``te_ops``; attributes convtvm does not support raise ``UnsupportedOp``. Where the target's
   ``graph.winograd`` says so, a 3x3 stride-1 conv2d (NHWC, one group, constant weight) becomes
   ``te_ops.conv2d_winograd``, its weight transformed here, once. Everything else
   (sigmoid, add, matmul, ...) keeps TVM's default legalization;
4. ``AnnotateTIROpPattern`` + ``FoldConstant`` + ``FuseOps`` + ``FuseTIR``: the elementwise epilogues
   (bias, SiLU, the squeeze-excitation sigmoid, residual adds) fuse into the convolution
   kernels (a convolution is "OutEWiseFusable");
5. scheduling, per TIR function: the tuning log's best record when it has one
   (``MetaScheduleApplyDatabase``), else convtvm's CPU fallback schedule (``fallback.cpu``), else,
   for a structure the fallback cannot handle, a generic parallel/vectorised loop nest;
6. ``tvm.compile`` (Relax VM) with the CPU backend's dataflow-lowering and finalisation passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import records
from .module import _tvm_version, export_with_manifest, write_json_atomic
from .targets import TargetInfo, check_target_options, cpu_threads, resolve

CONVTVM_OPS = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d", "relax.nn.conv1d_transpose",
               "relax.nn.conv2d_transpose", "relax.nn.conv3d_transpose", "relax.nn.max_pool1d",
               "relax.nn.max_pool2d", "relax.nn.max_pool3d", "relax.nn.avg_pool1d", "relax.nn.avg_pool2d",
               "relax.nn.avg_pool3d", "relax.nn.adaptive_avg_pool1d", "relax.nn.adaptive_avg_pool2d",
               "relax.nn.adaptive_avg_pool3d", "relax.mean")
PREFIX = "convtvm_"  # name of every PrimFunc built from convtvm's TE (fused ones contain it)


class UnsupportedOp(ValueError):
    """A convolution or pooling op whose attributes convtvm's kernels do not cover."""


# ----------------------------------------------------------------------------------------------
# 1. import
# ----------------------------------------------------------------------------------------------

def import_torch(module, example_inputs):
    """torch.nn.Module -> Relax IRModule with the weights bound as constants.

    The module is exported in eval mode, and every submodule's training flag is restored afterwards
    (the caller's module is left as it was). A submodule whose forward differs in training mode
    (BatchNorm, InstanceNorm with running statistics, Dropout, RReLU) must already be in eval mode:
    convtvm compiles inference, and would otherwise answer what the module answers in eval mode,
    not what it answers now (``UnsupportedOp`` names the submodule). So must a training-mode op that
    the forward asks for itself (``F.batch_norm(..., training=True)``, ``F.dropout(..., training=True)``).
    Only float32 networks are supported (parameters, buffers and floating-point inputs; integer
    inputs, e.g. an embedding's indices, are fine): another dtype is a ValueError."""
    import torch
    from tvm import relax
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.torch import from_exported_program

    example_inputs = tuple(example_inputs)
    _check_float32(module, example_inputs)
    _refuse_training_layers(module)
    with in_eval(module), torch.no_grad():
        ep = torch.export.export(module, example_inputs)
    _refuse_training_ops(ep)
    kw = dict(keep_params_as_input=True, unwrap_unit_return_tuple=True)
    try:  # the exported ATen ops as they are: fast (EfficientNetV2-S: 0.5 s instead of ~12 s)
        mod = from_exported_program(ep, run_ep_decomposition=False, **kw,
                                    custom_convert_map={"batch_norm.default": _aten_batch_norm})
    except UnsupportedOp:  # the decomposed import would not refuse it: it ignores what was refused
        raise
    except Exception:  # noqa: BLE001 - an op only its decomposition covers: decompose (slower)
        mod = from_exported_program(ep, **kw)
    mod, params = detach_params(mod)
    func = mod["main"]
    n_in = int(func.attrs["num_input"])
    bound = {v: p for v, p in zip(func.params[n_in:], params.get("main", []))}
    return relax.transform.BindParams("main", bound)(mod)


@contextlib.contextmanager
def in_eval(module):
    """``module`` in eval mode for the block; every submodule's training flag restored after it (the
    caller's module is left as it was)."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        yield module.eval()
    finally:
        for m, training in flags:
            m.training = training


SUPPORTED_DTYPE = "float32"


def _check_float32(module, example_inputs) -> None:
    """ValueError naming the first parameter, buffer or floating-point input that is not float32
    (TVM 0.27's importer computes convolutions in float32 whatever the weights' dtype)."""
    import torch
    named = [*(("parameter", n, t) for n, t in module.named_parameters()),
             *(("buffer", n, t) for n, t in module.named_buffers()),
             *(("input", str(k), x) for k, x in enumerate(example_inputs))]
    for what, name, t in named:
        if not isinstance(t, torch.Tensor):
            if what == "input":
                raise ValueError(f"example input {name} is a {type(t).__name__}; give torch tensors")
            continue
        if (t.is_floating_point() or t.is_complex()) and t.dtype != torch.float32:
            dtype = str(t.dtype).replace("torch.", "")
            raise ValueError(f"{what} {name!r} is {dtype}: compile_model supports {SUPPORTED_DTYPE} networks only "
                             f"(floating-point parameters, buffers and inputs in {SUPPORTED_DTYPE}; integer inputs "
                             f"such as indices are fine): convert with module.float() and x.float()")


def _refuse_training_layers(module) -> None:
    """UnsupportedOp naming the first submodule in training mode whose forward there is not its
    inference forward."""
    from torch import nn
    kinds = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.RReLU)
    for name, m in module.named_modules():
        if not m.training:
            continue
        norm_stats = isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats
        if isinstance(m, kinds) or norm_stats:
            raise UnsupportedOp(f"submodule {name or '(the module itself)'!r} ({type(m).__name__}) is in training "
                                f"mode, where its output is not its inference output; convtvm compiles inference: "
                                f"call the module's eval() first")


def _refuse_training_ops(ep) -> None:
    """UnsupportedOp naming the first node of the exported graph that asks for training behaviour
    itself (an ATen op with training=True / train=True: a batch norm with the batch's statistics, a
    dropout): TVM's importer would drop that argument and compile the inference op instead."""
    for node in ep.graph.nodes:
        schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
        if schema is None:
            continue
        always = schema.name.split("::")[-1].startswith("_batch_norm_with_update")
        for i, arg in enumerate(schema.arguments):
            if arg.name not in ("training", "train"):
                continue
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name, False)
            if value is True or always:
                raise UnsupportedOp(f"{node.target} (node {node.name!r}) runs in training mode ({arg.name}=True); "
                                    f"convtvm compiles inference only: pass {arg.name}=False (and call eval())")


def _aten_batch_norm(node, importer):
    """aten.batch_norm(x, weight, bias, mean, var, training, momentum, eps, cudnn) in inference
    (TVM 0.27's converter reads its arguments as the decomposed op's: eps=momentum, training)."""
    from tvm import relax
    x = importer.env[node.args[0]]
    training, momentum, eps = node.args[5:8]
    if training:
        raise UnsupportedOp(f"{node.target} (node {node.name!r}) runs in training mode (training=True); "
                            f"convtvm compiles inference only: pass training=False (and call eval())")
    channels, dtype = int(importer.shape_of(x)[1]), x.ty.dtype.dtype

    def arg(i, fill):
        return importer.env[node.args[i]] if node.args[i] is not None else relax.const(np.full(channels, fill), dtype)

    bn = relax.op.nn.batch_norm(x, arg(1, 1.0), arg(2, 0.0), arg(3, 0.0), arg(4, 1.0), axis=1, epsilon=eps,
                                momentum=momentum, training=False)
    return importer.block_builder.emit(importer.block_builder.emit(bn)[0])


# ----------------------------------------------------------------------------------------------
# indices: a gather never reads outside its table
# ----------------------------------------------------------------------------------------------

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
            shape = _shape(data)
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


def check_indices(bounds: list[dict], arrays) -> None:
    """IndexError naming the input, the index and the range, when an input that indexes a table
    (``index_bounds``) holds an index outside it; before anything runs."""
    for b in bounds:
        a = np.asarray(arrays[b["input"]])
        if not a.size:
            continue
        lo, hi = a.min(), a.max()
        if lo < 0 or hi >= b["size"]:
            bad = int(lo if lo < 0 else hi)
            raise IndexError(f"input {b['input']} ({b['name']!r}) holds index {bad}, outside the {b['size']} entries "
                             f"its {b['op']} reads: every index must be in [0, {b['size'] - 1}]")


# ----------------------------------------------------------------------------------------------
# 2. BatchNorm folding
# ----------------------------------------------------------------------------------------------

_CONVS = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d",
          "relax.nn.conv1d_transpose", "relax.nn.conv2d_transpose", "relax.nn.conv3d_transpose")


def fold_batchnorm(mod):
    """Fold ``batch_norm(conv(x, W) [+ b])[0]`` (inference, constant W, b and statistics) into
    ``conv(x, W * s) + (b - mean) * s + beta``, s = gamma / sqrt(var + eps); decompose the rest."""
    from tvm import relax
    from tvm.relax.dpl import TupleGetItemPattern, is_const, is_op, rewrite_call, wildcard

    func = mod["main"]
    for op in _CONVS:
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


# ----------------------------------------------------------------------------------------------
# 3. convtvm's legalizations
# ----------------------------------------------------------------------------------------------

def _ints(v) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


def _shape(expr) -> tuple[int, ...]:
    return _ints(expr.ty.shape)


def _check_dtype(call):
    dtype = str(call.args[0].ty.dtype)
    out = str(call.ty.dtype)
    if dtype != out:
        raise UnsupportedOp(f"input dtype {dtype} with output dtype {out} (convtvm computes in the input dtype)")
    return dtype


def _conv_workload(call):
    from .variants import workload
    a = call.attrs
    data_layout, kernel_layout, out_layout = str(a.data_layout), str(a.kernel_layout), str(a.out_layout)
    transposed = "transpose" in call.op.name
    ndim = len(data_layout) - 2
    spatial_axes = "DHW"[3 - ndim:]
    kernel_ok = ("IO" if transposed else "OI") + spatial_axes
    # channels-last data is computed on its channels-first view (_channels_first), except conv2d NHWC/HWIO
    supported = {("NC" + spatial_axes, kernel_ok), ("N" + spatial_axes + "C", kernel_ok)}
    if not transposed and ndim == 2:
        supported.add(("NHWC", "HWIO"))
    if (data_layout, kernel_layout) not in supported or out_layout != data_layout:
        raise UnsupportedOp(f"layouts data={data_layout} kernel={kernel_layout} out={out_layout}; convtvm "
                            f"supports {', '.join(f'{d}/{k}' for d, k in sorted(supported))}")
    dtype = _check_dtype(call)
    dshape, wshape = _shape(call.args[0]), _shape(call.args[1])
    c_axis = data_layout.index("C")
    spatial = tuple(dshape[data_layout.index(ch)] for ch in data_layout if ch not in "NC")
    kernel = tuple(wshape[kernel_layout.index(ch)] for ch in kernel_layout if ch not in "OI")
    groups = int(a.groups)
    pad = _ints(a.padding)
    params = dict(in_channels=dshape[c_axis], kernel_size=kernel, stride=_ints(a.strides),
                  padding=tuple(zip(pad[:ndim], pad[ndim:])), dilation=_ints(a.dilation), groups=groups)
    if transposed:
        params["out_channels"] = wshape[kernel_layout.index("O")] * groups
        params["output_padding"] = _ints(a.output_padding)
        name = f"conv_transpose{ndim}d"
    else:
        params["out_channels"] = wshape[kernel_layout.index("O")]
        name = f"conv{ndim}d"
        if ndim == 2:
            params["layout"] = data_layout
    return workload(name, batch=dshape[0], input_size=spatial, dtype=dtype, **params)


def _pool_workload(call):
    from .variants import workload
    a = call.attrs
    layout = str(a.layout)
    ndim = len(layout) - 2
    spatial_axes = "DHW"[3 - ndim:]
    if layout not in ("NC" + spatial_axes, "N" + spatial_axes + "C") or str(a.out_layout) != layout:
        raise UnsupportedOp(f"layout {layout} (out {a.out_layout}); convtvm pools NC{spatial_axes} "
                            f"or N{spatial_axes}C")
    dtype = _check_dtype(call)
    dshape = _shape(call.args[0])
    if layout.endswith("C"):  # described (and computed, see _channels_first) on the channels-first view
        dshape = (dshape[0], dshape[-1], *dshape[1:-1])
    pad = _ints(a.padding)
    if pad[:ndim] != pad[ndim:]:
        raise UnsupportedOp(f"asymmetric padding {pad}; convtvm pools with torch's symmetric padding")
    kind = "max" if "max" in call.op.name else "avg"
    params = dict(channels=dshape[1], kernel_size=_ints(a.pool_size), stride=_ints(a.strides),
                  padding=pad[:ndim], ceil_mode=bool(a.ceil_mode))
    if kind == "max":
        params["dilation"] = _ints(a.dilation)
    else:
        if any(d != 1 for d in _ints(a.dilation)):
            raise UnsupportedOp(f"dilation {_ints(a.dilation)} for average pooling")
        params["count_include_pad"] = bool(a.count_include_pad)
    return workload(f"{kind}_pool{ndim}d", batch=dshape[0], input_size=dshape[2:], dtype=dtype, **params)


def _global_pool_workload(call):
    """adaptive_avg_pool2d to 1x1 or a mean over both spatial axes, in NCHW or NHWC:
    (workload, channels_last), or None when the call is not a global pooling."""
    from .variants import workload
    dshape = _shape(call.args[0])
    if len(dshape) != 4 or str(call.ty.dtype) != str(call.args[0].ty.dtype):
        return None
    if call.op.name == "relax.mean":  # a mean over axes (2, 3) or (1, 2) of a 4-D tensor
        axes = sorted(int(x) % 4 for x in (call.attrs.axis or []))
        if axes not in ([2, 3], [1, 2]):
            return None
        channels_last = axes == [1, 2]
    else:
        a = call.attrs
        if str(a.layout) not in ("NCHW", "NHWC") or str(a.out_layout) != str(a.layout):
            return None
        channels_last = str(a.layout) == "NHWC"
        size = _ints(a.output_size) if a.output_size is not None else (None,)
        if tuple(size) not in ((1, 1), (1,)):
            return None
    n, c, h, w = (dshape[0], dshape[3], *dshape[1:3]) if channels_last else dshape
    return workload("global_avg_pool2d", batch=n, input_size=(h, w), dtype=str(call.args[0].ty.dtype),
                    channels=c), channels_last


def _te_of(w):
    """The convtvm TE compute of a single-stage workload, as a function of its input tensors."""
    from . import te_ops
    from .params import ConvSpec, GlobalPoolSpec, PoolSpec
    (st,) = w.stages
    if isinstance(st, ConvSpec):
        return lambda data, weight: te_ops.conv(data, weight, st, "")
    if isinstance(st, PoolSpec):
        return lambda data: te_ops.pool(data, st, "")
    assert isinstance(st, GlobalPoolSpec)
    return lambda data: te_ops.global_avg_pool(data, st, "")


def _computed_on_nchw_view(call) -> bool:
    """Channels-last data (NWC, NHWC, NDHWC) of a pooling or convolution that convtvm defines
    channels-first: every one but conv2d with NHWC/HWIO, which convtvm computes natively."""
    a, op = call.attrs, call.op.name
    layout = str(a.data_layout) if op in _CONVS else str(a.layout)
    native = op == "relax.nn.conv2d" and layout == "NHWC" and str(a.kernel_layout) == "HWIO"
    return layout.startswith("N") and layout.endswith("C") and not native and "adaptive" not in op


def _channels_first(compute, back: bool = False):
    """``compute`` (NCHW) applied to an NHWC tensor through transposed views (inlined into its loads
    and, with ``back``, its stores): the same kernel, read and written channels-last."""
    from tvm import topi

    def on_view(data, *weights):
        nd = len(data.shape)
        y = compute(topi.transpose(data, (0, nd - 1, *range(1, nd - 1))), *weights)
        return topi.transpose(y, (0, *range(2, nd), 1)) if back else y
    return on_view


def _fast_sigmoid(bb, call):
    """sigmoid and SiLU (x * sigmoid(x)) through convtvm's vectorisable sigmoid (te_ops.sigmoid)."""
    from tvm import topi

    from .te_ops import sigmoid

    if call.op.name == "relax.nn.silu":
        return bb.call_te(lambda x: topi.multiply(x, sigmoid(x)), call.args[0], primfunc_name_hint="silu")
    return bb.call_te(sigmoid, call.args[0], primfunc_name_hint="sigmoid")


def _reshaped(compute, shape):
    from tvm import topi
    return lambda *xs: topi.reshape(compute(*xs), shape)


def _winograd_call(bb, call, w, winograd: dict):
    """A 3x3 stride-1 NHWC conv2d with a constant weight and at least ``winograd["min_channels"]``
    input and output channels as Winograd F(tile x tile, 3x3), its weight transformed here, once;
    None for any other convolution."""
    from tvm import relax

    from . import te_ops
    if not _takes_winograd(call, w, winograd):
        return None
    (st,), weight, tile = w.stages, call.args[1], winograd["tile"]
    transformed = relax.const(te_ops.winograd_weight(weight.value.numpy(), tile))
    return bb.call_te(lambda data, u: te_ops.conv2d_winograd(data, u, st, tile, ""), call.args[0], transformed,
                      primfunc_name_hint=PREFIX + "conv2d_winograd")


def _takes_winograd(call, w, winograd: dict) -> bool:
    from tvm.ir.expr import Constant

    from . import te_ops
    (st,) = w.stages
    return (call.op.name == "relax.nn.conv2d" and str(call.attrs.kernel_layout) == "HWIO"
            and isinstance(call.args[1], Constant) and te_ops.winograd_eligible(st)
            and min(st.in_channels, st.out_channels) >= winograd.get("min_channels", 1))


def convtvm_legalizations(lowered: Counter, workloads: list, errors: list, winograd: dict | None = None):
    """customize_legalize_map for LegalizeOps: convtvm's TE for every conv and pool op.
    Counts what it lowered in ``lowered`` (op name -> calls), appends the workloads, and the
    UnsupportedOp it raises to ``errors`` (the FFI turns exceptions into RuntimeErrors).
    With ``winograd`` ({"tile", "min_channels"}), 3x3 stride-1 convolutions run as Winograd."""
    def legalize(bb, call):
        return _emit_convtvm(bb, call, lowered, workloads, errors, winograd)

    return {op: legalize for op in CONVTVM_OPS}


def _emit_convtvm(bb, call, lowered: Counter, workloads: list, errors: list, winograd: dict | None = None,
                  input_scale=None):
    """``call`` (a conv or pool op) as a call_te on convtvm's TE; with ``input_scale`` (a forward
    convolution computed in its own layout, see ``fold_input_scales``), on ``call``'s data times it."""
    op = call.op.name
    try:
        if op in _CONVS:
            w = _conv_workload(call)
        elif "pool" in op and "adaptive" not in op:
            w = _pool_workload(call)
        else:
            found = _global_pool_workload(call)
            if found is None:  # not a global pooling (e.g. a mean over channels): TVM's default
                return _default_legalize(op)(bb, call)
            w, channels_last = found
    except ValueError as e:
        errors.append(UnsupportedOp(f"convtvm cannot lower {op} with attributes {_attrs_text(call)}: {e}"))
        raise errors[-1] from None
    expected, compute, produced = _shape(call), _te_of(w), tuple(w.output_shape)
    if w.variant == "global_avg_pool2d" and channels_last:  # convtvm's pooling on the NCHW view
        compute = _channels_first(compute)
    elif _computed_on_nchw_view(call):
        compute = _channels_first(compute, back=True)
        produced = (produced[0], *produced[2:], produced[1])
    if w.variant == "global_avg_pool2d" and expected != produced:  # NHWC, or keepdims=False
        compute = _reshaped(compute, expected)
    elif produced != expected:
        errors.append(UnsupportedOp(f"convtvm cannot lower {op} ({_attrs_text(call)}): its output shape "
                                    f"{produced} differs from Relax's {expected}"))
        raise errors[-1]
    lowered[op] += 1
    workloads.append(w)
    if input_scale is not None:
        from . import te_ops
        (st,) = w.stages
        return bb.call_te(lambda data, weight, scale: te_ops.conv(data, weight, st, "", input_scale=scale),
                          *call.args[:2], input_scale, primfunc_name_hint=PREFIX + w.variant + "_scaled_input")
    fast = _winograd_call(bb, call, w, winograd) if winograd else None
    if fast is not None:
        return fast
    return bb.call_te(compute, *call.args[:2 if op in _CONVS else 1], primfunc_name_hint=PREFIX + w.variant)


def fold_input_scales(mod, lowered: Counter, workloads: list, errors: list, winograd: dict | None = None):
    """``conv(x * s, W)``, s one value per (sample, input channel) (a squeeze-excitation's sigmoid
    scale) and ``x * s`` used by that convolution only, as one convtvm kernel that multiplies each
    weight it loads by the scale of its input channel: the scaled feature map is never written. The
    convolution must be one convtvm computes in the data's own layout, and not one that Winograd
    would take."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    conv_ops, multiply = [tvm.ir.Op.get(op) for op in _CONVS if "transpose" not in op], tvm.ir.Op.get("relax.multiply")
    uses = Counter()
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            for block in func.body.blocks:  # a dataflow var is used in its own block only
                if isinstance(block, relax.DataflowBlock):
                    for var, users in relax.analysis.udchain(block).items():
                        uses[var] += len(users)

    def shape_of(e):
        ty = getattr(e, "ty", None)
        return _ints(ty.shape) if isinstance(ty, relax.TensorType) and ty.shape is not None else None

    def scale_of(call, producer):
        """(x, s) when ``producer`` (the conv's data) is such a product x * s, else None."""
        if not isinstance(producer, relax.Call) or producer.op != multiply:
            return None
        shape, dtype, c = _shape(call.args[0]), str(call.args[0].ty.dtype), str(call.attrs.data_layout).index("C")
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
            if call.op not in conv_ops or _computed_on_nchw_view(call) \
                    or not isinstance(call.args[0], relax.DataflowVar) or uses[call.args[0]] != 1:
                return call
            found = scale_of(call, self.lookup_binding(call.args[0]))
            try:
                if found is None or (winograd and _takes_winograd(call, _conv_workload(call), winograd)):
                    return call
            except ValueError:  # unsupported: LegalizeOps reports it
                return call
            x, s = found
            unscaled = self.builder_.normalize(relax.Call(call.op, [x, call.args[1]], call.attrs))
            return _emit_convtvm(self.builder_, unscaled, lowered, workloads, errors, input_scale=s)

    folder = Folder(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            folder.builder_.update_func(gv, folder.visit_expr(func))
    return relax.transform.DeadCodeElimination()(folder.builder_.get())


def epilogue_legalizations(info: TargetInfo) -> dict:
    """The target's choices for elementwise epilogues (schedules/<target>.json "graph")."""
    if info.config.get("graph", {}).get("fast_sigmoid", False):
        return {"relax.sigmoid": _fast_sigmoid, "relax.nn.silu": _fast_sigmoid}
    return {}


def _default_legalize(op_name: str):
    import tvm
    return tvm.ir.Op.get(op_name).get_attr("FLegalize")


def _attrs_text(call) -> str:
    a = call.attrs
    try:
        return "{" + ", ".join(f"{k}={a[k]}" for k in a.keys()) + "}"
    except Exception:  # noqa: BLE001 - only for the message
        return str(a)


# ----------------------------------------------------------------------------------------------
# 4-5. fusion and scheduling
# ----------------------------------------------------------------------------------------------

def lower(mod, info: TargetInfo, lowered: Counter | None = None, workloads: list | None = None):
    """BN folding, the target's activation layout, convtvm legalization and fusion: a module of
    unscheduled fused TIR functions, their constant weights marked layout-free (so that a tuned
    schedule may pre-pack them) when the target's search space says so."""
    import tvm
    from tvm import relax
    lowered = Counter() if lowered is None else lowered
    workloads = [] if workloads is None else workloads
    errors = []
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

    from .tuning import check_log, log_target, open_log
    how, carried_funcs = Counter(), set()
    for tuning_log, carried in logs:
        log = check_log(tuning_log, log_target(tuning_log) if carried else info, must_exist=True)
        before = _scheduled(mod)
        with tempfile.TemporaryDirectory() as tmp:  # the database may rewrite its files: use a copy
            db, _ = open_log(log, tmp)  # without the lines it cannot read (each named in a warning)
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
    if info.kind == "cuda":  # its rules end with dlight's Fallback, which binds any loop nest to threads
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
        if sch.get_consumers(block) and not _is_reduction(sch, block):
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
            if kind == _REDUCE:
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


_REDUCE = 2  # IterVar.CommReduce


def _is_reduction(sch, block) -> bool:
    return any(iv.iter_type == _REDUCE for iv in sch.get(block).iter_vars)


# ----------------------------------------------------------------------------------------------
# compile, call, export, load
# ----------------------------------------------------------------------------------------------

def compile_model(module, example_inputs, target="x86", tuning_log=None, **target_options) -> "Model":
    """Compile a torch.nn.Module for ``example_inputs``' shapes into one executable: its inference.

    x86 runs here; "arm" cross-compiles for aarch64 and runs on the ARM device (the emulated one
    unless ``convtvm.backends.arm.set_remote`` names a board); "cuda" builds here (nvcc) and runs
    where a GPU is. ``target_options``: arm_cpu, cuda_arch, num_cores (any other keyword is a
    ValueError).

    Training mode: the module is exported in eval mode and left as it was given (every submodule's
    training flag restored). A module in training mode whose BatchNorm, InstanceNorm (with running
    statistics), Dropout or RReLU layers are in training mode is refused (``UnsupportedOp``, a
    ValueError, naming the layer): in training mode torch answers with the batch's statistics or
    random drops, which an inference executable cannot reproduce; call ``module.eval()`` first. Any
    other module in training mode (e.g. a freshly made ``nn.Embedding``) compiles as in eval mode: a
    custom submodule that branches on ``self.training`` compiles its eval branch.

    Float32 networks only (integer inputs, such as indices, are fine). An integer input that indexes
    a table (an embedding, ``index_select``, ``x[idx]``, ``gather``) is checked at every call: an
    index outside the table is an IndexError naming the input, raised before the network runs."""
    import tvm
    check_target_options(target_options, "compile_model", ("module", "example_inputs", "target", "tuning_log"))
    info = resolve(target, **target_options)
    if info.kind == "cuda":
        from .backends import cuda_tools as cuda
        cuda.register()  # device code compiled ahead of time, for the target's arch
    example_inputs = list(example_inputs)
    times = {}
    t0 = time.time()
    mod = import_torch(module, example_inputs)
    bounds = index_bounds(mod)
    mod = safe_takes(mod)
    times["import_s"] = time.time() - t0
    t0 = time.time()
    lowered, workloads = Counter(), []
    lowered_mod = lower(mod, info, lowered, workloads)
    logs = (records.network_logs(info) if tuning_log is None else
            [] if tuning_log is False else [(tuning_log, False)])
    mod, how = schedule(lowered_mod, info, logs)
    times["lower_s"] = time.time() - t0
    net = _build(mod, how, info, example_inputs, lowered, bounds, times)
    # another CPU's records, replayed here: the network must still compute torch's result
    if how["carried over"] and not _matches_torch(net, module, example_inputs):
        own = [(log, carried) for log, carried in logs if not carried]
        warnings.warn(f"{', '.join(str(log) for log, c in logs if c)}'s records, replayed for {info.tag}, do not "
                      f"reproduce torch's result on this network: compiled without them", stacklevel=2)
        mod, how = schedule(lowered_mod, info, own)
        net = _build(mod, how, info, example_inputs, lowered, bounds, times)
    net.workloads = workloads
    return net


def _build(mod, how, info: TargetInfo, example_inputs, lowered, bounds, times) -> "Model":
    import tvm
    t0 = time.time()
    outputs = _tensor_specs(mod["main"].ret_ty)
    ex = tvm.compile(mod, target=_with_host(info), relax_pipeline=_vm_pipeline(info))
    times["build_s"] = time.time() - t0
    inputs = [{"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")} for x in example_inputs]
    net = Model(ex, info, inputs, outputs, dict(lowered), dict(how), index_bounds=bounds)
    net.tir, net.compile_times = mod, times
    return net


def _matches_torch(net: "Model", module, example_inputs, tol: float = 1e-4) -> bool:
    """The compiled network gives the module's eval-mode result on ``example_inputs`` (each output
    within ``tol`` of its largest magnitude)."""
    import torch
    with in_eval(module), torch.no_grad():
        ref = module(*example_inputs)
    ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    got = net(*example_inputs)
    got = list(got) if isinstance(got, tuple) else [got]
    return all(float((g - r).abs().max()) <= tol * max(float(r.abs().max()), 1e-30) for g, r in zip(got, ref))


def _with_host(info: TargetInfo):
    import tvm
    if info.kind != "cuda":
        return info.target
    return tvm.target.Target({**json.loads(info.target_json), "host": {"kind": "llvm"}})


def _vm_pipeline(info: TargetInfo):
    import tvm
    from tvm.relax.backend import cpu_generic, cuda
    backend = cuda if info.kind == "cuda" else cpu_generic
    target = _with_host(info)
    return tvm.transform.Sequential(backend.pipeline.dataflow_lower_passes(target)
                                    + backend.pipeline.finalize_passes(target))


def _tensor_specs(ty) -> list:
    if hasattr(ty, "fields"):
        return [spec for f in ty.fields for spec in _tensor_specs(f)]
    return [{"shape": [int(d) for d in ty.shape], "dtype": str(ty.dtype)}]


class Model:
    """A compiled network. ``net(*xs)``: numpy in -> numpy out, torch in -> torch out (a tuple when
    the network returns several tensors). It runs where its target is: in this process (x86), on
    the ARM device over RPC, or on the local GPU; the executable is loaded there on the first call."""

    def __init__(self, lib, target: TargetInfo, inputs: list, outputs: list, lowered_ops: dict, schedules: dict,
                 path: str | None = None, index_bounds: list | None = None):
        self.lib, self.target, self.inputs, self.outputs, self.path = lib, target, inputs, outputs, path
        self.index_bounds = list(index_bounds or [])  # inputs that index a table: checked at every call
        self.lowered_ops, self.schedules = lowered_ops, schedules  # op -> count; how -> TIR functions
        self._vm = self._dev = self._remote = None
        self.workloads, self.tir, self.compile_times = [], None, {}

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(i["shape"])) for i in self.inputs)
        return (f"<convtvm.Model ({shapes}) on {self.target.tag}: {sum(self.lowered_ops.values())} convtvm ops, "
                f"schedules {self.schedules}>")

    @property
    def vm(self):
        """The Relax VM, on the target's device (started on first use)."""
        if self._vm is None:
            self._vm, self._dev = self._open()
        return self._vm

    def _open(self):
        return self.target.backend.open_vm(self)

    def run(self, *arrays) -> list:
        """numpy arrays in, list of numpy arrays out. An input that indexes a table must hold indices
        inside it (IndexError otherwise, before anything runs)."""
        import tvm
        check_indices(self.index_bounds, arrays)
        vm = self.vm
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), self._dev) for a in arrays]
        if self.target.kind == "arm" and self.target.is_remote:  # a remote VM returns remote objects
            vm.set_input("main", *args)
            vm.invoke_stateful("main")
            out = vm.get_outputs("main")
        else:
            out = vm["main"](*args)
        return [o.numpy() for o in _flatten(out)]

    def __call__(self, *xs):
        if len(xs) != len(self.inputs):
            raise ValueError(f"the network takes {len(self.inputs)} input(s), got {len(xs)}")
        for k, (x, spec) in enumerate(zip(xs, self.inputs)):
            dtype = str(x.dtype).replace("torch.", "")
            if list(x.shape) != list(spec["shape"]) or dtype != spec["dtype"]:
                raise ValueError(f"input {k} is {tuple(x.shape)} {dtype}; the network was compiled for "
                                 f"{tuple(spec['shape'])} {spec['dtype']}")
        is_torch = all(type(x).__module__.startswith("torch") for x in xs)
        outs = self.run(*[x.detach().cpu().numpy() if is_torch else np.asarray(x) for x in xs])
        if is_torch:
            import torch
            outs = [torch.from_numpy(o) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def profile(self, *xs, runs: int = 5) -> list[dict]:
        """Where an inference's time goes: each function the VM calls (the TIR kernels, the VM's own
        builtins) with its calls and milliseconds per inference, slowest first, measured with a VM
        instrument around every call (``runs`` inferences after one warm-up). The instrument is a Python
        call before and after each VM call, so the figures add up to more than an uninstrumented
        inference; their shares are what they are for. ``gflops`` where the function's FLOPs are known
        (an in-memory model: ``self.tir``)."""
        import tvm
        from tvm import relax
        if self.target.is_remote or self.target.kind == "cuda":
            raise ValueError(f"profile runs on this machine's CPU; this model's target is {self.target.kind}")
        xs = [x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x) for x in xs]
        check_indices(self.index_bounds, xs)
        vm = relax.VirtualMachine(self.lib, tvm.cpu())  # its own VM: an instrument cannot be removed
        args = [tvm.runtime.tensor(np.ascontiguousarray(x)) for x in xs]
        secs, started = Counter(), {}
        calls = Counter()

        def instrument(func, symbol, before, ret, *_):
            if before:
                started[symbol] = time.perf_counter()
            else:
                secs[symbol] += time.perf_counter() - started[symbol]
                calls[symbol] += 1
            return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

        vm.set_instrument(instrument)
        vm["main"](*args)  # warm-up, not counted
        secs.clear()
        calls.clear()
        for _ in range(runs):
            vm["main"](*args)
        flops = _function_flops(self.tir) if self.tir is not None else {}
        rows = [{"function": name, "calls": calls[name] // runs, "ms": 1e3 * s / runs,
                 "gflops": flops[name] * calls[name] / s / 1e9 if flops.get(name) else None}
                for name, s in secs.items()]
        return sorted(rows, key=lambda r: -r["ms"])

    def export(self, path) -> str:
        """Write ``path`` (a shared library) and ``path.json`` (its manifest), each atomically."""
        fields = {"kind": "model", "inputs": self.inputs, "outputs": self.outputs,
                  "lowered_ops": self.lowered_ops, "schedules": self.schedules, "index_bounds": self.index_bounds}
        self.path = export_with_manifest(path, self.lib, self.target, fields)
        return self.path


def profile_table(rows: list, top: int = 12) -> str:
    """Markdown table of ``Model.profile`` rows: the ``top`` slowest, with their share of the total."""
    total = sum(r["ms"] for r in rows) or 1.0
    lines = ["| function | calls | ms per inference | share | GFLOP/s |", "|---|---|---|---|---|"]
    for r in rows[:top]:
        gf = f"{r['gflops']:.1f}" if r.get("gflops") else "n/a"
        lines.append(f"| {r['function']} | {r['calls']} | {r['ms']:.3f} | {100 * r['ms'] / total:.1f}% | {gf} |")
    return "\n".join(lines)


def _function_flops(mod) -> dict:
    """TIR function name -> FLOPs per call of its reductions: 2 per multiply-add of the convolution,
    the Winograd GEMM and transforms, the pooling sums. An elementwise epilogue is not counted (TVM's
    ``estimate_tir_flops`` counts its every float op: SiLU's polynomial made EfficientNetV2-S's 1x1 convs
    read 25% above their arithmetic), so GFLOP/s compare with the CPU's peak. Functions without a
    reduction are left out."""
    from tvm import tirx
    flops = {}
    for gv, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            n = reduction_flops(func)
            if n:
                flops[gv.name_hint] = n
    return flops


def reduction_flops(func) -> int:
    """2 x the iterations of every reduction block of a TIR function, scheduled or not: a block's
    iteration domain is the whole computation it does, however its loops are split."""
    import tvm
    from tvm import s_tir, tirx
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    total, todo = 0, list(sch.get_child_blocks(sch.get_sblock("root")))
    while todo:
        rv = todo.pop()
        block = sch.get(rv)
        todo += sch.get_child_blocks(rv)
        extents = [iv.dom.extent for iv in block.iter_vars]
        if _is_reduction(sch, rv) and all(isinstance(e, tirx.IntImm) for e in extents):  # symbolic: not counted
            total += 2 * math.prod(int(e) for e in extents)
    return total


def _flatten(out) -> list:
    import tvm
    if isinstance(out, tvm.runtime.Tensor):
        return [out]
    return [t for o in out for t in _flatten(o)]


def load_model(path, manifest: dict) -> Model:
    """The Model exported at ``path`` (``convtvm.load`` has checked its sha256)."""
    if manifest.get("tvm") != _tvm_version():
        raise ValueError(f"{path}: exported with TVM {manifest.get('tvm')}, this is TVM {_tvm_version()}")
    info = resolve(manifest["target"]["tvm_target"])
    with _drop_scope_warnings():
        lib = info.backend.load(info, str(path))
    return Model(lib, info, manifest["inputs"], manifest["outputs"], manifest.get("lowered_ops", {}),
                 manifest.get("schedules", {}), str(path), index_bounds=manifest.get("index_bounds"))


# ----------------------------------------------------------------------------------------------
# tuning and benchmarking a named model (``convtvm tune/bench --model``)
# ----------------------------------------------------------------------------------------------

def model_and_input(name: str, input_size: int, batch: int = 1, seed: int = 0):
    """(the seeded, BN-calibrated model in eval mode, a seeded input batch)."""
    import torch
    from .models import efficientnet
    if name not in efficientnet.V2_CONFIGS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(efficientnet.V2_CONFIGS)}")
    model = efficientnet.seeded_model(name, seed=seed, input_size=input_size)
    x = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed + 1))
    return model, x


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


def tune_model(name: str, input_size: int, target_info, trials: int, log=None, *, batch: int = 1,
               progress=print, seed: int | None = None, trials_per_iter: int = 32,
               exit_on_sigint: bool = False, heaviest: int | None = None, untuned: bool = False,
               names: list[str] | None = None) -> dict:
    """Tune the conv/pool kernels of a named model (after BN folding and fusion) into ``log``: all of
    them, or those named in ``names``, or the ``heaviest`` N (calls x FLOPs), or with ``untuned`` those
    the log has no record for (e.g. the kernels a new fusion made)."""
    from . import tuning
    info = resolve(target_info)
    model, x = model_and_input(name, input_size, batch)
    mod = lower(import_torch(model, [x]), info)
    tasks = extract_tasks(mod, info)
    log = tuning.check_log(log or tuning.default_log(info), info, must_exist=False)
    chosen = choose_tasks(tasks, log, heaviest, untuned, names)
    total = sum(t.count * t.flops for t in tasks)
    progress(f"{name} at {input_size}x{input_size}, batch {batch}: {len(tasks)} unique conv/pool tasks, "
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
    from . import tuning
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
    if untuned and (Path(log) / tuning.DB_FILES[0]).exists():
        lines = tuning.workload_lines_of(Path(log), [t.mod for t in chosen])
        with_rows = {r[0] for r in tuning._rows(Path(log))}
        recorded = {k for line, k in lines.items() if line in with_rows}
        chosen = [t for k, t in enumerate(chosen) if k not in recorded]
    return chosen


def tune_tasks(tasks: list[Task], info: TargetInfo, trials: int, log, *, progress=print, seed=None,
               trials_per_iter: int = 32, exit_on_sigint: bool = False) -> dict:
    """tuning's engine on the model's TIR tasks; the gradient task scheduler weighs each task by
    its call count. The constant weights are layout-free (``lower``): a record may pre-pack them."""
    from . import tuning
    if not tasks:
        raise ValueError("nothing to tune: the model has no convolution or pooling task")
    return tuning.tune_modules([(t.name, t.mod, t.flops) for t in tasks], info, trials, log,
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
    there, instead of dropping out because new records are faster alone (in the README: after one
    tuning round, the shipped records of all the tasks tuned had left the 3 fastest alone). ``log`` is
    rewritten atomically: the model's tasks keep one record each, every other record stays. Run it on a
    quiet machine.
    Returns task name -> (rank chosen, ms a call by rank)."""
    import statistics

    from . import tuning
    info = resolve(target_info)
    if info.is_remote or info.kind == "cuda":
        raise ValueError(f"pick_in_network profiles on this machine's CPU; target {info.kind} does not run here")
    log = tuning.check_log(log, info, must_exist=True)
    if int(candidates) < 1 or int(rounds) < 1:
        raise ValueError(f"candidates={candidates} and rounds={rounds} must be positive")
    example_inputs = list(example_inputs)
    tasks = extract_tasks(lower(import_torch(module, example_inputs), info), info)
    task_of = tuning.workload_lines_of(log, [t.mod for t in tasks])
    if not task_of:
        raise ValueError(f"{log} has no record for this network's tasks: tune it first")
    rows = tuning._rows(log)
    others = [r for r in rows if r[0] not in task_of]
    with tempfile.TemporaryDirectory(prefix="convtvm_pick_") as tmp:
        pool = Path(tmp) / "pool"
        shutil.copytree(log, pool)
        tuning.write_rows(pool, [r for r in rows if r[0] in task_of])
        tuning.prune(pool, keep=candidates, progress=progress)  # the verified best of each task
        ranked: dict = {}
        for wl, rec in sorted(tuning._rows(pool), key=tuning.row_secs):
            ranked.setdefault(wl, []).append([wl, rec])
        if incumbent is not None:
            held: dict = {}
            for wl, rec in sorted(_rows_of_tasks(Path(incumbent), tasks, task_of)[0], key=tuning.row_secs):
                held.setdefault(wl, rec)  # the incumbent's fastest record of each task
            for wl, rec in held.items():
                trace = json.dumps(rec[0])
                rest = [r for r in ranked.get(wl, []) if json.dumps(r[1][0]) != trace]
                ranked[wl] = ([[wl, rec]] + rest)[:candidates]
        if not ranked:
            raise ValueError(f"no record in {log} of this network's tasks reproduces the unscheduled TIR")
        depth = max(len(v) for v in ranked.values())
        order = list(ranked)  # task i's rank-q record runs in network (q - i) % depth: network_rank

        nets = []
        for k in range(depth):
            trial_log = Path(tmp) / f"net{k}"
            shutil.copytree(log, trial_log)
            tuning.write_rows(trial_log, others + [ranked[wl][network_rank(k, i, depth, len(ranked[wl]))]
                                                   for i, wl in enumerate(order)])
            nets.append(compile_model(module, example_inputs, info, tuning_log=trial_log))
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
        picked[wl] = [wl, [rs[k][1][0], [round(per[k] / 1e3, 9)], *rs[k][1][2:]]]
        result[t.name] = (k, per)
        progress(f"  {t.name}: ms a call in the network by rank: {' '.join(f'{p:.3f}' for p in per)} -> rank {k}")
    if same:
        progress(f"after that, the same kernel read up to {100 * max(same):.0f}% apart between networks "
                 f"(median {100 * statistics.median(same):.0f}%, {len(same)} tasks with one record)")
    tuning.write_rows(log, others + list(picked.values()))
    return result


def network_rank(k: int, i: int, depth: int, records: int) -> int:
    """Which of task i's records network k of ``depth`` runs in ``pick_in_network``: rank (k + i) mod
    depth (its last when it has fewer). The ranks rotate over the networks from task to task, so each
    network holds a mix of ranks: separately compiled copies of the same network run the same kernel
    5-13% apart as a whole (EfficientNetV2-S, 2026-12-03), and with rank k always in network k that
    difference had gone to one rank in every task."""
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
    rounds; of those, the fastest. Networks compiled apart differ by themselves: on EfficientNetV2-S
    the same kernel read up to 30% apart between networks, so a smaller difference decides nothing."""
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
    log's (``tuning.prune``'s ``retime``) and replace them: logged times from another day (this VM's
    speed drifts 2x between days) would otherwise rank a slower new record ahead of a faster old one."""
    from . import tuning
    worklog, into = Path(worklog), Path(into)
    mine = tuning.workload_lines_of(worklog, [t.mod for t in tasks])
    rows = [r for r in tuning._rows(worklog) if r[0] in mine]
    if not rows:
        raise ValueError(f"{worklog} has no records of these {len(tasks)} tasks")
    into_exists = (into / tuning.DB_FILES[1]).exists()
    have = set(tuning.record_keys(into)) if into_exists else set()
    book_file, entry = worklog / "counted_trials.json", f"{trials_key} into {into.resolve()}"
    book = json.loads(book_file.read_text()) if book_file.exists() else {}
    counted = set(book.get(entry, []))
    measured = [(_record_digest(k), k in have) for r, k in zip(rows, tuning.record_keys(worklog, rows)) if r[1][1]]
    new = sum(1 for d, held in measured if not held and d not in counted)
    trials = (_recorded_trials(into, trials_key) or 0) + new
    with tempfile.TemporaryDirectory(prefix="convtvm_model_") as tmp:
        target = into
        if retime and into_exists:  # into's records of these tasks join the working log's, to be re-timed
            target = Path(tmp) / "into"
            shutil.copytree(into, target)
            theirs, lines = _rows_of_tasks(target, tasks, mine)
            tuning.write_rows(target, [r for r in tuning._rows(target) if r[0] not in lines])
            rows = tuning.unique_rows(worklog, rows + theirs)
        only = Path(tmp) / "model"  # worklog with these tasks' records alone
        shutil.copytree(worklog, only)
        tuning.write_rows(only, rows)
        pruned = Path(tmp) / "pruned"
        kept = tuning.prune(only, keep=keep, out=pruned, retime=retime, progress=progress)
        tuning.merge(pruned, target, trials={trials_key: trials}, progress=progress)
        if target != into:
            tuning._sync(target, into, tuning.log_target(into))
            tuning._copy_atomic(target / "trials.json", into / "trials.json")
    # every measured record is booked, those ``into`` held too: one it drops later is no new trial
    write_json_atomic(book_file, {**book, entry: sorted(counted.union(d for d, _ in measured))})
    progress(f"{trials_key}: {new} new trials, {trials} in all")
    return kept, trials


def _rows_of_tasks(log: Path, tasks: list[Task], worklog_lines: dict) -> tuple[list, set]:
    """``log``'s records of ``tasks`` as rows of a working log whose workload lines are
    ``worklog_lines`` (line -> task index), and the lines of ``log`` they came from (tasks the working
    log does not hold are left out)."""
    from . import tuning
    line_of_task = {k: line for line, k in worklog_lines.items()}
    theirs = {line: k for line, k in tuning.workload_lines_of(log, [t.mod for t in tasks]).items()
              if k in line_of_task}
    rows = [[line_of_task[theirs[wl]], rec] for wl, rec in tuning._rows(log) if wl in theirs]
    return rows, set(theirs)


def _record_digest(key) -> str:
    """A short fingerprint of a ``tuning.record_keys`` key (a workload hash and a trace)."""
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]


def model_trials_key(name: str, input_size: int, batch: int = 1) -> str:
    """The key under which a shipped log's trials.json records how many trials a model's tuning took."""
    return f"model:{name}:{input_size}x{input_size}:batch{batch}"


def _recorded_trials(log, key: str) -> int | None:
    """The trial count a shipped log's trials.json records under ``key`` (a pruned log keeps only
    the best records, so counting them would say how many tasks, not how many trials)."""
    meta = Path(log) / "trials.json"
    return json.loads(meta.read_text()).get(key) if meta.exists() else None


def _log_trials(tasks: list[Task], info: TargetInfo, log) -> int:
    """Measured records in ``log`` for these tasks."""
    from .tuning import _target_key, open_log
    mine = _target_key(json.loads(info.target_json))
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        db, _ = open_log(log, tmp)
        for t in tasks:
            if db.has_workload(t.mod):
                n += sum(1 for r in db.get_top_k(db.commit_workload(t.mod), 1 << 30)
                         if r.run_secs and _target_key(r.target.export()) == mine)
    return n


def bench_model(name: str, input_size: int, target_info, log=None, rounds: int = 15, *, batch: int = 1,
                progress=print) -> dict:
    """Time tuned and untuned convtvm, PyTorch eager, torch.compile and (if importable) ONNX Runtime
    on one network, each called as its users call it (``net(x)`` and ``model(x)`` on a torch tensor,
    ``session.run`` on a numpy array), in this process, with the same thread count, interleaved
    rounds, medians (schema "convtvm.bench/2"). ``log``: the tuned side's records, as
    ``compile_model``'s ``tuning_log`` (None: the default records)."""
    import torch
    from . import bench
    info = resolve(target_info)
    if info.is_remote:
        raise ValueError(f"bench runs on this machine; target {info.kind} is not local here")
    threads = bench.same_threads()
    model, x = model_and_input(name, input_size, batch)
    with torch.no_grad():
        ref = model(x).numpy()
    notes, runs, trials = [], {}, None
    progress(f"compiling {name} ({input_size}x{input_size}, batch {batch}) for {info.tag} ...")
    runs["convtvm_untuned"] = compile_model(model, [x], info, tuning_log=False)
    tuned = compile_model(model, [x], info, tuning_log=log)
    applied = tuned.schedules.get("tuned", 0) + tuned.schedules.get("carried over", 0)
    sources = [Path(log)] if log else [lg for lg, _ in records.network_logs(info)]
    source = ", ".join(map(str, sources))
    if applied:
        runs["convtvm_tuned"] = tuned
        key = model_trials_key(name, input_size, batch)
        trials = next((t for t in (_recorded_trials(lg, key) for lg in sources) if t is not None), None)
        if trials is None and log:  # a working log: count its records for this network's tasks
            trials = _log_trials(extract_tasks(lower(import_torch(model, [x]), info), info), info, log)
        notes.append(f"convtvm_tuned: {applied} of {sum(tuned.schedules.values())} TIR functions from {source} "
                     f"({', '.join(f'{k} {v}' for k, v in tuned.schedules.items())})")
    else:
        notes.append(f"convtvm_tuned: no record for this model's kernels ({source or 'no log'})")
    with torch.no_grad():
        runs["torch"] = model
        try:
            compiled = torch.compile(model)
            compiled(x)  # compiles
            runs["torch_compile"] = compiled
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            notes.append(f"torch_compile skipped: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
        calls = {k: (lambda f=f: f(x)) for k, f in runs.items()}
        ort = _onnxruntime_runner(model, x, notes)
        if ort:
            calls["onnxruntime"] = ort
        errors = {k: float(np.abs(np.asarray(f()) - ref).max() / max(np.abs(ref).max(), 1e-30))
                  for k, f in calls.items()}
        contenders = {}
        for k, f in calls.items():
            est = min(_seconds(f, 1) for _ in range(3))  # warm-up + estimate
            contenders[k] = lambda f=f, n=bench._calls_for(est): _seconds(f, n)
        ms_ = bench.time_interleaved(contenders, rounds)
    timings = {k: ms_.get(k) for k in ("convtvm_tuned", "convtvm_untuned", "torch", "torch_compile", "onnxruntime")}
    profiled = tuned if "convtvm_tuned" in runs else None
    row = {"name": name, "input_size": input_size, "batch": batch, "trials": trials, "timings_ms": timings,
           "max_rel_error": errors, "notes": notes,
           "profile": profiled.profile(x.numpy()) if profiled else []}  # after the timing: it is no contender
    for k, v in timings.items():
        progress(f"  {k:16s} {f'{v:9.3f} ms' if v is not None else '   not measured'}"
                 + (f"   err {errors[k]:.1e}" if k in errors else ""))
    if row["profile"]:
        progress("  where tuned convtvm's time goes (instrumented; the slowest functions):")
        progress(profile_table(row["profile"], top=12))
    for note in notes:
        progress(f"  note: {note}")
    peak = bench.peak_gflops(info.kind, threads)
    return {"schema": bench.SCHEMA, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": bench.machine(), "target": info.kind, "target_detail": json.loads(info.target_json),
            "emulated": False, "threads": threads, "peak_gflops": peak, "peak_source": "given" if peak else None,
            "timed_as": {"convtvm_tuned": "net(x) on a torch tensor", "convtvm_untuned": "net(x), untuned schedules",
                         "torch": "model(x) in eval, no_grad", "torch_compile": "torch.compile(model)(x)",
                         "onnxruntime": "InferenceSession.run on a numpy array"},
            "results": [], "models": [row], "tuning_curves": []}


def _seconds(f, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        f()
    return (time.perf_counter() - t0) / number


def _onnxruntime_runner(model, x, notes: list):
    try:
        import onnxruntime as ort
    except ImportError:
        notes.append("onnxruntime: not installed (pip install onnxruntime onnx)")
        return None
    try:
        import torch
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            torch.onnx.export(model, (x,), path, dynamo=False)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = cpu_threads()
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return lambda: sess.run(None, feed)[0]
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        notes.append(f"onnxruntime skipped: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
        return None


@contextlib.contextmanager
def _drop_scope_warnings():
    """TVM 0.27 logs a "Scope Loaded:" warning per constant when it loads an executable (hundreds
    for a network): drop those lines from stderr, keep everything else."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            sys.stderr.writelines(ln for ln in f.read().decode(errors="replace").splitlines(keepends=True)
                                  if "Scope Loaded:" not in ln)
