"""The one error metric: what rel_err measures and where close() draws the line."""

import math

import numpy as np
import pytest
import torch

from convtvm.metrics import TOLERANCE, close, rel_err


def test_rel_err_is_the_max_error_over_the_max_magnitude():
    ref = np.array([1.0, -4.0, 2.0])
    assert rel_err(ref + [0.0, 0.0, 0.002], ref) == pytest.approx(0.0005)
    assert rel_err(torch.tensor(ref), ref) == 0.0  # torch tensors are read too


def test_nan_and_inf_must_sit_where_the_reference_has_them():
    ref = np.array([1.0, np.nan, np.inf, -np.inf])
    assert rel_err(ref.copy(), ref) == 0.0
    assert math.isinf(rel_err(np.array([1.0, 0.0, np.inf, -np.inf]), ref))  # a NaN lost
    assert math.isinf(rel_err(np.array([1.0, np.nan, -np.inf, -np.inf]), ref))  # an infinity's sign flipped
    assert math.isinf(rel_err(np.array([np.nan, np.nan, np.inf, -np.inf]), ref))  # a NaN made up


def test_close_uses_the_float32_bar_and_refuses_an_all_nan_reference():
    ref = np.ones(4)
    assert close(ref * (1 + TOLERANCE / 2), ref) and not close(ref * (1 + TOLERANCE * 2), ref)
    assert not close(np.full(3, np.nan), np.full(3, np.nan))
    with pytest.raises(ValueError, match="shape"):
        rel_err(np.ones(3), np.ones(4))
