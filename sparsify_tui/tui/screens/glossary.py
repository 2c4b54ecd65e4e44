"""Glossary: every term the app shows, searchable, and help for the focused area.

``GlossaryScreen(area="opt-layers")`` opens with the terms explaining that
area at the top (F1 / ``?`` on the optimizer, compare and export screens); with no area it lists the
whole glossary. Typing in the search field filters terms and texts
(``sparsify_tui.glossary.search``).
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from sparsify_tui import glossary
from sparsify_tui.tui.screens.help import term_table

AREA_TITLES = {
    "opt-settings": "Optimizer: global settings",
    "opt-layers": "Optimizer: per-layer plan",
    "opt-estimates": "Optimizer: estimates",
    "opt-lr": "Optimizer: learning-rate modifiers",
    "opt-lr-chart": "Optimizer: learning-rate curve",
    "opt-summary": "Optimizer: training summary",
    "opt-edit": "Optimizer: typed value",
    "compare-table": "Profile comparison",
    "compare-scaling": "Profile comparison: scaling of the sweep",
    "export-recipe": "Export: recipe",
    "export-code": "Export: code sample",
    "export-validation": "Export: validation",
    "layer-table": "Layer summaries",
}
AREA_ALIASES = {"opt-lr-chart": "opt-lr"}


def entries_table(entries: list[glossary.Entry]) -> Table:
    width = min(28, max((len(e.term) for e in entries), default=10))
    return term_table([(e.term, e.text) for e in entries], term_style="bold cyan", padding=1, width=width,
                      expand=True)


class GlossaryScreen(ModalScreen[None]):
    """The searchable glossary (and the help of the area that had the focus)."""

    PALETTE_GROUP = "Glossary"
    BINDINGS = [
        Binding("escape", "close", "Close", id="glossary_close"),
        Binding("f1", "close", "Close", show=False),
        Binding("down", "scroll_results(1)", "Scroll", show=False),
        Binding("up", "scroll_results(-1)", "Scroll", show=False),
    ]

    def __init__(self, area: str | None = None, query: str = "") -> None:
        super().__init__()
        self.area = AREA_ALIASES.get(area or "", area or "")
        self.initial_query = query
        self.shown: list[glossary.Entry] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="glossary-box"):
            yield Static("[b]Glossary[/b]  type to search, escape closes", id="glossary-title")
            yield Input(placeholder="search terms (e.g. speedup, epoch, sensitivity)", id="glossary-search")
            with VerticalScroll(id="glossary-results"):
                yield Static("", id="glossary-area")
                yield Static("", id="glossary-list")

    def on_mount(self) -> None:
        inp = self.query_one("#glossary-search", Input)
        inp.value = self.initial_query
        inp.focus()
        self._show(self.initial_query)

    @on(Input.Changed, "#glossary-search")
    def _changed(self, event: Input.Changed) -> None:
        self._show(event.value)

    def _show(self, query: str) -> None:
        area_box = self.query_one("#glossary-area", Static)
        area = glossary.area_entries(self.area) if not query.strip() else []
        if area:
            t = Table.grid()
            t.add_row(Text(f"Help for {AREA_TITLES.get(self.area, self.area)}", style="bold underline"))
            t.add_row(entries_table(area))
            t.add_row(Text("All terms", style="bold underline"))
            area_box.update(t)
            area_box.display = True
        else:
            area_box.display = False
        self.shown = glossary.search(query)
        lst = self.query_one("#glossary-list", Static)
        if self.shown:
            lst.update(entries_table(self.shown))
        else:
            lst.update(Text(f"no term matches {query!r}", style="italic"))

    def action_scroll_results(self, n: int) -> None:
        self.query_one("#glossary-results", VerticalScroll).scroll_relative(y=n * 3, animate=False)

    def action_close(self) -> None:
        self.dismiss(None)
