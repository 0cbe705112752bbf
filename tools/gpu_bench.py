"""Time tuned (and untuned) convtvm against PyTorch (cuDNN) on the GPU with CUDA events.

    python tools/gpu_bench.py --suite all --arch sm_90 --log tuning_logs/cuda-sm90 \
        --out results/cuda-sm90-all.json

Every contender runs on torch's current stream (TVM through ``tvm_ffi.use_torch_stream``) on the same
device tensors; contenders are interleaved round by round, each round times a batch of launches long
enough (``--min-ms``) between two CUDA events, and the median per-launch time is reported. torch runs
with ``cudnn.benchmark = True`` and TF32 off (an fp32 comparison). Writes a ``convtvm.bench/1`` JSON
(what ``convtvm report`` renders), with each workload's max relative error against the CPU reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# FP32 (non-tensor-core) peak, GFLOP/s, by device name
PEAK_FP32 = {"H100 SXM": 66900.0, "H100 80GB HBM3": 66900.0, "H100 PCIe": 51200.0, "H100 NVL": 60000.0,
             "H200": 66900.0, "A100": 19500.0, "L4": 30300.0}


def _peak(gpu: str | None):
    for key, value in PEAK_FP32.items():
        if gpu and key in gpu:
            return value
    return None


def _trials(log: Path, info, w) -> int | None:
    """Measured records of this workload in the log."""
    from convtvm import tuning
    mod = tuning.tuned_ir_module(w, info)
    with tempfile.TemporaryDirectory() as tmp:
        for name in tuning.DB_FILES:
            if (log / name).exists():
                shutil.copyfile(log / name, Path(tmp) / name)
        db = tuning._open_db(Path(tmp))
        if not db.has_workload(mod):
            return None
        return len(db.get_top_k(db.commit_workload(mod), 1 << 30))


def time_events(contenders: dict, rounds: int, min_ms: float) -> dict:
    """name -> zero-arg launch; returns name -> median ms per launch (CUDA events, interleaved)."""
    import torch
    stream = torch.cuda.current_stream()
    reps = {}
    for name, f in contenders.items():  # warm-up and batch size
        for _ in range(3):
            f()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            f()
        torch.cuda.synchronize()
        per = max((time.perf_counter() - t0) / 10 * 1e3, 1e-4)
        reps[name] = max(1, min(2000, int(min_ms / per)))
    samples = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, f in contenders.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(reps[name]):
                f()
            end.record(stream)
            end.synchronize()
            samples[name].append(start.elapsed_time(end) / reps[name])
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="all")
    ap.add_argument("--names", nargs="*", help="only these workloads of the suite")
    ap.add_argument("--arch", default=None, help="sm_XX (default: the GPU's)")
    ap.add_argument("--log", default=None, help="tuning log (default tuning_logs/cuda-smXX)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--min-ms", type=float, default=5.0, help="length of one timed batch")
    ap.add_argument("--no-untuned", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    import tvm
    import tvm_ffi

    import convtvm
    from convtvm import bench, suites, tuning
    from convtvm.backends import cuda_tools as cuda
    from convtvm.reference import torch_fn
    from convtvm.targets import resolve

    if not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA GPU")
    arch = args.arch or cuda.device_arch()
    if arch is None:
        raise SystemExit("TVM sees no CUDA GPU (tvm.cuda(0).exist is False): run tools/gpu_session.sh setup")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    info = resolve("cuda", cuda_arch=arch)
    log = Path(args.log or tuning.default_log(info))
    have_log = (log / tuning.DB_FILES[1]).exists()
    ws = suites.suite(args.suite)
    if args.names:
        ws = {k: ws[k] for k in args.names}
    out_path = Path(args.out or ROOT / "results" / f"{info.tag}-{args.suite}.json")
    dev = torch.device("cuda")
    results = []
    for name, w in ws.items():
        t0 = time.time()
        try:
            xs = w.random_inputs(seed=1)
            ref = w.reference(*xs)
            targs = [torch.from_numpy(x).to(dev) for x in xs]
            out = torch.empty(w.output_shape, dtype=getattr(torch, w.dtype), device=dev)
            mods, errors, notes = {}, {}, {}
            if not args.no_untuned:
                mods["convtvm_untuned"] = convtvm.build(w, info)
            record = tuning.best_record(w, info, log)[0] if have_log else None
            if record is not None:
                mods["convtvm_tuned"] = convtvm.build(w, info, tuning_log=log)
            contenders = {}
            tvm_args = [tvm.runtime.from_dlpack(t) for t in (*targs, out)]  # zero-copy views, converted once
            for key, m in mods.items():
                f = m.lib["main"]
                out.zero_()
                with tvm_ffi.use_torch_stream():
                    f(*tvm_args)
                torch.cuda.synchronize()
                errors[key] = float(np.abs(out.cpu().numpy() - ref).max() / max(np.abs(ref).max(), 1e-30))

                def launch(f=f):
                    f(*tvm_args)
                contenders[key] = launch
            fn = torch_fn(w)
            with torch.no_grad():
                y = fn(*targs)
                torch.cuda.synchronize()
                errors["torch"] = float(np.abs(y.float().cpu().numpy() - ref).max() / max(np.abs(ref).max(), 1e-30))
                contenders["torch"] = lambda: fn(*targs)
                with tvm_ffi.use_torch_stream():
                    ms = time_events(contenders, args.rounds, args.min_ms)
            if "convtvm_tuned" in mods:  # TVM's own timer, as a cross-check of the event timing
                notes["tuned_time_evaluator_ms"] = statistics.median(mods["convtvm_tuned"].time(*xs, number=20,
                                                                                               repeat=5)) * 1e3
            row = {"name": name, "variant": w.variant, "params": w.to_json(), "flops": w.flops,
                   "trials": _trials(log, info, w) if record is not None else None,
                   "timings_ms": {k: ms.get(k) for k in ("convtvm_tuned", "convtvm_untuned", "torch")},
                   "max_rel_error": max(v for k, v in errors.items() if k != "torch") if mods else None,
                   "errors": errors, **notes}
            results.append(row)
            t = row["timings_ms"]
            speed = f"{t['torch'] / t['convtvm_tuned']:.2f}x" if t.get("convtvm_tuned") else "n/a"
            print(f"{name:6s} tuned {t.get('convtvm_tuned') or float('nan'):8.4f} ms  untuned "
                  f"{t.get('convtvm_untuned') or float('nan'):8.4f} ms  torch {t['torch']:8.4f} ms  speedup {speed}  "
                  f"err {row['max_rel_error'] or float('nan'):.1e}  ({time.time() - t0:.0f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 - one workload failing must not lose the others
            print(f"{name:6s} FAILED: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''}",
                  flush=True)
            results.append({"name": name, "variant": w.variant, "params": w.to_json(), "flops": w.flops,
                            "trials": None, "max_rel_error": None, "error": f"{type(e).__name__}: {e}"[:2000],
                            "timings_ms": {"convtvm_tuned": None, "convtvm_untuned": None, "torch": None}})
        out_path.parent.mkdir(parents=True, exist_ok=True)  # written after every workload
        _write(out_path, results, info, log, ws)
    result = _write(out_path, results, info, log, ws)
    print()
    print(bench.table(result))
    print(f"\nresults written to {out_path}")
    return 0


def _write(path, results, info, log, ws) -> dict:
    import torch
    from convtvm import bench
    from convtvm.module import write_json_atomic
    machine = bench.machine()
    props = torch.cuda.get_device_properties(0)
    machine.update({"gpu_sms": props.multi_processor_count, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                    "cuda_torch": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "driver": _driver()})
    peak = _peak(machine.get("gpu"))
    result = {"schema": "convtvm.bench/1", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine, "target": "cuda", "target_detail": json.loads(info.target_json),
              "emulated": False, "threads": 1, "peak_gflops": peak, "peak_source": "given" if peak else None,
              "timing": "CUDA events on torch's stream, interleaved rounds, median; torch with cudnn.benchmark, "
                        "TF32 off",
              "tuning_log": str(log), "results": results, "models": [],
              "tuning_curves": bench.tuning_curves(log, info, ws)}
    write_json_atomic(path, result)
    return result


def _driver() -> str | None:
    try:
        import subprocess
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
