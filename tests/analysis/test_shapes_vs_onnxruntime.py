"""Property test: for random convolution/pooling configurations, the shapes we infer are
the shapes ONNX Runtime actually produces, and the FLOPs follow the DESIGN.md formula
from those real shapes."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from sparsify_tui.analysis import analyze


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 2, 4]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    h = draw(st.integers((kh - 1) * dh + 1, 20))
    w = draw(st.integers((kw - 1) * dw + 1, 20))
    n = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    pool = draw(st.sampled_from(["none", "max", "avg", "global"]))
    return dict(groups=groups, cin=cin, cout=cout, k=[kh, kw], s=[sh, sw], d=[dh, dw], pads=pads, h=h, w=w, n=n,
                bias=bias, pool=pool)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_cases())
def test_conv_and_pool_shapes_match_onnxruntime(tmp_path, case):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    c = case
    wt = rng.standard_normal((c["cout"], c["cin"] // c["groups"], *c["k"])).astype(np.float32)
    inits = [numpy_helper.from_array(wt, "w")]
    ins = ["x", "w"]
    if c["bias"]:
        inits.append(numpy_helper.from_array(rng.standard_normal(c["cout"]).astype(np.float32), "b"))
        ins.append("b")
    nodes = [helper.make_node("Conv", ins, ["y"], group=c["groups"], kernel_shape=c["k"], strides=c["s"],
                              dilations=c["d"], pads=c["pads"])]
    out = "y"
    if c["pool"] in ("max", "avg"):
        nodes.append(helper.make_node("MaxPool" if c["pool"] == "max" else "AveragePool", ["y"], ["p"],
                                      kernel_shape=[1, 1], strides=[1, 1]))
        out = "p"
    elif c["pool"] == "global":
        nodes.append(helper.make_node("GlobalAveragePool", ["y"], ["p"]))
        out = "p"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, ["N", c["cin"], "H", "W"])],
                          [helper.make_tensor_value_info(out, T.FLOAT, None),
                           *([helper.make_tensor_value_info("y", T.FLOAT, None)] if out != "y" else [])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    p = tmp_path / "case.onnx"
    onnx.save(m, str(p))
    shape = [c["n"], c["cin"], c["h"], c["w"]]
    y_ort = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
        ["y"], {"x": rng.standard_normal(shape).astype(np.float32)})[0]
    graph = analyze(p, {"x": shape})
    conv = graph.layer("y")
    assert conv.output_shapes == [list(y_ort.shape)]
    n_out = int(np.prod(y_ort.shape))
    assert conv.flops == 2 * n_out * (c["cin"] // c["groups"]) * c["k"][0] * c["k"][1] + (n_out if c["bias"] else 0)
    if c["pool"] in ("max", "avg"):
        assert graph.layer("p").output_shapes == [list(y_ort.shape)]
        assert graph.layer("p").flops == n_out * 1 * 1  # one per output element per kernel element
    elif c["pool"] == "global":
        assert graph.layer("p").flops == n_out
