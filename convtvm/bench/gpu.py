"""Single ops on a CUDA GPU against PyTorch with cuDNN, timed with CUDA events.

Every contender runs on torch's current stream (TVM through ``tvm_ffi.use_torch_stream``) on the same
device tensors, interleaved round by round; each round times a batch of launches between two CUDA
events (``timing.cuda_event_contender``) and the median per launch counts. torch runs with
``cudnn.benchmark = True`` and TF32 off (an fp32 comparison), called as its users call it
(``torch_baseline.contender`` on the device, the faster memory format counting).
"""

from __future__ import annotations

import subprocess

from ..records import defaults
from ..metrics import rel_err
from ..module import build
from ..targets import resolve
from ..timing import cuda_event_contender, time_interleaved
from . import results, torch_baseline
from .ops import tuning_curves

# fp32 (non-tensor-core) peak, GFLOP/s, by device name
PEAK_FP32 = {"H100 SXM": 66900.0, "H100 80GB HBM3": 66900.0, "H100 PCIe": 51200.0, "H100 NVL": 60000.0,
             "H200": 66900.0, "A100": 19500.0, "L4": 30300.0}

TIMED_AS = {
    "convtvm_tuned": "the tuned kernel launched on torch's stream on device tensors (CUDA events)",
    "convtvm_untuned": "the fallback kernel, launched the same way",
    "torch": "plain torch.nn.functional call with cudnn.benchmark, TF32 off, faster memory format",
}


def bench_ops_cuda(workloads: dict, target="cuda", log=None, rounds: int = 15, progress=print,
                   min_ms: float = 5.0) -> dict:
    """Time each workload on GPU 0; return a result (``results.SCHEMA``, target "cuda").

    Args: as ``ops.bench_ops``; ``target`` is a CUDA target (its arch defaults to the GPU's);
    ``min_ms``: the length of one timed batch of launches.
    Raises: RuntimeError when torch or TVM sees no CUDA GPU."""
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("bench --target cuda needs a CUDA GPU: torch sees none")
    info = resolve(target)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for name, w in workloads.items():
        rows.append(_bench_one(w, name, info, log, rounds, min_ms))
        t = rows[-1]["timings_ms"]
        speed = f"{t['torch'] / t['convtvm_tuned']:.2f}x" if t.get("convtvm_tuned") else "n/a"
        progress(f"{name:8s} tuned {t.get('convtvm_tuned', float('nan')):9.4f} ms  untuned "
                 f"{t.get('convtvm_untuned', float('nan')):9.4f}  torch {t['torch']:9.4f}  speedup {speed}  "
                 f"err {rows[-1]['max_rel_error']:.1e}")
    props = torch.cuda.get_device_properties(0)
    extra = {"gpu_sms": props.multi_processor_count, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
             "cuda_torch": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "driver": _driver()}
    peak = next((v for k, v in PEAK_FP32.items() if k in torch.cuda.get_device_name(0)), None)
    return results.envelope(info, 1, results=rows, peak=peak, machine_extra=extra, timed_as=TIMED_AS,
                            tuning_curves=tuning_curves(log or defaults.shipped_log(info), workloads))


def _bench_one(w, name: str, info, log, rounds: int, min_ms: float) -> dict:
    import torch
    import tvm
    import tvm_ffi
    xs = w.random_inputs(seed=1)
    ref = w.reference(*xs)
    dev = torch.device("cuda")
    targs = [torch.from_numpy(x).to(dev) for x in xs]
    out = torch.empty(w.output_shape, dtype=getattr(torch, w.dtype), device=dev)
    tvm_args = [tvm.runtime.from_dlpack(t) for t in (*targs, out)]  # zero-copy views, converted once
    mods = {"convtvm_untuned": build(w, info, tuning_log=False)}
    tuned = build(w, info, tuning_log=log)
    if tuned.schedule != "fallback":
        mods["convtvm_tuned"] = tuned
    errors, launches = {}, {}
    for key, m in mods.items():
        f = m.lib["main"]
        with tvm_ffi.use_torch_stream():
            f(*tvm_args)
        torch.cuda.synchronize()
        errors[key] = rel_err(out.cpu().numpy(), ref)
        launches[key] = lambda f=f: f(*tvm_args)
    torch_ms = {}
    with torch.no_grad(), tvm_ffi.use_torch_stream():
        contenders = {k: cuda_event_contender(f, min_ms) for k, f in launches.items()}
        for fmt in torch_baseline.memory_formats(w.ndim):
            fn, x = torch_baseline.contender(w, xs, fmt, device="cuda")
            y = fn(x)
            errors[f"torch {fmt}"] = rel_err((y.movedim(1, -1) if w.channels_last else y).float(), ref)
            contenders[f"torch {fmt}"] = cuda_event_contender(lambda fn=fn, x=x: fn(x), min_ms)
        ms = time_interleaved(contenders, rounds, settle=0)
    torch_ms = {k.split(" ", 1)[1]: v for k, v in ms.items() if k.startswith("torch ")}
    timings = {k: ms[k] for k in mods}
    timings["torch"] = min(torch_ms.values())
    return {"name": name, "variant": w.variant, "params": w.to_json(), "flops": w.flops, "trials": None,
            "schedule": mods.get("convtvm_tuned", mods["convtvm_untuned"]).schedule, "timings_ms": timings,
            "torch_layouts_ms": torch_ms, "max_rel_error": max(errors.values())}


def _driver() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
