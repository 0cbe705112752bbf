"""Render ``convtvm bench`` result files (``bench/results.py``'s schema) as a report a person reads at a
glance.

``render_report(paths, out_dir)`` writes ``out_dir/report.html`` (one self-contained file, plots embedded
as base64 PNGs), ``out_dir/report.md`` (the same tables, plots linked from ``out_dir/plots/``) and the
plots. Results are grouped by machine (CPU or GPU name, LLVM CPU, vector ISA) and target; each group is
one column of the op table and one colour in every plot. The report opens with what to look at: the
geomean per machine, the laggards and the network ratio.

Rules: a value that is absent or null is shown as "not measured" (never 0, never drawn); a result from
an emulated device is correctness only, so its timings appear nowhere (no GFLOP/s, speedups, geomean or
plots). Needs numpy and matplotlib only.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from importlib import metadata
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .artifact import atomic_file
from .bench import results

OLD_BASELINE = "old baseline"
OLD_BASELINE_NOTE = (f"Columns marked '{OLD_BASELINE}' (result schema convtvm.bench/1) timed convtvm's bare "
                     "kernel against torch called through the correctness reference (a separate F.pad, "
                     "channels-last weights permuted at each call, transposed outputs cropped), which slowed "
                     "torch by up to 3x. Their speedups are not comparable with the others; they stay for the "
                     "record.")
NM = "not measured"
EMULATED = "emulated: correctness only"
LAG = 0.9  # tuned/torch speedup below this counts as lagging
GOAL = 1.3  # the suite's geomean speedup goal over torch
NETWORK_GOAL = 0.8  # convtvm's network latency over the fastest other contender's
TUNED, UNTUNED, TORCH = "convtvm_tuned", "convtvm_untuned", "torch"
CORE = (TUNED, UNTUNED, TORCH)
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f"]  # one per machine, in order of first appearance
DPI = 90
# LLVM's CPU name -> its vector ISA, for result files that do not record the ISA themselves
_ISA_OF_MCPU = {"znver2": "AVX2", "znver3": "AVX2", "haswell": "AVX2", "broadwell": "AVX2", "skylake": "AVX2",
                "znver4": "AVX-512", "znver5": "AVX-512", "skylake-avx512": "AVX-512", "cascadelake": "AVX-512",
                "icelake-server": "AVX-512", "rocketlake": "AVX-512", "tigerlake": "AVX-512",
                "sapphirerapids": "AVX-512 + AMX", "emeraldrapids": "AVX-512 + AMX",
                "graniterapids": "AVX-512 + AMX"}


# ----------------------------------------------------------------- small helpers
def _geomean(xs):
    return float(np.exp(np.mean(np.log(xs)))) if xs else None


def _t(entry, contender):
    return (entry.get("timings_ms") or {}).get(contender)


def _ratio(num, den):
    return None if num is None or den is None else num / den


def _ms(v):
    return NM if v is None else (f"{v:.4g}" if v < 1e4 else f"{v:.0f}")


def _x(v):
    return NM if v is None else f"{v:.2f}x"


def _fmt(v, spec):
    return NM if v is None else format(v, spec)


def _contenders(entries, base=CORE):
    seen = list(base)
    for e in entries:
        seen += [k for k in (e.get("timings_ms") or {}) if k not in seen]
    return seen


def _op_key(r):
    return (r["name"], r.get("variant") or r["name"])


def _speedups(run):
    """{op key: tuned-vs-torch speedup} for the ops where both were measured."""
    out = {}
    for r in run["results"]:
        s = _ratio(_t(r, TORCH), _t(r, TUNED))
        if s is not None:
            out[_op_key(r)] = s
    return out


def _version():
    try:
        return metadata.version("convtvm")
    except metadata.PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------- machines
def machine_name(run) -> str:
    """The machine a run measured, as a reader names it: "Intel Xeon (rocketlake, AVX-512 + AMX)",
    "AMD EPYC 7B13 (znver3, AVX2)", or the GPU's name for a CUDA run."""
    m = run["machine"]
    if run["target"] == "cuda" and m.get("gpu"):
        return str(m["gpu"])
    cpu = re.sub(r"\((R|TM)\)|\bProcessor\b|\bCPU\b|@.*|\d+-Core", "", str(m.get("cpu") or "unknown CPU"))
    cpu = " ".join(cpu.split()) or "unknown CPU"
    mcpu = (run.get("target_detail") or {}).get("mcpu")
    isa = m.get("isa") or _ISA_OF_MCPU.get(mcpu)
    detail = ", ".join(x for x in (mcpu, isa) if x)
    return f"{cpu} ({detail})" if detail else cpu


def group_runs(runs) -> list[dict]:
    """Runs grouped by (machine, target), in order of first appearance. A group:
    ``{"label", "machine", "target", "color", "emulated", "runs", "ops", "old_ops"}``: ``ops`` is the run of
    the current schema that measured the most ops (the newest of equals; None if none), ``old_ops`` the same
    among old-baseline runs."""
    groups: dict = {}
    for run in runs:
        key = (machine_name(run), run["target"], run["emulated"])
        g = groups.setdefault(key, {"machine": key[0], "target": key[1], "emulated": key[2], "runs": []})
        g["runs"].append(run)
    out = []
    for i, g in enumerate(groups.values()):
        g["label"] = f"{g['target']} · {g['machine']}" + (" (emulated)" if g["emulated"] else "")
        g["color"] = PALETTE[i % len(PALETTE)]
        with_ops = sorted((r for r in g["runs"] if r["results"]), key=lambda r: (len(r["results"]), r.get("date") or ""))
        g["ops"] = next((r for r in reversed(with_ops) if r["schema"] == results.SCHEMA), None)
        g["old_ops"] = next((r for r in reversed(with_ops) if r["schema"] == results.OLD_SCHEMA), None)
        out.append(g)
    return out


def op_columns(groups) -> list[tuple[str, str, dict]]:
    """(column label, colour, run) for every group that measured ops: its current run, then its old
    baseline run, if any."""
    cols = []
    for g in groups:
        if g["ops"] is not None:
            cols.append((g["label"], g["color"], g["ops"]))
        if g["old_ops"] is not None:
            cols.append((f"{g['label']} ({OLD_BASELINE})", g["color"], g["old_ops"]))
    return cols


def network_rows(groups) -> list[tuple[dict, dict]]:
    """(group, network entry) for every network measurement, the newest per (network, input, batch)."""
    rows = []
    for g in groups:
        newest = {}
        for run in sorted(g["runs"], key=lambda r: r.get("date") or ""):
            for m in run.get("models") or []:
                newest[(m["name"], m.get("input_size"), m.get("batch"))] = m
        rows += [(g, m) for m in newest.values()]
    return rows


def _network_name(name: str, input_size, batch) -> str:
    """"efficientnet_v2_s 224px batch 1"; a model file's row, whose inputs its file defines, has no size."""
    return " ".join([name] + ([f"{input_size}px"] if input_size else []) + ([f"batch {batch}"] if batch else []))


def _fastest_other(m):
    """(name, ms) of the fastest contender that is not convtvm, or None."""
    others = {k: v for k, v in (m.get("timings_ms") or {}).items() if not k.startswith("convtvm") and v}
    return min(others.items(), key=lambda kv: kv[1]) if others else None


# ----------------------------------------------------------------- plots
def _fig(width, height):
    return Figure(figsize=(min(width, 16), height), dpi=DPI, layout="constrained")


def speedup_figure(groups):
    """Grouped bars of tuned-vs-torch speedup per op, one colour per machine, on a log axis with the 1x
    and 0.9x lines; a missing bar is an op that machine did not measure."""
    cols = [c for c in op_columns(groups) if not c[2]["emulated"] and OLD_BASELINE not in c[0]]
    ops = list(dict.fromkeys(k for _, _, run in cols for k in _speedups(run)))
    if not ops:
        return None
    fig = _fig(3 + 0.22 * len(ops) * len(cols), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / len(cols)
    x = np.arange(len(ops))
    for j, (label, color, run) in enumerate(cols):
        sp = _speedups(run)
        have = [i for i, k in enumerate(ops) if k in sp]
        ax.bar(x[have] + (j - (len(cols) - 1) / 2) * width, [sp[ops[i]] - 1 for i in have], width,
               bottom=1, color=color, label=label)  # from 1x: a win rises, a loss hangs
    values = [v for _, _, run in cols for v in _speedups(run).values()]
    ax.set_yscale("log")
    ticks = [t for t in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1, 1.5, 2, 3, 5, 7, 10, 20, 30, 50, 100)
             if min(values) / 1.3 <= t <= max(values) * 1.3]
    ax.set_yticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.axhline(1.0, color="black", linewidth=0.9)
    ax.axhline(LAG, color="red", linestyle="--", linewidth=0.9, label=f"{LAG}x")
    ax.set_xticks(x, [k[0] for k in ops], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("speedup over torch (log scale)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.set_title("Tuned convtvm over torch per op (log axis; a bar rises from 1x where convtvm is faster)",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


def networks_figure(groups):
    """Per network, grouped bars of every contender's latency on each machine."""
    rows = [(g, m) for g, m in network_rows(groups) if not g["emulated"]]
    nets = list(dict.fromkeys((m["name"], m.get("input_size"), m.get("batch")) for _, m in rows))
    if not nets:
        return None
    conts = _contenders([m for _, m in rows])
    colors = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(conts)}
    fig = _fig(2 + 4.5 * len(nets), 4.2)
    for i, net in enumerate(nets):
        ax = fig.add_subplot(1, len(nets), i + 1)
        here = [(g, m) for g, m in rows if (m["name"], m.get("input_size"), m.get("batch")) == net]
        width = 0.8 / len(conts)
        for j, c in enumerate(conts):
            xs = [k for k, (_, m) in enumerate(here) if _t(m, c)]
            ax.bar(np.array(xs) + (j - (len(conts) - 1) / 2) * width, [_t(here[k][1], c) for k in xs], width,
                   color=colors[c], label=c if i == 0 else None)
        ax.set_xticks(range(len(here)), [g["machine"] for g, _ in here], fontsize=8, rotation=15, ha="right")
        ax.set(title=f"{_network_name(*net)} (lower is better)", ylabel="latency (ms)")
        ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return fig


def tuning_figure(groups, top: int = 9):
    """Best latency relative to torch against tuning trials, from trial 0, for the ``top`` ops whose
    curves have at least two points (ranked by how much tuning gained); one colour per machine."""
    curves = []
    for label, color, run in op_columns(groups):
        if run["emulated"]:
            continue
        old = OLD_BASELINE in label  # its torch was handicapped: its curves are shown in ms
        torch_ms = {r["name"]: None if old else _t(r, TORCH) for r in run["results"]}
        for c in run.get("tuning_curves") or []:
            pts = sorted(c["points"])
            if len(pts) >= 2:
                curves.append((pts[0][1] / pts[-1][1], c["name"], label, color, pts, torch_ms.get(c["name"])))
    if not curves:
        return None
    names = [n for _, n, *_ in sorted(curves, reverse=True)]
    names = list(dict.fromkeys(names))[:top]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _fig(4.2 * cols + 2, 3.0 * rows)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        relative = True
        for _, n, label, color, pts, torch_ms in curves:
            if n != name:
                continue
            relative &= torch_ms is not None
            px, py = [p[0] for p in pts], [p[1] for p in pts]
            ys = [v / torch_ms for v in py] if torch_ms else list(py)
            ax.step(px, ys, where="post", marker="o", markersize=3, color=color)
        if relative:
            ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xlim(left=0)
        ax.set(title=name, xlabel="tuning trials", ylabel="best / torch latency" if relative else "best latency (ms)")
        ax.grid(alpha=0.3)
    labels = list(dict.fromkeys((label, color) for _, _, label, color, *_ in curves))
    fig.legend(handles=[Line2D([], [], color=c, marker="o", markersize=3, label=lab) for lab, c in labels],
               loc="outside right upper", fontsize=8, frameon=False)
    return fig


def suite_over_time(run) -> list[tuple[float, float]] | None:
    """[(minutes of tuning, estimated suite geomean speedup over torch)] from a run's timed tuning
    curves, or None when none has seconds. An op's speedup at time t is its measured speedup scaled by
    how much slower its best kernel was then: measured x (last best + o) / (best by t + o), o its call
    overhead (the measured call minus kernel time); before its first timed point, that point's. The
    last point is the measured geomean; the tuner's own timings only give the shape of the curve. An
    op without a timed curve counts with its measured speedup throughout."""
    curves = {c["name"]: sorted(c["points"]) for c in run.get("tuning_curves") or []
              if any(len(p) > 2 for p in c["points"])}
    if not curves:
        return None
    ops = []
    for r in run["results"]:
        torch_ms, call, kernel = _t(r, TORCH), _t(r, TUNED), _t(r, TUNED + "_kernel")
        if torch_ms is None or call is None:
            continue
        pts = [p for p in curves.get(r["name"], []) if len(p) > 2]
        overhead = max(call - kernel, 0.0) if kernel is not None else 0.0
        ops.append((torch_ms, call, overhead, pts))
    times = sorted({p[2] for *_, pts in ops for p in pts})
    out = []
    for t in times:
        sp = []
        for torch_ms, call, overhead, pts in ops:
            if not pts:
                sp.append(torch_ms / call)
                continue
            seen = [p[1] for p in pts if p[2] <= t] or [pts[0][1]]
            last = min(p[1] for p in pts)
            sp.append(torch_ms / call * (last + overhead) / (min(seen) + overhead))
        out.append((t / 60, _geomean(sp)))
    return out


def time_to_speed_figure(groups):
    """The suite's estimated geomean speedup over torch against minutes of tuning (``suite_over_time``),
    one line per machine, with the 1.3x goal and the 1x lines."""
    lines = [(label, color, suite_over_time(run)) for label, color, run in op_columns(groups)
             if not run["emulated"] and OLD_BASELINE not in label]
    lines = [x for x in lines if x[2]]
    if not lines:
        return None
    fig = _fig(8, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for label, color, pts in lines:
        ax.step([m for m, _ in pts], [g for _, g in pts], where="post", color=color, label=label)
    ax.axhline(GOAL, color="black", linestyle="--", linewidth=0.8, label=f"goal {GOAL}x")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set(xlabel="minutes of tuning", ylabel="suite geomean speedup over torch (estimated)")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


# ----------------------------------------------------------------- content
def what_to_look_at(groups) -> list[str]:
    """One line per fact a reader wants first: the geomean and laggards per machine, the network ratio."""
    lines = []
    for label, _, run in op_columns(groups):
        if run["emulated"] or OLD_BASELINE in label:
            continue
        sp = _speedups(run)
        if not sp:
            continue
        lag = sorted((v, k[0]) for k, v in sp.items() if v < LAG)
        worst = ", ".join(f"{n} {v:.2f}x" for v, n in lag[:6]) + (", ..." if len(lag) > 6 else "")
        lines.append(f"{label}: tuned convtvm {_x(_geomean(list(sp.values())))} torch (geomean over {len(sp)} "
                     f"ops); {len(lag)} below {LAG}x" + (f": {worst}" if lag else ""))
        timed = suite_over_time(run)
        if timed:
            reached = next((m for m, g in timed if g >= GOAL), None)
            lines.append(f"{label}: tuning from {_x(timed[0][1])} to {_x(timed[-1][1])} (estimated) in "
                         f"{timed[-1][0]:.0f} min; " + (f"{GOAL}x after {reached:.0f} min" if reached is not None
                                                           else f"{GOAL}x not reached"))
    for g, m in network_rows(groups):
        if g["emulated"]:
            continue
        tuned, other = _t(m, TUNED), _fastest_other(m)
        if tuned is None or other is None:
            continue
        lines.append(f"{g['label']}: {_network_name(m['name'], m.get('input_size'), m.get('batch'))}: convtvm "
                     f"{_ms(tuned)} ms = {tuned / other[1]:.2f} of the fastest other ({other[0]}, {_ms(other[1])} "
                     f"ms; goal <= {NETWORK_GOAL})")
    emulated = [g["label"] for g in groups if g["emulated"]]
    if emulated:
        lines.append(f"{', '.join(emulated)}: {EMULATED}; no speed figure of it appears in this report")
    return lines or [f"Speed figures: {NM} in these result files."]


def _machines_table(groups):
    rows = []
    for g in groups:
        kinds = [k for k, has in (("ops", g["ops"] or g["old_ops"]),
                                  ("networks", any(r.get("models") for r in g["runs"])),
                                  ("tuning", any(r.get("tuning_curves") for r in g["runs"]))) if has]
        threads = sorted({r.get("threads") for r in g["runs"] if r.get("threads")})
        rows.append([g["label"], g["target"], ", ".join(map(str, threads)) or NM, ", ".join(kinds) or "none",
                     ", ".join(Path(r["_path"]).name for r in g["runs"])])
    return [("table", ["Machine", "Target", "Threads", "Measured", "Result files"], rows)]


def _ops_table(groups):
    cols = op_columns(groups)
    if not cols:
        return [("p", f"Single ops: {NM} in any result file.")]
    sps = [None if run["emulated"] else _speedups(run) for _, _, run in cols]
    names = list(dict.fromkeys(_op_key(r) for _, _, run in cols for r in run["results"]))
    rows = [[k[0], k[1]] + [EMULATED if s is None else _x(s.get(k)) for s in sps] for k in names]
    rows.append(["geomean", ""] + ["-" if s is None else _x(_geomean(list(s.values()))) for s in sps])
    rows.append([f"below {LAG}x", ""] + ["-" if s is None else str(sum(v < LAG for v in s.values())) for s in sps])
    return [("p", "Speedup of tuned convtvm over torch per op, each as its users call it (> 1: convtvm is faster):"),
            ("table", ["Op", "Variant"] + [c[0] for c in cols], rows)]


def _networks_table(groups):
    rows = network_rows(groups)
    if not rows:
        return [("p", f"Networks: {NM} in any result file.")]
    conts = _contenders([m for g, m in rows if not g["emulated"]])
    table = []
    for g, m in rows:
        lead = [g["label"], m["name"], _fmt(m.get("input_size"), "d"), _fmt(m.get("batch"), "d"),
                _fmt(m.get("trials"), "d")]
        if g["emulated"]:
            table.append(lead + [EMULATED] + ["not shown"] * len(conts))
            continue
        other = _fastest_other(m)
        ratio = NM if other is None or _t(m, TUNED) is None else f"{_t(m, TUNED) / other[1]:.2f} ({other[0]})"
        table.append(lead + [ratio] + [_ms(_t(m, c)) for c in conts])
    return [("table", ["Machine", "Network", "Input", "Batch", "Trials",
                       f"convtvm / fastest other (goal <= {NETWORK_GOAL})"] + [f"{c} (ms)" for c in conts], table)]


def _profiles(groups, top: int = 12):
    """Per timed network with a profile: its slowest functions (``Model.profile``)."""
    blocks = []
    for g, m in network_rows(groups):
        prof = m.get("profile") or []
        if g["emulated"] or not prof:
            continue
        total = sum(r["ms"] for r in prof)
        blocks += [("h", 3, f"Where tuned convtvm's time goes: {m['name']} on {g['label']}"),
                   ("p", f"The {min(top, len(prof))} slowest of {len(prof)} functions the VM calls, "
                         f"measured with an instrument around every call ({total:.1f} ms in all)."),
                   ("table", ["function", "calls", "ms per inference", "share", "GFLOP/s"],
                    [[r["function"], str(r["calls"]), _ms(r["ms"]), f"{100 * r['ms'] / total:.1f}%",
                      _fmt(r.get("gflops"), ".1f")] for r in prof[:top]])]
    return blocks


def _header_rows(run):
    m = run["machine"]

    def get(k, empty="unknown"):
        return empty if m.get(k) in (None, "") else str(m[k])

    trials = sorted({r["trials"] for r in run["results"] if r.get("trials") is not None})
    trials_txt = NM if not trials else (str(trials[0]) if len(trials) == 1 else f"{trials[0]}-{trials[-1]}")
    peak = run.get("peak_gflops")
    peak_txt = NM if peak is None else f"{peak:.1f} GFLOP/s ({run.get('peak_source') or 'source unknown'})"
    return [["File", run["_path"]], ["Date", run.get("date") or "unknown"],
            ["Target", run["target"] + (f" ({EMULATED})" if run["emulated"] else "")],
            ["Target detail", json.dumps(run.get("target_detail")) if run.get("target_detail") else "unknown"],
            ["CPU", get("cpu")], ["Cores", get("cores")], ["GPU", get("gpu", "none")],
            ["Versions", f"TVM {get('tvm')}, torch {get('torch')}, convtvm {get('convtvm')}"],
            ["Threads", _fmt(run.get("threads"), "d")], ["Peak", peak_txt], ["Tuning trials (ops)", trials_txt]]


def _op_details(run):
    if run["emulated"]:
        rows = [[r["name"], r.get("variant") or "", "checked" if r.get("max_rel_error") is not None else NM,
                 _fmt(r.get("max_rel_error"), ".2e")] for r in run["results"]]
        return [("p", f"{EMULATED}: this device was emulated, so its timings are not speed figures and are "
                      "not shown; only the correctness check is reported."),
                ("table", ["Op", "Variant", "Correctness", "max rel. error"], rows)]
    conts = _contenders(run["results"])
    peak = run.get("peak_gflops")
    lat, thr = [], []
    for r in run["results"]:
        ts = [_t(r, c) for c in conts]
        lat.append([r["name"], r.get("variant") or "", _fmt(r.get("trials"), "d")] + [_ms(t) for t in ts]
                   + [_x(_ratio(_t(r, TORCH), _t(r, TUNED))), _fmt(r.get("max_rel_error"), ".2e")])
        gf = [_ratio(r.get("flops"), t and t * 1e6) for t in ts]
        pct = [None if g is None or peak is None else 100 * g / peak for g in gf]
        thr.append([r["name"], _fmt(r.get("flops") and r["flops"] / 1e9, ".3f")]
                   + [c for g, p in zip(gf, pct) for c in (_fmt(g, ".1f"), _fmt(p, ".1f"))])
    peak_note = (f"Peak: {peak:.1f} GFLOP/s ({run.get('peak_source') or 'source unknown'})." if peak
                 else f"Peak: {NM}, so % of peak is {NM}.")
    return [("table", ["Op", "Variant", "Trials"] + [f"{c} (ms)" for c in conts]
             + ["speedup tuned vs torch", "max rel. error"], lat),
            ("p", f"Throughput = flops / latency. {peak_note}"),
            ("table", ["Op", "GFLOP"] + [h for c in conts for h in (f"{c} GFLOP/s", f"{c} % peak")], thr)]


def build_blocks(runs):
    """Report content as a list of blocks: ('h', level, text), ('p', text), ('list', [text]),
    ('table', header, rows), ('img', filename, png_bytes, caption)."""
    def plot(name, fig, caption, missing):
        return [("img", name, _png(fig), caption)] if fig is not None else [("p", missing)]

    groups = group_runs(runs)
    old = any(OLD_BASELINE in c[0] for c in op_columns(groups))
    blocks = [("h", 1, "convtvm benchmark report"),
              ("p", f"Generated by convtvm report (convtvm {_version()}) from {len(runs)} result files. "
                    f"Missing values read '{NM}'. Each machine has one colour in every plot."),
              ("h", 2, "What to look at"), ("list", what_to_look_at(groups)),
              ("h", 2, "Machines"), *_machines_table(groups),
              ("h", 2, "Single ops"), *_ops_table(groups), *([("p", OLD_BASELINE_NOTE)] if old else []),
              *plot("speedup.png", speedup_figure(groups), "Speedup of tuned convtvm over torch per op and machine",
                    f"Speedups: {NM}."),
              ("h", 2, "Networks"), *_networks_table(groups),
              *plot("networks.png", networks_figure(groups), "Network latency per contender and machine",
                    f"Network latencies: {NM}."),
              *_profiles(groups),
              ("h", 2, "Tuning curves"),
              *plot("tuning_curves.png", tuning_figure(groups),
                    "Best latency found relative to torch against tuning trials", f"Tuning curves: {NM}."),
              ("p", "A curve written by a tuning run starts at trial 0, the record its log held before (carried "
                    "over from another CPU, say); an older one at the first record its log kept."),
              *plot("time_to_speed.png", time_to_speed_figure(groups),
                    "Suite geomean speedup over torch against minutes of tuning", f"Time to speed: {NM}."),
              ("p", "Estimated from the tuner's kernel times plus each op's measured call overhead; the last "
                    "point is the tuned log, which the op table measures as users call it.")]
    for g in groups:
        for run in g["runs"]:
            if not run["results"]:
                continue
            tag = f" ({OLD_BASELINE})" if run["schema"] == results.OLD_SCHEMA else ""
            blocks += [("h", 2, f"Details: {g['label']}{tag}, {Path(run['_path']).name}"),
                       ("table", ["Field", "Value"], _header_rows(run)), *_op_details(run)]
    return blocks


# ----------------------------------------------------------------- output
def _md_cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks):
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "list":
            out += [f"- {item}" for item in b[1]]
        elif b[0] == "table":
            out += ["| " + " | ".join(map(_md_cell, b[1])) + " |", "|" + "---|" * len(b[1])]
            out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b[2]]
        else:
            out.append(f"![{b[3]}](plots/{b[1]})")
        out.append("")
    return "\n".join(out)


def to_html(blocks):
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>convtvm benchmark report</title>",
           "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
           "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
           "th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}th{background:#eee}"
           "img{max-width:100%}figcaption{font-size:12px;color:#555}</style></head><body>"]
    for b in blocks:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "list":
            out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in b[1]) + "</ul>")
        elif b[0] == "table":
            out.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in b[1]) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in b[2]]
            out.append("</table>")
        else:
            data = base64.b64encode(b[2]).decode("ascii")
            out.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{e(b[3])}\">"
                       f"<figcaption>{e(b[3])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def render_report(result_paths, out_dir):
    """Validate result files and write report.html + report.md (+ plots/*.png) into out_dir.
    Returns (html_path, md_path).  Raises ValueError for a malformed file."""
    if isinstance(result_paths, (str, Path)):
        result_paths = [result_paths]
    runs = [results.load(p) for p in result_paths]
    if not runs:
        raise ValueError("no result files given")
    blocks = build_blocks(runs)
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for b in blocks:
        if b[0] == "img":
            with atomic_file(out / "plots" / b[1]) as tmp:
                Path(tmp).write_bytes(b[2])
    html_path, md_path = out / "report.html", out / "report.md"
    for path, text in ((html_path, to_html(blocks)), (md_path, to_markdown(blocks))):
        with atomic_file(path) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
    return html_path, md_path
