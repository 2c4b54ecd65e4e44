"""Export screen on the demo project: recipe, code sample, name map, saving with inline validation."""

from __future__ import annotations

import json

import pytest

from textual.widgets import Input, Static

from sparsify_tui.optim.recipe import import_recipe
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.screens.export import ExportScreen
from tests.tui.conftest import FIXED_MACHINE, settle, wait_for, widget_text


async def open_export(pilot, app) -> ExportScreen:
    await settle(pilot, app)
    await pilot.press("f4")
    await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen) and app.screen.recipe_text)
    await pilot.pause()
    return app.screen


async def test_export_recipe_code_and_save(demo_project, tmp_path):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_export(pilot, app)
        graph = screen.graph
        assert "!GMPruningModifier" in screen.recipe_text
        pruned = [lay for lay in graph.prunable_layers if screen.opt.layers[lay.id].sparsity > 0]
        assert pruned[0].weight_name in screen.recipe_text  # ONNX weight names without a name map
        # the stem is left dense by the edge filter, so it is not in the recipe's modifiers
        stem = graph.prunable_layers[0]
        assert screen.opt.layers[stem.id].excluded_reason.startswith("protected: stem")
        assert stem.weight_name not in screen.recipe_text.split("modifiers:", 1)[1]
        assert "ONNX weight" in widget_text(screen.query_one("#export-note", Static), 120)
        title = widget_text(screen.query_one("#export-title", Static), 120)
        assert "no optimization yet" in title
        # the demo project's loss profile is the weight-magnitude approximation: the screen and the recipe say so
        assert "Planned without a measured loss profile" in title
        assert "# Planned without a measured loss profile" in screen.recipe_text
        # framework and code type by keys
        assert "torch" in screen.code_text
        await pilot.press("f")
        await pilot.pause()
        assert screen.framework == "keras" and "keras" in screen.code_text.lower()
        await pilot.press("k")
        await pilot.pause()
        assert screen.kind == "training"
        # a missing folder is refused inline and nothing is written
        bad = tmp_path / "nope" / "r.yaml"
        await pilot.press("p")
        path_in = screen.query_one("#export-path", Input)
        assert screen.focused is path_in
        path_in.value = str(bad)
        await pilot.press("enter")
        await pilot.pause()
        assert "does not exist" in widget_text(screen.query_one("#export-error", Static), 120)
        assert not bad.parent.exists()
        # a good path: the file is the recipe, and it imports back to the same plan
        out = tmp_path / "recipe.yaml"
        path_in.value = str(out)
        screen.query_one("#export-code-path", Input).value = str(tmp_path / "train.py")
        await pilot.press("enter")
        await pilot.pause()
        assert out.read_text() == screen.recipe_text
        assert "keras" in (tmp_path / "train.py").read_text().lower()
        back = import_recipe(out.read_text(), graph)
        assert back.layer_sparsities() == screen.opt.layer_sparsities()
        assert not screen.query_one("#export-error", Static).display


async def test_export_name_map(demo_project, tmp_path):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_export(pilot, app)
        first = next(lay for lay in screen.graph.prunable_layers if screen.opt.layers[lay.id].sparsity > 0)
        await pilot.press("m")
        inp = screen.query_one("#export-namemap", Input)
        inp.value = str(tmp_path / "missing.json")
        await pilot.press("enter")
        await pilot.pause()
        assert "does not exist" in widget_text(screen.query_one("#export-error", Static), 120)
        nm = tmp_path / "map.json"
        nm.write_text(json.dumps({first.weight_name: "features.0.weight"}))
        inp.value = str(nm)
        await pilot.press("enter")
        await pilot.pause()
        assert "features.0.weight" in screen.recipe_text
        assert "1 names mapped" in widget_text(screen.query_one("#export-note", Static), 120)


@pytest.mark.slow
async def test_validation_key_runs_in_background(demo_project):
    """o picks the pruning method (sparsegpt here), v: real one-shot pruning + dense/pruned benchmark in an App
    worker; the result shows magnitude's output change at the same plan. On ONNX Runtime: this test runs beside
    another one (``-n 2``), where DeepSparse (the auto choice) stalls; the engine choice is not what it checks."""
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_export(pilot, app)
        screen.validation_kw = {"iterations": 4, "warmup": 1, "repeats": 2, "samples": 8, "engine": "onnxruntime"}
        await pilot.press("o", "o")
        await pilot.pause()
        assert screen.prune_method == "sparsegpt"
        assert "(sparsegpt; o changes it)" in widget_text(screen.query_one("#export-validation", Static), 120)
        await pilot.press("v")
        await pilot.pause()
        assert "running" in widget_text(screen.query_one("#export-validation", Static), 120)
        await pilot.pause()
        job = next(j for j in app.jobs if j.kind == "validate")
        await wait_for(pilot, lambda: not job.active, timeout=240)
        await pilot.pause()
        text = widget_text(screen.query_one("#export-validation", Static), 120)
        assert job.state == "done", job.error
        v = demo_project.get_optimization(screen.opt_name).get("validation")
        assert v and f"{v['measured_speedup']:.2f}x" in text, text
        # the output change is shown with its unit and its meaning in words
        from sparsify_tui.metrics import format_change

        value, meaning = format_change(v)
        assert v["output_change_metric"] and value in text and meaning and meaning[:30] in text, text
        # the chosen method ran, and what it bought against magnitude at the same plan is shown
        assert job.settings["method"] == "sparsegpt" and v["method"] == "sparsegpt"
        assert "sparsegpt" in text and f"{v['magnitude_output_change']:.4g}" in text, text
        assert v["output_change"] <= v["magnitude_output_change"], v
