"""Handcrafted ONNX models: params, FLOPs, shapes and weights computed by hand.

Every expected number below is written out from the DESIGN.md definitions:
Conv 2*N*Cout*Hout*Wout*(Cin/group)*kh*kw + N*Cout*Hout*Wout bias adds,
Gemm/MatMul 2*M*N*K per batch (+ bias adds), one per output element for
elementwise ops and normalizations, per kernel element for pooling.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from sparsify_tui.analysis import analyze, parse_input_shapes, read_weight
from sparsify_tui.errors import InputShapeError, ModelError

RNG = np.random.default_rng(7)


def vi(name, shape, dtype=T.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def save(tmp_path, nodes, inputs, outputs, inits=(), opset=13, name="m.onnx", ir=8):
    g = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    p = tmp_path / name
    onnx.save(m, str(p))
    return p


# ---------------------------------------------------------------- convolutions
def test_conv_groups_strides_dilation_padding(tmp_path):
    w = rand(12, 4, 3, 3)
    b = rand(12)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", group=2, strides=[2, 3],
                            dilations=[2, 1], pads=[1, 2, 1, 0], kernel_shape=[3, 3])
    p = save(tmp_path, [node], [vi("x", [2, 8, 17, 19])], [vi("y", None)], [init("w", w), init("b", b)])
    g = analyze(p)
    conv = g.layer("y")
    # H: (17 + 1 + 1 - (2*(3-1)+1)) // 2 + 1 = 8 ; W: (19 + 2 + 0 - 3) // 3 + 1 = 7
    assert conv.output_shapes == [[2, 12, 8, 7]]
    assert conv.input_shapes == [[2, 8, 17, 19]]
    assert conv.flops == 2 * 2 * 12 * 8 * 7 * (8 // 2) * 3 * 3 + 2 * 12 * 8 * 7
    assert conv.params == 12 * 4 * 9 + 12
    assert conv.prunable and conv.prunable_params == 432
    assert conv.weight_shape == [12, 4, 3, 3] and conv.bias_shape == [12]
    assert conv.attributes["group"] == 2 and conv.attributes["dilations"] == [2, 1]
    assert g.params == 444 and g.prunable_params == 432
    assert g.flops == conv.flops and g.unknown_flops_layers == 0


def test_depthwise_conv_without_bias_and_kernel_shape_from_weight(tmp_path):
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=32, pads=[1, 1, 1, 1])
    p = save(tmp_path, [node], [vi("x", [1, 32, 28, 28])], [vi("y", None)], [init("w", rand(32, 1, 3, 3))])
    conv = analyze(p).layer("y")
    assert conv.output_shapes == [[1, 32, 28, 28]]
    assert conv.flops == 2 * 1 * 32 * 28 * 28 * 1 * 3 * 3
    assert conv.params == 288
    assert conv.attributes["kernel_shape"] == [3, 3]  # filled in from the weight


def test_conv_transpose(tmp_path):
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    p = save(tmp_path, [node], [vi("x", [1, 16, 10, 10])], [vi("y", None)],
             [init("w", rand(16, 8, 4, 4)), init("b", rand(8))])
    ct = analyze(p).layer("y")
    assert ct.output_shapes == [[1, 8, 20, 20]]  # (10-1)*2 - 2 + 4
    # every input element meets Cout/group * kh * kw weights, plus one bias add per output element
    assert ct.flops == 2 * 1 * 16 * 10 * 10 * 8 * 4 * 4 + 8 * 20 * 20
    assert ct.params == 16 * 8 * 16 + 8
    assert ct.prunable


# ---------------------------------------------------------------- matrix products
def test_gemm_trans_b(tmp_path):
    node = helper.make_node("Gemm", ["a", "w", "c"], ["y"], transB=1)
    p = save(tmp_path, [node], [vi("a", [4, 64])], [vi("y", None)], [init("w", rand(32, 64)), init("c", rand(32))])
    g = analyze(p)
    gemm = g.layer("y")
    assert gemm.output_shapes == [[4, 32]]
    assert gemm.flops == 2 * 4 * 32 * 64 + 4 * 32
    assert gemm.params == 32 * 64 + 32
    assert gemm.prunable and gemm.weight_shape == [32, 64] and gemm.bias_name == "c"


def test_batched_matmul_between_two_activations(tmp_path):
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    p = save(tmp_path, [node], [vi("a", [2, 3, 5, 7]), vi("b", [2, 3, 7, 11])], [vi("y", None)])
    g = analyze(p)
    mm = g.layer("y")
    assert mm.output_shapes == [[2, 3, 5, 11]]
    assert mm.flops == 2 * (2 * 3) * 5 * 11 * 7
    assert not mm.prunable and mm.params == 0 and mm.sparsity is None
    assert g.prunable_params == 0
    assert any("No prunable layer" in n for n in g.notes)


def test_matmul_weight_through_transpose_and_shared_weight_counted_once(tmp_path):
    w = rand(6, 10)
    w[0, :] = 0  # 10 of 60 zeros
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "wt"], ["y1"]),
        helper.make_node("MatMul", ["x", "wt"], ["y2"]),
        helper.make_node("Add", ["y1", "y2"], ["y"]),
    ]
    p = save(tmp_path, nodes, [vi("x", [3, 10])], [vi("y", None)], [init("w", w)])
    g = analyze(p)
    m1, m2 = g.layer("y1"), g.layer("y2")
    assert m1.prunable and m2.prunable
    assert m1.flops == 2 * 3 * 6 * 10
    assert m1.weight.kind == "initializer" and m1.weight.transform == ["Transpose"]
    assert m1.weight_shape == [6, 10]
    assert m1.params == 60 and m2.params == 0  # shared tensor counted once, at its first consumer
    assert g.params == 60 and g.prunable_params == 60
    assert m1.sparsity == pytest.approx(10 / 60)
    np.testing.assert_array_equal(read_weight(g, m1), w)
    assert g.layer("wt").flops == 0  # folded constant
    assert g.layer("y").flops == 3 * 6


def test_matmul_constant_on_the_left(tmp_path):
    node = helper.make_node("MatMul", ["w", "x"], ["y"])
    p = save(tmp_path, [node], [vi("x", [8, 5])], [vi("y", None)], [init("w", rand(4, 8))])
    mm = analyze(p).layer("y")
    assert mm.prunable and mm.weight_name == "w"
    assert mm.flops == 2 * 4 * 5 * 8


# ---------------------------------------------------------------- weights in nodes and subgraphs
def test_weight_in_constant_node(tmp_path):
    w = rand(4, 3, 1, 1)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
        helper.make_node("Conv", ["x", "w"], ["y"]),
    ]
    p = save(tmp_path, nodes, [vi("x", [1, 3, 5, 5])], [vi("y", None)])
    g = analyze(p)
    conv = g.layer("y")
    assert conv.prunable and conv.weight.kind == "constant"
    assert conv.flops == 2 * 1 * 4 * 5 * 5 * 3 * 1 * 1
    assert g.params == 12
    np.testing.assert_array_equal(read_weight(g, conv), w)


def test_constant_of_shape_weight(tmp_path):
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["w"],
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Conv", ["x", "w"], ["y"]),
    ]
    p = save(tmp_path, nodes, [vi("x", [1, 3, 5, 5])], [vi("y", None)],
             [init("shape", np.array([4, 3, 1, 1], np.int64))])
    g = analyze(p)
    conv = g.layer("y")
    assert conv.prunable and conv.weight.kind == "constant_of_shape"
    assert g.params == 12  # the int64 shape tensor is not a param
    assert conv.sparsity == 0.0
    np.testing.assert_array_equal(read_weight(g, conv), np.full((4, 3, 1, 1), 0.5, np.float32))


def test_conv_inside_if_branches(tmp_path):
    then_g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w_then"], ["y_then"], pads=[1, 1, 1, 1], name="conv_then")],
        "then", [], [vi("y_then", [1, 3, 6, 6])], initializer=[init("w_then", rand(3, 2, 3, 3))])
    else_g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w_else"], ["y_else"], name="conv_else")],
        "else", [], [vi("y_else", [1, 3, 6, 6])])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")]
    p = save(tmp_path, nodes, [vi("x", [1, 2, 6, 6]), vi("cond", [], T.BOOL)], [vi("y", None)],
             [init("w_else", rand(3, 2, 1, 1))])
    g = analyze(p)
    ct, ce = g.layer("y_then"), g.layer("y_else")
    assert ct.graph_path == "branch/then_branch" and ce.graph_path == "branch/else_branch"
    assert ct.prunable and ce.prunable
    assert ct.flops == 2 * 1 * 3 * 6 * 6 * 2 * 3 * 3
    assert ce.flops == 2 * 1 * 3 * 6 * 6 * 2
    assert g.params == 54 + 6
    assert [layer.id for layer in g.layers] == ["y", "y_then", "y_else"]
    assert [layer.depth for layer in g.layers] == [0, 1, 2]
    assert read_weight(g, ct).shape == (3, 2, 3, 3)
    assert read_weight(g, ce).shape == (3, 2, 1, 1)


# ---------------------------------------------------------------- quantized
def test_conv_integer_and_dequantize_linear(tmp_path):
    wq = RNG.integers(1, 127, size=(8, 4, 3, 3), dtype=np.int8)
    wq.reshape(-1)[:72] = 0  # a quarter of 288 exactly zero
    w2 = RNG.integers(-127, 127, size=(6, 8, 1, 1), dtype=np.int8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("ConvInteger", ["xq", "wq", "xz"], ["ci"]),
        helper.make_node("Cast", ["ci"], ["cf"], to=T.FLOAT),
        helper.make_node("Mul", ["cf", "xs"], ["h"]),
        helper.make_node("DequantizeLinear", ["w2q", "w2s", "w2z"], ["w2"]),
        helper.make_node("Conv", ["h", "w2"], ["y"]),
    ]
    inits = [init("wq", wq), init("w2q", w2), init("w2s", np.array(0.02, np.float32)),
             init("w2z", np.array(0, np.int8))]
    p = save(tmp_path, nodes, [vi("x", [1, 4, 8, 8])], [vi("y", None)], inits)
    g = analyze(p)
    ci, conv = g.layer("ci"), g.layer("y")
    assert ci.prunable and ci.output_shapes == [[1, 8, 6, 6]]
    assert ci.flops == 2 * 1 * 8 * 6 * 6 * 4 * 3 * 3
    assert ci.sparsity == pytest.approx(0.25)
    assert conv.prunable and conv.weight.transform == ["DequantizeLinear"]
    assert conv.flops == 2 * 1 * 6 * 6 * 6 * 8
    assert g.params == 288 + 48  # scales and zero points are not params
    np.testing.assert_array_equal(read_weight(g, conv), w2)  # the stored int8 tensor
    assert read_weight(g, ci).dtype == np.int8
    assert g.layer("xq").flops == 1 * 4 * 8 * 8  # DynamicQuantizeLinear: one per output element


def test_qlinear_matmul(tmp_path):
    nodes = [helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])]
    inits = [init("as", np.array(0.1, np.float32)), init("az", np.array(0, np.uint8)),
             init("b", RNG.integers(0, 255, size=(16, 8), dtype=np.uint8)),
             init("bs", np.array(0.1, np.float32)), init("bz", np.array(0, np.uint8)),
             init("ys", np.array(0.1, np.float32)), init("yz", np.array(0, np.uint8))]
    p = save(tmp_path, nodes, [vi("a", [4, 16], T.UINT8)], [vi("y", None, T.UINT8)], inits)
    mm = analyze(p).layer("y")
    assert mm.prunable and mm.weight_name == "b"
    assert mm.flops == 2 * 4 * 8 * 16


# ---------------------------------------------------------------- recurrent, embeddings, normalization, pooling
def test_lstm(tmp_path):
    seq, batch, inp, hid = 5, 2, 8, 16
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "yh"], hidden_size=hid)
    inits = [init("W", rand(1, 4 * hid, inp)), init("R", rand(1, 4 * hid, hid)), init("B", rand(1, 8 * hid))]
    p = save(tmp_path, [node], [vi("x", [seq, batch, inp])], [vi("y", None), vi("yh", None)], inits)
    g = analyze(p)
    lstm = g.layer("y")
    assert lstm.output_shapes == [[seq, 1, batch, hid], [1, batch, hid]]
    assert not lstm.prunable
    assert lstm.params == 4 * hid * inp + 4 * hid * hid + 8 * hid
    # per step and batch item: two matrix products, bias adds, 9H of gate arithmetic
    assert lstm.flops == seq * batch * (2 * 4 * hid * (inp + hid) + 2 * 4 * hid + 9 * hid)


def test_gather_embedding_is_params_not_prunable(tmp_path):
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("Gather", ["shape_vec", "idx0"], ["dim0"])]
    inits = [init("table", rand(100, 16)), init("shape_vec", np.array([1, 7], np.int64)),
             init("idx0", np.array(0, np.int64))]
    p = save(tmp_path, nodes, [vi("ids", [1, 7], T.INT64)], [vi("emb", None), vi("dim0", None, T.INT64)], inits)
    g = analyze(p)
    emb = g.layer("emb")
    assert emb.output_shapes == [[1, 7, 16]]
    assert emb.params == 1600 and not emb.prunable and emb.flops == 0
    assert g.params == 1600  # the int64 vector read by the second Gather is not a param
    assert any("No prunable layer" in n for n in g.notes)


def test_batchnorm_layernorm_pooling(tmp_path):
    c = 4
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"]),
        helper.make_node("MaxPool", ["bn"], ["mp"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["bn"], ["gap"]),
        helper.make_node("LayerNormalization", ["mp", "g4", "b4"], ["ln"], axis=-1),
        helper.make_node("Softmax", ["ln"], ["sm"], axis=-1),
    ]
    inits = [init(n, rand(c)) for n in ("s", "b", "m", "v", "g4", "b4")]
    p = save(tmp_path, nodes, [vi("x", [1, c, 9, 9])], [vi("sm", None), vi("gap", None)], inits, opset=17)
    g = analyze(p)
    assert g.layer("bn").params == 16 and g.layer("bn").flops == 4 * 81
    assert g.layer("mp").output_shapes == [[1, 4, 4, 4]]
    assert g.layer("mp").flops == 64 * 9
    assert g.layer("gap").flops == 4 * 81
    assert g.layer("ln").params == 8 and g.layer("ln").flops == 64
    assert g.layer("sm").flops == 64
    assert g.params == 24
    assert g.flops == 324 + 576 + 324 + 64 + 64


# ---------------------------------------------------------------- dynamic dims, unknown ops, notes
def test_dynamic_dims_defaults_and_overrides(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    p = save(tmp_path, nodes, [vi("x", ["N", 3, "H", "W"])], [vi("y", None)], [init("w", rand(8, 3, 3, 3))])
    g = analyze(p)
    assert g.inputs[0].shape == [1, 3, 224, 224]
    assert g.inputs[0].assumed == {0: 1, 2: 224, 3: 224}
    assert any("Assumed" in n and "H=224" in n for n in g.notes)
    assert g.layer("y").flops == 2 * 8 * 224 * 224 * 27
    g2 = analyze(p, {"x": [2, 3, 32, 48]})
    assert g2.inputs[0].shape == [2, 3, 32, 48] and g2.inputs[0].assumed == {}
    assert g2.layer("y").flops == 2 * 2 * 8 * 32 * 48 * 27
    assert g2.input_shapes() == {"x": [2, 3, 32, 48]}
    with pytest.raises(InputShapeError, match="no input called"):
        analyze(p, {"nope": [1, 3, 8, 8]})
    with pytest.raises(InputShapeError, match="4 dimensions"):
        analyze(p, {"x": [1, 3, 8]})
    with pytest.raises(InputShapeError, match="axis 1"):
        analyze(p, {"x": [1, 4, 8, 8]})


def test_sequence_inputs_share_a_symbol(tmp_path):
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    p = save(tmp_path, nodes, [vi("a", ["batch", "seq"], T.INT64), vi("b", ["batch", "seq"], T.INT64)],
             [vi("y", None, T.INT64)])
    g = analyze(p)
    assert [t.shape for t in g.inputs] == [[1, 128], [1, 128]]


def test_unknown_op_gives_unknown_flops_not_zero(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MysteryOp", ["r"], ["m"], domain="com.example"),
             helper.make_node("Relu", ["m"], ["y"])]
    g_ = helper.make_graph(nodes, "g", [vi("x", [1, 10])], [vi("y", None)])
    m = helper.make_model(g_, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    p = tmp_path / "custom.onnx"
    onnx.save(m, str(p))
    g = analyze(p)
    assert g.layer("r").flops == 10
    assert g.layer("m").flops is None
    assert g.layer("y").flops is None  # its input shape is unknown
    assert g.flops is None and g.flops_known == 10 and g.unknown_flops_layers == 2
    assert any("com.example" in n for n in g.notes)
    assert any("FLOPs unknown" in n for n in g.notes)


def test_slice_with_shape_computed_end_is_resolved(tmp_path):
    """BERT-style position ids: Slice(const, 0, Unsqueeze(Gather(Shape(x), 1))) then Gather."""
    nodes = [
        helper.make_node("Shape", ["ids"], ["shp"]),
        helper.make_node("Gather", ["shp", "one"], ["seqlen"], axis=0),
        helper.make_node("Unsqueeze", ["seqlen", "zero_axes"], ["end"]),
        helper.make_node("Slice", ["pos_all", "start", "end", "axis1"], ["pos"]),
        helper.make_node("Gather", ["pos_table", "pos"], ["pos_emb"]),
        helper.make_node("Relu", ["pos_emb"], ["y"]),
    ]
    inits = [init("one", np.array(1, np.int64)), init("zero_axes", np.array([0], np.int64)),
             init("pos_all", np.arange(64, dtype=np.int64).reshape(1, 64)), init("start", np.array([0], np.int64)),
             init("axis1", np.array([1], np.int64)), init("pos_table", rand(64, 8))]
    p = save(tmp_path, nodes, [vi("ids", ["batch", "sequence"], T.INT64)], [vi("y", None)], inits)
    g = analyze(p, {"ids": [1, 20]})
    assert g.layer("pos").output_shapes == [[1, 20]]
    assert g.layer("y").flops == 20 * 8
    assert g.flops is not None


def test_sparsity_totals(tmp_path):
    w1 = rand(10, 10)
    w1.reshape(-1)[:30] = 0
    w2 = rand(10, 5)
    w2.reshape(-1)[:50] = -0.0  # negative zero is zero
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])]
    p = save(tmp_path, nodes, [vi("x", [1, 10])], [vi("y", None)], [init("w1", w1), init("w2", w2)])
    g = analyze(p)
    assert g.layer("h").sparsity == pytest.approx(0.3)
    assert g.layer("y").sparsity == pytest.approx(1.0)
    assert g.sparsity == pytest.approx(80 / 150)


def test_external_data(tmp_path):
    w = rand(64, 32)
    w[:16] = 0
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    gr = helper.make_graph([node], "g", [vi("x", [2, 64])], [vi("y", None)], initializer=[init("w", w)])
    m = helper.make_model(gr, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    p = tmp_path / "ext.onnx"
    onnx.save(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin",
              size_threshold=0)
    g = analyze(p)
    mm = g.layer("y")
    assert mm.prunable and mm.flops == 2 * 2 * 32 * 64
    assert mm.sparsity == pytest.approx(0.25)
    np.testing.assert_array_equal(read_weight(g, mm), w)
    (tmp_path / "ext.bin").unlink()
    with pytest.raises(ModelError, match="ext.bin"):
        analyze(p)


def test_large_initializer_is_read_from_file_and_model_loads_lazily(tmp_path):
    w = rand(256, 128)
    w[::2] = 0
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    p = save(tmp_path, [node], [vi("x", [1, 128])], [vi("y", None)], [init("w", w)])
    g = analyze(p)
    gemm = g.layer("y")
    assert gemm.sparsity == pytest.approx(0.5)
    got = read_weight(g, gemm)
    np.testing.assert_array_equal(got, w)
    got[0, 0] = 1.0  # a writable copy
    assert g.model is not None and len(g.model.graph.initializer[0].raw_data) == w.nbytes
    np.testing.assert_array_equal(read_weight(g, gemm), w)  # from the loaded proto now


def test_in_memory_model_proto():
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    gr = helper.make_graph([node], "g", [vi("x", [1, 128])], [vi("y", None)], initializer=[init("w", rand(64, 128))])
    m = helper.make_model(gr, opset_imports=[helper.make_opsetid("", 13)])
    g = analyze(m)
    assert g.layer("y").flops == 2 * 64 * 128 and g.model is m


def test_layer_ids_unique_and_to_dict(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r1"), helper.make_node("Relu", ["a"], ["y"], name="r2")]
    p = save(tmp_path, nodes, [vi("x", [1, 4])], [vi("y", None)])
    g = analyze(p)
    assert [(layer.id, layer.name, layer.depth) for layer in g.layers] == [("a", "r1", 0), ("y", "r2", 1)]
    d = g.to_dict()
    assert d["model"]["flops"] == 8 and d["model"]["op_histogram"] == {"Relu": 2}
    assert d["layers"][0]["output_shapes"] == [[1, 4]]


# ---------------------------------------------------------------- input shape parsing
def test_parse_input_shapes():
    assert parse_input_shapes(["x=1,3,224,224", "input:0=1, 224 ,224,3"]) == {
        "x": [1, 3, 224, 224], "input:0": [1, 224, 224, 3]}
    assert parse_input_shapes([]) == {}
    assert parse_input_shapes(None) == {}
    assert parse_input_shapes(["sr="]) == {"sr": []}  # a 0-d (scalar) input
    for bad in ["x", "=1,2", "x=1,a", "x=1,-3", "x=1,0", "x=1.5"]:
        with pytest.raises(InputShapeError, match="--input-shape"):
            parse_input_shapes([bad])
    with pytest.raises(InputShapeError):
        parse_input_shapes(["x=1,2", "x=1,3"])


def test_loop_body_layers_and_unsorted_nodes(tmp_path):
    # Loop body: y = MatMul(x_carried, W_body) with W_body a body initializer; 3 iterations
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("MatMul", ["h_in", "w_body"], ["h_out"], name="body_mm")],
        "body",
        [vi("iter", [], T.INT64), vi("cond_in", [], T.BOOL), vi("h_in", [2, 8])],
        [vi("cond_out", [], T.BOOL), vi("h_out", [2, 8])],
        initializer=[init("w_body", rand(8, 8))])
    nodes = [
        # deliberately out of order: the Relu consumes the Loop's output but comes first
        helper.make_node("Relu", ["h_final"], ["y"], name="relu"),
        helper.make_node("Loop", ["trips", "cond", "h0"], ["h_final"], body=body, name="loop"),
    ]
    p = save(tmp_path, nodes, [vi("h0", [2, 8])], [vi("y", None)],
             [init("trips", np.array(3, np.int64)), init("cond", np.array(True))])
    g = analyze(p)
    assert [layer.id for layer in g.layers] == ["h_final", "cond_out", "h_out", "y"]
    mm = g.layer("h_out")
    assert mm.graph_path == "loop/body" and mm.prunable and mm.flops == 2 * 2 * 8 * 8
    assert g.layer("y").flops == 16
    assert g.params == 64
    assert any("Loop/Scan" in n for n in g.notes)


def test_changed_file_is_detected_before_reading_weights(tmp_path):
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    p = save(tmp_path, [node], [vi("x", [1, 128])], [vi("y", None)], [init("w", rand(64, 128))])
    g = analyze(p)
    save(tmp_path, [node], [vi("x", [1, 128])], [vi("y", None)], [init("w", rand(32, 128))])
    with pytest.raises(ModelError, match="changed since it was analysed"):
        read_weight(g, "y")
    with pytest.raises(ModelError, match="changed since it was analysed"):
        _ = g.model


def test_quantized_sparsity_counts_the_zero_point(tmp_path):
    """A dequantized weight is zero where the stored value equals its zero point."""
    wq = np.full((4, 10), 128, np.uint8)
    wq[:, :7] = RNG.integers(129, 255, size=(4, 7), dtype=np.uint8)  # 12 of 40 at the zero point 128
    wq[0, 0] = 0  # a stored 0 is -128 * scale, not a zero
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"]), helper.make_node("MatMul", ["x", "w"], ["y"])]
    inits = [init("wq", wq), init("s", np.array(0.1, np.float32)), init("z", np.array(128, np.uint8))]
    p = save(tmp_path, nodes, [vi("x", [2, 4])], [vi("y", None)], inits)
    g = analyze(p)
    assert g.layer("y").sparsity == pytest.approx(12 / 40)


def test_onnxruntime_fused_ops(tmp_path):
    """A model saved after ORT graph optimization: com.microsoft FusedConv (no onnx schema)."""
    nodes = [helper.make_node("FusedConv", ["x", "w", "b"], ["c"], domain="com.microsoft", activation="Relu",
                              kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("FastGelu", ["c"], ["y"], domain="com.microsoft")]
    g_ = helper.make_graph(nodes, "g", [vi("x", [1, 3, 16, 16])], [vi("y", None)],
                           initializer=[init("w", rand(8, 3, 3, 3)), init("b", rand(8))])
    m = helper.make_model(g_, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    p = tmp_path / "fused.onnx"
    onnx.save(m, str(p))
    g = analyze(p)
    fc = g.layer("c")
    assert fc.prunable and fc.output_shapes == [[1, 8, 8, 8]]
    assert fc.flops == 2 * 8 * 8 * 8 * 3 * 9 + 8 * 8 * 8
    assert g.layer("y").output_shapes == [[1, 8, 8, 8]] and g.layer("y").flops == 512
    assert g.params == 8 * 27 + 8 and g.flops is not None


def test_non_finite_attributes_stay_json_safe(tmp_path):
    import json

    node = helper.make_node("LeakyRelu", ["x"], ["y"], alpha=float("inf"))
    p = save(tmp_path, [node], [vi("x", [1, 4])], [vi("y", None)])
    g = analyze(p)
    assert g.layer("y").attributes["alpha"] == "inf"
    json.dumps(g.to_dict(), allow_nan=False)


def test_conv_fed_a_flattened_tensor_is_a_model_error_not_a_crash(tmp_path):
    """onnx 1.14's shape inference segfaults on this; we report it (the process must survive)."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Conv", ["f", "w"], ["y"])]
    p = save(tmp_path, nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], [init("w", rand(4, 3, 3, 3))])
    with pytest.raises(ModelError, match="gets a 2-D input but its weight is 4-D"):
        analyze(p)


def test_corrupt_bytes_never_escape_as_other_exceptions():
    """Random byte flips in a small model: either an analysis or one ModelError, nothing else."""
    import json

    from sparsify_tui.commands.info import info_document

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "w2"], ["y"], transB=1)]
    g_ = helper.make_graph(nodes, "g", [vi("x", ["N", 3, 8, 8])], [vi("y", None)],
                           initializer=[init("w", np.ones((4, 3, 3, 3), np.float32)),
                                        init("w2", np.ones((5, 256), np.float32))])
    good = bytearray(helper.make_model(g_, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    structure = len(good) - (4 * 27 + 5 * 256) * 4  # flip bytes outside the weight payloads mostly
    rng = np.random.default_rng(3)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        bad = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, structure)) if rng.random() < 0.8 else int(rng.integers(0, len(bad)))
            bad[pos] = int(rng.integers(0, 256))
        try:
            graph = analyze(bytes(bad))
        except ModelError as exc:
            assert "\n" not in str(exc)
            outcomes["error"] += 1
            continue
        json.dumps(info_document(graph, {}), allow_nan=False)
        outcomes["ok"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


def test_model_graph_round_trips_through_dict(tmp_path):
    import json

    from sparsify_tui.analysis import ModelGraph

    w = rand(6, 10)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])]
    p = save(tmp_path, nodes, [vi("x", ["N", 10])], [vi("y", None)], [init("w", w)])
    g = analyze(p)
    back = ModelGraph.from_dict(json.loads(json.dumps(g.to_dict())))
    assert back.to_dict() == g.to_dict()
    assert back.layer("y").weight == g.layer("y").weight
    assert back.inputs[0].assumed == {0: 1}


def test_weights_in_nested_subgraphs_with_slashes_in_names(tmp_path):
    inner_then = helper.make_graph([helper.make_node("MatMul", ["x", "w_inner"], ["y_inner"], name="/inner/mm")],
                                   "it", [], [vi("y_inner", [2, 3])], initializer=[init("w_inner", rand(4, 3))])
    inner_else = helper.make_graph([helper.make_node("MatMul", ["x", "w_outer"], ["y_inner2"])],
                                   "ie", [], [vi("y_inner2", [2, 3])])
    outer_then = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y_then"], then_branch=inner_then, else_branch=inner_else, name="/a/If")],
        "ot", [], [vi("y_then", [2, 3])])
    outer_else = helper.make_graph([helper.make_node("MatMul", ["x", "w_outer"], ["y_else"])], "oe", [],
                                   [vi("y_else", [2, 3])])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=outer_then, else_branch=outer_else, name="/top/If")]
    p = save(tmp_path, nodes, [vi("x", [2, 4]), vi("cond", [], T.BOOL)], [vi("y", None)],
             [init("w_outer", rand(4, 3))])
    g = analyze(p)
    inner = g.layer("y_inner")
    assert inner.graph_path == "/top/If/then_branch//a/If/then_branch"
    assert read_weight(g, inner).shape == (4, 3)
    # the outer weight is shared: counted once, at its first consumer in execution order
    assert g.layer("y_inner2").weight.graph_path == "" and g.layer("y_inner2").params == 12
    assert g.layer("y_else").params == 0
    assert g.params == 12 + 12
    np.testing.assert_array_equal(read_weight(g, "y_inner2"), read_weight(g, "y_else"))


def test_einsum_flops(tmp_path):
    nodes = [helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik"),
             helper.make_node("Einsum", ["y"], ["t"], equation="bik->bki")]
    p = save(tmp_path, nodes, [vi("a", [2, 3, 4]), vi("b", [2, 4, 5])], [vi("t", None)], opset=13)
    g = analyze(p)
    assert g.layer("y").output_shapes == [[2, 3, 5]]
    assert g.layer("y").flops == 2 * 2 * 3 * 4 * 5  # a batched matmul: 2*M*N*K per batch item
    assert g.layer("t").flops == 2 * 3 * 5


def test_read_weight_of_a_model_given_as_bytes():
    w = rand(64, 128)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    gr = helper.make_graph([node], "g", [vi("x", [1, 128])], [vi("y", None)], initializer=[init("w", w)])
    data = helper.make_model(gr, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    g = analyze(data)
    np.testing.assert_array_equal(read_weight(g, "y"), w)


def test_shapes_onnx_cannot_infer_come_from_onnxruntime(tmp_path):
    """com.microsoft Inverse has no onnx schema; ONNX Runtime runs it, so the shapes after it are known."""
    pytest.importorskip("onnxruntime")
    nodes = [helper.make_node("Inverse", ["x"], ["e"], domain="com.microsoft"),
             helper.make_node("MatMul", ["e", "w"], ["y"])]
    g_ = helper.make_graph(nodes, "g", [vi("x", [4, 4])], [vi("y", None)], initializer=[init("w", rand(4, 3))])
    m = helper.make_model(g_, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    p = tmp_path / "contrib.onnx"
    onnx.save(m, str(p))
    g = analyze(p)
    assert g.layer("e").output_shapes == [[4, 4]]
    assert g.layer("y").output_shapes == [[4, 3]] and g.layer("y").flops == 2 * 4 * 3 * 4
    assert g.layer("e").flops is None  # an op we have no formula for stays unknown
    assert any("ONNX Runtime" in n for n in g.notes)


def test_onnxruntime_crash_during_the_shape_fallback_is_survived(tmp_path):
    """This model makes ONNX Runtime 1.18 segfault; the fallback runs in a child, so we only lose shapes."""
    pytest.importorskip("onnxruntime")
    nodes = [helper.make_node("ExpandDims", ["x", "axis"], ["e"], domain="com.microsoft"),
             helper.make_node("MatMul", ["e", "w"], ["y"])]
    g_ = helper.make_graph(nodes, "g", [vi("x", [3, 8])], [vi("y", None)],
                           initializer=[init("axis", np.array(0, np.int32)), init("w", rand(8, 4))])
    m = helper.make_model(g_, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    p = tmp_path / "crash.onnx"
    onnx.save(m, str(p))
    g = analyze(p)
    assert g.layer("y").prunable and g.layer("y").flops is None and g.flops is None


def test_unknown_channel_dim_comes_from_the_first_conv(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], group=1)]
    p = save(tmp_path, nodes, [vi("x", ["N", "C", "H", "W"])], [vi("y", None)], [init("w", rand(8, 3, 3, 3))])
    g = analyze(p)
    assert g.inputs[0].shape == [1, 3, 224, 224]
    assert g.inputs[0].assumed == {0: 1, 1: 3, 2: 224, 3: 224}
    assert any("channels the first convolution expects" in n for n in g.notes)
    assert g.layer("y").output_shapes == [[1, 8, 222, 222]]
