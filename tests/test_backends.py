"""The backend registry: one backend per target kind, each claiming only its own TVM target dicts."""

import pytest

from convtvm import backends
from convtvm.backends.base import Backend
from convtvm.targets import resolve


def test_every_kind_has_a_backend_of_that_kind():
    for kind in backends.KINDS:
        b = backends.get(kind)
        assert isinstance(b, Backend) and b.kind == kind
        assert backends.for_target(resolve(kind)) is b


def test_unknown_kind_is_a_value_error():
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        backends.get("tpu")


def test_target_dicts_are_claimed_by_exactly_one_backend():
    cases = {"x86": {"kind": "llvm"}, "arm": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"},
             "cuda": {"kind": "cuda", "arch": "sm_80"}}
    for kind, target in cases.items():
        assert [k for k in backends.KINDS if backends.get(k).claims(target)] == [kind]
        assert backends.claiming(target).kind == kind
    with pytest.raises(ValueError, match="kind must be 'llvm' or 'cuda'"):
        backends.claiming({"kind": "c"})


def test_tags_and_where_modules_run():
    assert backends.get("cuda").tag({"arch": "sm_80"}) == "cuda-sm80"
    assert backends.get("arm").tag({"mcpu": "cortex-a72"}) == "arm-cortex-a72"
    assert backends.get("x86").runs_in_process() and not backends.get("cuda").runs_in_process()
    assert not resolve("cuda").backend.runs_in_process() and resolve("x86").backend.runs_in_process()
