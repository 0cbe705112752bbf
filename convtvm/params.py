"""Normalisation and validation of convolution parameters (torch names and rules).

Every check raises ``ValueError`` naming the parameter and the rule, before TVM sees anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DTYPES = ("float32", "float64", "float16")

# Activation layouts per spatial rank: channels-first (torch's) and channels-last. A channels-last
# convolution takes its weight as (*kernel, in/groups, out), e.g. HWIO; a transposed one keeps torch's.
LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}


def layout_name(value, ndim: int) -> str:
    if value not in LAYOUTS[ndim]:
        first, last = LAYOUTS[ndim]
        raise ValueError(f"layout={value!r} must be {first!r} or {last!r}")
    return value


def is_channels_last(layout: str) -> bool:
    return layout.endswith("C")


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


def per_dim(name: str, value, ndim: int, minimum: int = 1) -> tuple[int, ...]:
    """An int or a tuple of ``ndim`` ints, each >= minimum."""
    values = (value,) * ndim if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != ndim:
        raise ValueError(f"{name}={value!r} must be an int or a tuple of {ndim} ints")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name}={value!r} must hold integers")
        if v < minimum:
            rule = "positive" if minimum == 1 else f">= {minimum}"
            raise ValueError(f"{name}={value!r} must be {rule}")
    return values


def pad_pairs(padding, ndim: int, kernel, dilation, stride) -> tuple[tuple[int, int], ...]:
    """Padding as ((before, after), ...) per spatial dim.

    Accepts an int, a tuple of ints (symmetric per dim), a tuple of (before, after) pairs,
    ``"valid"`` and ``"same"`` (stride 1 only; the odd extra pad goes after, as in torch).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"padding='same' requires stride=1, got stride={stride}")
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in total)
        raise ValueError(f"padding={padding!r} must be an int, a tuple, 'same' or 'valid'")
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding,) * ndim
    padding = tuple(padding)
    if len(padding) != ndim:
        raise ValueError(f"padding={padding!r} must have one entry per spatial dim ({ndim})")
    pairs = tuple(tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in padding)
    for pair in pairs:
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
            raise ValueError(f"padding={padding!r} entries must be ints or (before, after) pairs")
        if min(pair) < 0:
            raise ValueError(f"padding={padding!r} must not be negative")
    return pairs


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

    def validate(self, in_spatial) -> None:
        for k, p, d in zip(self.kernel, self.padding, self.dilation):
            if 2 * p > d * (k - 1) + 1:
                raise ValueError(f"padding={self.padding} must be at most half of the effective "
                                 f"kernel size (kernel_size={self.kernel}, dilation={self.dilation})")
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

