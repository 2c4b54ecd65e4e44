"""Exact magnitude pruning of arrays.

Pruning ``n`` elements to sparsity ``s`` zeroes exactly ``round(s * n)`` of
them, smallest magnitude first; ties are broken by a fixed permutation (see
:func:`magnitude_order`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsify_tui.errors import UsageError


def pruned_count(n: int, sparsity: float) -> int:
    """How many elements pruning ``n`` elements to ``sparsity`` zeroes: ``round(sparsity * n)``."""
    k = int(round(float(sparsity) * int(n)))
    return max(0, min(int(n), k))


def magnitude_order(magnitude: np.ndarray) -> np.ndarray:
    """Indices of the flattened array, smallest magnitude first.

    Ties are broken by a fixed pseudo-random permutation (seeded by the size),
    not by position: a tensor of equal weights (a ConstantOfShape fill, a
    quantized weight with few levels) then loses zeros spread over all its
    channels, as trained weights do, instead of whole leading channels; the
    latter would leave the sparse kernels of an engine with a few dense
    channels and no speedup. The order is the same on every run.
    """
    mag = np.abs(np.asarray(magnitude)).ravel()
    n = mag.size
    if n < 2:
        return np.arange(n)
    perm = np.random.default_rng(n).permutation(n)
    return perm[np.argsort(mag[perm], kind="stable")]


def prune_array(
    w: np.ndarray,
    s: float,
    *,
    magnitude: np.ndarray | None = None,
    zero: Any = 0,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``w`` with exactly ``round(s * w.size)`` smallest-magnitude elements set to ``zero``.

    ``magnitude`` (same shape as ``w``) orders the elements instead of ``|w|``
    (used for quantized weights); ``zero`` is the value written (the zero
    point of a quantized weight; broadcastable to ``w``); ``order`` is a
    precomputed :func:`magnitude_order` to reuse across levels.
    """
    w = np.asarray(w)
    if not 0.0 <= float(s) <= 1.0:
        raise UsageError(f"sparsity must be between 0 and 1, got {s!r}")
    out = np.array(w, copy=True)
    k = pruned_count(w.size, s)
    if k == 0:
        return out
    if order is None:
        order = magnitude_order(w if magnitude is None else magnitude)
    idx = order[:k]
    flat = out.reshape(-1)
    if np.ndim(zero) == 0:
        flat[idx] = zero
    else:
        zfull = np.broadcast_to(np.asarray(zero, dtype=w.dtype), w.shape).reshape(-1)
        flat[idx] = zfull[idx]
    return out


def sparsity_of(w: np.ndarray, zero: Any = 0) -> float:
    """Fraction of elements equal to ``zero`` (0 for an empty tensor)."""
    w = np.asarray(w)
    if w.size == 0:
        return 0.0
    return float(np.count_nonzero(w == np.broadcast_to(np.asarray(zero, dtype=w.dtype), w.shape))) / w.size
