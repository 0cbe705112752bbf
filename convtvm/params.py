"""Normalisation and validation of convolution parameters (torch names and rules).

Every check raises ``ValueError`` naming the parameter and the rule, before TVM sees anything.
Types are strict: an integer parameter takes a Python or numpy integer (returned as a Python int),
a boolean one ``True``/``False`` (or ``np.bool_``), never a value coerced by its truthiness
(``bias="no"`` is an error, not True); floats, strings, ``None`` (where it is not a documented
default) and lists of the wrong length are errors too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DTYPES = ("float32", "float64", "float16")

# TVM indexes tensors with int32: no parameter, and no tensor's element count, may pass this.
INT32_MAX = 2**31 - 1

# Activation layouts per spatial rank: channels-first (torch's) and channels-last. A channels-last
# convolution takes its weight as (*kernel, in/groups, out), e.g. HWIO; a transposed one keeps torch's.
LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}


def plain(value):
    """``value`` with numpy scalars and arrays as Python ones (np.int64(3) -> 3, np.bool_ -> bool,
    an array -> a tuple), tuples and lists element by element; anything else as it is."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
        return tuple(plain(v) for v in value) if isinstance(value, list) else value
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def as_int(value) -> int | None:
    """A Python or numpy integer as a Python int; None for anything else (bools included)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


def dtype_name(value) -> str:
    value = plain(value)
    if not isinstance(value, str) or value not in DTYPES:
        raise ValueError(f"dtype={value!r} must be one of {DTYPES}")
    return value


def layout_name(value, ndim: int) -> str:
    value = plain(value)
    if not isinstance(value, str) or value not in LAYOUTS[ndim]:
        first, last = LAYOUTS[ndim]
        raise ValueError(f"layout={value!r} must be {first!r} or {last!r}")
    return value


def is_channels_last(layout: str) -> bool:
    return layout.endswith("C")


def positive_int(name: str, value) -> int:
    v = as_int(value)
    if v is None or v < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    if v > INT32_MAX:
        raise ValueError(f"{name}={value!r} must be a positive integer of at most 2**31 - 1 (TVM indexes with int32)")
    return v


def boolean(name: str, value) -> bool:
    """True or False (np.bool_ too); nothing else, so that bias="no" is not taken for True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{name}={value!r} must be True or False")


def positive_real(name: str, value) -> float:
    """A positive, finite int or float (numpy ones too), as a Python float."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
    try:
        v = float(value) if ok else math.nan
    except OverflowError:
        v = math.inf
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}={value!r} must be a positive finite number")
    return v


def per_dim(name: str, value, ndim: int, minimum: int = 1) -> tuple[int, ...]:
    """An int or a tuple (or list) of ``ndim`` ints, each >= minimum, as a tuple of Python ints."""
    value = plain(value)
    if as_int(value) is not None:
        values = (value,) * ndim
    elif isinstance(value, (tuple, list)) and len(value) == ndim:
        values = value
    else:
        raise ValueError(f"{name}={value!r} must be an int or a tuple of {ndim} ints")
    out = []
    for v in values:
        v = as_int(v)
        if v is None:
            raise ValueError(f"{name}={value!r} must hold integers")
        if v < minimum:
            rule = "positive" if minimum == 1 else f">= {minimum}"
            raise ValueError(f"{name}={value!r} must be {rule}")
        if v > INT32_MAX:
            raise ValueError(f"{name}={value!r} must hold integers of at most 2**31 - 1 (TVM indexes with int32)")
        out.append(v)
    return tuple(out)


def pad_pairs(padding, ndim: int, kernel, dilation, stride) -> tuple[tuple[int, int], ...]:
    """Padding as ((before, after), ...) per spatial dim.

    Accepts an int, a tuple of ints (symmetric per dim), a tuple of (before, after) pairs,
    ``"valid"`` and ``"same"`` (stride 1 only; the odd extra pad goes after, as in torch).
    """
    padding = plain(padding)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"padding='same' requires stride=1, got stride={stride}")
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in total)
        raise ValueError(f"padding={padding!r} must be an int, a tuple, 'same' or 'valid'")
    if as_int(padding) is not None:
        padding = (padding,) * ndim
    if not isinstance(padding, (tuple, list)):
        raise ValueError(f"padding={padding!r} must be an int, a tuple, 'same' or 'valid'")
    padding = tuple(padding)
    if len(padding) != ndim:
        raise ValueError(f"padding={padding!r} must have one entry per spatial dim ({ndim})")
    pairs = []
    for p in padding:
        pair = tuple(p) if isinstance(p, (tuple, list)) else (p, p)
        if len(pair) != 2 or any(as_int(v) is None for v in pair):
            raise ValueError(f"padding={padding!r} entries must be ints or (before, after) pairs")
        pair = (int(pair[0]), int(pair[1]))
        if min(pair) < 0:
            raise ValueError(f"padding={padding!r} must not be negative")
        if max(pair) > INT32_MAX:
            raise ValueError(f"padding={padding!r} must hold integers of at most 2**31 - 1 (TVM indexes with int32)")
        pairs.append(pair)
    return tuple(pairs)


@dataclass(frozen=True)
class ConvSpec:
    """One convolution (or transposed convolution) stage, fully normalised."""

    ndim: int
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int = 1
    bias: bool = False
    transposed: bool = False
    output_padding: tuple[int, ...] = ()
    layout: str = "NCHW"  # one of LAYOUTS[ndim]
    epilogue: str = "none"  # "none" or "bn_silu"
    bn_eps: float = 1e-5

    @property
    def channels_last(self) -> bool:
        return is_channels_last(self.layout)

    def weight_shape(self) -> tuple[int, ...]:
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups, *self.kernel)
        if self.channels_last:  # (*kernel, in/groups, out), e.g. HWIO
            return (*self.kernel, self.in_channels // self.groups, self.out_channels)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    def out_spatial(self, in_spatial) -> tuple[int, ...]:
        out_pad = self.output_padding or (0,) * self.ndim
        out = []
        for i, k, s, (pb, pa), d, op in zip(in_spatial, self.kernel, self.stride, self.padding,
                                            self.dilation, out_pad):
            if self.transposed:
                out.append((i - 1) * s - pb - pa + d * (k - 1) + op + 1)
            else:
                out.append((i + pb + pa - d * (k - 1) - 1) // s + 1)
        return tuple(out)

    def macs(self, batch: int, in_spatial) -> int:
        k = math.prod(self.kernel)
        if self.transposed:
            return batch * self.in_channels * math.prod(in_spatial) * (self.out_channels // self.groups) * k
        return batch * self.out_channels * math.prod(self.out_spatial(in_spatial)) * (self.in_channels // self.groups) * k

    def tensors(self, batch: int, in_spatial) -> list[tuple[str, tuple[int, ...]]]:
        """(what, shape) of the tensors te_ops computes this stage with, channels-first (the element
        count is what matters): the weight, the padded input, any intermediate, the output."""
        out_spatial = self.out_spatial(in_spatial)
        cin, cout = self.in_channels, self.out_channels
        found = [("weight", self.weight_shape())]
        if not self.transposed:
            found.append(("padded input", (batch, cin, *[i + pb + pa for i, (pb, pa) in zip(in_spatial, self.padding)])))
        elif max(self.stride) > 1 and max(self.dilation) == 1:  # te_ops._conv_transpose_by_phase
            taps = [-(-k // s) for k, s in zip(self.kernel, self.stride)]
            steps = [-(-(o + pb) // s) for o, (pb, _), s in zip(out_spatial, self.padding, self.stride)]
            found.append(("per-phase output", (batch, cout, *[u * s for u, s in zip(steps, self.stride)])))
            if not any(k % s for k, s in zip(self.kernel, self.stride)):
                found.append(("padded input", (batch, cin, *[i + j - 1 + max(0, u - i)
                                                             for i, j, u in zip(in_spatial, taps, steps)])))
        return found + [("output", (batch, cout, *out_spatial))]

    def validate(self, in_spatial) -> None:
        g = self.groups
        if self.in_channels % g:
            raise ValueError(f"groups={g} must divide in_channels={self.in_channels}")
        if self.out_channels % g:
            raise ValueError(f"groups={g} must divide out_channels={self.out_channels}")
        if self.transposed:
            for op, s, d in zip(self.output_padding, self.stride, self.dilation):
                if op >= max(s, d):
                    raise ValueError(f"output_padding={self.output_padding} must be smaller than "
                                     f"stride={self.stride} or dilation={self.dilation}")
        else:
            for i, k, (pb, pa), d in zip(in_spatial, self.kernel, self.padding, self.dilation):
                eff = d * (k - 1) + 1
                if eff > i + pb + pa:
                    raise ValueError(f"effective kernel size {eff} (kernel_size={self.kernel}, dilation="
                                     f"{self.dilation}) is larger than the padded input {i + pb + pa} "
                                     f"(input_size={tuple(in_spatial)}, padding={self.padding})")
        if min(self.out_spatial(in_spatial)) < 1:
            raise ValueError(f"output size {self.out_spatial(in_spatial)} must be positive "
                             f"(input_size={tuple(in_spatial)})")


@dataclass(frozen=True)
class PoolSpec:
    ndim: int
    kind: str  # "max" or "avg"
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]  # symmetric, as torch
    dilation: tuple[int, ...]
    ceil_mode: bool = False
    count_include_pad: bool = True

    def out_spatial(self, in_spatial) -> tuple[int, ...]:
        out = []
        for i, k, s, p, d in zip(in_spatial, self.kernel, self.stride, self.padding, self.dilation):
            span = i + 2 * p - d * (k - 1) - 1
            o = (-(-span // s) if self.ceil_mode else span // s) + 1
            if self.ceil_mode and (o - 1) * s >= i + p:  # last window must start inside input or left pad
                o -= 1
            out.append(o)
        return tuple(out)

    def tensors(self, batch: int, channels: int, in_spatial) -> list[tuple[str, tuple[int, ...]]]:
        """(what, shape) of the padded input and the output te_ops.pool computes."""
        out_spatial = self.out_spatial(in_spatial)
        padded = [i + p + max(p, (o - 1) * s + d * (k - 1) + 1 - i - p) for i, o, k, s, p, d in zip(
            in_spatial, out_spatial, self.kernel, self.stride, self.padding, self.dilation)]
        return [("padded input", (batch, channels, *padded)), ("output", (batch, channels, *out_spatial))]

    def validate(self, in_spatial) -> None:
        # torch: padding <= kernel_size // 2, and <= half the effective (dilated) kernel, implied
        for k, p in zip(self.kernel, self.padding):
            if 2 * p > k:
                raise ValueError(f"padding={self.padding} must be at most half of the effective kernel size "
                                 f"and of kernel_size={self.kernel}, as torch requires (dilation={self.dilation})")
        if self.kind == "avg" and self.ndim == 3 and any(i < k for i, k in zip(in_spatial, self.kernel)):
            # torch's avg_pool3d (CPU) refuses an input smaller than the kernel, padding or not
            raise ValueError(f"input_size={tuple(in_spatial)} must be at least kernel_size={self.kernel} in every "
                             f"dimension for 3D average pooling, padding={self.padding} not counted (torch's rule)")
        for i, k, p, d in zip(in_spatial, self.kernel, self.padding, self.dilation):
            if d * (k - 1) + 1 > i + 2 * p:
                raise ValueError(f"effective kernel size {d * (k - 1) + 1} (kernel_size={self.kernel}) is "
                                 f"larger than the padded input {i + 2 * p} (input_size={tuple(in_spatial)})")


@dataclass(frozen=True)
class ShuffleSpec:
    groups: int
    channels_last: bool = False

    def validate(self, channels: int) -> None:
        if channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide channels={channels} for channel_shuffle")


@dataclass(frozen=True)
class GlobalPoolSpec:
    ndim: int


Stage = ConvSpec | PoolSpec | ShuffleSpec | GlobalPoolSpec

