"""``sparsify-tui profile loss`` / ``profile quant`` on ONNX files and projects."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsify_tui.cli import main

RNG = np.random.default_rng(3)


@pytest.fixture
def model(tmp_path):
    w1 = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    wfc = RNG.standard_normal((6, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wfc"], ["logits"], transB=1, name="fc"),
    ]
    g = helper.make_graph(nodes, "cli", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 6])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(wfc, "wfc")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    p = tmp_path / "cli.onnx"
    onnx.save(m, str(p))
    return p


def _json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out), out.err


def test_loss_approx_json_and_table(model, capsys):
    doc, _ = _json(capsys, ["profile", "loss", str(model), "--json"])
    assert doc["method"] == "approx" and len(doc["levels"]) == 100
    assert [r["id"] for r in doc["layers"]] == ["c1", "logits"]
    for key in ("method", "levels", "eval_sparsity", "average_sensitivity", "rank_correlation", "layers"):
        assert key in doc
    for r in doc["layers"]:
        assert set(r) >= {"id", "name", "sensitivity_by_level", "sensitivity", "rank"}
    assert main(["profile", "loss", str(model)]) == 0
    out = capsys.readouterr().out
    assert "Average Sensitivity" in out and "logits" in out and "Gemm" in out


def test_loss_one_shot_json(model, capsys):
    doc, err = _json(capsys, ["profile", "loss", str(model), "--method", "one-shot", "--levels", "0.5,0.9",
                              "--samples", "2", "--json"])
    assert doc["method"] == "one-shot" and doc["levels"] == [0.0, 0.5, 0.9] and doc["samples"] == 2
    assert doc["rank_correlation"] is not None
    assert all(r["sensitivity_by_level"]["0.0"] == 0.0 for r in doc["layers"])
    assert "profile loss" in err  # progress on stderr


def test_loss_project_stores_and_reuses(model, tmp_path, capsys):
    from sparsify_tui.project import Project

    proj = Project.create(model, dir=tmp_path / "proj")
    proj.close()
    argv = ["profile", "loss", str(tmp_path / "proj"), "--method", "one-shot", "--levels", "0.9",
            "--samples", "1", "--json"]
    doc, err = _json(capsys, argv)
    assert "stored profile" in err and doc["profile_id"]
    doc2, err2 = _json(capsys, argv)
    assert "reused cached profile" in err2 and doc2["profile_id"] == doc["profile_id"]
    assert doc2["layers"] == doc["layers"]
    doc3, err3 = _json(capsys, argv + ["--force"])
    assert "stored profile" in err3
    p = Project.open(tmp_path / "proj", readonly=True)
    try:
        assert [e.kind for e in p.profiles_of("loss")] == ["loss"]  # same settings: replaced, not added
        stored = p.load_profile(p.profiles_of("loss")[0])
        assert stored["method"] == "one-shot" and stored["kind"] == "loss"
    finally:
        p.close()
    doc4, _ = _json(capsys, ["profile", "loss", str(tmp_path / "proj"), "--json"])
    assert doc4["method"] == "approx"


def test_quant_json(model, capsys):
    doc, _ = _json(capsys, ["profile", "quant", str(model), "--samples", "2", "--json"])
    assert doc["kind"] == "quant" and [r["id"] for r in doc["layers"]] == ["c1", "logits"]
    assert all("sensitivity" in r and r["rank"] in (1, 2) for r in doc["layers"])
    assert set(doc["model"]) >= {"output_change", "fp32_ms", "int8_ms"}


@pytest.mark.parametrize("argv, needle", [
    (["--method", "bogus"], "--method"),
    (["--method", "one-shot", "--samples", "0"], "--samples"),
    (["--levels", "0.5,1.0"], "--levels"),
    (["--method", "one-shot", "--data", "/nonexistent/data.npz"], "no such data"),
    (["--eval-sparsity", "1"], "--eval-sparsity"),
])
def test_loss_bad_flags(model, capsys, argv, needle):
    rc = main(["profile", "loss", str(model)] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_loss_and_quant_bad_target(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("hello")
    for kind in ("loss", "quant"):
        rc = main(["profile", kind, str(bad)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and "bad.onnx" in err and "Traceback" not in err


@pytest.mark.corpus
@pytest.mark.parametrize("argv", [["profile", "loss", "--method", "one-shot", "--samples", "1", "--levels", "0.9"],
                                  ["profile", "quant", "--samples", "1"]])
def test_dynamic_dims_need_an_input_shape_like_perf(corpus, capsys, argv):
    """yolov8n's height and width are dynamic: random samples need them given, not the size analysis assumes."""
    path = str(corpus.path("yolov8n"))
    rc = main(argv[:2] + [path] + argv[2:])
    err = capsys.readouterr().err
    assert rc == 2
    line = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "dynamic dimension" in line[0] and "--input-shape images=" in line[0], err
    # the approximate loss profile reads only weights: no shape needed
    assert main(["profile", "loss", path, "--method", "approx", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"]
