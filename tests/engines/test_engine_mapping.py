"""Mapping engine steps back to ONNX layers (rules of engines.md section 3), on hand-made graphs."""

from __future__ import annotations

import pytest

from sparsify_tui.engines.mapping import LayerRef, Step, attribute, constant_layers


def _chain():
    # w (constant) -> conv -> bn -> relu -> add(relu, x) -> reshape -> gemm
    return [
        LayerRef("w", "w_node", "ConstantOfShape", ["w_shape"], ["w"], flops=0),
        LayerRef("c", "conv", "Conv", ["x", "w"], ["c"], flops=900),
        LayerRef("b", "bn", "BatchNormalization", ["c", "s", "bb", "m", "v"], ["b"], flops=50),
        LayerRef("r", "relu", "Relu", ["b"], ["r"], flops=50),
        LayerRef("a", "add", "Add", ["r", "x"], ["a"], flops=50),
        LayerRef("sh", "reshape", "Reshape", ["a", "shape"], ["sh"], flops=None),
        LayerRef("g", "gemm", "Gemm", ["sh", "gw"], ["g"], flops=400),
    ]


def test_constant_layers_are_detected():
    layers = _chain()
    assert constant_layers(layers, {"w_shape", "s", "bb", "m", "v", "shape", "gw"}) == {"w"}


def test_fused_group_shares_time_by_flops_and_keeps_the_group():
    layers = _chain()
    for layer in layers:
        layer.constant = layer.id == "w"
    # DeepSparse-like: one step names the BN output (conv+bn+relu+add fused), one the gemm; one internal step
    steps = [
        Step("Naive Subgraph 0", 0.5),
        Step("pyramid_0", 10.5, tensors=["b"]),
        Step("gemm_1", 2.0, tensors=["g"]),
        Step("shuffle_2", 0.25),
    ]
    att = attribute(layers, steps)
    # conv (rule 3: consumer's owner), relu and add (rule 2: producer's owner) join the BN's step
    assert att.groups["pyramid_0"] == ["c", "b", "r", "a"]
    assert att.owner["c"] == att.owner["r"] == att.owner["a"] == "pyramid_0"
    # the constant weight is folded: 0 ms but owned by its consumer's step
    assert att.layer_ms["w"] == 0.0 and att.owner["w"] == "pyramid_0"
    assert att.layer_ms["c"] == pytest.approx(10.5 * 900 / 1050)
    assert att.layer_ms["r"] == pytest.approx(10.5 * 50 / 1050)
    # reshape (unknown FLOPs, not elementwise) goes to its consumer, the gemm, weighing as the lightest known
    assert att.groups["gemm_1"] == ["sh", "g"]
    assert att.layer_ms["sh"] == pytest.approx(2.0 * 400 / 800)
    assert [(rid, ms) for rid, _, ms in att.internal] == [("engine:Naive Subgraph", 0.5), ("engine:shuffle", 0.25)]
    assert att.total_ms == pytest.approx(0.5 + 10.5 + 2.0 + 0.25)


def test_ort_naming_rules_anchor_by_name_output_and_nchwc():
    layers = _chain()
    for layer in layers:
        layer.constant = layer.id == "w"
    steps = [
        Step("ReorderInput", 0.1, op_type="ReorderInput"),
        # NCHWc conv named after the original output tensor of the add (conv+bn+relu+add fused)
        Step("a_nchwc", 4.0, op_type="Conv", tensors=["reorder_token_1"], match_name=True),
        Step("ReorderOutput", 0.1, op_type="ReorderOutput", tensors=["a"]),  # Reorder* anchors nothing
        Step("gemm", 1.0, op_type="Gemm", match_name=True),  # same node name as the original
    ]
    att = attribute(layers, steps)
    assert att.owner["a"] == "a_nchwc"
    assert set(att.groups["a_nchwc"]) == {"c", "b", "r", "a"}
    assert [rid for rid, _, _ in att.internal] == ["engine:ReorderInput", "engine:ReorderOutput"]
    assert sum(att.layer_ms.values()) == pytest.approx(5.0)


def test_every_layer_gets_an_owner_even_at_the_graph_edges():
    layers = [
        LayerRef("t", "t", "Transpose", ["x"], ["t"], flops=None),
        LayerRef("m", "m", "MatMul", ["t", "w"], ["m"], flops=100),
        LayerRef("o", "o", "Softmax", ["m"], ["o"], flops=10),
    ]
    att = attribute(layers, [Step("mm", 3.0, tensors=["m"])])
    assert att.owner == {"t": "mm", "m": "mm", "o": "mm"}
    assert sum(att.layer_ms.values()) == pytest.approx(3.0)


def test_ops_deepsparse_cannot_run_go_to_its_naive_subgraph():
    # conv -> relu -> transpose -> LSTM -> squeeze -> gemm; DeepSparse names the relu and the gemm only
    layers = [
        LayerRef("c", "c", "Conv", ["x", "w"], ["c"], flops=1000),
        LayerRef("r", "r", "Relu", ["c"], ["r"], flops=10),
        LayerRef("t", "t", "Transpose", ["r"], ["t"], flops=0),  # data movement: 0 FLOPs
        LayerRef("l", "l", "LSTM", ["t", "W", "R"], ["l", "lh"], flops=5000),
        LayerRef("s", "s", "Squeeze", ["l"], ["s"], flops=None),
        LayerRef("g", "g", "Gemm", ["s", "gw"], ["g"], flops=100),
    ]
    steps = [
        Step("Naive Subgraph 0", 0.1, fallback=True),
        Step("pyramid_0", 3.0, tensors=["r"]),
        Step("Naive Subgraph 1", 20.0, fallback=True),
        Step("gemm_1", 1.0, tensors=["g"]),
    ]
    att = attribute(layers, steps)
    assert att.owner["l"] == "Naive Subgraph 1"  # after the step that owns its input
    assert att.owner["t"] == "Naive Subgraph 1"  # rule 3: its consumer's owner
    assert att.groups["Naive Subgraph 1"] == ["t", "l"]
    assert att.layer_ms["l"] == pytest.approx(20.0) and att.layer_ms["t"] == 0.0
    assert [rid for rid, _, _ in att.internal] == ["engine:Naive Subgraph"]
    assert att.total_ms == pytest.approx(24.1)
