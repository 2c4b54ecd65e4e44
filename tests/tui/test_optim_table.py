"""FastDataTable (the optimizer's tables) draws exactly what Textual's DataTable draws.

Two tables side by side get the same rows and the same edits: ``set_cells``
on the fast one, ``update_cell`` on the stock one. After every step the
lines on screen (text and style of every cell, mouse meta included) must be
equal: changed rows in view, rows changed while scrolled out of view, cursor
moves, scrolling and a value too long for its column.
"""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.geometry import Region
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

from sparsify_tui.tui.widgets.optim_table import FastDataTable

COLUMNS = [("name", 12), ("value", 9), ("note", None)]  # None: auto width
N_ROWS = 60


def value(i: int, gen: int) -> Text:
    style = ("bold", "", "dim red")[(i + gen) % 3]
    return Text(f"{(i * 7 + gen) % 100:.1f}%", style=style, justify="right", no_wrap=True,
                overflow="ellipsis", end="")


class Pair(App):
    AUTO_FOCUS = None  # neither table focused: focus restyles the header and cursor of one only
    CSS = "Horizontal { height: 1fr; } DataTable { width: 1fr; height: 1fr; }"

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield FastDataTable(id="fast", cursor_type="row", zebra_stripes=True)
            yield DataTable(id="stock", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        for table in self.query(DataTable):
            for key, width in COLUMNS:
                table.add_column(key.title(), key=key, width=width)
            for i in range(N_ROWS):
                table.add_row(f"layer{i}", value(i, 0), "note" if i % 4 else "", key=f"r{i}")


def seen(ch: str, style) -> tuple:  # noqa: ANN001
    """What shows of a styled character. A space shows no colour, weight or slant: FastDataTable gives
    the cell padding the cell Text's own style (the stock table does not), which draws the same."""
    if ch != " " or style is None:
        return (ch, style)
    return (ch, style.bgcolor, style.underline, style.reverse, style.strike, style.overline, style.meta)


def lines(table: DataTable) -> list[list[tuple]]:
    out = []
    for strip in table.render_lines(Region(0, 0, table.size.width, table.size.height)):
        out.append([seen(ch, seg.style) for seg in strip for ch in seg.text])
    return out


async def check(pilot) -> None:  # noqa: ANN001
    await pilot.pause()
    fast, stock = pilot.app.query_one("#fast", DataTable), pilot.app.query_one("#stock", DataTable)
    assert fast.size == stock.size
    got, want = lines(fast), lines(stock)
    for y, (g, w) in enumerate(zip(got, want)):
        assert "".join(c[0] for c in g) == "".join(c[0] for c in w), y
        assert g == w, f"line {y} styles differ"
    assert len(got) == len(want)


def edit(app: Pair, changes: list[tuple[str, str, object]]) -> None:
    fast, stock = app.query_one("#fast", FastDataTable), app.query_one("#stock", DataTable)
    assert fast.set_cells(changes) == len(changes)
    for row_key, column_key, v in changes:
        stock.update_cell(row_key, column_key, v)


async def test_fast_table_draws_what_datatable_draws():
    app = Pair()
    async with app.run_test(size=(100, 20)) as pilot:
        await check(pilot)
        fast, stock = app.query_one("#fast", FastDataTable), app.query_one("#stock", DataTable)
        # many rows, most out of view
        edit(app, [(f"r{i}", "value", value(i, 1)) for i in range(N_ROWS)])
        await check(pilot)
        # one row in view, a style-only change and a too-long value (ellipsis)
        edit(app, [("r2", "value", value(2, 2)), ("r3", "name", "a-very-long-layer-name-indeed")])
        await check(pilot)
        # cursor moves (row cursor highlight), then rows changed while out of view, then scroll to them
        for table in (fast, stock):
            table.move_cursor(row=5)
        await check(pilot)
        edit(app, [(f"r{i}", "note", f"changed {i}") for i in range(40, 50)])
        await check(pilot)
        for table in (fast, stock):
            table.scroll_to(y=35, animate=False)
        await check(pilot)
        for table in (fast, stock):
            table.move_cursor(row=44)
        await check(pilot)
        edit(app, [("r44", "value", value(44, 3)), ("r0", "value", value(0, 3))])
        await check(pilot)
        for table in (fast, stock):
            table.scroll_to(y=0, animate=False)
        await check(pilot)
        # a plain str cell and an empty one
        edit(app, [("r1", "note", "plain"), ("r1", "value", "")])
        await check(pilot)
        with pytest.raises(CellDoesNotExist):
            fast.set_cells([("nope", "value", "x")])
        with pytest.raises(CellDoesNotExist):
            fast.set_cells([("r1", "nope", "x")])
        assert fast.get_row("r1")[2] == "plain"
