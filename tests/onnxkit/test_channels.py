"""Channel groups on hand-built graphs: each group kind found, removal equal to masking, refusals named.

Every graph is built here with random weights and run on ONNX Runtime: a
group's channels are removed physically (smaller weights, checker passes,
shapes inferred) and the outputs compared with the same model whose
consumers read zeros for those channels (``mask_channels``), to 1e-5.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsify_tui.onnxkit.channels import find_groups, mask_channels, remove_channels

RNG = np.random.default_rng(0)


class G:
    """A tiny graph builder: ``g.conv(x, cin, cout)`` etc. return the output tensor's name."""

    def __init__(self, shape=(1, 3, 8, 8)) -> None:
        self.nodes, self.inits, self.n = [], [], 0
        self.inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}{self.n}"

    def const(self, arr) -> str:
        n = self.name("w")
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), n))
        return n

    def op(self, op: str, ins: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k=3, group=1, bias=True):
        w = self.const(RNG.normal(0, 0.5, (cout, cin // group, k, k)))
        ins = [x, w] + ([self.const(RNG.normal(0, 0.1, cout))] if bias else [])
        return self.op("Conv", ins, pads=[k // 2] * 4, group=group)

    def bn(self, x, c):
        return self.op("BatchNormalization", [x, self.const(RNG.uniform(0.5, 1.5, c)), self.const(RNG.normal(0, 0.2, c)),
                                              self.const(RNG.normal(0, 0.2, c)), self.const(RNG.uniform(0.5, 1.5, c))])

    def gemm(self, x, k, n):
        return self.op("Gemm", [x, self.const(RNG.normal(0, 0.3, (n, k))), self.const(RNG.normal(0, 0.1, n))], transB=1)

    def model(self, outputs: list[str]):
        g = helper.make_graph(self.nodes, "g", self.inputs, [], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        known = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(m).graph.value_info}
        m.graph.output.extend(known[o] for o in outputs)
        onnx.checker.check_model(m)
        return m


def run(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def check_removal(model, removed, shape=(1, 3, 8, 8)):
    """Removal equals masking to 1e-5, the checker passes, shapes infer, the file is smaller."""
    x = RNG.normal(0, 1, shape).astype(np.float32)
    small = remove_channels(model, removed)
    onnx.checker.check_model(small)
    onnx.shape_inference.infer_shapes(small, strict_mode=True)
    masked = mask_channels(model, removed)
    for got, want in zip(run(small, x), run(masked, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(small.SerializeToString()) < len(model.SerializeToString())
    # masking changed something: the test would not pass with a no-op removal
    assert any(not np.allclose(a, b) for a, b in zip(run(model, x), run(masked, x)))
    return small


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def weight_shape(model, n):
    return tuple(next(i.dims for i in model.graph.initializer if i.name == n.input[1]))


def by_producer(groups):
    return {p: g for g in groups for p in g.producers}


def test_residual_chain_joins_the_add_and_the_gemm_head_refuses():
    g = G()
    c1 = g.conv("x", 3, 8)
    a = g.op("Relu", [g.bn(c1, 8)])
    c2 = g.conv(a, 8, 8)
    r = g.op("Relu", [g.op("Add", [a, g.bn(c2, 8)])])
    c3 = g.conv(r, 8, 6)
    y = g.gemm(g.op("Flatten", [g.op("GlobalAveragePool", [c3])]), 6, 2)
    m = g.model([y])
    prod = by_producer(find_groups(m))
    assert prod[c1] is prod[c2]  # the residual Add ties both convolutions' channels
    assert prod[c1].prunable and prod[c1].channels == 8
    assert prod[c3].prunable and prod[c3].channels == 6  # GAP -> Flatten -> Gemm: blocks of 1
    assert not prod[y].prunable and any("graph output" in r for r in prod[y].reasons)
    small = check_removal(m, {prod[c1].id: [0, 3, 5], prod[c3].id: [1]})
    shapes = {n.name: weight_shape(small, n) for n in small.graph.node if n.op_type == "Conv"}
    assert shapes == {c1: (5, 3, 3, 3), c2: (5, 5, 3, 3), c3: (5, 5, 3, 3)}


def test_concat_keeps_each_input_at_its_offset():
    g = G()
    c1, c2 = g.conv("x", 3, 4), g.conv("x", 3, 6)
    y = g.conv(g.op("Concat", [g.op("Relu", [c1]), g.op("Relu", [c2])], axis=1), 10, 5)
    m = g.model([y])
    prod = by_producer(find_groups(m))
    assert prod[c1] is not prod[c2] and prod[c1].prunable and prod[c2].prunable
    small = check_removal(m, {prod[c1].id: [1], prod[c2].id: [0, 4, 5]})
    assert weight_shape(small, node(small, y)) == (5, 6, 3, 3)


def test_the_same_channels_concatenated_twice_refuse():
    g = G()
    c1 = g.conv("x", 3, 4)
    y = g.conv(g.op("Concat", [c1, c1], axis=1), 8, 2)
    prod = by_producer(find_groups(g.model([y])))
    assert not prod[c1].prunable and "twice" in prod[c1].reasons[0]


def test_depthwise_convolution_ties_its_input_to_its_output():
    g = G()
    c1 = g.conv("x", 3, 8)
    dw = g.conv(g.op("Relu", [c1]), 8, 8, group=8)
    y = g.conv(g.op("Relu", [g.bn(dw, 8)]), 8, 4)
    m = g.model([y])
    prod = by_producer(find_groups(m))
    assert prod[c1].prunable and dw not in prod  # the depthwise conv is no space of its own
    small = check_removal(m, {prod[c1].id: [2, 7]})
    d = node(small, dw)
    assert helper.get_attribute_value(next(a for a in d.attribute if a.name == "group")) == 6
    assert weight_shape(small, d) == (6, 1, 3, 3)


def test_squeeze_excitation_gate_joins_the_block_it_scales():
    g = G()
    c1 = g.conv("x", 3, 8)
    x1 = g.op("Relu", [c1])
    sq = g.conv(g.op("GlobalAveragePool", [x1]), 8, 2, k=1)
    ex = g.conv(g.op("Relu", [sq]), 2, 8, k=1)
    y = g.conv(g.op("Mul", [x1, g.op("Sigmoid", [ex])]), 8, 4)
    m = g.model([y])
    prod = by_producer(find_groups(m))
    assert prod[c1] is prod[ex]  # the expand conv's channels scale conv1's
    assert prod[sq].prunable and prod[sq].channels == 2 and prod[sq] is not prod[c1]
    check_removal(m, {prod[c1].id: [0, 1, 6], prod[sq].id: [1]})


def test_flatten_before_gemm_removes_a_block_of_features_per_channel():
    g = G(shape=(1, 3, 5, 5))
    c1 = g.conv("x", 3, 4)
    y = g.gemm(g.op("Flatten", [g.op("Relu", [c1])], axis=1), 100, 3)
    m = g.model([y])
    prod = by_producer(find_groups(m))
    assert prod[c1].prunable
    small = check_removal(m, {prod[c1].id: [2]}, shape=(1, 3, 5, 5))
    assert weight_shape(small, node(small, y)) == (3, 75)


def test_reshape_to_features_before_gemm_is_a_flatten_and_its_shape_follows():
    """ResNet's head: GlobalAveragePool, Reshape to [1, C] (a constant shape), Gemm; the residual group reading it
    is prunable, and the removed model's Reshape target follows the kept channels."""
    g = G(shape=(1, 3, 5, 5))
    c1 = g.conv("x", 3, 8)
    pooled = g.op("GlobalAveragePool", [g.op("Relu", [c1])])
    g.inits.append(numpy_helper.from_array(np.array([1, 8], dtype=np.int64), "head_shape"))
    y = g.gemm(g.op("Reshape", [pooled, "head_shape"]), 8, 3)
    m = g.model([y])
    prod = by_producer(find_groups(m))
    assert prod[c1].prunable, prod[c1].reasons
    small = check_removal(m, {prod[c1].id: [1, 4, 5]}, shape=(1, 3, 5, 5))
    assert weight_shape(small, node(small, y)) == (3, 5)
    # a Reshape to [1, C/2, 2] mixes channels: still refused
    g = G(shape=(1, 3, 5, 5))
    c1 = g.conv("x", 3, 8)
    pooled = g.op("GlobalAveragePool", [c1])
    g.inits.append(numpy_helper.from_array(np.array([1, 4, 2], dtype=np.int64), "odd_shape"))
    y = g.op("ReduceMean", [g.op("Reshape", [pooled, "odd_shape"])], axes=[2], keepdims=1)
    (grp,) = find_groups(g.model([y]))
    assert not grp.prunable and "Reshape" in grp.reasons[0]


def test_split_on_the_channels_updates_its_sizes():
    g = G()
    c1 = g.conv("x", 3, 8)
    s1, s2 = "split_a", "split_b"
    g.inits.append(numpy_helper.from_array(np.array([3, 5], dtype=np.int64), "sizes"))
    g.nodes.append(helper.make_node("Split", [c1, "sizes"], [s1, s2], name="split", axis=1))
    y = g.op("Add", [g.conv(s1, 3, 2), g.conv(s2, 5, 2)])
    m = g.model([y])
    prod = by_producer(find_groups(m))
    assert prod[c1].prunable
    check_removal(m, {prod[c1].id: [0, 6]})


def test_a_reshape_that_mixes_channels_refuses_with_its_reason():
    g = G()
    c1 = g.conv("x", 3, 8)
    g.inits.append(numpy_helper.from_array(np.array([1, 2, 4, 64], dtype=np.int64), "shape"))
    y = g.op("ReduceMean", [g.op("Reshape", [c1, "shape"])], axes=[1], keepdims=1)
    m = g.model([y])
    (grp,) = find_groups(m)
    assert not grp.prunable and "Reshape" in grp.reasons[0]
    with pytest.raises(Exception, match="cannot be pruned"):
        remove_channels(m, {grp.id: [0]})


def test_graph_output_and_bad_indices_refuse():
    g = G()
    m = g.model([g.conv("x", 3, 4)])
    (grp,) = find_groups(m)
    assert not grp.prunable and "graph output" in grp.reasons[0]
    g = G()
    c1 = g.conv("x", 3, 4)
    m = g.model([g.conv(c1, 4, 2)])
    grp = by_producer(find_groups(m))[c1]
    with pytest.raises(Exception, match="at least one"):
        remove_channels(m, {grp.id: [0, 1, 2, 3]})
    with pytest.raises(Exception, match="has 4 channels"):
        remove_channels(m, {grp.id: [4]})
