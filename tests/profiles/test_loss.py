"""Loss profiles: the weight-magnitude approximation and the measured one-shot sensitivity."""

from __future__ import annotations

import json
import threading

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsify_tui.analysis import analyze
from sparsify_tui.errors import CancelledError, ProfileError, UsageError
from sparsify_tui.settings import LOSS_APPROX_LEVELS, level_key
from sparsify_tui.profiles.loss import (
    LOSS_APPROX_HELP, approx_loss_profile, magnitude_proxy, run_loss_profile,
)
from sparsify_tui.metrics import classify_output, compare_outputs
from sparsify_tui.profiles.ranks import average_ranks, rank_correlation, sensitivity_ranks

RNG = np.random.default_rng(7)


def _model(path, nodes, inputs, outputs, inits, opset=13):
    g = helper.make_graph(nodes, "m", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def dominant_model(path):
    """logits = x@Wa + x@Wb + x@Wz: Wa carries the output (|w| ~ 1), Wb is 1e-3 of it, Wz is all zeros."""
    wa = RNG.standard_normal((16, 10)).astype(np.float32)
    wb = (RNG.standard_normal((16, 10)) * 1e-3).astype(np.float32)
    wz = np.zeros((16, 10), dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "wa"], ["a"], name="big"),
        helper.make_node("MatMul", ["x", "wb"], ["b"], name="small"),
        helper.make_node("MatMul", ["x", "wz"], ["z"], name="zero"),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "z"], ["logits"]),
    ]
    return _model(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                  [numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(wb, "wb"),
                   numpy_helper.from_array(wz, "wz")])


def chain_model(path):
    """A CNN with a residual Add and a Constant-node weight: conv1 -> relu -> conv2 (+ skip) -> gap -> fc."""
    w1 = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = RNG.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.1
    wfc = RNG.standard_normal((8, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(w2, "w2v")),
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "wfc"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    return _model(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                  [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 5]),
                   helper.make_tensor_value_info("c2", TensorProto.FLOAT, [1, 8, 12, 12])],
                  [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(wfc, "wfc")])


@pytest.fixture
def dominant(tmp_path):
    return dominant_model(tmp_path / "dominant.onnx")


@pytest.fixture
def chain(tmp_path):
    return chain_model(tmp_path / "chain.onnx")


def _curve(row):
    return [row["sensitivity_by_level"][k] for k in sorted(row["sensitivity_by_level"], key=float)]


# ---------------------------------------------------------------- the proxy
def test_magnitude_proxy_matches_its_definition():
    w = RNG.standard_normal((7, 13, 3)).astype(np.float32)
    levels = [0.0, 0.01, 0.1, 0.33, 0.5, 0.9, 0.99]
    got = magnitude_proxy(w, levels)
    sq = np.sort(w.ravel().astype(np.float64) ** 2)
    for s, v in zip(levels, got):
        k = round(s * w.size)
        assert v == pytest.approx(sq[:k].sum() / sq.sum(), rel=1e-6, abs=1e-12)
    assert got[0] == 0.0
    assert np.all(np.diff(got) >= 0)
    assert np.all(magnitude_proxy(np.zeros((4, 4), np.float32), levels) == 0.0)


def test_approx_profile_document(chain):
    graph = analyze(chain)
    doc = approx_loss_profile(graph)
    assert doc["kind"] == "loss" and doc["method"] == "approx" and doc["schema_version"] >= 1
    assert doc["levels"] == list(LOSS_APPROX_LEVELS) and len(doc["levels"]) == 100
    assert doc["eval_sparsity"] == 0.9 and doc["rank_correlation"] is None
    assert [r["id"] for r in doc["layers"]] == ["c1", "c2", "logits"]
    for r in doc["layers"]:
        curve = _curve(r)
        assert len(curve) == 100 and curve[0] == 0.0
        assert all(b >= a for a, b in zip(curve, curve[1:]))
        assert 0 < r["sensitivity"] <= 1 and r["sensitivity"] == r["sensitivity_by_level"]["0.9"]
    assert sorted(r["rank"] for r in doc["layers"]) == [1, 2, 3]
    assert doc["average_sensitivity"] == pytest.approx(np.mean([r["sensitivity"] for r in doc["layers"]]))
    assert "squared weight norm" in LOSS_APPROX_HELP and doc["definition"] == LOSS_APPROX_HELP
    json.dumps(doc, allow_nan=False)


def test_approx_zero_layer_is_zero_everywhere(dominant):
    doc = approx_loss_profile(analyze(dominant))
    zero = next(r for r in doc["layers"] if r["id"] == "z")
    assert set(zero["sensitivity_by_level"].values()) == {0.0}
    assert zero["rank"] == 3


# ---------------------------------------------------------------- one-shot
def test_one_shot_dominant_layer_ranks_first_and_zero_layer_is_zero(dominant):
    doc = run_loss_profile(dominant, "one-shot", samples=3, levels=[0.5, 0.9], in_process=True)
    rows = {r["id"]: r for r in doc["layers"]}
    assert rows["a"]["rank"] == 1 and rows["b"]["rank"] == 2
    assert rows["a"]["sensitivity"] > 1000 * rows["b"]["sensitivity"] > 0
    assert set(rows["z"]["sensitivity_by_level"].values()) == {0.0}
    assert set(rows["z"]["raw_by_level"].values()) == {0.0}
    assert doc["output_kinds"] == ["logits"]
    for r in doc["layers"]:
        assert r["sensitivity_by_level"]["0.0"] == 0.0
    assert doc["samples"] == 3 and doc["levels"] == [0.0, 0.5, 0.9]


def test_one_shot_curves_smoothed_and_zero_at_zero(chain):
    doc = run_loss_profile(chain, "one-shot", samples=2, levels=[0.2, 0.4, 0.6, 0.8, 0.9], in_process=True)
    assert doc["execution"] == "downstream"
    for r in doc["layers"]:
        curve = _curve(r)
        raw = [r["raw_by_level"][k] for k in sorted(r["raw_by_level"], key=float)]
        assert curve[0] == 0.0 and raw[0] == 0.0
        assert all(b >= a for a, b in zip(curve, curve[1:]))
        assert curve == list(np.maximum.accumulate(raw))
        assert curve[-1] > 0
    assert -1.0 <= doc["rank_correlation"] <= 1.0
    assert doc["output_kinds"] == ["dist", "nse"]
    json.dumps(doc, allow_nan=False)


def test_one_shot_builds_one_session(chain, monkeypatch):
    made = []
    real = onnxruntime.InferenceSession

    class Counting(real):
        def __init__(self, *a, **kw):
            made.append(1)
            super().__init__(*a, **kw)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Counting)
    doc = run_loss_profile(chain, "one-shot", samples=2, levels=[0.3, 0.6, 0.9], in_process=True)
    assert len(made) == 1
    assert doc["runs"] == 3 * (3 + 1) * 2  # layers x (levels above 0 + the reference) x samples


def test_downstream_runs_match_whole_model_runs(chain):
    """The If-branch rewrite gives the same measurements as feeding weights to the whole model."""
    from sparsify_tui.profiles.downstream import LayerSwapRunner
    from sparsify_tui.profiles.fedmodel import WeightFedModel
    from sparsify_tui.engines.inputs import load_samples_for

    graph = analyze(chain)
    samples = load_samples_for(chain, graph, samples=2)
    down = LayerSwapRunner(chain, graph, samples)
    assert down.mode == "downstream"
    full = WeightFedModel(chain, graph)
    for layer in graph.prunable_layers:
        fw = down.weights[down.layer_weight[layer.id]]
        pruned = fw.pruned(0.7)
        got = down.change(layer.id, pruned)
        name = full.layer_weight[layer.id]
        dense = [full.run(s) for s in samples]
        want = compare_outputs(dense, [full.run(s, {name: pruned}) for s in samples]).value
        assert got == pytest.approx(want, rel=1e-3, abs=1e-9)


def test_one_shot_with_data_file_and_directory(tmp_path, chain):
    x = RNG.random((3, 3, 12, 12), dtype=np.float32)
    np.savez(tmp_path / "data.npz", x=x)
    doc = run_loss_profile(chain, "one-shot", data=tmp_path / "data.npz", samples=5, levels=[0.9],
                           in_process=True)
    assert doc["samples"] == 3  # the file holds 3 rows
    d = tmp_path / "dir"
    d.mkdir()
    for i in range(2):
        np.save(d / f"s{i}.npy", x[i:i + 1])
    doc2 = run_loss_profile(chain, "one-shot", data=d, samples=4, levels=[0.9], in_process=True)
    assert doc2["samples"] == 2
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x[:, :2])
    with pytest.raises(ProfileError, match="shape"):
        run_loss_profile(chain, "one-shot", data=bad, samples=1, levels=[0.9], in_process=True)
    with pytest.raises(UsageError):
        run_loss_profile(chain, "one-shot", data=tmp_path / "missing.npz", in_process=True)


def test_one_shot_cancel(chain):
    ev = threading.Event()
    ev.set()
    with pytest.raises(CancelledError):
        run_loss_profile(chain, "one-shot", samples=1, levels=[0.9], in_process=True, cancel=ev)


def test_one_shot_in_the_child_process(chain):
    events = []
    doc = run_loss_profile(chain, "one-shot", samples=1, levels=[0.5, 0.9], on_progress=events.append)
    assert doc["kind"] == "loss" and doc["method"] == "one-shot"
    assert any(e.get("event") == "partial" and e["data"]["layer"] == "logits" for e in events)
    assert any(e.get("event") == "progress" for e in events)
    assert all(r["sensitivity_by_level"]["0.0"] == 0.0 for r in doc["layers"])


def test_bad_arguments(chain):
    with pytest.raises(UsageError):
        run_loss_profile(chain, "magic")
    with pytest.raises(UsageError):
        run_loss_profile(chain, "one-shot", samples=0)
    with pytest.raises(UsageError):
        run_loss_profile(chain, "approx", levels=[1.5])


# ---------------------------------------------------------------- helpers
def test_rank_correlation_spearman_with_ties():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 1, 1], [1, 2, 3]) is None
    assert rank_correlation([1], [2]) is None
    assert list(average_ranks([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    # ties averaged: Pearson correlation of the average ranks (scipy.stats.spearmanr gives 0.632455532)
    assert rank_correlation([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)
    assert rank_correlation([3, 1, 2, 2, 5], [1, 2, 3, 4, 5]) == pytest.approx(0.3590924232)


def test_sensitivity_ranks_and_output_change():
    assert sensitivity_ranks([0.5, 2.0, None, 0.5]) == [2, 1, None, 2]
    p = np.array([[0.5, 0.25, 0.25]], np.float32)
    q = np.array([[0.25, 0.5, 0.25]], np.float32)
    assert classify_output(p) == "probabilities"
    assert compare_outputs([[p]], [[q]]).value == pytest.approx(0.5 * np.log(2) - 0.25 * np.log(2), rel=1e-5)
    logits = np.array([[1.0, 2.0, 3.0]], np.float32)
    assert classify_output(logits) == "class_scores"
    assert compare_outputs([[logits]], [[logits + 5.0]]).value == pytest.approx(0.0, abs=1e-7)
    y = RNG.standard_normal((1, 4, 5)).astype(np.float32)
    assert classify_output(y) == "regression"
    assert compare_outputs([[y]], [[2 * y]]).value == pytest.approx(1.0, rel=1e-6)
    assert compare_outputs([[np.array([1, 2, 3])]], [[np.array([1, 0, 3])]]).value == pytest.approx(1 / 3)
    assert compare_outputs([[y]], [[y]]).value == 0.0


# ---------------------------------------------------------------- real models
def test_approx_on_every_corpus_model(corpus):
    for key in corpus.all():
        graph = analyze(corpus.path(key), input_shapes=corpus.input_shapes(key))
        doc = approx_loss_profile(graph)
        assert len(doc["layers"]) == len(graph.prunable_layers) > 0, key
        for r in doc["layers"]:
            curve = _curve(r)
            assert curve[0] == 0.0 and all(0 <= a <= b <= 1 for a, b in zip(curve, curve[1:])), (key, r["id"])
        ranked = sorted(r["rank"] for r in doc["layers"])
        assert ranked[0] == 1, key


@pytest.mark.parametrize("key", ["wakeword", pytest.param("mobilenetv3", marks=pytest.mark.slow)])
def test_one_shot_on_corpus_model(corpus, key):
    levels = [0.5, 0.95] if key == "wakeword" else [0.95]
    doc = run_loss_profile(corpus.path(key), "one-shot", samples=1, levels=levels,
                           input_shapes=corpus.input_shapes(key), eval_sparsity=0.95, in_process=True)
    graph = analyze(corpus.path(key), input_shapes=corpus.input_shapes(key))
    assert doc["execution"] == "downstream"
    assert [r["id"] for r in doc["layers"]] == [layer.id for layer in graph.prunable_layers]
    measured = [r for r in doc["layers"] if r["sensitivity"] is not None]
    assert len(measured) == len(doc["layers"])
    assert sum(r["sensitivity"] > 0 for r in measured) >= len(measured) * 0.8
    assert all(r["sensitivity_by_level"][level_key(0.0)] == 0.0 for r in measured)
    assert doc["rank_correlation"] is not None


def test_one_shot_cancel_while_running(chain):
    ev = threading.Event()
    seen = []

    def on_progress(e):
        seen.append(e)
        if e.get("done", 0) >= 1:
            ev.set()  # cancel after the first layer

    with pytest.raises(CancelledError):
        run_loss_profile(chain, "one-shot", samples=1, levels=[0.5, 0.9], in_process=True, cancel=ev,
                         on_progress=on_progress)
    assert any(e.get("event") == "partial" for e in seen)  # the finished layer was reported
