"""TE computes for every stage kind: one N-D convolution, one N-D transposed convolution,
one N-D pooling, channel shuffle and global average pooling; and Winograd F(m x m, 3x3), the
algorithm networks use for their 3x3 stride-1 convolutions where the target asks for it.

Layouts are channels-first (N, C, *spatial) unless a ConvSpec (or ShuffleSpec) says channels-last
(N, *spatial, C); pooling is channels-first.

Numerics follow torch: float16 sums (convolution, average pooling) accumulate in float32 and round
once; NaN and +-inf propagate as torch's: max pooling keeps a NaN in its window, SiLU(-inf) is NaN,
and a transposed convolution multiplies only real (input, tap) pairs, not the zeros its padding or
zero insertion adds -- except the strided dilation-1 one whose kernel is a multiple of its stride
(DCGAN's 4x4 stride 2: the shipped tuning records are keyed on its structure), whose zero-padded
input meets every tap, so a non-finite *weight* gives NaN on the output's border where torch gives
+-inf or a number. float32 and float64 computes are otherwise what they were.
"""

from __future__ import annotations

import math

from tvm import te, tirx, topi

from .params import ConvSpec, GlobalPoolSpec, PoolSpec, ShuffleSpec


def _spatial_axes(ndim: int, channels_last: bool) -> list[int]:
    return list(range(1, 1 + ndim)) if channels_last else list(range(2, 2 + ndim))


def _pad(data: te.Tensor, axes, before, after, value, name: str) -> te.Tensor:
    if not any(before) and not any(after):
        return data
    rank = len(data.shape)
    pb, pa = [0] * rank, [0] * rank
    for ax, b, a in zip(axes, before, after):
        pb[ax], pa[ax] = b, a
    return topi.nn.pad(data, pb, pa, pad_value=value, name=name)


def accumulator(dtype) -> str:
    """What a sum over ``dtype`` values accumulates in: float32 for float16 (a float16 sum over 512
    channels is off by ~1e-2 relative), the dtype itself otherwise."""
    return "float32" if str(dtype) == "float16" else str(dtype)


def _to(value, dtype: str):
    """``value`` as ``dtype``: no cast node where it already is (float32 computes keep their structure)."""
    have = value.dtype if hasattr(value, "dtype") else value.ty  # a TensorSlice / a PrimExpr
    return value if str(have) == dtype else value.astype(dtype)


def cast(x: te.Tensor, dtype: str, name: str) -> te.Tensor:
    """``x`` as ``dtype``, a stage of its own only where the dtype differs."""
    if str(x.dtype) == dtype:
        return x
    return te.compute(x.shape, lambda *i: x(*i).astype(dtype), name=name)


def _split_index(spec: ConvSpec, idx):
    """(n, oc, spatial...) from an output index tuple in the spec's layout."""
    if spec.channels_last:
        return idx[0], idx[-1], idx[1:-1]
    return idx[0], idx[1], idx[2:]


def conv(data: te.Tensor, weight: te.Tensor, spec: ConvSpec, tag: str, shuffle: ShuffleSpec | None = None,
         input_scale: te.Tensor | None = None, out_dtype: str | None = None) -> te.Tensor:
    """Grouped, strided, dilated N-D convolution (or transposed convolution) without epilogue.

    With ``shuffle``, the channel shuffle that follows is folded into the output channel index: output
    channel c is computed from the filter the shuffle would have moved there, so the shuffle costs no
    pass over memory (ShuffleNet's grouped conv + shuffle becomes one reduction).

    With ``input_scale`` (forward only: the data's shape with every spatial extent 1, batch 1 or the
    data's), the convolution computes ``conv(data * input_scale, weight)``, a per-(sample, input
    channel) scale applied to each weight it loads (one vector multiply per weight vector, shared by
    the register tile's pixels): a squeeze-excitation's scale costs no pass over the feature map.

    The sum accumulates in ``accumulator(data.dtype)`` (float32 for float16 data); the result is cast
    to ``out_dtype`` (default: the data's dtype) in a stage of its own, ``conv{tag}_out``, where they
    differ (a caller with an epilogue asks for the accumulator's dtype and casts after it)."""
    if (shuffle is not None or input_scale is not None) and spec.transposed:
        raise ValueError("a channel shuffle or an input scale folds only into a forward convolution")
    acc, out_dtype = accumulator(data.dtype), out_dtype or str(data.dtype)
    if spec.transposed and max(spec.stride) > 1 and max(spec.dilation) == 1:
        return _conv_transpose_by_phase(data, weight, spec, tag, out_dtype)
    if spec.transposed:
        return cast(_conv_transpose_direct(data, weight, spec, tag), out_dtype, f"conv{tag}_out")
    axes = _spatial_axes(spec.ndim, spec.channels_last)
    in_spatial = [int(data.shape[a]) for a in axes]
    icg, ocg = spec.in_channels // spec.groups, spec.out_channels // spec.groups
    before = [p[0] for p in spec.padding]
    after = [p[1] for p in spec.padding]
    src, stride = _pad(data, axes, before, after, 0.0, f"pad{tag}"), spec.stride
    out_spatial = spec.out_spatial(in_spatial)
    rc = te.reduce_axis((0, icg), name="rc")
    rk = [te.reduce_axis((0, k), name=f"rk{i}") for i, k in enumerate(spec.kernel)]

    def compute(*idx):
        n, oc, o = _split_index(spec, idx)
        if shuffle is not None:
            oc = _shuffled(oc, spec.out_channels, shuffle.groups)
        ic = oc // ocg * icg + rc
        x = [oi * s + r * d for oi, s, r, d in zip(o, stride, rk, spec.dilation)]
        if spec.channels_last:  # weight HWIO
            w = _to(weight[(*rk, rc, oc)], acc)
        else:  # weight OI*
            w = _to(weight[(oc, rc, *rk)], acc)
        xv = _to(src[(n, *x, ic)] if spec.channels_last else src[(n, ic, *x)], acc)
        if input_scale is not None:
            b = n if int(input_scale.shape[0]) > 1 else 0
            w = w * _to(input_scale[(b, *[0] * spec.ndim, ic)] if spec.channels_last
                        else input_scale[(b, ic, *[0] * spec.ndim)], acc)
        return te.sum(xv * w, axis=[rc, *rk])

    shape = ((data.shape[0], *out_spatial, spec.out_channels) if spec.channels_last
             else (data.shape[0], spec.out_channels, *out_spatial))
    return cast(te.compute(shape, compute, name=f"conv{tag}"), out_dtype, f"conv{tag}_out")


def _transposed_extents(data: te.Tensor, spec: ConvSpec) -> tuple[list, list, list, int, int]:
    """(spatial axes of ``data``, its spatial extents, the output's, input channels per group, output
    channels per group) of the transposed convolution ``spec`` on ``data``."""
    axes = _spatial_axes(spec.ndim, spec.channels_last)
    in_spatial = [int(data.shape[a]) for a in axes]
    return (axes, in_spatial, spec.out_spatial(in_spatial), spec.in_channels // spec.groups,
            spec.out_channels // spec.groups)


def _conv_transpose_by_phase(data: te.Tensor, weight: te.Tensor, spec: ConvSpec, tag: str,
                             out_dtype: str) -> te.Tensor:
    """Strided transposed convolution (dilation 1) that only multiplies real inputs: the
    zero-insertion form wastes 1 - 1/stride of its work per axis.

    Output ``o = i * s + k - pad``. Write ``o + pad = u * s + r`` (0 <= r < s): the taps are
    ``k = r + j * s`` and the inputs ``i = u - j``, for j < ceil(K / s), so each phase r is a dense
    convolution with every s-th tap. The reduction runs over a (u, r) grid, affine in its indices
    (what MetaSchedule's multi-level tiling needs; and TVM 0.27 miscompiles a reduction indexed by
    (o + c) % s once its loops are fused), and a copy then picks output o from it: on DCGAN's 4x4
    stride-2 layers a quarter of the work of zero insertion, on a 2x2x2 stride-2 one an eighth.

    Where K is a multiple of s the input is zero-padded so that every (u, j) reads (the form the shipped
    tuning records are keyed on; a non-finite weight times a padding zero gives NaN where torch has no
    product). Otherwise taps past the kernel exist too, and every product is guarded instead: a select
    keeps only real (input, tap) pairs, so a NaN or inf input never meets a padding zero (torch's NaN
    and inf positions)."""
    cl, acc = spec.channels_last, accumulator(data.dtype)
    axes, in_spatial, out_spatial, icg, ocg = _transposed_extents(data, spec)
    lead = [p[0] for p in spec.padding]
    taps = [-(-k // s) for k, s in zip(spec.kernel, spec.stride)]
    steps = [-(-(o + pb) // s) for o, pb, s in zip(out_spatial, lead, spec.stride)]
    guarded = any(k % s for k, s in zip(spec.kernel, spec.stride))
    if not guarded:
        src = _pad(data, axes, [j - 1 for j in taps], [max(0, u - i) for u, i in zip(steps, in_spatial)], 0.0,
                   f"pad{tag}")  # input u - j sits at u - j + (J - 1)
    rc = te.reduce_axis((0, icg), name="rc")
    rj = [te.reduce_axis((0, j), name=f"rj{i}") for i, j in enumerate(taps)]

    def compute(*idx):
        n, oc, ur = _split_index(spec, idx)
        ic = oc // ocg * icg + rc
        k = [r + j * s for r, j, s in zip(ur[1::2], rj, spec.stride)]
        if not guarded:
            x = [u - j + (jn - 1) for u, j, jn in zip(ur[0::2], rj, taps)]
            xv = src[(n, *x, ic)] if cl else src[(n, ic, *x)]
            return te.sum(_to(xv, acc) * _to(weight[(ic, oc % ocg, *k)], acc), axis=[rc, *rj])
        x = [u - j for u, j in zip(ur[0::2], rj)]
        valid = tirx.all(*[c for xi, i in zip(x, in_spatial) for c in (xi >= 0, xi < i)],
                         *[ki < kn for ki, kn in zip(k, spec.kernel)])
        x = [_clamp(xi, i) for xi, i in zip(x, in_spatial)]
        k = [tirx.min(ki, kn - 1) for ki, kn in zip(k, spec.kernel)]
        xv = _to(data[(n, *x, ic)] if cl else data[(n, ic, *x)], acc)
        product = xv * _to(weight[(ic, oc % ocg, *k)], acc)
        return te.sum(tirx.Select(valid, product, tirx.const(0, acc)), axis=[rc, *rj])

    n = data.shape[0]
    grid = [d for u, s in zip(steps, spec.stride) for d in (u, s)]
    by_phase = te.compute((n, *grid, spec.out_channels) if cl else (n, spec.out_channels, *grid), compute,
                          name=f"conv_phase{tag}")

    def pick(*idx):
        n, oc, o = _split_index(spec, idx)
        ur = [v for oi, pb, s in zip(o, lead, spec.stride) for v in (tirx.floordiv(oi + pb, s), tirx.floormod(oi + pb, s))]
        return _to(by_phase[(n, *ur, oc)] if cl else by_phase[(n, oc, *ur)], out_dtype)

    shape = (n, *out_spatial, spec.out_channels) if cl else (n, spec.out_channels, *out_spatial)
    return te.compute(shape, pick, name=f"conv{tag}")


def _clamp(index, extent: int):
    """``index`` within [0, extent): where a select has already discarded the value read there."""
    return tirx.max(tirx.min(index, extent - 1), 0)


def _conv_transpose_direct(data: te.Tensor, weight: te.Tensor, spec: ConvSpec, tag: str) -> te.Tensor:
    """Transposed convolution with stride 1 or a dilation, as a gather: output o sums
    ``data[q / s] * weight[t]`` over the taps t with ``q = o + pad - t * d`` a multiple of s inside
    the input. A select keeps only those real pairs (no zero-inserted or padded input tensor: a
    non-finite weight never meets a zero, as in torch), reading a clamped index otherwise.
    Accumulates in ``accumulator(data.dtype)``."""
    cl, acc = spec.channels_last, accumulator(data.dtype)
    _, in_spatial, out_spatial, icg, ocg = _transposed_extents(data, spec)
    rc = te.reduce_axis((0, icg), name="rc")
    rk = [te.reduce_axis((0, k), name=f"rk{i}") for i, k in enumerate(spec.kernel)]

    def compute(*idx):
        n, oc, o = _split_index(spec, idx)
        ic = oc // ocg * icg + rc
        q = [oi + pb - t * d for oi, (pb, _), t, d in zip(o, spec.padding, rk, spec.dilation)]
        conds, x = [], []
        for qi, i, s in zip(q, in_spatial, spec.stride):
            conds += [qi >= 0, qi <= (i - 1) * s]
            if s > 1:
                conds.append(tirx.floormod(qi, s) == 0)
                qi = tirx.floordiv(qi, s)
            x.append(_clamp(qi, i))
        xv = _to(data[(n, *x, ic)] if cl else data[(n, ic, *x)], acc)
        product = xv * _to(weight[(ic, oc % ocg, *rk)], acc)  # weight (Cin, Cout/g, *K)
        return te.sum(tirx.Select(tirx.all(*conds), product, tirx.const(0, acc)), axis=[rc, *rk])

    shape = (data.shape[0], *out_spatial, spec.out_channels) if cl else (data.shape[0], spec.out_channels, *out_spatial)
    return te.compute(shape, compute, name=f"conv{tag}")


def bias_add(x: te.Tensor, bias: te.Tensor, spec: ConvSpec, tag: str) -> te.Tensor:
    """In ``x``'s dtype (a float16 convolution's float32 accumulator: the bias is cast)."""
    dtype = str(x.dtype)
    return te.compute(x.shape, lambda *i: x[i] + _to(bias[_split_index(spec, i)[1]], dtype), name=f"bias_add{tag}")


# exp(r) for |r| <= ln(2)/2 as a degree-5 polynomial, lowest power first: fitted to exp's relative error
# (least squares on Chebyshev nodes), 2.2e-7 at most when evaluated in float32
EXP_POLYNOMIAL = (1.0000001192092896, 0.9999996423721313, 0.49998900294303894, 0.1666766256093979,
                  0.04191502928733826, 0.008291716687381268)


def fast_exp(x: te.Tensor) -> te.Tensor:
    """exp(x) = 2^n exp(r), x = n ln(2) + r, for float32 without a libm call: a vectorisable
    polynomial (x clamped to [-87, 88], where 2^n stays a normal float). Relative error: 2.2e-7 for
    |x| < 10, 4.4e-7 up to the clamps where the range reduction contracts to an FMA (4e-6 without).
    topi.fast_exp does the same with a degree-7 polynomial and an extra clamp: a SiLU epilogue took
    0.63 ns an element on one Zen 3 core with it, 0.36 with this. The block keeps topi's name,
    ``T_fast_exp``: tuning records find blocks by name, and this replaced it under them."""
    if x.dtype != "float32":
        return topi.exp(x)

    def compute(*i):
        t = tirx.max(tirx.min(x(*i), tirx.const(88.0, "float32")), tirx.const(-87.0, "float32"))
        n = tirx.floor(t * tirx.const(1 / math.log(2), "float32") + tirx.const(0.5, "float32"))
        r = t - n * tirx.const(math.log(2), "float32")
        p = tirx.const(EXP_POLYNOMIAL[-1], "float32")
        for c in reversed(EXP_POLYNOMIAL[:-1]):
            p = p * r + tirx.const(c, "float32")
        two_to_n = tirx.reinterpret("float32", tirx.shift_left(n.astype("int32") + 127, 23))  # the exponent bits
        return p * two_to_n

    return te.compute(x.shape, compute, name="T_fast_exp", tag="elemwise")


def sigmoid(x: te.Tensor, tag: str = "") -> te.Tensor:
    """1 / (1 + exp(-x)) with ``fast_exp`` instead of a scalar libm call per element."""
    e = fast_exp(topi.negative(x))
    return te.compute(x.shape, lambda *i: 1 / (1 + e(*i)), name=f"sigmoid{tag}")


def bn_silu(x: te.Tensor, gamma, beta, mean, var, spec: ConvSpec, tag: str) -> te.Tensor:
    """Inference batch-norm folded into a per-channel scale and shift, then SiLU, in ``x``'s dtype (the
    batch-norm parameters are cast to it).

    The fold is torch's (CPU): alpha = 1 / sqrt(var + eps) * gamma, x * alpha + (beta - mean * alpha),
    so that non-finite parameters give torch's result: with gamma = inf, x * inf + (beta - mean * inf)
    is NaN where (x - mean) * inf + beta would be +-inf. SiLU is torch's at +-inf and NaN: x * sigmoid(x)
    is inf at inf, NaN at NaN, and NaN at -inf (torch's x / (1 + exp(-x)) is -inf / inf there;
    fast_exp's clamp would make it -inf, hence the select)."""
    dtype = str(x.dtype)

    def compute(*i):
        c = _split_index(spec, i)[1]
        g, b, m, v = (_to(t[c], dtype) for t in (gamma, beta, mean, var))
        alpha = tirx.const(1, dtype) / te.sqrt(v + tirx.const(spec.bn_eps, dtype)) * g
        return x[i] * alpha + (b - m * alpha)

    y = te.compute(x.shape, compute, name=f"bn{tag}")
    s = sigmoid(y, tag)
    minus_inf, nan = tirx.const(-math.inf, dtype), tirx.const(math.nan, dtype)
    return te.compute(x.shape, lambda *i: tirx.Select(y(*i) == minus_inf, nan, y(*i) * s(*i)),
                      name=f"bn_silu{tag}")


def max_nan(dtype: str):
    """A max reduction that keeps NaN, as torch's max pooling: a new element replaces the running
    maximum where it is greater or NaN, and a NaN maximum stays (TVM's te.max drops a NaN unless it
    comes last). Identity -inf, so a window of -inf gives -inf. A compare, an unordered compare and a
    select per element: it vectorises as te.max does."""
    return te.comm_reducer(lambda acc, x: tirx.Select(tirx.isnan(x) | (x > acc), x, acc),
                           lambda t: tirx.const(-math.inf, t), name="max_nan")


def pool(data: te.Tensor, spec: PoolSpec, tag: str) -> te.Tensor:
    """N-D max or average pooling with torch's ceil_mode and count_include_pad rules and NaN (max
    pooling keeps a NaN in its window; windows are padded with -inf). Average pooling sums in
    ``accumulator(data.dtype)`` and casts the average."""
    axes = _spatial_axes(spec.ndim, False)
    in_spatial = [int(data.shape[a]) for a in axes]
    out_spatial = spec.out_spatial(in_spatial)
    # ceil_mode windows may run past the right padding: pad far enough for every window.
    after = [max(p, (o - 1) * s + d * (k - 1) + 1 - i - p)
             for i, o, k, s, p, d in zip(in_spatial, out_spatial, spec.kernel, spec.stride, spec.padding,
                                         spec.dilation)]
    dtype, acc = str(data.dtype), accumulator(data.dtype)
    init = -math.inf if spec.kind == "max" else 0.0
    src = _pad(data, axes, spec.padding, after, init, f"pad{tag}")
    rk = [te.reduce_axis((0, k), name=f"rk{i}") for i, k in enumerate(spec.kernel)]

    def window(n, c, o):
        return src[(n, c, *[oi * s + r * d for oi, s, r, d in zip(o, spec.stride, rk, spec.dilation)])]

    if spec.kind == "max":
        maximum = max_nan(dtype)
        return te.compute((data.shape[0], data.shape[1], *out_spatial),
                          lambda n, c, *o: maximum(window(n, c, o), axis=rk), name=f"max_pool{tag}")
    total = te.compute((data.shape[0], data.shape[1], *out_spatial),
                       lambda n, c, *o: te.sum(_to(window(n, c, o), acc), axis=rk), name=f"pool_sum{tag}")

    def divisor(o):
        size = 1
        for oi, i, k, s, p in zip(o, in_spatial, spec.kernel, spec.stride, spec.padding):
            start = oi * s - p
            end = tirx.min(start + k, i + p)
            if not spec.count_include_pad:
                start, end = tirx.max(start, 0), tirx.min(end, i)
            size = size * (end - start)
        return size

    return te.compute(total.shape, lambda n, c, *o: _to(total[(n, c, *o)] / divisor(o).astype(acc), dtype),
                      name=f"avg_pool{tag}")


def global_avg_pool(data: te.Tensor, spec: GlobalPoolSpec, tag: str) -> te.Tensor:
    """Sums in ``accumulator(data.dtype)``, casts the average."""
    dtype, acc = str(data.dtype), accumulator(data.dtype)
    spatial = [int(s) for s in data.shape[2:]]
    rk = [te.reduce_axis((0, s), name=f"rk{i}") for i, s in enumerate(spatial)]
    total = te.compute((data.shape[0], data.shape[1], *[1] * spec.ndim),
                       lambda n, c, *_: te.sum(_to(data[(n, c, *rk)], acc), axis=rk), name=f"pool_sum{tag}")
    scale = tirx.const(1.0 / math.prod(spatial), acc)
    return te.compute(total.shape, lambda *i: _to(total[i] * scale, dtype), name=f"global_avg_pool{tag}")


def _shuffled(c, channels: int, groups: int):
    """The channel a shuffle into ``groups`` moves to position ``c``."""
    return c % groups * (channels // groups) + c // groups


def channel_shuffle(data: te.Tensor, spec: ShuffleSpec, tag: str) -> te.Tensor:
    axis = len(data.shape) - 1 if spec.channels_last else 1
    channels = int(data.shape[axis])

    def compute(*i):
        return data[(*i[:axis], _shuffled(i[axis], channels, spec.groups), *i[axis + 1:])]

    return te.compute(data.shape, compute, name=f"channel_shuffle{tag}")


# ----------------------------------------------------------------------------------------------
# Winograd F(m x m, 3 x 3): the algorithm compile_model uses, where the target asks for it, for
# 2-D NHWC convolutions with a 3x3 kernel, stride 1, dilation 1, one group and a constant weight.
# ----------------------------------------------------------------------------------------------

def winograd_eligible(spec: ConvSpec) -> bool:
    return (spec.ndim == 2 and spec.channels_last and not spec.transposed and spec.groups == 1
            and spec.kernel == (3, 3) and spec.stride == (1, 1) and spec.dilation == (1, 1))


def winograd_matrices(tile: int):
    """Cook-Toom A (alpha x m), B (alpha x alpha) and G (alpha x 3), float64, alpha = m + 2, on
    the interpolation points Barabasz et al. chose for accuracy (TVM's table)."""
    from tvm.topi.nn.winograd_util import _cook_toom_convolution, _interpolation_points
    if tile not in (2, 4, 6):
        raise ValueError(f"winograd tile={tile} must be 2, 4 or 6")
    return _cook_toom_convolution(_interpolation_points(tile + 2), tile, 3)


def winograd_weight(weight_hwio, tile: int):
    """The transformed filter U[a, b, ci, co] = (G w[:, :, ci, co] G^T)[a, b], computed once (in
    float64) from an HWIO weight: a convolution's constant weight is transformed at compile time."""
    import numpy as np
    _, _, g = winograd_matrices(tile)
    w = np.asarray(weight_hwio)
    return np.einsum("ai,ijco,bj->abco", g, w.astype(np.float64), g).astype(w.dtype)


def conv2d_winograd(data: te.Tensor, transformed_weight: te.Tensor, spec: ConvSpec, tile: int, tag: str) -> te.Tensor:
    """NHWC 3x3 stride-1 convolution as Winograd F(m x m, 3 x 3) on a transformed weight
    (``winograd_weight``): per m x m output tile, (m+2)^2 multiplications per channel pair instead of
    9 m^2 (F(4x4): 4x fewer), as (m+2)^2 batched GEMMs between a data transform and an inverse one.
    Ragged edges: the input is padded to whole tiles and the inverse stage is cropped."""
    if not winograd_eligible(spec):
        raise ValueError(f"winograd needs a 2-D NHWC 3x3 convolution with stride 1, dilation 1 and groups=1, got {spec}")
    a_np, b_np, _ = winograd_matrices(tile)
    alpha, dtype = tile + 2, str(data.dtype)
    n, h, w = (int(s) for s in data.shape[:3])
    oh, ow = spec.out_spatial((h, w))
    th, tw = -(-oh // tile), -(-ow // tile)
    (pt, _), (pl, _) = spec.padding
    # The stages are laid out (and annotated) as TVM's topi Winograd is, so that MetaSchedule's CPU
    # rules for the transforms apply (their loops unrolled over the tile, tiled over tiles x channels)
    # and the generic multi-level tiling is left the batched GEMM.
    custom = {"schedule_rule": "None"}
    src = topi.nn.pad(data, [0, pt, pl, 0], [0, th * tile + 2 - h - pt, tw * tile + 2 - w - pl, 0], 0.0,
                      name=f"pad{tag}", attrs=custom)
    a_mat = topi.utils.const_matrix(a_np.astype(dtype), "winograd_a")
    b_mat = topi.utils.const_matrix(b_np.astype(dtype), "winograd_b")
    tiles = n * th * tw
    r1, r2 = te.reduce_axis((0, alpha), "r1"), te.reduce_axis((0, alpha), "r2")

    def tile_origin(p):
        return p // (th * tw), p // tw % th * tile, p % tw * tile

    def gather(e, v, p, c):
        b, y, x = tile_origin(p)
        return src[b, y + e, x + v, c]

    tile_in = te.compute((alpha, alpha, tiles, spec.in_channels), gather, name=f"winograd_input_tile{tag}",
                         attrs=custom)
    packed = te.compute((alpha, alpha, tiles, spec.in_channels),
                        lambda e, v, p, c: te.sum(tile_in[r1, r2, p, c] * b_mat[r1, e] * b_mat[r2, v], axis=[r1, r2]),
                        name=f"winograd_data_pack{tag}", attrs={"schedule_rule": "conv2d_nhwc_winograd_data_pack"})
    rc = te.reduce_axis((0, spec.in_channels), "rc")
    products = te.compute((alpha, alpha, tiles, spec.out_channels),
                          lambda e, v, p, k: te.sum(packed[e, v, p, rc] * transformed_weight[e, v, rc, k], axis=rc),
                          name=f"winograd_bgemm{tag}")
    s1, s2 = te.reduce_axis((0, alpha), "s1"), te.reduce_axis((0, alpha), "s2")
    inverse = te.compute((tile, tile, tiles, spec.out_channels),
                         lambda i, j, p, k: te.sum(products[s1, s2, p, k] * a_mat[s1, i] * a_mat[s2, j], axis=[s1, s2]),
                         name=f"winograd_inverse{tag}", attrs={"schedule_rule": "conv2d_nhwc_winograd_inverse"})
    return te.compute((n, oh, ow, spec.out_channels),
                      lambda b, y, x, k: inverse[y % tile, x % tile, (b * th + y // tile) * tw + x // tile, k],
                      name=f"conv{tag}")
