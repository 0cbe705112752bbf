"""Benchmarks against PyTorch: same process, same thread count, contenders interleaved, medians.

Writes the JSON result files that ``convtvm report`` renders (schema "convtvm.bench/2").
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from . import __version__
from . import torch_baseline
from .records import defaults
from .records.log import TuningLog
from .targets import cpu_threads, resolve

FLOPS_PER_CYCLE = {"x86": 32, "arm": 8}  # per core: AVX2 2 FMA x 8 fp32 x 2; NEON 1 FMA x 4 x 2
AVX512_FLOPS_PER_CYCLE = 64  # 2 FMA x 16 fp32 x 2 (Zen 5; Zen 4, CPU family 25, splits each in two: 32)


def machine() -> dict:
    import torch
    import tvm
    cpu = next((ln.split(":", 1)[1].strip() for ln in _cpuinfo() if ln.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "tvm": tvm.__version__, "torch": torch.__version__,
            "convtvm": __version__, "hostname": platform.node(), "python": platform.python_version()}


def same_threads() -> int:
    """The thread count every contender runs with: torch is set to it, and TVM's pool must already
    run it (convtvm sets TVM_NUM_THREADS on import; a pool started before that keeps its count)."""
    import torch
    import tvm
    threads = cpu_threads()
    torch.set_num_threads(threads)
    if tvm.runtime.num_threads() != threads:
        raise RuntimeError(f"TVM's thread pool runs {tvm.runtime.num_threads()} threads, torch {threads}: "
                           f"set TVM_NUM_THREADS={threads} before TVM starts (import convtvm first)")
    return threads


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def peak_gflops(kind: str, cores: int) -> float | None:
    """fp32 FMA peak at the clock /proc/cpuinfo reports (the nominal one; a boost runs above it)."""
    info = _cpuinfo()
    mhz = [float(ln.split(":")[1]) for ln in info if ln.startswith("cpu MHz")]
    if kind not in FLOPS_PER_CYCLE or not mhz:
        return None
    per_cycle = FLOPS_PER_CYCLE[kind]
    field = {ln.split(":")[0].strip(): ln.split(":", 1)[1].split() for ln in info if ":" in ln}
    if kind == "x86" and "avx512f" in field.get("flags", []) and field.get("cpu family") != ["25"]:
        per_cycle = AVX512_FLOPS_PER_CYCLE
    return round(cores * max(mhz) / 1e3 * per_cycle, 1)


def _time_calls(fn, args, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn(*args)
    return (time.perf_counter() - t0) / number


def _calls_for(seconds: float, budget: float = 0.05) -> int:
    return max(1, min(200, int(budget / max(seconds, 1e-7))))


def time_interleaved(contenders: dict, rounds: int, settle: float = 0.1) -> dict:
    """contenders: name -> zero-arg callable returning seconds per call for one batch.
    Runs the batches round-robin ``rounds`` times; returns name -> median ms.
    Each batch starts ``settle`` seconds after the previous one: thread pools (OpenMP, ONNX Runtime,
    TVM) spin-wait for work after a call, and on two cores those spinning threads would steal the
    cores from the next contender (measured: ONNX Runtime's EfficientNetV2-S at 108 ms right
    after the others, 48 ms alone).
    Python's garbage collector is off while the batches run, as in ``timeit``: a collection would
    otherwise land in whichever contender happened to allocate the object that triggered it."""
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


SMALL_OP_MS = 0.05  # below this, call overheads are reported beside the times


def bench_ops(workloads: dict, target="x86", log=None, rounds: int = 15, progress=print,
              handicapped_torch: bool = False) -> dict:
    """Time each workload as its users call it, interleaved, medians (schema "convtvm.bench/2").
    ``log``: the tuned side's records, as ``build``'s ``tuning_log`` (None: the default records).


    - ``convtvm_tuned``: the tuned module bound to its weights (``m.bind``), called from Python on a torch
      tensor (None when the log holds no record for it); ``convtvm_tuned_kernel``: its bare kernel
      (``time_evaluator``, weights prepacked), a second column;
    - ``convtvm_untuned``: the fallback schedule, called the same way;
    - ``torch``: the plain torch call (``torch_baseline.contender``) in each memory format torch offers
      for the rank (``torch_layouts_ms``), the faster counting; ``torch_prepacked``: the same with its
      weights prepacked for oneDNN (TorchScript freeze), an extra column where it traces;
    - ``handicapped_torch``: also time ``reference.torch_fn`` (the correctness reference: F.pad, permuted
      weights) as ``torch_reference_path``, to put the old baseline on record.

    For ops whose convtvm call takes under SMALL_OP_MS, ``call_overhead_ms`` gives convtvm's (call
    minus kernel); the result's ``torch_call_floor_ms`` is torch's (a 1x1 conv2d on one pixel)."""
    from . import build
    from .reference import torch_fn

    info = resolve(target)
    if info.is_remote:
        raise ValueError(f"bench runs on this machine; target {info.kind} is not local here")
    threads = same_threads()
    results = []
    for name, w in workloads.items():
        xs = w.random_inputs(seed=1)
        ref = w.reference(*xs)
        mods = {"convtvm_untuned": build(w, info, tuning_log=False)}
        tuned = build(w, info, tuning_log=log)  # its best record that reproduces torch, if any
        if tuned.schedule != "fallback":
            mods["convtvm_tuned"] = tuned
        x_user = torch_tensor(xs[0])  # the data as a torch user holds it: torch-allocated
        calls = {k: (m.bind(*xs[1:]), x_user) for k, m in mods.items()}
        errors = {k: _rel_err(f(x).numpy(), ref) for k, (f, x) in calls.items()}
        contenders = {k: _call_contender(f, x) for k, (f, x) in calls.items()}
        for k, m in mods.items():
            contenders[f"{k}_kernel"] = _kernel_contender(m, xs)
        prepacked = {}
        for fmt in torch_baseline.memory_formats(w.ndim):
            fn, x = torch_baseline.contender(w, xs, fmt)
            errors[f"torch {fmt}"] = _rel_err(_to_layout(fn(x), w), ref)
            contenders[f"torch {fmt}"] = _call_contender(fn, x)
            packed = torch_baseline.prepacked(fn, x)
            if packed is not None:
                prepacked[fmt] = packed
                contenders[f"torch_prepacked {fmt}"] = _call_contender(packed, x)
        if handicapped_torch:
            contenders["torch_reference_path"] = _call_contender(torch_fn(w), *[torch_tensor(a) for a in xs])
        ms = time_interleaved(contenders, rounds)
        torch_ms = {k.split(" ", 1)[1]: v for k, v in ms.items() if k.startswith("torch ")}
        packed_ms = [v for k, v in ms.items() if k.startswith("torch_prepacked ")]
        timings = {k: ms.get(k) for k in ("convtvm_tuned", "convtvm_tuned_kernel", "convtvm_untuned",
                                         "convtvm_untuned_kernel", "torch_reference_path")}
        timings.update(torch=min(torch_ms.values()), torch_prepacked=min(packed_ms) if packed_ms else None)
        best = "convtvm_tuned" if "convtvm_tuned" in ms else "convtvm_untuned"
        row = {"name": name, "variant": w.variant, "params": w.to_json(), "flops": w.flops,
               "trials": _record_trials(tuned.schedule_source, w) if "convtvm_tuned" in mods else None,
               "schedule": mods.get("convtvm_tuned", mods["convtvm_untuned"]).schedule,
               "timings_ms": {k: v for k, v in timings.items() if v is not None},
               "torch_layouts_ms": torch_ms, "max_rel_error": max(errors.values())}
        if ms[best] < SMALL_OP_MS:
            row["call_overhead_ms"] = {"convtvm": max(0.0, ms[best] - ms[f"{best}_kernel"])}
        results.append(row)
        progress(_row_text(row))
    peak = peak_gflops(info.kind, threads)
    return {"schema": SCHEMA, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), "target": info.kind, "target_detail": json.loads(info.target_json),
            "emulated": False, "threads": threads, "peak_gflops": peak, "peak_source": "given" if peak else None,
            "timed_as": TIMED_AS, "torch_call_floor_ms": torch_call_floor_ms(rounds),
            "results": results, "models": [],
            "tuning_curves": tuning_curves(log or defaults.shipped_log(info), workloads)}


SCHEMA = "convtvm.bench/2"
TIMED_AS = {
    "convtvm_tuned": "bound module (m.bind(weights)) called from Python on a torch tensor",
    "convtvm_tuned_kernel": "the tuned kernel alone (time_evaluator, weights prepacked)",
    "convtvm_untuned": "fallback schedule, bound module called from Python on a torch tensor",
    "torch": "plain torch.nn.functional call, contiguous weights in torch's layout, faster memory format",
    "torch_prepacked": "the same, TorchScript-frozen with optimize_for_inference (oneDNN prepacked weights)",
}


def torch_tensor(a):
    """A numpy array as a torch tensor of torch's own allocation (as a torch user holds data)."""
    import torch
    return torch.from_numpy(np.asarray(a)).clone()


def _to_layout(y, w) -> np.ndarray:
    """torch's channels-first result in ``w``'s layout, as numpy."""
    return (y.movedim(1, -1) if w.channels_last else y).contiguous().numpy()


def _call_contender(fn, *args):
    """A zero-arg callable timing a batch of ``fn(*args)`` calls from Python (seconds per call), under
    ``torch.no_grad``, batch size from a warm-up. Both sides are timed through this."""
    import torch
    with torch.no_grad():
        fn(*args)
        number = _calls_for(min(_time_calls(fn, args, 1) for _ in range(3)))

    def batch():
        with torch.no_grad():
            return _time_calls(fn, args, number)
    return batch


def _kernel_contender(m, xs):
    """A zero-arg callable timing a batch of bare kernel calls (TVM's time_evaluator), weights prepacked."""
    import tvm
    rt = getattr(m.lib, "mod", m.lib)
    fname, args = m.kernel_args(xs)
    est = min(rt.time_evaluator(fname, tvm.cpu(), number=1, repeat=3)(*args).results)
    f = rt.time_evaluator(fname, tvm.cpu(), number=_calls_for(est), repeat=1)
    return lambda: f(*args).mean


def torch_call_floor_ms(rounds: int = 15) -> float:
    """Milliseconds of torch's cheapest convolution call (a 1x1 conv2d of one pixel, one channel): the
    fixed cost of a torch call on this machine."""
    import torch
    import torch.nn.functional as F
    x, w = torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    return time_interleaved({"floor": _call_contender(lambda a: F.conv2d(a, w), x)}, rounds, settle=0)["floor"]


def _rel_err(y, ref) -> float:
    return float(np.abs(np.asarray(y) - ref).max() / max(np.abs(ref).max(), 1e-30))


def _record_trials(log, w) -> int | None:
    """Trials measured for this workload in the log (the shipped, pruned logs record it in
    trials.json; otherwise count the records)."""
    return TuningLog(log).trials().get(w.key) if log else None


def tuning_curves(log, workloads) -> list:
    curves = TuningLog(log).curves() if log else {}
    return [{"name": name, "points": curves[w.key]} for name, w in workloads.items() if w.key in curves]


def _row_text(row) -> str:
    t = row["timings_ms"]

    def fmt(v):
        return f"{v:9.4f}" if v is not None else "      n/a"
    tuned = t.get("convtvm_tuned")
    speed = f"{t['torch'] / tuned:.2f}x" if tuned and t.get("torch") else "n/a"
    return (f"{row['name']:8s} tuned {fmt(tuned)} ms (kernel {fmt(t.get('convtvm_tuned_kernel'))})  "
            f"untuned {fmt(t.get('convtvm_untuned'))}  torch {fmt(t.get('torch'))}{_torch_layout(row)}  "
            f"prepacked {fmt(t.get('torch_prepacked'))}  speedup {speed}  err {row['max_rel_error']:.1e}")


def _torch_layout(row) -> str:
    """' (channels_last)': the memory format torch was faster in, when it was timed in more than one."""
    layouts = row.get("torch_layouts_ms") or {}
    return f" ({min(layouts, key=layouts.get)})" if len(layouts) > 1 else ""


def geomean(xs) -> float:
    return float(np.exp(np.mean(np.log(xs))))


def table(result: dict) -> str:
    """Markdown table of a bench result: times in ms as users call each side, then the bare kernel."""
    lines = ["| op | variant | convtvm ms | torch ms (faster format) | speedup | torch prepacked ms | "
             "convtvm kernel ms | untuned ms | call overhead ms (convtvm / torch) | trials |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    speedups = []
    floor = result.get("torch_call_floor_ms")
    for r in result["results"]:
        t = r["timings_ms"]
        tuned, torch_ms = t.get("convtvm_tuned"), t.get("torch")
        sp = torch_ms / tuned if tuned and torch_ms else None
        if sp:
            speedups.append(sp)

        def f(v, fmt="{:.4f}"):
            return fmt.format(v) if v is not None else "not measured"
        over = r.get("call_overhead_ms")
        over_txt = f"{over['convtvm']:.4f} / {floor:.4f}" if over and floor is not None else ""
        lines.append(f"| {r['name']} | {r['variant']} | {f(tuned)} | {f(torch_ms)}{_torch_layout(r)} | "
                     f"{f(sp, '{:.2f}x')} | {f(t.get('torch_prepacked'))} | {f(t.get('convtvm_tuned_kernel'))} | "
                     f"{f(t.get('convtvm_untuned'))} | {over_txt} | {r.get('trials') or 'n/a'} |")
    if speedups:
        lines.append(f"\ngeomean speedup vs torch: {geomean(speedups):.2f}x over {len(speedups)} ops; "
                     f"below 0.9x: {sum(s < 0.9 for s in speedups)}")
    return "\n".join(lines)
