"""Automatic sparsity allocation: which sparsity each prunable layer gets.

Problem
-------
Given the prunable layers i (``n_i`` prunable params each), a **target
sparsity** T (share of ALL prunable params that are zero, overridden and
excluded layers included), a **balance** b in [0, 1] (0 = optimize for
performance, 1 = for recovery) and a per-layer cap ``max_sparsity``, choose
s_i in [0, cap] with sum(n_i * s_i) = T * sum(n_i) that minimizes::

    b * L(s) / L_scale  -  (1 - b) * P(s) / P_scale
    L(s) = sum_i loss_i(s_i)     (loss sensitivity: increase of the loss proxy)
    P(s) = sum_i save_i(s_i)     (perf sensitivity: ms saved; FLOPs saved without a perf profile)

``L_scale`` / ``P_scale`` are the totals at sparsity 0.99 (constants of the
model, the same for every balance).

Curves (:class:`Curves`, built once per graph + profiles)
----------------------------------------------------------
On the grid 0.00, 0.01, ..., 0.99, interpolated linearly between the
profile's levels (constant after the last one):

* ``save_i``: the perf profile's ``ms_by_level`` made non-increasing (running
  minimum), as ms saved against the layer's dense time. No perf profile:
  ``flops_i * s`` (labelled approximated; FLOPs unknown -> no saving).
  Engine-internal rows count in the baseline and never speed up.
* ``loss_i``: the loss profile's ``sensitivity_by_level`` made non-decreasing
  (running maximum), minus its value at 0. No loss profile: the weight
  magnitude proxy of a Gaussian weight tensor, ``g(s)`` = share of the squared
  norm removed by zeroing the fraction s of smallest |w| (the same curve for
  every layer, so larger layers are cheaper per param).

Algorithm
---------
1. For a balance b, each layer's cost ``b*loss/L_scale - (1-b)*save/P_scale``
   is convexified (lower convex hull of loss, upper concave hull of savings),
   so its marginal cost per param pruned is non-decreasing in s. Steps of
   0.01 (0.02 above 100 layers, 0.05 above 250: the bucket width; and one step
   0 -> min_sparsity when that filter is on) of every free
   layer are sorted by marginal cost per param and taken in that order until
   the target is met exactly (the last step is taken fractionally). This is
   the exact Lagrangian (greedy knapsack) optimum of the convexified problem;
   the cap is respected during allocation because no step goes past it.
2. Overrides are fixed first; excluded layers stay at 0; the free layers
   share what is left of the target. If the rest cannot be reached under the
   cap, every free layer gets the cap (achieved < target, reported).
3. The result is grouped into at most ``buckets`` sparsity values (rounded to
   0.05 then merged by least params-weighted variance; each bucket's value is
   the params-weighted mean of its members, so the achieved sparsity is kept),
   so the recipe has few ``!GMPruningModifier`` entries and the estimates
   describe exactly what will be trained.
4. Filters: a layer with 0 < s < ``min_sparsity`` ("filtered: below minimum
   sparsity"), a speedup factor below ``min_speedup`` or a recovery below
   ``min_recovery`` is set to 0 with its reason, and the remaining free layers
   are re-allocated (repeated until nothing more is filtered). To need few
   rounds, the minimum sparsity and the minimum speedup are also entry points
   of the allocation (a layer gets 0 or at least the sparsity where it meets
   them, that first stretch priced at its average marginal cost), layers that
   cannot meet a filter anywhere under the cap are filtered up front, and a
   layer that meets a filter with its own value but not with its bucket's
   keeps its own value.
5. Monotone balance: steps 1-4 are run for the 21 candidate balances 0, 0.05,
   ..., 1 (11 candidates 0, 0.1, ..., 1 above 200 prunable layers or when a
   filter is on, which re-allocates several times: this keeps an edit of a
   500-layer model within the 50 ms budget). The plan returned for balance b is the candidate minimizing
   ``b*L/L_scale - (1-b)*P/P_scale`` evaluated on the raw (not convexified)
   curves, ties broken toward performance at b=0 and recovery at b=1. Since
   this is an exact minimization over one fixed set of plans, the standard
   exchange argument proves: lowering b never lowers P (so never lowers the
   estimated speedup) and raising b never raises L (the total loss
   sensitivity). Every candidate meets the target, overrides, exclusions and
   filters, so the selected plan does too.

Public API::

    curves = Curves(graph, perf=None, loss=None)
    plan = allocate_plan(curves, opt)          # -> Allocation (sparsity per layer by position, reasons)
    new_opt = allocate(graph, opt, perf, loss)  # opt copy with .layers filled
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

from sparsify_tui.optim.optimization import (
    REASON_DISABLED,
    REASON_HEAD,
    REASON_MIN_RECOVERY,
    REASON_MIN_SPARSITY,
    REASON_MIN_SPEEDUP,
    REASON_NO_PARAMS,
    REASON_NOT_PRUNABLE,
    REASON_STEM,
    REASON_TINY,
    REASON_USER,
    LayerResult,
    Optimization,
)

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph

ALLOCATION_HELP = """\
Automatic sparsity allocation
  Target sparsity: the share of all prunable weights (Conv, Gemm, MatMul) set to zero,
  overridden and excluded layers included. Achieved sparsity is shown next to it; it
  differs only when the per-layer cap, exclusions, overrides or filters make the target
  unreachable.
  Balance: 0 optimizes for performance (prune where the perf profile saves the most time
  per weight removed), 1 for recovery (prune where the loss profile says the model cares
  least). Moving it toward performance never lowers the estimated speedup; toward
  recovery never raises the total loss sensitivity.
  Max sparsity: the per-layer cap (0.95 by default), respected while allocating.
  Filters (0 = off): every pruned layer ends at or above the minimum sparsity, at or above
  the minimum speedup factor and at or above the minimum recovery; a layer that cannot is
  left dense with the reason shown, and the other layers take over its share of the target.
  Protect edges (on by default): the stem (a layer reading the model input through
  only casts, transposes, reshapes or normalisation), the output heads (the last
  prunable layers before a model output) and tiny layers (fewer weights than the tiny
  size, 1024 by default) are left dense with the reason shown: pruning them saves
  next to nothing and can wreck every output. A stem or head holding more than a
  quarter of the prunable weights is planned, and so are the small layers when
  together they hold more than a tenth of them (a model made of small layers). Turn the filter off
  to plan them like the others. Overrides fix a layer's sparsity (an override beats
  the filter); exclusions leave it dense. Grouped and depthwise convolutions are
  otherwise allocated like the others.
  Buckets: the plan is grouped into at most this many sparsity values (one recipe
  modifier each; 0 = every layer keeps its own value). Raising the target only adds
  sparsity to each layer, so with Buckets 0 no estimate falls; with buckets the
  regrouping can lower one, and the estimates panel says so.
  Without a perf profile times come from FLOPs; without a loss profile sensitivity
  comes from weight magnitudes: both are labelled approximated.
"""

GRID_N = 100
GRID = np.arange(GRID_N, dtype=np.float64) / 100.0  # 0.00 .. 0.99
TOP = GRID_N - 1  # index of 0.99
EVAL_INDEX = 90  # sensitivity at 0.9 ranks the layers


def step_grid(m: int) -> np.ndarray:
    """Allocation steps: 0.01 for up to 100 prunable layers, 0.02 up to 250, else 0.05 (the bucket width)."""
    step = 0.01 if m <= 100 else 0.02 if m <= 250 else 0.05
    return np.round(np.arange(0.0, 1.0, step), 2)

CANDIDATE_BALANCES = tuple(round(i / 20, 2) for i in range(21))
CANDIDATE_BALANCES_COARSE = tuple(round(i / 10, 1) for i in range(11))  # large models, or filters on
BUCKET_STEP = 0.05
MAX_FILTER_ROUNDS = 30
_EPS_B = 1e-6


def _gaussian_proxy() -> np.ndarray:
    """Share of a Gaussian tensor's squared norm held by its smallest-|w| fraction s, on GRID."""
    nd = NormalDist()
    out = np.zeros(GRID_N)
    for k, s in enumerate(GRID):
        if s <= 0:
            continue
        q = nd.inv_cdf((1.0 + s) / 2.0)
        out[k] = s - 2.0 * q * nd.pdf(q)
    out = np.maximum.accumulate(np.clip(out, 0.0, 1.0))
    return out


GAUSSIAN_PROXY = _gaussian_proxy()


# ---------------------------------------------------------------- stem and output heads
# ops a stem may read the model input through: casts, layout changes and normalisation (every other
# operand a constant or itself derived from the input the same way)
STEM_PASS_OPS = frozenset({
    "Cast", "CastLike", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Pad",
    "Resize", "Upsample", "Slice", "Concat", "Clip", "Add", "Sub", "Mul", "Div", "Sqrt", "Pow",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "MeanVarianceNormalization", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
})
# ops whose output is not the data: a path through them neither makes a stem nor a head
_SHAPE_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "NonZero"})
# elementwise / normalisation ops that may carry constants (a bias, a scale) and still pass toward an output
_HEAD_PASS_WITH_PARAMS = STEM_PASS_OPS | {"PRelu", "Where", "Expand", "Tile", "Min", "Max", "Mod"}


# a stem or head holding more than this share of the prunable weights is planned like the others: held back,
# it would leave the target to too few weights (an OCR model's classifier can hold 90% of them)
EDGE_MAX_SHARE = 0.25
# when the layers under the tiny size hold more than this share of the prunable weights together, the model
# is made of small layers and none of them is protected as tiny (the target would be left to too few weights)
TINY_MAX_TOTAL = 0.1


def edge_roles(graph: "ModelGraph") -> dict[str, str]:
    """{layer id: "stem" | "head"} of the prunable layers at the model's edges (main graph only).

    A **stem** reads a graph input directly or through only :data:`STEM_PASS_OPS` (each of their
    other operands constant or derived from an input the same way). A **head** is a prunable layer
    whose output reaches a graph output without passing another prunable layer, a weighted
    non-prunable op (an embedding Gather, an LSTM) or a shape computation, and on which no other
    weighted layer depends (so the blocks of a residual stream, which reach the output through its
    Adds, are not heads). A layer that is both is reported as the stem.
    """
    main = [lay for lay in graph.layers if not lay.graph_path]
    producer: dict[str, Any] = {}
    consumers: dict[str, list[Any]] = {}
    for lay in main:
        for t in lay.outputs:
            if t:
                producer[t] = lay
        for t in lay.inputs:
            if t:
                consumers.setdefault(t, []).append(lay)
    inputs = {t.name for t in graph.inputs}

    def const(t: str) -> bool:
        if t in inputs:
            return False
        lay = producer.get(t)
        return lay is None or bool(lay.constant)

    def weights(lay: Any) -> set[str]:
        return {t for t in (lay.weight_name, lay.bias_name, lay.weight.name if lay.weight else None) if t}

    roles: dict[str, str] = {}
    reached = set(inputs)
    todo = list(inputs)
    while todo:
        t = todo.pop()
        for lay in consumers.get(t, []):
            if lay.constant or t in weights(lay):
                continue
            if lay.prunable:
                roles.setdefault(lay.id, "stem")
            elif lay.op_type in STEM_PASS_OPS and all(
                    not x or x in reached or const(x) for x in lay.inputs):
                for o in lay.outputs:
                    if o and o not in reached:
                        reached.add(o)
                        todo.append(o)
    # feeds_weighted[id]: another prunable (or weighted) layer depends on this layer's data. A residual
    # stream reaches the output through Adds from every block: its blocks are not heads, only the last
    # weighted layers are (layers are in execution order, so one reverse pass decides every layer)
    feeds_weighted: dict[str, bool] = {}
    for lay in sorted(main, key=lambda x: x.depth, reverse=True):
        hit = False
        for t in lay.outputs:
            for nxt in consumers.get(t, []):
                if nxt.op_type in _SHAPE_OPS or nxt.constant:
                    continue
                if (nxt.prunable or feeds_weighted.get(nxt.id)
                        or (nxt.params and nxt.op_type not in _HEAD_PASS_WITH_PARAMS)):
                    hit = True
                    break
            if hit:
                break
        feeds_weighted[lay.id] = hit
    seen: set[str] = set()
    todo = [t.name for t in graph.outputs]
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        lay = producer.get(t)
        if lay is None or lay.constant:
            continue
        if lay.prunable:
            if not feeds_weighted.get(lay.id):
                roles.setdefault(lay.id, "head")
            continue
        if lay.op_type in _SHAPE_OPS or (lay.params and lay.op_type not in _HEAD_PASS_WITH_PARAMS):
            continue
        todo.extend(x for x in lay.inputs if x and not const(x))
    return roles


def _levels(by_level: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if not isinstance(by_level, dict) or not by_level:
        return None
    pts = []
    for k, v in by_level.items():
        try:
            x, y = float(k), float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x) and math.isfinite(y) and 0.0 <= x <= 1.0:
            pts.append((x, y))
    if not pts:
        return None
    pts.sort()
    xs = np.array([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    return xs, ys


def _lower_hull_on_grid(y: np.ndarray) -> np.ndarray:
    """Greatest convex minorant of the piecewise-linear curve (GRID, y), evaluated on GRID.

    The hull of a piecewise-linear curve is the hull of its vertices, so only the kinks
    (non-zero second differences) and the end points enter the monotone-chain scan.
    """
    d2 = np.diff(y, 2)
    tol = 1e-12 * (1.0 + float(np.abs(y).max()))
    if d2.size == 0 or bool(np.all(d2 >= -tol)):
        return y.copy()
    idx = [0] + (np.nonzero(np.abs(d2) > tol)[0] + 1).tolist() + [len(y) - 1]
    xs = GRID[idx].tolist()
    ys = y[idx].tolist()
    hx: list[float] = []
    hy: list[float] = []
    for xk, yk in zip(xs, ys):
        while len(hx) >= 2:
            # drop the last point if it lies on or above the chord from the one before it to this one
            if (hy[-1] - hy[-2]) * (xk - hx[-2]) >= (yk - hy[-2]) * (hx[-1] - hx[-2]):
                hx.pop()
                hy.pop()
            else:
                break
        hx.append(xk)
        hy.append(yk)
    return np.interp(GRID, hx, hy)


def _perf_rows(perf: dict) -> tuple[dict[str, tuple[float, Any]], float]:
    """The perf profile's rows by layer id as (dense ms, levels), and the sum of every row's dense ms
    (engine-internal rows count in that sum but get no entry)."""
    rows = {}
    layer_total0 = 0.0
    for r in perf["layers"]:
        if not isinstance(r, dict):
            continue
        lv = _levels(r.get("ms_by_level"))
        b0 = r.get("baseline_ms")
        if lv is not None and lv[0][0] == 0.0:
            r0 = float(lv[1][0])
        elif isinstance(b0, (int, float)) and math.isfinite(b0):
            r0 = float(b0)
        else:
            r0 = 0.0
        layer_total0 += max(r0, 0.0)
        if not r.get("engine_internal") and r.get("id") is not None:
            rows[str(r["id"])] = (r0, lv)
    return rows, layer_total0


def _perf_baseline(perf: dict, layer_total0: float, notes: list[str]) -> float:
    """The model's time in ms: the engine as deployed if measured, else the profile's baseline, else the
    sum of the layers' times; notes the profile's warnings."""
    base = perf.get("baseline_ms")
    quality = perf.get("quality") if isinstance(perf.get("quality"), dict) else {}
    deployed = quality.get("deployed_ms")
    if isinstance(deployed, (int, float)) and math.isfinite(deployed) and deployed > 0:
        # the engine as deployed sets the scale; the instrumented run only the layers' shares
        if isinstance(base, (int, float)) and base > 0 and abs(base / deployed - 1) > 0.05:
            notes.append(f"times are scaled to the model's time in the engine as deployed ({deployed:.3f} ms; "
                         f"the instrumented run measured {float(base):.3f} ms)")
        base = deployed
    for w in quality.get("warnings") or []:
        if isinstance(w, str):
            notes.append(f"the estimate rests on a perf profile with a warning: {w}")
    return float(base) if isinstance(base, (int, float)) and math.isfinite(base) and base > 0 else layer_total0


def _measured_savings(perf: dict, ids: list[str],
                      notes: list[str]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(t0, save, baseline, time_scale) of the layers ``ids`` from a perf profile's ``ms_by_level``."""
    m = len(ids)
    save = np.zeros((m, GRID_N))
    t0 = np.zeros(m)
    rows, layer_total0 = _perf_rows(perf)
    missing = 0
    top_level = 0.0
    for i, lid in enumerate(ids):
        if lid not in rows:
            missing += 1
            continue
        r0, lv = rows[lid]
        t0[i] = max(r0, 0.0)
        if lv is None:
            continue
        xs, ys = lv
        top_level = max(top_level, float(xs[-1]))
        if xs[0] > 0.0:
            xs = np.concatenate([[0.0], xs])
            ys = np.concatenate([[r0], ys])
        ys = np.minimum.accumulate(np.minimum(ys, t0[i]))
        t = np.interp(GRID, xs, ys)
        save[i] = np.clip(t0[i] - t, 0.0, t0[i])
    baseline = _perf_baseline(perf, layer_total0, notes)
    time_scale = baseline / layer_total0 if layer_total0 > 0 else 1.0
    if missing:
        notes.append(f"{missing} prunable layer(s) have no row in the perf profile: no speedup is estimated for them")
    if 0.0 < top_level < 0.9:
        notes.append(f"the perf profile stops at sparsity {top_level:g}: savings above it are held at that level's")
    return t0, save, baseline, time_scale


def _flops_savings(graph: "ModelGraph", flops: np.ndarray, fl_known: np.ndarray,
                   notes: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """(t0, save, baseline) in FLOPs, for a model without a perf profile."""
    t0 = flops.copy()
    save = flops[:, None] * GRID[None, :]
    baseline = float(graph.flops if graph.flops is not None else graph.flops_known or 0)
    notes.append("no perf profile: speedup approximated from FLOPs")
    if (~fl_known).any():
        notes.append(f"{int((~fl_known).sum())} prunable layer(s) have unknown FLOPs: no speedup is estimated for them")
    return t0, save, baseline


def _loss_curves(loss: dict | None, ids: list[str], notes: list[str]) -> tuple[np.ndarray, str]:
    """(loss curves on GRID, loss basis) of the layers ``ids``: the loss profile's ``sensitivity_by_level``,
    the Gaussian weight proxy (scaled to the profiled layers) where it has none."""
    m = len(ids)
    lossm = np.zeros((m, GRID_N))
    if not (loss and isinstance(loss.get("layers"), list)):
        lossm[:] = GAUSSIAN_PROXY[None, :]
        notes.append("no loss profile: loss sensitivity approximated by the Gaussian weight-magnitude proxy")
        return lossm, "gaussian"
    rows = {str(r.get("id")): r for r in loss["layers"] if isinstance(r, dict)}
    have = np.zeros(m, dtype=bool)
    for i, lid in enumerate(ids):
        r = rows.get(lid)
        lv = _levels(r.get("sensitivity_by_level")) if r else None
        if lv is None:
            continue
        xs, ys = lv
        ys = np.maximum.accumulate(ys)
        if xs[0] > 0.0:
            xs = np.concatenate([[0.0], xs])
            ys = np.concatenate([[min(0.0, ys[0])], ys])
        c = np.interp(GRID, xs, ys)
        lossm[i] = np.maximum(c - c[0], 0.0)
        have[i] = True
    method = str(loss.get("method", ""))
    loss_basis = "approx" if (loss.get("approximated") or method.startswith("approx")) else "measured"
    if (~have).any():
        ref = lossm[have, EVAL_INDEX] / max(GAUSSIAN_PROXY[EVAL_INDEX], 1e-12) if have.any() else np.array([1.0])
        scale = float(np.median(ref)) if ref.size else 1.0
        lossm[~have] = GAUSSIAN_PROXY[None, :] * (scale if scale > 0 else 1.0)
        notes.append(f"{int((~have).sum())} prunable layer(s) have no loss curve: the Gaussian weight proxy is used")
    return lossm, loss_basis


@dataclass
class Curves:
    """Per-layer loss and savings curves of a model's prunable layers, on GRID (built once)."""

    ids: list[str]
    names: list[str]
    n: np.ndarray  # prunable params per layer (float)
    flops: np.ndarray  # FLOPs per layer (0 when unknown)
    flops_known: np.ndarray  # bool
    t0: np.ndarray  # layer time at sparsity 0 (ms or FLOPs)
    loss: np.ndarray  # (m, GRID_N) raw, non-decreasing, 0 at 0
    save: np.ndarray  # (m, GRID_N) raw, non-decreasing, 0 at 0, <= t0
    loss_hull: np.ndarray
    save_hull: np.ndarray
    L_scale: float
    P_scale: float
    time_unit: str  # "ms" or "flops"
    baseline: float  # model baseline in time_unit (0 when unknown)
    time_scale: float  # model ms per summed-layer ms (baseline / sum of layer times)
    perf_basis: str  # "measured" | "approximated" | "flops"
    loss_basis: str  # "measured" | "approx" | "gaussian"
    notes: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    all_ids: set[str] = field(default_factory=set)
    roles: dict[int, str] = field(default_factory=dict)  # layer index -> "stem" | "head" (edge_roles)

    # ------------------------------------------------------------ building
    @classmethod
    def build(cls, graph: "ModelGraph", perf: dict | None = None, loss: dict | None = None) -> "Curves":
        layers = [lay for lay in graph.layers if lay.prunable]
        ids = [lay.id for lay in layers]
        names = [lay.name or lay.id for lay in layers]
        n = np.array([float(lay.prunable_params or 0) for lay in layers], dtype=np.float64)
        fl_known = np.array([lay.flops is not None for lay in layers], dtype=bool)
        flops = np.array([float(lay.flops or 0) for lay in layers], dtype=np.float64)
        notes: list[str] = []
        if perf and isinstance(perf.get("layers"), list):
            t0, save, baseline, time_scale = _measured_savings(perf, ids, notes)
            time_unit = "ms"
            perf_basis = "approximated" if perf.get("approximated") else "measured"
        else:
            t0, save, baseline = _flops_savings(graph, flops, fl_known, notes)
            time_scale = 1.0
            time_unit = "flops"
            perf_basis = "flops"
        lossm, loss_basis = _loss_curves(loss, ids, notes)
        c = cls.from_rows(ids, names, n, flops, fl_known, t0, lossm, save, time_unit=time_unit, baseline=baseline,
                          time_scale=time_scale, perf_basis=perf_basis, loss_basis=loss_basis, notes=notes,
                          all_ids={lay.id for lay in graph.layers})
        c.roles = {c.index[lid]: role for lid, role in edge_roles(graph).items() if lid in c.index}
        return c

    @classmethod
    def from_rows(cls, ids: list[str], names: list[str], n: np.ndarray, flops: np.ndarray, flops_known: np.ndarray,
                  t0: np.ndarray, lossm: np.ndarray, save: np.ndarray, *, time_unit: str, baseline: float,
                  time_scale: float, perf_basis: str, loss_basis: str, notes: list[str],
                  all_ids: set[str]) -> "Curves":
        """Curves of rows already on GRID (the layers of :meth:`build`, or the channel groups of
        :mod:`sparsify_tui.optim.channel_plan`): the hulls and scales computed here."""
        m = len(ids)
        loss_hull = np.array([_lower_hull_on_grid(row) for row in lossm]) if m else lossm.copy()
        save_hull = -np.array([_lower_hull_on_grid(-row) for row in save]) if m else save.copy()
        L_scale = float(lossm[:, TOP].sum()) if m else 0.0
        P_scale = float(save[:, TOP].sum()) if m else 0.0
        c = cls(
            ids=ids, names=names, n=n, flops=flops, flops_known=flops_known, t0=t0, loss=lossm, save=save,
            loss_hull=loss_hull, save_hull=save_hull,
            L_scale=L_scale if L_scale > 0 else 1.0, P_scale=P_scale if P_scale > 0 else 1.0,
            time_unit=time_unit, baseline=baseline, time_scale=time_scale,
            perf_basis=perf_basis, loss_basis=loss_basis, notes=notes,
        )
        c.index = {lid: i for i, lid in enumerate(ids)}
        c.all_ids = set(all_ids)
        return c

    # ------------------------------------------------------------ evaluation on the raw curves
    @staticmethod
    def _at(M: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Row-wise linear interpolation of M (m, GRID_N) at s (m,); linear extrapolation above 0.99."""
        x = np.clip(s, 0.0, 1.0) * 100.0
        i = np.clip(np.floor(x).astype(np.int64), 0, GRID_N - 2)
        f = x - i
        r = np.arange(M.shape[0])
        return M[r, i] + f * (M[r, i + 1] - M[r, i])

    @staticmethod
    def _at_rows(M: np.ndarray, rows: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Like :meth:`_at` for the given rows of M only (no copy of the rows)."""
        x = np.minimum(np.maximum(s, 0.0), 1.0) * 100.0
        i = np.minimum(x.astype(np.int64), GRID_N - 2)
        f = x - i
        a = M[rows, i]
        return a + f * (M[rows, i + 1] - a)

    def loss_at(self, s: np.ndarray) -> np.ndarray:
        return np.maximum(self._at(self.loss, s), 0.0)

    def save_at(self, s: np.ndarray) -> np.ndarray:
        return np.clip(self._at(self.save, s), 0.0, self.t0)

    def totals(self, s: np.ndarray) -> tuple[float, float]:
        """(L, P): total loss sensitivity and total savings (time units, before time_scale) at s."""
        if not len(s):
            return 0.0, 0.0
        return float(self.loss_at(s).sum()), float(self.save_at(s).sum())


@dataclass
class Allocation:
    """An allocation: a sparsity for every prunable layer (by position in ``Curves.ids``), and reasons for the
    ones left dense; :func:`apply_plan` turns it into the optimization's :class:`~sparsify_tui.optim.plan.Plan`."""

    sparsity: np.ndarray  # (m,)
    reasons: dict[int, str]
    overridden: set[int]
    achieved: float
    reachable: bool
    balance: float  # the candidate balance this plan was computed for
    L: float = 0.0
    P: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)  # non-prunable layer ids named by the user -> reason


def _bucketize(s: np.ndarray, w: np.ndarray, k: int, cap: float, violates: Any = None) -> np.ndarray:
    """Group values (all > 0) into at most k buckets; each value becomes its bucket's weighted mean.

    Values are first grouped by rounding to 0.05; while there are more than k groups, the two
    adjacent groups whose merge adds the least params-weighted variance are merged. A bucket's
    value is the params-weighted mean of its members (so the zeroed params are unchanged and the
    value lies between its members' values), rounded to 6 decimals.
    """
    if k <= 0 or s.size == 0:
        return np.minimum(np.round(s, 6), cap)
    key = np.rint(s / BUCKET_STEP).astype(np.int64)
    nk = int(key.max()) + 1
    cnt = np.bincount(key, minlength=nk)
    W = np.bincount(key, weights=w, minlength=nk)
    S = np.bincount(key, weights=w * s, minlength=nk)
    uk = np.nonzero(cnt)[0].tolist()
    groups = [[float(W[g]), float(S[g]), [g]] for g in uk]
    while len(groups) > k:
        best, bj = None, 0
        for j in range(len(groups) - 1):
            wa, sa, _ = groups[j]
            wb, sb, _ = groups[j + 1]
            cost = 0.0 if wa <= 0 or wb <= 0 else wa * wb / (wa + wb) * (sa / wa - sb / wb) ** 2
            if best is None or cost < best:
                best, bj = cost, j
        a, b = groups[bj], groups[bj + 1]
        groups[bj] = [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
        del groups[bj + 1]
    val = np.zeros(nk)
    own = np.zeros(nk, dtype=bool)
    for wg, sg, members in groups:
        for g in members:
            if wg > 0:
                val[g] = sg / wg
            else:
                own[g] = True
    out = val[key]
    keep = own[key] | (w <= 0)  # zero-weight layers keep their own value
    out[keep] = s[keep]
    if violates is not None:
        # a layer that met a filter with its own value but not with its bucket's keeps its own value;
        # its bucket's mean is recomputed without it (each bucket keeps its zeroed params)
        gid = np.zeros(nk, dtype=np.int64)
        for gi, (_, _, members) in enumerate(groups):
            gid[members] = gi
        g_of = gid[key]
        fine_alone = ~violates(s)
        for _ in range(3):
            cand = ~keep & fine_alone
            if not cand.any():
                break
            bad = cand & violates(out)
            if not bad.any():
                break
            keep |= bad
            rest = ~keep
            Wg = np.bincount(g_of[rest], weights=w[rest], minlength=len(groups))
            Sg = np.bincount(g_of[rest], weights=(w * s)[rest], minlength=len(groups))
            gv = np.where(Wg > 0, Sg / np.where(Wg > 0, Wg, 1.0), 0.0)
            out = np.where(keep, s, gv[g_of])
    return np.minimum(np.round(out, 6), cap)


class _FreeSet:
    """The arrays of one set of free layers, shared by the candidates that allocate over it."""

    def __init__(self, alloc: "_Allocator", free: np.ndarray) -> None:
        c = alloc.c
        self.free = free
        self.n = c.n[free]
        self.A = alloc.A[free]
        self.B = alloc.B[free]
        self.W = (self.n[:, None] * alloc.dpts[None, :]).ravel()
        self.total = float(self.n.sum()) * (alloc.pts[-1] if len(alloc.pts) else 0.0)


class _Allocator:
    """Allocation for one set of settings (everything but the balance); caches the candidate plans."""

    def __init__(self, curves: Curves, opt: Optimization) -> None:
        c = self.c = curves
        p = opt.pruning
        m = len(c.ids)
        self.enabled = bool(p.enabled)
        self.cap = float(p.max_sparsity)
        self.min_s = float(p.min_sparsity)
        self.min_speedup = float(p.min_speedup)
        self.min_recovery = float(p.min_recovery)
        self.buckets = int(p.buckets)
        self.target = float(p.target_sparsity)
        self.N = float(c.n.sum())
        self.fixed = np.zeros(m)
        self.reasons: dict[int, str] = {}
        self.overridden: set[int] = set()
        self.extra: dict[str, str] = {}
        self._apply_user_choices(p)
        for i in range(m):
            if c.n[i] <= 0 and i not in self.reasons and i not in self.overridden:
                self.reasons[i] = REASON_NO_PARAMS
        if p.protect_edges:
            self._apply_edge_filter(int(p.tiny_params))
        if not self.enabled:
            for i in range(m):
                if i not in self.overridden:
                    self.reasons.setdefault(i, REASON_DISABLED)
        self.free0 = np.array([i for i in range(m) if i not in self.reasons and i not in self.overridden],
                              dtype=np.int64)
        self.pts = self._points(m)
        self.dpts = np.diff(self.pts)
        self.A, self.B = self._marginal_costs()
        self.cache: dict[float, Allocation] = {}
        self._free_cache: dict[bytes, _FreeSet] = {}
        self._point_filters = self.min_speedup > 1.0 or self.min_recovery > 0
        self._over_idx = np.fromiter(self.overridden, dtype=np.int64, count=len(self.overridden))
        self._filter_hopeless()

    def _apply_user_choices(self, p: Any) -> None:
        """The user's exclusions (with their reasons) and overrides (fixed sparsities); ids that are no
        prunable layer of the model go to ``extra``. An exclusion wins over an override."""
        c = self.c
        for lid, reason in p.exclusions.items():
            i = c.index.get(lid)
            if i is None:
                self.extra[lid] = REASON_NOT_PRUNABLE if lid in c.all_ids else "not in the model"
                continue
            self.reasons[i] = reason or REASON_USER
        for lid, s in p.overrides.items():
            i = c.index.get(lid)
            if i is None:
                self.extra[lid] = REASON_NOT_PRUNABLE if lid in c.all_ids else "not in the model"
                continue
            if i in self.reasons:
                continue  # excluded wins (validate() forbids both)
            self.fixed[i] = float(s)
            self.overridden.add(i)

    def _apply_edge_filter(self, tiny: int) -> None:
        """The edge filter: stem, output heads, tiny layers stay dense (an override wins)."""
        c = self.c
        m = len(c.ids)
        small = c.n < tiny if tiny > 0 else np.zeros(m, dtype=bool)
        if float(c.n[small].sum()) > TINY_MAX_TOTAL * self.N:
            small[:] = False  # a model made of small layers: none of them is "tiny" for it
        for i in range(m):
            if i in self.reasons or i in self.overridden:
                continue
            role = c.roles.get(i)
            if role is not None and c.n[i] <= EDGE_MAX_SHARE * self.N:
                self.reasons[i] = REASON_STEM if role == "stem" else REASON_HEAD
            elif small[i]:
                self.reasons[i] = REASON_TINY.format(int(c.n[i]), tiny)

    def _points(self, m: int) -> np.ndarray:
        """The sparsity points a free layer may take: 0, then min_sparsity (if on), the grid, the cap."""
        pts = [0.0]
        if self.min_s > 0:
            pts.append(self.min_s)
        pts += [float(g) for g in step_grid(m)[1:] if g > max(self.min_s, 0.0) + 1e-12 and g < self.cap - 1e-12]
        if self.cap > pts[-1] + 1e-12:
            pts.append(self.cap)
        return np.array(pts)

    def _marginal_costs(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, B): marginal loss and (minus) savings per param of each step between the points, both
        non-decreasing along a row (hulls are convex / concave); b*A + (1-b)*B is then non-decreasing
        too, even in floating point."""
        c = self.c
        m = len(c.ids)
        Lh = self._cols(c.loss_hull, self.pts)
        Ph = self._cols(c.save_hull, self.pts)
        with np.errstate(divide="ignore", invalid="ignore"):
            W = np.maximum(c.n, 1e-300)[:, None] * self.dpts[None, :] if len(self.dpts) else np.zeros((m, 0))
            A = np.diff(Lh, axis=1) / c.L_scale / W if m and W.size else W
            B = -np.diff(Ph, axis=1) / c.P_scale / W if m and W.size else W
            if self.min_speedup > 1.0 and m and W.size:
                self._merge_steps_to_min_speedup(A, B, Lh, Ph)
            return (np.maximum.accumulate(A, axis=1) if m and W.size else W,
                    np.maximum.accumulate(B, axis=1) if m and W.size else W)

    def _merge_steps_to_min_speedup(self, A: np.ndarray, B: np.ndarray, Lh: np.ndarray, Ph: np.ndarray) -> None:
        """Min speedup as a per-layer lower bound (in place on A, B): a layer takes 0 or at least the first
        point where its speedup factor reaches the minimum; the steps up to that point act as one step (their
        chord: the row's marginal costs stay non-decreasing because the hulls are convex / concave)."""
        c = self.c
        t0 = c.t0[:, None]
        sv = np.minimum(np.maximum(self._cols(c.save, self.pts), 0.0), t0)
        rem = t0 - sv
        fac = np.where(t0 > 0, t0 / np.where(rem > 0, rem, 1e-300), 1.0)
        ok = fac >= self.min_speedup
        ok[:, 0] = False
        first = np.where(ok.any(axis=1), ok.argmax(axis=1), 0)
        for i in np.nonzero(first > 1)[0].tolist():
            j = int(first[i])
            A[i, :j] = (Lh[i, j] - Lh[i, 0]) / c.L_scale / (c.n[i] * self.pts[j])
            B[i, :j] = -(Ph[i, j] - Ph[i, 0]) / c.P_scale / (c.n[i] * self.pts[j])

    def _filter_hopeless(self) -> None:
        """Layers that cannot pass a filter at any sparsity they may take are filtered up front (the
        result is the same as filtering them after a first allocation, in fewer rounds)."""
        c = self.c
        if not (len(self.free0) and len(self.pts) > 1):
            return
        hopeless: dict[int, str] = {}
        if self.min_speedup > 1.0:
            top = np.full(len(self.free0), self.pts[-1])
            t0 = c.t0[self.free0]
            sv = np.clip(Curves._at(c.save[self.free0], top), 0.0, t0)
            with np.errstate(divide="ignore", invalid="ignore"):
                fac = np.where(t0 > 0, t0 / np.maximum(t0 - sv, 1e-300), 1.0)
            for k in np.nonzero(fac < self.min_speedup)[0]:
                hopeless[int(self.free0[k])] = REASON_MIN_SPEEDUP.format(self.min_speedup)
        if self.min_recovery > 0:
            low = np.full(len(self.free0), self.pts[1])
            rec = layer_recovery(c, self.free0, low)
            for k in np.nonzero(rec < self.min_recovery)[0]:
                hopeless.setdefault(int(self.free0[k]), REASON_MIN_RECOVERY.format(self.min_recovery))
        if hopeless:
            self.reasons.update(hopeless)
            self.free0 = np.array([i for i in self.free0.tolist() if i not in hopeless], dtype=np.int64)

    @staticmethod
    def _cols(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
        x = pts * 100.0
        i = np.clip(np.floor(x).astype(np.int64), 0, GRID_N - 2)
        f = x - i
        return M[:, i] + f[None, :] * (M[:, i + 1] - M[:, i])

    # ------------------------------------------------------------ one greedy solve
    def _freeset(self, free: np.ndarray) -> _FreeSet:
        key = free.tobytes()
        fs = self._free_cache.get(key)
        if fs is None:
            fs = self._free_cache[key] = _FreeSet(self, free)
        return fs

    def _greedy(self, b: float, fs: _FreeSet, R: float) -> np.ndarray:
        """Sparsities of the free layers that zero R params at the least convexified cost.

        The steps of every free layer are taken in order of marginal cost per param (ties in
        row-major order: layer, then step) until R params are zeroed, the last step fractionally.
        """
        pts = self.pts
        f = len(fs.free)
        out = np.zeros(f)
        if f == 0 or R <= 0 or len(self.dpts) == 0:
            return out
        n = fs.n
        if R >= fs.total * (1 - 1e-12):
            out[:] = pts[-1]
            return out
        S = b * fs.A + (1.0 - b) * fs.B
        Sf = S.ravel()
        order = np.argsort(Sf)
        cw = np.cumsum(fs.W[order])
        p = min(int(np.searchsorted(cw, R, side="left")), len(order) - 1)
        mu = Sf[order[p]]
        c_lt = np.count_nonzero(S < mu, axis=1)
        c_le = np.count_nonzero(S <= mu, axis=1)
        out = pts[c_lt]
        rem = R - float(n @ out)
        tr = np.nonzero(c_le > c_lt)[0]
        if len(tr) and rem > 0:
            T = n[tr] * (pts[c_le[tr]] - pts[c_lt[tr]])
            cT = np.cumsum(T)
            q = int(np.searchsorted(cT, rem, side="left"))
            out[tr[:q]] = pts[c_le[tr[:q]]]
            if q < len(tr):
                before = float(cT[q - 1]) if q > 0 else 0.0
                i = tr[q]
                out[i] = min(pts[c_lt[i]] + max(rem - before, 0.0) / n[i], pts[c_le[i]])
        return out

    # ------------------------------------------------------------ one candidate with filters
    def _plan(self, b: float) -> Allocation:
        c = self.c
        reasons = dict(self.reasons)
        free = self.free0.copy()
        s = self.fixed.copy()
        fixed_params = float((c.n * self.fixed).sum())
        X = self.target * self.N
        reachable = True
        for _round in range(MAX_FILTER_ROUNDS + 1):
            R = X - fixed_params
            if abs(R) <= 1e-6 * self.N:  # a target rounded to 6 decimals (e.g. an imported recipe's)
                R = 0.0
            fs = self._freeset(free)
            reachable = -1e-9 * max(self.N, 1.0) <= R <= fs.total * (1 + 1e-12) + 1e-9
            s_free = self._greedy(b, fs, R)
            if len(free):
                pos = s_free > 0
                if pos.any():
                    rows = fs.free[pos]
                    s_free[pos] = _bucketize(s_free[pos], fs.n[pos], self.buckets, self.cap,
                                             (lambda v, r=rows: self._violates(r, v)) if self._point_filters else None)
            s[:] = self.fixed
            s[free] = s_free
            bad = self._filtered(free, s_free)
            if not bad:
                break
            if _round == MAX_FILTER_ROUNDS:  # give up re-allocating: drop the rest, target may be missed
                for i, why in bad.items():
                    reasons[i] = why
                    s[i] = 0.0
                break
            for i, why in bad.items():
                reasons[i] = why
            free = free[~np.isin(free, np.fromiter(bad, dtype=np.int64, count=len(bad)))]
        if reasons:
            idx = np.fromiter(reasons, dtype=np.int64, count=len(reasons))
            if self.overridden:
                idx = idx[~np.isin(idx, self._over_idx)]
            s[idx] = 0.0
        achieved = float((c.n * s).sum() / self.N) if self.N > 0 else 0.0
        L, P = c.totals(s)
        return Allocation(sparsity=s, reasons=reasons, overridden=set(self.overridden), achieved=achieved,
                    reachable=bool(reachable), balance=b, L=L, P=P, extra=dict(self.extra))

    def _violates(self, rows: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Which layers (rows, at sparsities v > 0) fail the min speedup or min recovery filter."""
        c = self.c
        bad = np.zeros(len(rows), dtype=bool)
        if self.min_speedup > 1.0:
            t0 = c.t0[rows]
            sv = np.minimum(np.maximum(Curves._at_rows(c.save, rows, v), 0.0), t0)
            rem = t0 - sv
            f = np.where(t0 > 0, t0 / np.where(rem > 0, rem, 1e-300), 1.0)
            bad |= f < self.min_speedup
        if self.min_recovery > 0:
            bad |= layer_recovery(c, rows, v) < self.min_recovery
        return bad

    def _filtered(self, free: np.ndarray, s_free: np.ndarray) -> dict[int, str]:
        c = self.c
        bad: dict[int, str] = {}
        if not len(free):
            return bad
        on = s_free > 0
        if self.min_s > 0:
            for k in np.nonzero(on & (s_free < self.min_s - 1e-9))[0].tolist():
                bad[int(free[k])] = REASON_MIN_SPARSITY.format(self.min_s)
        if self.min_speedup > 1.0:
            t0 = c.t0[free]
            sv = np.minimum(np.maximum(Curves._at_rows(c.save, free, s_free), 0.0), t0)
            rem = t0 - sv
            with np.errstate(divide="ignore", invalid="ignore"):
                f = np.where(t0 > 0, t0 / np.where(rem > 0, rem, 1e-300), 1.0)
            for k in np.nonzero(on & (f < self.min_speedup))[0].tolist():
                bad.setdefault(int(free[k]), REASON_MIN_SPEEDUP.format(self.min_speedup))
        if self.min_recovery > 0:
            rec = layer_recovery(c, free, s_free)
            for k in np.nonzero(on & (rec < self.min_recovery))[0].tolist():
                bad.setdefault(int(free[k]), REASON_MIN_RECOVERY.format(self.min_recovery))
        return bad

    # ------------------------------------------------------------ candidates and selection
    def candidates(self) -> list[Allocation]:
        out = []
        filters = self.min_s > 0 or self.min_speedup > 1.0 or self.min_recovery > 0
        coarse = filters or len(self.c.ids) > 200
        for b in (CANDIDATE_BALANCES_COARSE if coarse else CANDIDATE_BALANCES):
            if b not in self.cache:
                beff = min(max(b, _EPS_B), 1.0 - _EPS_B)
                plan = self._plan(beff)
                plan.balance = b
                self.cache[b] = plan
            out.append(self.cache[b])
        return out

    def select(self, balance: float) -> Allocation:
        cands = self.candidates()
        c = self.c
        L = np.array([p.L for p in cands])
        P = np.array([p.P for p in cands])
        # among exact ties prefer the candidate computed for the nearest balance
        idx = np.abs(np.array([p.balance for p in cands]) - balance)
        if balance <= 0.0:
            k = np.lexsort((idx, L, -P))[0]
        elif balance >= 1.0:
            k = np.lexsort((idx, -P, L))[0]
        else:
            obj = balance * L / c.L_scale - (1.0 - balance) * P / c.P_scale
            tie = (-P, L) if balance < 0.5 else (L, -P)
            k = np.lexsort((idx, tie[1], tie[0], obj))[0]
        return cands[int(k)]


def layer_recovery(c: Curves, rows: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Per-layer recovery: 1 - loss(s) / loss(0.99) (1 when the layer's loss at 0.99 is 0)."""
    top = c.loss[rows, TOP]
    ls = np.maximum(Curves._at_rows(c.loss, rows, s), 0.0)
    pos = top > 0
    r = np.where(pos, 1.0 - ls / np.where(pos, top, 1.0), 1.0)
    return np.minimum(np.maximum(r, 0.0), 1.0)


def settings_key(opt: Optimization) -> str:
    """Everything the allocation depends on except the balance."""
    p = opt.pruning
    return json.dumps([p.enabled, p.target_sparsity, p.max_sparsity, p.min_sparsity, p.min_speedup,
                       p.min_recovery, p.buckets, p.protect_edges, p.tiny_params, sorted(p.overrides.items()),
                       sorted(p.exclusions.items())])


class AllocationCache:
    """Keeps the candidate plans of the last few settings, so balance changes cost nothing."""

    def __init__(self, curves: Curves, size: int = 8) -> None:
        self.curves = curves
        self.size = size
        self._d: dict[str, _Allocator] = {}

    def plan(self, opt: Optimization) -> Allocation:
        key = settings_key(opt)
        a = self._d.pop(key, None)
        if a is None:
            a = _Allocator(self.curves, opt)
        self._d[key] = a
        while len(self._d) > self.size:
            self._d.pop(next(iter(self._d)))
        return a.select(float(opt.pruning.balance))


def allocate_plan(curves: Curves, opt: Optimization) -> Allocation:
    return _Allocator(curves, opt).select(float(opt.pruning.balance))


def apply_plan(curves: Curves, opt: Optimization, plan: Allocation) -> Optimization:
    """A copy of ``opt`` whose ``layers`` hold the plan's results."""
    new = opt.copy(with_layers=False)
    layers: dict[str, LayerResult] = {}
    sp = plan.sparsity.tolist()
    reasons, over = plan.reasons, plan.overridden
    for i, lid in enumerate(curves.ids):
        layers[lid] = LayerResult(sp[i], reasons.get(i, ""), i in over)
    for lid, why in plan.extra.items():
        layers[lid] = LayerResult(sparsity=0.0, excluded_reason=why)
    new.layers = layers
    validation = getattr(new, "validation", None)
    if validation and opt.layers and any(
            opt.layers.get(lid) is None or opt.layers[lid].sparsity != r.sparsity for lid, r in layers.items()):
        new.validation = {}  # measured for another plan: no longer describes this one
    return new


def allocate(graph: "ModelGraph", opt: Optimization, perf: dict | None = None,
             loss: dict | None = None) -> Optimization:
    """One-shot convenience: build the curves, allocate, return a copy of ``opt`` with ``layers`` filled."""
    curves = Curves.build(graph, perf, loss)
    return apply_plan(curves, opt, allocate_plan(curves, opt))
