"""Single ops against PyTorch on this machine's CPU: each side called as its users call it, in the same
process with the same threads, interleaved round by round, medians (``timing.py``).

``bench_ops(workloads, target)`` returns a result (``results.py``'s schema); ``table(result)`` renders it
as markdown.
"""

from __future__ import annotations

import numpy as np

from ..records import defaults
from ..records.log import TuningLog
from ..metrics import rel_err
from ..module import build
from ..reference import torch_fn
from ..targets import resolve
from ..timing import call_contender, kernel_contender, same_threads, time_interleaved
from . import results, torch_baseline

SMALL_OP_MS = 0.05  # below this, call overheads are reported beside the times


def bench_ops(workloads: dict, target="x86", log=None, rounds: int = 15, progress=print,
              handicapped_torch: bool = False) -> dict:
    """Time each workload as its users call it; return a result (schema ``results.SCHEMA``).

    Args:
        workloads: name -> Workload.
        target: a local CPU target (``resolve``'s argument).
        log: the tuned side's records, as ``build``'s ``tuning_log`` (None: the default records).
        rounds: interleaved rounds; the median counts.
        progress: called with one line of text per workload.
        handicapped_torch: also time ``reference.torch_fn`` (the correctness reference: F.pad, permuted
            weights) as ``torch_reference_path``, to put the old baseline on record.
    Columns (``timings_ms``):
        ``convtvm_tuned``: the tuned module bound to its weights (``m.bind``) called from Python on a torch
        tensor (absent when no record applies); ``convtvm_tuned_kernel``: its bare kernel (weights
        prepacked). ``convtvm_untuned`` (+ ``_kernel``): the fallback schedule, called the same way.
        ``torch``: the plain torch call (``torch_baseline.contender``) in the faster of the memory formats
        torch offers for the rank (all in ``torch_layouts_ms``); ``torch_prepacked``: TorchScript-frozen.
    Ops whose convtvm call takes under SMALL_OP_MS get ``call_overhead_ms`` (call minus kernel); the
    result's ``torch_call_floor_ms`` is torch's fixed cost per call.
    Raises: ValueError for a target that does not run on this machine."""
    info = resolve(target)
    if not info.backend.runs_in_process():
        raise ValueError(f"bench runs on this machine; target {info.kind} does not run here")
    threads = same_threads()
    rows = []
    for name, w in workloads.items():
        rows.append(_bench_one(w, name, info, log, rounds, handicapped_torch))
        progress(_row_text(rows[-1]))
    log_dir = log or defaults.shipped_log(info)
    return results.envelope(info, threads, results=rows, torch_call_floor_ms=torch_call_floor_ms(rounds),
                            tuning_curves=tuning_curves(log_dir, workloads))


def torch_ms(workloads: dict, rounds: int = 3) -> dict:
    """name -> milliseconds of each workload's plain torch call (``torch_baseline.contender``, the faster
    memory format), median of ``rounds`` batches: what ``bench_ops`` reports as ``torch``."""
    out = {}
    for name, w in workloads.items():
        xs = w.random_inputs(seed=1)
        contenders = {fmt: call_contender(*torch_baseline.contender(w, xs, fmt))
                      for fmt in torch_baseline.memory_formats(w.ndim)}
        out[name] = min(time_interleaved(contenders, rounds, settle=0.02).values())
    return out


def _bench_one(w, name: str, info, log, rounds: int, handicapped_torch: bool) -> dict:
    xs = w.random_inputs(seed=1)
    ref = w.reference(*xs)
    mods = {"convtvm_untuned": build(w, info, tuning_log=False)}
    tuned = build(w, info, tuning_log=log)  # its best record that reproduces torch, if any
    if tuned.schedule != "fallback":
        mods["convtvm_tuned"] = tuned
    x_user = torch_tensor(xs[0])  # the data as a torch user holds it: torch-allocated
    calls = {k: (m.bind(*xs[1:]), x_user) for k, m in mods.items()}
    errors = {k: rel_err(f(x).numpy(), ref) for k, (f, x) in calls.items()}
    contenders = {k: call_contender(f, x) for k, (f, x) in calls.items()}
    for k, m in mods.items():
        fname, args = m.kernel_args(xs)
        contenders[f"{k}_kernel"] = kernel_contender(getattr(m.lib, "mod", m.lib), fname, args, _cpu())
    for fmt in torch_baseline.memory_formats(w.ndim):
        fn, x = torch_baseline.contender(w, xs, fmt)
        errors[f"torch {fmt}"] = rel_err(_to_layout(fn(x), w), ref)
        contenders[f"torch {fmt}"] = call_contender(fn, x)
        packed = torch_baseline.prepacked(fn, x)
        if packed is not None:
            contenders[f"torch_prepacked {fmt}"] = call_contender(packed, x)
    if handicapped_torch:
        contenders["torch_reference_path"] = call_contender(torch_fn(w), *[torch_tensor(a) for a in xs])
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
    return row


def _cpu():
    import tvm
    return tvm.cpu()


def torch_tensor(a):
    """A numpy array as a torch tensor of torch's own allocation (as a torch user holds data)."""
    import torch
    return torch.from_numpy(np.asarray(a)).clone()


def _to_layout(y, w) -> np.ndarray:
    """torch's channels-first result in ``w``'s layout, as numpy."""
    return (y.movedim(1, -1) if w.channels_last else y).contiguous().numpy()


def torch_call_floor_ms(rounds: int = 15) -> float:
    """Milliseconds of torch's cheapest convolution call (a 1x1 conv2d of one pixel, one channel): the
    fixed cost of a torch call on this machine."""
    import torch
    import torch.nn.functional as F
    x, w = torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    return time_interleaved({"floor": call_contender(lambda a: F.conv2d(a, w), x)}, rounds, settle=0)["floor"]


def _record_trials(log, w) -> int | None:
    """Trials measured for this workload, as the log's trials.json records them (None if it does not)."""
    return TuningLog(log).trials().get(w.key) if log else None


def tuning_curves(log, workloads) -> list:
    """The log's curves for ``workloads``: ``[{"name", "points": [[trials, best_ms(, seconds)], ...]}]``."""
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
    """The geometric mean of positive numbers."""
    return float(np.exp(np.mean(np.log(xs))))


def table(result: dict) -> str:
    """Markdown table of an op result: times in ms as users call each side, then the bare kernel."""
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
