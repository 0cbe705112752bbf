"""Stage 3 of a network's compilation: convtvm's legalizations for Relax's convolution and pooling ops.

``convtvm_legalizations`` is a ``customize_legalize_map`` for ``LegalizeOps``: every
``relax.nn.conv1d/2d/3d``, ``conv1d/2d/3d_transpose``, ``max_pool*``, ``avg_pool*``,
``adaptive_avg_pool*`` to 1x1 and ``mean`` over all spatial axes builds a convtvm ``Workload`` from
the op's attributes (which validates them) and emits ``call_te`` on ``te_ops``; attributes convtvm
does not support raise ``UnsupportedOp``. Where the target's ``graph.winograd`` says so, a 3x3
stride-1 conv2d (NHWC, one group, constant weight) becomes ``te_ops.conv2d_winograd``, its weight
transformed once, at compile time. ``epilogue_legalizations`` gives the target's choice of sigmoid
and SiLU. Every other op keeps TVM's default legalization.
"""

from __future__ import annotations

from collections import Counter

from ..targets import TargetInfo
from .importer import NODE_NAMES, UnsupportedOp

CONVTVM_OPS = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d", "relax.nn.conv1d_transpose",
               "relax.nn.conv2d_transpose", "relax.nn.conv3d_transpose", "relax.nn.max_pool1d",
               "relax.nn.max_pool2d", "relax.nn.max_pool3d", "relax.nn.avg_pool1d", "relax.nn.avg_pool2d",
               "relax.nn.avg_pool3d", "relax.nn.adaptive_avg_pool1d", "relax.nn.adaptive_avg_pool2d",
               "relax.nn.adaptive_avg_pool3d", "relax.mean")
PREFIX = "convtvm_"  # name of every PrimFunc built from convtvm's TE (fused ones contain it)
CONV_OPS = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d",
            "relax.nn.conv1d_transpose", "relax.nn.conv2d_transpose", "relax.nn.conv3d_transpose")


def int_tuple(v) -> tuple[int, ...]:
    """A sequence of TVM integers (or ints) as a tuple of Python ints."""
    return tuple(int(x) for x in v)


def static_shape(expr) -> tuple[int, ...]:
    """The static shape of a Relax tensor expression; TypeError or ValueError when it is not static."""
    return int_tuple(expr.ty.shape)


def _check_dtype(call):
    dtype = str(call.args[0].ty.dtype)
    out = str(call.ty.dtype)
    if dtype != out:
        raise UnsupportedOp(f"input dtype {dtype} with output dtype {out} (convtvm computes in the input dtype)")
    return dtype


def conv_workload(call):
    """The convtvm Workload of a Relax convolution call. Raises UnsupportedOp for layouts convtvm does
    not cover, and ValueError (from ``workload``) for attributes its kernels refuse."""
    from ..variants import workload
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
    dshape, wshape = static_shape(call.args[0]), static_shape(call.args[1])
    c_axis = data_layout.index("C")
    spatial = tuple(dshape[data_layout.index(ch)] for ch in data_layout if ch not in "NC")
    kernel = tuple(wshape[kernel_layout.index(ch)] for ch in kernel_layout if ch not in "OI")
    groups = int(a.groups)
    pad = int_tuple(a.padding)
    params = dict(in_channels=dshape[c_axis], kernel_size=kernel, stride=int_tuple(a.strides),
                  padding=tuple(zip(pad[:ndim], pad[ndim:])), dilation=int_tuple(a.dilation), groups=groups)
    if transposed:
        params["out_channels"] = wshape[kernel_layout.index("O")] * groups
        params["output_padding"] = int_tuple(a.output_padding)
        name = f"conv_transpose{ndim}d"
    else:
        params["out_channels"] = wshape[kernel_layout.index("O")]
        name = f"conv{ndim}d"
        if ndim == 2:
            params["layout"] = data_layout
    return workload(name, batch=dshape[0], input_size=spatial, dtype=dtype, **params)


def _pool_workload(call):
    from ..variants import workload
    a = call.attrs
    layout = str(a.layout)
    ndim = len(layout) - 2
    spatial_axes = "DHW"[3 - ndim:]
    if layout not in ("NC" + spatial_axes, "N" + spatial_axes + "C") or str(a.out_layout) != layout:
        raise UnsupportedOp(f"layout {layout} (out {a.out_layout}); convtvm pools NC{spatial_axes} "
                            f"or N{spatial_axes}C")
    dtype = _check_dtype(call)
    dshape = static_shape(call.args[0])
    if layout.endswith("C"):  # described (and computed, see _channels_first) on the channels-first view
        dshape = (dshape[0], dshape[-1], *dshape[1:-1])
    pad = int_tuple(a.padding)
    if pad[:ndim] != pad[ndim:]:
        raise UnsupportedOp(f"asymmetric padding {pad}; convtvm pools with torch's symmetric padding")
    kind = "max" if "max" in call.op.name else "avg"
    params = dict(channels=dshape[1], kernel_size=int_tuple(a.pool_size), stride=int_tuple(a.strides),
                  padding=pad[:ndim], ceil_mode=bool(a.ceil_mode))
    if kind == "max":
        params["dilation"] = int_tuple(a.dilation)
    else:
        if any(d != 1 for d in int_tuple(a.dilation)):
            raise UnsupportedOp(f"dilation {int_tuple(a.dilation)} for average pooling")
        params["count_include_pad"] = bool(a.count_include_pad)
    return workload(f"{kind}_pool{ndim}d", batch=dshape[0], input_size=dshape[2:], dtype=dtype, **params)


def _global_pool_workload(call):
    """adaptive_avg_pool2d to 1x1 or a mean over both spatial axes, in NCHW or NHWC:
    (workload, channels_last), or None when the call is not a global pooling."""
    from ..variants import workload
    dshape = static_shape(call.args[0])
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
        size = int_tuple(a.output_size) if a.output_size is not None else (None,)
        if tuple(size) not in ((1, 1), (1,)):
            return None
    n, c, h, w = (dshape[0], dshape[3], *dshape[1:3]) if channels_last else dshape
    return workload("global_avg_pool2d", batch=n, input_size=(h, w), dtype=str(call.args[0].ty.dtype),
                    channels=c), channels_last


def _te_of(w):
    """The convtvm TE compute of a single-stage workload, as a function of its input tensors."""
    from .. import te_ops
    from ..params import ConvSpec, GlobalPoolSpec, PoolSpec
    (st,) = w.stages
    if isinstance(st, ConvSpec):
        return lambda data, weight: te_ops.conv(data, weight, st, "")
    if isinstance(st, PoolSpec):
        return lambda data: te_ops.pool(data, st, "")
    assert isinstance(st, GlobalPoolSpec)
    return lambda data: te_ops.global_avg_pool(data, st, "")


def computed_on_nchw_view(call) -> bool:
    """Channels-last data (NWC, NHWC, NDHWC) of a pooling or convolution that convtvm defines
    channels-first: every one but conv2d with NHWC/HWIO, which convtvm computes natively."""
    a, op = call.attrs, call.op.name
    layout = str(a.data_layout) if op in CONV_OPS else str(a.layout)
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

    from ..te_ops import sigmoid

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

    from .. import te_ops
    if not takes_winograd(call, w, winograd):
        return None
    (st,), weight, tile = w.stages, call.args[1], winograd["tile"]
    transformed = relax.const(te_ops.winograd_weight(weight.value.numpy(), tile))
    return bb.call_te(lambda data, u: te_ops.conv2d_winograd(data, u, st, tile, ""), call.args[0], transformed,
                      primfunc_name_hint=PREFIX + "conv2d_winograd")


def takes_winograd(call, w, winograd: dict) -> bool:
    """Whether the convolution ``call`` (workload ``w``) runs as Winograd under the target's ``winograd``
    settings: a 3x3 stride-1 HWIO conv2d with a constant weight and at least ``min_channels``."""
    from tvm.ir.expr import Constant

    from .. import te_ops
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
        return emit_convtvm(bb, call, lowered, workloads, errors, winograd)

    return {op: legalize for op in CONVTVM_OPS}


def emit_convtvm(bb, call, lowered: Counter, workloads: list, errors: list, winograd: dict | None = None,
                 input_scale=None):
    """``call`` (a conv or pool op) as a call_te on convtvm's TE; with ``input_scale`` (a forward
    convolution computed in its own layout, see ``passes.fold_input_scales``), on ``call``'s data times it."""
    op = call.op.name
    try:
        found = _workload_of(call)
    except ValueError as e:
        errors.append(UnsupportedOp(f"convtvm cannot lower {op} with attributes {_attrs_text(call)}: {e}"))
        raise errors[-1] from None
    if found is None:  # not a global pooling (e.g. a mean over channels): TVM's default
        return _default_legalize(op)(bb, call)
    w, channels_last = found
    expected, compute, produced = static_shape(call), _te_of(w), tuple(w.output_shape)
    if w.variant == "global_avg_pool2d" and channels_last:  # convtvm's pooling on the NCHW view
        compute = _channels_first(compute)
    elif computed_on_nchw_view(call):
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
        from .. import te_ops
        (st,) = w.stages
        return bb.call_te(lambda data, weight, scale: te_ops.conv(data, weight, st, "", input_scale=scale),
                          *call.args[:2], input_scale, primfunc_name_hint=PREFIX + w.variant + "_scaled_input")
    fast = _winograd_call(bb, call, w, winograd) if winograd else None
    if fast is not None:
        return fast
    return bb.call_te(compute, *call.args[:2 if op in CONV_OPS else 1], primfunc_name_hint=PREFIX + w.variant)


def _workload_of(call):
    """(the convtvm Workload of a conv or pool ``call``, whether it is a channels-last global pooling),
    or None for a mean that is no global pooling. ValueError for attributes convtvm does not cover."""
    op = call.op.name
    if op in CONV_OPS:
        return conv_workload(call), False
    if "pool" in op and "adaptive" not in op:
        return _pool_workload(call), False
    return _global_pool_workload(call)


def check_calls(mod) -> None:
    """UnsupportedOp for the first convolution or pooling call of ``mod``'s main whose attributes
    convtvm's kernels do not cover, naming its node in the source graph. Only for a module the
    importer made (it records the nodes: ``importer.NODE_NAMES``), whose layouts are the frontends'
    own; any other module is checked where it is legalized (after the target's layout conversion)."""
    from tvm import relax
    if mod.attrs is None or NODE_NAMES not in mod.attrs:
        return
    names = dict(mod.attrs[NODE_NAMES])
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            call = b.value
            if not (isinstance(call, relax.Call) and getattr(call.op, "name", None) in CONVTVM_OPS):
                continue
            try:
                _workload_of(call)
            except ValueError as e:
                node = names.get(b.var.name)
                where = f" (node {str(node)!r})" if node is not None else ""
                raise UnsupportedOp(f"convtvm cannot lower {call.op.name}{where} with attributes "
                                    f"{_attrs_text(call)}: {e}") from None


def epilogue_legalizations(info: TargetInfo) -> dict:
    """Elementwise epilogues: ReLU and clip (ReLU6, Hardtanh, Hardsigmoid) keep a NaN as torch does, and
    the target's choice of sigmoid (schedules/<target>.json "graph")."""
    out = {"relax.nn.relu": _keeping_nan("relu"), "relax.clip": _keeping_nan("clip")}
    if info.config.get("graph", {}).get("fast_sigmoid", False):
        out.update({"relax.sigmoid": _fast_sigmoid, "relax.nn.silu": _fast_sigmoid})
    return out


def _keeping_nan(name: str):
    """The legalization of ``relax.nn.<name>`` / ``relax.<name>`` (TVM's topi function), with a NaN input
    element passed through: topi's max and min drop a NaN (max(NaN, 0) is 0), torch's keep it."""
    def legalize(bb, call):
        from tvm import te, tirx, topi
        fn = topi.nn.relu if name == "relu" else topi.clip

        def compute(x, *bounds):
            y = fn(x, *bounds)
            return te.compute(x.shape, lambda *i: tirx.Select(tirx.isnan(x(*i)), x(*i), y(*i)), name=name)
        return bb.call_te(compute, *call.args, primfunc_name_hint=name)
    return legalize


def _default_legalize(op_name: str):
    import tvm
    return tvm.ir.Op.get(op_name).get_attr("FLegalize")


def _attrs_text(call) -> str:
    a = call.attrs
    try:
        return "{" + ", ".join(f"{k}={a[k]}" for k in a.keys()) + "}"
    except Exception:  # noqa: BLE001 - only for the message
        return str(a)
