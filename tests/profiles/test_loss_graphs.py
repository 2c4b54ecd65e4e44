"""The one-session downstream rewrite on awkward graphs: subgraph weights, quantized weights, shared
weights, Constant / ConstantOfShape weights, old IR. Each must measure exactly what running the whole
model with the changed weight measures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsify_tui.analysis import analyze
from sparsify_tui.profiles.downstream import LayerSwapRunner
from sparsify_tui.profiles.loss import run_loss_profile
from sparsify_tui.engines.inputs import load_samples_for
from sparsify_tui.metrics import compare_outputs
from sparsify_tui.profiles.fedmodel import WeightFedModel

RNG = np.random.default_rng(5)


def _w(shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _save(g, path, opset=13, ir=8):
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def if_model(path):
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["h", "wt"], ["y_then"], name="mm_then")], "then", [],
        [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(_w((4, 3)), "wt")])
    else_g = helper.make_graph(
        [helper.make_node("MatMul", ["h", "we"], ["y_else"], name="mm_else")], "else", [],
        [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, [2, 3])])
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h0"], name="mm0"),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0),
        helper.make_node("Greater", ["sx", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g, name="if0"),
    ]
    g = helper.make_graph(nodes, "ifm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])],
                          [numpy_helper.from_array(_w((4, 3)), "we"), numpy_helper.from_array(_w((4, 4)), "w0"),
                           numpy_helper.from_array(np.array(-100.0, np.float32), "zero")])
    return _save(g, path)


def quant_model(path):
    q = RNG.integers(-100, 100, size=(6, 3, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(np.full(6, 0.02, np.float32), "ws"),
             numpy_helper.from_array(np.array([0, 3, -2, 0, 1, 0], np.int8), "wz"),
             numpy_helper.from_array(_w((6, 4)), "wfc")]
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wdq"], axis=0),
        helper.make_node("Conv", ["x", "wdq"], ["c"], pads=[1, 1, 1, 1], name="qconv"),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "wfc"], ["out"], name="fc"),
    ]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])], inits)
    return _save(g, path)


def shared_cos_model(path):
    """Two MatMuls share one weight; a third weight is a ConstantOfShape; opset 9, IR 3 (initializers
    listed as graph inputs)."""
    w = _w((5, 5))
    nodes = [
        helper.make_node("ConstantOfShape", ["cshape"], ["wc"],
                         value=numpy_helper.from_array(np.array([0.1], np.float32), "")),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["h2"], name="mm2"),
        helper.make_node("MatMul", ["h2", "wc"], ["out"], name="mm3"),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([5, 7], np.int64), "cshape")]
    g = helper.make_graph(nodes, "s", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5]),
                                       helper.make_tensor_value_info("w", TensorProto.FLOAT, [5, 5]),
                                       helper.make_tensor_value_info("cshape", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 7])], inits)
    return _save(g, path, opset=9, ir=3)


def slash_if_model(path):
    """if_model with its nodes named the way exporters name them ("/block/If"): subgraph paths hold '/'."""
    if_model(path)
    m = onnx.load(str(path))
    for i, n in enumerate(m.graph.node):
        n.name = "/block/if0" if n.op_type == "If" else n.name or f"/block/{n.op_type}_{i}"
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("builder", [if_model, quant_model, shared_cos_model, slash_if_model])
def test_downstream_equals_whole_model(tmp_path, builder):
    path = builder(tmp_path / f"{builder.__name__}.onnx")
    graph = analyze(path)
    samples = load_samples_for(path, graph, samples=2)
    down = LayerSwapRunner(path, graph, samples)
    assert down.mode == "downstream", down.note
    full = WeightFedModel(path, graph)
    measured = 0
    for layer in graph.prunable_layers:
        if layer.id not in down.layer_weight:
            continue
        fw = down.weights[down.layer_weight[layer.id]]
        pruned = fw.pruned(0.6)
        if pruned is None:
            continue
        got = down.changes(layer.id, [pruned])[0]
        name = full.layer_weight[layer.id]
        dense = [full.run(s) for s in samples]
        want = compare_outputs(dense, [full.run(s, {name: pruned}) for s in samples]).value
        assert got == pytest.approx(want, rel=1e-3, abs=1e-9), layer.id
        measured += 1
    down.close()
    assert measured >= 2


def test_subgraph_weight_found_under_a_node_name_holding_slashes(tmp_path):
    from sparsify_tui.profiles.downstream import DownstreamModel

    path = slash_if_model(tmp_path / "m.onnx")
    graph = analyze(path)
    assert graph.layer("y_then").graph_path == "/block/if0/then_branch"
    dm = DownstreamModel(path, graph)
    assert dm.skipped == {}
    # the cut of the then-branch weight re-runs the If node alone: it reads the condition and the Relu's output
    assert dm.layer_cut["y_then"].boundary == ["cond", "h"]


def test_quantized_weight_pruned_to_its_zero_point(tmp_path):
    path = quant_model(tmp_path / "q.onnx")
    graph = analyze(path)
    down = LayerSwapRunner(path, graph, load_samples_for(path, graph, samples=1))
    fw = down.weights[down.layer_weight["c"]]
    assert fw.dense.dtype == np.int8
    pruned = fw.pruned(0.5)
    zp = np.array([0, 3, -2, 0, 1, 0], np.int8).reshape(6, 1, 1, 1)
    assert int(np.count_nonzero(pruned == zp)) >= round(0.5 * pruned.size)
    down.close()


def test_one_shot_on_subgraph_and_shared_weights(tmp_path):
    doc = run_loss_profile(if_model(tmp_path / "if.onnx"), "one-shot", samples=2, levels=[0.5, 0.9],
                           in_process=True)
    rows = {r["id"]: r for r in doc["layers"]}
    assert {"h0", "y_then", "y_else"} <= set(rows)
    assert rows["y_then"]["sensitivity"] > 0 and rows["h0"]["sensitivity"] > 0
    # the else branch never runs on these inputs (sum(x) > -100): pruning it cannot change anything
    assert rows["y_else"]["sensitivity"] == 0.0
    doc2 = run_loss_profile(shared_cos_model(tmp_path / "s.onnx"), "one-shot", samples=2, levels=[0.5, 0.9],
                            in_process=True)
    rows2 = {r["id"]: r for r in doc2["layers"]}
    assert rows2["h"]["sensitivity_by_level"] == rows2["h2"]["sensitivity_by_level"]  # one shared weight
    assert rows2["out"]["sensitivity"] > 0


@pytest.mark.parametrize("builder", [if_model, shared_cos_model])
def test_selection_tree_equals_one_if_per_cut(tmp_path, builder):
    from sparsify_tui.profiles.downstream import DownstreamModel

    path = builder(tmp_path / "m.onnx")
    graph = analyze(path)
    sample = load_samples_for(path, graph, samples=1)[0]
    got = {}
    for tree in (False, True):
        dm = DownstreamModel(path, graph, use_tree=tree)
        dm.build_session()
        outs, bnd = dm.run_dense(sample)
        got[tree] = [dm.run_cut(lid, sample, bnd, dm.weights[dm.layer_weight[lid]].pruned(0.5)
                                if dm.weights[dm.layer_weight[lid]].pruned(0.5) is not None
                                else dm.weights[dm.layer_weight[lid]].dense)
                     for lid in sorted(dm.layer_cut)]
    assert len(got[False]) >= 2
    for a, b in zip(got[False], got[True]):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_approx_on_a_quantized_weight_uses_dequantized_magnitudes(tmp_path):
    from sparsify_tui.profiles.loss import approx_loss_profile

    path = quant_model(tmp_path / "q.onnx")
    doc = approx_loss_profile(analyze(path))
    row = next(r for r in doc["layers"] if r["id"] == "c")
    q = onnx.numpy_helper.to_array(next(i for i in onnx.load(str(path)).graph.initializer if i.name == "wq"))
    zp = np.array([0, 3, -2, 0, 1, 0], np.float64).reshape(6, 1, 1, 1)
    sq = np.sort(((q.astype(np.float64) - zp) * 0.02).ravel() ** 2)
    k = round(0.5 * q.size)
    assert row["sensitivity_by_level"]["0.5"] == pytest.approx(sq[:k].sum() / sq.sum(), rel=1e-5)
