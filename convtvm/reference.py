"""PyTorch references for the stages of a Workload (torch.nn.functional). Channels-last workloads run
on torch's channels_last view of the same memory (no copies), channels-first ones as usual."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .params import ConvSpec, GlobalPoolSpec, PoolSpec, ShuffleSpec

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _torch_pad(pairs) -> list[int]:
    """((b0, a0), (b1, a1)) -> F.pad's last-dim-first list."""
    return [v for pair in reversed(pairs) for v in pair]


def conv(x, w, b, st: ConvSpec):
    """``x`` channels-first (a view of channels-last data for a channels-last stage)."""
    if st.channels_last and not st.transposed:  # (*kernel, in, out) -> (out, in, *kernel)
        w = w.permute(st.ndim + 1, st.ndim, *range(st.ndim))
    if st.transposed:
        y = _CONV_T[st.ndim](x, w, b, st.stride, 0, st.output_padding, st.groups, st.dilation)
        crop = [slice(None), slice(None)] + [slice(pb, y.shape[2 + i] - pa) for i, (pb, pa) in enumerate(st.padding)]
        y = y[tuple(crop)]
    else:
        y = _CONV[st.ndim](F.pad(x, _torch_pad(st.padding)), w, b, st.stride, 0, st.dilation, st.groups)
    return y


def bn_silu(y, gamma, beta, mean, var, st: ConvSpec):
    return F.silu(F.batch_norm(y, mean, var, gamma, beta, False, 0.0, st.bn_eps))


def pool(x, st: PoolSpec):
    if st.kind == "max":
        return _MAX[st.ndim](x, st.kernel, st.stride, st.padding, st.dilation, st.ceil_mode)
    return _AVG[st.ndim](x, st.kernel, st.stride, st.padding, st.ceil_mode, st.count_include_pad)


def torch_fn(workload):
    """A function of torch tensors computing the workload with torch.nn.functional."""

    def f(*ts):
        feed = iter(ts[1:])
        x = ts[0].movedim(-1, 1) if workload.channels_last else ts[0]  # channels-last: torch's channels_last view
        for st in workload.stages:
            if isinstance(st, ConvSpec):
                w = next(feed)
                b = next(feed) if st.bias else None
                x = conv(x, w, b, st)
                if st.epilogue == "bn_silu":
                    x = bn_silu(x, *[next(feed) for _ in range(4)], st)
            elif isinstance(st, PoolSpec):
                x = pool(x, st)
            elif isinstance(st, GlobalPoolSpec):
                x = x.mean(dim=tuple(range(2, 2 + st.ndim)), keepdim=True)
            elif isinstance(st, ShuffleSpec):
                x = F.channel_shuffle(x, st.groups)
        return x.movedim(1, -1) if workload.channels_last else x

    return f


def run(workload, xs) -> np.ndarray:
    """Run the workload in PyTorch on numpy (or torch) inputs; returns numpy."""
    compute_dtype = torch.float32 if workload.dtype == "float16" else getattr(torch, workload.dtype)
    ts = [torch.as_tensor(np.asarray(x)).to(compute_dtype) for x in xs]
    with torch.no_grad():
        y = torch_fn(workload)(*ts)
    return y.contiguous().numpy().astype(workload.dtype)
