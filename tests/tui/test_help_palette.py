"""Help screen (F1 / ?) and command palette (ctrl+p): every binding listed and reachable."""

from __future__ import annotations

from textual.command import CommandPalette
from textual.widgets import DataTable, Static

from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.screens.help import HelpScreen
from sparsify_tui.tui.screens.home import HomeScreen
from sparsify_tui.tui.screens.layers import LayersScreen
from sparsify_tui.tui.screens.overview import OverviewScreen
from sparsify_tui.tui.screens.setup import SetupScreen
from tests.tui.conftest import settle, widget_text


def _described(bindings) -> list:
    return [b for b in bindings if not isinstance(b, tuple)]


def test_every_binding_has_a_description():
    for cls in (SparsifyApp, HomeScreen, OverviewScreen, LayersScreen, SetupScreen, HelpScreen):
        for b in _described(cls.BINDINGS):
            assert b.description, f"{cls.__name__}: {b.key} has no description"
            assert not b.key.startswith("ctrl+") or b.key in ("ctrl+p", "ctrl+q"), f"{b.key}: prefer letters/F-keys"


async def test_help_lists_the_keys_of_the_screen_and_definitions(demo_project):
    app = SparsifyApp(demo_project, initial="layers")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = widget_text(app.screen.query_one("#help-keys", Static), width=120)
        for b in _described(LayersScreen.BINDINGS):
            assert b.description in keys
        assert "Cancel job" in keys and "ctrl+p" in keys
        definitions = widget_text(app.screen.query_one("#help-definitions", Static), width=120)
        for term in ("Baseline MS", "Items per Second", "Layer Depth", "Performance Sensitivity",
                     "Loss Sensitivity", "Value Display", "Summary Type", "FLOPs"):
            assert term in definitions
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, LayersScreen)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, LayersScreen)


async def test_palette_runs_screen_actions(demo_project):
    app = SparsifyApp(demo_project, initial="layers")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        screen = app.screen
        table = screen.query_one("#layer-table", DataTable)
        assert table.row_count == 27
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"prunab")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.screen is screen and screen.view.prunable_only and table.row_count == 12
        # an App-level entry: the overview
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"project ov")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert isinstance(app.screen, OverviewScreen)


async def test_palette_lists_every_binding_of_the_screen(demo_project):
    from sparsify_tui.tui.commands import SparsifyCommands

    app = SparsifyApp(demo_project, initial="layers")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        provider = SparsifyCommands(app.screen)
        names = [hit.text for hit in [h async for h in provider.discover()]]
        for b in _described(LayersScreen.BINDINGS):
            assert f"Layers: {b.description}" in names
        for extra in ("New project", "Open the demo project", "Start a performance profile", "Help"):
            assert extra in names
