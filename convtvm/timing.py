"""Timing both sides of a comparison the same way: batches of calls from Python, interleaved round by
round, medians. Nothing here knows what it times.

A contender is a zero-argument callable returning seconds per call for one batch; ``call_contender``
makes one from a Python callable, ``kernel_contender`` from a compiled function's ``time_evaluator``.
"""

from __future__ import annotations

import gc
import statistics
import time

from .targets import cpu_threads


def time_calls(fn, args, number: int) -> float:
    """Seconds per call of ``fn(*args)``, averaged over ``number`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn(*args)
    return (time.perf_counter() - t0) / number


def calls_for(seconds: float, budget: float = 0.05) -> int:
    """How many calls of ``seconds`` each fill a batch of about ``budget`` seconds (1 to 200)."""
    return max(1, min(200, int(budget / max(seconds, 1e-7))))


def time_interleaved(contenders: dict, rounds: int, settle: float = 0.1) -> dict:
    """Run each contender's batch round-robin ``rounds`` times; return name -> median milliseconds.

    Args:
        contenders: name -> zero-arg callable returning seconds per call for one batch.
        rounds: batches per contender.
        settle: seconds of sleep before each batch. Thread pools (OpenMP, ONNX Runtime, TVM) spin-wait
            after a call, and on two cores the spinning threads would steal the next contender's cores.
    Python's garbage collector is off while the batches run, as in ``timeit``."""
    samples = {k: [] for k in contenders}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, f in contenders.items():
                time.sleep(settle)
                samples[name].append(f())
    finally:
        if was_enabled:
            gc.enable()
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


def call_contender(fn, *args):
    """A contender timing batches of ``fn(*args)`` from Python under ``torch.no_grad``; the batch size
    comes from three warm-up calls. Both sides of every comparison are timed through this."""
    import torch
    with torch.no_grad():
        fn(*args)
        number = calls_for(min(time_calls(fn, args, 1) for _ in range(3)))

    def batch():
        with torch.no_grad():
            return time_calls(fn, args, number)
    return batch


def kernel_contender(rt_module, fname: str, args, device):
    """A contender timing the bare compiled function ``fname`` of ``rt_module`` on ``args`` with TVM's
    ``time_evaluator`` on ``device`` (no Python call path)."""
    est = min(rt_module.time_evaluator(fname, device, number=1, repeat=3)(*args).results)
    f = rt_module.time_evaluator(fname, device, number=calls_for(est), repeat=1)
    return lambda: f(*args).mean


def cuda_event_contender(fn, min_ms: float = 20.0):
    """A contender timing batches of GPU launches ``fn()`` between two CUDA events on torch's current
    stream (seconds per launch); the batch fills about ``min_ms`` milliseconds."""
    import torch
    stream = torch.cuda.current_stream()
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    per_ms = max((time.perf_counter() - t0) / 10 * 1e3, 1e-4)
    reps = max(1, min(2000, int(min_ms / per_ms)))

    def batch():
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        for _ in range(reps):
            fn()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / reps / 1e3
    return batch


def same_threads() -> int:
    """The thread count every contender runs with: torch is set to it, and TVM's pool must already run
    it (convtvm sets TVM_NUM_THREADS on import; a pool started before that keeps its count).
    Raises: RuntimeError when TVM's pool runs another count."""
    import torch
    import tvm
    threads = cpu_threads()
    torch.set_num_threads(threads)
    if tvm.runtime.num_threads() != threads:
        raise RuntimeError(f"TVM's thread pool runs {tvm.runtime.num_threads()} threads, torch {threads}: "
                           f"set TVM_NUM_THREADS={threads} before TVM starts (import convtvm first)")
    return threads
