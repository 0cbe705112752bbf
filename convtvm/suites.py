"""Named workload tables.

``ansor``: the Ansor single-op conv suite (C1D, C2D, C3D, GRP, DIL, DEP, T2D) with the shapes of
``tvm/s_tir/meta_schedule/testing/te_workload.py`` CONFIGS, at batch 1, as convtvm workloads.
``extras``: the other variants on MobileNet / ShuffleNet / EfficientNet shapes.
Layouts: channels-last (NWC, NHWC, NDHWC; weights (*kernel, in, out)), as te_workload has them,
vectorises best, mostly (Zen 3: DEP-2 tuned 0.53 ms channels-first, 0.09 ms channels-last; on the
Xeon, with AVX-512, 0.08 against 0.07, and its log ships the channels-first depthwise records too).
Two ops whose channels-first records beat PyTorch keep that layout: GRP-2 (2.2x) and C1D-2.
SHG is channels-first too: its shuffle folds into the conv's output channel (a whole plane per
channel there, one lane of a gather in channels-last).
The benchmark times PyTorch on each in both layouts and compares with its faster one.
``representative``: one small-to-medium shape per variant, used by ``convtvm check``.
``transfer``: common CNN layers (ResNet-50, MobileNetV2, VGG-16) in both layouts that no shipped log
holds (``tests/test_borrow.py`` checks): how well records borrowed from other shapes transfer.
"""

from __future__ import annotations

import json

from .params import LAYOUTS
from .variants import REGISTRY, Workload, from_json, workload


def _conv(variant, hw, ci, co, k, s, p, d=1, g=1, channels_last=True):
    return variant, dict(in_channels=ci, out_channels=co, input_size=hw, kernel_size=k, stride=s, padding=p,
                         dilation=d, groups=g, layout=LAYOUTS[len(hw)][int(channels_last)])


def _channels_last(variant, **params):
    return variant, dict(params, layout=LAYOUTS[len(params["input_size"])][1])


ANSOR: dict[str, tuple[str, dict]] = {
    # C1D: (N, L, CI, CO, kernel, stride, padding)
    "C1D-1": _conv("conv1d", (256,), 64, 128, 3, 2, 1),
    "C1D-2": _conv("conv1d", (128,), 128, 256, 1, 2, 0, channels_last=False),
    "C1D-3": _conv("conv1d", (64,), 256, 256, 5, 1, 2),
    "C1D-4": _conv("conv1d", (32,), 512, 512, 3, 1, 1),
    # C2D: ResNet-18 layers
    "C2D-1": _conv("conv2d", (224, 224), 3, 64, 7, 2, 3),
    "C2D-2": _conv("conv2d", (56, 56), 64, 64, 1, 1, 0),
    "C2D-3": _conv("conv2d", (14, 14), 256, 256, 3, 1, 1),
    "C2D-4": _conv("conv2d", (7, 7), 512, 512, 3, 1, 1),
    # C3D: depth 16
    "C3D-1": _conv("conv3d", (16, 224, 224), 3, 64, 7, 2, 3),
    "C3D-2": _conv("conv3d", (16, 56, 56), 64, 64, 1, 1, 0),
    "C3D-3": _conv("conv3d", (16, 14, 14), 256, 256, 3, 1, 1),
    "C3D-4": _conv("conv3d", (16, 7, 7), 512, 512, 3, 1, 1),
    # GRP: groups 4
    "GRP-1": _conv("group_conv2d", (56, 56), 64, 128, 3, 2, 1, g=4),
    "GRP-2": _conv("group_conv2d", (56, 56), 64, 64, 1, 1, 0, g=4, channels_last=False),
    "GRP-3": _conv("group_conv2d", (14, 14), 256, 256, 3, 1, 1, g=4),
    "GRP-4": _conv("group_conv2d", (7, 7), 512, 512, 3, 1, 1, g=4),
    # DIL: dilation 2
    "DIL-1": _conv("dilated_conv2d", (224, 224), 3, 64, 7, 2, 3, d=2),
    "DIL-2": _conv("dilated_conv2d", (56, 56), 64, 64, 1, 1, 0, d=2),
    "DIL-3": _conv("dilated_conv2d", (14, 14), 256, 256, 3, 1, 1, d=2),
    "DIL-4": _conv("dilated_conv2d", (7, 7), 512, 512, 3, 1, 1, d=2),
    # DEP: MobileNet depthwise layers
    "DEP-1": _channels_last("depthwise_conv2d", in_channels=32, input_size=(112, 112), kernel_size=3, padding=1),
    "DEP-2": _channels_last("depthwise_conv2d", in_channels=64, input_size=(112, 112), kernel_size=3, stride=2,
                             padding=1),
    "DEP-3": _channels_last("depthwise_conv2d", in_channels=512, input_size=(14, 14), kernel_size=3, stride=2,
                             padding=1),
    "DEP-4": _channels_last("depthwise_conv2d", in_channels=1024, input_size=(7, 7), kernel_size=3, padding=1),
    # T2D: DCGAN transposed convolutions
    "T2D-1": _conv("conv_transpose2d", (4, 4), 512, 256, 4, 2, 1),
    "T2D-2": _conv("conv_transpose2d", (8, 8), 256, 128, 4, 2, 1),
    "T2D-3": _conv("conv_transpose2d", (16, 16), 128, 64, 4, 2, 1),
    "T2D-4": _conv("conv_transpose2d", (32, 32), 64, 3, 4, 2, 1),
}

EXTRAS: dict[str, tuple[str, dict]] = {
    # MobileNetV2 block: 3x3 depthwise + 1x1 pointwise, 144 channels at 28x28
    "DWS": _channels_last("depthwise_separable_conv2d", in_channels=144, out_channels=32, input_size=(28, 28),
                           kernel_size=3, padding=1),
    # Inception-style 7x1 / 1x7 factorisation at 17x17
    "SSC": _channels_last("spatially_separable_conv2d", in_channels=128, out_channels=128, input_size=(17, 17),
                          kernel_size=7, padding=3),
    # Flattened conv at 28x28
    "FLT": _channels_last("flattened_conv2d", in_channels=64, out_channels=64, input_size=(28, 28), kernel_size=3,
                          padding=1),
    # ShuffleNet v1 unit (g=4, 272 channels at 28x28)
    "SHG": ("shuffle_group_conv2d", dict(in_channels=272, out_channels=272, input_size=(28, 28),
                                        kernel_size=1, groups=4)),
    "PWG": _channels_last("pointwise_group_conv2d", in_channels=240, out_channels=240, input_size=(28, 28), groups=3),
    # EfficientNetV2-S stem conv with folded BN + SiLU
    "CBS": _channels_last("conv2d_bn_silu", in_channels=3, out_channels=24, input_size=(224, 224), kernel_size=3,
                          stride=2, padding=1),
    # Transposed 1D (WaveNet-like upsampling) and 3D (V-Net decoder)
    "T1D": _channels_last("conv_transpose1d", in_channels=256, out_channels=128, input_size=(64,), kernel_size=4,
                          stride=2, padding=1),
    "T3D": _channels_last("conv_transpose3d", in_channels=64, out_channels=32, input_size=(8, 16, 16),
                          kernel_size=2, stride=2),
}

# One quick, non-trivial shape per variant, with odd sizes, asymmetric padding, stride + dilation, groups.
REPRESENTATIVE: dict[str, dict] = {
    "conv1d": dict(in_channels=8, out_channels=12, input_size=(37,), kernel_size=5, stride=2, padding=((1, 2),),
                   dilation=2, groups=2, bias=True),
    "conv2d": dict(in_channels=16, out_channels=24, input_size=(23, 19), kernel_size=3, stride=2,
                   padding=((1, 0), (2, 1)), dilation=2, groups=4, bias=True),
    "conv3d": dict(in_channels=6, out_channels=9, input_size=(7, 9, 11), kernel_size=3, stride=(1, 2, 2), padding=1,
                   dilation=(1, 1, 2), groups=3, bias=True),
    "group_conv1d": dict(in_channels=12, out_channels=18, input_size=(29,), kernel_size=3, padding=1, groups=3),
    "group_conv2d": dict(in_channels=16, out_channels=32, input_size=(15, 17), kernel_size=3, stride=2, padding=1,
                         groups=4, bias=True),
    "group_conv3d": dict(in_channels=8, out_channels=8, input_size=(5, 9, 7), kernel_size=3, padding=1, groups=2),
    "depthwise_conv1d": dict(in_channels=16, input_size=(33,), kernel_size=5, padding=2, channel_multiplier=2),
    "depthwise_conv2d": dict(in_channels=24, input_size=(21, 17), kernel_size=3, stride=2, padding=1, bias=True),
    "depthwise_conv3d": dict(in_channels=8, input_size=(5, 11, 9), kernel_size=3, padding=1, channel_multiplier=2),
    "conv_transpose1d": dict(in_channels=8, out_channels=6, input_size=(13,), kernel_size=4, stride=3, padding=1,
                             output_padding=2, bias=True),
    "conv_transpose2d": dict(in_channels=12, out_channels=8, input_size=(7, 9), kernel_size=3, stride=2, padding=1,
                             output_padding=1, dilation=2, groups=2, bias=True),
    "conv_transpose3d": dict(in_channels=6, out_channels=4, input_size=(3, 5, 4), kernel_size=3, stride=2, padding=1),
    "max_pool1d": dict(channels=8, input_size=(31,), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    "max_pool2d": dict(channels=8, input_size=(17, 15), kernel_size=3, stride=2, padding=1, dilation=2),
    "max_pool3d": dict(channels=4, input_size=(7, 9, 8), kernel_size=2, stride=2, ceil_mode=True),
    "avg_pool1d": dict(channels=8, input_size=(31,), kernel_size=4, stride=3, padding=2, ceil_mode=True,
                       count_include_pad=False),
    "avg_pool2d": dict(channels=8, input_size=(17, 15), kernel_size=3, stride=2, padding=1, count_include_pad=False),
    "avg_pool3d": dict(channels=4, input_size=(7, 9, 8), kernel_size=3, stride=2, padding=1, ceil_mode=True),
    "global_avg_pool2d": dict(channels=32, input_size=(7, 9)),
    "pointwise_conv2d": dict(in_channels=24, out_channels=40, input_size=(14, 15), bias=True),
    "pointwise_group_conv2d": dict(in_channels=24, out_channels=36, input_size=(13, 14), groups=3),
    "depthwise_separable_conv2d": dict(in_channels=16, out_channels=24, input_size=(19, 21), kernel_size=3,
                                       stride=2, padding=1, bias=True),
    "dilated_conv2d": dict(in_channels=8, out_channels=16, input_size=(21, 19), kernel_size=3, padding=2, dilation=2),
    "spatially_separable_conv2d": dict(in_channels=8, out_channels=12, input_size=(17, 19), kernel_size=5,
                                       padding=2, bias=True),
    "flattened_conv2d": dict(in_channels=8, out_channels=16, input_size=(15, 13), kernel_size=3, padding=1),
    "channel_shuffle": dict(channels=24, groups=3, input_size=(9, 7)),
    "shuffle_group_conv2d": dict(in_channels=24, out_channels=24, input_size=(15, 13), kernel_size=3, padding=1,
                                 groups=3),
    "conv2d_bn_silu": dict(in_channels=8, out_channels=16, input_size=(19, 17), kernel_size=3, stride=2, padding=1),
}

# The three shapes the fallback schedules are reported on (torch's default, channels-first layout).
SPOTCHECK: dict[str, tuple[str, dict]] = {
    "conv3x3-64-56": ("conv2d", dict(in_channels=64, out_channels=64, input_size=(56, 56), kernel_size=3,
                                     padding=1)),
    "dw3x3-144-28": ("depthwise_conv2d", dict(in_channels=144, input_size=(28, 28), kernel_size=3, padding=1)),
    "t4x4s2-512-256-4": ("conv_transpose2d", dict(in_channels=512, out_channels=256, input_size=(4, 4),
                                                  kernel_size=4, stride=2, padding=1)),
}


def _both_layouts(table: dict) -> dict:
    return {f"{name}-{layout}": (variant, dict(kw, layout=layout))
            for layout in ("NCHW", "NHWC") for name, (variant, kw) in table.items()}


# name: <network>-<kernel>[s<stride>]-<in>[-<out>]-<input size>, in channels-first and channels-last
TRANSFER: dict[str, tuple[str, dict]] = _both_layouts({
    "R50-1x1-256-64-56": _conv("conv2d", (56, 56), 256, 64, 1, 1, 0),
    "R50-3x3-64-56": _conv("conv2d", (56, 56), 64, 64, 3, 1, 1),
    "R50-3x3s2-128-56": _conv("conv2d", (56, 56), 128, 128, 3, 2, 1),
    "R50-1x1-512-128-28": _conv("conv2d", (28, 28), 512, 128, 1, 1, 0),
    "MV2-1x1-144-24-56": _conv("conv2d", (56, 56), 144, 24, 1, 1, 0),
    "MV2-dw3x3-144-56": ("depthwise_conv2d", dict(in_channels=144, input_size=(56, 56), kernel_size=3, padding=1)),
    "MV2-dw3x3s2-96-112": ("depthwise_conv2d", dict(in_channels=96, input_size=(112, 112), kernel_size=3, stride=2,
                                                    padding=1)),
    "MV2-dw3x3-384-14": ("depthwise_conv2d", dict(in_channels=384, input_size=(14, 14), kernel_size=3, padding=1)),
    "VGG-3x3-128-256-56": _conv("conv2d", (56, 56), 128, 256, 3, 1, 1),
})

SUITES = {"ansor": ANSOR, "extras": EXTRAS, "all": {**ANSOR, **EXTRAS}, "spotcheck": SPOTCHECK,
          "transfer": TRANSFER}


def representative() -> dict[str, Workload]:
    missing = set(REGISTRY) - set(REPRESENTATIVE)
    assert not missing, f"no representative shape for {missing}"
    return {name: workload(name, **REPRESENTATIVE[name]) for name in REGISTRY}


def suite(name: str) -> dict[str, Workload]:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    return {key: workload(v, **kw) for key, (v, kw) in SUITES[name].items()}


def load_file(path) -> dict[str, Workload]:
    """A JSON file of workloads: a list of {"variant": ..., params...} or {name: {...}}. Raises
    ValueError naming the file (and the workload) for anything else."""
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a JSON workload file ({e})") from None
    if not isinstance(data, (dict, list)):
        raise ValueError(f"{path}: a workload file holds a list of workloads or an object of named ones")
    items = data.items() if isinstance(data, dict) else ((f"w{i}", d) for i, d in enumerate(data))
    out = {}
    for name, d in items:
        if not isinstance(d, dict) or "variant" not in d:
            raise ValueError(f"{path}: workload {name!r} must be an object with a \"variant\" and its parameters")
        try:
            out[name] = from_json(d)
        except ValueError as e:
            raise ValueError(f"{path}: workload {name!r}: {e}") from None
    return out
