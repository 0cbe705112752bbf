"""x86 tuning measured on TVM RPC servers (issue #34): a tracker and x86 servers started by each test on
127.0.0.1, each on a free port; the candidates are built here and measured there."""

import math
import time

import pytest

import convtvm
from convtvm.backends import rpc as remote
from convtvm.backends import x86
from convtvm.metrics import rel_err
from convtvm.records.log import TuningLog
from convtvm.targets import resolve
from convtvm.tuning.progress import ProgressLine

KEY = "convtvm-test-x86"
W = convtvm.workload("conv2d", in_channels=8, out_channels=8, input_size=(10, 10), kernel_size=3, padding=1,
                     layout="NHWC")


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """start(n): a tracker and ``n`` servers under KEY; returns (tracker address, [servers])."""
    from tvm import rpc
    from tvm.rpc.tracker import Tracker
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the servers' upload folders go with the test
    # servers run kernels on as many threads as the target has cores, as the README tells users to
    monkeypatch.setenv("TVM_NUM_THREADS", str(resolve("x86").target.export()["num-cores"]))
    started = []

    def start(n: int):
        tracker = Tracker(host="127.0.0.1", port=9400, port_end=9500)
        started.append(tracker)
        servers = [rpc.Server(host="127.0.0.1", port=9500, port_end=9600, key=KEY,
                              tracker_addr=("127.0.0.1", tracker.port)) for _ in range(n)]
        started.extend(servers)
        addr = f"127.0.0.1:{tracker.port}"
        deadline = time.time() + 60
        while remote.tracker_servers(addr, KEY) < n:  # each server registers in its own time
            assert time.time() < deadline, "the RPC servers did not register with the tracker"
            time.sleep(0.2)
        return addr, servers

    yield start
    x86.BACKEND.connect(tuning=True)  # measure here again
    for p in reversed(started):
        p.terminate()


@pytest.mark.slow
def test_tuning_measures_on_two_servers_and_survives_one_dying(cluster, tmp_path):
    tracker, servers = cluster(2)
    info = resolve("x86")
    info.backend.connect(tracker=tracker, key=KEY, tuning=True)
    killed = []

    def progress(msg):
        if isinstance(msg, ProgressLine) and not killed:  # after the first batch: one server dies
            servers[0].terminate()
            killed.append(msg.done)

    out = convtvm.tune(W, info, trials=24, log=tmp_path / "log", trials_per_iter=8, progress=progress)
    assert killed == [8]
    assert out["trials"] == 24  # every candidate counted: measured on the live server, or failed
    measured = [r for r in TuningLog(tmp_path / "log").records() if r.run_secs and r.mean_secs < 1e9]
    # nothing lost: the first batch (both servers alive) and the batches after it on the live server
    assert len(measured) >= 16, len(measured)
    assert all(math.isfinite(r.mean_secs) and r.mean_secs > 0 for r in measured)
    # the best record is a kernel this machine runs and that matches torch
    m = convtvm.build(W, info, tuning_log=tmp_path / "log")
    assert m.schedule == "tuned"
    xs = W.random_inputs(seed=3)
    assert rel_err(m(*xs), W.reference(*xs)) < 1e-4


def test_servers_reporting_another_cpu_are_refused(cluster, tmp_path, monkeypatch):
    tracker, _ = cluster(1)
    monkeypatch.setattr(x86, "host_cpu", lambda: "znver3")  # the log is for znver3, the server is not
    info = resolve("x86")
    info.backend.connect(tracker=tracker, key=KEY, tuning=True)
    with pytest.raises(ValueError, match=r"1 of the 1 server\(s\) .* report CPU .*not the log's znver3"):
        convtvm.tune(W, info, trials=8, log=tmp_path / "log", progress=lambda m: None)


def test_servers_on_another_thread_count_are_refused(cluster, tmp_path, monkeypatch):
    """A server's kernels must run on as many threads as the log's timings assume (the target's cores)."""
    threads = int(resolve("x86").target.export()["num-cores"])
    if threads < 2:
        pytest.skip("needs 2 or more cores: TVM caps a server's threads at its cores, so 1 is the only count here")
    monkeypatch.setenv("TVM_NUM_THREADS", "1")  # the server process inherits it
    tracker, _ = cluster(1)
    info = resolve("x86")
    info.backend.connect(tracker=tracker, key=KEY, tuning=True)
    with pytest.raises(ValueError, match=rf"run kernels on 1 thread\(s\), not the {threads} .*"
                                         rf"TVM_NUM_THREADS={threads}"):
        convtvm.tune(W, info, trials=8, log=tmp_path / "log", progress=lambda m: None)


def test_a_tracker_with_no_server_under_the_key_is_refused(cluster, tmp_path):
    tracker, _ = cluster(0)
    info = resolve("x86")
    info.backend.connect(tracker=tracker, key=KEY, tuning=True)
    with pytest.raises(ValueError, match="no RPC server is registered at the tracker"):
        convtvm.tune(W, info, trials=8, log=tmp_path / "log", progress=lambda m: None)


@pytest.mark.slow
def test_tuning_measures_on_one_server_named_directly(tmp_path, monkeypatch):
    """--rpc HOST:PORT: one server, no tracker."""
    from tvm import rpc
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("TVM_NUM_THREADS", str(resolve("x86").target.export()["num-cores"]))
    server = rpc.Server(host="127.0.0.1", port=9600, port_end=9700)
    info = resolve("x86")
    try:
        info.backend.connect(rpc=f"127.0.0.1:{server.port}", tuning=True)
        out = convtvm.tune(W, info, trials=8, log=tmp_path / "log", trials_per_iter=8, progress=lambda m: None)
    finally:
        info.backend.connect(tuning=True)
        server.terminate()
    assert out["trials"] == 8
    assert sum(1 for r in TuningLog(tmp_path / "log").records() if r.run_secs and r.mean_secs < 1e9) == 8


def test_a_server_held_by_another_client_times_out_with_a_message(cluster):
    tracker, _ = cluster(1)
    held = remote.open_remote(tracker=tracker, key=KEY)  # another client's session: the one server is busy
    cores = int(resolve("x86").target.export()["num-cores"])
    with pytest.raises(ValueError, match=r"the 1 server\(s\) at the tracker .* were not all free within 2 s"):
        remote.check_servers(x86.host_cpu(), cores, tracker=tracker, key=KEY, wait=2)
    del held
