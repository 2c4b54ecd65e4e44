"""INT8 quantization profile: per-layer simulated sensitivity and the whole model through ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsify_tui.analysis import analyze
from sparsify_tui.profiles.quant import (
    activation_qparams, compute_quant, fake_quant_weight, run_quant_profile, weight_channel_axis,
)

RNG = np.random.default_rng(11)


def _save(m, path):
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def outlier_model(path):
    """Two parallel MatMuls into the logits; ``wo`` has one huge outlier per output channel, so int8
    per-channel quantization wipes out its other weights; ``wn`` is well behaved."""
    wn = RNG.standard_normal((32, 10)).astype(np.float32)
    wo = RNG.standard_normal((32, 10)).astype(np.float32)
    wo[0, :] = 500.0  # per output channel (axis -1) the max is 500: every other weight rounds to ~0
    nodes = [
        helper.make_node("MatMul", ["x", "wn"], ["n"], name="normal"),
        helper.make_node("MatMul", ["x", "wo"], ["o"], name="outlier"),
        helper.make_node("Add", ["n", "o"], ["logits"]),
    ]
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                          [numpy_helper.from_array(wn, "wn"), numpy_helper.from_array(wo, "wo")])
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_fake_quant_weight_per_channel():
    w = RNG.standard_normal((6, 4, 3, 3)).astype(np.float32)
    q = fake_quant_weight(w, 0)
    scale = np.abs(w).reshape(6, -1).max(axis=1) / 127
    err = np.abs(q - w).reshape(6, -1).max(axis=1)
    assert np.all(err <= scale / 2 + 1e-7)
    assert np.all(np.abs(q).reshape(6, -1).max(axis=1) == pytest.approx(np.abs(w).reshape(6, -1).max(axis=1)))
    steps = (q.reshape(6, -1) / scale[:, None])
    assert np.allclose(steps, np.round(steps), atol=1e-3)  # on the int8 grid
    # exactly representable weights do not move
    grid = (RNG.integers(-127, 128, size=(3, 5)).astype(np.float32)) * 0.5
    grid[:, 0] = 127 * 0.5
    assert np.array_equal(fake_quant_weight(grid, 0), grid)
    assert np.array_equal(fake_quant_weight(np.zeros((2, 3), np.float32), 0), np.zeros((2, 3)))


def test_activation_qparams():
    s, zp = activation_qparams(-1.0, 3.0)
    assert s == pytest.approx(4.0 / 255, rel=1e-6) and zp == 64.0
    s, zp = activation_qparams(0.5, 2.0)  # widened to include 0
    assert s == pytest.approx(2.0 / 255, rel=1e-6) and zp == 0.0
    assert activation_qparams(0.0, 0.0) == (1.0, 0.0)


def test_weight_channel_axis(tmp_path):
    graph = analyze(outlier_model(tmp_path / "o.onnx"))
    assert {layer.id: weight_channel_axis(layer) for layer in graph.prunable_layers} == {"n": 1, "o": 1}


def test_quant_profile_ranks_the_outlier_layer_first(tmp_path):
    path = outlier_model(tmp_path / "o.onnx")
    doc = compute_quant(path, samples=3, latency_runs=3)
    assert doc["kind"] == "quant" and doc["schema_version"] >= 1 and doc["samples"] == 3
    rows = {r["id"]: r for r in doc["layers"]}
    assert rows["o"]["rank"] == 1 and rows["n"]["rank"] == 2
    assert rows["o"]["sensitivity"] > 10 * rows["n"]["sensitivity"] > 0
    assert rows["o"]["activation_quantized"] and rows["o"]["weight_quantized"] == "per-channel"
    m = doc["model"]
    assert "error" not in m, m
    assert m["output_change"] > 0 and m["fp32_ms"] > 0 and m["int8_ms"] > 0
    assert m["speedup"] == pytest.approx(m["fp32_ms"] / m["int8_ms"])
    json.dumps(doc, allow_nan=False)


def test_quant_profile_demo_model_in_child_process(tmp_path):
    from sparsify_tui.analysis.demo import build_demo_model

    path = build_demo_model(tmp_path / "demo.onnx")
    events = []
    doc = run_quant_profile(path, samples=2, on_progress=events.append)
    graph = analyze(path)
    assert [r["id"] for r in doc["layers"]] == [layer.id for layer in graph.prunable_layers]
    assert all(r["sensitivity"] is not None and r["sensitivity"] >= 0 for r in doc["layers"])
    assert sorted(r["rank"] for r in doc["layers"])[0] == 1
    assert all(r["activation_quantized"] for r in doc["layers"])
    assert doc["execution"] == "downstream"
    m = doc["model"]
    assert "error" not in m, m
    assert m["output_change"] > 0 and m["fp32_ms"] > 0 and m["int8_ms"] > 0
    assert any(e.get("event") == "partial" for e in events)


@pytest.mark.slow  # 54 layers quantized alone plus quantize_static + latency of a ResNet-50: ~12 s idle
def test_quant_profile_corpus_resnet(corpus):
    key = "resnet50nhwc"
    doc = compute_quant(corpus.path(key), samples=1, input_shapes=corpus.input_shapes(key), latency_runs=2)
    assert len(doc["layers"]) == 54
    measured = [r for r in doc["layers"] if r["sensitivity"] is not None]
    assert len(measured) == 54 and all(r["sensitivity"] >= 0 for r in measured)
    m = doc["model"]
    assert ("error" in m) or (m["output_change"] >= 0 and m["fp32_ms"] > 0 and m["int8_ms"] > 0)


def test_whole_model_failure_is_reported_not_raised(tmp_path):
    from sparsify_tui.profiles.quant import quantize_whole_model

    path = outlier_model(tmp_path / "o.onnx")
    # calibration data that does not fit the model: ONNX Runtime's quantizer fails, we report it
    out = quantize_whole_model(path, [{"x": np.zeros((1, 7), np.float32)}], runs=1)
    assert "error" in out and out["error"]
    assert "fp32_ms" not in out


def test_quant_profile_cancel(tmp_path):
    import threading

    from sparsify_tui.errors import CancelledError

    ev = threading.Event()
    ev.set()
    with pytest.raises(CancelledError):
        compute_quant(outlier_model(tmp_path / "o.onnx"), samples=1, cancel=ev)


def test_quantize_file_quantizes_fill_weights_per_channel_in_an_old_opset(tmp_path):
    """A weight stored as a ConstantOfShape fill (as the corpus ResNet-50 holds its weights), in an opset-9
    model: the quantized file is QDQ with that weight stored as int8, and it still computes the model."""
    import onnxruntime as ort

    from sparsify_tui.profiles.quant import quantize_file

    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.05])
    shape = numpy_helper.from_array(np.array([8, 3, 3, 3], dtype=np.int64), "w_shape")
    bias = numpy_helper.from_array(RNG.normal(0, 0.1, 8).astype(np.float32), "b")
    head = numpy_helper.from_array(RNG.normal(0, 0.3, (8, 4)).astype(np.float32), "wg")
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=fill),
             helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "wg"], ["y"])]
    g = helper.make_graph(nodes, "fill", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [shape, bias, head])
    src = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)]), tmp_path / "fill.onnx")
    samples = [{"x": RNG.random((1, 3, 8, 8), dtype=np.float32)} for _ in range(4)]
    dst = tmp_path / "fill_int8.onnx"
    assert quantize_file(src, dst, samples)["format"] == "QDQ"
    q = onnx.load(str(dst))
    int8 = {i.name for i in q.graph.initializer if i.data_type == TensorProto.INT8}
    conv = next(n for n in q.graph.node if n.op_type == "Conv")
    w_dq = next(n for n in q.graph.node if n.output[0] == conv.input[1])
    assert w_dq.op_type == "DequantizeLinear" and w_dq.input[0] in int8  # the fill weight is int8 now
    assert not any(n.op_type == "ConstantOfShape" for n in q.graph.node)
    # it computes what quantizing the same model written at opset 13 with the weight as an initializer does
    w = numpy_helper.from_array(np.full((8, 3, 3, 3), 0.05, dtype=np.float32), "w")
    g13 = helper.make_graph(nodes[1:], "fill13", list(g.input), list(g.output), [w, bias, head])
    src13 = _save(helper.make_model(g13, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "w13.onnx")
    assert quantize_file(src13, tmp_path / "w13_int8.onnx", samples)["format"] == "QDQ"
    x = samples[0]
    got = ort.InferenceSession(str(dst)).run(None, x)[0]
    want = ort.InferenceSession(str(tmp_path / "w13_int8.onnx")).run(None, x)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
