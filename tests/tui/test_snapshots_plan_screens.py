"""SVG snapshots of the plan screens (optimizer, compare, export, glossary) on the demo project.

Regenerate after an intended change with
``pytest tests/tui/test_snapshots_plan_screens.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

from sparsify_tui.tui.app import SparsifyApp
from tests.tui.conftest import FIXED_MACHINE, FIXED_TIME


async def _settle(pilot) -> None:
    app = pilot.app
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def _open(pilot, key: str, ready) -> None:  # noqa: ANN001
    await _settle(pilot)
    await pilot.press(key)
    for _ in range(400):
        if ready(pilot.app.screen):
            break
        await pilot.pause(0.05)
    await _settle(pilot)


def test_optimizer_after_edits(snap_compare, demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)

    async def before(pilot):
        await _open(pilot, "f2", lambda s: getattr(s, "ready", False))
        await pilot.press("right_square_bracket", "tab", "down", "down", "minus", "minus")
        await pilot.pause(0.8)  # the debounced save: the title says "saved"

    assert snap_compare(app, terminal_size=(120, 40), run_before=before)


def test_optimizer_training_summary_80x24(snap_compare, demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)

    async def before(pilot):
        await _open(pilot, "f2", lambda s: getattr(s, "ready", False))
        await pilot.press("3")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=before)


def test_compare_two_profiles(snap_compare, demo_project):
    from sparsify_tui.analysis import analyze
    from sparsify_tui.profiles.perf import approx_perf_profile

    graph = analyze(demo_project.model_path)
    doc = approx_perf_profile(graph, cores=1)
    doc.update(machine=dict(FIXED_MACHINE), created=FIXED_TIME, model_path="model.onnx")
    entry = demo_project.add_profile("perf", "approximated 1 core", {"approximate": True, "cores": 1},
                                     doc["engine"], "", dict(FIXED_MACHINE), doc)
    entry.created = "2026-01-02T12:00:00Z"
    demo_project.save()
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)

    async def before(pilot):
        await _open(pilot, "f3", lambda s: type(s).__name__ == "CompareScreen")

    assert snap_compare(app, terminal_size=(120, 40), run_before=before)


def test_export(snap_compare, demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)

    async def before(pilot):
        await _open(pilot, "f4", lambda s: bool(getattr(s, "recipe_text", "")))
        pilot.app.screen.query_one("#export-path").value = "recipe.yaml"
        await pilot.press("f")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=before)


def test_glossary_search(snap_compare, demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)

    async def before(pilot):
        await _settle(pilot)
        await pilot.press("f5", *"speedup")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 30), run_before=before)
