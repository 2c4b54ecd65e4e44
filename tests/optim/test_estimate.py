"""Estimates: whole-model FLOPs and params, unknown FLOPs, time scaling, recovery confidence, ranks, quant."""

from __future__ import annotations

import numpy as np
import pytest

from sparsify_tui.optim.allocate import GAUSSIAN_PROXY
from sparsify_tui.optim.estimate import RECOVERY_HELP, Evaluator, evaluate
from sparsify_tui.optim.optimization import LayerResult, default_optimization
from sparsify_tui.actions.optimizer import OptimizerContext, default_quant_layers, pick_profile
from sparsify_tui.optim.synthetic import loss_profile, perf_profile, synthetic_graph, synthetic_model


def _opt_with(graph, sparsities: dict[str, float]):
    opt = default_optimization(graph)
    opt.layers = {lay.id: LayerResult(sparsities.get(lay.id, 0.0)) for lay in graph.prunable_layers}
    return opt


def test_flops_and_params_cover_the_whole_model():
    graph = synthetic_graph([1000, 3000], [10**6, 4 * 10**6], extra_params=500, relu_flops=7)
    est = evaluate(graph, _opt_with(graph, {"conv0": 0.5, "conv1": 0.25}))
    assert est.flops_before == graph.flops == 5 * 10**6 + 2 * 7
    assert est.flops_after == graph.flops - 500_000 - 1_000_000
    assert est.params_before == graph.params == 4500
    assert est.params_after == 4500 - 500 - 750
    assert est.compression == pytest.approx(4500 / 3250)
    assert est.achieved_sparsity == pytest.approx((500 + 750) / 4000)
    assert est.flops_reduction == pytest.approx(est.flops_before / est.flops_after)


def test_unknown_flops_are_reported_not_zero_and_not_a_crash():
    graph = synthetic_graph([1000, 1000], [None, 10**6])
    assert graph.flops is None
    est = evaluate(graph, _opt_with(graph, {"conv0": 0.9, "conv1": 0.5}))
    assert est.flops_unknown and est.flops_before == graph.flops_known
    lay = {x.id: x for x in est.layers}
    assert lay["conv0"].flops_before is None and lay["conv0"].flops_after is None
    assert lay["conv0"].est_speedup == 1.0  # nothing known to estimate from
    assert est.estimated_ms is None and est.perf_basis == "flops"
    assert any("unknown FLOPs" in n for n in est.notes)
    d = est.to_dict()
    assert d["flops_unknown"] is True and d["layers"][0]["flops_before"] is None


def test_estimated_time_rescales_layer_sums_to_the_measured_baseline():
    graph = synthetic_graph([1000, 1000])
    perf = perf_profile(graph, {"conv0": 2.0, "conv1": 2.0}, {"conv0": 0.5, "conv1": 0.5},
                        {"conv0": 0.0, "conv1": 0.0}, other_ms=0.0)
    perf["baseline_ms"] = 8.0  # the whole model measured twice the sum of its layers
    est = evaluate(graph, _opt_with(graph, {"conv0": 0.99, "conv1": 0.0}), perf)
    # conv0 saves half of its 2 ms in layer time, i.e. 2 ms of model time after scaling by 8/4
    assert est.baseline_ms == 8.0 and est.estimated_ms == pytest.approx(6.0)
    assert est.estimated_speedup == pytest.approx(8 / 6)
    lay = {x.id: x for x in est.layers}
    assert lay["conv0"].est_speedup == pytest.approx(2.0)
    assert lay["conv0"].perf_sensitivity == pytest.approx(2.0)
    assert not est.approximated and est.perf_basis == "measured"


def test_recovery_confidence_definition():
    graph = synthetic_graph([1000, 3000])
    loss = loss_profile(graph, {"conv0": 1.0, "conv1": 3.0}, {"conv0": 1.0, "conv1": 1.0})
    ev = Evaluator(graph, loss=loss)
    assert ev.evaluate(_opt_with(graph, {})).recovery_confidence == 1.0
    est = ev.evaluate(_opt_with(graph, {"conv0": 0.5, "conv1": 0.9}))
    # 1 - (1*0.5 + 3*0.9) / (1*0.99 + 3*0.99)
    assert est.recovery_confidence == pytest.approx(1 - 3.2 / 3.96)
    assert est.loss_sensitivity == pytest.approx(3.2)
    lay = {x.id: x for x in est.layers}
    assert lay["conv0"].recovery == pytest.approx(1 - 0.5 / 0.99)
    assert "heuristic" in RECOVERY_HELP
    full = ev.evaluate(_opt_with(graph, {"conv0": 0.99, "conv1": 0.99}))
    assert full.recovery_confidence == pytest.approx(0.0)


def test_gaussian_fallback_and_labels():
    graph = synthetic_graph([1000])
    est = evaluate(graph, _opt_with(graph, {"conv0": 0.9}))
    assert est.loss_basis == "gaussian" and est.layers[0].loss_sensitivity == pytest.approx(GAUSSIAN_PROXY[90])
    # independent check: the smallest 90% (by |w|) of Gaussian samples hold this share of the squared norm
    w = np.sort(np.abs(np.random.default_rng(0).standard_normal(200_000)))
    assert GAUSSIAN_PROXY[90] == pytest.approx((w[:180_000] ** 2).sum() / (w ** 2).sum(), abs=0.01)
    assert any("no loss profile" in n for n in est.notes)


def test_rank_labels():
    graph, perf, loss = synthetic_model(40, seed=2)
    est = Evaluator(graph, perf, loss).evaluate(default_optimization(graph))
    labels = [x.loss_rank for x in est.layers]
    assert labels.count("top 5%") == 2
    assert {"high", "medium", "low"} <= set(labels)
    top = max(est.layers, key=lambda x: loss["layers"][int(x.id[4:])]["sensitivity"])
    assert top.loss_rank == "top 5%"


def test_evaluate_allocates_when_layers_are_empty():
    graph, perf, loss = synthetic_model(30, seed=4)
    est = evaluate(graph, default_optimization(graph), perf, loss)
    assert abs(est.achieved_sparsity - 0.85) < 0.005 * 0.85


def test_quantization_estimates_and_default_layers():
    graph, perf, loss = synthetic_model(40, seed=2)
    quant = {"kind": "quant", "layers": [{"id": f"conv{i}", "sensitivity": float(i)} for i in range(40)],
             "model": {"output_change": 0.01, "fp32_ms": 10.0, "int8_ms": 4.0}}
    layers, skipped = default_quant_layers(graph, quant)
    assert layers == "all" and set(skipped) == {"conv39", "conv38"}
    ev = Evaluator(graph, perf, loss, quant)
    opt = ev.allocate(default_optimization(graph))
    opt.quantization.enabled, opt.quantization.skipped = True, skipped
    est = ev.evaluate(opt)
    q = est.quantization
    assert q["layers"] == 38 and q["speedup"] == pytest.approx(2.5)
    assert q["estimated_speedup_with_quant"] == pytest.approx(est.estimated_speedup * 2.5)
    assert q["sensitivity"] == pytest.approx(sum(range(38)))
    assert not {x.id for x in est.layers if x.quantized} & set(skipped)


def test_project_profiles_are_picked_newest_fresh_first(corpus, tmp_path):
    from sparsify_tui.analysis import analyze
    from sparsify_tui.project import Project

    proj = Project.create(corpus.path("mobilenetv3"), tmp_path / "p", input_shapes=corpus.input_shapes("mobilenetv3"))
    try:
        graph = analyze(proj.model_path, proj.input_shapes)
        ms = {lay.id: 0.1 for lay in graph.prunable_layers}
        docs = []
        for k in range(2):
            doc = perf_profile(graph, ms, {i: 0.5 for i in ms}, {i: 0.3 for i in ms})
            doc["baseline_ms"] = 10.0 + k
            docs.append(proj.add_profile("perf", f"p{k}", {"batch_size": 1, "k": k}, "synthetic", "0", {}, doc))
        entry, doc, notes = pick_profile(proj, "perf")
        assert entry.id == docs[1].id and doc["baseline_ms"] == 11.0 and notes == []
        entry, _, _ = pick_profile(proj, "perf", prefer_id=docs[0].id)
        assert entry.id == docs[0].id
        ctx = OptimizerContext.for_project(proj, graph)
        assert ctx.profile_ids == {"perf": docs[1].id, "loss": "", "quant": ""}
        est = ctx.evaluator.evaluate(ctx.attach(default_optimization(graph)))
        assert est.baseline_ms == 11.0 and est.perf_basis == "measured" and est.loss_basis == "approx"
    finally:
        proj.close()
