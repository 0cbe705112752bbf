"""Render ``convtvm bench`` result files (``bench/results.py``'s schema) as a report.

``render_report(paths, out_dir)`` writes ``out_dir/report.html`` (one
self-contained file, plots embedded as base64 PNGs) and ``out_dir/report.md``
(same tables, plots linked from ``out_dir/plots/``).  Needs only numpy and
matplotlib: TVM and torch are never imported.

Rules: a value that is absent or null is shown as "not measured" (never 0, and
never drawn as a bar); a result from an emulated device is correctness only,
so its timings appear nowhere (no GFLOP/s, speedups, geomean or plots).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from .artifact import atomic_file
from .bench import results

OLD_BASELINE = "old baseline"
OLD_BASELINE_NOTE = (f"Runs marked '{OLD_BASELINE}' (result schema convtvm.bench/1) timed convtvm's bare kernel "
                     "against torch called through the correctness reference (a separate F.pad, channels-last "
                     "weights permuted at each call, transposed outputs cropped), which slowed torch by up to "
                     "3x. Their speedups are not comparable with the others; they stay for the record.")
NM = "not measured"
EMULATED = "emulated: correctness only"
LAG = 0.9  # tuned/torch speedup below this counts as lagging
TUNED, UNTUNED, TORCH = "convtvm_tuned", "convtvm_untuned", "torch"
CORE = (TUNED, UNTUNED, TORCH)
STANDARD_TARGETS = ("x86", "arm", "cuda")
TARGET_COLORS = {"x86": "#1f77b4", "arm": "#2ca02c", "cuda": "#d62728"}
FALLBACK_COLORS = ["#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
HATCHES = ["//", "..", "xx", "\\\\", "oo", "++"]
LINESTYLES = ["-", "--", ":", "-."]  # k-th run of the same target
DPI = 90

# ----------------------------------------------------------------- helpers
def target_colors(targets):
    """Fixed colour for x86/arm/cuda; other targets get the fallback palette (sorted order)."""
    targets = set(targets)
    others = sorted(targets - set(TARGET_COLORS))
    return {t: TARGET_COLORS.get(t) or FALLBACK_COLORS[others.index(t) % len(FALLBACK_COLORS)]
            for t in targets}


def _shade(color, k):
    """Same hue, darker for the k-th extra run of one target."""
    return tuple(c * max(0.4, 1 - 0.3 * k) for c in to_rgb(color))


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


def _ops(runs):
    return list(dict.fromkeys(_op_key(r) for run in runs for r in run["results"]))


def _find(run, key):
    return next((r for r in run["results"] if _op_key(r) == key), None)


def _speedups(run):
    """{op key: tuned-vs-torch speedup} for ops where both were measured."""
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


# ----------------------------------------------------------------- plots
def _bar_style(color, contender_index):
    if contender_index == 0:
        return dict(facecolor=color, edgecolor="black", linewidth=0.5)
    light = tuple(1 - 0.7 * (1 - c) for c in to_rgb(color))
    return dict(facecolor=light, edgecolor=color, linewidth=0.8,
                hatch=HATCHES[(contender_index - 1) % len(HATCHES)])


def _bars(ax, labels, series, ylabel, log=None):
    """Grouped bars; series = [(legend, colour, style index, [value or None])].
    Missing values get no bar, only an 'n/m' mark at the bottom."""
    x, n = np.arange(len(labels)), len(series)
    width = 0.8 / max(n, 1)
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    values = [v for *_, vals in series for v in vals if v is not None]
    for j, (legend, color, style, vals) in enumerate(series):
        pos = x + (j - (n - 1) / 2) * width
        have = [i for i, v in enumerate(vals) if v is not None]
        ax.bar(pos[have], [vals[i] for i in have], width, label=legend, **_bar_style(color, style))
        for i in set(range(len(vals))) - set(have):
            ax.text(pos[i], 0.01, "n/m", transform=trans, rotation=90, ha="center", va="bottom",
                    fontsize=7, color="dimgray")
    if log is None:
        log = bool(values) and max(values) / min(values) > 20
    if log and values:
        ax.set_yscale("log")
    ax.set_xticks(x, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3, which="both")
    handles = [Patch(label=legend, **_bar_style(color, style)) for legend, color, style, _ in series]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def _fig(width, height):
    return Figure(figsize=(min(width, 16), height), dpi=DPI, layout="constrained")


def latency_figure(runs):
    timed = [r for r in runs if not r["emulated"]]
    ops = _ops(timed)
    if not ops:
        return None
    series = [(f"{r['_label']} {c}", r["_color"], i, [_t(_find(r, k) or {}, c) for k in ops])
              for r in timed for i, c in enumerate((TUNED, TORCH))]
    fig = _fig(4 + 0.25 * len(series) * len(ops), 4)
    ax = fig.add_subplot()
    _bars(ax, [k[0] for k in ops], series, "latency (ms)", log=True)
    ax.set_title("Single-op latency, tuned convtvm vs torch (lower is better, log scale)")
    return fig


def speedup_figure(runs):
    timed = [r for r in runs if not r["emulated"]]
    ops = _ops(timed)
    if not ops:
        return None
    series = [(r["_label"], r["_color"], 0, [_speedups(r).get(k) for k in ops]) for r in timed]
    fig = _fig(4 + 0.3 * len(series) * len(ops), 3.8)
    ax = fig.add_subplot()
    _bars(ax, [k[0] for k in ops], series, "speedup tuned convtvm vs torch (x)")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(LAG, color="red", linestyle="--", linewidth=0.8)
    ax.set_title(f"Speedup over torch per op (higher is better; dashed = {LAG}x lag threshold)")
    return fig


def tuning_figure(runs):
    timed = [r for r in runs if not r["emulated"]]
    names = list(dict.fromkeys(c["name"] for r in timed for c in r.get("tuning_curves") or []))
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _fig(4.2 * cols + 1.5, 3.2 * rows)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        xs, ys = [], []
        for r in timed:
            for c in r.get("tuning_curves") or []:
                if c["name"] == name and c["points"]:
                    px, py = zip(*sorted(c["points"]))
                    ax.step(px, py, where="post", marker="o", markersize=3, color=r["_color"],
                            linestyle=LINESTYLES[r["_dup"] % 4])
                    xs += px
                    ys += py
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
        if ys and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
        ax.set(title=name, xlabel="tuning trials", ylabel="best latency (ms)")
        ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=r["_color"], marker="o", markersize=3, label=r["_label"],
                      linestyle=LINESTYLES[r["_dup"] % 4])
               for r in timed if r.get("tuning_curves")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fig


def models_figure(runs):
    timed = [r for r in runs if not r["emulated"]]
    names = list(dict.fromkeys(m["name"] for r in timed for m in r.get("models") or []))
    if not names:
        return None
    fig = _fig(6 * len(names) + 2, 3.8)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        shown = _model_runs(timed, name)
        models = {r["_label"]: next((m for m in r.get("models") or [] if m["name"] == name), {})
                  for r in shown}
        conts = _contenders(models.values())
        series = [(r["_label"], r["_color"], 0, [_t(models[r["_label"]], c) for c in conts])
                  for r in shown]
        _bars(ax, conts, series, "latency (ms)")
        ax.set(title=f"{name} end to end (lower is better)", xlabel="contender")
    return fig


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


# ----------------------------------------------------------------- content
def _header_rows(run):
    m = run["machine"]

    def get(k, empty="unknown"):
        return empty if m.get(k) in (None, "") else str(m[k])

    trials = sorted({r["trials"] for r in run["results"] if r.get("trials") is not None})
    trials_txt = NM if not trials else (str(trials[0]) if len(trials) == 1 else f"{trials[0]}-{trials[-1]}")
    mtrials = [f"{m_['name']}: {m_['trials']}" for m_ in run.get("models") or [] if m_.get("trials")]
    peak = run.get("peak_gflops")
    peak_txt = NM if peak is None else f"{peak:.1f} GFLOP/s ({run.get('peak_source') or 'source unknown'})"
    return [["File", run["_path"]], ["Date", run.get("date") or "unknown"],
            ["Target", run["target"] + (f" ({EMULATED})" if run["emulated"] else "")],
            ["Target detail", json.dumps(run.get("target_detail")) if run.get("target_detail") else "unknown"],
            ["CPU", get("cpu")], ["Cores", get("cores")], ["GPU", get("gpu", "none")],
            ["Hostname", get("hostname")],
            ["Versions", f"TVM {get('tvm')}, torch {get('torch')}, convtvm {get('convtvm')}"],
            ["Threads", _fmt(run.get("threads"), "d")], ["Peak", peak_txt],
            ["Tuning trials (ops)", trials_txt], ["Tuning trials (models)", ", ".join(mtrials) or NM]]


def _op_tables(run):
    if run["emulated"]:
        rows = [[r["name"], r.get("variant") or "", "checked" if r.get("max_rel_error") is not None else NM,
                 _fmt(r.get("max_rel_error"), ".2e")] for r in run["results"]]
        return [("table", ["Op", "Variant", "Correctness", "max rel. error"], rows)]
    conts = _contenders(run["results"])
    peak = run.get("peak_gflops")
    lat, thr = [], []
    for r in run["results"]:
        ts = [_t(r, c) for c in conts]
        lat.append([r["name"], r.get("variant") or "", _fmt(r.get("trials"), "d")] + [_ms(t) for t in ts]
                   + [_x(_ratio(_t(r, TORCH), _t(r, TUNED))), _x(_ratio(_t(r, UNTUNED), _t(r, TUNED))),
                      _fmt(r.get("max_rel_error"), ".2e")])
        gf = [_ratio(r.get("flops"), t and t * 1e6) for t in ts]
        pct = [None if g is None or peak is None else 100 * g / peak for g in gf]
        thr.append([r["name"], _fmt(r.get("flops") and r["flops"] / 1e9, ".3f")]
                   + [c for g, p in zip(gf, pct) for c in (_fmt(g, ".1f"), _fmt(p, ".1f"))])
    peak_note = (f"Peak: {peak:.1f} GFLOP/s ({run.get('peak_source') or 'source unknown'})." if peak
                 else f"Peak: {NM}, so % of peak is {NM}.")
    return [("table", ["Op", "Variant", "Trials"] + [f"{c} (ms)" for c in conts]
             + ["speedup tuned vs torch", "speedup tuned vs untuned", "max rel. error"], lat),
            ("p", f"Throughput = flops / latency. {peak_note}"),
            ("table", ["Op", "GFLOP"] + [h for c in conts for h in (f"{c} GFLOP/s", f"{c} % peak")], thr)]


def _summary(runs):
    rows = []
    for run in runs:
        m, cpu = run["machine"], (run.get("target_detail") or {}).get("mcpu")
        machine = (f"{m.get('cpu') or 'unknown CPU'}" + (f" ({cpu})" if cpu else "")
                   + (f" + {m['gpu']}" if m.get("gpu") else ""))
        if run["emulated"]:
            rows.append([run["target"], run["_label"], machine, "-", EMULATED, "-"])
            continue
        sp = _speedups(run)
        lag = [f"{k[1]} ({v:.2f}x)" for k, v in sp.items() if v < LAG]
        rows.append([run["target"], run["_label"], machine, str(len(sp)), _x(_geomean(list(sp.values()))),
                     (", ".join(lag) or "none") if sp else NM])
    present = {r["target"] for r in runs}
    rows += [[t, "-", "-", "0", NM, NM] for t in STANDARD_TARGETS if t not in present]
    timed = [r for r in runs if not r["emulated"]]
    blocks = [("table", ["Target", "Run", "Machine", "Ops compared", "Geomean speedup tuned vs torch",
                         f"Lagging variants (< {LAG}x)"], rows)]
    if timed:
        ops, sps = _ops(timed), [_speedups(r) for r in timed]
        matrix = [[k[0], k[1]] + [_x(s.get(k)) for s in sps] for k in ops]
        matrix.append(["geomean", ""] + [_x(_geomean(list(s.values()))) for s in sps])
        blocks += [("p", "Speedup of tuned convtvm over torch per op and target (> 1 is faster):"),
                   ("table", ["Op", "Variant"] + [r["_label"] for r in timed], matrix)]
    return blocks


def _model_runs(runs, name: str) -> list:
    """The runs that show ``name``: those that measured it, and one "not measured" row per target
    that no run measured it on (an x86 op-suite run beside an x86 model run adds nothing)."""
    measured = {r["target"] for r in runs if any(m["name"] == name for m in r.get("models") or [])}
    shown, missing = [], set()
    for r in runs:
        if any(m["name"] == name for m in r.get("models") or []):
            shown.append(r)
        elif r["target"] not in measured and r["target"] not in missing:
            missing.add(r["target"])
            shown.append(r)
    return shown


def _models(runs):
    names = list(dict.fromkeys(m["name"] for r in runs for m in r.get("models") or []))
    if not names:
        return [("p", f"End-to-end models: {NM} in any result file.")]
    timed_models = [m for r in runs if not r["emulated"] for m in r.get("models") or []]
    conts = _contenders(timed_models)
    rows = []
    for name in names:
        for run in _model_runs(runs, name):
            m = next((m for m in run.get("models") or [] if m["name"] == name), None)
            if m is None:
                rows.append([run["_label"], name, NM, NM, NM] + [NM] * (len(conts) + 3))
            elif run["emulated"]:
                rows.append([run["_label"], name, _fmt(m.get("input_size"), "d"), _fmt(m.get("batch"), "d"),
                             _fmt(m.get("trials"), "d"), EMULATED] + ["not shown"] * (len(conts) + 2))
            else:
                others = [_t(m, c) for c in conts if c not in (TUNED, UNTUNED) and _t(m, c) is not None]
                fastest = min(others) if others else None
                rows.append([run["_label"], name, _fmt(m.get("input_size"), "d"), _fmt(m.get("batch"), "d"),
                             _fmt(m.get("trials"), "d")] + [_ms(_t(m, c)) for c in conts]
                            + [_x(_ratio(_t(m, TORCH), _t(m, TUNED))), _x(_ratio(_t(m, UNTUNED), _t(m, TUNED))),
                               NM if fastest is None or _t(m, TUNED) is None else f"{_t(m, TUNED) / fastest:.2f}"])
    return [("table", ["Run", "Model", "Input", "Batch", "Trials"] + [f"{c} (ms)" for c in conts]
             + ["speedup tuned vs torch", "speedup tuned vs untuned",
                "tuned latency / fastest other (goal <= 0.8)"], rows)]


def _profiles(runs, top: int = 12):
    """Per timed model with a profile: its slowest functions (``Model.profile``)."""
    blocks = []
    for run in runs:
        for m in run.get("models") or []:
            prof = m.get("profile") or []
            if run["emulated"] or not prof:
                continue
            total = sum(r["ms"] for r in prof)
            blocks += [("h", 3, f"Where tuned convtvm's time goes: {m['name']}, run {run['_label']}"),
                       ("p", f"The {min(top, len(prof))} slowest of {len(prof)} functions the VM calls, "
                             f"measured with an instrument around every call ({total:.1f} ms in all)."),
                       ("table", ["function", "calls", "ms per inference", "share", "GFLOP/s"],
                        [[r["function"], str(r["calls"]), _ms(r["ms"]), f"{100 * r['ms'] / total:.1f}%",
                          _fmt(r.get("gflops"), ".1f")] for r in prof[:top]])]
    return blocks


def build_blocks(runs):
    """Report content as a list of blocks: ('h', level, text), ('p', text),
    ('table', header, rows), ('img', filename, png_bytes, caption)."""
    def plot(name, fig, caption, missing):
        return [("img", name, _png(fig), caption)] if fig is not None else [("p", missing)]

    emu = [r["_label"] for r in runs if r["emulated"]]
    emu_note = [("p", f"Excluded from all speed figures and plots ({EMULATED}): {', '.join(emu)}.")] if emu else []
    blocks = [("h", 1, "convtvm benchmark report"),
              ("p", f"Generated by convtvm report (convtvm version {_version()}) from: "
               + ", ".join(r["_path"] for r in runs)
               + f". Missing values are shown as '{NM}' (n/m in plots). Colours: one per target."),
              ("h", 2, "Cross-target summary"), *_summary(runs), *emu_note,
              *([("p", OLD_BASELINE_NOTE)] if any(OLD_BASELINE in r["_label"] for r in runs) else []),
              *plot("speedup.png", speedup_figure(runs), "Speedup of tuned convtvm over torch", f"Speedups: {NM}."),
              ("h", 2, "Single-op latency"),
              *plot("latency.png", latency_figure(runs), "Latency per op and target", f"Latencies: {NM}.")]
    for run in runs:
        blocks += [("h", 2, f"Run {run['_label']}: target {run['target']}"
                    + (f" ({EMULATED})" if run["emulated"] else "")),
                   ("table", ["Field", "Value"], _header_rows(run))]
        if run["emulated"]:
            blocks.append(("p", f"{EMULATED}: this device was emulated, so its timings are not speed "
                                "figures and are not shown; only the correctness check is reported."))
        blocks += _op_tables(run)
    blocks += [("h", 2, "Tuning curves"),
               *plot("tuning_curves.png", tuning_figure(runs), "Best latency found vs tuning trials",
                     f"Tuning curves: {NM}.")]
    no_curves = [r["_label"] for r in runs if not r["emulated"] and not r.get("tuning_curves")]
    if no_curves:
        blocks.append(("p", f"Tuning curves {NM} for: {', '.join(no_curves)}."))
    blocks += [("h", 2, "EfficientNetV2 end to end (models)"), *_models(runs),
               *plot("models.png", models_figure(runs), "End-to-end model latency", f"Model latencies: {NM}."),
               *_profiles(runs)]
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
    colors = target_colors(r["target"] for r in runs)
    count, seen = Counter(r["target"] for r in runs), Counter()
    for r in runs:  # same target twice (or same file twice): both shown, told apart by label and shade
        t = r["target"]
        r["_label"] = t if count[t] == 1 else f"{t} #{seen[t] + 1}"
        if r["schema"] == results.OLD_SCHEMA and r["results"]:
            r["_label"] += f" ({OLD_BASELINE})"
        r["_color"], r["_dup"] = _shade(colors[t], seen[t]), seen[t]
        seen[t] += 1
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
