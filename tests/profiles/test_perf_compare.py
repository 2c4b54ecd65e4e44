"""compare_profiles: the pure comparison the CLI and the TUI share."""

from __future__ import annotations

import pytest

from sparsify_tui.profiles.compare import compare_profiles


def _doc(engine, base, layers, by_level):
    return {"kind": "perf", "engine": engine, "batch_size": 1, "cores": 2, "levels": [0.0, 0.9],
            "baseline_ms": base, "items_per_second": 1000 / base, "model_ms_by_level": by_level,
            "layers": [{"id": i, "name": i, "op_type": op, "baseline_ms": ms, "engine_internal": i.startswith("engine:")}
                       for i, op, ms in layers]}


def test_side_by_side_with_layers_missing_on_either_side():
    a = _doc("onnxruntime", 10.0, [("conv", "Conv", 6.0), ("relu", "Relu", 1.0), ("engine:run overhead", "engine", 3.0)],
             {"0.0": 10.0, "0.9": 5.0})
    b = _doc("deepsparse", 8.0, [("conv", "Conv", 3.0), ("relu", "Relu", 0.0), ("engine:shuffle", "engine", 5.0)],
             {"0.0": 8.0, "0.9": 2.0})
    r = compare_profiles(a, b)
    rows = {x["id"]: x for x in r["layers"]}
    assert list(rows) == ["conv", "relu", "engine:run overhead", "engine:shuffle"]
    assert rows["conv"]["diff_ms"] == pytest.approx(-3.0) and rows["conv"]["ratio"] == pytest.approx(0.5)
    assert rows["relu"]["ratio"] == 0.0
    assert rows["engine:run overhead"]["b_ms"] is None and rows["engine:run overhead"]["ratio"] is None
    assert rows["engine:shuffle"]["a_ms"] is None and rows["engine:shuffle"]["engine_internal"] is True
    assert r["only_in_a"] == ["engine:run overhead"] and r["only_in_b"] == ["engine:shuffle"]
    t = r["totals"]
    assert t["diff_ms"] == pytest.approx(-2.0) and t["speedup"] == pytest.approx(1.25)
    assert t["by_level"]["0.9"]["ratio"] == pytest.approx(0.4)
    assert t["a_layers_ms"] == pytest.approx(10.0) and t["b_layers_ms"] == pytest.approx(8.0)
    assert r["a"]["engine"] == "onnxruntime" and r["b"]["engine"] == "deepsparse"
