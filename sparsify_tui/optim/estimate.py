"""Estimates of an optimization: time, speedup, FLOPs, params, compression, recovery confidence.

API (stable; the TUI optimizer editor recomputes these after every edit)::

    ev = Evaluator(graph, perf=perf_doc, loss=loss_doc, quant=quant_doc)  # once per model + profiles
    opt = ev.allocate(opt)        # copy of opt with per-layer results (opt.layers) filled
    est = ev.evaluate(opt)        # Estimates for opt.layers (allocates first if empty)
    est.to_dict()                 # JSON-able; the keys of `sparsify-tui optimize --json`

    evaluate(graph, opt, perf=None, loss=None, quant=None) -> Estimates   # one-shot convenience

Profiles are the plain dicts of the project (layers matched by ``id``): perf
``layers[].ms_by_level`` / ``baseline_ms`` / ``engine_internal``, model
``baseline_ms``, ``approximated``; loss ``layers[].sensitivity_by_level``;
quant ``layers[].sensitivity`` and ``model.fp32_ms`` / ``model.int8_ms``.
The Evaluator precomputes every layer's curves once (see
:mod:`sparsify_tui.optim.allocate`) and caches the candidate plans per
allocation settings, so a re-estimate after an edit takes a few ms.

Definitions
-----------
* **Estimated Time** (``estimated_ms``): ``baseline_ms - k * sum_i save_i(s_i)``
  where ``save_i`` is the layer's time saved at sparsity ``s_i`` from the perf
  profile (interpolated between its levels) and ``k = baseline_ms / sum of all
  layer times`` (layer times are measured per layer, the baseline on the whole
  model). Layers are assumed additive. Non-prunable and engine-internal layers
  keep their time. Without a perf profile the same formula runs on FLOPs: then
  ``baseline_ms`` / ``estimated_ms`` are null, the speedup is a FLOPs ratio and
  ``approximated`` is true.
* **Estimated Speedup**: ``baseline_ms / estimated_ms``.
* **FLOPs before/after**: the whole model (``graph.flops``; the known part when
  some layers' FLOPs are unknown, ``flops_unknown`` true); a pruned layer keeps
  ``(1 - s)`` of its FLOPs.
* **Params before/after**: all params of the model (``graph.params``), minus
  ``round(s * n)`` zeroed weights per pruned layer; **compression** =
  before / after (non-zero params).
* **Recovery Confidence** (a heuristic, not a measured accuracy; see
  :data:`RECOVERY_HELP`): ``1 - sum_i loss_i(s_i) / sum_i loss_i(0.99)``.
* Per layer: ``est_speedup`` = layer time / layer time at s; ``loss_sensitivity``
  and ``perf_sensitivity`` (ms saved) at the chosen sparsity; ``recovery`` =
  ``1 - loss_i(s_i) / loss_i(0.99)``; ``loss_rank`` / ``perf_rank`` = "top 5%",
  "high", "medium" or "low" by rank of the sensitivity at sparsity 0.9 among
  the prunable layers (top 5%, then thirds).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sparsify_tui.optim.allocate import (
    EVAL_INDEX,
    AllocationCache,
    Curves,
    apply_plan,
    layer_recovery,
)
from sparsify_tui.optim.optimization import NO_MEASURED_LOSS_NOTE, LayerResult, Optimization

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph

RECOVERY_HELP = """\
Recovery Confidence is a heuristic for how easily the model should regain its
accuracy when fine-tuned with this plan, from 1 (nothing pruned) to 0 (every
layer pruned to 99%):

    1 - (sum over layers of the loss sensitivity at the chosen sparsity)
        / (sum over layers of the loss sensitivity at 99% sparsity)

Loss sensitivity comes from the project's loss profile (one-shot: measured
change of the model's outputs; approx: weight magnitude) or, without one,
from a weight-magnitude proxy. It is not a measured accuracy: use it to
compare plans of the same model, not models with each other. A layer's
Recovery is the same ratio for that layer alone.
"""


def _rank_labels(values: np.ndarray) -> list[str]:
    m = len(values)
    if m == 0:
        return []
    order = np.argsort(-values, kind="stable")
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m)
    top = max(1, int(math.ceil(0.05 * m)))
    out = []
    for r, v in zip(rank, values):
        if v <= 0:
            out.append("low")
        elif r < top:
            out.append("top 5%")
        elif r < m / 3:
            out.append("high")
        elif r < 2 * m / 3:
            out.append("medium")
        else:
            out.append("low")
    return out


@dataclass
class LayerEstimate:
    id: str
    name: str
    op_type: str
    params: int  # prunable params of the layer
    sparsity: float
    excluded_reason: str
    overridden: bool
    baseline_ms: float | None
    est_ms: float | None
    est_speedup: float
    loss_sensitivity: float
    perf_sensitivity: float | None  # ms saved (null in FLOPs mode)
    recovery: float
    flops_before: int | None
    flops_after: int | None
    params_after: int
    loss_rank: str
    perf_rank: str
    quantized: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Estimates:
    name: str
    target_sparsity: float
    achieved_sparsity: float
    balance: float
    reachable: bool
    estimated_speedup: float
    estimated_ms: float | None
    baseline_ms: float | None
    flops_before: int | None
    flops_after: int | None
    flops_unknown: bool
    flops_reduction: float | None
    params_before: int
    params_after: int
    prunable_params: int
    compression: float
    recovery_confidence: float
    loss_sensitivity: float  # total over layers at the chosen sparsities
    perf_sensitivity: float  # total time saved (ms; FLOPs in FLOPs mode)
    approximated: bool
    perf_basis: str  # measured | approximated | flops
    loss_basis: str  # measured | approx | gaussian
    quantization: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    layers: list[LayerEstimate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "layers"}
        d["layers"] = [lay.to_dict() for lay in self.layers]
        for k, v in list(d.items()):
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d

    def summary_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k != "layers"}


class Evaluator:
    """Estimates bound to one model and its profiles (curves precomputed once)."""

    def __init__(self, graph: "ModelGraph", perf: dict | None = None, loss: dict | None = None,
                 quant: dict | None = None) -> None:
        self.graph = graph
        self.perf = perf
        self.loss = loss
        self.quant = quant
        self.curves = Curves.build(graph, perf, loss)
        self._cache = AllocationCache(self.curves)
        c = self.curves
        self._layers = {lay.id: lay for lay in graph.layers if lay.prunable}
        self._loss_rank = _rank_labels(c.loss[:, EVAL_INDEX]) if len(c.ids) else []
        self._perf_rank = _rank_labels(c.save[:, EVAL_INDEX]) if len(c.ids) else []
        self._quant_sens = {}
        if quant and isinstance(quant.get("layers"), list):
            for r in quant["layers"]:
                if isinstance(r, dict) and isinstance(r.get("sensitivity"), (int, float)):
                    self._quant_sens[str(r.get("id"))] = float(r["sensitivity"])

    # ------------------------------------------------------------ allocation
    def allocate(self, opt: Optimization) -> Optimization:
        """A copy of ``opt`` with ``layers`` (sparsity, excluded_reason, overridden) from the allocation."""
        plan = self._cache.plan(opt)
        return apply_plan(self.curves, opt, plan)

    # ------------------------------------------------------------ estimates
    def sparsity_vector(self, opt: Optimization) -> np.ndarray:
        """The plan's sparsities by position in the curves (the allocator's form)."""
        c = self.curves
        s = np.zeros(len(c.ids))
        for lid, sp in opt.plan.sparsities().items():
            i = c.index.get(lid)
            if i is not None:
                s[i] = sp
        return s

    def evaluate(self, opt: Optimization) -> Estimates:
        """Estimates of ``opt``'s per-layer results (allocated first when ``opt.layers`` is empty)."""
        if not opt.layers:
            opt = self.allocate(opt)
        c = self.curves
        g = self.graph
        s = self.sparsity_vector(opt)
        m = len(c.ids)
        rows = np.arange(m)
        loss_s = c.loss_at(s) if m else np.zeros(0)
        save_s = c.save_at(s) if m else np.zeros(0)
        L = float(loss_s.sum())
        P = float(save_s.sum())
        ms_mode = c.time_unit == "ms"
        base = c.baseline
        est = base - c.time_scale * P
        if est <= 0:
            est = base * 1e-6 if base > 0 else 0.0
        speedup = base / est if est > 0 else 1.0
        # FLOPs and params of the whole model
        layer_flops_after = np.where(c.flops_known, c.flops * (1.0 - s), 0.0)
        flops_removed = float((c.flops * s)[c.flops_known].sum())
        if g.flops is not None:
            flops_before = int(g.flops)
            flops_unknown = False
        else:
            flops_before = int(g.flops_known or 0)
            flops_unknown = True
        flops_after = int(round(flops_before - flops_removed))
        zeroed = np.round(s * c.n)
        params_before = int(g.params)
        params_after = int(params_before - zeroed.sum())
        N = float(c.n.sum())
        achieved = float((c.n * s).sum() / N) if N > 0 else 0.0
        top = float(c.loss[:, -1].sum()) if m else 0.0
        rc = 1.0 - L / top if top > 0 else 1.0
        rec = layer_recovery(c, rows, s) if m else np.zeros(0)
        # quantization
        q = opt.quantization
        quant: dict[str, Any] = {"enabled": bool(q.enabled)}
        qset: set[str] = set()
        if q.enabled:
            qset = set(c.ids) if q.layers == "all" else set(q.layers)
            qset -= set(q.skipped)
            quant["layers"] = len(qset)
            if self._quant_sens:
                quant["sensitivity"] = float(sum(self._quant_sens.get(x, 0.0) for x in qset))
            model = (self.quant or {}).get("model") or {}
            f32, i8 = model.get("fp32_ms"), model.get("int8_ms")
            if isinstance(f32, (int, float)) and isinstance(i8, (int, float)) and i8 > 0:
                quant["speedup"] = float(f32) / float(i8)
                quant["estimated_speedup_with_quant"] = speedup * quant["speedup"]
                quant["note"] = "sparsity and INT8 speedups multiplied: a rough upper estimate"
        layers: list[LayerEstimate] = []
        t0 = c.t0
        ts = c.time_scale
        rem = t0 - save_s
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = np.where(t0 > 0, np.where(rem > 0, t0 / np.where(rem > 0, rem, 1.0), 1e6), 1.0)
        L_s, S_s, R_s, F_s = s.tolist(), loss_s.tolist(), rec.tolist(), fac.tolist()
        TB, TE, SV = (t0 * ts).tolist(), (rem * ts).tolist(), (save_s * ts).tolist()
        N_l, Z_l = c.n.astype(np.int64).tolist(), (c.n - zeroed).astype(np.int64).tolist()
        FB, FA, FK = c.flops.astype(np.int64).tolist(), np.round(layer_flops_after).astype(np.int64).tolist(), c.flops_known.tolist()
        empty = LayerResult()
        for i, lid in enumerate(c.ids):
            r = opt.layers.get(lid) or empty
            layers.append(LayerEstimate(
                lid, c.names[i], self._layers[lid].op_type, N_l[i], L_s[i], r.excluded_reason, r.overridden,
                TB[i] if ms_mode else None, TE[i] if ms_mode else None, F_s[i], S_s[i],
                SV[i] if ms_mode else None, R_s[i],
                FB[i] if FK[i] else None, FA[i] if FK[i] else None, Z_l[i],
                self._loss_rank[i], self._perf_rank[i], lid in qset,
            ))
        notes = list(c.notes)
        p = opt.pruning
        reachable = True
        if p.enabled and N > 0 and achieved < p.target_sparsity - 0.005:
            reachable = False
            notes.append(f"target sparsity {p.target_sparsity:.2f} not reachable: achieved {achieved:.3f} "
                         f"(per-layer cap {p.max_sparsity:.2f}, exclusions, overrides and filters)")
        elif p.enabled and N > 0 and achieved > p.target_sparsity + 0.005:
            notes.append(f"overrides alone exceed the target: achieved {achieved:.3f}")
        if p.enabled and N > 0 and c.loss_basis != "measured":
            notes.insert(0, NO_MEASURED_LOSS_NOTE)
        return Estimates(
            name=opt.name, target_sparsity=float(p.target_sparsity), achieved_sparsity=achieved,
            balance=float(p.balance), reachable=reachable, estimated_speedup=float(speedup),
            estimated_ms=float(est) if ms_mode else None, baseline_ms=float(base) if ms_mode else None,
            flops_before=flops_before, flops_after=flops_after, flops_unknown=flops_unknown,
            flops_reduction=(flops_before / flops_after) if flops_after > 0 else None,
            params_before=params_before, params_after=params_after, prunable_params=int(N),
            compression=(params_before / params_after) if params_after > 0 else float(params_before or 1),
            recovery_confidence=float(min(max(rc, 0.0), 1.0)), loss_sensitivity=L,
            perf_sensitivity=float(P * c.time_scale),
            approximated=c.perf_basis != "measured", perf_basis=c.perf_basis, loss_basis=c.loss_basis,
            quantization=quant, notes=notes, layers=layers,
        )

    def run(self, opt: Optimization) -> tuple[Optimization, Estimates]:
        """Allocate then estimate (what the editor does after an edit)."""
        new = self.allocate(opt)
        return new, self.evaluate(new)


def evaluate(graph: "ModelGraph", opt: Optimization, perf: dict | None = None, loss: dict | None = None,
             quant: dict | None = None) -> Estimates:
    """Estimates of ``opt`` on ``graph`` with the given profiles (None = approximations)."""
    return Evaluator(graph, perf, loss, quant).evaluate(opt)
