"""The speedup of a channel plan ({group id: fraction of its channels removed}) from a channel perf profile.

A group's saving at a fraction is interpolated linearly between the profile's measured fractions (through
0 at 0; beyond the largest fraction, along the last segment). Savings add over groups, with one correction:
a layer read from one pruned group and written to another (a convolution between two groups) loses
``1 - (1-a)(1-b)`` of its FLOPs, not ``a + b``. Each group's measured saving is therefore scaled by the
share of its removed FLOPs that the plan still removes once the overlaps are counted once (an overlap is
split between the groups in proportion to what each removes alone). The estimate is
``dense_ms / (dense_ms - saved_ms)``.
"""

from __future__ import annotations

from typing import Any, Mapping

from sparsify_tui.errors import UsageError


def _interp(points: list[tuple[float, float]], f: float) -> float:
    pts = [(0.0, 0.0)] + sorted(points)
    for (f0, y0), (f1, y1) in zip(pts, pts[1:]):
        if f <= f1:
            return y0 + (y1 - y0) * (f - f0) / (f1 - f0) if f1 > f0 else y1
    (f0, y0), (f1, y1) = pts[-2], pts[-1]
    return y1 + (y1 - y0) * (f - f1) / (f1 - f0) if f1 > f0 else y1


def _rows_by_group(profile: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in profile.get("rows") or []:
        out.setdefault(str(r["group"]), []).append(r)
    return out


def group_shares(removed: Mapping[str, Mapping[str, float]], layer_flops: Mapping[str, float],
                 gamma: float = 1.0) -> dict[str, float]:
    """{group: FLOPs it removes} when the groups of ``removed`` ({group: {layer: FLOPs removed alone}}) are
    pruned together: a layer keeps the product ``k`` of what each group leaves of it, loses ``1 - k**gamma``
    of its cost (``gamma`` 1: FLOPs; above 1: a thinner layer also runs more efficiently, as the channel perf
    fit finds for ONNX Runtime's 3x3 convolutions), and what it loses is split between its groups in
    proportion to what each removes alone."""
    share: dict[str, float] = {g: 0.0 for g in removed}
    by_layer: dict[str, dict[str, float]] = {}
    for gid, rem in removed.items():
        for lid, v in rem.items():
            by_layer.setdefault(lid, {})[gid] = float(v)
    for lid, per in by_layer.items():
        dense = float(layer_flops.get(lid) or sum(per.values()))
        kept = 1.0
        for v in per.values():
            kept *= 1.0 - (min(1.0, v / dense) if dense > 0 else 0.0)
        joint = dense * (1.0 - kept ** gamma)
        total = sum(per.values())
        for g, v in per.items():
            share[g] += joint * v / total if total > 0 else 0.0
    return share


def estimated_saving(profile: dict, plan: Mapping[str, float]) -> dict[str, Any]:
    """``{"dense_ms", "saved_ms", "by_group": {group: ms}}`` of ``plan`` on the profile's engine."""
    rows = _rows_by_group(profile)
    layer_flops = {k: float(v) for k, v in (profile.get("layer_flops") or {}).items()}
    solo: dict[str, float] = {}
    removed: dict[str, dict[str, float]] = {}  # group -> layer -> FLOPs removed by the group alone
    for gid, f in plan.items():
        f = float(f)
        if f <= 0:
            continue
        if not 0 < f < 1:
            raise UsageError(f"channel group {gid!r}: the fraction removed must be in [0, 1), got {f}")
        if gid not in rows:
            raise UsageError(f"the channel perf profile has no group {gid!r}")
        grp = rows[gid]
        solo[gid] = _interp([(r["fraction"], float(r["saved_ms"])) for r in grp], f)
        layers = {lid for r in grp for lid in r["removed_flops"]}
        removed[gid] = {lid: max(0.0, _interp([(r["fraction"], float(r["removed_flops"].get(lid, 0)))
                                                 for r in grp], f)) for lid in layers}
    gamma = float(profile.get("gamma") or 1.0)
    share = group_shares(removed, layer_flops, gamma)
    by_group = {}
    for gid, s in solo.items():
        alone = group_shares({gid: removed[gid]}, layer_flops, gamma)[gid]
        by_group[gid] = s * (share[gid] / alone) if alone > 0 else s
    return {"dense_ms": float(profile["dense_ms"]), "saved_ms": sum(by_group.values()), "by_group": by_group}


def estimate_channel_speedup(profile: dict, plan: Mapping[str, float]) -> float:
    """The estimated speedup (dense time / pruned time) of ``plan`` from a channel perf profile."""
    est = estimated_saving(profile, plan)
    dense = est["dense_ms"]
    left = max(dense - est["saved_ms"], 0.05 * dense)  # never more than 20x from an extrapolation
    return dense / left


def flops_reduction(profile: dict, plan: Mapping[str, float]) -> float:
    """The share of the model's FLOPs the plan removes (overlaps counted once)."""
    est_layers: dict[str, dict[str, float]] = {}
    rows = _rows_by_group(profile)
    for gid, f in plan.items():
        if float(f) <= 0 or gid not in rows:
            continue
        grp = rows[gid]
        for lid in {lid for r in grp for lid in r["removed_flops"]}:
            est_layers.setdefault(lid, {})[gid] = max(0.0, _interp(
                [(r["fraction"], float(r["removed_flops"].get(lid, 0))) for r in grp], float(f)))
    layer_flops = profile.get("layer_flops") or {}
    gone = 0.0
    for lid, per in est_layers.items():
        dense = float(layer_flops.get(lid) or sum(per.values()))
        kept = 1.0
        for v in per.values():
            kept *= 1.0 - min(1.0, v / dense) if dense > 0 else 1.0
        gone += dense * (1.0 - kept)
    total = float(profile.get("total_flops") or 0)
    return gone / total if total > 0 else 0.0
