"""The one result schema, ``convtvm.bench/2``: written by ``bench`` (ops and networks), read and validated
here for ``convtvm report``.

A result file is a JSON object::

    {"schema": "convtvm.bench/2", "date": ISO-8601 UTC, "machine": {"cpu", "cores", "gpu", versions...},
     "target": "x86" | "arm" | "cuda", "target_detail": the TVM target dict, "emulated": bool,
     "threads": int, "peak_gflops": float | null, "timed_as": {column: how it was timed},
     "results": [op rows], "models": [network rows], "tuning_curves": [{"name", "points": [[trials, ms(, seconds)]]}]}

An op row: ``name``, ``variant``, ``params`` (the workload's JSON), ``flops``, ``trials``, ``schedule``,
``timings_ms`` (column -> milliseconds, a column absent when not measured), ``max_rel_error``.
A network row: ``name``, ``input_size``, ``batch``, ``trials``, ``timings_ms``, ``profile``.
Files of the older ``convtvm.bench/1`` (convtvm's bare kernel against torch through the correctness
reference) are still read, and marked by the report.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

from ..version import __version__
from ..artifact import write_json_atomic

SCHEMA = "convtvm.bench/2"
OLD_SCHEMA = "convtvm.bench/1"
READABLE = (SCHEMA, OLD_SCHEMA)

TIMED_AS = {
    "convtvm_tuned": "bound module (m.bind(weights)) called from Python on a torch tensor",
    "convtvm_tuned_kernel": "the tuned kernel alone (time_evaluator, weights prepacked)",
    "convtvm_untuned": "fallback schedule, bound module called from Python on a torch tensor",
    "torch": "plain torch.nn.functional call, contiguous weights in torch's layout, faster memory format",
    "torch_prepacked": "the same, TorchScript-frozen with optimize_for_inference (oneDNN prepacked weights)",
}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def machine() -> dict:
    """This machine as a result file names it: CPU model, cores, GPU (torch's name) and versions."""
    import torch
    import tvm
    cpu = next((ln.split(":", 1)[1].strip() for ln in _cpuinfo() if ln.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "isa": vector_isa(), "cores": os.cpu_count(), "gpu": gpu, "tvm": tvm.__version__, "torch": torch.__version__,
            "convtvm": __version__, "hostname": platform.node(), "python": platform.python_version()}


def vector_isa() -> str | None:
    """This CPU's widest vector ISA as /proc/cpuinfo's flags give it: "AVX-512 + AMX", "AVX-512", "AVX2",
    "NEON" (aarch64's asimd), or None."""
    flags = set(next((ln.split(":", 1)[1].split() for ln in _cpuinfo()
                      if ln.startswith(("flags", "Features"))), []))
    for isa, need in (("AVX-512 + AMX", {"avx512f", "amx_tile"}), ("AVX-512", {"avx512f"}), ("AVX2", {"avx2"}),
                      ("NEON", {"asimd"})):
        if need <= flags:
            return isa
    return None


def peak_gflops(kind: str, cores: int) -> float | None:
    """fp32 FMA peak of ``cores`` CPU cores at the clock /proc/cpuinfo reports (nominal; a boost runs
    above it); None for a target kind without a per-cycle figure (its backend's ``flops_per_cycle``)
    or without a clock."""
    from .. import backends
    info = _cpuinfo()
    mhz = [float(ln.split(":")[1]) for ln in info if ln.startswith("cpu MHz")]
    field = {ln.split(":")[0].strip(): ln.split(":", 1)[1].split() for ln in info if ":" in ln}
    per_cycle = backends.get(kind).flops_per_cycle(field) if kind in backends.KINDS else None
    if per_cycle is None or not mhz:
        return None
    return round(cores * max(mhz) / 1e3 * per_cycle, 1)


def envelope(info, threads: int, *, results=(), models=(), tuning_curves=(), peak: float | None = None,
             machine_extra: dict | None = None, timed_as: dict | None = None, **extra) -> dict:
    """A result file's content for a run on target ``info`` with ``threads`` threads.

    ``peak``: the fp32 peak in GFLOP/s (default: ``peak_gflops`` for the CPU); ``machine_extra`` adds
    fields to ``machine`` (a GPU's memory, driver); ``timed_as``: how each column was timed (default:
    ``TIMED_AS``, the single-op CPU columns); ``extra``: further top-level fields."""
    peak = peak if peak is not None else peak_gflops(info.kind, threads)
    mach = machine()
    mach.update(machine_extra or {})
    return {"schema": SCHEMA, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": mach, "target": info.kind, "target_detail": json.loads(info.target_json),
            "emulated": False, "threads": threads, "peak_gflops": peak, "peak_source": "given" if peak else None,
            "timed_as": timed_as or TIMED_AS, "results": list(results), "models": list(models),
            "tuning_curves": list(tuning_curves), **extra}


def write(path, result: dict) -> dict:
    """Validate ``result`` and write it to ``path`` atomically (a regular file). Returns ``result``.
    Raises ValueError for a malformed result (a bug of its writer)."""
    validate(result, str(path))
    write_json_atomic(path, result)
    return result


_KINDS = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "dict": ("an object", lambda v: isinstance(v, dict)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "num": ("a finite number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)),
}


def load(path) -> dict:
    """Read and validate one result file. Raises ValueError naming the file and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"malformed result file {path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ValueError(f"cannot read result file {path}: {e.strerror}") from None
    validate(data, str(path))
    data["emulated"] = bool(data.get("emulated"))
    data["_path"] = str(path)
    return data


def validate(data, source: str = "result") -> None:
    """Check ``data`` against the schema (either readable version). Raises ValueError naming ``source``
    and the first field that breaks it."""

    def bad(msg):
        return ValueError(f"malformed result file {source}: {msg}")

    def check(value, kind, where, nullable=True, positive=False):
        if value is None and nullable:
            return
        text, ok = _KINDS[kind]
        if not ok(value):
            got = "null/missing" if value is None else type(value).__name__
            raise bad(f"{where} must be {text}{' or null' if nullable else ''}, got {got}")
        if positive and value <= 0:
            raise bad(f"{where} must be > 0, got {value!r}")

    def check_timings(entry, where):
        check(entry.get("timings_ms"), "dict", f"{where}.timings_ms")
        for k, v in (entry.get("timings_ms") or {}).items():
            check(v, "num", f"{where}.timings_ms[{k!r}]", positive=True)

    check(data, "dict", "top level", nullable=False)
    for key in ("schema", "machine", "target", "results"):
        if key not in data:
            raise bad(f"missing required key {key!r}")
    if data["schema"] not in READABLE:
        raise bad(f"schema is {data['schema']!r}, expected one of {', '.join(READABLE)}")
    check(data["machine"], "dict", "machine", nullable=False)
    for key in ("cpu", "isa", "gpu"):
        check(data["machine"].get(key), "str", f"machine.{key}")
    check(data["target"], "str", "target", nullable=False)
    check(data["results"], "list", "results", nullable=False)
    for key, kind in (("date", "str"), ("emulated", "bool"), ("threads", "int"),
                      ("peak_source", "str"), ("models", "list"), ("tuning_curves", "list")):
        check(data.get(key), kind, key)
    check(data.get("peak_gflops"), "num", "peak_gflops", positive=True)
    for i, r in enumerate(data["results"]):
        w = f"results[{i}]"
        check(r, "dict", w, nullable=False)
        check(r.get("name"), "str", f"{w}.name", nullable=False)
        for key, kind in (("variant", "str"), ("trials", "int"), ("params", "dict")):
            check(r.get(key), kind, f"{w}.{key}")
        check(r.get("flops"), "num", f"{w}.flops", positive=True)
        check(r.get("max_rel_error"), "num", f"{w}.max_rel_error")
        check_timings(r, w)
    for i, m in enumerate(data.get("models") or []):
        w = f"models[{i}]"
        check(m, "dict", w, nullable=False)
        check(m.get("name"), "str", f"{w}.name", nullable=False)
        for key in ("input_size", "batch", "trials"):
            check(m.get(key), "int", f"{w}.{key}")
        check_timings(m, w)
        check(m.get("profile"), "list", f"{w}.profile")
        for j, r in enumerate(m.get("profile") or []):
            check(r, "dict", f"{w}.profile[{j}]", nullable=False)
            check(r.get("function"), "str", f"{w}.profile[{j}].function", nullable=False)
            check(r.get("ms"), "num", f"{w}.profile[{j}].ms", nullable=False)
    for i, c in enumerate(data.get("tuning_curves") or []):
        w = f"tuning_curves[{i}]"
        check(c, "dict", w, nullable=False)
        check(c.get("name"), "str", f"{w}.name", nullable=False)
        check(c.get("points"), "list", f"{w}.points", nullable=False)
        for j, p in enumerate(c["points"]):
            if not (isinstance(p, list) and len(p) in (2, 3) and all(_KINDS["num"][1](x) for x in p)):
                raise bad(f"{w}.points[{j}] must be [trials, best_ms] or [trials, best_ms, seconds], got {p!r}")
