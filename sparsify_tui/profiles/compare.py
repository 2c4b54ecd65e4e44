"""Compare two perf profiles layer by layer (pure functions; the TUI reuses them)."""

from __future__ import annotations

from typing import Any

from sparsify_tui.settings import level_key


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a <= 0:
        return None
    return b / a


def compare_profiles(a: dict, b: dict) -> dict[str, Any]:
    """Side by side: ``layers`` [{id, name, op_type, a_ms, b_ms, diff_ms, ratio}] and ``totals``.

    Rows follow A's order, then layers only B has. A layer missing from one
    profile has ``None`` there (and no diff/ratio). ``diff_ms = b - a``,
    ``ratio = b / a``. ``totals`` compares the baselines, items per second and
    the model time at every level both profiles have.
    """
    rows_a = {r["id"]: r for r in a.get("layers", [])}
    rows_b = {r["id"]: r for r in b.get("layers", [])}
    order = list(rows_a) + [i for i in rows_b if i not in rows_a]
    layers = []
    for lid in order:
        ra, rb = rows_a.get(lid), rows_b.get(lid)
        if (ra and ra.get("constant_folded") and not ra.get("baseline_ms")) and (
                rb is None or (rb.get("constant_folded") and not rb.get("baseline_ms"))):
            continue
        a_ms = None if ra is None else float(ra.get("baseline_ms", 0.0))
        b_ms = None if rb is None else float(rb.get("baseline_ms", 0.0))
        src = ra or rb or {}
        layers.append({
            "id": lid,
            "name": src.get("name", ""),
            "op_type": src.get("op_type", ""),
            "engine_internal": bool(src.get("engine_internal", False)),
            "a_ms": a_ms,
            "b_ms": b_ms,
            "diff_ms": None if a_ms is None or b_ms is None else b_ms - a_ms,
            "ratio": _ratio(a_ms, b_ms),
        })
    levels_a = a.get("model_ms_by_level", {}) or {}
    levels_b = b.get("model_ms_by_level", {}) or {}
    common = [k for k in levels_a if k in levels_b]
    by_level = {k: {"a_ms": levels_a[k], "b_ms": levels_b[k], "diff_ms": levels_b[k] - levels_a[k],
                    "ratio": _ratio(levels_a[k], levels_b[k])} for k in common}
    base_a, base_b = a.get("baseline_ms"), b.get("baseline_ms")
    sum_a = sum(r["a_ms"] for r in layers if r["a_ms"] is not None)
    sum_b = sum(r["b_ms"] for r in layers if r["b_ms"] is not None)
    totals = {
        "a_ms": base_a, "b_ms": base_b,
        "diff_ms": None if base_a is None or base_b is None else base_b - base_a,
        "ratio": _ratio(base_a, base_b),
        "speedup": _ratio(base_b, base_a),
        "a_layers_ms": sum_a, "b_layers_ms": sum_b,
        "a_items_per_second": a.get("items_per_second"), "b_items_per_second": b.get("items_per_second"),
        "by_level": by_level,
    }
    def describe(p: dict) -> dict:
        return {k: p.get(k) for k in ("engine", "engine_version", "approximated", "batch_size", "cores",
                                      "iterations", "created", "model_path")}

    return {
        "a": describe(a),
        "b": describe(b),
        "layers": layers,
        "totals": totals,
        "only_in_a": [i for i in rows_a if i not in rows_b],
        "only_in_b": [i for i in rows_b if i not in rows_a],
        "level_0_key": level_key(0.0),
    }
