"""CUDA: every variant builds for NVIDIA GPUs on a machine without one (nvcc compiles the kernels ahead
of time for the target's arch), the exported .so carries them, and loading without a GPU fails clearly.

Tests marked ``gpu`` run every variant against torch on a GPU and skip, with the reason, without one.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import convtvm
from convtvm import suites
from convtvm.backends import cuda_tools as cuda
from conftest import rel_err

TOL = 1e-4
ARCH = "sm_90"
HAVE_COMPILER = cuda.find_nvcc() is not None or cuda.has_nvrtc()
needs_compiler = pytest.mark.skipif(not HAVE_COMPILER, reason="neither nvcc nor cuda-bindings (NVRTC) is installed")
GPU_ARCH = cuda.device_arch()
needs_gpu = pytest.mark.skipif(GPU_ARCH is None, reason="no CUDA GPU visible to TVM (tvm.cuda(0).exist is False)")
REPS = suites.representative()
# the first shape of each Ansor family (the whole suite is in test_ansor_suite_builds, marked slow)
ANSOR = suites.suite("ansor")
ANSOR_FIRSTS = [k for k in ANSOR if k.endswith("-1")]


@pytest.fixture(scope="module")
def built():
    """Every representative variant built once for sm_90 (the build compiles the kernels with nvcc)."""
    if not HAVE_COMPILER:
        pytest.skip("neither nvcc nor cuda-bindings (NVRTC) is installed")
    return {name: convtvm.build(w, target="cuda") for name, w in REPS.items()}


def _check_kernels(m, arch):
    src = cuda.source(m)
    assert "__global__" in src and "threadIdx.x" in src, "no thread-bound GPU kernel"
    (k,) = cuda.kernels(m)
    assert k.arch == arch
    assert k.names and all(f"void {n}(" in src or f") {n}(" in src for n in k.names)
    n = arch[3:]
    assert ("sass", f"sm_{n}") in k.contents, k.contents  # machine code for the arch
    if k.fmt == "fatbin":
        assert k.binary[:4] == b"\x50\xed\x55\xba"  # fatbin magic
        assert ("ptx", f"compute_{n}") in k.contents
        if "--no-compress" in k.flags:
            assert f".target sm_{n}".encode() in k.binary
    return k


@needs_compiler
@pytest.mark.parametrize("variant", list(REPS))
def test_every_variant_builds_for_sm90(built, variant):
    m = built[variant]
    assert m.schedule == "fallback" and m.target.kind == "cuda"
    assert json.loads(m.target.target_json)["arch"] == ARCH
    k = _check_kernels(m, ARCH)
    assert k.fmt == ("fatbin" if cuda.compiler()[0] == "nvcc" else "cubin")


@needs_compiler
def test_fallback_is_a_real_gpu_schedule(built):
    """Convolutions get the direct rule: a register accumulator, the kernel window unrolled, the bias
    fused into the write-back (one kernel), threads over the innermost output axis."""
    src = cuda.source(built["conv2d"])
    assert "conv_local" in src and src.count("__global__") == 2  # declaration + definition: one kernel
    assert "bias_ptr" in src
    from convtvm.targets import resolve
    info = resolve("cuda")
    mod = info.backend.fallback(REPS["conv2d"].prim_func(), info)
    script = mod.script()
    assert 'scope="local"' in script and "threadIdx.x" in script and "blockIdx.x" in script
    assert mod["main"].attrs["tirx.is_scheduled"]


@needs_compiler
@pytest.mark.parametrize("name", ANSOR_FIRSTS)
def test_ansor_family_builds(name):
    _check_kernels(convtvm.build(ANSOR[name], "cuda"), ARCH)


@needs_compiler
@pytest.mark.parametrize("name", [k for k in ANSOR if k not in ANSOR_FIRSTS])
def test_ansor_suite_schedules_and_generates(name):
    """The other Ansor shapes: scheduled and CUDA C generated (nvcc, ~1 s a shape, is covered above)."""
    with cuda.lazy():
        m = convtvm.build(ANSOR[name], "cuda")
    src = cuda.source(m)
    assert "__global__" in src and "threadIdx.x" in src


@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize("name", list(ANSOR))
def test_ansor_suite_compiles(name):
    _check_kernels(convtvm.build(ANSOR[name], "cuda"), ARCH)


EXTRA = [
    ("conv2d", dict(in_channels=8, out_channels=8, input_size=(9, 7), kernel_size=3, padding=1, layout="NHWC",
                    bias=True)),
    ("conv2d_bn_silu", dict(in_channels=8, out_channels=16, input_size=(19, 17), kernel_size=3, stride=2, padding=1,
                            dtype="float16")),
    ("global_avg_pool2d", dict(channels=64, input_size=(56, 56))),  # few outputs, long sums: dlight Reduction
]


@needs_compiler
@pytest.mark.parametrize("variant, params", EXTRA)
def test_layouts_and_dtypes_build(variant, params):
    _check_kernels(convtvm.build(convtvm.workload(variant, **params), "cuda"), ARCH)


@needs_compiler
def test_second_arch_changes_the_binary(built):
    w = REPS["conv2d_bn_silu"]
    m80 = convtvm.build(w, "cuda", cuda_arch="sm_80")
    k80 = _check_kernels(m80, "sm_80")
    (k90,) = cuda.kernels(built["conv2d_bn_silu"])
    assert ("sass", "sm_90") not in k80.contents
    assert k80.binary != k90.binary
    assert m80.target.tag == "cuda-sm80"


@needs_compiler
def test_export_carries_the_kernels_and_the_arch(built, tmp_path):
    paths = {}
    for arch, m in (("sm_90", built["conv2d_bn_silu"]), ("sm_80", convtvm.build(REPS["conv2d_bn_silu"], "cuda",
                                                                                  cuda_arch="sm_80"))):
        path = m.export(tmp_path / f"k_{arch}.so")
        paths[arch] = path
        manifest = json.loads((tmp_path / f"k_{arch}.so.json").read_text())
        assert manifest["target"]["tvm_target"]["arch"] == arch
        rec = manifest["cuda"]
        assert rec["arch"] == arch and rec["kernels"] == ["main_kernel"]
        assert f"sass:{arch}" in rec["contents"]
        (stored,) = cuda.exported_kernels(path)
        (k,) = cuda.kernels(m)
        assert stored["binary"] == k.binary and stored["format"] == k.fmt  # compiled code, not CUDA source
        data = open(path, "rb").read()
        assert b"__global__" not in data
        if k.fmt == "fatbin" and "--no-compress" in k.flags:
            assert f".target {arch}".encode() in data
    assert cuda.exported_kernels(paths["sm_90"])[0]["binary_sha256"] != \
        cuda.exported_kernels(paths["sm_80"])[0]["binary_sha256"]


@needs_compiler
@pytest.mark.skipif(GPU_ARCH is not None, reason="a GPU is present: loading works there")
def test_load_without_gpu_is_a_clear_error(built, tmp_path):
    path = built["depthwise_separable_conv2d"].export(tmp_path / "dws.so")
    with pytest.raises(RuntimeError, match="no CUDA GPU is present"):
        convtvm.load(path)
    # in a fresh process: an exception and exit status 1, not a crash; TVM's own loader too
    code = textwrap.dedent(f"""
        import sys, convtvm, tvm
        try:
            convtvm.load({str(path)!r})
        except RuntimeError as e:
            print("convtvm:", e)
        try:
            tvm.runtime.load_module({str(path)!r})
        except Exception as e:
            print("tvm:", type(e).__name__, e)
        sys.exit(3)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "convtvm: no CUDA GPU is present" in proc.stdout
    assert "tvm: " in proc.stdout


@needs_compiler
def test_check_cli_builds_without_gpu(built, capsys):
    if GPU_ARCH is not None:
        pytest.skip("a GPU is present: check runs and compares there")
    from convtvm import cli
    assert cli.main(["check", "--target", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "no GPU here, build only" in out
    rows = [ln for ln in out.splitlines() if ln.split() and ln.split()[0] in REPS]
    assert len(rows) == len(REPS) and all(" built " in ln for ln in rows)
    assert f"{len(REPS)} variants built for cuda-sm90" in out


@needs_compiler
def test_runtime_compile_hook_uses_the_build_arch(built):
    """TVM's CUDA runtime JIT-compiles source modules through tvm_callback_cuda_compile (GPU machines):
    convtvm's override hands back the kernels built for the target's arch."""
    import tvm
    import tvm_ffi
    m = convtvm.build(REPS["avg_pool2d"], "cuda", cuda_arch="sm_80")
    src = cuda.source(m)
    hook = tvm_ffi.get_global_func("tvm_callback_cuda_compile")
    with tvm.target.Target({"kind": "cuda", "arch": "sm_80"}):
        assert bytes(hook(src)) == cuda.kernels(m)[0].binary
    assert os.environ.get("TVM_CUDA_COMPILE_MODE") in ("nvcc", "nvrtc")  # for MetaSchedule's worker processes


def test_compiler_choice_and_missing_compiler_error(monkeypatch):
    monkeypatch.setenv("CONVTVM_CUDA_COMPILER", "nvcc")
    monkeypatch.setenv("CONVTVM_NVCC", "/nonexistent/nvcc")
    with pytest.raises(RuntimeError, match="no nvcc was found.*cuda-nvcc"):
        cuda.compiler()
    monkeypatch.setenv("CONVTVM_CUDA_COMPILER", "auto")
    monkeypatch.setattr(cuda, "has_nvrtc", lambda: False)
    with pytest.raises(RuntimeError, match="neither nvcc nor NVRTC.*pip install cuda-bindings"):
        cuda.compiler()
    # through a build: the error reaches the caller intact (a shape no other test compiles)
    w = convtvm.workload("conv1d", in_channels=3, out_channels=5, input_size=(29,), kernel_size=7)
    with pytest.raises(RuntimeError, match="neither nvcc nor NVRTC"):
        convtvm.build(w, "cuda")
    monkeypatch.setenv("CONVTVM_CUDA_COMPILER", "clang")
    with pytest.raises(ValueError, match="must be nvcc, nvrtc or auto"):
        cuda.compiler()


def test_nvcc_flags_target_the_arch():
    flags = cuda.nvcc_flags("sm_80")
    assert "arch=compute_80,code=[sm_80,compute_80]" in flags and "--fatbin" in flags
    with pytest.raises(ValueError, match="must look like sm_XX"):
        cuda.nvcc_flags("ampere")


# ------------------------------------------------------------------------------------------------
# On a GPU
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpu_built():
    if GPU_ARCH is None:
        pytest.skip("no CUDA GPU visible to TVM (tvm.cuda(0).exist is False)")
    return {name: convtvm.build(w, "cuda", cuda_arch=GPU_ARCH) for name, w in REPS.items()}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("variant", list(REPS))
def test_gpu_every_variant_matches_torch(gpu_built, variant, seed):
    w = REPS[variant]
    xs = w.random_inputs(seed=seed)
    y = gpu_built[variant](*xs)
    assert rel_err(y, w.reference(*xs)) <= TOL


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", ANSOR_FIRSTS + ["DWS", "CBS", "SHG"])
def test_gpu_suite_shapes_match_torch(name, seed):
    w = {**ANSOR, **suites.suite("extras")}[name]
    xs = w.random_inputs(seed=seed)
    assert rel_err(convtvm.build(w, "cuda", cuda_arch=GPU_ARCH)(*xs), w.reference(*xs)) <= TOL


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("variant, params", EXTRA)
def test_gpu_layouts_and_dtypes_match_torch(variant, params, seed):
    w = convtvm.workload(variant, **params)
    xs = w.random_inputs(seed=seed)
    tol = 1e-2 if w.dtype == "float16" else TOL  # fp16 accumulates in fp16
    assert rel_err(convtvm.build(w, "cuda", cuda_arch=GPU_ARCH)(*xs), w.reference(*xs)) <= tol


@pytest.mark.gpu
@needs_gpu
def test_gpu_exported_module_runs_without_compiling(gpu_built, tmp_path, seed, monkeypatch):
    """An exported module carries compiled kernels: loading and running it never calls a compiler."""
    import tvm_ffi

    def no_compiler(*_):
        raise AssertionError("a CUDA compiler was called while loading an exported module")

    w = REPS["conv2d_bn_silu"]
    path = gpu_built["conv2d_bn_silu"].export(tmp_path / "cbs.so")
    old = tvm_ffi.get_global_func("tvm_callback_cuda_compile")
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", no_compiler, override=True)
    try:
        m = convtvm.load(path)
        xs = w.random_inputs(seed=seed)
        assert rel_err(m(*xs), w.reference(*xs)) <= TOL
    finally:
        tvm_ffi.register_global_func("tvm_callback_cuda_compile", old, override=True)


@pytest.mark.gpu
@needs_gpu
def test_gpu_torch_tensors_and_timing(gpu_built, seed):
    import torch
    w = REPS["conv2d"]
    xs = w.random_inputs(seed=seed)
    m = gpu_built["conv2d"]
    y = m(*[torch.from_numpy(x) for x in xs])
    assert isinstance(y, torch.Tensor)
    assert rel_err(y.numpy(), w.reference(*xs)) <= TOL
    times = m.time(*xs, number=3, repeat=2)
    assert len(times) == 2 and all(0 < t < 1 for t in times)
    assert np.isfinite(times).all()


# ------------------------------------------------------------------------------ a whole network


@needs_compiler
def test_efficientnet_v2_s_builds_for_cuda(tmp_path, seed):
    """compile_model(target="cuda") builds EfficientNetV2-S here, without a GPU: every convolution is a
    convtvm kernel, thread-bound, compiled by nvcc for sm_90 into the exported .so. On a GPU it runs and
    matches torch; without one, calling it says so."""
    import torch

    from convtvm import network
    from convtvm.models import seeded_model
    model = seeded_model("efficientnet_v2_s", seed=0, input_size=64)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    net = network.compile_model(model, [x], target="cuda")
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert net.lowered_ops["relax.nn.conv2d"] == convs and "generic" not in net.schedules
    path = net.export(tmp_path / "effnet_cuda.so")
    manifest = json.loads(open(path + ".json").read())
    assert manifest["kind"] == "model" and manifest["cuda"]["arch"] == ARCH
    kernels = [k for m in cuda.exported_kernels(path) for k in m["kernels"]]
    conv_kernels = [k for k in kernels if "convtvm_conv2d" in k]
    assert len(conv_kernels) >= 20 and any("sigmoid" in k for k in conv_kernels)
    assert all(m["arch"] == ARCH and m["format"] == "fatbin" for m in cuda.exported_kernels(path))
    if GPU_ARCH is None:
        with pytest.raises(RuntimeError, match="no CUDA GPU is present"):
            net(x)
        return
    with torch.no_grad():
        r64 = model.double()(x.double()).numpy()
        r32 = model.float()(x).numpy()
    tol = max(1e-3, 5 * rel_err(r32, r64))
    assert rel_err(net(x).numpy(), r64) <= tol
    assert rel_err(convtvm.load(path)(x).numpy(), r64) <= tol
