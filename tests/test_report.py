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


def test_report_renders(rendered):
    html, md, out = rendered
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert html.count('<img src="data:image/png;base64,') == 4  # summary, latency, tuning, models
    assert len(html.encode()) < 1_000_000
    for name in ("speedup.png", "latency.png", "tuning_curves.png", "models.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{name})" in md


def test_every_name_and_target_in_both_outputs(rendered):
    html, md, _ = rendered
    for text in (html, md):
        for name in ("C2D", "DEP", "GRP", "efficientnet_v2_s", "x86", "cuda", "arm",
                     "AMD EPYC 7B13", "NVIDIA H100", "0.27.0.post1", "2.13.0+cpu"):
            assert name in text, name


def test_model_profile_table(rendered):
    _, md, _ = rendered
    section = md[md.index("### Where tuned convtvm's time goes: efficientnet_v2_s, run x86"):]
    assert "| fused_convtvm_conv2d4_add4_silu2 | 3 | 12 | 75.0% | 140.5 |" in section
    assert "| vm.builtin.alloc_tensor | 200 | 4 | 25.0% | not measured |" in section
    assert "(16.0 ms in all)" in section


def test_not_measured_for_missing_values(rendered):
    html, md, _ = rendered
    x86 = _md_section(md, "Run x86")
    grp = _md_rows(x86, "GRP")[0]  # latency table row; torch was null
    assert grp.count("not measured") >= 2 and " 0.00x" not in grp and "| 0 |" not in grp
    cuda_model = [r for r in _md_rows(md, "cuda") if "efficientnet_v2_s" in r]
    assert len(cuda_model) == 1 and "not measured" in cuda_model[0]
    x86_model = [r for r in _md_rows(md, "x86") if "efficientnet_v2_s" in r][0]
    assert "| 30 |" in x86_model and "not measured" in x86_model  # onnxruntime: null
    assert "Peak: not measured" in _md_section(md, "Run cuda")
    assert "not measured" in html


def test_emulated_result_is_correctness_only(rendered):
    html, md, _ = rendered
    html = re.sub(r'src="data:image/png;base64,[^"]*"', "", html)  # base64 may hold any digits
    for text in (html, md):
        assert "emulated: correctness only" in text
        # none of its timings, nor derived speed figures, appear anywhere
        arm = ARM_EMU["results"][0]
        tuned, untuned, torch = (arm["timings_ms"][k] for k in report.CORE)
        figures = [f"{t:.4g}" for t in (tuned, untuned, torch)] + ["9999"]
        figures += [f"{arm['flops'] / t / 1e6:.1f}" for t in (tuned, untuned, torch)]  # GFLOP/s
        figures += [f"{torch / tuned:.2f}x", f"{untuned / tuned:.2f}x"]  # speedups
        for value in figures:
            assert value not in text, value
        assert "3.50e-07" in text  # the correctness check is shown
    arm = _md_section(md, "Run arm")
    assert "GFLOP" not in arm
    assert "checked" in arm
    arm_summary = _md_rows(_md_section(md, "Cross-target summary"), "arm")[0]
    assert "emulated: correctness only" in arm_summary and "x |" not in arm_summary


def test_geomean_and_lagging_in_markdown(rendered):
    _, md, _ = rendered
    summary = _md_section(md, "Cross-target summary")
    expected = {"x86": [1.5 / 1.2, 0.2 / 0.25], "cuda": [0.08 / 0.05, 0.03 / 0.01]}
    for target, speedups in expected.items():
        g = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
        row = _md_rows(summary, target)[0].split(" | ")
        assert row[3] == str(len(speedups))
        assert row[4] == f"{g:.2f}x"
    assert "depthwise (0.80x)" in _md_rows(summary, "x86")[0]
    assert _md_rows(summary, "cuda")[0].rstrip(" |").endswith("none")


def test_gflops_and_peak(rendered):
    _, md, _ = rendered
    row = _md_rows(_md_section(md, "Run x86"), "C2D")[1]  # throughput table row
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


def test_same_file_twice_is_shown_twice(tmp_path):
    path = _write(tmp_path, "x86.json", X86)
    _, md_path = report.render_report([path, path], tmp_path / "out")
    md = md_path.read_text()
    assert "## Run x86 #1" in md and "## Run x86 #2" in md
    assert len(_md_rows(_md_section(md, "Cross-target summary"), "x86")) == 2


def test_target_colours_fixed_and_fallback():
    colors = report.target_colors(["cuda", "riscv", "x86", "arm", "wasm"])
    assert colors["x86"] == report.TARGET_COLORS["x86"] and colors["cuda"] == report.TARGET_COLORS["cuda"]
    assert len(set(colors.values())) == 5
    assert report.target_colors(["wasm", "riscv"]) == {k: colors[k] for k in ("wasm", "riscv")}


def test_plots_skip_missing_values_and_emulated_runs(tmp_path):
    runs = [results.load(_write(tmp_path, n, d)) for n, d in (("x86.json", X86), ("arm.json", ARM_EMU))]
    runs[0].update(_label="x86", _color="#1f77b4", _dup=0)
    runs[1].update(_label="arm", _color="#2ca02c", _dup=0)
    ax = report.latency_figure(runs).axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 5 and min(heights) > 0  # 3 tuned + 2 torch (GRP torch is null), no arm bars
    assert ax.get_yscale() == "log" and "ms" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["x86 convtvm_tuned", "x86 torch"]
    assert report.latency_figure(runs[1:]) is None and report.tuning_figure(runs[1:]) is None


def test_a_model_row_per_run_that_measured_it_and_per_target_none_did(tmp_path):
    """An x86 op-suite run beside the x86 model run adds no "not measured" model row; cuda, which no
    run measured the model on, keeps one."""
    suite_only = dict(copy.deepcopy(X86), models=[])
    paths = [_write(tmp_path, n, d) for n, d in (("suite.json", suite_only), ("x86.json", X86), ("cuda.json", CUDA))]
    _, md_path = report.render_report(paths, tmp_path / "out")
    section = _md_section(md_path.read_text(), "EfficientNetV2 end to end")
    rows = [line for line in section.splitlines() if "| efficientnet_v2_s |" in line]
    assert [r.split(" | ")[0] for r in rows] == ["| x86 #2", "| cuda"]
    assert "| 30 |" in rows[0] and rows[1].count("not measured") >= 8


def test_an_old_baseline_op_run_is_labelled_and_explained(tmp_path):
    """Result files of schema convtvm.bench/1 timed torch through the handicapped reference: their
    column says so, and the report says why they are not comparable."""
    old = _write(tmp_path, "old.json", dict(X86, schema="convtvm.bench/1"))
    new = _write(tmp_path, "new.json", X86)
    _, md_path = report.render_report([old, new], tmp_path / "out")
    md = md_path.read_text()
    assert "## Run x86 #1 (old baseline)" in md and "## Run x86 #2:" in md
    assert report.OLD_BASELINE_NOTE in md
    _, md_path = report.render_report([new], tmp_path / "out2")
    assert report.OLD_BASELINE_NOTE not in md_path.read_text()
