"""The channel optimizer (issue 26): the channel loss profile, optimize --structure channels, prune and export of
a channel optimization, and its editor; on small hand-built conv models and the demo model."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest

from sparsify_tui.optim.plan import Structure
from tests.optim.test_channel_prune import images, small_cnn


def cli(*args: str):
    import subprocess

    return subprocess.run([sys.executable, "-m", "sparsify_tui", *args], capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------- the channel loss profile
def test_channel_loss_profile_removes_each_group_alone_and_compares_outputs(tmp_path):
    from sparsify_tui.metrics import compare_outputs, plan_outputs
    from sparsify_tui.onnxkit.channels import remove_channels
    from sparsify_tui.optim import channels as oc
    from sparsify_tui.profiles.loss_channels import compute_channel_loss

    m = small_cnn()
    path = tmp_path / "cnn.onnx"
    onnx.save(m, path)
    samples = images(3)
    np.savez(tmp_path / "x.npz", x=np.concatenate([s["x"] for s in samples]))
    doc = compute_channel_loss(str(path), scores_fn=oc.l2_scores, fractions=[0.25, 0.5], data=str(tmp_path / "x.npz"),
                               samples=3)
    assert doc["kind"] == "loss_channels" and doc["samples"] == 3 and doc["execution"] == "masked"
    rows = {r["id"]: r for r in doc["layers"]}
    dense, shapes, cmap = oc.prepare(m)
    prunable = [g for g in cmap.groups if g.prunable]
    assert set(rows) == {g.id for g in prunable}
    assert [u["id"] for u in doc["unprunable"]] == [g.id for g in cmap.groups if not g.prunable]
    # the residual group ties c1 to c2: one row, both layers listed
    res = next(r for r in doc["layers"] if len(r["layers"]) == 2)
    assert set(res["layers"]) == {"c1", "c2"}
    # a row's value is the output change of that group alone at that many channels, removed in l2 order
    scores = oc.l2_scores(dense, cmap)
    ref = [sess_run(dense, s) for s in samples]
    for g in prunable:
        row = rows[g.id]
        k = row["removed_by_level"]["0.5"] if "0.5" in row["removed_by_level"] else None
        assert k == max(1, round(0.5 * g.channels))
        gone = np.argsort(scores[g.id], kind="stable")[:k].tolist()
        small = remove_channels(dense, {g.id: gone}, shapes)
        want = compare_outputs(ref, [sess_run(small, s) for s in samples], plan_outputs(ref)).value
        assert row["raw_by_level"]["0.5"] == pytest.approx(want, rel=1e-4, abs=1e-9)
        vals = [row["sensitivity_by_level"][k] for k in sorted(row["sensitivity_by_level"], key=float)]
        assert vals[0] == 0.0 and vals == sorted(vals) and vals[-1] > 0


def sess_run(model, sample):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, sample)


# ---------------------------------------------------------------- the allocation
def _setup(tmp_path):
    from sparsify_tui.analysis import analyze
    from sparsify_tui.optim.channel_plan import ChannelSetup

    path = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), path)
    return ChannelSetup.for_model(path, analyze(path))


def _perf_doc(setup, slow: str) -> dict:
    """A channel perf profile whose group ``slow`` saves ten times more per channel than the others."""
    rows = []
    for g in setup.prunable:
        for f in (0.25, 0.5, 0.75):
            rows.append({"group": g.id, "fraction": f, "saved_ms": (10.0 if g.id == slow else 1.0) * f,
                         "removed_flops": {}})
    return {"kind": "perf_channels", "engine": "onnxruntime", "precision": "fp32", "dense_ms": 40.0,
            "rows": rows, "layer_flops": {}, "total_flops": 1}


def test_allocation_removes_the_target_share_of_channels_in_channel_entries(tmp_path):
    from sparsify_tui.optim.channel_plan import ChannelEvaluator
    from sparsify_tui.optim.optimization import default_optimization

    setup = _setup(tmp_path)
    ev = ChannelEvaluator(setup, round_to=1)
    opt = default_optimization(setup.graph)
    opt.pruning.target_sparsity = 0.4
    opt.pruning.protect_edges = False
    new, est = ev.run(opt)
    fr = new.plan.sparsities(Structure.CHANNELS)
    chans = {g.id: g.channels for g in setup.prunable}
    share = sum(round(fr.get(g, 0) * c) for g, c in chans.items()) / sum(chans.values())
    assert share == pytest.approx(0.4, abs=0.02) and est.achieved_sparsity == pytest.approx(share)
    for gid, e in new.plan.entries.items():
        assert e.structure is Structure.CHANNELS and e.layers
        if gid in chans:
            assert round(e.sparsity * chans[gid]) == pytest.approx(e.sparsity * chans[gid])  # whole channels
    # the Gemm head writes the graph output: listed with its reason, never pruned
    assert [u["id"] for u in est.unprunable_groups] == [g.id for g in setup.groups if not g.prunable]
    assert all("graph output" in u["reason"] for u in est.unprunable_groups)
    assert est.structure == "channels" and est.approximated and "FLOPs" in est.speedup_basis
    # FLOPs mode: the speedup is the FLOPs ratio of the plan's estimate
    assert est.estimated_speedup == pytest.approx(est.flops_before / est.flops_after, rel=1e-4)
    assert 0 < est.flops_reduction < 1
    # the stored form reads back as the same channel plan
    from sparsify_tui.optim.optimization import Optimization

    back = Optimization.from_dict(json.loads(json.dumps(new.to_dict())))
    assert back.plan.sparsities(Structure.CHANNELS) == fr


def test_balance_zero_follows_the_measured_savings_and_the_estimate_is_the_profiles(tmp_path):
    from sparsify_tui.optim.channel_estimate import estimate_channel_speedup
    from sparsify_tui.optim.channel_plan import ChannelEvaluator
    from sparsify_tui.optim.optimization import default_optimization

    setup = _setup(tmp_path)
    slow = setup.prunable[-1].id
    ev = ChannelEvaluator(setup, perf=_perf_doc(setup, slow), round_to=1)
    opt = default_optimization(setup.graph)
    opt.pruning.protect_edges = False
    opt.pruning.target_sparsity = 0.2
    opt.pruning.balance = 0.0
    new, est = ev.run(opt)
    fr = new.plan.sparsities(Structure.CHANNELS)
    assert max(fr, key=fr.get) == slow
    assert not est.approximated and "channel perf profile" in est.speedup_basis
    assert est.estimated_speedup == pytest.approx(estimate_channel_speedup(ev.perf, fr))
    assert est.estimated_ms == pytest.approx(40.0 / est.estimated_speedup)


def test_overrides_exclusions_and_flops_target(tmp_path):
    from sparsify_tui.errors import UsageError
    from sparsify_tui.optim.channel_plan import ChannelEvaluator
    from sparsify_tui.optim.optimization import default_optimization

    setup = _setup(tmp_path)
    ev = ChannelEvaluator(setup, round_to=8)
    a, b = [g.id for g in setup.prunable][:2]
    opt = default_optimization(setup.graph)
    opt.pruning.protect_edges = False
    opt.pruning.overrides[a] = 0.5
    opt.pruning.exclusions[b] = "excluded by user"
    new = ev.allocate(opt)
    assert new.plan.entries[a].sparsity == 0.5 and new.plan.entries[a].overridden
    assert new.plan.entries[b].sparsity == 0.0 and new.plan.entries[b].excluded_reason == "excluded by user"
    # round-to 8: every pruned group that is not overridden keeps a multiple of 8 channels
    for g in setup.prunable:
        e = new.plan.entries[g.id]
        if e.sparsity > 0 and not e.overridden:
            assert (g.channels - round(e.sparsity * g.channels)) % 8 == 0
    fine = ChannelEvaluator(setup, round_to=1)
    start = default_optimization(setup.graph)
    start.pruning.protect_edges = False
    hit = fine.for_flops_reduction(start, 0.3)
    assert fine.flops(hit)[2] == pytest.approx(0.3, abs=0.03)
    assert fine.evaluate(hit).flops_reduction == pytest.approx(fine.flops(hit)[2])
    with pytest.raises(UsageError, match="not a channel group"):
        ev.check_ids(["nope"], "--override")
    with pytest.raises(UsageError, match="cannot be pruned"):
        ev.check_ids([next(g.id for g in setup.groups if not g.prunable)], "--exclude")


# ---------------------------------------------------------------- the command line, the editor
@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    from sparsify_tui.analysis.demo import build_demo_model

    tmp = tmp_path_factory.mktemp("chopt")
    model = build_demo_model(tmp / "demo.onnx")
    assert cli("new", str(model), "--dir", str(tmp / "demo")).returncode == 0
    return tmp / "demo"


def test_cli_channel_loss_profile_is_stored_and_reused(demo_project):
    p = cli("profile", "loss", str(demo_project), "--structure", "channels", "--fractions", "0.25,0.5", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["kind"] == "loss_channels" and doc["fractions"] == [0.25, 0.5] and doc["layers"]
    again = cli("profile", "loss", str(demo_project), "--structure", "channels", "--fractions", "0.25,0.5", "--json")
    assert "reused cached profile" in again.stderr and json.loads(again.stdout)["layers"] == doc["layers"]
    bad = cli("profile", "loss", str(demo_project), "--structure", "channels", "--fractions", "1.5")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --fractions")


def test_cli_optimize_prune_and_export_a_channel_plan(demo_project, tmp_path):
    from sparsify_tui.analysis import analyze

    p = cli("optimize", str(demo_project), "--name", "ch", "--structure", "channels", "--flops-reduction", "0.4",
            "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["structure"] == "channels" and d["flops_reduction"] == pytest.approx(0.4, abs=0.06)
    assert d["unprunable_groups"] and all(u["reason"] for u in d["unprunable_groups"])
    assert all(row["layers"] for row in d["layers"]) and d["estimated_speedup"] > 1
    # a stored channel plan stays one without the flag; --sparsity is the share of channels removed
    p = cli("optimize", str(demo_project), "--name", "ch", "--sparsity", "0.25", "--json")
    d = json.loads(p.stdout)
    assert p.returncode == 0 and d["structure"] == "channels" and d["achieved_sparsity"] == pytest.approx(0.25, abs=0.05)
    # prune builds the plan's model: the removed channels are the plan's, and its FLOPs follow the estimate
    out = tmp_path / "ch.onnx"
    p = cli("prune", str(demo_project), "--optimization", "ch", "-o", str(out), "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    planned = {r["id"]: r["removed"] for r in d["layers"] if r["removed"]}
    assert info["structure"] == "channels" and info["optimization"] == "ch"
    assert info["removed_channels"] == sum(planned.values())
    from sparsify_tui.project import Project

    project = Project.open(demo_project, readonly=True)
    dense = analyze(project.model_path)
    project.close()
    pruned = analyze(out)
    assert 1 - pruned.flops / dense.flops == pytest.approx(d["flops_reduction"], abs=0.05)
    assert pruned.params == pytest.approx(d["params_after"], rel=0.05)
    # export: the pruned ONNX, a script that runs it; the residual groups make a recipe impossible: one line
    code = tmp_path / "run.py"
    p = cli("export", str(demo_project), "--optimization", "ch", "--onnx", str(tmp_path / "e.onnx"), "--code",
            str(code), "--recipe", str(tmp_path / "r.yaml"), "--json")
    assert p.returncode == 0, p.stderr
    e = json.loads(p.stdout)
    assert e["onnx_path"] and (tmp_path / "e.onnx").exists() and code.exists()
    compile(code.read_text(), str(code), "exec")
    if e["recipe"] is None:
        assert e["recipe_note"].startswith("no SparseML recipe") and "\n" not in e["recipe_note"]
        assert not (tmp_path / "r.yaml").exists()
    else:
        assert "mask_type: filter" in e["recipe"]
    p = cli("export", str(demo_project), "--optimization", "ch")
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error:") and "--onnx" in p.stderr
    p = cli("optimize", str(demo_project), "--name", "ch", "--override", "nope=0.3")
    assert p.returncode == 2 and "not a channel group" in p.stderr
    # a stored plan is never replaced by the other structure; --copy makes the other one beside it
    p = cli("optimize", str(demo_project), "--name", "ch", "--structure", "unstructured")
    assert p.returncode == 2 and "removes channel groups" in p.stderr.strip().splitlines()[-1]
    p = cli("optimize", str(demo_project), "--name", "ch", "--copy", "ch-w", "--structure", "unstructured", "--json")
    assert p.returncode == 0, p.stderr
    assert "structure" not in json.loads(p.stdout) and json.loads(p.stdout)["name"] == "ch-w"


def test_editor_edits_a_group_with_undo(demo_project):
    from sparsify_tui.actions.optimizer import OptimizerContext
    from sparsify_tui.actions.optimizer_editor import OptimizationEditor
    from sparsify_tui.project import Project

    assert cli("optimize", str(demo_project), "--name", "ed", "--structure", "channels").returncode == 0
    project = Project.open(demo_project)
    try:
        ctx = OptimizerContext.for_editor(project, None, "ed")
        assert ctx.structure == "channels"
        ed = OptimizationEditor(project, ctx)
        ed.open("ed")
        rows = {x.id: x for x in ed.est.layers}
        gid = next(x.id for x in ed.est.layers if x.op_type == "channels" and not x.excluded_reason)
        before = rows[gid].sparsity
        ed.set_layer(gid, "50%")
        after = {x.id: x for x in ed.est.layers}[gid]
        assert after.sparsity == 0.5 and after.overridden and after.layers
        assert ed.opt.plan.entries[gid].structure is Structure.CHANNELS
        assert ed.undo()
        assert {x.id: x for x in ed.est.layers}[gid].sparsity == before
    finally:
        project.close()


def test_app_views_show_a_channel_plan_by_group(tmp_path):
    """The optimizer's table rows are the groups (their layers in the name), its panel gives the FLOPs removed
    as a share and the channels removed; the layer summaries give each group's layers its share."""
    from rich.console import Console

    from sparsify_tui.optim.channel_plan import ChannelEvaluator
    from sparsify_tui.optim.optimization import default_optimization
    from sparsify_tui.tui.optimizer_view import estimates_text, layer_specs
    from sparsify_tui.tui.widgets.optim_summary import plan_sparsities

    setup = _setup(tmp_path)
    opt = default_optimization(setup.graph)
    opt.pruning.protect_edges = False
    opt.pruning.target_sparsity = 0.3
    opt, est = ChannelEvaluator(setup, round_to=1).run(opt)
    assert 0 < est.params_after < est.params_before
    res = next(x for x in est.layers if len(x.layers) == 2)
    assert res.name.startswith(res.id) and all(lid in res.name for lid in res.layers)
    assert layer_specs(res)["sparsity"][0].startswith(f"{res.sparsity * 100:.1f}%")
    console = Console(width=140, record=True)
    console.print(estimates_text(est, 140))
    text = console.export_text()
    assert f"FLOPs Removed {100 * est.flops_reduction:.1f}%" in text
    assert f"Channels Removed {est.achieved_sparsity * 100:.1f}%" in text and "rows are channel groups" in text
    per_layer = plan_sparsities(opt.to_dict())
    for x in est.layers:
        for lid in x.layers:
            if x.sparsity > 0:
                assert per_layer[lid] >= x.sparsity
