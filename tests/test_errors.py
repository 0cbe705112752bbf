"""Bad input gets a ValueError naming the parameter and the rule, before TVM sees it."""

import numpy as np
import pytest
import torch

import convtvm

BAD_WORKLOADS = [
    (dict(variant="conv2d", in_channels=64, out_channels=64, groups=3), "groups=3 must divide in_channels=64"),
    (dict(variant="conv2d", in_channels=6, out_channels=8, groups=3), "groups=3 must divide out_channels=8"),
    (dict(variant="conv2d", in_channels=0), "in_channels=0 must be a positive integer"),
    (dict(variant="conv2d", out_channels=-4), "out_channels=-4 must be a positive integer"),
    (dict(variant="conv2d", batch=0), "batch=0 must be a positive integer"),
    (dict(variant="conv2d", input_size=(0, 8)), "input_size=(0, 8) must be positive"),
    (dict(variant="conv2d", input_size=(8,)), "input_size=(8,) must be an int or a tuple of 2 ints"),
    (dict(variant="conv2d", kernel_size=0), "kernel_size=0 must be positive"),
    (dict(variant="conv1d", stride=0), "stride=0 must be positive"),
    (dict(variant="conv3d", dilation=(1, 0, 1)), "dilation=(1, 0, 1) must be positive"),
    (dict(variant="conv2d", padding=-1), "must not be negative"),
    (dict(variant="conv2d", padding=((1, -2), (0, 0))), "must not be negative"),
    (dict(variant="conv2d", padding="same", stride=2), "padding='same' requires stride=1"),
    (dict(variant="conv2d", padding="full"), "padding='full' must be an int, a tuple, 'same' or 'valid'"),
    (dict(variant="conv2d", input_size=(4, 4), kernel_size=7), "effective kernel size 7"),
    (dict(variant="conv2d", input_size=(8, 8), kernel_size=3, dilation=4), "effective kernel size 9"),
    (dict(variant="conv_transpose2d", stride=2, output_padding=2), "output_padding=(2, 2) must be smaller than stride"),
    (dict(variant="conv_transpose1d", stride=1, dilation=1, output_padding=1), "must be smaller than stride"),
    (dict(variant="channel_shuffle", channels=10, groups=4), "groups=4 must divide channels=10"),
    (dict(variant="max_pool2d", kernel_size=2, padding=2), "must be at most half of the effective kernel size"),
    (dict(variant="avg_pool2d", padding=((1, 0), (0, 0))), "must be symmetric for pooling"),
    (dict(variant="depthwise_conv2d", channel_multiplier=0), "channel_multiplier=0 must be a positive integer"),
    (dict(variant="conv2d", layout="NCWH"), "layout='NCWH' must be 'NCHW' or 'NHWC'"),
    (dict(variant="conv3d", layout="NHWC"), "layout='NHWC' must be 'NCDHW' or 'NDHWC'"),
    (dict(variant="conv2d", dtype="int7"), "dtype='int7' must be one of"),
    (dict(variant="pointwise_conv2d", kernel_size=3), "pointwise_conv2d takes no parameter kernel_size"),
    (dict(variant="conv2d", channels=3), "conv2d takes no parameter channels"),
    (dict(variant="conv5d"), "unknown variant 'conv5d'"),
    # wrong types (more in test_strict_params.py: the ones issue #31 made errors)
    (dict(variant="conv2d", kernel_size=(3.0, 3)), "kernel_size=(3.0, 3) must hold integers"),
    (dict(variant="conv2d", kernel_size="3"), "kernel_size='3' must be an int or a tuple of 2 ints"),
    (dict(variant="conv2d", kernel_size=(3, 3, 3)), "kernel_size=(3, 3, 3) must be an int or a tuple of 2 ints"),
    (dict(variant="conv1d", stride=[]), "stride=[] must be an int or a tuple of 1 ints"),
    (dict(variant="conv2d", in_channels=16.0), "in_channels=16.0 must be a positive integer"),
    (dict(variant="conv2d", in_channels="16"), "in_channels='16' must be a positive integer"),
    (dict(variant="conv2d", out_channels=None), "out_channels=None must be a positive integer"),
    (dict(variant="conv2d", groups=1.5), "groups=1.5 must be a positive integer"),
    (dict(variant="conv2d", groups=True), "groups=True must be a positive integer"),
    (dict(variant="depthwise_conv2d", in_channels=4.0), "in_channels=4.0 must be a positive integer"),
    (dict(variant="depthwise_conv2d", channel_multiplier=2.0), "channel_multiplier=2.0 must be a positive integer"),
    (dict(variant="depthwise_separable_conv2d", in_channels="8"), "in_channels='8' must be a positive integer"),
    (dict(variant="flattened_conv2d", out_channels=8.0), "out_channels=8.0 must be a positive integer"),
    (dict(variant="channel_shuffle", channels=8.0), "channels=8.0 must be a positive integer"),
    (dict(variant="channel_shuffle", groups="2"), "groups='2' must be a positive integer"),
    (dict(variant="global_avg_pool2d", channels=None), "channels=None must be a positive integer"),
    (dict(variant="conv2d", batch=1.0), "batch=1.0 must be a positive integer"),
    (dict(variant="conv2d", batch=None), "batch=None must be a positive integer"),
    (dict(variant="conv2d", input_size=(8.0, 8)), "input_size=(8.0, 8) must hold integers"),
    (dict(variant="conv_transpose1d", output_padding=-1), "output_padding=-1 must be >= 0"),
    (dict(variant="conv2d", padding=(1.0, 1)), "entries must be ints or (before, after) pairs"),
    (dict(variant="conv2d", padding=((1, 2, 3), (0, 0))), "entries must be ints or (before, after) pairs"),
    (dict(variant="conv2d", padding=(("1", 2), (0, 0))), "entries must be ints or (before, after) pairs"),
    (dict(variant="conv2d", padding=(1, 1, 1)), "must have one entry per spatial dim (2)"),
    (dict(variant="max_pool2d", padding="same"), "padding='same' must be an int or a tuple of 2 ints"),
    (dict(variant="channel_shuffle", layout=["NHWC"]), "layout=['NHWC'] must be 'NCHW' or 'NHWC'"),
    (dict(variant="conv2d", dtype=None), "dtype=None must be one of"),
    (dict(variant="conv2d", dtype="float"), "dtype='float' must be one of"),
    (dict(variant=None), "unknown variant None"),
    (dict(variant="max_pool2d", kernel_size=1, dilation=3, padding=1),
     "must be at most half of the effective kernel size"),
]


@pytest.mark.parametrize("kwargs,message", BAD_WORKLOADS, ids=[m[:40] for _, m in BAD_WORKLOADS])
def test_bad_workload(kwargs, message):
    kwargs = dict(kwargs)
    with pytest.raises(ValueError) as e:
        convtvm.workload(kwargs.pop("variant"), **kwargs)
    assert message in str(e.value)


@pytest.fixture(scope="module")
def conv():
    w = convtvm.workload("conv2d", in_channels=4, out_channels=8, input_size=(9, 9), kernel_size=3, bias=True)
    return w, convtvm.build(w, "x86")


def test_wrong_number_of_inputs(conv):
    w, m = conv
    xs = w.random_inputs()
    with pytest.raises(ValueError, match=r"conv2d takes 3 inputs \(data, weight, bias\), got 2"):
        m(*xs[:2])


def test_wrong_shape(conv):
    w, m = conv
    xs = w.random_inputs()
    xs[1] = np.zeros((8, 4, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"input 'weight' has shape \(8, 4, 3, 2\), expected \(8, 4, 3, 3\)"):
        m(*xs)


def test_wrong_dtype_numpy_and_torch(conv):
    w, m = conv
    xs = w.random_inputs()
    with pytest.raises(ValueError, match="input 'data' has dtype float64, expected float32"):
        m(xs[0].astype(np.float64), *xs[1:])
    ts = [torch.from_numpy(x) for x in xs]
    with pytest.raises(ValueError, match="input 'bias' has dtype float16, expected float32"):
        m(*ts[:2], ts[2].half())


@pytest.mark.parametrize("target,message", [
    ("x87", "unknown target 'x87'; use one of x86, arm, cuda"),
    ({"kind": "opencl"}, "kind must be 'llvm' or 'cuda'"),
])
def test_unknown_target(conv, target, message):
    w, _ = conv
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        convtvm.build(w, target=target)


def test_bad_cuda_arch(conv):
    w, _ = conv
    with pytest.raises(ValueError, match="cuda arch 'ampere' must look like sm_XX"):
        convtvm.build(w, target="cuda", cuda_arch="ampere")


@pytest.mark.parametrize("content, message", [
    ('{"hello": 1}', "workload 'hello' must be an object with a \"variant\""),
    ('[{"in_channels": 4}]', "workload 'w0' must be an object with a \"variant\""),
    ('"conv2d"', "holds a list of workloads or an object of named ones"),
    ('{"a": {"variant": "conv2d", "kernel_size": 3.0}}', "workload 'a': kernel_size"),
])
def test_a_workload_file_that_is_not_one_is_refused_by_name(tmp_path, content, message):
    from convtvm import suites
    path = tmp_path / "w.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        suites.load_file(path)
