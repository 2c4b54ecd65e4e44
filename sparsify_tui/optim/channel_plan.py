"""The channel optimizer: a fraction of channels removed per channel group, allocated like layer sparsities.

``optimize --structure channels`` runs the unstructured optimizer's allocation (:mod:`sparsify_tui.optim.allocate`:
the balance, the filters, overrides, exclusions, the edge filter and the candidate balances) on one row per
prunable channel group instead of one per layer:

* a row's weight is the group's channel count, so the target ``--sparsity`` is the share of the prunable
  groups' channels removed (``achieved_sparsity`` is that share);
* its savings curve is the channel perf profile's (``perf_channels``: the time its removal saves, measured,
  interpolated between the profile's fractions through 0 and extrapolated along the last segment), else the
  FLOPs its removal alone takes from the weighted layers (:func:`sparsify_tui.optim.channels.estimated_flops`);
* its loss curve is the channel loss profile's (``loss_channels``: the whole model's output change), else the
  share of the group's squared filter L2 norms the removed channels carry (the l2 order ``prune`` uses);
* the edge filter protects a group holding a stem layer (or an output head); the tiny-layer filter is off
  (a group's size is counted in channels, not weights).

Each group's allocated fraction is then rounded so the kept channels are a multiple of ``round_to`` (the
engine's default, :func:`sparsify_tui.actions.channels.default_round_to`) and stored as the exact fraction it
removes (``removed / channels``): pruning the plan with ``--round-to 1`` removes those counts.

Estimates (:meth:`ChannelEvaluator.evaluate`): the speedup from the channel perf profile
(:func:`sparsify_tui.optim.channel_estimate.estimate_channel_speedup`, overlaps counted once) when there is
one, else the FLOPs ratio (``approximated``, and a note says so); ``flops_reduction`` is the share of the
model's FLOPs removed (``1 - after / before``), ``unprunable_groups`` lists the groups that cannot be pruned
with their reasons.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from sparsify_tui.errors import UsageError
from sparsify_tui.optim.allocate import GRID, AllocationCache, Curves, _loss_curves, edge_roles, layer_recovery
from sparsify_tui.optim.estimate import Estimates, LayerEstimate, _rank_labels
from sparsify_tui.optim.optimization import REASON_NOT_PRUNABLE, Optimization
from sparsify_tui.optim.plan import LayerPlan, Plan, Structure

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph

DEFAULT_CHANNEL_TARGET = 0.3  # a new channel optimization removes 30% of the prunable groups' channels
NO_CHANNEL_PERF_NOTE = ("no channel perf profile in the project: the speedup is the FLOPs ratio (measure one with "
                        "'profile perf --structure channels')")
NO_CHANNEL_LOSS_NOTE = ("no channel loss profile in the project: loss sensitivity approximated from the filters' "
                        "L2 norms (measure one with 'profile loss --structure channels')")


def is_channel_plan(opt: "Optimization | Plan | None") -> bool:
    """True for an optimization (or a plan) that removes channel groups: the one test every consumer uses."""
    if opt is None:
        return False
    plan = opt.plan if isinstance(opt, Optimization) else opt
    return bool(plan.sparsities(Structure.CHANNELS))


@dataclass
class ChannelSetup:
    """A model's channel groups, as the optimizer reads them (built once per model)."""

    graph: "ModelGraph"
    prepared: Any  # optim.channels.prepare's (dense, shapes, ChannelMap)
    layers_of: dict[str, list[str]]  # group id -> its layer ids
    l2: dict[str, np.ndarray]  # group id -> per-channel l2 score

    @property
    def cmap(self) -> Any:
        return self.prepared[2]

    @property
    def groups(self) -> list[Any]:
        return list(self.cmap.groups)

    @property
    def prunable(self) -> list[Any]:
        return [g for g in self.cmap.groups if g.prunable]

    @classmethod
    def for_model(cls, model_path: Any, graph: "ModelGraph", input_shapes: Mapping[str, Any] | None = None
                  ) -> "ChannelSetup":
        from sparsify_tui.onnxkit.modelio import load_model_copy
        from sparsify_tui.optim import channels as oc
        from sparsify_tui.onnxkit.channels import group_layers

        model = load_model_copy(model_path)[0]
        shapes = {k: [1 if d == "N" else int(d) for d in v] for k, v in (input_shapes or {}).items()} or None
        prep = oc.prepare(model, input_shapes=shapes)
        return cls(graph, prep, group_layers(prep[2]), oc.l2_scores(prep[0], prep[2]))


def _flops_removed_alone(setup: ChannelSetup) -> dict[str, float]:
    """{group: FLOPs of the weighted layers its complete removal takes, alone} (linear in the fraction)."""
    from sparsify_tui.optim.channels import estimated_flops

    dense = estimated_flops(setup.graph, setup.cmap, {})[1]
    return {g.id: max(0.0, dense - estimated_flops(setup.graph, setup.cmap, {g.id: 0})[1]) for g in setup.prunable}


def _perf_rows(perf: dict, ids: list[str], notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(t0, save on GRID) of the groups ``ids`` from a channel perf profile."""
    from sparsify_tui.optim.channel_estimate import _interp, _rows_by_group

    rows = _rows_by_group(perf)
    save = np.zeros((len(ids), len(GRID)))
    missing = 0
    for i, gid in enumerate(ids):
        grp = rows.get(gid)
        if not grp:
            missing += 1
            continue
        pts = [(float(r["fraction"]), max(0.0, float(r["saved_ms"]))) for r in grp]
        save[i] = np.maximum.accumulate(np.maximum([_interp(pts, float(f)) for f in GRID], 0.0))
    if missing:
        notes.append(f"{missing} prunable group(s) have no row in the channel perf profile: no speedup is "
                     "estimated for them")
    t0 = np.maximum(save[:, -1] * 1.0 / 0.99, 1e-9) if len(ids) else np.zeros(0)
    return t0, save


def _l2_loss_doc(setup: ChannelSetup, ids: list[str]) -> dict:
    """A loss document of the l2 proxy: the share of a group's squared scores its lowest channels carry."""
    rows = []
    for gid in ids:
        sq = np.sort(np.asarray(setup.l2[gid], dtype=np.float64) ** 2)
        tot = float(sq.sum()) or 1.0
        cum = np.concatenate([[0.0], np.cumsum(sq)]) / tot
        c = len(sq)
        rows.append({"id": gid, "sensitivity_by_level": {
            f"{f:.2f}": float(np.interp(f * c, np.arange(c + 1), cum)) for f in GRID}})
    return {"method": "approx", "layers": rows}


def _extrapolated(loss: dict) -> dict:
    """A channel loss document whose curves go on past their last fraction along their last segment (a
    profile measured to 0.75 would otherwise make every fraction above it free)."""
    from sparsify_tui.optim.channel_estimate import _interp

    rows = []
    for r in loss["layers"]:
        try:
            pts = [(float(k), float(v)) for k, v in (r.get("sensitivity_by_level") or {}).items() if float(k) > 0]
        except (TypeError, ValueError):
            pts = []
        if not pts:
            rows.append(r)
            continue
        vals = np.maximum.accumulate(np.maximum([_interp(pts, float(f)) for f in GRID], 0.0))
        rows.append({**r, "sensitivity_by_level": {f"{f:.2f}": float(v) for f, v in zip(GRID, vals)}})
    return {**loss, "layers": rows}


def _group_name(gid: str, layers: list[str]) -> str:
    """A group's row name: its id, and its layers when they are more than the one the id names."""
    return gid if list(layers) == [gid] else f"{gid} [{', '.join(layers)}]"


def build_curves(setup: ChannelSetup, perf: dict | None = None, loss: dict | None = None) -> Curves:
    """One row per prunable group (see the module doc)."""
    groups = setup.prunable
    ids = [g.id for g in groups]
    names = [_group_name(g.id, setup.layers_of.get(g.id) or g.producers) for g in groups]
    n = np.array([float(g.channels) for g in groups])
    removed = _flops_removed_alone(setup)
    flops = np.array([removed.get(g.id, 0.0) for g in groups])
    notes: list[str] = []
    if perf and perf.get("rows"):
        t0, save = _perf_rows(perf, ids, notes)
        unit, baseline, basis = "ms", float(perf.get("dense_ms") or 0.0), "measured"
    else:
        t0, save = flops.copy(), flops[:, None] * GRID[None, :]
        unit, baseline, basis = "flops", float(setup.graph.flops or setup.graph.flops_known or 0), "flops"
        notes.append(NO_CHANNEL_PERF_NOTE)
    if loss and isinstance(loss.get("layers"), list):
        lossm, loss_basis = _loss_curves(_extrapolated(loss), ids, notes)
    else:
        lossm, _ = _loss_curves(_l2_loss_doc(setup, ids), ids, notes)
        loss_basis = "approx"
        notes.append(NO_CHANNEL_LOSS_NOTE)
    all_ids = {g.id for g in setup.groups} | {lay.id for lay in setup.graph.layers}
    c = Curves.from_rows(ids, names, n, flops, np.ones(len(ids), dtype=bool), t0, lossm, save, time_unit=unit,
                         baseline=baseline, time_scale=1.0, perf_basis=basis, loss_basis=loss_basis, notes=notes,
                         all_ids=all_ids)
    roles = edge_roles(setup.graph)
    for i, gid in enumerate(ids):
        mine = [roles[lid] for lid in setup.layers_of.get(gid, []) if lid in roles]
        if mine:
            c.roles[i] = "stem" if "stem" in mine else "head"
    return c


@dataclass
class GroupEstimate(LayerEstimate):
    """A channel group's row: a layer row's fields (``params``: the weights its channels hold; ``sparsity``:
    the fraction of its channels removed) plus its layers and channel counts."""

    layers: list[str] = field(default_factory=list)
    channels: int = 0
    removed: int = 0


@dataclass
class ChannelEstimates(Estimates):
    """The estimates of a channel plan: :class:`Estimates` (``flops_reduction`` is the share of the FLOPs
    removed here) plus what only a channel plan has."""

    structure: str = "channels"
    speedup_basis: str = ""
    round_to: int = 1
    channel_fraction: float = 0.0
    groups: int = 0
    prunable_groups: int = 0
    unprunable_groups: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["layers"] = [asdict(x) for x in self.layers]
        return d


def removed_of(channels: int, fraction: float, round_to: int) -> int:
    """Channels a plan removes from a group at ``fraction`` with counts kept at multiples of ``round_to``."""
    from sparsify_tui.optim.channels import kept_count

    return int(channels) - kept_count(int(channels), float(fraction), int(round_to))


class ChannelEvaluator:
    """The Evaluator of a channel optimization (same methods: ``allocate``, ``evaluate``, ``run``)."""

    structure = Structure.CHANNELS

    def __init__(self, setup: ChannelSetup, perf: dict | None = None, loss: dict | None = None,
                 quant: dict | None = None, round_to: int = 1, round_reason: str = "") -> None:
        self.setup, self.graph = setup, setup.graph
        self.perf, self.loss, self.quant = perf, loss, quant
        self.round_to, self.round_reason = max(1, int(round_to)), round_reason
        self.curves = build_curves(setup, perf, loss)
        self._cache = AllocationCache(self.curves)
        self._groups = {g.id: g for g in setup.groups}

    # ------------------------------------------------------------ allocation
    def check_ids(self, ids: Any, flag: str) -> None:
        for gid in ids:
            g = self._groups.get(gid)
            if g is None:
                raise UsageError(f"{flag}: {gid!r} is not a channel group of this model (the group ids are "
                                 "listed by 'optimize --structure channels')")
            if not g.prunable:
                raise UsageError(f"{flag}: channel group {gid!r} cannot be pruned: {'; '.join(g.reasons)}")

    def allocate(self, opt: Optimization) -> Optimization:
        """A copy of ``opt`` whose plan has one channel entry per group (rounded to ``round_to``)."""
        work = opt.copy()
        work.pruning.tiny_params = 0  # a group's size is in channels: the tiny-layer filter counts weights
        a = self._cache.plan(work)
        new = opt.copy(with_layers=False)
        entries: dict[str, LayerPlan] = {}
        for i, gid in enumerate(self.curves.ids):
            g = self._groups[gid]
            f = float(a.sparsity[i])
            k = removed_of(g.channels, f, self.round_to) if f > 0 else 0
            overridden = i in a.overridden
            if overridden and f > 0:  # an override is the user's fraction: rounded to whole channels only
                k = removed_of(g.channels, f, 1)
            entries[gid] = LayerPlan(k / g.channels, a.reasons.get(i, ""), overridden, Structure.CHANNELS,
                                     layers=tuple(self.setup.layers_of.get(gid) or g.producers))
        for g in self.setup.groups:
            if not g.prunable:
                entries[g.id] = LayerPlan(0.0, f"{REASON_NOT_PRUNABLE}: {'; '.join(g.reasons)}", False,
                                          Structure.CHANNELS,
                                          layers=tuple(self.setup.layers_of.get(g.id) or g.producers))
        new.layers = entries
        if getattr(new, "validation", None):
            new.validation = {}
        return new

    def for_flops_reduction(self, opt: Optimization, target: float) -> Optimization:
        """``opt`` with the target share of channels whose allocation removes ``target`` of the FLOPs
        (bisection on the target; the closest reached when the rounding or the cap stops short)."""
        if not 0.0 < float(target) < 1.0:
            raise UsageError(f"--flops-reduction must be between 0 and 1 (exclusive), got {target}")
        lo, hi = 0.0, float(opt.pruning.max_sparsity)
        best = None
        for _ in range(18):
            mid = (lo + hi) / 2
            trial = opt.copy()
            trial.pruning.target_sparsity = round(mid, 6)
            trial = self.allocate(trial)
            fr = self.flops(trial)[2]
            if best is None or abs(fr - target) < abs(best[1] - target):
                best = (trial, fr)
            if fr < target:
                lo = mid
            else:
                hi = mid
        return best[0]

    # ------------------------------------------------------------ estimates
    def fractions(self, opt: Optimization) -> dict[str, float]:
        return {k: v for k, v in opt.plan.sparsities(Structure.CHANNELS).items() if k in self.curves.index}

    def flops(self, opt: Optimization) -> tuple[float, float, float]:
        """(before, after, share removed) of the model's FLOPs under ``opt``'s plan."""
        from sparsify_tui.optim.channels import estimated_flops

        kept = {gid: self._groups[gid].channels - removed_of(self._groups[gid].channels, f, 1)
                for gid, f in self.fractions(opt).items()}
        before, after = estimated_flops(self.graph, self.setup.cmap, kept)
        return before, after, (1.0 - after / before) if before > 0 else 0.0

    def _params_removed(self, opt: Optimization) -> float:
        """Weights the plan removes: each weighted layer keeps the share of its output channels and of its input
        channels that the plan keeps (as :func:`~sparsify_tui.optim.channels.estimated_flops` counts FLOPs)."""
        cmap = self.setup.cmap
        sizes = {gr.id: gr.channels for gr in self.setup.groups}
        kept = {gid: sizes[gid] - removed_of(sizes[gid], f, 1) for gid, f in self.fractions(opt).items()}

        from sparsify_tui.optim.channels import kept_share

        return sum(float(lay.params or 0) * (1.0 - kept_share(lay, cmap, kept, sizes)) for lay in self.graph.layers)

    def _speedup(self, opt: Optimization, fr: dict[str, float], flops: tuple[float, float, float]
                 ) -> tuple[float, float | None, float | None, dict[str, float], str]:
        """(speedup, estimated ms, baseline ms, ms saved by group, basis)."""
        if self.curves.time_unit == "ms":
            from sparsify_tui.optim.channel_estimate import estimate_channel_speedup, estimated_saving

            sp = estimate_channel_speedup(self.perf, fr) if fr else 1.0
            by = estimated_saving(self.perf, fr)["by_group"] if fr else {}
            dense = float(self.perf["dense_ms"])
            basis = (f"channel perf profile ({self.perf.get('engine')} {self.perf.get('precision') or 'fp32'}, "
                     "measured group savings)")
            return sp, dense / sp, dense, by, basis
        before, after, _ = flops
        return (before / after if after > 0 else 1.0), None, None, {}, "FLOPs ratio (no channel perf profile)"

    def evaluate(self, opt: Optimization) -> ChannelEstimates:
        if not opt.plan.has(Structure.CHANNELS):
            opt = self.allocate(opt)
        c, g = self.curves, self.graph
        fr = self.fractions(opt)
        s = np.array([fr.get(gid, 0.0) for gid in c.ids])
        m = len(c.ids)
        loss_s = c.loss_at(s) if m else np.zeros(0)
        save_s = c.save_at(s) if m else np.zeros(0)
        L, P = float(loss_s.sum()), float(save_s.sum())
        fl = self.flops(opt)
        speedup, est_ms, base_ms, by_group, basis = self._speedup(opt, fr, fl)
        groups = [self._groups[gid] for gid in c.ids]
        removed = [removed_of(gr.channels, f, 1) if f > 0 else 0 for gr, f in zip(groups, s.tolist())]
        params_before = int(g.params)
        params_after = params_before - int(round(self._params_removed(opt)))
        top = float(c.loss[:, -1].sum()) if m else 0.0
        rc = 1.0 - L / top if top > 0 else 1.0
        rec = layer_recovery(c, np.arange(m), s) if m else np.zeros(0)
        rows = []
        from sparsify_tui.optim.allocate import EVAL_INDEX

        loss_rank = _rank_labels(c.loss[:, EVAL_INDEX]) if m else []
        perf_rank = _rank_labels(c.save[:, EVAL_INDEX]) if m else []
        for i, gid in enumerate(c.ids):
            e = opt.layers.get(gid) or LayerPlan()
            t0, sv = float(c.t0[i]), float(save_s[i])
            ms = c.time_unit == "ms"
            rows.append(GroupEstimate(
                gid, c.names[i], "channels", int(groups[i].params), float(s[i]), e.excluded_reason, e.overridden,
                t0 if ms else None, (t0 - sv) if ms else None, t0 / (t0 - sv) if t0 - sv > 0 else 1.0,
                float(loss_s[i]), float(by_group.get(gid, sv)) if ms else None, float(rec[i]),
                int(c.flops[i]), int(round(c.flops[i] * (1 - s[i]))),
                int(groups[i].params - round(groups[i].params * removed[i] / groups[i].channels)), loss_rank[i], perf_rank[i],
                False, list(self.setup.layers_of.get(gid) or groups[i].producers), int(groups[i].channels),
                int(removed[i])))
        N = float(c.n.sum())
        achieved = float((c.n * s).sum() / N) if N > 0 else 0.0
        p = opt.pruning
        notes = list(c.notes)
        reachable = True
        if p.enabled and N > 0 and achieved < p.target_sparsity - 0.02:
            reachable = False
            notes.append(f"target share of channels {p.target_sparsity:.2f} not reachable: achieved {achieved:.3f} "
                         f"(per-group cap {p.max_sparsity:.2f}, exclusions, overrides, filters and rounding)")
        if self.round_to > 1:
            notes.append(f"each group keeps a multiple of {self.round_to} channels ({self.round_reason or 'round-to'})")
        unprunable = [{"id": gr.id, "layers": list(self.setup.layers_of.get(gr.id) or gr.producers),
                       "reason": "; ".join(gr.reasons)} for gr in self.setup.groups if not gr.prunable]
        before, after, share = fl
        return ChannelEstimates(
            name=opt.name, target_sparsity=float(p.target_sparsity), achieved_sparsity=achieved,
            balance=float(p.balance), reachable=reachable, estimated_speedup=float(speedup),
            estimated_ms=est_ms, baseline_ms=base_ms, flops_before=int(before), flops_after=int(after),
            flops_unknown=g.flops is None, flops_reduction=float(share), params_before=params_before,
            params_after=params_after, prunable_params=int(sum(gr.params for gr in groups)),
            compression=params_before / params_after if params_after > 0 else 1.0,
            recovery_confidence=float(min(max(rc, 0.0), 1.0)), loss_sensitivity=L,
            perf_sensitivity=float(sum(by_group.values())) if by_group else P,
            approximated=c.perf_basis != "measured", perf_basis=c.perf_basis, loss_basis=c.loss_basis,
            quantization={"enabled": bool(opt.quantization.enabled)}, notes=notes, layers=rows,
            speedup_basis=basis, round_to=self.round_to, channel_fraction=achieved,
            groups=len(self.setup.groups), prunable_groups=m, unprunable_groups=unprunable)

    def run(self, opt: Optimization) -> tuple[Optimization, ChannelEstimates]:
        new = self.allocate(opt)
        return new, self.evaluate(new)
