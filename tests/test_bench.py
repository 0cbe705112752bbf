"""convtvm.bench on tiny workloads: what it times and records (no speed is asserted)."""

import convtvm
from convtvm import bench


def test_bench_times_torch_in_both_layouts_for_a_channels_last_op(tmp_path):
    ops = {"cl": convtvm.workload("conv2d", in_channels=4, out_channels=8, input_size=(9, 7), kernel_size=3,
                                  padding=1, layout="NHWC"),
           "cf": convtvm.workload("conv1d", in_channels=4, out_channels=4, input_size=(16,), kernel_size=3)}
    result = bench.bench_ops(ops, "x86", log=tmp_path / "no-log", rounds=2, progress=lambda *_: None)
    rows = {r["name"]: r for r in result["results"]}
    cl, cf = rows["cl"], rows["cf"]
    assert set(cl["torch_layouts_ms"]) == {"NHWC", "NCHW"}
    assert cl["timings_ms"]["torch"] == min(cl["torch_layouts_ms"].values())
    assert set(cf["torch_layouts_ms"]) == {"NCW"}
    for r in (cl, cf):
        assert r["timings_ms"]["convtvm_tuned"] is None and r["timings_ms"]["convtvm_untuned"] > 0
        assert r["max_rel_error"] <= 1e-4
    assert "(N" in bench.table(result).split("\n")[2]  # the table names torch's faster layout


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
    medians = bench.time_interleaved({"a": contender("a", 0.002), "b": contender("b", 0.001)}, rounds=3, settle=0)
    assert medians == {"a": 2.0, "b": 1.0}
    assert calls == ["a", "b"] * 3
    assert collector == [False] * 6 and gc.isenabled()  # off while timing, back on after
