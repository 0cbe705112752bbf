"""ARM (aarch64 + NEON): every variant cross-compiles, and runs on the emulated aarch64 device
(qemu-user + TVM's minimal RPC server) matching torch. CI installs the cross toolchain and qemu.

Without them (aarch64-linux-gnu-g++, its objdump, qemu-aarch64) every test here is skipped with the
reason; under CI (CI=true) that is an error instead, so CI never passes without running them."""

import os
import re
import subprocess

import pytest

import convtvm
from convtvm import suites
from convtvm.backends import arm, arm_runtime as runtime
from convtvm.params import ConvSpec
from conftest import rel_err

REPS = suites.representative()


def under_ci() -> bool:
    """CI=true (or 1, yes): the ARM tools must be there."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module", autouse=True)
def arm_tools():
    """Every test here needs the cross toolchain and qemu-user: skipped with the reason when they are
    missing, an error under CI."""
    try:
        return runtime.check_tools(need_objdump=True)
    except RuntimeError as e:
        if under_ci():
            pytest.fail(f"CI={os.environ['CI']}: the ARM tests must run there, and cannot: {e}", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def arm_modules(tmp_path_factory):
    runtime.setup(verbose=False)
    out = tmp_path_factory.mktemp("arm")
    mods = {}
    for name, w in REPS.items():
        m = convtvm.build(w, "arm")
        m.export(out / f"{name}.so")
        mods[name] = m
    return mods


def test_every_variant_is_a_neon_aarch64_elf(arm_modules):
    neon = re.compile(r"\bv\d+\.(4s|2s|2d|16b|8h)\b")
    for name, m in arm_modules.items():
        assert runtime.elf_machine(m.path) == 183, f"{name}: not an aarch64 ELF"
        if any(isinstance(s, ConvSpec) for s in m.workload.stages):
            asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", m.path], capture_output=True, text=True,
                                 check=True).stdout
            assert neon.search(asm), f"{name}: no NEON vector instruction in the kernel"


def test_every_variant_runs_under_emulation(arm_modules, seed):
    for name, m in arm_modules.items():
        w = m.workload
        xs = w.random_inputs(seed=seed)
        assert rel_err(m(*xs), w.reference(*xs)) <= 1e-4, name


def test_exported_arm_module_loads_and_runs(arm_modules, seed):
    m = convtvm.load(arm_modules["conv2d_bn_silu"].path)
    assert m.target.kind == "arm"
    w = m.workload
    xs = w.random_inputs(seed=seed)
    assert rel_err(m(*xs), w.reference(*xs)) <= 1e-4


def test_a_built_module_cross_links_to_a_temp_folder_that_goes_with_it(seed):
    """A module built in this process runs from a temp copy of its library; that copy must not
    outlive the module (each network's is 80 MB, and a test run builds hundreds)."""
    import gc
    from pathlib import Path
    m = convtvm.build(REPS["depthwise_conv2d"], "arm")
    xs = m.workload.random_inputs(seed=seed)
    assert rel_err(m(*xs), m.workload.reference(*xs)) <= 1e-4
    folder = Path(m._remote.path).parent
    assert folder.is_dir() and folder.name.startswith("convtvm_arm_")
    del m
    gc.collect()
    assert not folder.exists()


def test_check_cli_on_arm(arm_modules, capsys):
    from convtvm.cli import main
    assert main(["check", "--target", "arm", "--arm-cpu", "cortex-a72", "depthwise_conv2d", "avg_pool2d"]) == 0
    out = capsys.readouterr().out
    assert "arm-cortex-a72" in out and "2 of 2 variants match torch" in out


def test_tuning_over_rpc_on_the_emulated_device(tmp_path, seed):
    w = convtvm.workload("conv2d", in_channels=4, out_channels=8, input_size=(8, 8), kernel_size=3, padding=1)
    result = convtvm.tune(w, "arm", trials=4, log=tmp_path / "arm", trials_per_iter=4, seed=0)
    assert result["trials"] == 4
    assert any(t.best_s < float("inf") for t in result["tasks"]), "no candidate measured on the device"
    m = convtvm.build(w, "arm", tuning_log=tmp_path / "arm")
    assert m.schedule == "tuned"
    xs = w.random_inputs(seed=seed)
    assert rel_err(m(*xs), w.reference(*xs)) <= 1e-4
