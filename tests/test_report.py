"""Tests for convtvm.report on small synthetic convtvm.bench/2 result files."""
import copy
import json
import math
import re

import pytest

from convtvm import report
from convtvm.bench import results

MACHINE = {"cpu": "AMD EPYC 7B13", "cores": 2, "gpu": None, "tvm": "0.27.0.post1",
           "torch": "2.13.0+cpu", "convtvm": "0.1.0", "hostname": "box"}


def _op(name, variant, flops, tuned, untuned, torch, err=1e-6, trials=64):
    return {"name": name, "variant": variant, "params": {}, "flops": flops, "trials": trials,
            "timings_ms": {"convtvm_tuned": tuned, "convtvm_untuned": untuned, "torch": torch},
            "max_rel_error": err}


X86 = {
    "schema": "convtvm.bench/2", "date": "2026-11-23T15:04:05Z", "machine": MACHINE,
    "target": "x86", "target_detail": {"kind": "llvm"}, "emulated": False, "threads": 2,
    "peak_gflops": 190.0, "peak_source": "given",
    "results": [_op("C2D", "conv2d", 231211008, 1.2, 5.0, 1.5),
                _op("DEP", "depthwise", 12000000, 0.25, 0.9, 0.2),   # lags: 0.8x
                _op("GRP", "group", 50000000, 0.4, 1.1, None)],      # torch not measured
    "models": [{"name": "efficientnet_v2_s", "input_size": 224, "batch": 1, "trials": 2000,
                "timings_ms": {"convtvm_tuned": 30.0, "convtvm_untuned": 80.0, "torch": 40.0,
                               "torch_compile": 35.0, "onnxruntime": None},
                "profile": [{"function": "fused_convtvm_conv2d4_add4_silu2", "calls": 3, "ms": 12.0, "gflops": 140.5},
                            {"function": "vm.builtin.alloc_tensor", "calls": 200, "ms": 4.0, "gflops": None}]}],
    "tuning_curves": [{"name": "C2D", "points": [[1, 5.3], [32, 2.1], [64, 1.2]]}],
}

CUDA = {
    "schema": "convtvm.bench/2", "date": "2026-11-23T16:00:00Z",
    "machine": dict(MACHINE, gpu="NVIDIA H100"), "target": "cuda", "threads": 1,
    "peak_gflops": None, "peak_source": None,
    "results": [_op("C2D", "conv2d", 231211008, 0.05, 0.6, 0.08, trials=256),
                _op("DEP", "depthwise", 12000000, 0.01, 0.05, 0.03, trials=256)],
    "tuning_curves": [{"name": "C2D", "points": [[1, 0.6], [128, 0.07], [256, 0.05]]}],
}  # no models: EfficientNet on cuda is "not measured"

ARM_EMU = {
    "schema": "convtvm.bench/2", "date": "2026-11-23T17:00:00Z",
    "machine": dict(MACHINE, cpu="qemu-aarch64"), "target": "arm", "emulated": True, "threads": 2,
    "peak_gflops": None, "peak_source": None,
    "results": [_op("C2D", "conv2d", 231211008, 0.7771, 4.3219, 1.2347, err=3.5e-7)],
    "tuning_curves": [{"name": "C2D", "points": [[1, 9999.0], [8, 0.7771]]}],
}


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def rendered(tmp_path):
    paths = [_write(tmp_path, n, d) for n, d in
             (("x86.json", X86), ("cuda.json", CUDA), ("arm.json", ARM_EMU))]
    html_path, md_path = report.render_report(paths, tmp_path / "out")
    return html_path.read_text(), md_path.read_text(), tmp_path / "out"


def _md_section(md, start):
    """Markdown text from the heading that starts with `start` up to the next '## ' heading."""
    i = md.index("\n## " + start)
    j = md.find("\n## ", i + 1)
    return md[i:j if j != -1 else None]


def _md_rows(md, first_cell):
    return [line for line in md.splitlines() if line.startswith(f"| {first_cell} |")]


def _details(md, label_start):
    return _md_section(md, f"Details: {label_start}")


def test_report_renders(rendered):
    html, md, out = rendered
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert html.count('<img src="data:image/png;base64,') == 3  # speedups, networks, tuning curves
    assert len(html.encode()) < 1_000_000
    for name in ("speedup.png", "networks.png", "tuning_curves.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{name})" in md


def test_every_name_and_machine_in_both_outputs(rendered):
    html, md, _ = rendered
    for text in (html, md):
        for name in ("C2D", "DEP", "GRP", "efficientnet_v2_s", "x86 · AMD EPYC 7B13", "cuda · NVIDIA H100",
                     "arm · qemu-aarch64 (emulated)", "0.27.0.post1", "2.13.0+cpu"):
            assert name in text, name


def test_machines_are_named_by_cpu_and_isa():
    run = {"target": "x86", "machine": {"cpu": "Intel(R) Xeon(R) Platinum 8592+ CPU @ 1.9GHz"},
           "target_detail": {"mcpu": "emeraldrapids"}}
    assert report.machine_name(run) == "Intel Xeon Platinum 8592+ (emeraldrapids, AVX-512 + AMX)"
    run["machine"]["isa"] = "AVX2"  # what the result file recorded wins over the table
    assert report.machine_name(run) == "Intel Xeon Platinum 8592+ (emeraldrapids, AVX2)"
    gpu = {"target": "cuda", "machine": {"cpu": "AMD EPYC", "gpu": "NVIDIA H100 80GB HBM3"}}
    assert report.machine_name(gpu) == "NVIDIA H100 80GB HBM3"


def test_what_to_look_at_opens_the_report(rendered):
    _, md, _ = rendered
    first = _md_section(md, "What to look at")
    g = math.exp((math.log(1.5 / 1.2) + math.log(0.2 / 0.25)) / 2)
    x86 = [ln for ln in first.splitlines() if ln.startswith("- x86 · AMD EPYC 7B13: tuned")][0]
    assert f"{g:.2f}x torch (geomean over 2 ops); 1 below 0.9x: DEP 0.80x" in x86
    net = [ln for ln in first.splitlines() if "efficientnet_v2_s" in ln][0]
    assert "convtvm 30 ms = 0.86 of the fastest other (torch_compile, 35 ms" in net
    assert "arm · qemu-aarch64 (emulated): emulated: correctness only" in first
    assert md.index("## What to look at") < md.index("## Machines") < md.index("## Single ops")


def test_the_suite_table_has_one_column_per_machine(rendered):
    _, md, _ = rendered
    ops = _md_section(md, "Single ops")
    header = [ln for ln in ops.splitlines() if ln.startswith("| Op |")][0]
    assert header.count("|") == 6  # Op, Variant, x86, cuda, arm
    dep = _md_rows(ops, "DEP")[0]
    assert "0.80x" in dep and "3.00x" in dep and "emulated: correctness only" in dep
    assert _md_rows(ops, "GRP")[0].count("not measured") == 2  # x86 (no torch time) and cuda (no such op)


def test_model_profile_table(rendered):
    _, md, _ = rendered
    section = md[md.index("### Where tuned convtvm's time goes: efficientnet_v2_s on x86 · AMD EPYC 7B13"):]
    assert "| fused_convtvm_conv2d4_add4_silu2 | 3 | 12 | 75.0% | 140.5 |" in section
    assert "| vm.builtin.alloc_tensor | 200 | 4 | 25.0% | not measured |" in section
    assert "(16.0 ms in all)" in section


def test_not_measured_for_missing_values(rendered):
    html, md, _ = rendered
    grp = _md_rows(_details(md, "x86"), "GRP")[0]  # latency table row; torch was null
    assert grp.count("not measured") >= 2 and " 0.00x" not in grp and "| 0 |" not in grp
    networks = _md_section(md, "Networks")
    x86_model = [r for r in networks.splitlines() if "efficientnet_v2_s" in r and r.startswith("| x86")][0]
    assert "| 30 |" in x86_model and "not measured" in x86_model  # onnxruntime: null
    assert not [r for r in networks.splitlines() if r.startswith("| cuda")]  # no network measured there
    assert "Peak: not measured" in _details(md, "cuda")
    assert "not measured" in html


def test_emulated_result_is_correctness_only(rendered):
    html, md, _ = rendered
    html = re.sub(r'src="data:image/png;base64,[^"]*"', "", html)  # base64 may hold any digits
    for text in (html, md):
        assert "emulated: correctness only" in text
        arm = ARM_EMU["results"][0]
        tuned, untuned, torch = (arm["timings_ms"][k] for k in report.CORE)
        figures = [f"{t:.4g}" for t in (tuned, untuned, torch)] + ["9999"]
        figures += [f"{arm['flops'] / t / 1e6:.1f}" for t in (tuned, untuned, torch)]  # GFLOP/s
        figures += [f"{torch / tuned:.2f}x", f"{untuned / tuned:.2f}x"]  # speedups
        for value in figures:
            assert value not in text, value
        assert "3.50e-07" in text  # the correctness check is shown
    arm = _details(md, "arm")
    assert "GFLOP" not in arm and "checked" in arm


def test_gflops_and_peak(rendered):
    _, md, _ = rendered
    row = _md_rows(_details(md, "x86"), "C2D")[1]  # throughput table row
    gflops = 231211008 / (1.2e-3) / 1e9
    assert f"| {gflops:.1f} | {100 * gflops / 190.0:.1f} |" in row
    assert "190.0 GFLOP/s (given)" in md


@pytest.mark.parametrize("content, what", [
    ("{not json", "not valid JSON"),
    (dict(X86, schema="convtvm.bench/0"), "schema"),
    ({k: v for k, v in X86.items() if k != "target"}, "'target'"),
    ({k: v for k, v in X86.items() if k != "results"}, "'results'"),
    ({k: v for k, v in X86.items() if k != "machine"}, "'machine'"),
    (dict(X86, results={"C2D": 1}), "results must be a list"),
    (dict(X86, target=86), "target must be a string"),
    (dict(X86, machine={"cpu": 7}), "machine.cpu must be a string"),
    ([1, 2], "top level"),
])
def test_malformed_file_raises_value_error_naming_file(tmp_path, content, what):
    good = _write(tmp_path, "good.json", X86)
    bad = _write(tmp_path, "bad_result.json", content)
    with pytest.raises(ValueError) as info:
        report.render_report([good, bad], tmp_path / "out")
    assert str(bad) in str(info.value) and what in str(info.value)
    assert not (tmp_path / "out" / "report.html").exists()


def test_malformed_timing_value(tmp_path):
    data = copy.deepcopy(X86)
    data["results"][1]["timings_ms"]["torch"] = "fast"
    bad = _write(tmp_path, "t.json", data)
    with pytest.raises(ValueError, match=r"results\[1\]\.timings_ms\['torch'\]") as info:
        results.load(bad)
    assert str(bad) in str(info.value)


def test_runs_of_one_machine_share_a_column_and_machines_get_distinct_colours(tmp_path):
    spot = dict(copy.deepcopy(X86), date="2026-11-24T00:00:00Z", results=X86["results"][:1], models=[])
    zen5 = dict(copy.deepcopy(X86), machine=dict(MACHINE, cpu="AMD EPYC 9B45"), target_detail={"mcpu": "znver5"})
    runs = [results.load(_write(tmp_path, n, d)) for n, d in
            (("suite.json", X86), ("spot.json", spot), ("zen5.json", zen5), ("cuda.json", CUDA))]
    groups = report.group_runs(runs)
    assert [g["label"] for g in groups] == ["x86 · AMD EPYC 7B13", "x86 · AMD EPYC 9B45 (znver5, AVX-512)",
                                            "cuda · NVIDIA H100"]
    assert groups[0]["ops"]["_path"].endswith("suite.json")  # the run that measured the most ops
    assert len({g["color"] for g in groups}) == 3
    assert [c[0] for c in report.op_columns(groups)] == [g["label"] for g in groups]


def test_plots_skip_missing_values_and_emulated_runs(tmp_path):
    runs = [results.load(_write(tmp_path, n, d)) for n, d in (("x86.json", X86), ("arm.json", ARM_EMU))]
    groups = report.group_runs(runs)
    ax = report.speedup_figure(groups).axes[0]
    bars = [p for p in ax.patches if p.get_height() != 0]
    assert len(bars) == 2  # C2D and DEP; GRP has no torch time; arm is emulated
    assert ax.get_yscale() == "log" and {line.get_ydata()[0] for line in ax.get_lines()} == {1.0, 0.9}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0.9x", "x86 · AMD EPYC 7B13"]
    assert report.speedup_figure(groups[1:]) is None and report.tuning_figure(groups[1:]) is None
    assert report.networks_figure(groups[1:]) is None


def test_tuning_curves_start_at_zero_relative_to_torch(tmp_path):
    groups = report.group_runs([results.load(_write(tmp_path, "x86.json", X86))])
    ax = report.tuning_figure(groups).axes[0]
    assert ax.get_xlim()[0] == 0 and ax.get_ylabel() == "best / torch latency"
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([5.3 / 1.5, 2.1 / 1.5, 1.2 / 1.5])


def test_an_old_baseline_op_run_is_labelled_and_explained(tmp_path):
    """Result files of schema convtvm.bench/1 timed torch through the handicapped reference: their
    column says so, and the report says why they are not comparable."""
    old = _write(tmp_path, "old.json", dict(X86, schema="convtvm.bench/1"))
    new = _write(tmp_path, "new.json", X86)
    _, md_path = report.render_report([old, new], tmp_path / "out")
    md = md_path.read_text()
    header = [ln for ln in _md_section(md, "Single ops").splitlines() if ln.startswith("| Op |")][0]
    assert header.endswith("| x86 · AMD EPYC 7B13 | x86 · AMD EPYC 7B13 (old baseline) |")
    assert report.OLD_BASELINE_NOTE in md
    assert "(old baseline)" not in _md_section(md, "What to look at")  # not comparable: not summarised
    _, md_path = report.render_report([new], tmp_path / "out2")
    assert report.OLD_BASELINE_NOTE not in md_path.read_text()


def test_time_to_speed_is_the_suite_geomean_over_minutes_of_tuning(tmp_path):
    """C2D's timed curve (kernel 5.3 ms at 0 s, 2.1 at 60 s, 1.2 at 180 s; call overhead 0.1 ms) scales its
    measured 1.5 / 1.2 back in time, with DEP at its measured 0.2 / 0.25 throughout; GRP has no torch time."""
    run = copy.deepcopy(X86)
    run["results"][0]["timings_ms"]["convtvm_tuned_kernel"] = 1.1
    run["tuning_curves"] = [{"name": "C2D", "points": [[0, 5.3, 0.0], [32, 2.1, 60.0], [64, 1.2, 180.0]]}]
    groups = report.group_runs([results.load(_write(tmp_path, "x86.json", run))])
    pts = report.suite_over_time(groups[0]["ops"])
    dep = 0.2 / 0.25
    assert [m for m, _ in pts] == [0.0, 1.0, 3.0]
    assert [g for _, g in pts] == pytest.approx([math.sqrt(1.5 / 1.2 * 1.3 / k * dep) for k in (5.4, 2.2, 1.3)])
    ax = report.time_to_speed_figure(groups).axes[0]
    assert ax.get_xlabel() == "minutes of tuning" and {ln.get_ydata()[0] for ln in ax.get_lines()} >= {1.0, 1.3}
    assert report.time_to_speed_figure(report.group_runs([results.load(_write(tmp_path, "y.json", X86))])) is None
    first, last = pts[0][1], pts[-1][1]
    assert f"tuning from {first:.2f}x to {last:.2f}x (estimated) in 3 min; 1.3x not reached" in \
        " ".join(report.what_to_look_at(groups))
