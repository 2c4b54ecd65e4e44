"""Bad model files through the real CLI: one ``error: ...`` line naming the file, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import zipfile

import pytest

from .helpers import RNG, T, assert_user_error, helper, np, numpy_helper, onnx, run_cli, save_model, vi

PERF = ("--engine", "onnxruntime", "--iterations", "1", "--warmup", "0", "--repeats", "1", "--levels", "0,0.5")


def test_missing_file(tmp_path):
    line = assert_user_error(run_cli("info", tmp_path / "nope.onnx"), "nope.onnx", "does not exist")
    assert str(tmp_path) in line


def test_directory_instead_of_a_model(tmp_path):
    assert_user_error(run_cli("info", tmp_path), str(tmp_path), "not a sparsify-tui project")


def test_empty_file(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert_user_error(run_cli("info", tmp_path / "empty.onnx"), "empty.onnx", "empty")


@pytest.mark.parametrize("cut", [1, 7, 0.5, -3])
def test_truncated_model(tmp_path, model, cut):
    data = model.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(data) + cut)
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[:n])
    assert_user_error(run_cli("info", bad), "cut.onnx", "truncated")


def test_random_bytes(tmp_path):
    (tmp_path / "rand.onnx").write_bytes(np.random.default_rng(3).bytes(5000))
    assert_user_error(run_cli("info", tmp_path / "rand.onnx"), "rand.onnx", "not an ONNX model")


def test_png_renamed_onnx(tmp_path):
    (tmp_path / "pic.onnx").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert_user_error(run_cli("info", tmp_path / "pic.onnx"), "pic.onnx", "PNG")


def test_zip_renamed_onnx_and_no_project_left_behind(tmp_path):
    with zipfile.ZipFile(tmp_path / "arch.onnx", "w") as z:
        z.writestr("readme.txt", "not a model")
    assert_user_error(run_cli("new", tmp_path / "arch.onnx", "--dir", tmp_path / "p"), "arch.onnx", "ZIP")
    assert not (tmp_path / "p" / "project.toml").exists()


def test_missing_external_data(tmp_path):
    w = numpy_helper.from_array(RNG.standard_normal((64, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
                          [vi("x", [1, 3, 8, 8])], [vi("y", [1, 64, 6, 6])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.data", size_threshold=0)
    os.remove(tmp_path / "ext.data")
    assert_user_error(run_cli("info", tmp_path / "ext.onnx"), "ext.onnx", "ext.data", "missing")
    assert_user_error(run_cli("profile", "perf", tmp_path / "ext.onnx", *PERF), "ext.data")


def test_unknown_domain_op(tmp_path):
    p = save_model(tmp_path / "dom.onnx", [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example.secret",
                                                             name="fancy")],
                   [vi("x", [1, 4])], [vi("y", [1, 4])], domains=["com.example.secret"])
    # analysis still works: the layer's FLOPs are "unknown", never 0
    res = run_cli("info", p, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert "unknown" in json.dumps(doc).lower()
    # measuring cannot: the engine says which op it does not know
    assert_user_error(run_cli("profile", "perf", p, *PERF), "dom.onnx", "FancyOp")


def test_opset_newer_than_installed_onnx(tmp_path):
    p = save_model(tmp_path / "future.onnx", [helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4])],
                   [vi("y", [1, 4])], opset=99, ir=99)
    assert_user_error(run_cli("info", p), "future.onnx", "opset 99", "upgrade")


def test_failing_shape_inference(tmp_path):
    p = save_model(tmp_path / "bad.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                   [vi("x", [1, 4])], [vi("y", None)], [numpy_helper.from_array(np.ones((5, 3), np.float32), "w")])
    assert_user_error(run_cli("info", p), "bad.onnx", "shape inference")


def test_no_prunable_layer_works_and_says_so(tmp_path):
    p = save_model(tmp_path / "act.onnx", [helper.make_node("Relu", ["x"], ["a"], name="r"),
                                            helper.make_node("Sigmoid", ["a"], ["y"], name="s")],
                   [vi("x", [1, 4])], [vi("y", [1, 4])])
    res = run_cli("info", p)
    assert res.returncode == 0, res.stderr
    assert "No prunable layer" in res.stdout
    res = run_cli("new", p, "--dir", tmp_path / "proj")
    assert res.returncode == 0, res.stderr
    res = run_cli("optimize", tmp_path / "proj", "--json")
    assert res.returncode == 0, res.stderr
    assert "no prunable layer" in (res.stdout + res.stderr).lower()


def test_integer_only_model(tmp_path):
    k = numpy_helper.from_array(np.arange(4, dtype=np.int64).reshape(1, 4), "k")
    p = save_model(tmp_path / "int.onnx", [helper.make_node("Add", ["x", "k"], ["a"], name="add"),
                                            helper.make_node("Mul", ["a", "k"], ["y"], name="mul")],
                   [vi("x", [1, 4], T.INT64)], [vi("y", [1, 4], T.INT64)], [k])
    res = run_cli("info", p, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert len(doc["layers"]) == 2
    res = run_cli("profile", "perf", p, *PERF, "--json")
    assert res.returncode == 0, res.stderr
    perf = json.loads(res.stdout)
    assert perf["engine"] == "onnxruntime" and perf["baseline_ms"] > 0


def test_absurd_reshape_dimension(tmp_path):
    shape = numpy_helper.from_array(np.array([2**62, 2**62], np.int64), "s")
    p = save_model(tmp_path / "huge.onnx", [helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape"),
                                             helper.make_node("Relu", ["r"], ["y"], name="relu")],
                   [vi("x", [1, 4])], [vi("y", None)], [shape])
    res = run_cli("info", p, "--json")  # analysis: big integers, no overflow, no crash
    assert res.returncode == 0, res.stderr
    json.loads(res.stdout)
    assert_user_error(run_cli("profile", "perf", p, *PERF), "huge.onnx")


def test_graph_with_a_cycle(tmp_path):
    p = save_model(tmp_path / "cycle.onnx", [helper.make_node("Relu", ["b"], ["a"], name="r1"),
                                              helper.make_node("Relu", ["a"], ["b"], name="r2"),
                                              helper.make_node("Add", ["x", "a"], ["y"], name="add")],
                   [vi("x", [1, 4])], [vi("y", [1, 4])])
    assert_user_error(run_cli("info", p), "cycle.onnx", "has a cycle")
    assert_user_error(run_cli("new", p, "--dir", tmp_path / "p"), "cycle.onnx", "has a cycle")
    assert not (tmp_path / "p" / "project.toml").exists()


def test_dangling_input(tmp_path):
    p = save_model(tmp_path / "dangle.onnx", [helper.make_node("Add", ["x", "ghost"], ["y"], name="add")],
                   [vi("x", [1, 4])], [vi("y", [1, 4])])
    assert_user_error(run_cli("info", p), "dangle.onnx", "'ghost'", "dangling input")
    assert_user_error(run_cli("profile", "perf", p, *PERF), "dangle.onnx", "ghost")
