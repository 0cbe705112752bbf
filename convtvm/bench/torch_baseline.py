"""PyTorch as its users call it: the contender ``convtvm bench`` times.

``reference.py`` computes a workload in torch for correctness, on views of convtvm's own tensors
(padding by ``F.pad``, channels-last weights permuted, transposed outputs cropped). A user of torch
writes none of that, so this module builds the plain call instead:

- each convolution is one ``F.convNd`` / ``F.conv_transposeNd`` call with its own ``padding`` (and
  ``output_padding``); ``F.pad`` only where torch has no equivalent, i.e. per-side asymmetric padding;
- weights are made once, contiguous in torch's own layout ``(out, in/groups, *kernel)`` (transposed:
  ``(in, out/groups, *kernel)``), in the memory format of the data, as ``module.to(memory_format=...)``
  leaves them;
- composite variants are the natural ``nn`` composition (depthwise then pointwise, kx1 then 1xk,
  ``F.channel_shuffle``, conv + ``F.batch_norm`` in eval + ``F.silu``, ``F.adaptive_avg_pool*``).

``contender(w, inputs, memory_format)`` returns ``(fn, x)``: ``fn(x)`` is the workload in torch on
the data tensor ``x`` (channels-first shape, in that memory format), every other input bound once.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..params import ConvSpec, GlobalPoolSpec, PoolSpec, ShuffleSpec

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last,
            "channels_last_3d": torch.channels_last_3d}


def memory_formats(ndim: int) -> list[str]:
    """The memory formats torch offers for an ``ndim``-spatial activation: channels-first always, and
    channels-last for 2D (``channels_last``) and 3D (``channels_last_3d``)."""
    return ["contiguous"] + {1: [], 2: ["channels_last"], 3: ["channels_last_3d"]}[ndim]


def _in_format(t, memory_format: str, device: str = "cpu"):
    """A fresh torch-allocated copy of ``t`` on ``device`` in ``memory_format`` (a tensor as torch code
    holds it)."""
    return t.to(device).clone(memory_format=_FORMATS[memory_format] if t.dim() >= 4 else torch.contiguous_format)


def _conv_call(st: ConvSpec, w, b):
    """One convolution stage as a user writes it."""
    symmetric = all(pb == pa for pb, pa in st.padding)
    if st.transposed:
        if symmetric:
            pads = tuple(pb for pb, _ in st.padding)
            return lambda x: _CONV_T[st.ndim](x, w, b, st.stride, pads, st.output_padding, st.groups, st.dilation)
        crop = tuple(slice(pb, -pa or None) for pb, pa in st.padding)  # torch has no per-side crop

        def uncropped(x):
            y = _CONV_T[st.ndim](x, w, b, st.stride, 0, st.output_padding, st.groups, st.dilation)
            return y[(slice(None), slice(None), *crop)]
        return uncropped
    if symmetric:
        pads = tuple(pb for pb, _ in st.padding)
        return lambda x: _CONV[st.ndim](x, w, b, st.stride, pads, st.dilation, st.groups)
    flat = [v for pair in reversed(st.padding) for v in pair]  # F.pad: last dim first
    return lambda x: _CONV[st.ndim](F.pad(x, flat), w, b, st.stride, 0, st.dilation, st.groups)


def _pool_call(st: PoolSpec):
    if st.kind == "max":
        return lambda x: _MAX[st.ndim](x, st.kernel, st.stride, st.padding, st.dilation, st.ceil_mode)
    return lambda x: _AVG[st.ndim](x, st.kernel, st.stride, st.padding, st.ceil_mode, st.count_include_pad)


def _torch_weight(a: np.ndarray, st: ConvSpec, memory_format: str, device: str):
    """A convtvm weight as torch holds it: (out, in/groups, *kernel), contiguous in the data's format."""
    t = torch.from_numpy(np.asarray(a))
    if st.channels_last and not st.transposed:  # convtvm's (*kernel, in/groups, out)
        t = t.permute(st.ndim + 1, st.ndim, *range(st.ndim))
    return _in_format(t, memory_format, device)


def contender(w, inputs, memory_format: str = "contiguous", device: str = "cpu"):
    """(fn, x): the workload ``w`` as a torch user computes it, on convtvm's ``inputs`` (numpy, in
    ``w``'s layout). ``x`` is the data as a channels-first-shaped tensor on ``device`` in
    ``memory_format`` (one of ``memory_formats(w.ndim)``); ``fn(x)`` returns torch's result,
    channels-first shaped. Raises ValueError for another memory format."""
    if memory_format not in memory_formats(w.ndim):
        raise ValueError(f"memory_format={memory_format!r} must be one of {memory_formats(w.ndim)}")
    data = torch.from_numpy(np.asarray(inputs[0]))
    if w.channels_last:
        data = data.movedim(-1, 1)
    x = _in_format(data, memory_format, device)
    feed = iter(inputs[1:])

    def tensor(a):
        return torch.from_numpy(np.asarray(a)).to(device).clone()
    calls = []
    for st in w.stages:
        if isinstance(st, ConvSpec):
            weight = _torch_weight(next(feed), st, memory_format, device)
            bias = tensor(next(feed)) if st.bias else None
            calls.append(_conv_call(st, weight, bias))
            if st.epilogue == "bn_silu":
                gamma, beta, mean, var = (tensor(next(feed)) for _ in range(4))
                calls.append(lambda y, g=gamma, b=beta, m=mean, v=var, eps=st.bn_eps:
                             F.silu(F.batch_norm(y, m, v, g, b, False, 0.0, eps)))
        elif isinstance(st, PoolSpec):
            calls.append(_pool_call(st))
        elif isinstance(st, GlobalPoolSpec):
            calls.append(lambda y, nd=st.ndim: _ADAPTIVE_AVG[nd](y, 1))
        elif isinstance(st, ShuffleSpec):
            calls.append(lambda y, g=st.groups: F.channel_shuffle(y, g))

    def fn(y):
        for call in calls:
            y = call(y)
        return y
    return fn, x


def prepacked(fn, x):
    """``fn`` with its weights prepacked for oneDNN (TorchScript's freeze + ``optimize_for_inference``,
    which reorders each convolution's weights once into oneDNN's blocked layout), or None where torch
    cannot trace it here. The strongest torch that is cheap to build; timed as an extra column."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit: deprecated, still the cheap way
            traced = torch.jit.trace(_Fn(fn).eval(), (x,), check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            frozen(x)
            frozen(x)  # the second call runs the optimised graph
        return frozen
    except Exception:  # noqa: BLE001 - an op TorchScript does not trace: no prepacked column
        return None


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)
