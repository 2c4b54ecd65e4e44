"""Layer summaries on real projects: rows, toggles, Value Display, Summary Type, sort, filters, charts."""

from __future__ import annotations

import math

import pytest
from textual.widgets import DataTable, Input, Static

from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.screens.layers import LayersScreen
from tests.tui.conftest import settle, widget_text


def _column(table: DataTable, key: str) -> list:
    return [table.get_cell(row_key, key) for row_key in table.rows] if False else [
        table.get_row_at(i)[[c.value for c in table.columns].index(key)] for i in range(table.row_count)
    ]


async def _open_layers(app, pilot):
    await settle(pilot, app)
    await pilot.press("l")
    await pilot.pause()
    assert isinstance(app.screen, LayersScreen)
    return app.screen


async def test_layers_rows_toggles_and_display(demo_project):
    app = SparsifyApp(demo_project)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_layers(app, pilot)
        graph = app.model_data.graph
        table = screen.query_one("#layer-table", DataTable)
        assert table.row_count == len(graph.layers) == 27
        names = [c.plain for c in _column(table, "name")]
        assert names[0] == "stem.conv" and "layer3.0.downsample" in names
        # the table has focus: keys reach the screen, not the filter input
        assert isinstance(app.focused, DataTable)

        # prunable only
        await pilot.press("p")
        assert table.row_count == len(graph.prunable_layers) == 12
        assert {c.plain for c in _column(table, "op")} == {"Conv", "Gemm"}
        await pilot.press("p")
        assert table.row_count == 27

        # baseline ms column = perf profile's layer times; share sums to 100 %
        perf_ms = {entry["id"]: entry["baseline_ms"] for entry in app.model_data.perf["layers"]}
        ms = {table.get_row_at(i)[1].plain: table.get_row_at(i)[5].value for i in range(table.row_count)}
        assert ms["stem.conv"] == pytest.approx(perf_ms["stem.conv"])
        shares = [c.value for c in _column(table, "share") if c.value is not None]
        assert sum(shares) == pytest.approx(100.0, rel=1e-6)

        # Value Display: percent of total then log
        await pilot.press("v")
        flops = {c.value for c in _column(table, "flops")}
        total_flops = sum(layer.flops for layer in graph.layers)
        conv = graph.layer("layer1.0.conv1")
        assert any(v == pytest.approx(100 * conv.flops / total_flops) for v in flops if v is not None)
        assert _column(table, "flops")[2].plain.endswith("%")
        await pilot.press("v")
        row = _column(table, "flops")[2]
        assert row.value == pytest.approx(math.log(conv.flops))
        await pilot.press("v")
        assert _column(table, "flops")[2].plain == "75.56M"


async def test_summary_type_sort_filters(demo_project):
    app = SparsifyApp(demo_project)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_layers(app, pilot)
        table = screen.query_one("#layer-table", DataTable)
        data = app.model_data
        assert data.summary_levels[:2] == [0.4, 0.6]
        # Summary Type: first level 40 %
        await pilot.press("t")
        assert screen.view.level == 0.4
        header = [str(c.label) for c in table.columns.values()]
        assert "ms@40%" in header and "Perf@40%" in header
        i = [c.value for c in table.columns].index("ms")
        row = data.row("layer1.0.conv1")
        cell = next(table.get_row_at(k)[i] for k in range(table.row_count)
                    if table.get_row_at(k)[1].plain == "layer1.0.conv1")
        assert cell.value == pytest.approx(row.ms_at(0.4))
        assert row.ms_at(0.4) < row.baseline_ms
        status = widget_text(screen.query_one("#layers-status", Static))
        assert "Summary Type 40%" in status

        # sort: by ms descending via the sort_by API (same as clicking the header)
        screen.sort_by("ms", reverse=True)
        await pilot.pause()
        col = [c.value for c in _column(table, "ms")]
        assert col == sorted(col, reverse=True)
        await pilot.press("r")
        col = [c.value for c in _column(table, "ms")]
        assert col == sorted(col)
        # a click on a column header sorts by that column (numbers: largest first)
        x = 0
        for column in table.ordered_columns:
            if column.key.value == "flops":
                break
            x += column.get_render_width(table)
        await pilot.click("#layer-table", offset=(x + 2, 0))
        await pilot.pause()
        assert screen.view.sort_column == "flops" and screen.view.sort_reverse
        col = [c.value for c in _column(table, "flops")]
        assert col == sorted(col, reverse=True)
        screen.sort_by("ms", reverse=False)
        # the 's' key moves to the next column and sorts by it
        await pilot.press("s")
        assert screen.view.sort_column == "share"

        # op-type filter cycles through the op types (alphabetical after "all")
        await pilot.press("f")
        assert screen.view.op_filter == "Add"
        assert {c.plain for c in _column(table, "op")} == {"Add"} and table.row_count == 4
        await pilot.press("f", "f", "f", "f")
        assert screen.view.op_filter == "GlobalAveragePool" and table.row_count == 1
        await pilot.press("f", "f")  # Relu, then back to all op types
        assert screen.view.op_filter == "__all__" and table.row_count == 27

        # name filter (regex) typed into the input
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"layer2")
        app.focused.value = "layer2.*conv"  # typing the rest key by key only makes the test slower
        await pilot.press("enter")
        await pilot.pause()
        names = {c.plain for c in _column(table, "name")}
        assert names == {"layer2.0.conv1", "layer2.0.conv1.relu", "layer2.0.conv2"}
        assert isinstance(app.focused, DataTable)


async def test_attributes_charts_and_op_summaries(demo_project):
    app = SparsifyApp(demo_project)
    async with app.run_test(size=(140, 45)) as pilot:
        screen = await _open_layers(app, pilot)
        table = screen.query_one("#layer-table", DataTable)
        await pilot.press("down", "down")
        await pilot.pause(0.3)  # the charts follow the cursor after a short delay
        assert screen.selected_id == "layer1.0.conv1"
        attrs = widget_text(screen.query_one("#attributes", Static))
        assert "layer1.0.conv1" in attrs and "kernel_shape" in attrs and "weight" in attrs
        assert "Loss sens @90%" in attrs
        bars = screen.query_one("#bars")
        curve = screen.query_one("#curve")
        await pilot.pause()
        assert bars.bars == 27  # one bar per layer with a time
        assert curve.curves == 2  # perf and loss curves of the selected layer
        # chart metric cycles: FLOPs bars skip nothing (all known), loss only prunable layers
        await pilot.press("b", "b", "b")
        await pilot.pause()
        assert screen.chart_metric == "loss"
        assert bars.bars == 12
        # summaries by op type
        await pilot.press("g")
        ops = screen.query_one("#op-table", DataTable)
        assert ops.display and not table.display
        rows = {ops.get_row_at(i)[0].plain: ops.get_row_at(i) for i in range(ops.row_count)}
        hist = app.model_data.graph.op_histogram
        assert set(rows) == set(hist)
        assert rows["Conv"][1].value == hist["Conv"] == 11
        await pilot.press("g")
        assert table.display


async def test_small_terminal_hides_panels_until_asked(demo_project):
    app = SparsifyApp(demo_project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_layers(app, pilot)
        assert not screen._visible("#charts")
        assert not screen._visible("#attributes-panel")
        assert screen.query_one("#layer-table").size.height >= 12
        await pilot.press("i")
        await pilot.pause()
        assert screen._visible("#attributes-panel") and not screen._visible("#charts")
        assert screen.query_one("#attributes-panel").size.width > 40
        await pilot.press("c")
        await pilot.pause()
        assert screen._visible("#charts")
        assert screen.query_one("#bars").size.height >= 8
        await pilot.press("c", "i")
        await pilot.pause()
        assert not screen.query_one("#bottom").display


@pytest.mark.corpus
async def test_layers_on_corpus_model(mnv3_project):
    app = SparsifyApp(mnv3_project, initial="layers")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, LayersScreen)
        graph = app.model_data.graph
        table = screen.query_one("#layer-table", DataTable)
        constants = [lay for lay in graph.layers if lay.op_type in ("Constant", "ConstantOfShape") or lay.constant]
        assert table.row_count == len(graph.layers) - len(constants)  # hidden like `info` does (#19)
        await pilot.press("k")
        await pilot.pause()
        assert table.row_count == len(graph.layers)
        await pilot.press("p")
        assert table.row_count == len(graph.prunable_layers) > 0
        # every prunable layer has a loss sensitivity at 90 % from the approximated loss profile
        loss = [c.value for c in _column(table, "loss")]
        assert all(v is not None and 0 <= v <= 1 for v in loss)
