"""A compiled module as a user calls, binds, exports and loads it: torch tensors of any alignment and
stride, bound weights, files written atomically and only over regular files, a sealed manifest."""

import json
import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

import convtvm
from convtvm import artifact, module, suites
from convtvm.records.log import TuningLog
from convtvm.targets import ROOT
from conftest import rel_err


@pytest.fixture(scope="module")
def nhwc():
    w = convtvm.workload("conv2d", in_channels=16, out_channels=16, input_size=(9, 9), padding=1, layout="NHWC",
                         bias=True)
    return w, convtvm.build(w, "x86", tuning_log=None)


def _misaligned(a: np.ndarray) -> torch.Tensor:
    """``a`` as a torch tensor whose data starts 4 bytes past a 64-byte boundary (as x[1:] of a batch)."""
    buf = torch.zeros(a.size + 16, dtype=torch.float32)
    base = (64 - buf.data_ptr() % 64) % 64 // 4
    t = buf[base + 1:base + 1 + a.size].view(a.shape)
    t.copy_(torch.from_numpy(a))
    assert t.data_ptr() % 64 == 4
    return t


def test_misaligned_and_strided_torch_inputs_are_copied_and_give_torchs_answer(nhwc, seed):
    """A channels-last kernel assumes 64-byte aligned, dense inputs: a misaligned one (torch.from_numpy,
    x[1:]) segfaulted, a strided one read wrong memory. Both must give torch's answer."""
    w, m = nhwc
    xs = w.random_inputs(seed=seed)
    ref = w.reference(*xs)
    data, weight, bias = (_misaligned(a) for a in xs)
    assert rel_err(m(data, weight, bias).numpy(), ref) <= 1e-4
    strided = torch.from_numpy(np.ascontiguousarray(np.swapaxes(xs[0], 1, 2))).transpose(1, 2)
    assert not strided.is_contiguous()
    grad = torch.from_numpy(xs[1]).clone().requires_grad_()
    neg = torch._neg_view(torch.from_numpy(-xs[2]))
    assert neg.is_neg()
    assert rel_err(m(strided, grad, neg).numpy(), ref) <= 1e-4
    assert rel_err(m.bind(weight, bias)(data).numpy(), ref) <= 1e-4


def test_an_aligned_dense_torch_input_is_passed_as_it_is():
    x = torch.arange(105.0).view(3, 5, 7)
    assert x.data_ptr() % module.ALIGNMENT == 0
    assert module._torch_arg(x, "data").data_ptr() == x.data_ptr()  # zero-copy
    for odd in (_misaligned(np.ones((3, 5, 7), np.float32)), x.transpose(0, 2)):
        y = module._torch_arg(odd, "data")
        assert y.data_ptr() != odd.data_ptr() and y.data_ptr() % module.ALIGNMENT == 0 and y.is_contiguous()
        assert torch.equal(y, odd)


@pytest.mark.parametrize("bad, message", [([1, 2], "must be a numpy array or a torch tensor, got list"),
                                          (None, "must be a numpy array or a torch tensor, got NoneType")])
def test_call_arguments_that_are_not_arrays_are_refused_by_name(nhwc, bad, message):
    w, m = nhwc
    xs = w.random_inputs()
    with pytest.raises(ValueError, match=f"input 'data' {message}"):
        m(bad, *xs[1:])
    with pytest.raises(ValueError, match=f"input 'weight' {message}"):
        m.bind(bad, xs[2])


def test_bind_gives_what_a_full_call_gives_numpy_and_torch(nhwc, seed):
    w, m = nhwc
    xs = w.random_inputs(seed=seed)
    bound = m.bind(*xs[1:])
    assert np.array_equal(bound(xs[0]), m(*xs))
    y = bound(torch.from_numpy(xs[0]))
    assert isinstance(y, torch.Tensor) and rel_err(y.numpy(), w.reference(*xs)) <= 1e-4
    with pytest.raises(ValueError, match="input 'data' has shape"):
        bound(xs[0][:, 1:])
    with pytest.raises(ValueError, match=r"takes 2 inputs \(weight, bias\), got 1"):
        m.bind(xs[1])


def test_bind_packs_a_tuned_kernels_weights_once(seed):
    """A tuned kernel that reads its weights packed (the shipped depthwise-separable record): the bound
    call runs ``prepacked`` on weights packed at bind, and a change to the caller's weight array after
    binding does not reach it."""
    w, log = suites.suite("extras")["DWS"], ROOT / "tuning_logs" / "x86-znver3"
    m = convtvm.build(w, TuningLog(log).target(), tuning_log=log)  # its own CPU's code runs on a newer one
    assert m.schedule == "tuned" and m.packing is not None
    xs = w.random_inputs(seed=seed)
    ref = w.reference(*xs)
    consts = [x.copy() for x in xs[1:]]
    bound = m.bind(*consts)
    assert bound._fname == "prepacked"
    consts[0][...] = 0  # packed at bind: later edits of the caller's array are not seen
    assert rel_err(bound(torch.from_numpy(xs[0])).numpy(), ref) <= 1e-4


# ------------------------------------------------------------------------------------------ files
def test_export_writes_readable_regular_files_and_load_checks_them(nhwc, tmp_path, seed):
    w, m = nhwc
    path = tmp_path / "conv.so"
    m.export(path)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(os.stat(str(path) + ".json").st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv.so", "conv.so.json"]  # no temp left
    xs = w.random_inputs(seed=seed)
    assert rel_err(convtvm.load(path)(*xs), w.reference(*xs)) <= 1e-4


@pytest.mark.parametrize("kind", ["folder", "manifest folder", "symlink", "empty", "device"])
def test_export_replaces_nothing_but_a_regular_file(nhwc, tmp_path, kind):
    _, m = nhwc
    path = tmp_path / "d.so"
    if kind == "folder":
        path.mkdir()
    elif kind == "manifest folder":
        (tmp_path / "d.so.json").mkdir()
    elif kind == "symlink":
        (tmp_path / "real.so").write_text("keep")
        path.symlink_to(tmp_path / "real.so")
    elif kind == "empty":
        path = ""
    else:
        path = "/dev/null"
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="is empty|only a regular file is ever replaced"):
        m.export(path)
    assert sorted(os.listdir(tmp_path)) == before  # no orphan manifest, no temp file
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    if kind == "symlink":
        assert (tmp_path / "real.so").read_text() == "keep"


@pytest.mark.parametrize("edit", [
    lambda m: m["workload"].update(dilation=2),
    lambda m: m["workload"].update(padding=0),
    lambda m: m["target"]["tvm_target"].update(mcpu="znver3"),
    lambda m: m.update(schedule="tuned"),
    lambda m: m.update(created="2020-01-01T00:00:00Z"),
])
def test_an_edited_manifest_is_refused(nhwc, tmp_path, edit):
    _, m = nhwc
    path = tmp_path / "conv.so"
    m.export(path)
    mpath = tmp_path / "conv.so.json"
    manifest = json.loads(mpath.read_text())
    edit(manifest)
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="edited after export"):
        convtvm.load(path)


@pytest.mark.parametrize("text, message", [("not json", "not valid JSON"), ("", "not valid JSON"),
                                           ("[1, 2]", "must be a JSON object"), ("{}", "has no manifest_sha256")])
def test_a_malformed_manifest_is_refused_by_name(nhwc, tmp_path, text, message):
    _, m = nhwc
    path = tmp_path / "conv.so"
    m.export(path)
    (tmp_path / "conv.so.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        convtvm.load(path)


def test_a_sealed_manifest_without_a_workload_is_refused_by_name(nhwc, tmp_path):
    _, m = nhwc
    path = tmp_path / "conv.so"
    m.export(path)
    mpath = tmp_path / "conv.so.json"
    manifest = json.loads(mpath.read_text())
    del manifest["workload"]
    mpath.write_text(json.dumps(artifact.seal(manifest)))
    with pytest.raises(ValueError, match="lacks a field convtvm needs"):
        convtvm.load(path)


def test_a_module_exported_again_to_the_same_path_loads_its_new_code(tmp_path, seed):
    """The dynamic loader hands back a library already loaded under the same name: loading a module
    re-exported to one path ran the old module's code (wrong shapes, or silently wrong numbers)."""
    path = tmp_path / "op.so"
    for c in (4, 6):
        w = convtvm.workload("conv1d", in_channels=c, out_channels=c, input_size=(11,), kernel_size=3)
        convtvm.build(w, "x86", tuning_log=False).export(path)
        xs = w.random_inputs(seed=seed)
        assert rel_err(convtvm.load(path)(*xs), w.reference(*xs)) <= 1e-4


CHANNELS_FIRST = [("C2D-3", "conv2d"), ("T2D-2", "conv_transpose2d"), ("DEP-2", "depthwise_conv2d")]


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 19), spatial=st.lists(st.integers(1, 13), min_size=1, max_size=3))
def test_the_compiled_relayout_writes_the_channels_last_data(n, c, spatial):
    """relayout.data_to_channels_last on odd channel counts and extents (partial tiles), 1D to 3D."""
    import tvm
    from convtvm import relayout
    variant = {1: "conv1d", 2: "conv2d", 3: "conv3d"}[len(spatial)]
    w = convtvm.workload(variant, batch=n, in_channels=c, out_channels=2, input_size=tuple(spatial), kernel_size=1)
    lib = tvm.compile(tvm.IRModule({"main": relayout.data_to_channels_last(w)}), target="llvm")
    x = torch.randn(n, c, *spatial)
    y = torch.empty(n, *spatial, c)
    lib[relayout.TO_CHANNELS_LAST](x, y)
    assert torch.equal(y, x.permute(0, *range(2, 2 + len(spatial)), 1))


@pytest.mark.parametrize("name, variant", CHANNELS_FIRST)
def test_a_channels_first_workload_runs_its_channels_last_twins_record(name, variant, tmp_path, seed):
    """Without records of its own, a channels-first (torch-layout) workload runs the tuned kernel of
    its channels-last twin, with the layouts changed around it; through every call path."""
    from convtvm.variants import replace_params
    log = ROOT / "tuning_logs" / "x86-znver3"
    info = TuningLog(log).target()  # its own CPU's code runs on a newer one
    w = replace_params(suites.suite("ansor")[name], layout=None)
    assert w.params["layout"] in ("NCHW",) and w.variant == variant
    m = convtvm.build(w, info, tuning_log=log)
    assert m.schedule == "tuned" and m.kernel.params["layout"] == "NHWC" and "on the NHWC kernel" in repr(m)
    xs = w.random_inputs(seed=seed)
    ref = w.reference(*xs)
    ts = [torch.from_numpy(x) for x in xs]
    assert rel_err(m(*xs), ref) <= 1e-4
    assert rel_err(m(*ts).numpy(), ref) <= 1e-4
    assert rel_err(m(ts[0].contiguous(memory_format=torch.channels_last), *ts[1:]).numpy(), ref) <= 1e-4
    bound = m.bind(*ts[1:])
    assert rel_err(bound(ts[0]).numpy(), ref) <= 1e-4 and rel_err(bound(xs[0]), ref) <= 1e-4
    # the data's relayout is compiled beside the kernel; a strided or offset tensor takes the copy
    assert m._to_channels_last is not None
    wide = torch.zeros(*ts[0].shape[:-1], ts[0].shape[-1] + 3)
    wide[..., 1:-2] = ts[0]
    assert rel_err(bound(wide[..., 1:-2]).numpy(), ref) <= 1e-4
    again = convtvm.load(m.export(tmp_path / "cf.so"))
    assert again.kernel.params["layout"] == "NHWC" and rel_err(again(*xs), ref) <= 1e-4
    assert again._to_channels_last is not None and rel_err(again.bind(*ts[1:])(ts[0]).numpy(), ref) <= 1e-4
    fallback = convtvm.build(w, info, tuning_log=False)
    assert fallback.kernel is fallback.workload and fallback.schedule == "fallback"  # its own kernel


def test_a_bound_twin_gives_each_call_its_own_answer(seed):
    """The relayout writes into a buffer it keeps: calls in turn and from several threads each give
    their own input's answer, and a later call does not overwrite an earlier output."""
    import threading
    from convtvm.variants import replace_params
    log = ROOT / "tuning_logs" / "x86-znver3"
    w = replace_params(suites.suite("ansor")["DEP-2"], layout=None)
    m = convtvm.build(w, TuningLog(log).target(), tuning_log=log)
    assert m.kernel is not w and m._to_channels_last is not None
    inputs = [w.random_inputs(seed=seed + i) for i in range(4)]
    bound = m.bind(*[torch.from_numpy(x) for x in inputs[0][1:]])
    refs = [w.reference(xs[0], *inputs[0][1:]) for xs in inputs]
    data = [torch.from_numpy(xs[0]) for xs in inputs]
    first, second = bound(data[0]), bound(data[1])
    assert rel_err(first.numpy(), refs[0]) <= 1e-4 and rel_err(second.numpy(), refs[1]) <= 1e-4
    grad = data[2].clone().requires_grad_(True)
    assert rel_err(bound(grad).numpy(), refs[2]) <= 1e-4
    errors = []

    def worker(i):
        for _ in range(10):
            errors.append(rel_err(bound(data[i]).numpy(), refs[i]))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 40 and max(errors) <= 1e-4
