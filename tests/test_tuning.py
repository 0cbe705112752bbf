"""MetaSchedule tuning: records, resume, foreign targets, corrupt logs, Ctrl-C."""

import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import tvm_ffi

import convtvm
from convtvm.records import verify
from convtvm.records.log import DB_FILES, LogWarning, TuningLog
from convtvm.targets import ROOT, resolve
from convtvm.tuning import engine, maintain, measure
from conftest import rel_err

W = convtvm.workload("conv2d", in_channels=8, out_channels=16, input_size=(14, 14), kernel_size=3, padding=1,
                     bias=True)


def records(log) -> list:
    path = Path(log) / DB_FILES[1]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tuned_log(tmp_path_factory):
    log = tmp_path_factory.mktemp("tune") / "x86"
    result = convtvm.tune(W, "x86", trials=8, log=log, trials_per_iter=8, seed=1)
    assert result["trials"] == 8
    return log


def test_tune_writes_records_and_build_uses_them(tuned_log, seed):
    recs = records(tuned_log)
    assert len(recs) == 8
    assert json.loads((tuned_log / "target.json").read_text())["kind"] == "x86"
    m = convtvm.build(W, "x86", tuning_log=tuned_log)
    assert m.schedule == "tuned"
    xs = W.random_inputs(seed=seed)
    assert rel_err(m(*xs), W.reference(*xs)) <= 1e-4


def test_workload_without_record_falls_back(tuned_log):
    other = convtvm.workload("conv1d", in_channels=4, out_channels=4, input_size=(16,), kernel_size=3)
    assert convtvm.build(other, "x86", tuning_log=tuned_log).schedule == "fallback"


def test_resume_continues(tuned_log, tmp_path):
    log = tmp_path / "x86"
    shutil.copytree(tuned_log, log)
    before = records(log)
    best_before = min(sum(r[1][1]) / len(r[1][1]) for r in before)
    convtvm.tune(W, "x86", trials=8, log=log, trials_per_iter=8, seed=2)
    after = records(log)
    assert after[:len(before)] == before  # old records kept as they were
    assert len(before) < len(after) <= len(before) + 8
    traces = [json.dumps(r[1][0]) for r in after]
    assert len(set(traces)) == len(traces), "a measured candidate was measured again"
    from tvm.s_tir import meta_schedule as ms
    hashes = engine._measured_hashes(ms.database.JSONDatabase(str(log / DB_FILES[0]),
                                                              str(log / DB_FILES[1])),
                                     [("w", verify.tuned_ir_module(W, resolve("x86")), W.flops)])
    assert len(hashes) == len(after), "two records hold the same kernel"
    assert (log / DB_FILES[0]).read_text().count("\n") == 1  # still one workload
    best_after = min(sum(r[1][1]) / len(r[1][1]) for r in after)
    assert best_after <= best_before


def test_foreign_target_log_is_refused(tuned_log):
    with pytest.raises(ValueError, match="holds records for target"):
        convtvm.build(W, "arm", tuning_log=tuned_log)
    with pytest.raises(ValueError, match="holds records for target"):
        convtvm.tune(W, "arm", trials=1, log=tuned_log)


def _corrupt(log, lines: dict) -> Path:
    """Replace record lines (1-based line number -> text) of ``log``'s record file."""
    path = log / DB_FILES[1]
    text = path.read_text().splitlines()
    for n, line in lines.items():
        text[n - 1] = line
    path.write_text("\n".join(text) + "\n")
    return path


def _bad_trace(line: str) -> str:
    """A record line whose trace names a block the workload does not have: it does not replay."""
    row = json.loads(line)
    inst = next(i for i in row[1][0][0] if i[0] == "GetSBlock")
    inst[2][0] = "no_such_block"
    return json.dumps(row)


def test_bad_records_are_skipped_with_a_warning_and_the_rest_apply(tuned_log, tmp_path, seed):
    """One bad line made every build with the log fail (a ValueError, or MetaSchedule's
    "parallel_for_dynamic error" naming no file or line, or a crash for a record that is not a list)."""
    log = tmp_path / "x86"
    shutil.copytree(tuned_log, log)
    lines = (log / DB_FILES[1]).read_text().splitlines()
    path = _corrupt(log, {2: lines[1][:80], 4: _bad_trace(lines[3]), 5: '{"not": "a record"}',
                          6: "[99, " + lines[5].split(",", 1)[1]})
    with pytest.warns(LogWarning) as caught:
        m = convtvm.build(W, "x86", tuning_log=log)
    messages = [str(w.message) for w in caught]
    for n, why in ((2, "corrupt tuning record line"), (4, "its trace does not replay on its workload"),
                   (5, "not a [workload index, record] line"), (6, "workload index 99 is not one of")):
        assert any(msg.startswith(f"{path}:{n}: {why}") and "skipped" in msg for msg in messages), (n, messages)
    assert m.schedule == "tuned"
    xs = W.random_inputs(seed=seed)
    assert rel_err(m(*xs), W.reference(*xs)) <= 1e-4
    good = [ln for k, ln in enumerate(lines, 1) if k not in (2, 4, 5, 6)]
    with tempfile.TemporaryDirectory() as tmp, pytest.warns(LogWarning):
        db, kept = TuningLog(log).open(tmp)  # the loader: the 4 good records, their original lines named
        assert kept == [1, 3, 7, 8] and len(db.get_all_tuning_records()) == len(good) == 4


def test_blank_lines_in_a_log_are_left_out_of_what_tvm_reads(tmp_path):
    """One blank line in a log's record file crashed the process (a segfault in MetaSchedule's reader,
    parallel_for_dynamic) on every build that looked a workload up in it: a shipped log with a blank line
    appended, and a workload it does not hold. The build runs in a child, so that a crash fails the test."""
    log = tmp_path / "x86-znver3"
    shutil.copytree(ROOT / "tuning_logs" / "x86-znver3", log)
    with open(log / DB_FILES[1], "a") as f:
        f.write("\n")
    code = ("import convtvm; from convtvm.records.log import TuningLog; "
            "w = convtvm.workload('conv2d', in_channels=4, out_channels=4, input_size=(9, 9)); "
            f"print(convtvm.build(w, TuningLog({str(log)!r}).target(), tuning_log={str(log)!r}).schedule)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["fallback"]


def test_a_corrupt_workload_line_takes_only_its_own_records(tuned_log, tmp_path):
    """A second workload's line corrupted: its records are skipped, and the first workload's records,
    before and after it in the record file, still apply."""
    log = tmp_path / "x86"
    other = convtvm.workload("conv2d", in_channels=4, out_channels=8, input_size=(9, 9), kernel_size=3, padding=1)
    shutil.copytree(tuned_log, log)
    convtvm.tune(other, "x86", trials=4, log=log, trials_per_iter=4, seed=1, progress=lambda s: None)
    wl_path = log / DB_FILES[0]
    wl_lines = wl_path.read_text().splitlines()
    assert len(wl_lines) == 2
    wl_path.write_text(wl_lines[0] + "\n" + json.dumps([json.loads(wl_lines[1])[0], "AAAA"]) + "\n")
    with pytest.warns(LogWarning, match=rf"{wl_path}:2: a workload MetaSchedule cannot read"):
        assert convtvm.build(W, "x86", tuning_log=log).schedule == "tuned"
    with pytest.warns(LogWarning):
        assert convtvm.build(other, "x86", tuning_log=log).schedule == "fallback"


def test_a_record_that_does_not_build_is_skipped(tuned_log, monkeypatch):
    calls = []
    real = verify.record_reproduces_torch

    def first_fails(w, info, mod, record):
        calls.append(record)
        if len(calls) == 1:
            raise RuntimeError("LLVM ERROR: cannot select\nmore detail")
        return real(w, info, mod, record)

    monkeypatch.setattr(verify, "record_reproduces_torch", first_fails)
    with pytest.warns(LogWarning, match=r"database_tuning_record\.json:\d+: a record of conv2d.* does not "
                                              r"build \(RuntimeError: LLVM ERROR: cannot select\); skipped"):
        record, _ = verify.best_record(W, resolve("x86"), tuned_log)
    assert len(calls) == 2 and record is calls[1]


def test_a_tuning_run_on_a_log_with_a_bad_line_goes_on_without_it(tuned_log, tmp_path):
    log = tmp_path / "x86"
    shutil.copytree(tuned_log, log)
    lines = (log / DB_FILES[1]).read_text().splitlines()
    _corrupt(log, {3: lines[2][:50]})
    with pytest.warns(LogWarning, match=":3: corrupt tuning record line"):
        result = convtvm.tune(W, "x86", trials=4, log=log, trials_per_iter=4, seed=3, progress=lambda s: None)
    after = records(log)
    assert result["trials"] >= 1 and len(after) == len(lines) - 1 + result["trials"]
    assert after[:7] == [json.loads(ln) for k, ln in enumerate(lines, 1) if k != 3]  # the bad line left out


def test_a_tuning_log_must_be_a_folder(tmp_path):
    """A regular file as the log silently gave the fallback schedule (build) or failed inside
    mkdir (tune)."""
    log = tmp_path / "log.json"
    log.write_text("{}\n")
    for call in (lambda: convtvm.build(W, "x86", tuning_log=log),
                 lambda: convtvm.tune(W, "x86", trials=1, log=log),
                 lambda: TuningLog(log).target()):
        with pytest.raises(ValueError, match=r"tuning log .*log\.json must be a folder"):
            call()


@pytest.mark.parametrize("target", [{"kind": "llvm", "mcpu": "notacpu"},
                                    {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "znver3"}])
def test_an_unknown_mcpu_is_refused(target):
    """LLVM only warned, and the build went on with generic code under that name."""
    with pytest.raises(ValueError, match=rf"mcpu='{target['mcpu']}' is not a CPU that LLVM knows"):
        resolve(target)
    with pytest.raises(ValueError, match="is not a CPU that LLVM knows"):
        resolve("arm", arm_cpu="cortex-a999")
    assert resolve({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}).tag == "arm-cortex-a72"


def test_prune_keeps_the_best(tuned_log, tmp_path):
    out = tmp_path / "pruned"
    assert maintain.prune(tuned_log, keep=1, out=out) == 1
    m = convtvm.build(W, "x86", tuning_log=out)
    assert m.schedule == "tuned"
    best = min(sum(r[1][1]) / len(r[1][1]) for r in records(tuned_log))
    assert sum(records(out)[0][1][1]) / len(records(out)[0][1][1]) == best
    # only=True keeps the records of the workloads given, and none of any other task
    other = convtvm.workload("conv1d", in_channels=4, out_channels=4, input_size=(16,), kernel_size=3)
    assert maintain.prune(tuned_log, out=tmp_path / "mine", workloads={"w": W}, only=True) == 1
    assert maintain.prune(tuned_log, out=tmp_path / "other", workloads={"o": other}, only=True) == 0
    assert json.loads((tmp_path / "mine" / "trials.json").read_text()) == {W.key: 8}
    # a pruned log pruned again keeps its trial count (its trials.json), not its one record's
    assert maintain.prune(tmp_path / "mine", out=tmp_path / "again", workloads={"w": W}, only=True) == 1
    assert json.loads((tmp_path / "again" / "trials.json").read_text()) == {W.key: 8}


def test_a_tuning_run_writes_its_curve_with_seconds_and_a_resumed_run_continues_it(tuned_log, tmp_path):
    curve = TuningLog(tuned_log).curves()[W.key]
    assert all(len(p) == 3 for p in curve) and curve[-1][0] == 8 and curve[-1][2] > 0
    assert [p[1] for p in curve] == sorted((p[1] for p in curve), reverse=True)  # only new bests, then the end
    log = tmp_path / "x86"
    shutil.copytree(tuned_log, log)
    convtvm.tune(W, "x86", trials=8, log=log, trials_per_iter=8, seed=3)
    after = TuningLog(log).curves()[W.key]
    assert after[:len(curve)] == curve and 8 < after[-1][0] <= 16 and after[-1][2] > curve[-1][2]
    # a log whose records predate curves: the curve starts at trial 0 from its best record
    (log / "curves.json").unlink()
    best_ms = min(sum(r[1][1]) / len(r[1][1]) for r in records(log)) * 1e3
    convtvm.tune(W, "x86", trials=8, log=log, trials_per_iter=8, seed=4)
    fresh = TuningLog(log).curves()[W.key]
    assert fresh[0] == [0, pytest.approx(best_ms, rel=1e-4), 0.0] and fresh[-1][0] <= 8


def test_a_cost_model_trained_on_a_working_log_searches_another_workload(tuned_log, tmp_path):
    """tuning.warm: the XGBoost model trained on tuned_log's 8 records tunes a workload it has not seen;
    a log pruned to one record per workload teaches it nothing and is refused."""
    from convtvm.tuning.warm import pretrained_cost_model
    info = resolve("x86")
    lines = []
    model = pretrained_cost_model([tuned_log], info, progress=lines.append)
    assert lines == ["cost model trained on 8 records of 1 workloads"]
    other = convtvm.workload("conv2d", in_channels=8, out_channels=8, input_size=(10, 10), kernel_size=3, padding=1)
    out = convtvm.tune(other, info, trials=8, log=tmp_path / "log", trials_per_iter=8, cost_model=model,
                       progress=lambda m: None)
    assert out["trials"] == 8 and convtvm.build(other, info, tuning_log=tmp_path / "log").schedule == "tuned"
    with pytest.raises(ValueError, match="holds two or more measured records of a workload"):
        pretrained_cost_model([tuned_log], info, exclude=[verify.tuned_ir_module(W, info)])
    pruned = tmp_path / "pruned"
    maintain.prune(tuned_log, keep=1, out=pruned, progress=lambda m: None)
    with pytest.raises(ValueError, match="a warm start needs working logs, not pruned ones"):
        pretrained_cost_model([pruned], info)


def test_prune_log_cli_merges_into_a_log(tuned_log, tmp_path, capsys):
    """``convtvm prune-log LOG --into SHIPPED``: the best record lands in SHIPPED; --in-network
    without --model is a clear error."""
    from convtvm.cli import main
    shipped = tmp_path / "shipped"
    assert main(["prune-log", str(tuned_log), "--into", str(shipped)]) == 0
    assert len(records(shipped)) == 1 and convtvm.build(W, "x86", tuning_log=shipped).schedule == "tuned"
    assert main(["prune-log", str(tuned_log), "--into", str(shipped), "--in-network", "2"]) == 2
    assert "--in-network picks a model's records in that model: give --model" in capsys.readouterr().err


def test_prune_retime_keeps_the_fastest_when_timed_again(tuned_log, tmp_path):
    """--retime: the 3 best records are timed again here; the kept one carries its new median and is
    the fastest of them by that timing (so it may differ from the search's first)."""
    out = tmp_path / "pruned"
    assert maintain.prune(tuned_log, keep=1, out=out, retime=3) == 1
    kept = records(out)[0]
    by_search = sorted(records(tuned_log), key=lambda r: sum(r[1][1]) / len(r[1][1]))[:3]
    assert json.dumps(kept[1][0]) in {json.dumps(r[1][0]) for r in by_search}
    assert len(kept[1][1]) == 1 and kept[1][1][0] > 0
    lines = (tuned_log / DB_FILES[0]).read_text().splitlines()
    timed = {json.dumps(r[1][0]): measure.kernel_timer(resolve("x86"), json.loads(lines[0]), r[1])
             for r in by_search}
    assert all(t() > 0 for t in timed.values())
    assert convtvm.build(W, "x86", tuning_log=out).schedule == "tuned"


def test_prune_retime_keeps_the_fallback_where_it_beats_every_record(tuned_log, tmp_path, seed):
    """--retime with the workload known: the fallback's schedule is timed beside the records. A log
    whose only record is the unscheduled loop nest (an empty trace: serial, scalar) claiming a
    near-zero time keeps the fallback's trace instead, and a build applies it."""
    src, out = TuningLog(tmp_path / "naive"), tmp_path / "pruned"
    TuningLog(tuned_log).copy_to(src.path)
    real = TuningLog(tuned_log).records()[0]
    src.write_records([type(real)(real.workload, [[[], []], [1e-9], *real.body[2:]])])
    lines = []
    assert maintain.prune(src.path, keep=1, out=out, workloads={"W": W}, retime=1, progress=lines.append) == 1
    kept = TuningLog(out).records()[0]
    info = resolve("x86")
    assert kept.trace[0] and 0 < kept.run_secs[0] < 1 and any("the fallback's schedule" in m for m in lines)
    fallback = info.backend.fallback(W.prim_func(), info)["main"]
    (tmp_path / "db").mkdir()
    replayed = verify.scheduled(verify.tuned_ir_module(W, info), TuningLog(out).open(tmp_path / "db")[0]
                                .get_all_tuning_records()[0])["main"]
    assert tvm_ffi.structural_equal(replayed.body, fallback.body, map_free_vars=True)
    m = convtvm.build(W, info, tuning_log=out)
    xs = W.random_inputs(seed=seed)
    assert m.schedule == "tuned" and rel_err(m(*xs), W.reference(*xs)) <= 1e-4
    # without the workload named, nothing competes with the records: the naive one stays
    maintain.prune(src.path, keep=1, out=tmp_path / "unnamed", retime=1, progress=lines.append)
    assert TuningLog(tmp_path / "unnamed").records()[0].trace == [[], []]


def test_sigint_loses_no_committed_record(tmp_path):
    log = tmp_path / "x86"
    cmd = [sys.executable, "-m", "convtvm.cli", "tune", "conv2d", "in_channels=8", "out_channels=16",
           "input_size=14,14", "kernel_size=3", "padding=1", "bias=True", "--trials", "200", "--trials-per-iter", "4",
           "--log", str(log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rec_file = log / DB_FILES[1]
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if rec_file.exists() and len(rec_file.read_text().splitlines()) >= 8:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    seen = records(log)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    final = records(log)
    assert final[:len(seen)] == seen and len(final) >= len(seen)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogWarning)  # every line still parses
        TuningLog(log).parse()
    assert convtvm.build(W, "x86", tuning_log=log).schedule == "tuned"


def test_retarget_carries_checked_records_to_another_cpu(tuned_log, tmp_path, seed):
    """retarget-log: a log's best record, replayed for another CPU of this kind, checked and timed
    here, becomes that CPU's record (and that log's only one, however often it is carried over)."""
    host = json.loads(resolve("x86").target_json)
    mcpu = "skylake" if host.get("mcpu") == "haswell" else "haswell"  # both run on any AVX2 machine
    other = resolve({"kind": "llvm", "mcpu": mcpu, "num-cores": host["num-cores"]})
    out = tmp_path / other.tag
    assert maintain.retarget(tuned_log, other, out, progress=lambda s: None) == 1
    assert maintain.retarget(tuned_log, other, out, progress=lambda s: None) == 1
    (row,) = records(out)
    assert row[1][2]["mcpu"] == mcpu and TuningLog(out).target() == other
    fastest = min(records(tuned_log), key=lambda r: sum(r[1][1]) / len(r[1][1]))
    assert row[1][0] == fastest[1][0] and row[1][1] != fastest[1][1]  # the same trace, timed again
    m = convtvm.build(W, other, tuning_log=out)
    xs = W.random_inputs(seed=seed)
    assert m.schedule == "tuned" and rel_err(m(*xs), W.reference(*xs)) <= 1e-4
    with pytest.raises(ValueError, match="already holds records for"):
        maintain.retarget(tuned_log, "x86", tmp_path / "same")
    with pytest.raises(ValueError, match="target is arm"):
        maintain.retarget(tuned_log, "arm", tmp_path / "arm")
    with pytest.raises(ValueError, match="has no target.json"):
        maintain.retarget(tmp_path / "missing", "x86")
    assert not (tmp_path / "same").exists() and not (tmp_path / "arm").exists()


def test_tuned_kernel_with_packed_weights(tmp_path, seed):
    """A shipped record whose kernel reads both of its weights packed (depthwise-separable: the
    depthwise and the pointwise weight): ``prepacked`` on weights packed once by ``weight_prepack``
    gives what ``main`` (which repacks on every call) gives, and what torch gives; export keeps it."""
    from convtvm import suites
    w, log = suites.suite("extras")["DWS"], ROOT / "tuning_logs" / "x86-znver3"
    m = convtvm.build(w, TuningLog(log).target(), tuning_log=log)  # its own CPU's code runs on a newer one
    assert m.schedule == "tuned" and m.packing is not None
    assert sorted(m.packing["weights"]) == w.weight_indices and len(m.packing["packed"]) == 2
    xs = w.random_inputs(seed=seed)
    ref = w.reference(*xs)
    name, args = m.kernel_args(xs)
    assert name == "prepacked"
    assert [tuple(a.shape) for a in args[:-1]] != [tuple(x.shape) for x in xs]  # packed: other shapes
    m.lib[name](*args)
    assert rel_err(args[-1].numpy(), ref) <= 1e-4
    assert rel_err(m(*xs), ref) <= 1e-4
    again = convtvm.load(m.export(tmp_path / "dws.so"))
    assert again.packing == m.packing and rel_err(again(*xs), ref) <= 1e-4
    assert min(again.time(*xs, number=2, repeat=2)) > 0


def test_record_verification_matches_nan_positions_and_the_rest():
    """A network's fused batch-norm on random inputs takes square roots of negative variances: a
    record is checked on the elements that are numbers, and must put NaN exactly where the reference does."""
    import numpy as np

    from convtvm.metrics import close
    ref = np.array([1.0, np.nan, -2.0], dtype="float32")
    assert close(ref + np.float32(1e-6) * np.array([1, 0, 1], dtype="float32"), ref)
    assert not close(np.array([1.0, 0.0, -2.0], dtype="float32"), ref)  # NaN lost
    assert not close(np.array([1.0, np.nan, -2.1], dtype="float32"), ref)  # a number off
    assert not close(np.full(3, np.nan, dtype="float32"), np.full(3, np.nan, dtype="float32"))


def test_each_measured_batch_is_in_the_log_before_the_next_is_measured(tmp_path):
    """MetaSchedule's gradient scheduler commits nothing until every task has had a batch; convtvm's
    joins each batch first (a Ctrl-C in a many-task run keeps all but the batch in flight)."""
    log = tmp_path / "x86"
    small = convtvm.workload("conv2d", in_channels=4, out_channels=8, input_size=(9, 9), kernel_size=3, padding=1)
    in_log = []

    def progress(message):
        if "candidates (" in message:  # the runner has just measured a batch
            in_log.append(len(records(log)) if (log / DB_FILES[1]).exists() else 0)

    result = convtvm.tune([W, small], "x86", trials=16, log=log, trials_per_iter=8, seed=2, progress=progress)
    assert result["trials"] == 16 and [t.trials for t in result["tasks"]] == [8, 8]
    assert in_log == [0, 8]
    assert len(records(log)) == 16


def test_a_faster_record_with_a_wrong_result_is_passed_over(tmp_path, seed):
    """A real MetaSchedule schedule for the spatially separable conv that never writes the second
    stage's zero padding (its output has NaNs), stored with a record that is right but slower."""
    from tvm.s_tir import meta_schedule as ms

    from convtvm.suites import suite
    log = tmp_path / "x86"
    shutil.copytree(Path(__file__).parent / "data" / "ssc_wrong_record", log)
    info, w = TuningLog(log).target(), suite("all")["SSC"]  # the CPU it was measured on
    rows = records(log)
    mod = verify.tuned_ir_module(w, info)
    workload = ms.database.Workload.from_json(json.loads((log / DB_FILES[0]).read_text()))
    wrong, right = (ms.database.TuningRecord.from_json(r, workload) for _, r in rows)
    assert sum(rows[0][1][1]) / 3 < rows[1][1][1][0]  # the wrong one is the faster
    assert not verify.record_reproduces_torch(w, info, mod, wrong)
    record, _ = verify.best_record(w, info, log)
    assert str(record.trace) == str(right.trace)
    m = convtvm.build(w, info, tuning_log=log)
    xs = w.random_inputs(seed=seed)
    assert m.schedule == "tuned" and rel_err(m(*xs), w.reference(*xs)) < 1e-4


def test_register_tiles_follow_the_vector_width():
    """AVX2 (8 fp32 lanes, 16 registers) and AVX-512 (16 lanes, 32 registers) get their own tiles."""
    from convtvm.tuning import retile
    avx2 = resolve({"kind": "llvm", "mcpu": "haswell"}).target
    avx512 = resolve({"kind": "llvm", "mcpu": "znver5"}).target
    assert retile.register_tiles(avx2) == ((2, 4, 6, 7, 8), (8, 16))
    assert retile.register_tiles(avx512) == ((2, 4, 6, 7, 8, 12, 14), (16, 32))


def test_register_tile_sweep_adds_only_faster_checked_records(tmp_path):
    """sweep-tiles: every candidate is the record's own trace with another register tile (the same
    result as the unscheduled TIR); the records it adds were faster than the record, here, and rank
    in the log by their times scaled to the record's."""
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from convtvm.tuning import retile
    info = resolve("x86")
    log = tmp_path / "log"  # channels-last, as in a network: the vectorised axis is the 16 channels
    w = convtvm.workload("conv2d", in_channels=8, out_channels=16, input_size=(10, 10), kernel_size=3, padding=1,
                         layout="NHWC")
    convtvm.tune(w, "x86", trials=8, log=log, trials_per_iter=8, seed=1, progress=lambda s: None)
    mod = verify.tuned_ir_module(w, info)
    with pytest.raises(ValueError, match="keep=0"):
        retile.sweep(log, mod, keep=0)
    other = verify.tuned_ir_module(convtvm.workload("conv2d", in_channels=4, out_channels=4, input_size=(6, 6),
                                                    kernel_size=1), info)
    with pytest.raises(ValueError, match="no record for"):
        retile.sweep(log, other)

    line = next(iter(TuningLog(log).workload_lines_of([mod])))
    mine = [rec for wl, rec in records(log) if wl == line]
    best = min(mine, key=lambda rec: sum(rec[1]) / len(rec[1]))
    wl_json = json.loads((log / DB_FILES[0]).read_text().splitlines()[line])
    record = ms.database.TuningRecord.from_json(best, ms.database.Workload.from_json(wl_json))
    labels = retile.candidate_decisions(record.trace, rows=(2, 4), lanes=(8,))
    assert labels and all("x8 on axis" in k for k in labels)
    label, decisions = next(iter(labels.items()))
    for inst, d in decisions.items():  # a perfect tiling of the same loop, register tile innermost
        assert math.prod(d) == math.prod(int(v) for v in record.trace.decisions[inst])
    with measure.skip_tensor_intrinsics(info):
        postprocs = measure.make_context(mod, info, "w").space_generator.postprocs
    sch = retile.replay(mod, record.trace, decisions, postprocs)
    assert sch is not None
    rng = np.random.default_rng(3)
    args = [rng.standard_normal([int(d) for d in a.shape]).astype("float32")
            for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"])]
    outs = []
    for m in (sch.mod, mod):  # the candidate computes what the unscheduled TIR computes
        tensors = [tvm.runtime.tensor(a) for a in args]
        tvm.compile(m, target=info.target)["main"](*tensors)
        outs.append(tensors[-1].numpy())
    assert rel_err(*outs) < 1e-5

    before = records(log)
    ranked = retile.sweep(log, mod, name="w", keep=2, rounds=2, rows=(2, 4), lanes=(8,), progress=lambda s: None)
    times = dict(ranked)
    assert "record" in times and 1 < len(times) <= len(labels) + 1
    added = records(log)[len(before):]
    assert records(log)[:len(before)] == before and len(added) <= 2
    for wl, rec in added:
        assert wl == line and rec[0] != best[0] and rec[1][0] < sum(best[1]) / len(best[1])
        assert verify.matches_unscheduled(info, wl_json, rec)
