"""Every variant against PyTorch on fresh random inputs (x86, untuned fallback schedules)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import convtvm
from convtvm import suites
from convtvm.variants import REGISTRY
from conftest import rel_err

TOL = 1e-4  # float32: max|y - ref| <= 1e-4 * max|ref|

# Several configurations per variant: the representative shape plus odd sizes, asymmetric
# padding, stride together with dilation, groups, and the 1D/3D forms.
EXTRA = [
    ("conv1d", dict(in_channels=3, out_channels=5, input_size=(17,), kernel_size=3, padding="same", dilation=3)),
    ("conv1d", dict(in_channels=4, out_channels=4, input_size=(9,), kernel_size=9, padding="valid", bias=True)),
    ("conv2d", dict(in_channels=3, out_channels=8, input_size=(11, 13), kernel_size=(3, 5), stride=(2, 1),
                    padding=((0, 2), (1, 3)), dilation=(2, 1))),
    ("conv2d", dict(in_channels=8, out_channels=8, input_size=(9, 7), kernel_size=3, padding=1, layout="NHWC",
                    bias=True)),
    ("conv2d", dict(in_channels=12, out_channels=6, input_size=(13, 10), kernel_size=3, stride=2, padding=((2, 0), (0, 1)),
                    dilation=2, groups=3, layout="NHWC")),
    ("conv2d", dict(in_channels=5, out_channels=7, input_size=(8, 8), kernel_size=4, padding="same")),
    ("conv3d", dict(in_channels=4, out_channels=6, input_size=(5, 6, 7), kernel_size=(1, 3, 3),
                    padding=((0, 0), (1, 0), (0, 2)), stride=(1, 2, 1), dilation=(1, 1, 2), groups=2, bias=True)),
    ("group_conv1d", dict(in_channels=6, out_channels=9, input_size=(21,), kernel_size=4, stride=3, padding=((2, 1),),
                          groups=3, bias=True)),
    ("group_conv2d", dict(in_channels=8, out_channels=8, input_size=(7, 11), kernel_size=3, stride=2, dilation=2,
                          padding=((1, 2), (2, 1)), groups=8)),
    ("group_conv3d", dict(in_channels=6, out_channels=12, input_size=(4, 5, 6), kernel_size=2, stride=2, groups=3)),
    ("depthwise_conv1d", dict(in_channels=5, input_size=(19,), kernel_size=3, stride=2, dilation=2, padding=((0, 3),))),
    ("depthwise_conv2d", dict(in_channels=6, input_size=(13, 9), kernel_size=5, padding=((2, 1), (0, 3)),
                              stride=(1, 2), dilation=(2, 1), channel_multiplier=3)),
    ("depthwise_conv3d", dict(in_channels=3, input_size=(6, 7, 5), kernel_size=3, stride=2, padding=1, bias=True)),
    ("pointwise_conv2d", dict(in_channels=7, out_channels=5, input_size=(5, 9), stride=2)),
    ("pointwise_group_conv2d", dict(in_channels=12, out_channels=8, input_size=(7, 5), groups=4, bias=True)),
    ("depthwise_separable_conv2d", dict(in_channels=6, out_channels=10, input_size=(9, 11), kernel_size=5,
                                        padding=((2, 1), (1, 2)), dilation=(1, 2))),
    ("conv_transpose1d", dict(in_channels=6, out_channels=9, input_size=(11,), kernel_size=3, stride=2, padding=2,
                              dilation=3, output_padding=1, groups=3)),
    ("conv_transpose2d", dict(in_channels=4, out_channels=6, input_size=(5, 7), kernel_size=(4, 3), stride=(2, 3),
                              padding=((1, 2), (0, 3)), output_padding=(1, 2))),
    ("conv_transpose2d", dict(in_channels=8, out_channels=4, input_size=(3, 3), kernel_size=3, padding=4, dilation=3,
                              bias=True)),
    ("conv_transpose3d", dict(in_channels=4, out_channels=6, input_size=(3, 4, 5), kernel_size=(2, 3, 3),
                              stride=(1, 2, 2), padding=(0, 1, 2), output_padding=(0, 1, 0), groups=2, bias=True)),
    ("dilated_conv2d", dict(in_channels=6, out_channels=6, input_size=(15, 14), kernel_size=3, stride=2, dilation=3,
                            padding=((3, 2), (1, 4)), groups=2)),
    ("spatially_separable_conv2d", dict(in_channels=4, out_channels=6, input_size=(12, 9), kernel_size=3, stride=2,
                                        padding=((1, 0), (2, 1)), dilation=2)),
    ("flattened_conv2d", dict(in_channels=5, out_channels=7, input_size=(10, 13), kernel_size=5, stride=2, padding=2,
                              bias=True)),
    ("channel_shuffle", dict(channels=12, groups=4, input_size=(5, 3))),
    ("shuffle_group_conv2d", dict(in_channels=16, out_channels=8, input_size=(9, 9), kernel_size=1, groups=4,
                                  bias=True)),
    ("conv2d_bn_silu", dict(in_channels=6, out_channels=9, input_size=(11, 7), kernel_size=3, padding=((1, 0), (0, 1)),
                            groups=3, bias=True, bn_eps=1e-5)),
    ("max_pool1d", dict(channels=3, input_size=(20,), kernel_size=4, stride=3, padding=2, dilation=2)),
    ("max_pool2d", dict(channels=5, input_size=(11, 10), kernel_size=(3, 2), stride=(2, 3), padding=(1, 1),
                        ceil_mode=True)),
    ("max_pool3d", dict(channels=2, input_size=(5, 6, 7), kernel_size=3, stride=2, padding=1, dilation=(1, 2, 1))),
    ("avg_pool1d", dict(channels=3, input_size=(20,), kernel_size=5, stride=2, padding=2)),
    ("avg_pool2d", dict(channels=4, input_size=(11, 10), kernel_size=3, stride=2, padding=1, ceil_mode=True,
                        count_include_pad=True)),
    ("avg_pool2d", dict(channels=4, input_size=(9, 9), kernel_size=(2, 4), stride=(3, 2), padding=(1, 2),
                        ceil_mode=True, count_include_pad=False)),
    ("avg_pool3d", dict(channels=2, input_size=(5, 7, 6), kernel_size=2, stride=(1, 2, 3), count_include_pad=False,
                        padding=1)),
    ("global_avg_pool2d", dict(channels=5, input_size=(13, 1), batch=3)),
]

CASES = [(name, dict(params)) for name, params in suites.REPRESENTATIVE.items()] + EXTRA


def test_every_variant_has_cases():
    covered = {name for name, _ in CASES}
    assert covered == set(convtvm.variants())
    assert len(convtvm.variants()) >= 28


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_variant_matches_torch(name, params, seed):
    params = dict(params)
    batch = params.pop("batch", 2)
    w = convtvm.workload(name, batch=batch, **params)
    m = convtvm.build(w, target="x86", tuning_log=False)
    assert m.schedule == "fallback"
    xs = w.random_inputs(seed=seed)
    y = m(*xs)
    assert y.shape == tuple(w.output_shape)
    assert rel_err(y, w.reference(*xs)) <= TOL


CHANNELS_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def _channels_first_inputs(w, wf, xs):
    """The same numbers laid out for the channels-first twin ``wf`` of the channels-last ``w``."""
    nd = w.ndim
    out = [np.ascontiguousarray(np.moveaxis(xs[0], -1, 1))]
    for name, x, shape in zip(w.input_names[1:], xs[1:], wf.input_shapes[1:]):
        if name.startswith("weight") and x.shape != shape:  # (*kernel, in, out) -> (out, in, *kernel)
            x = np.ascontiguousarray(np.transpose(x, (nd + 1, nd, *range(nd))))
        out.append(x)
    return out


@pytest.mark.parametrize("name,params", [c for c in CASES if "layout" in REGISTRY[c[0]].defaults],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_channels_last_matches_torch_and_channels_first(name, params, seed):
    """Every variant with a layout parameter computes the same in channels-last tensors (its weights
    (*kernel, in/groups, out), a transposed conv's as torch's)."""
    params = {k: v for k, v in params.items() if k != "batch"}
    w = convtvm.workload(name, batch=2, **{**params, "layout": CHANNELS_LAST[REGISTRY[name].ndim]})
    wf = convtvm.workload(name, batch=2, **{**params, "layout": None})
    assert w.output_shape == (wf.output_shape[0], *wf.output_shape[2:], wf.output_shape[1])
    xs = w.random_inputs(seed=seed)
    y = convtvm.build(w, "x86")(*xs)
    assert rel_err(y, w.reference(*xs)) <= TOL
    yf = convtvm.build(wf, "x86")(*_channels_first_inputs(w, wf, xs))
    assert rel_err(y, np.moveaxis(yf, 1, -1)) <= TOL


@pytest.mark.parametrize("layout", [None, "NHWC"])
def test_channel_shuffle_folds_into_the_conv_before_it(layout, seed):
    """Without bias, the shuffle after a grouped conv is the conv's output channel index (no pass of
    its own); with bias, it stays a stage. Both give torch's result."""
    common = dict(in_channels=12, out_channels=18, input_size=(7, 5), kernel_size=3, padding=((1, 0), (0, 1)),
                  groups=3, layout=layout)
    for bias, stages in ((False, 0), (True, 1)):
        w = convtvm.workload("shuffle_group_conv2d", batch=2, bias=bias, **common)
        assert w.prim_func().script().count('sblock("channel_shuffle') == stages
        xs = w.random_inputs(seed=seed)
        assert rel_err(convtvm.build(w, "x86")(*xs), w.reference(*xs)) <= TOL


def test_workload_api_is_plain_data():
    w = convtvm.workload("conv2d", batch=1, in_channels=64, out_channels=64, input_size=(56, 56), kernel_size=3,
                         stride=1, padding=1, dilation=1, groups=1, bias=True, dtype="float32")
    assert w.output_shape == (1, 64, 56, 56)
    assert w.input_shapes == [(1, 64, 56, 56), (64, 64, 3, 3), (64,)]
    # 2 * MACs + one add per output for the bias
    assert w.flops == 2 * 64 * 56 * 56 * 64 * 9 + 64 * 56 * 56
    assert all(type(d) is int for s in w.input_shapes for d in s)
    xs = w.random_inputs(seed=0)
    assert [x.shape for x in xs] == w.input_shapes and all(x.dtype == np.float32 for x in xs)
    np.testing.assert_array_equal(xs[0], w.random_inputs(seed=0)[0])


def test_torch_in_torch_out_without_copy(seed):
    w = convtvm.workload("depthwise_conv2d", in_channels=8, input_size=(9, 9), kernel_size=3, padding=1)
    m = convtvm.build(w, "x86")
    xs = [torch.from_numpy(x) for x in w.random_inputs(seed=seed)]
    y = m(*xs)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert rel_err(y.numpy(), w.reference(*xs)) <= TOL
    # DLPack: the kernel reads the tensor's own memory, so a change to the input shows up
    xs[0].mul_(2)
    assert rel_err(m(*xs).numpy(), w.reference(*xs)) <= TOL


def test_float64(seed):
    w = convtvm.workload("conv1d", in_channels=3, out_channels=4, input_size=(15,), kernel_size=3, dtype="float64")
    m = convtvm.build(w, "x86")
    xs = w.random_inputs(seed=seed)
    assert rel_err(m(*xs), w.reference(*xs)) <= 1e-12


def test_fast_exp_and_sigmoid_match_float64_over_the_float_range(seed):
    """te_ops.fast_exp (the epilogues' exp: sigmoid, SiLU) element by element against float64 numpy:
    relative error under 1e-6 on [-87, 88] as compiled for x86, and finite (tiny, huge) at -+inf; sigmoid
    and SiLU within a float32 ulp or two of torch's, sigmoid 0 and 1 at -+inf and beyond the clamps."""
    import tvm
    from tvm import te, topi
    from convtvm import te_ops
    from convtvm.targets import resolve
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.linspace(-87, 88, 20001), rng.uniform(-87, 88, 4000), [0, 1e-30, -1e-30],
                        [-1e4, -200, -88.5, 89, 200, 1e4, -np.inf, np.inf]]).astype("float32")
    ph = te.placeholder(x.shape, "float32")
    outs = {"exp": te_ops.fast_exp(ph), "sigmoid": te_ops.sigmoid(ph)}
    outs["silu"] = topi.multiply(ph, outs["sigmoid"])
    got = {}
    for name, out in outs.items():
        f = tvm.compile(te.create_prim_func([ph, out]), target=resolve("x86").target)
        a, b = tvm.runtime.tensor(x), tvm.runtime.tensor(np.zeros_like(x))
        f(a, b)
        got[name] = b.numpy()
    inside = (x >= -87) & (x <= 88)
    ref = np.exp(x[inside].astype(np.float64))
    assert np.abs(got["exp"][inside] / ref - 1).max() < 1e-6
    assert got["exp"][x == -np.inf] < 1e-37 and got["exp"][x == np.inf] > 1e38
    t = torch.from_numpy(x)
    assert np.abs(got["sigmoid"] - torch.sigmoid(t).numpy()).max() <= 2.5e-7
    assert got["sigmoid"][x == -np.inf] < 1e-37 and got["sigmoid"][x == np.inf] == 1
    finite = np.isfinite(x)
    silu_ref = torch.nn.functional.silu(t).numpy()[finite]
    assert np.all(np.abs(got["silu"][finite] - silu_ref) <= 2.5e-7 * np.maximum(np.abs(silu_ref), 1))


def test_export_and_load_in_fresh_process(tmp_path, seed):
    cases = [("conv_transpose2d", suites.REPRESENTATIVE["conv_transpose2d"]),
             ("avg_pool3d", suites.REPRESENTATIVE["avg_pool3d"]),
             ("conv2d_bn_silu", suites.REPRESENTATIVE["conv2d_bn_silu"])]
    expected = {}
    for i, (name, params) in enumerate(cases):
        w = convtvm.workload(name, **params)
        m = convtvm.build(w, "x86")
        path = m.export(tmp_path / f"k{i}.so")
        xs = w.random_inputs(seed=seed)
        np.savez(tmp_path / f"k{i}.npz", *xs)
        expected[i] = m(*xs)
        manifest = (tmp_path / f"k{i}.so.json").read_text()
        assert name in manifest and '"sha256"' in manifest and '"tvm"' in manifest
        assert path.endswith(f"k{i}.so")
    script = textwrap.dedent(f"""
        import numpy as np, convtvm
        for i in range({len(cases)}):
            m = convtvm.load(r"{tmp_path}/k%d.so" % i)
            xs = list(np.load(r"{tmp_path}/k%d.npz" % i).values())
            np.save(r"{tmp_path}/out%d.npy" % i, m(*xs))
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    for i in expected:
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), expected[i])


def test_export_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    w = convtvm.workload("conv1d", in_channels=2, out_channels=2, input_size=(8,), kernel_size=3)
    m = convtvm.build(w, "x86")

    def broken(lib, target, path):
        with open(path, "wb") as f:
            f.write(b"half a library")
        raise RuntimeError("disk full")

    monkeypatch.setattr(convtvm.exports, "write_library", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        m.export(tmp_path / "conv.so")
    assert list(tmp_path.iterdir()) == []


def test_load_rejects_tampered_module(tmp_path):
    w = convtvm.workload("conv1d", in_channels=2, out_channels=2, input_size=(8,), kernel_size=3)
    path = convtvm.build(w, "x86").export(tmp_path / "conv.so")
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="sha256"):
        convtvm.load(path)
