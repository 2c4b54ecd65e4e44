"""Output change: how far a changed model's outputs moved from the dense model's."""

from __future__ import annotations

import math

import numpy as np


# a pruned model whose outputs become NaN/inf where the dense ones are finite moved "infinitely":
# it is recorded as this value (JSON has no infinity)
MAX_CHANGE = 1e9


OUTPUT_CHANGE_HELP = (
    "Output change (the loss proxy): for each model output, the KL divergence KL(dense || changed) "
    "averaged over rows when the dense output is a probability distribution (non-negative, each row "
    "summing to 1 along the last axis) or classification logits (a 2-D [N, C] float output with C >= 2, "
    "softmax applied first); otherwise the normalized squared error ||y - y'||^2 / ||y||^2 "
    "(plain squared error when y is all zeros); for integer or boolean outputs the fraction of elements "
    "that changed. The value is the sum over the outputs, averaged over the samples."
)


def classify_output(y: np.ndarray) -> str:
    """How an output is compared: "dist", "logits", "nse" or "discrete"."""
    y = np.asarray(y)
    if y.dtype.kind not in "fc":
        return "discrete"
    if y.ndim >= 1 and y.shape[-1] >= 2 and y.size and np.all(np.isfinite(y)):
        yy = y.astype(np.float64)
        if yy.min() >= -1e-6 and np.all(np.abs(yy.sum(axis=-1) - 1.0) <= 1e-3):
            return "dist"
    if y.ndim == 2 and y.shape[1] >= 2:
        return "logits"
    return "nse"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _kl_rows(logp: np.ndarray, logq: np.ndarray) -> float:
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (logp - logq), 0.0)
    kl = np.sum(terms, axis=-1)
    return float(max(0.0, np.mean(kl))) if kl.size else 0.0


def one_output_change(dense: np.ndarray, changed: np.ndarray, kind: str) -> float:
    dense = np.asarray(dense)
    changed = np.asarray(changed)
    if dense.shape != changed.shape:
        return MAX_CHANGE
    if dense.size == 0:
        return 0.0
    if kind == "discrete":
        return float(np.count_nonzero(dense != changed)) / dense.size
    a = dense.astype(np.float64)
    b = changed.astype(np.float64)
    finite_a = np.isfinite(a)
    if not np.array_equal(finite_a, np.isfinite(b)):
        return MAX_CHANGE
    if not finite_a.all():
        # compare only where both are finite (the same places)
        a = a[finite_a]
        b = b[finite_a]
        if a.size == 0:
            return 0.0
        kind = "nse"
    if kind == "dist":
        eps = 1e-12
        logp = np.log(np.clip(a, eps, None))
        logq = np.log(np.clip(b, eps, None))
        logp = logp.reshape(-1, a.shape[-1])
        logq = logq.reshape(-1, a.shape[-1])
        return min(MAX_CHANGE, _kl_rows(logp, logq))
    if kind == "logits":
        return min(MAX_CHANGE, _kl_rows(_log_softmax(a), _log_softmax(b)))
    num = float(np.sum(np.square(a - b)))
    den = float(np.sum(np.square(a)))
    value = num / den if den > 0 else num
    return min(MAX_CHANGE, value) if math.isfinite(value) else MAX_CHANGE


def output_change(dense: list[np.ndarray], changed: list[np.ndarray], kinds: list[str]) -> float:
    """Sum over the outputs of :func:`one_output_change` (see ``OUTPUT_CHANGE_HELP``)."""
    total = 0.0
    for d, c, k in zip(dense, changed, kinds):
        total += one_output_change(d, c, k)
    return min(MAX_CHANGE, total)
