"""One core function per profile action: the command line and the app share settings, cache keys and names."""

from __future__ import annotations

import json

import pytest

from sparsify_tui.actions import profiles as profiles_action
from sparsify_tui.cli import main
from sparsify_tui.project import Project
from sparsify_tui.tui.jobs import canonical_settings


@pytest.fixture
def project(tmp_path):
    from sparsify_tui.analysis.demo import build_demo_model

    model = build_demo_model(tmp_path / "demo.onnx")
    p = Project.create(model, dir=tmp_path / "proj", name="demo")
    p.close()
    return tmp_path / "proj"


def test_a_cli_profile_is_the_apps_profile(project, capsys):
    """`profile perf` from the CLI, then the same settings asked by the app: one key, one name, reused."""
    argv = ["profile", "perf", str(project), "--engine", "onnxruntime", "--iterations", "2", "--warmup", "1",
            "--repeats", "1", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    p = Project.open(project)
    try:
        (entry,) = p.profiles_of("perf")
        assert entry.id == doc["profile_id"]
        assert entry.name == f"onnxruntime b1 c{doc['cores']}"  # the one naming scheme
        # the app's perf dialog with the same choices (cores left at "all")
        app_settings = canonical_settings("perf", {"engine": "onnxruntime", "iterations": 2, "warmup": 1,
                                                   "repeats": 1, "cores": None}, p)
        assert app_settings == entry.settings
        from sparsify_tui.engines.machine import machine_summary

        found = profiles_action.find_cached(p, "perf", app_settings, machine_summary())
        assert found is not None and found.id == entry.id
        res = profiles_action.measure_or_reuse(p, "perf", app_settings)
        assert res.reused and res.entry.id == entry.id
    finally:
        p.close()
    # and the CLI asked again reuses it too
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["profile_id"] == doc["profile_id"] and "reused cached profile" in err


def test_loss_and_quant_settings_fill_every_default(project):
    p = Project.open(project, readonly=True)
    try:
        assert canonical_settings("loss", {"method": "one-shot"}, p) == profiles_action.loss_settings(
            method="one-shot", samples=4, levels=None, input_shapes=p.input_shapes)
        q = canonical_settings("quant", {}, p)
        assert q == {"samples": 4, "data": None, "input_shapes": p.input_shapes}
    finally:
        p.close()
    with pytest.raises(Exception, match="--method must be approx or one-shot"):
        profiles_action.loss_settings(method="magic")
