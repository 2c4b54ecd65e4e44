"""One-shot pruning that keeps a layer's outputs: Wanda and SparseGPT (pure numpy).

A prunable layer is seen in *rows form*: ``W`` of shape (rows, d), one row
per output channel (a Gemm/MatMul output feature, a Conv filter), ``d``
inputs per row (a Conv filter's ``C/group * prod(kernel)`` im2col entries),
and its inputs as columns ``X`` of shape (d, P) (P = samples x positions),
so the layer computes ``W @ X``. Grouped and depthwise Convs have one
(rows_g, d) block and one input matrix per group.

* :func:`conv_columns` / :func:`matmul_columns`: the input columns (im2col for
  Conv, with pads, strides, dilations and groups; rows of the flattened input
  for Gemm/MatMul).
* :class:`HessianAccumulator`: ``H = X X^T`` per group, accumulated in float64
  chunk by chunk (only its diagonal, the squared input norms, for Wanda).
* :func:`wanda_mask`: per row, the ``k_r`` weights of smallest
  ``|w_ij| * ||x_j||`` (Sun et al., 2023), ``sum k_r = k``.
* :func:`sparsegpt`: column blocks of 128, the mask of a block chosen by
  ``w^2 / [H^-1]_jj^2`` over the block, and the optimal-brain-surgeon update of
  the weights not yet pruned, using the upper Cholesky factor of ``H^-1``
  (Frantar & Alistarh, 2023, Algorithm 1) after dampening ``H`` by
  ``percdamp * mean(diag H)``; then, when it is cheap enough (:data:`REFIT_FLOPS`), each row's kept
  weights are re-solved exactly for the final mask (:func:`refit`), which the column-by-column updates
  only approach.

Exactly ``k = round(s * n)`` weights end up zero (see :func:`split_count`
and :func:`finish`): each block's quota comes from the cumulative target, so
the quotas add up to ``k``; a weight that the update happens to drive to
exactly 0 without being chosen is stored as the dtype's smallest normal
number of its sign instead, so the count stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK = 128
PERCDAMP = 0.01
CHUNK_COLUMNS = 8192  # columns of X multiplied at a time (bounds the temporary memory)


# ---------------------------------------------------------------- counts
def split_count(k: int, sizes: Sequence[int]) -> list[int]:
    """Split ``k`` zeros over parts of ``sizes`` elements in proportion, by cumulative rounding.

    The parts add up to ``k`` exactly and part ``i`` never exceeds ``sizes[i]``.
    """
    total = int(sum(sizes))
    out, cum, given = [], 0, 0
    for n in sizes:
        cum += int(n)
        target = int(round(k * cum / total)) if total else 0
        q = max(0, min(int(n), target - given))
        out.append(q)
        given += q
    return out


def _smallest(scores: np.ndarray, q: int) -> np.ndarray:
    """Boolean mask of the ``q`` smallest entries of ``scores`` (ties: the earlier flat index first)."""
    mask = np.zeros(scores.size, dtype=bool)
    if q > 0:
        mask[np.argsort(scores.reshape(-1), kind="stable")[:q]] = True
    return mask.reshape(scores.shape)


# ---------------------------------------------------------------- inputs as columns
def _pads_for(auto_pad: str, size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (k - 1) * dilation + 1 - size)
    if auto_pad == "SAME_LOWER":
        return total - total // 2, total // 2
    return total // 2, total - total // 2


def conv_columns(x: np.ndarray, kernel: Sequence[int], *, strides=None, pads=None, dilations=None,
                 group: int = 1, auto_pad: str = "NOTSET") -> np.ndarray:
    """im2col of a 1-D or 2-D Conv input ``x`` (N, C, *spatial): (group, C/group * prod(kernel), P).

    The entries of a column follow the filter's (C/group, *kernel) C order, so a
    filter flattened to a row multiplies it directly.
    """
    x = np.asarray(x)
    nd = len(kernel)
    if nd == 1:
        x = x[:, :, None, :]
        kernel = (1, kernel[0])
        strides = (1, (strides or [1])[0])
        dilations = (1, (dilations or [1])[0])
        pads = (0, (pads or [0, 0])[0], 0, (pads or [0, 0])[1])
    elif nd != 2:
        raise ValueError("only 1-D and 2-D convolutions are reconstructed")
    n, c, h, w = x.shape
    kh, kw = (int(v) for v in kernel)
    sh, sw = (int(v) for v in (strides or (1, 1)))
    dh, dw = (int(v) for v in (dilations or (1, 1)))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        (pt, pb), (pl, pr) = _pads_for(auto_pad, h, kh, sh, dh), _pads_for(auto_pad, w, kw, sw, dw)
    elif auto_pad == "VALID":
        pt = pb = pl = pr = 0
    else:
        p = list(pads or (0, 0, 0, 0))
        pt, pl, pb, pr = p[0], p[1], p[2], p[3]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
    g = int(group)
    cols = cols.reshape(n, g, (c // g) * kh * kw, oh * ow).transpose(1, 2, 0, 3)
    return cols.reshape(g, (c // g) * kh * kw, n * oh * ow)


def matmul_columns(x: np.ndarray, d: int, *, transposed: bool = False) -> np.ndarray:
    """Columns (1, d, P) of a Gemm/MatMul activation (..., d) (``transposed``: Gemm transA, (d, P))."""
    x = np.asarray(x)
    if transposed:
        return x.reshape(d, -1)[None]
    return x.reshape(-1, d).T[None]


class HessianAccumulator:
    """``H = sum X X^T`` per group in float64 (only ``diag H`` when ``diagonal_only``)."""

    def __init__(self, groups: int, d: int, *, diagonal_only: bool = False) -> None:
        self.groups, self.d, self.diagonal_only = int(groups), int(d), diagonal_only
        shape = (self.groups, self.d) if diagonal_only else (self.groups, self.d, self.d)
        self.h = np.zeros(shape, dtype=np.float64)
        self.columns = 0

    def add(self, cols: np.ndarray) -> None:
        """Add columns of shape (groups, d, P), CHUNK_COLUMNS at a time."""
        p = cols.shape[2]
        for a in range(0, p, CHUNK_COLUMNS):
            if self.diagonal_only:
                x = np.asarray(cols[:, :, a:a + CHUNK_COLUMNS], dtype=np.float64)
                self.h += np.einsum("gdp,gdp->gd", x, x)
            else:  # each chunk's product in float32 (half the time of float64; SparseGPT's own H is float32),
                x = np.asarray(cols[:, :, a:a + CHUNK_COLUMNS], dtype=np.float32)  # summed in float64
                self.h += np.matmul(x, x.transpose(0, 2, 1))
        self.columns += p

    def diagonal(self) -> np.ndarray:
        return self.h if self.diagonal_only else np.einsum("gii->gi", self.h)

    @property
    def nbytes(self) -> int:
        return self.h.nbytes


# ---------------------------------------------------------------- Wanda
def wanda_mask(w: np.ndarray, col_sq_norms: np.ndarray, k: int) -> np.ndarray:
    """Which weights Wanda prunes: per row, the smallest ``|w| * ||x_j||``; ``k`` in all.

    ``w`` (rows, d); ``col_sq_norms`` (d,) or (rows, d): the squared input norms.
    Row quotas are ``k`` split by :func:`split_count` (each row loses the same share).
    """
    w = np.asarray(w, dtype=np.float64)
    score = np.abs(w) * np.sqrt(np.broadcast_to(np.asarray(col_sq_norms, dtype=np.float64), w.shape))
    score = np.where(w == 0, -1.0, score)  # weights already zero go first
    rows = w.shape[0]
    quotas = split_count(k, [w.shape[1]] * rows)
    order = np.argsort(score, axis=1, kind="stable")
    mask = np.zeros(w.shape, dtype=bool)
    for r, q in enumerate(quotas):
        mask[r, order[r, :q]] = True
    return mask


# ---------------------------------------------------------------- SparseGPT
def _inverse_cholesky(h: np.ndarray, percdamp: float) -> tuple[np.ndarray, np.ndarray]:
    """(U, H + damp I): U the upper Cholesky factor of (H + damp I)^-1 (U^T U = H^-1), dampening more
    if needed."""
    d = h.shape[0]
    mean_diag = float(np.mean(np.diag(h))) or 1.0
    damp = percdamp
    for _ in range(8):
        hd = h + np.eye(d) * (damp * mean_diag)
        try:
            np.linalg.cholesky(hd)  # raises when H + damp I is not positive definite
            hinv = np.linalg.inv(hd)  # one inversion: half the time of inverting the factor and multiplying
            return np.linalg.cholesky((hinv + hinv.T) / 2).T, hd
        except np.linalg.LinAlgError:
            damp *= 10
    raise np.linalg.LinAlgError("the layer's input correlation is not positive definite")


REFIT_FLOPS = 2e10  # the final refit runs when its solves cost at most this (rows x kept^3 / 3)


def refit(w0: np.ndarray, mask: np.ndarray, hd: np.ndarray) -> np.ndarray:
    """Each row's kept weights re-solved exactly for the final mask: min (w0 - w) H (w0 - w)^T with w = 0
    on the mask, i.e. H_kk w_k = (H w0)_k. SparseGPT's column-by-column updates approach this optimum;
    the refit reaches it (it never increases the layer's reconstruction error on the calibration data)."""
    out = np.zeros_like(w0)
    hw = w0 @ hd  # (rows, d): (H w0)^T per row (H symmetric)
    for r in range(w0.shape[0]):
        keep = ~mask[r]
        if keep.any():
            out[r, keep] = np.linalg.solve(hd[np.ix_(keep, keep)], hw[r, keep])
    return out


def sparsegpt(w: np.ndarray, h: np.ndarray, k: int, *, block: int = BLOCK,
              percdamp: float = PERCDAMP) -> tuple[np.ndarray, np.ndarray]:
    """SparseGPT on one (rows, d) weight with input correlation ``h`` (d, d): (new weight, pruned mask).

    Exactly ``k`` entries of the mask are True (``k`` at most the weight's size);
    the new weight is 0 there and float64.
    """
    w = np.array(w, dtype=np.float64, copy=True)
    rows, d = w.shape
    mask = np.zeros((rows, d), dtype=bool)
    if k <= 0 or w.size == 0:
        return w, mask
    h = np.array(h, dtype=np.float64, copy=True)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    u, hd = _inverse_cholesky(h, percdamp)
    w0 = w.copy()
    pruned = 0
    for i1 in range(0, d, block):
        i2 = min(i1 + block, d)
        count = i2 - i1
        w1 = w[:, i1:i2].copy()
        q1 = np.zeros_like(w1)
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        target = k if i2 == d else int(round(k * i2 / d))
        zeros = int(np.count_nonzero(w1 == 0))
        quota = max(zeros, min(rows * count, target - pruned))
        score = w1 ** 2 / np.diag(u1)[None, :] ** 2
        score[:, dead[i1:i2]] = -1.0  # an input that is always 0: its weights cost nothing
        score[w1 == 0] = -2.0
        m1 = _smallest(score, quota)
        pruned += quota
        for i in range(count):
            col = w1[:, i]
            dii = u1[i, i]
            q = np.where(m1[:, i], 0.0, col)
            q1[:, i] = q
            e = (col - q) / dii
            w1[:, i:] -= np.outer(e, u1[i, i:])
            err1[:, i] = e
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
        mask[:, i1:i2] = m1
    w[mask] = 0.0
    kept = rows * d - k
    if rows * (kept / max(1, rows)) ** 3 / 3 <= REFIT_FLOPS:
        w = refit(w0, mask, hd)
        w[mask] = 0.0
    return w, mask


def finish(w_new: np.ndarray, mask: np.ndarray, dtype) -> np.ndarray:
    """``w_new`` cast to ``dtype`` with exactly the masked entries zero (see the module doc)."""
    out = np.asarray(w_new, dtype=np.float64).astype(dtype)
    out[mask] = 0
    accidental = (out == 0) & ~mask
    if accidental.any():
        tiny = np.finfo(dtype).tiny
        sign = np.where(np.asarray(w_new)[accidental] < 0, -1.0, 1.0)
        out[accidental] = (sign * tiny).astype(dtype)
    return out


def quantize_back(w_new: np.ndarray, mask: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                  dtype) -> np.ndarray:
    """Quantize a reconstructed float weight with the file's ``scale``/``zero_point`` (broadcast to it).

    Masked entries get the zero point; an entry that is not masked but would round
    to the zero point gets the nearest other level (toward its sign), so the count of
    zero-point entries equals the mask's.
    """
    info = np.iinfo(dtype)
    zp = np.broadcast_to(np.asarray(zero_point, dtype=np.float64), w_new.shape)
    sc = np.broadcast_to(np.asarray(scale, dtype=np.float64), w_new.shape)
    q = np.clip(np.rint(w_new / sc) + zp, info.min, info.max)
    stuck = (q == zp) & ~mask
    step = np.where(w_new >= 0, 1.0, -1.0)
    bumped = zp + step
    bumped = np.where((bumped < info.min) | (bumped > info.max), zp - step, bumped)
    q = np.where(stuck, bumped, q)
    q = np.where(mask, zp, q)
    return q.astype(dtype)
