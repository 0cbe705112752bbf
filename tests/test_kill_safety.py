"""``convtvm tune`` killed outright (SIGKILL: no handler runs, nothing is flushed) at random points:
the log always loads, a resumed run continues it, and no record committed before a kill is lost.

The log is written after every measured batch, each file through a temp file and a rename
(``TuningLog.sync_from``: the workload file before the record file, so a record never names a workload the
file does not hold yet); a kill between or inside those writes leaves the previous file whole."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

import convtvm
from convtvm.records.log import DB_FILES, LogWarning, TuningLog

W = convtvm.workload("conv2d", in_channels=4, out_channels=8, input_size=(9, 9), kernel_size=3, padding=1)
ARGS = ["tune", "conv2d", "in_channels=4", "out_channels=8", "input_size=9,9", "kernel_size=3", "padding=1",
        "--trials", "400", "--trials-per-iter", "4"]
KILLS = 3
WAIT_S = 60  # for a run to commit its next batch (a loaded 2-core machine: ~10 s)


def _records(log: Path) -> list:
    """The log's record lines, read as the loader reads them: a line it would skip fails the test."""
    path = log / DB_FILES[1]
    if not path.exists():
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogWarning)
        workloads, records, clean = TuningLog(log).parse()
    assert clean and len(workloads) <= 1
    return [json.dumps(rec) for _, rec in records]


def _command() -> list:
    exe = Path(sys.executable).with_name("convtvm")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "convtvm.cli"]


@pytest.mark.slow
def test_sigkill_at_random_points_loses_no_committed_record(tmp_path, seed):
    rng = random.Random(seed)
    log = tmp_path / "x86"
    scratch = tmp_path / "tmp"  # a killed run leaves its working copy of the log behind: here, not in /tmp
    scratch.mkdir()
    committed: list = []
    for k in range(KILLS):
        proc = subprocess.Popen([*_command(), *ARGS, "--log", str(log)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "TMPDIR": str(scratch)})
        try:
            deadline = time.time() + WAIT_S
            while len(_records(log)) <= len(committed):  # this run commits a batch of its own: it continues
                assert proc.poll() is None, f"run {k} exited ({proc.returncode}) before committing a batch"
                assert time.time() < deadline, f"run {k} committed no batch in {WAIT_S} s"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 4.0))  # then a random point: inside a batch, or inside a write
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        after = _records(log)
        assert after[:len(committed)] == committed, f"kill {k}: a committed record changed or went missing"
        assert len(after) > len(committed), f"kill {k}: the resumed run added nothing"
        committed = after
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("error", LogWarning)
            db, lines = TuningLog(log).open(tmp)
            assert len(db.get_all_tuning_records()) == len(lines) == len(after)
    m = convtvm.build(W, "x86", tuning_log=log)
    assert m.schedule == "tuned"
    xs = W.random_inputs(seed=seed)
    ref = W.reference(*xs)
    assert abs(m(*xs) - ref).max() <= 1e-4 * abs(ref).max()
