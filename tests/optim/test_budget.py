"""``optimize --max-output-change``: the closed loop on a small hand-built model whose INT8 form breaks in
one layer (a huge-range weight), with real profiles and real ONNX Runtime runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from tests.reliability.helpers import run_cli

C0, C1, C2, HW = 8, 32, 32, 24


def _model(path: Path) -> Path:
    """x -> conv1 -> relu -> conv2 -> relu -> conv3 -> y (layer ids: their outputs c1, c2, y). conv1's last
    channel is always 0 (zero weights and bias); conv2 reads it with a weight of 2000 beside weights ~0.05:
    per-channel INT8 of conv2's weight (scale 2000/127) rounds every small weight to 0, so conv2 under
    INT8 outputs nothing, while conv1 and conv3 quantize fine (0 is exact in uint8 activations, so the huge
    weight meets exactly 0 whatever its neighbours' precision: only conv2's own weight breaks)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (C0, 3, 3, 3)).astype(np.float32)
    w1[-1] = 0
    b1 = np.zeros(C0, np.float32)
    w2 = rng.normal(0, 0.05, (C1, C0, 3, 3)).astype(np.float32)
    w2[:, -1] = 0
    w2[:, -1, 1, 1] = 2000.0
    b2 = np.zeros(C1, np.float32)
    w3 = rng.normal(0, 0.1, (C2, C1, 3, 3)).astype(np.float32)
    pads = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", **pads),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", **pads),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="conv3", **pads)]
    g = helper.make_graph(nodes, "int8_breaks_conv2", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, HW, HW])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [1, C2, HW, HW])],
                          [numpy_helper.from_array(a, n) for a, n in
                           ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("budget")
    model = _model(tmp / "m.onnx")
    pdir = tmp / "proj"
    for args in (("new", model, "--dir", pdir),
                 ("profile", "perf", pdir, "--engine", "onnxruntime", "--iterations", "5", "--warmup", "2",
                  "--repeats", "1", "--levels", "0"),
                 ("profile", "quant", pdir)):
        res = run_cli(*args, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
    return pdir


def _budget(pdir: Path, x: str, *extra: str):
    return run_cli("optimize", pdir, "--max-output-change", x, "--engine", "onnxruntime", "--precision", "int8",
                   *extra, "--json", timeout=600)


def _quant_layers(pdir: Path) -> dict:
    from sparsify_tui.project import Project

    p = Project.open(pdir, readonly=True)
    try:
        doc = p.load_profile(p.profiles_of("quant")[-1])
    finally:
        p.close()
    return {r["id"]: r for r in doc["layers"]}


def test_mixed_precision_keeps_the_breaking_layer_fp32_and_stays_within_the_budget(project):
    q = _quant_layers(project)
    # the INT8 profile itself sees conv2 break and the others not
    assert q["c2"]["sensitivity"] > 1000 * max(q["c1"]["sensitivity"], q["y"]["sensitivity"])
    budget = 0.05  # far above conv1 and conv3 under INT8 (together ~3e-3 measured), far below conv2 (~1)
    res = _budget(project, f"{budget:g}")
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["budget"] == pytest.approx(budget, rel=1e-6)
    assert doc["precision_by_layer"]["c2"] == "fp32"
    assert doc["precision_by_layer"]["c1"] == doc["precision_by_layer"]["y"] == "int8"
    assert doc["measured_output_change"] <= budget
    # whole-model INT8 breaks the outputs (over the budget): the first step measured everything INT8
    assert doc["whole_model_int8"]["output_change"] > budget
    its = doc["iterations"]
    assert its[0]["levers_applied"] == 3 and not its[0]["within_budget"]
    assert any(r["within_budget"] for r in its)
    assert all({"measured_output_change", "ms", "measured_speedup", "restored"} <= set(r) for r in its)
    assert "c2 INT8" in [x for r in its for x in r["restored"]]
    assert doc["measured_speedup"] > 0
    assert doc["under_budget"] == pytest.approx(budget - doc["measured_output_change"])
    assert [h["layer"] for h in doc["held_back"]] == ["c2"]
    # stored: the optimization's plan holds the per-layer precision, its validation the measured change
    from sparsify_tui.project import Project

    p = Project.open(project, readonly=True)
    try:
        opt = p.get_optimization("budget")
    finally:
        p.close()
    assert opt["layers"]["c2"]["precision"] == "fp32" and opt["layers"]["c1"]["precision"] == "int8"
    assert opt["validation"]["output_change"] <= budget
    assert opt["quantization"]["enabled"] and "c2" in opt["quantization"]["skipped"]
    # prune writes the stored plan's mixed precision: conv2 reads its fp32 weight, conv1 a dequantized one
    out = project.parent / "budget.onnx"
    res = run_cli("prune", project, "-o", out, "--optimization", "budget", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    m = onnx.load(str(out))
    dq = {o for n in m.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    conv = {n.name: n for n in m.graph.node if n.op_type == "Conv"}
    assert conv["conv2"].input[1] == "w2" and conv["conv1"].input[1] in dq and conv["conv3"].input[1] in dq
    # the deployment search runs it as its own INT8 row (INT8 except conv2), within the budget where
    # whole-model INT8 is over it
    res = run_cli("deploy", project, "--optimization", "budget", "--engines", "onnxruntime", "--precisions", "int8",
                  "--repeats", "1", "--max-output-change", f"{budget:g}", "--json", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["id"]: r for r in json.loads(res.stdout)["rows"]}
    assert rows["onnxruntime/int8/dense"]["output_change"] > budget
    assert rows["onnxruntime/int8/budget"]["output_change"] <= budget
    assert json.loads(res.stdout)["best"]["id"] in ("onnxruntime/int8/budget", "onnxruntime/fp32/dense")


def test_a_budget_nothing_meets_ends_in_one_error_and_stores_nothing(project):
    # --max-minutes 0: the loop stops after its first step (every lever INT8, over the budget)
    res = _budget(project, "1e-12", "--name", "never", "--max-minutes", "0")
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: no plan meets --max-output-change 1e-12: the smallest change measured in "
                          "1 step was "), res.stderr[-2000:]
    assert "nothing stored" in err
    from sparsify_tui.project import Project

    p = Project.open(project, readonly=True)
    try:
        assert p.get_optimization("never") is None
    finally:
        p.close()


def test_missing_profiles_name_the_command_to_run(tmp_path):
    model = _model(tmp_path / "m.onnx")
    pdir = tmp_path / "p"
    assert run_cli("new", model, "--dir", pdir).returncode == 0
    res = _budget(pdir, "0.1")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: no onnxruntime perf profile in the project (the per-layer times the plan is ranked by): run "
        f"'sparsify-tui profile perf {pdir} --engine onnxruntime' first")
    res = run_cli("optimize", pdir, "--max-output-change", "x")
    assert res.stderr.strip().splitlines()[-1].startswith("error: --max-output-change must be a number")


def test_ctrl_c_during_the_loop_exits_130_and_stores_nothing(project, tmp_path):
    from tests.conftest import interrupt_cli_when
    from tests.reliability.helpers import cli_env

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    returncode, err = interrupt_cli_when(
        ["optimize", str(project), "--max-output-change", "0.05", "--engine", "onnxruntime", "--precision", "int8",
         "--name", "interrupted"], "step 1: compiling", env=cli_env(TMPDIR=str(scratch)))
    assert returncode == 130, err[-2000:]
    assert "error: interrupted" in err and "Traceback" not in err
    assert 'name = "interrupted"' not in (project / "project.toml").read_text()
    assert list(scratch.iterdir()) == []  # the step's files went with the loop


@pytest.mark.parametrize("predicted", [True, False])
def test_the_loop_narrows_to_neighbouring_steps_within_and_over_the_budget(predicted):
    """The search over k on a known monotone change curve (the per-lever changes the profiles would
    predict, or none at all): it ends on the largest k within the budget, with k and k + 1 both measured."""
    from sparsify_tui.actions.budget import Lever, search

    lv = [Lever("int8", f"l{i}", (0.001 * (i + 1)) if predicted else 0.0, 1.0) for i in range(40)]
    truth = [0.0] + list(__import__("itertools").accumulate(0.002 * (i + 1) for i in range(40)))
    budget = truth[23] + 1e-6  # the first 23 levers are within, 24 are over
    its, why = search(lv, budget, lambda k: {"output_change": truth[k], "ms": 40 - k, "speedup": 1 + k / 40},
                      deadline=float("inf"), max_steps=12)
    ks = [r["levers_applied"] for r in its]
    assert ks[0] == 40 and {23, 24} <= set(ks), ks
    assert len(its) <= 12 and why == "23 levers are within the budget and 24 are over it"
    assert all(r["within_budget"] == (truth[r["levers_applied"]] <= budget) for r in its)
    back = next(r for r in its[1:])
    assert back["restored"] == [f"l{i} INT8" for i in range(back["levers_applied"], 40)]
