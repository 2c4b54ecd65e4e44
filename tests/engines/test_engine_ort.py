"""ONNX Runtime backend on a real model: profiler events mapped back to every original layer."""

from __future__ import annotations

import statistics

import pytest

from sparsify_tui.engines import ort
from sparsify_tui.engines.modelinfo import load_model_info
from sparsify_tui.engines.inputs import make_inputs


@pytest.fixture(scope="module")
def resnet_ort(corpus):
    path = str(corpus.path("resnet50"))
    shapes = corpus.input_shapes("resnet50")
    info = load_model_info(path, shapes)
    res = ort.profile(path, info, make_inputs(path, 1, shapes), cores=2, iterations=3, warmup=1, repeats=2)
    return info, res


def test_every_layer_is_mapped_and_the_times_add_up(resnet_ort):
    info, res = resnet_ort
    assert info.source == "analysis"
    live = [m for m in info.layers if not m.constant]
    assert len(info.layers) == 415 and len(live) == 176  # 239 ConstantOfShape nodes build the weights
    assert all(m.id in res["owner"] for m in info.layers)  # every layer belongs to an executed node
    convs = [m for m in live if m.op_type == "Conv"]
    assert len(convs) == 53 and all(res["layer_ms"][m.id] > 0 for m in convs)
    assert all(res["layer_ms"][m.id] == 0 for m in info.layers if m.constant)
    # ORT fuses (Conv+BN+Relu, NCHWc with the residual Sum): groups of several layers
    multi = [g for g in res["groups"].values() if len(g) > 1]
    assert len(multi) >= 40
    by_id = {m.id: m for m in info.layers}
    assert all(any(by_id[i].op_type == "Conv" for i in g) for g in multi)
    # node times + engine-internal rows = the median model_run
    total = sum(res["layer_ms"].values()) + sum(r["ms"] for r in res["internal"])
    assert total == pytest.approx(statistics.median(res["iteration_ms"]), rel=1e-6)
    assert len(res["repeat_ms"]) == 2 and len(res["iteration_ms"]) == 6


def test_convs_get_most_of_their_group_time(resnet_ort):
    info, res = resnet_ort
    # with FLOPs weighting, a conv gets more of its group's time than the elementwise layers fused with it
    for members in res["groups"].values():
        convs = [i for i in members if info.layers[[m.id for m in info.layers].index(i)].op_type == "Conv"]
        others = [i for i in members if i not in convs]
        for c in convs:
            for o in others:
                assert res["layer_ms"][c] >= res["layer_ms"][o]


def test_approximated_levels_follow_prunable_flops(resnet_ort):
    info, res = resnet_ort
    conv = next(m for m in info.layers if m.op_type == "Conv")
    relu = next(m for m in info.layers if m.op_type == "Relu")
    b = res["layer_ms"][conv.id]
    assert ort.approx_level_ms(b, conv, 0.9) == pytest.approx(b * (1 - 0.9 * ort.prunable_fraction(conv)))
    assert ort.prunable_fraction(conv) > 0.95
    assert ort.approx_level_ms(1.0, relu, 0.9) == 1.0
