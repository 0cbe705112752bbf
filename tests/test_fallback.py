"""The untuned schedule parallelises a block only where its work pays for the threads' fork and join
(``parallel_min_work`` in schedules/<target>.json): a small op runs on one thread."""

import convtvm
from convtvm.targets import resolve


def _parallel_loops(w) -> int:
    info = resolve("x86")
    mod = info.backend.fallback(w.prim_func(), info)
    return mod.script().count("T.parallel(")


def test_small_ops_run_on_one_thread_and_large_ones_on_every_core():
    limit = resolve("x86").config["fallback"]["parallel_min_work"]
    tiny = convtvm.workload("conv1d", in_channels=8, out_channels=12, input_size=(37,), kernel_size=3)
    assert 8 * 12 * 3 * 35 < limit and _parallel_loops(tiny) == 0
    large = convtvm.workload("conv2d", in_channels=64, out_channels=64, input_size=(28, 28), kernel_size=3, padding=1)
    assert 64 * 64 * 9 * 28 * 28 >= limit and _parallel_loops(large) >= 1
