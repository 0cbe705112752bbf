"""Default records: a build that names no log applies the shipped records of its CPU, or carries the
nearest CPU's over one workload at a time into the user's cache; the shipped logs are never written."""

import shutil

import pytest

import convtvm
from convtvm import suites
from convtvm.records import defaults
from convtvm.records import verify
from convtvm.records.log import DB_FILES, LogWarning, TuningLog
from convtvm.targets import resolve
from conftest import rel_err

DEP4 = suites.suite("ansor")["DEP-4"]


def _tree(path):
    return sorted((p.relative_to(path), p.stat().st_mtime_ns, p.stat().st_size) for p in path.rglob("*"))


@pytest.fixture
def only_other_cpus_shipped(tmp_path, monkeypatch):
    """Shipped logs of two other CPUs (an AVX-512 one and an AVX2 one), none of this one's, and an
    empty user cache."""
    shipped = tmp_path / "shipped"
    for tag in ("x86-znver5", "x86-znver3"):
        shutil.copytree(defaults.SHIPPED / tag, shipped / tag)
    monkeypatch.setattr(defaults, "SHIPPED", shipped)
    monkeypatch.setenv("CONVTVM_CACHE", str(tmp_path / "cache"))
    info = resolve("x86")
    if info.tag in ("x86-znver5", "x86-znver3"):
        shutil.rmtree(shipped / info.tag)  # this CPU: no log of its own
    return shipped, info


def test_a_cpu_without_a_shipped_log_carries_records_over_per_workload(only_other_cpus_shipped, seed):
    shipped, info = only_other_cpus_shipped
    before = _tree(shipped)
    m = convtvm.build(DEP4)
    assert m.schedule == "carried over" and m.schedule_source == str(defaults.donor_logs(info)[0])
    xs = DEP4.random_inputs(seed=seed)
    assert rel_err(m(*xs), DEP4.reference(*xs)) <= 1e-4
    mine = defaults.user_log(info)
    assert TuningLog(mine).target().tag == info.tag  # kept as a record measured here
    again = convtvm.build(DEP4)  # from the cache now: no carry-over twice
    assert again.schedule == "carried over" and again.schedule_source == m.schedule_source
    assert verify.best_schedule(DEP4, info, mine) is not None
    assert _tree(shipped) == before  # the shipped logs are read, never written
    assert convtvm.build(DEP4, tuning_log=False).schedule == "fallback"


def test_a_workload_no_log_holds_nor_a_neighbour_of_falls_back(only_other_cpus_shipped):
    w = convtvm.workload("max_pool2d", channels=5, input_size=(9, 9), kernel_size=3)  # no pooling is tuned
    m = convtvm.build(w)
    assert m.schedule == "fallback" and m.schedule_source is None
    assert not (defaults.user_log(only_other_cpus_shipped[1]) / DB_FILES[1]).exists()


@pytest.mark.parametrize("mcpu, nearest", [("znver4", "x86-znver5"), ("sapphirerapids", "x86-znver5"),
                                           ("icelake-server", "x86-rocketlake"),
                                           ("haswell", "x86-znver3"), ("alderlake", "x86-znver3")])
def test_the_nearest_log_shares_the_vector_isa(mcpu, nearest):
    info = resolve({"kind": "llvm", "mcpu": mcpu, "num-cores": 2})
    assert defaults.donor_logs(info)[0].name == nearest


def test_a_log_of_this_cpu_is_applied_as_tuned(tmp_path, monkeypatch):
    """With a log shipped for this CPU (here: one tuned in the test), a default build applies it."""
    info = resolve("x86")
    shipped = tmp_path / "shipped"
    w = convtvm.workload("conv1d", in_channels=8, out_channels=8, input_size=(16,), kernel_size=3)
    convtvm.tune(w, info, trials=4, log=shipped / info.tag, trials_per_iter=4, seed=1, progress=lambda *_: None)
    monkeypatch.setattr(defaults, "SHIPPED", shipped)
    monkeypatch.setenv("CONVTVM_CACHE", str(tmp_path / "cache"))
    m = convtvm.build(w)
    assert m.schedule == "tuned" and m.schedule_source == str(shipped / info.tag)


def test_a_bad_line_in_a_donor_log_is_skipped_with_a_warning(only_other_cpus_shipped):
    shipped, info = only_other_cpus_shipped
    donor = defaults.donor_logs(info)[0]
    with open(donor / DB_FILES[1], "a") as f:
        f.write("[0, not json\n")
    with pytest.warns(LogWarning, match=r"database_tuning_record.json:\d+"):
        m = convtvm.build(DEP4)
    assert m.schedule == "carried over"


def test_the_network_logs_are_the_users_then_the_shipped_then_the_nearest_cpus(only_other_cpus_shipped):
    shipped, info = only_other_cpus_shipped
    donor = defaults.donor_logs(info)[0]
    assert defaults.network_logs(info) == [(donor, True)]
    shutil.copytree(shipped / "x86-znver3", defaults.user_log(info))  # the user's own records
    assert defaults.network_logs(info) == [(defaults.user_log(info), False), (donor, True)]
    shutil.copytree(shipped / "x86-znver3", shipped / info.tag)  # as if shipped for this CPU
    assert defaults.network_logs(info) == [(defaults.user_log(info), False), (shipped / info.tag, False)]


@pytest.fixture(scope="module")
def other_cpus_network_log(tmp_path_factory):
    """A small network and a log of its heaviest task's records measured for another CPU (znver3: its
    AVX2 code runs on any CPU these tests run on)."""
    import torch
    from torch import nn

    from convtvm import network
    from convtvm.tuning import network as model_tuning
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()).eval()
    x = torch.randn(1, 8, 16, 16)
    other = resolve({"kind": "llvm", "mcpu": "znver3", "num-cores": 2})
    tasks = model_tuning.extract_tasks(network.lower(network.import_torch(model, [x]), other), other)
    log = tmp_path_factory.mktemp("other_cpu") / "x86-znver3"
    model_tuning.tune_tasks(tasks[:1], other, trials=4, log=log, trials_per_iter=4, seed=0, progress=lambda s: None)
    return model, x, log


def test_a_network_takes_another_cpus_records_when_they_reproduce_torch(other_cpus_network_log, monkeypatch):
    import torch

    from convtvm import network
    from convtvm.network import compile as network_compile
    model, x, log = other_cpus_network_log
    monkeypatch.setattr(defaults, "network_logs", lambda info: [(log, True)])
    net = network.compile_model(model, [x])
    assert net.schedules.get("carried over") == 1 and "tuned" not in net.schedules
    with torch.no_grad():
        assert rel_err(net(x).numpy(), model(x).numpy()) <= 1e-4
    monkeypatch.setattr(network_compile, "_matches_torch", lambda *a: False)  # as if the replayed kernels were wrong
    with pytest.warns(UserWarning, match="do not reproduce torch's result"):
        net = network.compile_model(model, [x])
    assert "carried over" not in net.schedules and "tuned" not in net.schedules


def test_a_network_takes_each_tasks_record_from_the_first_log_that_holds_one(other_cpus_network_log, tmp_path,
                                                                             monkeypatch):
    """The user's log (here: one with no record of this network) does not hide the next log's records."""
    from convtvm import network
    model, x, log = other_cpus_network_log
    info = resolve("x86")
    w = convtvm.workload("conv1d", in_channels=4, out_channels=4, input_size=(8,), kernel_size=3)
    mine = tmp_path / info.tag
    convtvm.tune(w, info, trials=2, log=mine, trials_per_iter=2, seed=0, progress=lambda *_: None)
    monkeypatch.setattr(defaults, "network_logs", lambda info: [(mine, False), (log, True)])
    assert network.compile_model(model, [x]).schedules.get("carried over") == 1
