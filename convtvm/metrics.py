"""The one error metric convtvm checks kernels with.

``rel_err(y, ref) = max|y - ref| / max|ref|``: the largest error relative to the reference's largest
magnitude. A float32 kernel passes at ``TOLERANCE`` (1e-4). NaNs must sit exactly where the reference
has them (a NaN or Inf input propagates as torch propagates it), and are left out of the max.
"""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-4  # float32: every kernel and every network meets this against torch


def _arrays(y, ref) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y, dtype=np.float64)
    ref = np.asarray(ref.detach().cpu().numpy() if hasattr(ref, "detach") else ref, dtype=np.float64)
    if y.shape != ref.shape:
        raise ValueError(f"shape {y.shape} != reference {ref.shape}")
    return y, ref


def rel_err(y, ref) -> float:
    """max|y - ref| / max|ref| over the elements where ``ref`` is finite-or-inf and not NaN; ``inf``
    where ``y`` has a NaN the reference lacks (or lacks one it has), or where infinities differ.

    Args: ``y``, ``ref``: arrays (numpy, or torch tensors on any device) of one shape.
    Raises: ValueError when the shapes differ."""
    y, ref = _arrays(y, ref)
    nan = np.isnan(ref)
    if not np.array_equal(np.isnan(y), nan):
        return float("inf")
    y, ref = y[~nan], ref[~nan]
    if y.size == 0:
        return 0.0
    inf = np.isinf(ref) | np.isinf(y)
    if not np.array_equal(y[inf], ref[inf]):
        return float("inf")
    y, ref = y[~inf], ref[~inf]
    if y.size == 0:
        return 0.0
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


def close(y, ref, tol: float = TOLERANCE) -> bool:
    """``rel_err(y, ref) <= tol``, and the reference is not all NaN (nothing would be compared)."""
    _, r = _arrays(y, ref)
    return not np.isnan(r).all() and rel_err(y, ref) <= tol
