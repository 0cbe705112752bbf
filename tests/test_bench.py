"""convtvm.bench on tiny workloads: what it times and records (no speed is asserted)."""

import pytest
import torch

import convtvm
from convtvm import suites, timing
from convtvm.bench import ops as bench
from convtvm.bench import torch_baseline
from conftest import rel_err


def test_bench_times_each_side_as_its_users_call_it(tmp_path):
    ops = {"cl": convtvm.workload("conv2d", in_channels=4, out_channels=8, input_size=(9, 7), kernel_size=3,
                                  padding=1, layout="NHWC"),
           "cf": convtvm.workload("conv1d", in_channels=4, out_channels=4, input_size=(16,), kernel_size=3)}
    result = bench.bench_ops(ops, "x86", log=False, rounds=2, progress=lambda *_: None,
                             handicapped_torch=True)
    assert result["schema"] == "convtvm.bench/2" and result["torch_call_floor_ms"] > 0
    rows = {r["name"]: r for r in result["results"]}
    cl, cf = rows["cl"], rows["cf"]
    assert set(cl["torch_layouts_ms"]) == {"contiguous", "channels_last"}
    assert cl["timings_ms"]["torch"] == min(cl["torch_layouts_ms"].values())
    assert set(cf["torch_layouts_ms"]) == {"contiguous"}  # torch has no channels-last 1D format
    for r in (cl, cf):
        t = r["timings_ms"]
        assert "convtvm_tuned" not in t and r["schedule"] == "fallback"
        for k in ("convtvm_untuned", "convtvm_untuned_kernel", "torch", "torch_prepacked", "torch_reference_path"):
            assert t[k] > 0, k
        assert r["max_rel_error"] <= 1e-4
    assert "(channels_last)" in bench.table(result) or "(contiguous)" in bench.table(result)


REPS = suites.representative()
ODD = {  # shapes where the plain call and the reference part ways: per-side pads, cropped transposes
    "asym_conv": convtvm.workload("conv2d", in_channels=6, out_channels=4, input_size=(9, 8), kernel_size=(3, 2),
                                  stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2, bias=True),
    "asym_conv_nhwc": convtvm.workload("conv2d", in_channels=6, out_channels=4, input_size=(9, 8), kernel_size=3,
                                       padding=((0, 1), (2, 1)), layout="NHWC"),
    "same_even": convtvm.workload("conv1d", in_channels=3, out_channels=5, input_size=(11,), kernel_size=4,
                                  padding="same", layout="NWC"),
    "asym_transposed": convtvm.workload("conv_transpose2d", in_channels=4, out_channels=6, input_size=(5, 5),
                                        kernel_size=4, stride=2, padding=((1, 2), (0, 1)), output_padding=1),
    "transposed_3d": convtvm.workload("conv_transpose3d", in_channels=4, out_channels=4, input_size=(3, 4, 5),
                                      kernel_size=3, stride=2, padding=1, output_padding=(1, 0, 1), groups=2,
                                      dilation=(1, 2, 1), bias=True, layout="NDHWC"),
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, for the prepacked contender
@pytest.mark.parametrize("name", [*REPS, *ODD])
def test_torch_as_users_call_it_gives_the_reference_result_in_every_memory_format(name, seed):
    """The benchmark's torch contender is a separate, plain function: it must compute what the
    correctness reference computes, in each memory format it is timed in."""
    w = REPS.get(name) or ODD[name]
    xs = w.random_inputs(seed=seed)
    ref = w.reference(*xs)
    for fmt in torch_baseline.memory_formats(w.ndim):
        fn, x = torch_baseline.contender(w, xs, fmt)
        with torch.no_grad():
            y = fn(x)
        assert rel_err(bench._to_layout(y, w), ref) <= 1e-5, fmt
        packed = torch_baseline.prepacked(fn, x)
        if packed is not None:
            assert rel_err(bench._to_layout(packed(x), w), ref) <= 1e-4, f"prepacked {fmt}"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_contender_passes_padding_to_the_conv_and_pads_only_per_side_pairs():
    """No F.pad where torch's conv takes the padding itself; F.pad where the pads differ per side."""
    import torch.nn.functional as F
    pads = []
    real_pad = F.pad

    def counting_pad(*a, **k):
        pads.append(a[1])
        return real_pad(*a, **k)
    ansor = suites.suite("ansor")
    for name, expect in (("C2D-3", 0), ("T2D-2", 0), ("asym_conv", 1), ("asym_transposed", 0)):
        w = ansor.get(name) or ODD[name]
        fn, x = torch_baseline.contender(w, w.random_inputs(), "contiguous")
        pads.clear()
        F.pad = counting_pad
        try:
            fn(x)
        finally:
            F.pad = real_pad
        assert len(pads) == expect, name


def test_tvm_kernels_run_on_every_core_torch_gets():
    """TVM's thread pool takes x86 cores for hyper-threads and starts half of them unless told: on a
    2-core machine one thread against torch's two. Importing convtvm must give TVM every core, and
    workers that stop spinning soon after a call."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items()
           if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "TVM_THREAD_POOL_SPIN_COUNT")}
    code = ("import convtvm, os, tvm, torch; from convtvm.targets import cpu_threads; "
            "print(tvm.runtime.num_threads(), cpu_threads(), len(os.sched_getaffinity(0)), "
            "os.environ['TVM_THREAD_POOL_SPIN_COUNT'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    tvm_threads, convtvm_threads, cores, spin = map(int, out.stdout.split())
    assert tvm_threads == convtvm_threads == cores
    assert spin == 1000  # TVM's default 300000 yields between tasks took torch's cores in the same process
    pinned = subprocess.run([sys.executable, "-c", code], env={**env, "TVM_NUM_THREADS": "1"},
                            capture_output=True, text=True, check=True)
    assert pinned.stdout.split()[:2] == ["1", "1"]  # a user's own setting is kept


def test_time_interleaved_runs_contenders_in_turn_with_the_collector_off():
    import gc
    calls, collector = [], []

    def contender(name, seconds):
        def batch():
            calls.append(name)
            collector.append(gc.isenabled())
            return seconds
        return batch

    assert gc.isenabled()
    medians = timing.time_interleaved({"a": contender("a", 0.002), "b": contender("b", 0.001)}, rounds=3, settle=0)
    assert medians == {"a": 2.0, "b": 1.0}
    assert calls == ["a", "b"] * 3
    assert collector == [False] * 6 and gc.isenabled()  # off while timing, back on after


def test_a_result_is_validated_before_it_is_written(tmp_path):
    """bench writes through results.write: a malformed result (a NaN time) is refused, no file is left."""
    from convtvm.bench import results
    from convtvm.targets import resolve
    good = results.envelope(resolve("x86"), 2, results=[{"name": "op", "timings_ms": {"torch": 1.0}}])
    results.write(tmp_path / "ok.json", good)
    assert results.load(tmp_path / "ok.json")["results"][0]["name"] == "op"
    bad = dict(good, results=[{"name": "op", "timings_ms": {"torch": float("nan")}}])
    with pytest.raises(ValueError, match=r"results\[0\]\.timings_ms\['torch'\]"):
        results.write(tmp_path / "bad.json", bad)
    assert not (tmp_path / "bad.json").exists()
