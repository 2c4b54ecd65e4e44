"""A channel plan in the deployment search: rows for every engine x precision, on a small hand-built model.

The plan is stored by ``prune --structure channels --save-as`` (the real CLI); the search runs every engine
this machine has (one round, short blocks): each engine x precision that runs the dense model runs the
channel-pruned file too (fp32 pruned once, INT8 quantized from the pruned file), with its output change
measured against ONNX Runtime fp32 dense like any row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from sparsify_tui.engines.registry import engine_names
from tests.reliability.helpers import assert_user_error, cli_env, run_cli


def _model(path: Path) -> Path:
    """Conv 32 -> Relu -> Conv 32 -> Relu -> Conv 1x1 32, + the first Relu (a residual group), pool, Gemm."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [w("w1", 32, 3, 3, 3), w("b1", 32), w("w2", 32, 32, 3, 3), w("b2", 32), w("w3", 32, 32, 1, 1),
             w("wg", 32, 10), w("bg", 10)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3"),
             helper.make_node("Add", ["c3", "r1"], ["s"], name="add"),
             helper.make_node("GlobalAveragePool", ["s"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], name="fc")]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def channel_deploy(tmp_path_factory):
    """The tiny model's project with a channel plan stored by the CLI, searched once on every engine (1 round)."""
    from sparsify_tui.actions.deploy import run_deploy
    from sparsify_tui.project import Project

    tmp = tmp_path_factory.mktemp("chdeploy")
    env = cli_env(SPARSIFY_TUI_HOME=str(tmp / "home"))
    pdir = tmp / "proj"
    assert run_cli("new", _model(tmp / "tiny.onnx"), "--dir", pdir, env=env).returncode == 0
    res = run_cli("prune", pdir, "-o", tmp / "half.onnx", "--structure", "channels", "--channel-fraction", "0.5",
                  "--round-to", "8", "--save-as", "half", "--json", env=env)
    assert res.returncode == 0, res.stderr
    pruned = json.loads(res.stdout)
    project = Project.open(pdir)
    try:
        stored = project.get_optimization("half")
        doc = run_deploy(project, repeats=1, min_block_ms=10, channel_method="l2")
    finally:
        project.close()
    return pdir, pruned, stored, doc


def test_channel_plan_rows_for_every_engine_and_precision(channel_deploy):
    from sparsify_tui.actions.deploy import plan_cell, summary_line

    _pdir, pruned, stored, doc = channel_deploy
    assert pruned["saved_as"]["name"] == "half" and pruned["saved_as"]["groups"] == 2
    layers = stored["layers"]
    assert {k: (v["structure"], v["sparsity"]) for k, v in layers.items()} == {
        "conv1": ("channels", 0.5), "conv2": ("channels", 0.5)}
    assert sorted(layers["conv1"]["layers"]) == ["c1", "c3"]  # the residual group: both sides of the Add
    rows = {r["id"]: r for r in doc["rows"]}
    skipped = {s["id"]: s["reason"] for s in doc["skipped"]}
    assert doc["complete"] and doc["channel_method"] == "l2" and doc["optimizations"] == ["half"]
    # every engine x precision that runs the dense model runs the channel-pruned file as well
    dense = [r for r in rows.values() if r["optimization"] is None]
    assert {r["engine"] for r in dense} >= {"onnxruntime"} and {r["precision"] for r in dense} >= {"fp32", "int8"}
    for d in dense:
        cid = f"{d['engine']}/{d['precision']}/half"
        assert cid in rows, (cid, skipped.get(cid))
    chan = [r for r in rows.values() if r["optimization"] == "half"]
    assert len(chan) == len(dense)
    flops = pruned["flops_reduction"]
    for r in chan:
        assert r["structure"] == "channels" and r["channel_method"] == "l2"
        assert r["flops_reduction"] == pytest.approx(flops, rel=1e-6)  # the same counts as the prune that stored the plan
        assert r["speedup"] > 0 and r["median_ms"] > 0
        assert math.isfinite(r["output_change"]) and r["output_change"] > 0  # half the channels gone: it moved
        base = rows[f"{r['engine']}/{r['precision']}/dense"]
        assert r["file_bytes"] < base["file_bytes"]  # a physically smaller file, INT8 quantized from it
        assert plan_cell(r) == f"half (channels -{flops:.0%} FLOPs)"
    for r in dense:
        assert r["structure"] is None and "flops_reduction" not in r
    # the fp32 rows of every engine run the same pruned file: the same change, up to fp32 rounding
    fp32 = [r["output_change"] for r in chan if r["precision"] == "fp32"]
    assert max(fp32) <= min(fp32) * 1.01 + 1e-9
    # the sparse-plan comparison is about unstructured plans, never a channel row
    assert doc["sparse_plan"] is None and "the sparse plan alone" not in summary_line(doc)
    assert set(engine_names()) >= {r["engine"] for r in chan}


def test_bad_channel_method_and_save_as_without_channels(tmp_path):
    env = cli_env(SPARSIFY_TUI_HOME=str(tmp_path / "home"))
    pdir = tmp_path / "proj"
    assert run_cli("new", _model(tmp_path / "tiny.onnx"), "--dir", pdir, env=env).returncode == 0
    assert_user_error(run_cli("deploy", pdir, "--channel-method", "bogus", env=env), "--channel-method")
    assert_user_error(run_cli("prune", pdir, "-o", tmp_path / "x.onnx", "--save-as", "x", env=env),
                      "--save-as", "--structure channels")


async def test_the_deploy_screen_shows_the_channel_rows(channel_deploy, tmp_path, monkeypatch):
    from textual.widgets import DataTable, Static

    from sparsify_tui.project import Project
    from sparsify_tui.tui.app import SparsifyApp
    from sparsify_tui.tui.screens.deploy import DeployScreen
    from tests.tui.conftest import FIXED_MACHINE, settle, widget_text

    monkeypatch.setenv("SPARSIFY_TUI_HOME", str(tmp_path / "home"))
    pdir, pruned, _stored, doc = channel_deploy
    project = Project.open(pdir)
    try:
        app = SparsifyApp(project, machine=FIXED_MACHINE)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot, app)
            await pilot.press("f6")
            await settle(pilot, app)
            screen = app.screen
            assert isinstance(screen, DeployScreen)
            table = screen.query_one("#deploy-table", DataTable)
            assert table.row_count == len(doc["rows"])
            cells = {table.coordinate_to_cell_key((i, 0)).row_key.value: table.get_row_at(i)[3].plain
                     for i in range(table.row_count)}
            short = f"half ch-{pruned['flops_reduction']:.0%}"
            for r in doc["rows"]:
                assert cells[r["id"]] == (short if r["optimization"] else "dense"), r["id"]
            chan = next(i for i in range(table.row_count) if table.get_row_at(i)[3].plain == short)
            table.move_cursor(row=chan)
            await settle(pilot, app)
            detail = widget_text(screen.query_one("#deploy-detail", Static), width=400)
            assert f"half (channels -{pruned['flops_reduction']:.0%} FLOPs): change " in detail
    finally:
        project.close()


def test_export_writes_the_channel_pruned_int8_model(channel_deploy, tmp_path):
    import onnxruntime as ort

    from sparsify_tui.actions.deploy import apply_budget, export_row, find_row
    from sparsify_tui.project import Project

    pdir, _pruned, _stored, doc = channel_deploy
    project = Project.open(pdir)
    try:
        full = apply_budget(doc, None)
        row = find_row(full, "onnxruntime/int8/half")
        out = export_row(project, full, row, tmp_path / "half_int8.onnx")
    finally:
        project.close()
    model = Path(out["model"])
    assert model.stat().st_size == pytest.approx(row["file_bytes"], rel=0.02)  # the file the row timed
    q = onnx.load(str(model))
    conv = next(i for i in q.graph.initializer if i.data_type == T.INT8 and list(i.dims)[1:] == [3, 3, 3])
    assert conv.dims[0] == 16  # half of conv1's 32 filters, stored int8
    y = ort.InferenceSession(str(model)).run(None, {"x": np.zeros((1, 3, 16, 16), np.float32)})[0]
    assert y.shape == (1, 10)
