"""The real models of the corpus: every one loads, with params and FLOPs as DESIGN.md defines them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sparsify_tui.analysis import analyze, read_weight

# Conv + Gemm + MatMul nodes with a constant weight: all of them, except MiniLM's
# 6 attention MatMuls (Q.K^T and scores.V in 3 layers), which multiply two activations.
PRUNABLE = {"resnet50": 54, "mobilenetv3": 54, "yolov8n": 64, "crnn": 22, "resnet50nhwc": 54, "minilm": 18,
            "wakeword": 20}


def float_tensor_elements(path) -> int:
    """Independent count: elements of float initializers and Constant tensors with more than one element
    (Resize scales excluded: they are sizes, not learned values)."""
    m = onnx.load(str(path))
    scales = {n.input[2] for n in m.graph.node if n.op_type == "Resize" and len(n.input) > 2}
    total = 0
    for t in m.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) > 1 and t.name not in scales:
            total += int(np.prod(t.dims))
    for n in m.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == onnx.TensorProto.FLOAT and int(np.prod(a.t.dims)) > 1:
                    total += int(np.prod(a.t.dims))
    return total


@pytest.mark.parametrize("key", [k for k in PRUNABLE if k != "resnet50"])
def test_corpus_model_loads_params_are_its_float_tensors(corpus, key):
    path = corpus.path(key)
    g = analyze(path, corpus.input_shapes(key))
    assert len(g.prunable_layers) == PRUNABLE[key]
    # every float tensor of these models is a weight, bias, norm param or embedding table
    assert g.params == float_tensor_elements(path)
    assert g.unknown_flops_layers == 0, [(lay.id, lay.op_type) for lay in g.layers if lay.flops is None][:5]
    assert g.flops == sum(lay.flops for lay in g.layers) > 0
    conv_flops = sum(lay.flops for lay in g.layers if lay.op_type == "Conv")
    assert conv_flops <= g.flops
    ids = [lay.id for lay in g.layers]
    assert len(ids) == len(set(ids))
    assert [lay.depth for lay in g.layers] == list(range(len(g.layers)))
    assert {t.name: t.shape for t in g.inputs} == corpus.input_shapes(key)
    m = onnx.load(str(path))
    stored = {t.name: t for t in m.graph.initializer}
    stored.update({n.output[0]: n.attribute[0].t for n in m.graph.node if n.op_type == "Constant"})
    for lay in g.prunable_layers:
        assert lay.weight is not None and lay.prunable_params > 0
        assert lay.flops > 0 and all(s is not None for s in lay.output_shapes)
        w = numpy_helper.to_array(stored[lay.weight_name])  # independent of our zero counting
        assert lay.sparsity == pytest.approx(float(np.mean(w == 0)), abs=1e-12)
        assert lay.prunable_params == w.size


def test_light_resnet50_matches_published_numbers(corpus):
    """Weights computed by ConstantOfShape, BN params as graph inputs (IR 3, opset 9)."""
    g = analyze(corpus.path("resnet50"), {"gpu_0/data_0": [1, 3, 224, 224]})
    assert g.params == pytest.approx(25.6e6, rel=0.005)
    assert g.flops == pytest.approx(2 * 4.1e9, rel=0.01)
    assert len(g.prunable_layers) == 54  # 53 convs + the fc Gemm
    assert {lay.weight.kind for lay in g.prunable_layers} == {"constant_of_shape"}
    fc = next(lay for lay in g.prunable_layers if lay.op_type == "Gemm")
    assert fc.weight_shape == [1000, 2048] and fc.flops == 2 * 1000 * 2048 + 1000
    w = read_weight(g, fc)
    assert w.shape == (1000, 2048) and np.all(w == w.flat[0])
    stem = g.prunable_layers[0]
    assert stem.weight_shape == [64, 3, 7, 7] and stem.output_shapes == [[1, 64, 112, 112]]
    assert stem.flops == 2 * 64 * 112 * 112 * 3 * 7 * 7


def test_minilm_counts_embeddings_and_attention(corpus):
    g = analyze(corpus.path("minilm"), corpus.input_shapes("minilm"))
    gathers = [lay for lay in g.layers if lay.op_type == "Gather" and lay.params]
    assert sum(lay.params for lay in gathers) == 30522 * 384 + 512 * 384 + 2 * 384
    assert not any(lay.prunable for lay in gathers)
    assert g.prunable_params == 3 * (4 * 384 * 384 + 2 * 384 * 1536)
    # attention MatMuls between two activations: not prunable, 2*M*N*K per batch item and head
    scores = [lay for lay in g.layers if lay.op_type == "MatMul" and not lay.prunable]
    assert len(scores) == 6
    qk = [lay for lay in scores if lay.output_shapes[0] == [1, 12, 128, 128]]
    av = [lay for lay in scores if lay.output_shapes[0] == [1, 12, 128, 32]]
    assert len(qk) == 3 and len(av) == 3
    assert all(lay.flops == 2 * 12 * 128 * 128 * 32 for lay in qk + av)


def test_crnn_lstm_and_mobilenet_constant_weights(corpus):
    g = analyze(corpus.path("crnn"), corpus.input_shapes("crnn"))
    lstm = next(lay for lay in g.layers if lay.op_type == "LSTM")
    m = onnx.load(str(corpus.path("crnn")))
    lstm_node = next(n for n in m.graph.node if n.op_type == "LSTM")
    inits = {t.name: t for t in m.graph.initializer}
    w_dims = list(inits[lstm_node.input[1]].dims)
    dirs, four_h, inp = w_dims
    h = four_h // 4
    seq, batch = lstm.input_shapes[0][0], lstm.input_shapes[0][1]
    assert lstm.params == sum(int(np.prod(inits[n].dims)) for n in lstm_node.input[1:4] if n in inits)
    assert lstm.flops == seq * batch * dirs * (2 * four_h * (inp + h) + 2 * four_h + 9 * h)
    assert not lstm.prunable

    mb = analyze(corpus.path("mobilenetv3"), corpus.input_shapes("mobilenetv3"))
    assert {lay.weight.kind for lay in mb.prunable_layers} == {"constant"}
    first = mb.prunable_layers[0]
    w = read_weight(mb, first)
    assert w.shape == tuple(first.weight_shape)
    m = onnx.load(str(corpus.path("mobilenetv3")))
    const = next(n for n in m.graph.node if n.op_type == "Constant" and n.output[0] == first.weight_name)
    np.testing.assert_array_equal(w, numpy_helper.to_array(const.attribute[0].t))
