"""The variant registry and the Workload: one entry per convolution variant.

A variant turns user parameters (torch names) into a list of stages (``ConvSpec``, ``PoolSpec``,
``ShuffleSpec``, ``GlobalPoolSpec``). Everything else -- input shapes, output shape, FLOPs, the TE
compute, the PyTorch reference, random inputs -- is derived from the stages by the Workload, so
no variant has a pipeline of its own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .params import (INT32_MAX, LAYOUTS, ConvSpec, GlobalPoolSpec, PoolSpec, ShuffleSpec, boolean, dtype_name,
                     is_channels_last, layout_name, pad_pairs, per_dim, plain, positive_int, positive_real)

# Parameters every variant family accepts, with their defaults. layout=None: channels-first (NCW, NCHW,
# NCDHW by rank); the channels-last name (NWC, NHWC, NDHWC) computes the same in channels-last tensors.
_CONV = dict(in_channels=16, out_channels=16, kernel_size=3, stride=1, padding=0, dilation=1, groups=1,
             bias=False, layout=None)
_POOL = dict(channels=16, kernel_size=2, stride=None, padding=0)


@dataclass(frozen=True)
class Variant:
    name: str
    ndim: int
    defaults: dict
    make: Callable[[dict], list]  # normalised params -> stages
    doc: str


REGISTRY: dict[str, Variant] = {}


def register(name: str, ndim: int, defaults: dict, doc: str):
    def wrap(make):
        REGISTRY[name] = Variant(name, ndim, dict(defaults), make, doc)
        return make
    return wrap


def variants() -> list[str]:
    return list(REGISTRY)


# ----------------------------------------------------------------------------------------------
# Stage builders shared by the variants
# ----------------------------------------------------------------------------------------------

def conv_spec(p: dict, ndim: int, **override) -> ConvSpec:
    """A ConvSpec from user params; ``override`` replaces any user value (already normalised ok)."""
    q = {**p, **override}
    kernel = per_dim("kernel_size", q["kernel_size"], ndim)
    stride = per_dim("stride", q["stride"], ndim)
    dilation = per_dim("dilation", q["dilation"], ndim)
    transposed = q.get("transposed", False)
    padding = pad_pairs(q["padding"], ndim, kernel, dilation, stride)
    if transposed and isinstance(q["padding"], str):
        raise ValueError(f"padding={q['padding']!r} is not supported for transposed convolutions")
    return ConvSpec(
        ndim=ndim, in_channels=positive_int("in_channels", q["in_channels"]),
        out_channels=positive_int("out_channels", q["out_channels"]), kernel=kernel, stride=stride,
        padding=padding, dilation=dilation, groups=positive_int("groups", q["groups"]),
        bias=boolean("bias", q["bias"]), transposed=transposed,
        output_padding=per_dim("output_padding", q.get("output_padding", 0), ndim, minimum=0),
        layout=LAYOUTS[ndim][0] if q["layout"] is None else layout_name(q["layout"], ndim),
        epilogue=q.get("epilogue", "none"), bn_eps=positive_real("bn_eps", q.get("bn_eps", 1e-5)))


def pool_spec(p: dict, ndim: int, kind: str) -> PoolSpec:
    kernel = per_dim("kernel_size", p["kernel_size"], ndim)
    stride = kernel if p["stride"] is None else per_dim("stride", p["stride"], ndim)
    padding = plain(p["padding"])
    if isinstance(padding, (tuple, list)) and any(isinstance(v, (tuple, list)) for v in padding):
        raise ValueError(f"padding={padding!r} must be symmetric for pooling (torch supports no per-side pads)")
    return PoolSpec(ndim=ndim, kind=kind, kernel=kernel, stride=stride,
                    padding=per_dim("padding", padding, ndim, minimum=0),
                    dilation=per_dim("dilation", p.get("dilation", 1), ndim),
                    ceil_mode=boolean("ceil_mode", p.get("ceil_mode", False)),
                    count_include_pad=boolean("count_include_pad", p.get("count_include_pad", True)))


def _axis_split(p: dict):
    """For the separable variants: the 2D kernel/stride/padding/dilation split into an H-only and a
    W-only part."""
    base = conv_spec(p, 2, groups=1)
    h = dict(kernel_size=(base.kernel[0], 1), stride=(base.stride[0], 1), dilation=(base.dilation[0], 1),
             padding=(base.padding[0], (0, 0)))
    w = dict(kernel_size=(1, base.kernel[1]), stride=(1, base.stride[1]), dilation=(1, base.dilation[1]),
             padding=((0, 0), base.padding[1]))
    return h, w


# ----------------------------------------------------------------------------------------------
# The variants
# ----------------------------------------------------------------------------------------------

for _nd in (1, 2, 3):
    register(f"conv{_nd}d", _nd, _CONV,
             f"General {_nd}D convolution: padding, stride, dilation, groups, bias, {' or '.join(LAYOUTS[_nd])}")(
        lambda p, nd=_nd: [conv_spec(p, nd)])
    register(f"group_conv{_nd}d", _nd, {**_CONV, "groups": 4}, f"Grouped {_nd}D convolution")(
        lambda p, nd=_nd: [conv_spec(p, nd)])
    register(f"depthwise_conv{_nd}d", _nd,
             {k: v for k, v in _CONV.items() if k not in ("out_channels", "groups")} | {"channel_multiplier": 1},
             f"Depthwise {_nd}D convolution (groups = in_channels) with a channel multiplier")(
        lambda p, nd=_nd: [conv_spec(p, nd, groups=p["in_channels"],
                                     out_channels=p["in_channels"] * positive_int("channel_multiplier",
                                                                                  p["channel_multiplier"]))])
    register(f"conv_transpose{_nd}d", _nd, {**_CONV, "output_padding": 0},
             f"Transposed {_nd}D convolution with stride, padding, output_padding, dilation, groups")(
        lambda p, nd=_nd: [conv_spec(p, nd, transposed=True)])
    register(f"max_pool{_nd}d", _nd, {**_POOL, "dilation": 1, "ceil_mode": False}, f"{_nd}D max pooling")(
        lambda p, nd=_nd: [pool_spec(p, nd, "max")])
    register(f"avg_pool{_nd}d", _nd, {**_POOL, "ceil_mode": False, "count_include_pad": True},
             f"{_nd}D average pooling")(lambda p, nd=_nd: [pool_spec(p, nd, "avg")])

_POINTWISE = {k: v for k, v in _CONV.items() if k not in ("kernel_size", "padding", "dilation")}


@register("pointwise_conv2d", 2, {k: v for k, v in _POINTWISE.items() if k != "groups"}, "1x1 convolution")
def _pointwise(p):
    return [conv_spec(p, 2, kernel_size=1, padding=0, dilation=1, groups=1)]


@register("pointwise_group_conv2d", 2, {**_POINTWISE, "groups": 4}, "Grouped 1x1 convolution (ShuffleNet)")
def _pointwise_group(p):
    return [conv_spec(p, 2, kernel_size=1, padding=0, dilation=1)]


@register("dilated_conv2d", 2, {**_CONV, "dilation": 2, "padding": 2}, "Dilated (atrous) 2D convolution")
def _dilated(p):
    return [conv_spec(p, 2)]


@register("conv2d_bn_silu", 2, {**_CONV, "bn_eps": 1e-3},
          "2D convolution + inference batch-norm folded into the epilogue + SiLU")
def _conv_bn_silu(p):
    return [conv_spec(p, 2, epilogue="bn_silu")]


@register("depthwise_separable_conv2d", 2, {k: v for k, v in _CONV.items() if k != "groups"},
          "Depthwise kxk then pointwise 1x1 (MobileNet), as one workload")
def _dw_separable(p):
    c = p["in_channels"]
    return [conv_spec(p, 2, out_channels=c, groups=c),
            conv_spec(p, 2, in_channels=c, kernel_size=1, stride=1, padding=0, dilation=1, groups=1)]


@register("spatially_separable_conv2d", 2, {k: v for k, v in _CONV.items() if k != "groups"},
          "kx1 convolution then 1xk convolution")
def _spatially_separable(p):
    h, w = _axis_split(p)
    return [conv_spec(p, 2, groups=1, **h), conv_spec(p, 2, in_channels=p["out_channels"], groups=1, **w)]


@register("flattened_conv2d", 2, {k: v for k, v in _CONV.items() if k != "groups"},
          "Lateral 1x1 across channels, then vertical kx1 and horizontal 1xk per channel")
def _flattened(p):
    h, w = _axis_split(p)
    c = p["out_channels"]
    return [conv_spec(p, 2, kernel_size=1, stride=1, padding=0, dilation=1, groups=1),
            conv_spec(p, 2, in_channels=c, groups=c, **h),
            conv_spec(p, 2, in_channels=c, groups=c, **w)]


@register("shuffle_group_conv2d", 2, {**_CONV, "groups": 4},
          "Grouped convolution followed by a channel shuffle (ShuffleNet)")
def _shuffle_group(p):
    return [conv_spec(p, 2), ShuffleSpec(positive_int("groups", p["groups"]), is_channels_last(p["layout"]))]


@register("channel_shuffle", 2, {"channels": 16, "groups": 4, "layout": None}, "Channel shuffle (ShuffleNet)")
def _channel_shuffle(p):
    return [ShuffleSpec(positive_int("groups", p["groups"]), is_channels_last(p["layout"]))]


@register("global_avg_pool2d", 2, {"channels": 16}, "Global average pooling to 1x1")
def _global_avg_pool(p):
    return [GlobalPoolSpec(2)]


# ----------------------------------------------------------------------------------------------
# Workload
# ----------------------------------------------------------------------------------------------

_COMMON = ("batch", "input_size", "dtype")


@dataclass(frozen=True)
class Workload:
    """A variant with concrete parameters: shapes, FLOPs, TE compute and PyTorch reference."""

    variant: str
    params: dict  # normalised user parameters (JSON-able)
    stages: tuple = field(repr=False)

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return REGISTRY[self.variant].ndim

    @property
    def dtype(self) -> str:
        return self.params["dtype"]

    @property
    def batch(self) -> int:
        return self.params["batch"]

    @property
    def channels_last(self) -> bool:
        return is_channels_last(self.params.get("layout") or "NCHW")

    def _flow(self):
        """(stage, input (C, spatial)) pairs, then the final (C, spatial)."""
        p = self.params
        c = p.get("in_channels", p.get("channels"))
        spatial = tuple(p["input_size"])
        flow = []
        for st in self.stages:
            flow.append((st, c, spatial))
            if isinstance(st, ConvSpec):
                c, spatial = st.out_channels, st.out_spatial(spatial)
            elif isinstance(st, PoolSpec):
                spatial = st.out_spatial(spatial)
            elif isinstance(st, GlobalPoolSpec):
                spatial = (1,) * st.ndim
        return flow, (c, spatial)

    def _layout(self, c, spatial):
        return (self.batch, *spatial, c) if self.channels_last else (self.batch, c, *spatial)

    @property
    def input_names(self) -> list[str]:
        convs = [s for s in self.stages if isinstance(s, ConvSpec)]
        names = ["data"]
        for i, st in enumerate(convs):
            sfx = str(i) if len(convs) > 1 else ""
            names.append("weight" + sfx)
            if st.bias:
                names.append("bias" + sfx)
            if st.epilogue == "bn_silu":
                names += [f"bn_{n}{sfx}" for n in ("weight", "bias", "mean", "var")]
        return names

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        flow, _ = self._flow()
        _, c0, s0 = flow[0]
        shapes = [self._layout(c0, s0)]
        for st, _, _ in flow:
            if isinstance(st, ConvSpec):
                shapes.append(st.weight_shape())
                shapes += [(st.out_channels,)] * (int(st.bias) + 4 * (st.epilogue == "bn_silu"))
        return shapes

    @property
    def weight_indices(self) -> list[int]:
        """Positions of the convolution weights among the inputs (layout-free for tuning)."""
        return [i for i, n in enumerate(self.input_names) if n.startswith("weight")]

    @property
    def output_shape(self) -> tuple[int, ...]:
        _, (c, spatial) = self._flow()
        return self._layout(c, spatial)

    @property
    def flops(self) -> int:
        total = 0
        for st, c, spatial in self._flow()[0]:
            if isinstance(st, ConvSpec):
                out_elems = self.batch * st.out_channels * math.prod(st.out_spatial(spatial))
                total += 2 * st.macs(self.batch, spatial) + out_elems * (int(st.bias) + 4 * (st.epilogue != "none"))
            elif isinstance(st, PoolSpec):
                total += self.batch * c * math.prod(st.out_spatial(spatial)) * math.prod(st.kernel)
            elif isinstance(st, GlobalPoolSpec):
                total += self.batch * c * math.prod(spatial)
        return total

    # -- identity -------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """Canonical, structural identity of the workload (variant + normalised parameters)."""
        return json.dumps({"variant": self.variant, **self.params}, sort_keys=True)

    def to_json(self) -> dict:
        return {"variant": self.variant, **self.params}

    def __str__(self) -> str:
        return f"{self.variant}({', '.join(f'{k}={v}' for k, v in self.params.items())})"

    # -- data -----------------------------------------------------------------------------------
    def random_inputs(self, seed: int = 0) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        convs = iter(s for s in self.stages if isinstance(s, ConvSpec))
        out = []
        for name, shape in zip(self.input_names, self.input_shapes):
            if name.startswith("bn_var"):
                a = rng.uniform(0.5, 1.5, shape)
            elif name.startswith("weight"):  # torch's default init range: 1/sqrt(fan_in)
                st = next(convs)
                per_kernel = (st.out_channels if st.transposed else st.in_channels) // st.groups
                a = rng.uniform(-1, 1, shape) / math.sqrt(per_kernel * math.prod(st.kernel))
            else:
                a = rng.uniform(-1, 1, shape)
            out.append(a.astype(self.dtype))
        return out

    def reference(self, *xs) -> np.ndarray:
        """The PyTorch result, as numpy."""
        from . import reference
        return reference.run(self, xs)

    # -- TE -------------------------------------------------------------------------------------
    def te_compute(self):
        """(input placeholders, output tensor)."""
        from tvm import te

        from . import te_ops
        placeholders = [te.placeholder(s, self.dtype, name=n) for n, s in zip(self.input_names, self.input_shapes)]
        feed = iter(placeholders[1:])
        x = placeholders[0]
        stages = list(self.stages)
        flow = self._flow()[0]
        for i, (st, channels, _) in enumerate(flow):
            tag = str(i) if len(stages) > 1 else ""
            if isinstance(st, ShuffleSpec) and i and st.groups in (1, channels):
                # the identity permutation: no stage. (TVM 0.27 miscompiles the one of 2 channels in 2
                # groups after a conv: c % 2 + c // 2 becomes (c + 1) // 2, whose inverse reverse_compute_inline
                # takes as 2 * c - 1, a write out of bounds; and iter_map_simplify rewrites the folded
                # form's (x % 34 + 17) // 34 to (x + 17) % 34 // 34, always 0.)
                continue
            if isinstance(st, ShuffleSpec) and i and _folds_shuffle(stages[i - 1], st):
                continue  # computed by the convolution before it
            if isinstance(st, ConvSpec):
                nxt = stages[i + 1] if i + 1 < len(stages) else None
                fold = nxt if _folds_shuffle(st, nxt) and nxt.groups not in (1, st.out_channels) else None
                # float16: the epilogue runs on the float32 accumulator, one rounding per stage (float32
                # and float64: no cast anywhere, the compute keeps its structure and tuning records)
                epilogue = st.bias or st.epilogue != "none"
                acc = te_ops.accumulator(self.dtype)
                x = te_ops.conv(x, next(feed), st, tag, shuffle=fold, out_dtype=acc if epilogue else None)
                if st.bias:
                    x = te_ops.bias_add(x, next(feed), st, tag)
                if st.epilogue == "bn_silu":
                    x = te_ops.bn_silu(x, *[next(feed) for _ in range(4)], st, tag)
                x = te_ops.cast(x, self.dtype, f"conv{tag}_out")
            elif isinstance(st, PoolSpec):
                x = te_ops.pool(x, st, tag)
            elif isinstance(st, GlobalPoolSpec):
                x = te_ops.global_avg_pool(x, st, tag)
            else:
                x = te_ops.channel_shuffle(x, st, tag)
        return placeholders, x

    def prim_func(self, layout_free_weights: bool = False):
        from tvm import te
        inputs, out = self.te_compute()
        func = te.create_prim_func([*inputs, out]).with_attr("global_symbol", "main")
        if layout_free_weights and self.weight_indices:
            func = func.with_attr("layout_free_buffers", self.weight_indices)
        return func


def _folds_shuffle(conv, shuffle) -> bool:
    """A channel shuffle right after a plain forward convolution (no bias, no epilogue, same layout)
    folds into the convolution's output channel index."""
    return (isinstance(conv, ConvSpec) and isinstance(shuffle, ShuffleSpec) and not conv.transposed
            and not conv.bias and conv.epilogue == "none" and conv.channels_last == shuffle.channels_last)


# The scalar parameters, by kind; the per-dimension ones (kernel_size, stride, padding, dilation,
# output_padding) are checked where a variant turns them into stages (conv_spec, pool_spec).
_POSITIVE_INTS = ("in_channels", "out_channels", "channels", "groups", "channel_multiplier")
_BOOLEANS = ("bias", "ceil_mode", "count_include_pad")


def workload(variant: str, batch: int = 1, input_size=None, dtype: str = "float32", **kwargs) -> Workload:
    """Make a Workload, validating every parameter (ValueError names the parameter and the rule).

    Types are strict (see convtvm.params): numpy integers and booleans are taken as the Python ones
    (and stored so: ``key`` and ``to_json`` are the same as for Python values), a float, a string or
    None where an int or a bool is meant is an error. A workload with a tensor of more than 2**31 - 1
    elements is refused here (TVM indexes with int32 and would fail in its build)."""
    if not isinstance(variant, str) or variant not in REGISTRY:
        raise ValueError(f"unknown variant {variant!r}; known variants: {', '.join(REGISTRY)}")
    v = REGISTRY[variant]
    unknown = sorted(set(kwargs) - set(v.defaults))
    if unknown:
        raise ValueError(f"{variant} takes no parameter {', '.join(unknown)}; "
                         f"it takes: {', '.join([*_COMMON, *v.defaults])}")
    dtype = dtype_name(dtype)
    batch = positive_int("batch", plain(batch))
    if input_size is None:
        input_size = (32,) * v.ndim
    input_size = per_dim("input_size", input_size, v.ndim)
    p = {**v.defaults, **{k: plain(x) for k, x in kwargs.items()}}
    if "layout" in p:
        p["layout"] = layout_name(LAYOUTS[v.ndim][0] if p["layout"] is None else p["layout"], v.ndim)
    for name in _POSITIVE_INTS:
        if name in p:
            p[name] = positive_int(name, p[name])
    for name in _BOOLEANS:
        if name in p:
            p[name] = boolean(name, p[name])
    if "bn_eps" in p:
        positive_real("bn_eps", p["bn_eps"])  # the key keeps the number as given (1e-3, or an int)
    stages = v.make(p)
    wl = Workload(variant, {"batch": batch, "input_size": input_size, "dtype": dtype, **_jsonable(p)},
                  tuple(stages))
    for st, c, spatial in wl._flow()[0]:
        if isinstance(st, ShuffleSpec):
            st.validate(c)
        elif not isinstance(st, GlobalPoolSpec):
            st.validate(spatial)
    _check_sizes(wl)
    return wl


def _check_sizes(wl: Workload) -> None:
    """Every tensor the compute holds (inputs, intermediates, output) indexable with int32."""
    p = wl.params
    chan = "in_channels" if "in_channels" in p else "channels"
    act = {"batch": wl.batch, chan: p[chan], "input_size": tuple(p["input_size"])}
    weight = {k: p[k] for k in ("in_channels", "out_channels", "channel_multiplier", "groups", "kernel_size")
              if k in p}
    geometry = {k: p[k] for k in ("out_channels", "channel_multiplier", "kernel_size", "stride", "padding",
                                  "dilation", "output_padding") if k in p}
    found = [(act, "input", wl.input_shapes[0])]
    for st, c, spatial in wl._flow()[0]:
        if isinstance(st, ConvSpec):
            found += [(weight if what.endswith("weight") else {**act, **geometry}, what, shape)
                      for what, shape in st.tensors(wl.batch, spatial)]
        elif isinstance(st, PoolSpec):
            found += [({**act, **geometry}, what, shape) for what, shape in st.tensors(wl.batch, c, spatial)]
    found.append((act, "output", wl.output_shape))
    for culprits, what, shape in found:
        n = math.prod(shape)
        if n > INT32_MAX:
            named = ", ".join(f"{k}={v!r}" for k, v in culprits.items())
            raise ValueError(f"{named}: too large, the {wl.variant} {what} {tuple(shape)} would hold {n:,} elements, "
                             f"more than the 2**31 - 1 TVM indexes with int32")


def _jsonable(p: dict) -> dict:
    def conv(v):
        return [conv(x) for x in v] if isinstance(v, (tuple, list)) else v
    return {k: conv(v) for k, v in p.items()}


def from_json(d: dict) -> Workload:
    d = dict(d)
    name = d.pop("variant")
    return workload(name, **{k: _tuplify(v) for k, v in d.items()})


def _tuplify(v):
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def replace_params(w: Workload, **changes) -> Workload:
    return from_json({**w.to_json(), **changes})


__all__ = ["Workload", "Variant", "REGISTRY", "variants", "workload", "from_json", "replace_params", "replace"]
