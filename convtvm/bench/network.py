"""Benchmark of a whole network (a named model or a ``.pt2`` / ``.onnx`` file): convtvm tuned and
untuned against PyTorch eager, torch.compile and ONNX Runtime, in this process (``bench_model``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..metrics import rel_err
from ..network.compile import compile_model
from ..network.importer import OnnxModel, import_model, reference_outputs, torch_callable
from ..network.runtime import profile_table
from ..network.schedule import lower
from ..records import defaults
from ..targets import cpu_threads, resolve
from ..timing import call_contender, same_threads, time_interleaved
from ..tuning.network import (describe_inputs, extract_tasks, log_trials, model_and_input, model_trials_key,
                              recorded_trials)
from . import results


def bench_model(name: str, input_size: int | None, target_info, log=None, rounds: int = 15, *, batch: int = 1,
                progress=print) -> dict:
    """Time tuned and untuned convtvm, PyTorch eager, torch.compile and (if importable) ONNX Runtime
    on one network (``model_and_input``: a named model, or a ``.pt2`` / ``.onnx`` file at its own
    shapes), each called as its users call it (``net(x)`` and ``model(x)`` on torch tensors,
    ``session.run`` on numpy arrays), in this process, with the same thread count, interleaved
    rounds, medians (schema "convtvm.bench/2"). An ONNX file has no torch contenders; ONNX Runtime
    runs the file itself. ``log``: the tuned side's records, as ``compile_model``'s ``tuning_log``
    (None: the default records). Returns the result document. Raises ValueError for a target that
    does not run on this machine."""
    import torch
    info = resolve(target_info)
    if not info.backend.runs_in_process():
        raise ValueError(f"bench runs on this machine; target {info.kind} does not run here")
    threads = same_threads()
    model, xs = model_and_input(name, input_size, batch)
    ref = reference_outputs(model, xs)
    ref = ref[0] if ref else None  # the first output is the one compared
    notes, runs, trials = [], {}, None
    progress(f"compiling {describe_inputs(name, input_size, xs, batch)} for {info.tag} ...")
    runs["convtvm_untuned"] = compile_model(model, xs, info, tuning_log=False)
    tuned = compile_model(model, xs, info, tuning_log=log)
    applied = tuned.schedules.get("tuned", 0) + tuned.schedules.get("carried over", 0)
    sources = [Path(log)] if log else [lg for lg, _ in defaults.network_logs(info)]
    source = ", ".join(map(str, sources))
    if applied:
        runs["convtvm_tuned"] = tuned
        key = model_trials_key(name, input_size, batch)
        trials = next((t for t in (recorded_trials(lg, key) for lg in sources) if t is not None), None)
        if trials is None and log:  # a working log: count its records for this network's tasks
            trials = log_trials(extract_tasks(lower(import_model(model, xs), info), info), info, log)
        notes.append(f"convtvm_tuned: {applied} of {sum(tuned.schedules.values())} TIR functions from {source} "
                     f"({', '.join(f'{k} {v}' for k, v in tuned.schedules.items())})")
    else:
        notes.append(f"convtvm_tuned: no record for this model's kernels ({source or 'no log'})")
    eager = torch_callable(model)
    with torch.no_grad():
        if eager is not None:
            runs["torch"] = eager
            try:
                compiled = torch.compile(eager)
                compiled(*xs)  # compiles
                runs["torch_compile"] = compiled
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                notes.append(f"torch_compile skipped: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
        calls = {k: (lambda f=f: _first(f(*xs))) for k, f in runs.items()}
        ort = _onnxruntime_runner(model, xs, notes)
        if ort:
            calls["onnxruntime"] = ort
        errors = {k: rel_err(f(), ref) for k, f in calls.items()} if ref is not None else {}
        ms_ = time_interleaved({k: call_contender(f) for k, f in calls.items()}, rounds)
    timings = {k: ms_.get(k) for k in ("convtvm_tuned", "convtvm_untuned", "torch", "torch_compile", "onnxruntime")}
    profiled = tuned if "convtvm_tuned" in runs else None
    row = {"name": name, "input_size": input_size, "batch": batch, "trials": trials, "timings_ms": timings,
           "max_rel_error": errors, "notes": notes,
           "profile": profiled.profile(*[x.numpy() for x in xs]) if profiled else []}  # after the timing
    for k, v in timings.items():
        progress(f"  {k:16s} {f'{v:9.3f} ms' if v is not None else '   not measured'}"
                 + (f"   err {errors[k]:.1e}" if k in errors else ""))
    if row["profile"]:
        progress("  where tuned convtvm's time goes (instrumented; the slowest functions):")
        progress(profile_table(row["profile"], top=12))
    for note in notes:
        progress(f"  note: {note}")
    timed_as = {"convtvm_tuned": "net(x) on a torch tensor", "convtvm_untuned": "net(x), untuned schedules",
                "torch": "model(x) in eval, no_grad", "torch_compile": "torch.compile(model)(x)",
                "onnxruntime": "InferenceSession.run on a numpy array"}
    return results.envelope(info, threads, models=[row], timed_as=timed_as)


def _first(out):
    """A network's first output (the one compared and timed)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _onnxruntime_runner(model, xs: list, notes: list):
    """A call running ``model`` on ``xs`` in ONNX Runtime (CPU, this process's thread count): an ONNX
    file as it is, a torch network exported to ONNX; or None with the reason appended to ``notes``."""
    try:
        import onnxruntime as ort
    except ImportError:
        notes.append("onnxruntime: not installed (pip install onnxruntime onnx)")
        return None
    try:
        import torch
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cpu_threads()
        if isinstance(model, OnnxModel):
            sess = ort.InferenceSession(model.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "model.onnx")
                # an ExportedProgram's module refuses train()/eval(): keep the mode it was exported in
                mode = {"training": torch.onnx.TrainingMode.PRESERVE} if torch_callable(model) is not model else {}
                torch.onnx.export(torch_callable(model), tuple(xs), path, dynamo=False, **mode)
                sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs)}
        return lambda: sess.run(None, feed)[0]
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        notes.append(f"onnxruntime skipped: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
        return None
