"""Issue 16: ONNX files as exporters really write them, hand-built with onnx.helper.

* params of contrib-domain ops (com.microsoft DynamicQuantizeLSTM) and of a quantized embedding
  table read by Gather and dequantized after it count; their scales and zero points do not;
* a scikit-learn style model (ai.onnx.ml LinearClassifier + ZipMap, a sequence-of-map output)
  analyses, the untyped output's shape is unknown;
* a model with a 0-d input ``sr`` that it branches on (If): ``--input-shape sr=``, ``--input-value
  sr=16000`` and an .npz give it real values; on synthetic ones the error says so and how to fix it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

from sparsify_tui.analysis import analyze, parse_input_shapes

RNG = np.random.default_rng(0)
H, I, T = 4, 8, 5  # noqa: E741 - LSTM hidden size, input size, sequence length


def dq_lstm(path) -> int:
    """A DynamicQuantizeLSTM as ORT's quantizer writes it (int8 W/R, per-channel 2-D scales/zero points)."""
    inits = [
        nh.from_array(RNG.integers(-127, 127, (1, I, 4 * H)).astype(np.int8), "W"),
        nh.from_array(RNG.integers(-127, 127, (1, H, 4 * H)).astype(np.int8), "R"),
        nh.from_array(RNG.random((1, 8 * H)).astype(np.float32), "B"),
        nh.from_array(np.full((1, 4 * H), 0.01, np.float32), "W_scale"),
        nh.from_array(np.zeros((1, 4 * H), np.int8), "W_zp"),
        nh.from_array(np.full((1, 4 * H), 0.01, np.float32), "R_scale"),
        nh.from_array(np.zeros((1, 4 * H), np.int8), "R_zp"),
    ]
    node = h.make_node("DynamicQuantizeLSTM", ["X", "W", "R", "B", "", "", "", "", "W_scale", "W_zp", "R_scale",
                                               "R_zp"], ["Y"], domain="com.microsoft", hidden_size=H)
    g = h.make_graph([node], "dqlstm", [h.make_tensor_value_info("X", TP.FLOAT, [T, 1, I])],
                     [h.make_tensor_value_info("Y", TP.FLOAT, None)], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]), path)
    return I * 4 * H + H * 4 * H + 8 * H  # W + R + B


def quant_embedding(path) -> int:
    inits = [nh.from_array(RNG.integers(-127, 127, (100, 16)).astype(np.int8), "table_q"),
             nh.from_array(np.array(0.02, np.float32), "table_scale"),
             nh.from_array(np.array(0, np.int8), "table_zp"),
             nh.from_array(RNG.random((16, 4)).astype(np.float32), "fc_w")]
    nodes = [h.make_node("Gather", ["table_q", "ids"], ["g"]),
             h.make_node("DequantizeLinear", ["g", "table_scale", "table_zp"], ["e"]),
             h.make_node("MatMul", ["e", "fc_w"], ["out"])]
    g = h.make_graph(nodes, "qembed", [h.make_tensor_value_info("ids", TP.INT64, [1, 7])],
                     [h.make_tensor_value_info("out", TP.FLOAT, [1, 7, 4])], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return 100 * 16 + 16 * 4


def zipmap(path) -> None:
    nodes = [h.make_node("LinearClassifier", ["X"], ["label", "probabilities"], domain="ai.onnx.ml",
                         coefficients=[0.1] * 12, intercepts=[0.0] * 3, classlabels_ints=[0, 1, 2],
                         post_transform="SOFTMAX"),
             h.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml",
                         classlabels_int64s=[0, 1, 2])]
    mp = onnx.TypeProto()
    mp.map_type.key_type = TP.INT64
    mp.map_type.value_type.CopyFrom(h.make_tensor_type_proto(TP.FLOAT, []))
    g = h.make_graph(nodes, "skl", [h.make_tensor_value_info("X", TP.FLOAT, [None, 4])],
                     [h.make_tensor_value_info("label", TP.INT64, [None]),
                      h.make_value_info("output_probability", h.make_sequence_type_proto(mp))])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 8
    onnx.save(m, path)


def if_on_sample_rate(path) -> None:
    """out = MatMul(sr == 16000 ? x * 2 : Gather(x, [0..14, 99]), w): the else branch fails when run."""
    then_g = h.make_graph([h.make_node("Mul", ["x", "two"], ["y_then"])], "then", [],
                          [h.make_tensor_value_info("y_then", TP.FLOAT, None)])
    bad = h.make_tensor("bad_idx", TP.INT64, [16], list(range(15)) + [99])
    else_g = h.make_graph([h.make_node("Constant", [], ["bi"], value=bad),
                           h.make_node("Gather", ["x", "bi"], ["y_else"], axis=1)],
                          "else", [], [h.make_tensor_value_info("y_else", TP.FLOAT, None)])
    inits = [nh.from_array(np.array(16000, np.int64), "k16000"), nh.from_array(np.array(2.0, np.float32), "two"),
             nh.from_array(RNG.random((16, 16)).astype(np.float32), "w")]
    nodes = [h.make_node("Equal", ["sr", "k16000"], ["is16k"]),
             h.make_node("If", ["is16k"], ["y"], then_branch=then_g, else_branch=else_g),
             h.make_node("MatMul", ["y", "w"], ["out"])]
    g = h.make_graph(nodes, "ifsr", [h.make_tensor_value_info("x", TP.FLOAT, [1, 16]),
                                     h.make_tensor_value_info("sr", TP.INT64, [])],
                     [h.make_tensor_value_info("out", TP.FLOAT, None)], inits)
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)


def cli(*args, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1")
    return subprocess.run([sys.executable, "-m", "sparsify_tui", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_params_of_a_contrib_quantized_lstm(tmp_path):
    p = tmp_path / "dqlstm.onnx"
    expected = dq_lstm(p)
    g = analyze(p)
    assert g.params == expected == 224  # W 128 + R 64 + B 32; the 2-D scales and zero points are not params
    import onnxruntime as ort  # the file is real: ONNX Runtime runs it

    y = ort.InferenceSession(str(p)).run(None, {"X": np.ones((T, 1, I), np.float32)})[0]
    assert y.shape == (T, 1, 1, H)


def test_params_of_a_quantized_embedding_table(tmp_path):
    p = tmp_path / "qembed.onnx"
    expected = quant_embedding(p)
    g = analyze(p)
    assert g.params == expected == 1664
    gather = next(layer for layer in g.layers if layer.op_type == "Gather")
    assert gather.params == 1600


def test_sequence_of_map_output_degrades_to_shape_unknown(tmp_path):
    p = tmp_path / "skl.onnx"
    zipmap(p)
    g = analyze(p)
    outs = {t.name: t for t in g.outputs}
    assert outs["output_probability"].dtype == "sequence(map(int64,float32))"
    assert outs["label"].dtype == "int64" and outs["label"].shape == [1]
    assert any("ZipMap" in n and "unknown" in n for n in g.notes)
    res = cli("info", p)
    assert res.returncode == 0, res.stderr
    assert "output_probability: sequence(map(int64,float32)) (shape unknown)" in res.stdout


def test_scalar_input_shape_and_values(tmp_path):
    assert parse_input_shapes(["sr="]) == {"sr": []}
    from sparsify_tui.errors import UsageError
    from sparsify_tui.engines.inputs import make_inputs, parse_input_values

    assert parse_input_values(["sr=16000", "t=0.5"]) == {"sr": 16000, "t": 0.5}
    with pytest.raises(UsageError, match="NAME=NUMBER"):
        parse_input_values(["sr=fast"])
    p = tmp_path / "ifsr.onnx"
    if_on_sample_rate(p)
    assert analyze(p, {"sr": []}).inputs[1].shape == []
    batch = make_inputs(p, 1, {"sr": []}, values={"sr": 16000})
    assert batch["sr"].shape == () and int(batch["sr"]) == 16000 and batch["sr"].dtype == np.int64


def test_a_model_that_branches_on_an_input_value(tmp_path):
    p = tmp_path / "ifsr.onnx"
    if_on_sample_rate(p)
    fast = ("--engine", "onnxruntime", "--levels", "0", "--iterations", "3", "--warmup", "1", "--repeats", "1")
    bad = cli("profile", "perf", p, *fast, "--input-shape", "sr=")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "inputs were synthetic" in last and "--input-value" in last, last
    good = cli("profile", "perf", p, *fast, "--input-shape", "sr=", "--input-value", "sr=16000", "--json")
    assert good.returncode == 0, good.stderr
    doc = json.loads(good.stdout)
    assert doc["baseline_ms"] > 0 and doc["quality"]["deployed_ms"] > 0
    npz = tmp_path / "real.npz"
    np.savez(npz, x=np.ones((1, 16), np.float32), sr=np.array(16000, np.int64))
    data = cli("benchmark", p, "--engine", "onnxruntime", "--iterations", "3", "--json", "--input-shape", "sr=")
    assert data.returncode == 2 and "inputs were synthetic" in data.stderr
    via_npz = cli("profile", "perf", p, *fast, "--data", npz, "--json")
    assert via_npz.returncode == 0, via_npz.stderr
    assert json.loads(via_npz.stdout)["baseline_ms"] > 0
    bench = cli("benchmark", p, "--engine", "onnxruntime", "--iterations", "3", "--input-value", "sr=16000",
                "--json")
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["results"][0]["median_ms"] > 0
