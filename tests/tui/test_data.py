"""The screens' data layer (no Textual): joining the model with profiles, interpolation, Value Display."""

from __future__ import annotations

import math

import pytest

from sparsify_tui.tui.data import build_model_data, interpolate, op_summaries, totals, transform


def test_interpolate_and_transform():
    pts = [(0.0, 10.0), (0.5, 6.0), (0.9, 2.0)]
    assert interpolate(pts, 0.0) == 10.0
    assert interpolate(pts, 0.25) == pytest.approx(8.0)
    assert interpolate(pts, 0.7) == pytest.approx(4.0)
    assert interpolate(pts, 0.99) == 2.0  # clamps at the last level
    assert interpolate([], 0.5) is None
    assert transform(5.0, "percent", 20.0) == 25.0
    assert transform(math.e, "log", None) == pytest.approx(1.0)
    assert transform(0.0, "log", None) is None
    assert transform(3.0, "measured", None) == 3.0


def test_build_model_data_on_the_demo(demo_project):
    from sparsify_tui.analysis import analyze

    graph = analyze(demo_project.model_path)
    perf = demo_project.load_profile(demo_project.profiles_of("perf")[0])
    loss = demo_project.load_profile(demo_project.profiles_of("loss")[0])
    # an engine-internal step (like DeepSparse's Shuffle) between two layers
    layers = list(perf["layers"])
    layers.insert(3, {"id": "shuffle_0", "name": "Shuffle", "op_type": "Shuffle", "baseline_ms": 0.5,
                      "ms_by_level": {"0.0": 0.5, "0.9": 0.5}, "engine_internal": True})
    perf = dict(perf, layers=layers)
    data = build_model_data(graph, perf, loss)
    assert len(data.rows) == len(graph.layers) + 1
    ids = [r.id for r in data.rows]
    assert ids.index("shuffle_0") == ids.index(layers[2]["id"]) + 1
    shuffle = data.row("shuffle_0")
    assert shuffle.engine_internal and shuffle.depth is None and shuffle.perf_sensitivity(0.9) == 0.0
    conv = data.row("layer1.0.conv1")
    assert conv.prunable and conv.flops == graph.layer("layer1.0.conv1").flops
    entry = next(e for e in perf["layers"] if e["id"] == "layer1.0.conv1")
    assert conv.baseline_ms == entry["baseline_ms"]
    assert conv.perf_sensitivity(0.9) == pytest.approx(entry["baseline_ms"] - entry["ms_by_level"]["0.9"])
    loss_entry = next(e for e in loss["layers"] if e["id"] == "layer1.0.conv1")
    assert conv.loss_sensitivity(0.9) == pytest.approx(loss_entry["sensitivity"])
    assert data.row("layer1.0.add").loss_sensitivity(0.9) is None  # not prunable: no loss value
    assert data.summary_levels == [x for x in perf["levels"] if x > 0]
    # summaries by op type add up to the totals
    sums = {s.op_type: s for s in op_summaries(data.rows, None, 0.9)}
    assert sums["Conv"].count == 11 and sums["Conv"].prunable == 11
    assert sum(s.params for s in sums.values()) == graph.params
    assert sum(s.ms for s in sums.values() if s.ms) == pytest.approx(data.total_ms(None))
    t = totals(graph, perf, loss)
    assert t.params == graph.params and t.baseline_ms == perf["baseline_ms"] and t.approximated


def test_rows_without_a_model_come_from_the_profile(demo_project):
    perf = demo_project.load_profile(demo_project.profiles_of("perf")[0])
    data = build_model_data(None, perf, None)
    assert [r.id for r in data.rows] == [e["id"] for e in perf["layers"]]
    assert data.rows[0].depth == 0 and data.rows[-1].depth == len(perf["layers"]) - 1
