"""Issue 24.1: a shape the user states is the shape fed.

A hand-built recurrent voice model: ``input`` [N, 512] audio, ``state`` [2, N, 128] (its batch is the
SECOND dimension), a 0-d int64 ``sr`` that an ``If`` branches on (16 kHz: the 512 samples; otherwise
only 256 of them, which the next MatMul refuses), outputs ``out`` [N, 1] and the new state.

``--input-shape state=2,1,128`` must feed [2, 1, 128] (the batch size used to replace the 2); the
batch size fills only the batch dimension (the model's, or the one marked N); a wrong stated shape is
one ``error:`` line naming the shape fed and the one the model declares; the shapes are used by
``info``, ``profile perf`` (each engine that is here), ``benchmark`` and ``prune --validate`` on a
project that stores them.
"""

from __future__ import annotations

import json
import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

from sparsify_tui.analysis import parse_input_shapes
from sparsify_tui.cli import main
from sparsify_tui.engines.inputs import make_inputs
from sparsify_tui.errors import InputShapeError

STATED = ["--input-shape", "input=1,512", "--input-shape", "state=2,1,128", "--input-shape", "sr=",
          "--input-value", "sr=16000"]
FED = {"input": [1, 512], "state": [2, 1, 128], "sr": []}
FAST = ["--levels", "0", "--iterations", "2", "--warmup", "1", "--repeats", "1"]


def voice_model(path):
    rng = np.random.default_rng(0)
    inits = [nh.from_array((rng.standard_normal((512, 128)) * 0.05).astype(np.float32), "W1"),
             nh.from_array((rng.standard_normal((128, 128)) * 0.05).astype(np.float32), "W2"),
             nh.from_array((rng.standard_normal((128, 1)) * 0.05).astype(np.float32), "W3"),
             nh.from_array(np.array(16000, np.int64), "k16"), nh.from_array(np.array(0, np.int64), "zero"),
             nh.from_array(np.array([0], np.int64), "ax0")]
    then_g = h.make_graph([h.make_node("Identity", ["input"], ["x16"])], "then", [],
                          [h.make_tensor_value_info("x16", TP.FLOAT, None)])
    cut = [nh.from_array(np.array([0], np.int64), "s0"), nh.from_array(np.array([256], np.int64), "s1"),
           nh.from_array(np.array([1], np.int64), "ax1")]
    else_g = h.make_graph([h.make_node("Slice", ["input", "s0", "s1", "ax1"], ["x8"])], "else", [],
                          [h.make_tensor_value_info("x8", TP.FLOAT, None)], initializer=cut)
    nodes = [
        h.make_node("Equal", ["sr", "k16"], ["is16"]),
        h.make_node("If", ["is16"], ["x"], then_branch=then_g, else_branch=else_g),
        h.make_node("MatMul", ["x", "W1"], ["h1"]),
        h.make_node("Gather", ["state", "zero"], ["s0v"], axis=0),
        h.make_node("Add", ["h1", "s0v"], ["h2"]),
        h.make_node("Tanh", ["h2"], ["h3"]),
        h.make_node("MatMul", ["h3", "W2"], ["hn"]),
        h.make_node("Unsqueeze", ["hn", "ax0"], ["hn_u"]),
        h.make_node("Unsqueeze", ["h1", "ax0"], ["h1_u"]),
        h.make_node("Concat", ["hn_u", "h1_u"], ["stateN"], axis=0),
        h.make_node("MatMul", ["hn", "W3"], ["logit"]),
        h.make_node("Sigmoid", ["logit"], ["out"]),
    ]
    g = h.make_graph(nodes, "voice", [
        h.make_tensor_value_info("input", TP.FLOAT, ["N", 512]),
        h.make_tensor_value_info("state", TP.FLOAT, [2, "N", 128]),
        h.make_tensor_value_info("sr", TP.INT64, []),
    ], [h.make_tensor_value_info("out", TP.FLOAT, ["N", 1]),
        h.make_tensor_value_info("stateN", TP.FLOAT, [2, "N", 128])], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return voice_model(tmp_path_factory.mktemp("voice") / "voice.onnx")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _errors(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


def _available(engine: str) -> bool:
    return importlib.util.find_spec({"deepsparse": "deepsparse", "openvino": "openvino"}[engine]) is not None


def test_the_batch_size_fills_only_the_batch_dimension(voice):
    stated = parse_input_shapes(["input=1,512", "state=2,1,128", "sr="])
    x = make_inputs(voice, 1, stated, values={"sr": 16000})
    assert {k: list(v.shape) for k, v in x.items()} == FED and int(x["sr"]) == 16000
    marked = parse_input_shapes(["input=N,512", "state=2,N,128", "sr="])
    assert marked["state"] == [2, "N", 128]
    for shapes in (stated, marked, {"sr": []}, {}):  # stated with 1 / N in the batch dim, or left open
        x = make_inputs(voice, 3, shapes)
        assert {k: list(v.shape) for k, v in x.items()} == {"input": [3, 512], "state": [2, 3, 128], "sr": []}
    with pytest.raises(InputShapeError, match=r"--batch-size 4 .*input=8,512 states 8 .*input=N,512"):
        make_inputs(voice, 4, parse_input_shapes(["input=8,512"]))
    assert {k: list(v.shape) for k, v in make_inputs(voice, 1, parse_input_shapes(["input=8,512"])).items()} == \
        {"input": [8, 512], "state": [2, 1, 128], "sr": []}  # a stated 8 is fed as 8
    with pytest.raises(InputShapeError, match="marks 2 batch dimensions"):
        parse_input_shapes(["state=N,N,128"])


def test_info_shows_the_stated_shapes(capsys, voice):
    code, out, err = _run(capsys, "info", voice, *STATED[:-2], "--json")
    assert code == 0, err
    assert {t["name"]: t["shape"] for t in json.loads(out)["model"]["inputs"]} == FED


@pytest.mark.parametrize("engine", ["onnxruntime", "deepsparse", "openvino"])
def test_profile_perf_feeds_the_stated_shapes(capsys, voice, engine):
    if engine != "onnxruntime" and not _available(engine):
        pytest.skip(f"{engine} is not installed")
    code, out, err = _run(capsys, "profile", "perf", voice, "--engine", engine, *FAST, *STATED, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["engine"] == engine and doc["input_shapes"] == FED
    assert doc["baseline_ms"] > 0


@pytest.mark.parametrize("engine", ["onnxruntime", "deepsparse"])
def test_benchmark_at_two_batch_sizes(capsys, voice, engine):
    if engine != "onnxruntime" and not _available(engine):
        pytest.skip(f"{engine} is not installed")
    code, out, err = _run(capsys, "benchmark", voice, "--engine", engine, "--batch-size", "1,3", "--iterations", "2",
                          "--warmup", "1", "--repeats", "1", "--input-shape", "input=N,512", "--input-shape",
                          "state=2,N,128", "--input-shape", "sr=", "--input-value", "sr=16000", "--json")
    assert code == 0, err
    res = json.loads(out)["results"]
    assert [r["engine"] for r in res] == [engine, engine]
    assert res[0]["input_shapes"] == FED
    assert res[1]["input_shapes"] == {"input": [3, 512], "state": [2, 3, 128], "sr": []}
    assert all(r["median_ms"] > 0 for r in res)


def test_a_wrong_stated_shape_is_one_line_naming_fed_and_declared(capsys, voice):
    flags = ["--engine", "onnxruntime", *FAST, "--input-value", "sr=16000", "--input-shape", "sr="]
    # against a fixed dimension: refused before any engine starts
    code, out, err = _run(capsys, "profile", "perf", voice, *flags, "--input-shape", "state=3,1,128")
    errors = _errors(err)
    assert code == 2 and out == "" and len(errors) == 1, err
    assert "would feed [3,1,128]" in errors[0] and "declares state as [2,N,128]" in errors[0], errors[0]
    # fits each declared shape but not together (the batch of state differs from input's)
    code, _, err = _run(capsys, "profile", "perf", voice, *flags, "--input-shape", "state=2,3,128")
    errors = _errors(err)
    assert code == 2 and len(errors) == 1, err
    assert "fed input [1, 512], state [2, 3, 128], sr []" in errors[0], errors[0]
    assert "the model declares input [N, 512], state [2, N, 128], sr []" in errors[0], errors[0]
    # the engine fails on a random sample rate: its error names the shapes fed, and the hint the input
    code, _, err = _run(capsys, "benchmark", voice, "--engine", "onnxruntime", "--iterations", "1", "--warmup", "0",
                        "--repeats", "1", "--input-shape", "state=2,1,128", "--input-shape", "sr=")
    errors = _errors(err)
    assert code == 2 and len(errors) == 1, err
    assert "fed input [1, 512], state [2, 1, 128], sr []" in errors[0] and "inputs were synthetic" in errors[0]


def test_a_project_stores_the_marked_shapes_and_validates_with_them(capsys, voice, tmp_path):
    """The slow one of this file (22 s with the 2 cores at load 17; the validation times 5 repeats of
    250-ms blocks of both models, measured again while other processes take the cores)."""
    proj = tmp_path / "voice"
    code, _, err = _run(capsys, "new", voice, "--dir", proj, "--input-shape", "input=1,512", "--input-shape",
                        "state=2,N,128", "--input-shape", "sr=")
    assert code == 0, err
    from sparsify_tui.project import Project

    p = Project.open(proj, readonly=True)
    try:
        assert p.input_shapes == {"input": [1, 512], "state": [2, "N", 128], "sr": []}
    finally:
        p.close()
    code, out, err = _run(capsys, "profile", "perf", proj, "--engine", "onnxruntime", "--levels", "0,0.5",
                          "--iterations", "2", "--warmup", "1", "--repeats", "1", "--input-value", "sr=16000", "--json")
    assert code == 0, err
    assert json.loads(out)["input_shapes"] == FED
    code, _, err = _run(capsys, "optimize", proj, "--sparsity", "0.5")
    assert code == 0, err
    code, out, err = _run(capsys, "prune", proj, "-o", tmp_path / "pruned.onnx", "--validate", "--engine",
                          "onnxruntime", "--iterations", "2", "--input-value", "sr=16000", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["engine"] == "onnxruntime" and doc["measured_speedup"] > 0
    assert doc.get("output_change_error") is None and doc["output_change"] > 0  # both models ran on sr=16000
    code, _, err = _run(capsys, "prune", proj, "-o", tmp_path / "p2.onnx", "--input-value", "sr=16000")
    assert code == 2 and _errors(err) == ["error: --input-value is only used with --validate"]
