"""The emulated aarch64 device (convtvm.backends.arm, convtvm.backends.arm_runtime): toolchain check, cross-built runtime, cross-compiled
kernels running under qemu-user over minrpc, the real-remote RPC paths (on loopback), and
MetaSchedule measuring on the emulated device.

Needs the Debian packages in convtvm.backends.arm_runtime.APT_PACKAGES; without them the device tests are skipped
locally and fail under CI (CI=true)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest

from convtvm.backends import arm, arm_runtime as runtime


def _tools_or_skip():
    try:
        return runtime.check_tools(need_objdump=True)
    except RuntimeError as e:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):  # as tests/test_arm.py
            raise
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def arm_runtime():
    """Set up the emulated device once per test session (cached across sessions)."""
    _tools_or_skip()
    t0 = time.time()
    info = runtime.setup(verbose=True)
    print(f"arm setup: {time.time() - t0:.1f}s, cached={info['cached']}, {info['runtime_dir']}")
    return info


@pytest.fixture(scope="session")
def arm_session(arm_runtime):
    return arm.open_session()


def _objdump(path) -> str:
    return subprocess.run([runtime.CROSS_OBJDUMP, "-d", str(path)], capture_output=True, text=True,
                          check=True).stdout


NEON = re.compile(r"\bv[0-9]+\.(4s|2d|8h|16b)\b")


def _rel_err(got, ref) -> float:
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


# ------------------------------------------------------------------------------ no tools needed


def test_check_tools_names_packages_when_which_fails(monkeypatch):
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError) as e:
        runtime.check_tools()
    msg = str(e.value)
    for pkg in ("g++-aarch64-linux-gnu", "binutils-aarch64-linux-gnu", "qemu-user"):
        assert pkg in msg
    assert "aarch64-linux-gnu-g++" in msg and "qemu-aarch64" in msg and "apt-get install" in msg


def test_check_tools_with_empty_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="qemu-user"):
        runtime.check_tools()


def test_check_tools_only_qemu_missing(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(runtime.shutil, "which",
                        lambda name: None if name == runtime.QEMU else real_which(name) or f"/usr/bin/{name}")
    with pytest.raises(RuntimeError) as e:
        runtime.check_tools()
    assert "qemu-aarch64 (Debian package qemu-user)" in str(e.value)


def test_open_session_not_set_up_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.ENV_RUNTIME_DIR, str(tmp_path / "nothing-here"))
    with pytest.raises(RuntimeError, match="convtvm device setup arm-emulated"):
        arm.open_session(setup_if_needed=False)
    with pytest.raises(RuntimeError, match="convtvm device setup arm-emulated"):
        arm.ms_create_session(None)


def test_open_session_argument_errors():
    with pytest.raises(ValueError, match="needs key"):
        arm.open_session(tracker="127.0.0.1:9190")
    with pytest.raises(ValueError, match="HOST:PORT"):
        arm.open_session(rpc="localhost")
    with pytest.raises(ValueError, match="not both"):
        arm.open_session(rpc="127.0.0.1:1", tracker="127.0.0.1:2", key="k")


def test_default_target():
    import tvm
    t = runtime.default_target()
    assert t == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "num-cores": 2}
    t2 = runtime.default_target(cpu="cortex-a72", num_cores=4)
    assert t2["mcpu"] == "cortex-a72" and t2["num-cores"] == 4
    target = tvm.target.Target(t2)
    assert str(target.attrs["mtriple"]) == "aarch64-linux-gnu"


def test_cache_dir_is_keyed_by_versions(monkeypatch, tmp_path):
    import tvm
    import tvm_ffi
    monkeypatch.delenv(runtime.ENV_RUNTIME_DIR, raising=False)
    monkeypatch.setenv(runtime.ENV_CACHE, str(tmp_path))
    assert runtime.runtime_dir() == tmp_path / f"arm-runtime-tvm{tvm.__version__}-ffi{tvm_ffi.__version__}"
    assert runtime.runtime_info() is None  # empty cache: not set up


# ------------------------------------------------------------------------------ emulated device


def test_setup_builds_aarch64_runtime_and_caches(arm_runtime):
    info = arm_runtime
    for key in ("runtime", "ffi", "server"):
        assert runtime.elf_machine(info[key]) == runtime.EM_AARCH64 == 183, info[key]
    assert os.access(info["server_command"], os.X_OK)
    wrapper = open(info["server_command"]).read()
    assert "qemu-aarch64" in wrapper and info["sysroot"] in wrapper
    assert os.path.exists(os.path.join(info["sysroot"], "lib", "ld-linux-aarch64.so.1"))
    stamp = runtime.runtime_info()
    assert stamp["tvm"] == info["tvm"] and stamp["recipe"] == runtime.RECIPE_VERSION
    t0 = time.time()
    again = runtime.setup(verbose=False)
    assert again["cached"] and again["runtime_dir"] == info["runtime_dir"]
    assert time.time() - t0 < 30


def test_cli_entry_on_cached_runtime(arm_runtime, capsys):
    assert runtime.main(["--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cached"] and out["runtime_dir"] == arm_runtime["runtime_dir"]


def _vadd(n=1024):
    import tvm
    from tvm import te
    a = te.placeholder((n,), name="A")
    b = te.placeholder((n,), name="B")
    c = te.compute((n,), lambda i: a[i] + b[i], name="C")
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


def _conv_mod(n=1, cin=8, hw=16, cout=16, k=3, pad=1):
    import tvm
    from tvm import te, topi
    data = te.placeholder((n, cin, hw, hw), name="data")
    w = te.placeholder((cout, cin, k, k), name="w")
    out = topi.nn.conv2d_nchw(data, w, stride=1, padding=pad, dilation=1)
    return tvm.IRModule({"main": te.create_prim_func([data, w, out])}), [int(x) for x in out.shape]


def test_vadd_neon_runs_on_emulated_device(arm_session, tmp_path):
    import tvm
    lib = tvm.compile(_vadd(), target=tvm.target.Target(runtime.default_target()))
    path = runtime.export_library(lib, tmp_path / "vadd.so")
    assert runtime.elf_machine(path) == runtime.EM_AARCH64
    asm = _objdump(path)
    assert NEON.search(asm), "no NEON vector instruction in the vector add"
    mod = arm.load_module(arm_session, path)
    dev = arm_session.cpu()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(1024).astype("float32"), rng.standard_normal(1024).astype("float32")
    c = tvm.runtime.empty((1024,), "float32", dev)
    mod["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), c)
    np.testing.assert_array_equal(c.numpy(), a + b)


def test_conv2d_runs_on_emulated_device(arm_session, tmp_path):
    import torch
    import tvm
    mod, out_shape = _conv_mod()
    lib = tvm.compile(mod, target=tvm.target.Target(runtime.default_target()))
    path = runtime.export_library(lib, tmp_path / "conv.so")
    assert NEON.search(_objdump(path)), "no NEON vector instruction in the conv2d"
    rt = arm.load_module(arm_session, path)
    dev = arm_session.cpu()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 8, 16, 16)).astype("float32")
    w = rng.standard_normal((16, 8, 3, 3)).astype("float32")
    y = tvm.runtime.empty(out_shape, "float32", dev)
    rt["main"](tvm.runtime.tensor(x, dev), tvm.runtime.tensor(w, dev), y)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    assert _rel_err(y.numpy(), ref) < 1e-4
    # the remote time evaluator (what MetaSchedule uses) works too
    res = rt.time_evaluator("main", dev, number=1, repeat=1)(tvm.runtime.tensor(x, dev),
                                                            tvm.runtime.tensor(w, dev), y)
    assert res.mean > 0


def test_relax_vm_runs_on_emulated_device(arm_session, tmp_path):
    """A Relax VM executable (serialized by the host, read by the device runtime: exercises the
    third_party/tvm stream/serializer headers) runs over the minrpc session."""
    import torch
    import tvm
    from tvm import relax
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 4, 3, 3)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 8, 8), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1))
            out = bb.emit_output(bb.emit(relax.op.nn.relu(y)))
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), target=tvm.target.Target(runtime.default_target()))
    path = runtime.export_library(ex, tmp_path / "relax.so")
    dev = arm_session.cpu()
    vm = relax.VirtualMachine(arm.load_module(arm_session, path), dev)
    xv = rng.standard_normal((1, 4, 8, 8)).astype("float32")
    got = vm["main"](tvm.runtime.tensor(xv, dev)).numpy()
    ref = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(xv), torch.from_numpy(w), padding=1)).numpy()
    assert _rel_err(got, ref) < 1e-4


# ------------------------------------------------------------------------------ real-remote paths


@pytest.mark.slow
def test_rpc_and_tracker_paths_on_loopback(tmp_path, monkeypatch):
    """open_session(rpc=...) / (tracker=..., key=...) and load_module's upload path, against a
    host (x86) TVM RPC server and tracker on 127.0.0.1 (stand-ins for a real aarch64 board)."""
    import tvm
    # the servers' upload folders: terminated, a server never removes its own
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    from tvm import rpc
    from tvm.rpc.tracker import Tracker

    lib = tvm.compile(_vadd(64), target="llvm")
    path = str(tmp_path / "vadd_host.so")
    lib.export_library(path)
    a = np.arange(64, dtype="float32")

    def check(sess):
        dev = sess.cpu()
        m = arm.load_module(sess, path)
        c = tvm.runtime.empty((64,), "float32", dev)
        m["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(a, dev), c)
        np.testing.assert_array_equal(c.numpy(), 2 * a)

    server = rpc.Server(host="127.0.0.1", port=9190, port_end=9290)
    try:
        check(arm.open_session(rpc=f"127.0.0.1:{server.port}"))
    finally:
        server.terminate()
    tracker = Tracker(host="127.0.0.1", port=9300, port_end=9400)
    server = rpc.Server(host="127.0.0.1", port=9190, port_end=9290, key="convtvm-test",
                        tracker_addr=("127.0.0.1", tracker.port))
    try:
        time.sleep(1.0)  # let the server register
        check(arm.open_session(tracker=f"127.0.0.1:{tracker.port}", key="convtvm-test"))
    finally:
        server.terminate()
        tracker.terminate()


# ------------------------------------------------------------------------------ MetaSchedule

# MetaSchedule measuring on the emulated device: tests/test_arm.py::test_tuning_over_rpc_on_the_emulated_device


# ------------------------------------------------------------------------------ a whole network


def test_efficientnet_v2_s_runs_on_emulated_device(arm_runtime, tmp_path, seed):
    """compile_model(target="arm"): EfficientNetV2-S cross-compiled into one Relax VM executable,
    run on the emulated aarch64 device (called like an x86 model, and again after export/load),
    matches torch; the convolutions are convtvm's (NHWC on ARM, as schedules/arm.json says)."""
    import torch

    import convtvm
    from convtvm import network
    from convtvm.models import seeded_model
    model = seeded_model("efficientnet_v2_s", seed=0, input_size=64)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    t0 = time.time()
    net = network.compile_model(model, [x], target="arm")
    print(f"\ncompile for arm: {time.time() - t0:.1f}s {net!r}")
    assert net.target.kind == "arm" and not net.target.backend.runs_in_process()
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert net.lowered_ops["relax.nn.conv2d"] == convs
    with torch.no_grad():
        ref = model(x).numpy()
    t0 = time.time()
    y = net(x)
    print(f"run on the emulated device: {time.time() - t0:.1f}s")
    assert isinstance(y, torch.Tensor) and y.shape == (1, 1000)
    # tolerance as tests/test_graph.py's: 1e-3 of max|ref|, or 5x torch's own float32 error there
    with torch.no_grad():
        r64 = model.double()(x.double()).numpy()
    tol = max(1e-3, 5 * _rel_err(ref, r64))
    assert _rel_err(y.numpy().astype(np.float64), r64) <= tol
    path = net.export(tmp_path / "effnet_arm.so")
    assert runtime.elf_machine(path) == 183  # EM_AARCH64
    manifest = json.loads(open(path + ".json").read())
    assert manifest["kind"] == "model" and manifest["target"]["kind"] == "arm"
    again = convtvm.load(path)
    np.testing.assert_allclose(again(x.numpy()), y.numpy(), rtol=0, atol=1e-6)
