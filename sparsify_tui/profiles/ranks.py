"""Rank statistics of sensitivity values: Spearman's rho with averaged ties, ranks, running maxima."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def average_ranks(x: Iterable[float]) -> np.ndarray:
    """Ranks 1..n (ascending), ties get the average of their ranks."""
    x = np.asarray(list(x), dtype=np.float64)
    n = x.size
    order = np.argsort(x, kind="stable")
    ranks = np.empty(n, dtype=np.float64)
    sx = x[order]
    i = 0
    while i < n:
        j = i
        while j + 1 < n and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def rank_correlation(a: Iterable[float], b: Iterable[float]) -> float | None:
    """Spearman's rank correlation (ties averaged); None when undefined (< 2 values or a constant)."""
    a = np.asarray(list(a), dtype=np.float64)
    b = np.asarray(list(b), dtype=np.float64)
    if a.size != b.size or a.size < 2:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(np.sum(ra * ra)) * float(np.sum(rb * rb)))
    if den == 0:
        return None
    return float(np.clip(np.sum(ra * rb) / den, -1.0, 1.0))


def sensitivity_ranks(values: list[float | None]) -> list[int | None]:
    """Rank 1 = most sensitive: 1 + the number of layers with a strictly larger value (None stays None)."""
    known = sorted((v for v in values if v is not None), reverse=True)
    out: list[int | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        # count strictly greater
        lo, hi = 0, len(known)
        while lo < hi:
            mid = (lo + hi) // 2
            if known[mid] > v:
                lo = mid + 1
            else:
                hi = mid
        out.append(lo + 1)
    return out


def running_max(values: list[float]) -> list[float]:
    out, m = [], 0.0
    for v in values:
        m = max(m, float(v))
        out.append(m)
    return out
