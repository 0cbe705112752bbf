"""Borrowed records: a default build of a shape no log holds refits the records of its nearest tuned
neighbours (same computation, layout and dtype), checks them against torch, times a few and keeps
the fastest in the user's log."""

import pytest

import convtvm
from convtvm.records import borrow, defaults, verify
from convtvm.records.log import DB_FILES, TuningLog
from convtvm.targets import resolve
from conftest import rel_err

CONV = convtvm.workload("conv2d", in_channels=16, out_channels=24, input_size=(10, 12), kernel_size=3, padding=1,
                        layout="NHWC")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty user cache, and two candidates per borrow (the tests stay quick)."""
    monkeypatch.setenv("CONVTVM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(borrow, "MAX_CANDIDATES", 2)
    return resolve("x86")


def test_refit_tile_keeps_the_product_and_the_inner_factors():
    assert borrow.refit_tile([1, 7, 1, 8], 56) == [1, 7, 1, 8]
    assert borrow.refit_tile([1, 7, 1, 8], 24) == [1, 3, 1, 8]
    assert borrow.refit_tile([2, 1, 4, 16], 24, max_innermost=64) == [1, 1, 3, 8]
    for old, extent in [([4, 2, 1, 16], 7), ([1, 1, 1, 64], 30), ([3, 5], 1)]:
        new = borrow.refit_tile(old, extent, max_innermost=16)
        assert len(new) == len(old) and __import__("math").prod(new) == extent and new[-1] <= 16


def test_a_shape_no_log_holds_borrows_a_record_and_keeps_it(fresh_cache, seed, capsys, monkeypatch):
    info = fresh_cache
    m = convtvm.build(CONV)
    assert m.schedule == "borrowed" and " -> " in m.schedule_source
    assert any(str(log) in m.schedule_source for log in defaults.borrow_logs(info))
    assert capsys.readouterr().err.count("borrowed the one of") == 1
    xs = CONV.random_inputs(seed=seed)
    assert rel_err(m(*xs), CONV.reference(*xs)) <= 1e-4
    mine = TuningLog(defaults.user_log(info))
    assert mine.borrowed() == {CONV.key: m.schedule_source} and mine.target().tag == info.tag
    assert borrow._borrowed_hashes(info, [mine]) == {str(h) for h, _ in mine.workloads()}  # it lends to no other

    def no_second_borrow(*a, **k):
        raise AssertionError("borrowed twice")
    monkeypatch.setattr(borrow, "borrow", no_second_borrow)
    again = convtvm.build(CONV)  # applied from the user's log
    assert again.schedule == "borrowed" and again.schedule_source == m.schedule_source
    assert rel_err(again(*xs), CONV.reference(*xs)) <= 1e-4
    assert convtvm.build(CONV, tuning_log=False).schedule == "fallback"


def test_a_candidate_that_fails_the_check_is_not_used(fresh_cache, monkeypatch):
    info = fresh_cache
    checked = []

    def wrong_first(w, info, mod):
        checked.append(mod)
        return len(checked) > 1  # the fastest candidate "differs from torch"
    monkeypatch.setattr(verify, "reproduces_torch", wrong_first)
    lent = borrow.borrow(CONV, info, defaults.borrow_logs(info), keep=False)
    assert lent is not None and len(checked) == 2 and lent.mod.same_as(checked[1])

    monkeypatch.setattr(verify, "reproduces_torch", lambda w, info, mod: False)
    m = convtvm.build(CONV)
    assert m.schedule == "fallback" and m.schedule_source is None
    assert not (defaults.user_log(info) / DB_FILES[1]).exists()


def test_a_variant_with_no_tuned_neighbour_falls_back(fresh_cache):
    info = fresh_cache
    w = convtvm.workload("avg_pool1d", channels=8, input_size=(31,), kernel_size=3)
    assert borrow.neighbours(verify.tuned_ir_module(w, info), defaults.borrow_logs(info)) == []
    m = convtvm.build(w)
    assert m.schedule == "fallback" and m.schedule_source is None
    assert not (defaults.user_log(info) / DB_FILES[1]).exists()


def test_a_channels_first_shape_borrows_for_itself_or_its_channels_last_twin(fresh_cache, seed):
    w = convtvm.workload("depthwise_conv2d", in_channels=32, input_size=(9, 11), kernel_size=3, padding=1)
    m = convtvm.build(w)
    assert m.schedule == "borrowed" and m.kernel.params["layout"] in ("NCHW", "NHWC")
    xs = w.random_inputs(seed=seed)
    assert rel_err(m(*xs), w.reference(*xs)) <= 1e-4


def test_the_twins_borrowed_kernel_is_timed_with_the_datas_relayout(fresh_cache, monkeypatch):
    """Of a channels-first workload's borrowed kernel and its twin's, the twin's counts with the
    relayout every call on it adds: the twin wins only by more than that."""
    from convtvm import relayout
    w = convtvm.workload("depthwise_conv2d", in_channels=32, input_size=(9, 11), kernel_size=3, padding=1)
    kernel_ms = {"NCHW": 0.07, "NHWC": 0.05}
    kept = []
    monkeypatch.setattr(borrow, "borrow", lambda x, info, logs, keep=True: borrow.Borrowed(
        x, None, f"mod {x.params['layout']}", "a neighbour", kernel_ms[x.params["layout"]], 2))
    monkeypatch.setattr(borrow, "keep_borrowed", lambda lent, info: kept.append(lent))
    for relayout_cost, expected in ((0.01, "NHWC"), (0.04, "NCHW")):
        monkeypatch.setattr(defaults, "relayout_ms", lambda w, info, ms=relayout_cost: ms)
        chosen, schedule = defaults.borrowed_schedule([w, relayout.twin(w)], fresh_cache)
        assert chosen.params["layout"] == expected and schedule.mod == f"mod {expected}"
        assert kept[-1].workload is chosen
    monkeypatch.undo()
    assert 0 < defaults.relayout_ms(w, resolve("x86")) < 10


def test_the_transfer_suite_is_in_no_shipped_log():
    from convtvm import suites
    ws = suites.suite("transfer")
    assert {w.params["layout"] for w in ws.values()} == {"NCHW", "NHWC"}
    for log in sorted(defaults.SHIPPED.glob("*-*")):
        info = TuningLog(log).target()
        assert TuningLog(log).workload_lines_of([verify.tuned_ir_module(w, info) for w in ws.values()]) == {}
