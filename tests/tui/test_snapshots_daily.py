"""SVG snapshots at 80x24 and 100x30 of every screen issue #19 changed (demo project, fixed data).

Regenerate after an intended change with
``pytest tests/tui/test_snapshots_daily.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

import pytest

from sparsify_tui.tui.app import SparsifyApp
from tests.tui.conftest import FIXED_MACHINE, FIXED_TIME

SIZES = [(80, 24), (100, 30)]


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


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_home(snap_compare, tui_home, size):
    assert snap_compare(SparsifyApp(machine=FIXED_MACHINE), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_overview(snap_compare, demo_project, size):
    assert snap_compare(SparsifyApp(demo_project, machine=FIXED_MACHINE), terminal_size=size, run_before=_settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_layers(snap_compare, demo_project, size):
    async def before(pilot):
        await _open(pilot, "l", lambda s: type(s).__name__ == "LayersScreen")

    assert snap_compare(SparsifyApp(demo_project, machine=FIXED_MACHINE), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_perf_dialog(snap_compare, demo_project, size):
    async def before(pilot):
        await _open(pilot, "p", lambda s: type(s).__name__ == "ProfileDialog")

    assert snap_compare(SparsifyApp(demo_project, machine=FIXED_MACHINE), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_optimizer(snap_compare, demo_project, size):
    async def before(pilot):
        await _open(pilot, "f2", lambda s: getattr(s, "ready", False))
        await pilot.pause(0.8)

    assert snap_compare(SparsifyApp(demo_project, machine=FIXED_MACHINE), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compare(snap_compare, demo_project, size):
    from sparsify_tui.analysis import analyze
    from sparsify_tui.profiles.perf import approx_perf_profile

    graph = analyze(demo_project.model_path)
    doc = approx_perf_profile(graph, cores=1)
    doc.update(machine=dict(FIXED_MACHINE), created=FIXED_TIME, model_path="model.onnx")
    entry = demo_project.add_profile("perf", "approximated b1 c1", {"approximate": True, "cores": 1},
                                     doc["engine"], "", dict(FIXED_MACHINE), doc)
    entry.created = "2026-01-02T12:00:00Z"
    demo_project.save()

    async def before(pilot):
        await _open(pilot, "f3", lambda s: type(s).__name__ == "CompareScreen")

    assert snap_compare(SparsifyApp(demo_project, machine=FIXED_MACHINE), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_export(snap_compare, demo_project, size):
    async def before(pilot):
        await _open(pilot, "f4", lambda s: bool(getattr(s, "recipe_text", "")))
        pilot.app.screen.query_one("#export-path").value = "recipe.yaml"
        await pilot.pause(0.3)

    assert snap_compare(SparsifyApp(demo_project, machine=FIXED_MACHINE), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_new_project(snap_compare, tui_home, size):
    async def before(pilot):
        await _open(pilot, "n", lambda s: type(s).__name__ == "SetupScreen")

    assert snap_compare(SparsifyApp(machine=FIXED_MACHINE), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_quit_while_a_profile_runs(snap_compare, demo_project, size):
    from sparsify_tui.tui.screens.confirm import ConfirmQuit

    async def before(pilot):
        await _settle(pilot)
        pilot.app.push_screen(ConfirmQuit(["perf 'onnxruntime b1 c2'"]))
        await pilot.pause()

    assert snap_compare(SparsifyApp(demo_project, machine=FIXED_MACHINE), terminal_size=size, run_before=before)
