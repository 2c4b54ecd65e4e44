"""Layer summaries: every layer (or the prunable ones) with timings, sensitivities and charts.

Columns: Layer Depth, name, op type, params, FLOPs, ms (baseline or at the
chosen sparsity), share of the total time, Performance Sensitivity and Loss
Sensitivity (at the chosen sparsity, or at the evaluation sparsity 0.9 when
the Summary Type is baseline). Value Display turns the numbers into their
percent of the total or their natural log. Sort by any column (key ``s`` or a
click on the header), filter by op type and by a name pattern, see the
selected layer's attributes, or switch to summaries by op type.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Select, Static

from sparsify_tui.tui.delegate import Delegated
from sparsify_tui.tui.views.layers import (
    ALL_OPS,
    OP_COLUMNS,
    LayerView,
    column_widths,
    jobs_text,
    layer_attributes_text,
    name_width,
    shorten_names,
    sort_key,
)
from sparsify_tui.tui.widgets.charts import (
    CHART_METRICS,
    LayerBarsChart,
    SensitivityChart,
)
from sparsify_tui.tui.widgets.footer import FitFooter
from sparsify_tui.tui.widgets.optim_summary import cycle_summary, refresh_optimized

ATTRIBUTES_MIN_WIDTH = 34  # the attributes panel's text width at its narrowest (app.tcss)


class LayersScreen(Screen):
    """Layer summaries with Summary Type, Value Display, sorting, filters, attributes and charts.

    What the tables and the status line show comes from ``self.view``
    (:class:`~sparsify_tui.tui.views.layers.LayerView`); the screen keeps the
    layout, the keys and the widgets' events.
    """

    _ready = False
    PALETTE_GROUP = "Layers"
    AUTO_FOCUS = "#layer-table"
    BINDINGS = [  # in order of importance: the footer shows those that fit, F1 and ctrl+p list all
        Binding("p", "toggle_prunable", "Prunable", id="toggle_prunable",
                tooltip="Show all layers or only the prunable ones"),
        Binding("t", "cycle_summary", "Summary", id="cycle_summary",
                tooltip="Summary Type: baseline, or the values at one of the profile's sparsity levels"),
        Binding("s", "cycle_sort", "Sort", id="cycle_sort", tooltip="Sort by the next column"),
        Binding("slash", "focus_filter", "Filter", id="focus_filter",
                tooltip="Filter layers by a name pattern (regular expression)"),
        Binding("g", "toggle_groups", "By op", id="toggle_groups", tooltip="Summaries by op type"),
        Binding("b", "cycle_chart", "Chart", id="cycle_chart",
                tooltip="Bars of baseline ms, FLOPs, perf or loss sensitivity"),
        Binding("c", "toggle_charts", "Charts", id="toggle_charts", tooltip="Show or hide the charts"),
        Binding("i", "toggle_attributes", "Attributes", id="toggle_attributes",
                tooltip="Show or hide the Layer Attributes panel"),
        Binding("v", "cycle_display", "Values", id="cycle_display",
                tooltip="Value Display: measured values, percent of total, or natural log"),
        Binding("r", "reverse_sort", "Reverse", id="reverse_sort", tooltip="Reverse the sort order"),
        Binding("f", "cycle_op_filter", "Op filter", id="cycle_op_filter",
                tooltip="Show only one op type (cycles through them)"),
        Binding("k", "toggle_constants", "Constants", id="toggle_constants",
                tooltip="Show or hide the layers that only produce a constant (Constant, ConstantOfShape)"),
        Binding("o", "app.show_overview", "Overview", id="show_overview", tooltip="Project overview"),
        Binding("escape", "back", "Back", id="back", tooltip="Leave the filter, or go to the overview"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view = LayerView()
        self.chart_metric = "ms"
        self.show_charts: bool | None = None  # None = automatic (hidden when the terminal is short)
        self.show_attributes: bool | None = None  # None = automatic (hidden when narrow)
        self.selected_id: str | None = None
        self._filter_timer = None
        self._chart_timer = None
        self._widths: list[int] = []
        self._attr_lines = -1
        self._ops_in_select: list[str] = []

    data = Delegated("view")  # ModelData | None
    visible_rows = Delegated("view")

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="layers-controls"):
            yield Input(placeholder="/ name filter (regex)", id="name-filter")
            yield Select([("all op types", ALL_OPS)], value=ALL_OPS, allow_blank=False, id="op-filter")
        yield Static("", id="layers-status")
        with Vertical(id="layers-main"):
            yield DataTable(id="layer-table", cursor_type="row", zebra_stripes=True)
            yield DataTable(id="op-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="bottom"):
            with Horizontal(id="charts"):
                yield LayerBarsChart(id="bars")
                yield SensitivityChart(id="curve")
            with VerticalScroll(id="attributes-panel"):
                yield Static("Layer Attributes", classes="section-title")
                yield Static("", id="attributes")
        yield FitFooter()

    def on_mount(self) -> None:
        self.query_one("#op-table", DataTable).display = False
        self._ready = True
        self.watch(self.app, "data_version", self._on_data, init=False)
        self.watch(self.app, "jobs_version", self._on_jobs, init=False)
        self._apply_panel_classes()
        self._on_data()

    def on_screen_resume(self) -> None:
        if self.data is not self.app.model_data:
            self._on_data()

    def on_resize(self) -> None:
        width = self.size.width
        if getattr(self, "_last_width", None) not in (None, width) and not self.view.by_op:
            self.call_after_refresh(self._refit_name_column)
        self._last_width = width

    def _refit_name_column(self) -> None:
        """Give the name column the width the table has now (without refilling the rows)."""
        table = self.query_one("#layer-table", DataTable)
        keys = [k for k, _, _ in self.view.columns()]
        if "name" not in table.columns or not self._widths or len(keys) != len(self._widths):
            return
        name_w = self._name_width(list(self._widths), keys.index("name"), table)
        column = table.columns["name"]
        if column.width != name_w and (name_w < self._widths[keys.index("name")] or
                                       column.width < self._widths[keys.index("name")]):
            self.rebuild()  # the names are cut in the middle for the new width
            return
        if column.width != name_w:
            column.width = name_w
            table._clear_caches()
            table._require_update_dimensions = True
            table.refresh()

    # ------------------------------------------------------------------ data
    def _on_data(self, *_: Any) -> None:
        app = self.app
        project = app.project
        if project is not None:
            self.sub_title = f"{project.name} — layer summaries" + (
                "  (read-only)" if getattr(project, "readonly", False) else "")
        data = app.model_data
        if data is self.view.data and data is not None:
            return
        self.view.set_data(data)
        if data is not None:
            refresh_optimized(self.view, project)  # Summary Type "optimized"
            self._fill_op_select()
        self.rebuild()

    def _fill_op_select(self) -> None:
        ops = self.data.op_types if self.data else []
        if ops == self._ops_in_select:
            return
        self._ops_in_select = ops
        select = self.query_one("#op-filter", Select)
        self.view.keep_op_filter(ops)
        with self.prevent(Select.Changed):
            select.set_options([("all op types", ALL_OPS)] + [(op, op) for op in ops])
            select.value = self.view.op_filter

    # ------------------------------------------------------------------ table
    def _name_width(self, widths: list[int], name_i: int, table: DataTable) -> int:
        """Give the name column what the other columns leave (at least 12, at most its longest name)."""
        return name_width(widths, name_i, table.size.width or self.size.width or self.app.size.width,
                          2 * table.cell_padding)

    def rebuild(self) -> None:
        """Refill the table(s) from the data with the current filters and display."""
        if not self._ready:
            return
        self.view.refresh()
        if self.view.by_op:
            self._fill_op_table()
        else:
            self._fill_layer_table()
        self._update_status()
        self._update_charts()
        self._update_attributes()

    def _fill_layer_table(self) -> None:
        table = self.query_one("#layer-table", DataTable)
        table.display = True
        self.query_one("#op-table", DataTable).display = False
        view = self.view
        labels = view.column_labels()
        rows = view.visible_rows
        cursor_id = self.selected_id
        out = view.layer_cells()
        columns = view.columns()
        table.clear(columns=True)
        name_i = [k for k, _, _ in columns].index("name")
        widths = column_widths(columns, labels, out)
        self._widths = list(widths)
        name_w = self._name_width(widths, name_i, table)
        out = shorten_names(out, name_i, name_w)
        for i, (key, label, _kind) in enumerate(columns):
            table.add_column(labels.get(key, label), key=key, width=name_w if i == name_i else widths[i])
        for cells, r in zip(out, rows):
            table.add_row(*cells, key=r.id)
        col = view.layer_sort()
        if col is not None:
            table.sort(col, key=sort_key(view.sort_reverse), reverse=view.sort_reverse)
        self._restore_cursor(table, cursor_id)

    def _restore_cursor(self, table: DataTable, layer_id: str | None) -> None:
        if not table.row_count:
            self.selected_id = None
            return
        row = 0
        if layer_id is not None:
            try:
                row = table.get_row_index(layer_id)
            except Exception:  # noqa: BLE001 - filtered out
                row = 0
        table.move_cursor(row=row, animate=False)
        try:
            self.selected_id = str(table.coordinate_to_cell_key((row, 0)).row_key.value)
        except Exception:  # noqa: BLE001
            self.selected_id = None

    def _fill_op_table(self) -> None:
        table = self.query_one("#op-table", DataTable)
        table.display = True
        self.query_one("#layer-table", DataTable).display = False
        labels = self.view.column_labels()
        table.clear(columns=True)
        for key, label, _kind in OP_COLUMNS:
            table.add_column(labels.get(key, label), key=key)
        for key, cells in self.view.op_cells():
            table.add_row(*cells, key=key)
        col = self.view.op_sort()
        if col is not None:
            table.sort(col, key=sort_key(self.view.sort_reverse), reverse=self.view.sort_reverse)

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort the layer table by ``column`` (keeps the filters; only reorders rows)."""
        self.view.sort_by(column, reverse)
        reverse = self.view.sort_reverse
        table = self.query_one("#op-table" if self.view.by_op else "#layer-table", DataTable)
        if column not in table.columns:
            self.rebuild()
            return
        table.sort(column, key=sort_key(reverse), reverse=reverse)
        if not self.view.by_op:
            self._restore_cursor(table, self.selected_id)
        self._update_status()

    # ------------------------------------------------------------------ side panels
    def _on_jobs(self, *_: Any) -> None:
        if self._ready and self.is_current:
            self._update_status()

    def _update_status(self) -> None:
        text = self.view.status_text(jobs_text(self.app.active_jobs()), loading=self.app.loading)
        self.query_one("#layers-status", Static).update(text)

    def _update_attributes(self) -> None:
        panel = self.query_one("#attributes", Static)
        row = self.data.row(self.selected_id) if (self.data and self.selected_id) else None
        text = layer_attributes_text(row, self.data, self.view.sens_level) if row is not None else Text(
            "no layer selected")
        # a fixed height per line count: moving the cursor then redraws the panel without a new layout
        # counted at the narrowest panel width, so the height does not depend on when the panel was laid out
        lines = len(text.wrap(self.app.console, ATTRIBUTES_MIN_WIDTH))
        if lines > self._attr_lines:  # only grows: most cursor moves need no new layout
            self._attr_lines = lines
            panel.styles.height = lines
        panel.update(text, layout=False)

    def _update_charts(self) -> None:
        self._chart_timer = None
        if not self._ready or self.data is None or not self._visible("#charts"):
            return
        depths, values, title = self.view.chart_series(self.chart_metric)
        sel = self.data.row(self.selected_id) if self.selected_id else None
        self.query_one("#bars", LayerBarsChart).set_data(depths, values, title,
                                                         highlight=sel.depth if sel else None)
        self._update_curve()

    def _update_curve(self) -> None:
        curve = self.query_one("#curve", SensitivityChart)
        row = self.data.row(self.selected_id) if (self.data and self.selected_id) else None
        if row is None:
            curve.set_data("", [], [])
            return
        curve.set_data(row.name, self.view.perf_curve(row), row.loss_points, mark=self.view.sens_level)

    def _apply_panel_classes(self) -> None:
        self.set_class(self.show_charts is True, "charts-on")
        self.set_class(self.show_charts is False, "charts-off")
        self.set_class(self.show_attributes is True, "attrs-on")
        self.set_class(self.show_attributes is False, "attrs-off")

    # ------------------------------------------------------------------ events
    @on(DataTable.RowHighlighted, "#layer-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        layer_id = str(event.row_key.value) if event.row_key is not None else None
        if layer_id == self.selected_id:
            return
        self.selected_id = layer_id
        self._update_attributes()
        # the charts follow a moment later, so holding an arrow key stays smooth
        if self._chart_timer is not None:
            self._chart_timer.stop()
        self._chart_timer = self.set_timer(0.12, self._update_charts)

    @on(DataTable.HeaderSelected)
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by(str(event.column_key.value))

    @on(Input.Changed, "#name-filter")
    def _name_changed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        value = event.value

        def apply() -> None:
            self.view.name_pattern = value.strip()
            self.rebuild()

        self._filter_timer = self.set_timer(0.15, apply)

    @on(Input.Submitted, "#name-filter")
    def _name_submitted(self, event: Input.Submitted) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self.view.name_pattern = event.value.strip()
        self.rebuild()
        self._focus_table()

    @on(Select.Changed, "#op-filter")
    def _op_changed(self, event: Select.Changed) -> None:
        value = event.value if isinstance(event.value, str) else ALL_OPS
        if value != self.view.op_filter:
            self.view.op_filter = value
            self.rebuild()

    def _focus_table(self) -> None:
        self.query_one("#op-table" if self.view.by_op else "#layer-table", DataTable).focus()

    # ------------------------------------------------------------------ actions
    def action_toggle_prunable(self) -> None:
        self.view.prunable_only = not self.view.prunable_only
        self.rebuild()

    def action_cycle_display(self) -> None:
        self.view.cycle_display()
        self.rebuild()

    def action_cycle_summary(self) -> None:
        # with an optimization, the cycle ends with "optimized"
        if cycle_summary(self.view, self.app.project) or self.view.next_level():
            self.rebuild()
            return
        self.notify("no profile with sparsity levels yet: the Summary Type stays baseline", timeout=3)

    def action_cycle_sort(self) -> None:
        self.view.next_sort()
        self.sort_by(self.view.sort_column, reverse=self.view.sort_reverse)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.view.sort_column, reverse=not self.view.sort_reverse)

    def action_cycle_op_filter(self) -> None:
        select = self.query_one("#op-filter", Select)
        with self.prevent(Select.Changed):
            select.value = self.view.next_op_filter()
        self.rebuild()

    def action_focus_filter(self) -> None:
        self.query_one("#name-filter", Input).focus()

    def action_toggle_constants(self) -> None:
        self.view.show_constants = not self.view.show_constants
        self.rebuild()

    def action_toggle_groups(self) -> None:
        self.view.toggle_groups()
        self.rebuild()
        self._focus_table()

    def action_cycle_chart(self) -> None:
        i = CHART_METRICS.index(self.chart_metric)
        self.chart_metric = CHART_METRICS[(i + 1) % len(CHART_METRICS)]
        if not self._visible("#charts"):
            self.show_charts = True
            self._apply_panel_classes()
            self.call_after_refresh(self._update_charts)
        else:
            self._update_charts()

    def _visible(self, selector: str) -> bool:
        return bool(self.query_one("#bottom").display and self.query_one(selector).display)

    def action_toggle_charts(self) -> None:
        self.show_charts = not self._visible("#charts")
        self._apply_panel_classes()
        self.call_after_refresh(self._update_charts)

    def action_toggle_attributes(self) -> None:
        self.show_attributes = not self._visible("#attributes-panel")
        self._apply_panel_classes()

    def action_back(self) -> None:
        focused = self.focused
        if isinstance(focused, Input):
            self._focus_table()
            return
        self.app.action_show_overview()
