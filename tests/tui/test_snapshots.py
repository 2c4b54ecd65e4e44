"""SVG snapshot tests (pytest-textual-snapshot) on the demo project with fixed data.

Regenerate after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update``
and look at the SVGs before committing them.
"""

from __future__ import annotations

from sparsify_tui.tui.app import SparsifyApp
from tests.tui.conftest import FIXED_MACHINE


async def _settle(pilot) -> None:
    app = pilot.app
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


def test_home_without_projects(snap_compare, tui_home):
    app = SparsifyApp(machine=FIXED_MACHINE)
    assert snap_compare(app, terminal_size=(100, 30), run_before=_settle)


def test_overview(snap_compare, demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    assert snap_compare(app, terminal_size=(120, 40), run_before=_settle)


def test_layers_at_sparsity_sorted(snap_compare, demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE, initial="layers")

    async def before(pilot):
        await _settle(pilot)
        await pilot.press("down", "down", "t", "t", "t", "t", "t", "t", "b", "b")
        pilot.app.screen.sort_by("perf", reverse=True)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(150, 40), run_before=before)


def test_layers_by_op_type_80x24(snap_compare, demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE, initial="layers")

    async def before(pilot):
        await _settle(pilot)
        await pilot.press("g", "v")

    assert snap_compare(app, terminal_size=(80, 24), run_before=before)


def test_help_over_layers(snap_compare, demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE, initial="layers")

    async def before(pilot):
        await _settle(pilot)
        await pilot.press("f1")

    assert snap_compare(app, terminal_size=(120, 40), run_before=before)
