"""Benchmarks against PyTorch: same process, same thread count, contenders interleaved, medians.

Writes the JSON result files that ``convtvm report`` renders (schema "convtvm.bench/1").
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


def _time_torch(fn, args, number: int) -> float:
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


def bench_ops(workloads: dict, target="x86", log=None, rounds: int = 15, progress=print) -> dict:
    """Time tuned convtvm, the untuned fallback and PyTorch for each workload."""
    import tvm

    from . import build, tuning
    from .reference import torch_fn
    from .variants import replace_params

    info = resolve(target)
    if info.is_remote:
        raise ValueError(f"bench runs on this machine; target {info.kind} is not local here")
    threads = same_threads()
    log = log or tuning.default_log(info)
    results = []
    for name, w in workloads.items():
        xs = w.random_inputs(seed=1)
        ref = w.reference(*xs)
        mods = {"convtvm_untuned": build(w, info)}
        if Path(log).exists():
            tuned = build(w, info, tuning_log=log)  # its best record that reproduces torch, if any
            if tuned.schedule == "tuned":
                mods["convtvm_tuned"] = tuned
        errors = {k: _rel_err(m(*xs), ref) for k, m in mods.items()}
        contenders = {}
        for k, m in mods.items():  # the kernel alone: weights pre-packed where the tuned kernel packs them
            rt = getattr(m.lib, "mod", m.lib)
            fname, args = m.kernel_args(xs)
            est = min(rt.time_evaluator(fname, tvm.cpu(), number=1, repeat=3)(*args).results)
            f = rt.time_evaluator(fname, tvm.cpu(), number=_calls_for(est), repeat=1)
            contenders[k] = lambda f=f, args=args: f(*args).mean
        torch_layouts = {w.params.get("layout") or "channels-first": w}
        if w.channels_last:  # torch is timed in both layouts, and its faster one is the one to beat
            twin = replace_params(w, layout=None)
            torch_layouts[twin.params["layout"]] = twin
        for layout, tw in torch_layouts.items():
            contenders[f"torch {layout}"] = _torch_contender(torch_fn(tw), tw.random_inputs(seed=1))
        ms = time_interleaved(contenders, rounds)
        torch_ms = {k.split(" ", 1)[1]: ms[k] for k in ms if k.startswith("torch ")}
        ms["torch"] = min(torch_ms.values())
        trials = _record_trials(log, info, w) if "convtvm_tuned" in mods else None
        row = {"name": name, "variant": w.variant, "params": w.to_json(), "flops": w.flops, "trials": trials,
               "timings_ms": {k: ms.get(k) for k in ("convtvm_tuned", "convtvm_untuned", "torch")},
               "torch_layouts_ms": torch_ms, "max_rel_error": max(errors.values())}
        results.append(row)
        progress(_row_text(row))
    cores = threads
    peak = peak_gflops(info.kind, cores)
    return {"schema": "convtvm.bench/1", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), "target": info.kind, "target_detail": json.loads(info.target_json),
            "emulated": False, "threads": threads, "peak_gflops": peak, "peak_source": "given" if peak else None,
            "results": results, "models": [], "tuning_curves": tuning_curves(log, info, workloads)}


def _torch_contender(fn, xs):
    """A zero-arg callable timing a batch of ``fn`` calls (seconds per call), batch size from a warm-up."""
    import torch
    args = [torch.from_numpy(x) for x in xs]
    with torch.no_grad():
        number = _calls_for(min(_time_torch(fn, args, 1) for _ in range(3)))

    def batch():
        with torch.no_grad():
            return _time_torch(fn, args, number)
    return batch


def _rel_err(y, ref) -> float:
    return float(np.abs(np.asarray(y) - ref).max() / max(np.abs(ref).max(), 1e-30))


def _record_trials(log, info, w) -> int | None:
    """Trials measured for this workload in the log (the shipped, pruned logs record it in
    trials.json; otherwise count the records)."""
    meta = Path(log) / "trials.json"
    if meta.exists():
        counts = json.loads(meta.read_text())
        return counts.get(w.key)
    return None


def tuning_curves(log, info, workloads) -> list:
    meta = Path(log) / "curves.json"
    if not meta.exists():
        return []
    curves = json.loads(meta.read_text())
    return [{"name": name, "points": curves[w.key]} for name, w in workloads.items() if w.key in curves]


def _row_text(row) -> str:
    t = row["timings_ms"]

    def fmt(v):
        return f"{v:9.3f}" if v is not None else "      n/a"
    speed = (f"{t['torch'] / t['convtvm_tuned']:.2f}x" if t.get("convtvm_tuned") and t.get("torch") else "n/a")
    return (f"{row['name']:8s} tuned {fmt(t.get('convtvm_tuned'))} ms  untuned {fmt(t.get('convtvm_untuned'))} ms  "
            f"torch {fmt(t.get('torch'))} ms{_torch_layout(row)}  speedup {speed}  err {row['max_rel_error']:.1e}")


def _torch_layout(row) -> str:
    """' (NCHW)': the layout torch was faster in, when it was timed in more than one."""
    layouts = row.get("torch_layouts_ms") or {}
    return f" ({min(layouts, key=layouts.get)})" if len(layouts) > 1 else ""


def table(result: dict) -> str:
    """Markdown table of a bench result."""
    peak = result.get("peak_gflops")
    lines = ["| op | variant | tuned ms | untuned ms | torch ms (its faster layout) | tuned GFLOP/s | % peak | speedup vs torch | trials |",
             "|---|---|---|---|---|---|---|---|---|"]
    speedups = []
    for r in result["results"]:
        t = r["timings_ms"]
        tuned, torch_ms = t.get("convtvm_tuned"), t.get("torch")
        best = tuned or t.get("convtvm_untuned")
        gf = r["flops"] / best / 1e6 if best else None
        sp = torch_ms / tuned if tuned and torch_ms else None
        if sp:
            speedups.append(sp)

        def f(v, fmt="{:.3f}"):
            return fmt.format(v) if v is not None else "not measured"
        lines.append(f"| {r['name']} | {r['variant']} | {f(tuned)} | {f(t.get('convtvm_untuned'))} | {f(torch_ms)}{_torch_layout(r)} | "
                     f"{f(gf, '{:.1f}')} | {f(gf / peak * 100 if gf and peak else None, '{:.0f}%')} | "
                     f"{f(sp, '{:.2f}x')} | {r.get('trials') or 'n/a'} |")
    if speedups:
        geo = float(np.exp(np.mean(np.log(speedups))))
        lines.append(f"\ngeomean speedup vs torch: {geo:.2f}x over {len(speedups)} ops; "
                     f"below 0.9x: {sum(s < 0.9 for s in speedups)}")
    return "\n".join(lines)
