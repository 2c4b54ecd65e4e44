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

import math
import re
from typing import Any, Callable

from rich.measure import Measurement
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Select, Static

from sparsify_tui.tui.data import (
    QUALITY_MARK,
    VALUE_DISPLAY_LABELS,
    ellipsize_middle,
    VALUE_DISPLAYS,
    LayerRow,
    ModelData,
    fmt_count,
    fmt_level,
    fmt_ms,
    fmt_value,
    op_summaries,
    quality_warnings,
    transform,
)
from sparsify_tui.tui.widgets.charts import (
    CHART_METRICS,
    LayerBarsChart,
    SensitivityChart,
)
from sparsify_tui.tui.widgets.footer import FitFooter
from sparsify_tui.tui.widgets.optim_summary import (
    column_labels,
    current_values,
    cycle_summary,
    refresh_optimized,
    summary_label,
)

ALL_OPS = "__all__"

# (key, label, kind): kind selects formatting and the Value Display
COLUMNS: list[tuple[str, str, str]] = [
    ("depth", "Depth", "int"),
    ("name", "Name", "text"),
    ("op", "Op type", "text"),
    ("params", "Params", "count"),
    ("flops", "FLOPs", "count"),
    ("ms", "Base ms", "ms"),
    ("share", "Share", "share"),
    ("perf", "Perf sens", "sens"),
    ("loss", "Loss sens", "sens"),
]
OP_COLUMNS: list[tuple[str, str, str]] = [
    ("op", "Op type", "text"),
    ("count", "Layers", "int"),
    ("prunable", "Prunable", "int"),
    ("params", "Params", "count"),
    ("flops", "FLOPs", "count"),
    ("ms", "Baseline MS", "ms"),
    ("share", "Share", "share"),
    ("perf", "Perf sens", "sens"),
    ("loss", "Loss sens", "sens"),
]
QUANT_COLUMN = ("quant", "INT8 sens", "sens")
ATTRIBUTES_MIN_WIDTH = 34  # the attributes panel's text width at its narrowest (app.tcss)
NAME_WIDTH = 34
OP_WIDTH = 12


class Cell(Text):
    """A table cell that remembers the raw value it was formatted from (for sorting).

    It measures itself in O(1) (one line, its length), which keeps filling a
    table of thousands of layers fast: the DataTable measures every cell.
    """

    def __init__(self, text: str, value: Any, *, justify: str = "left", style: str = "") -> None:
        super().__init__(text, justify=justify, style=style, no_wrap=True, overflow="ellipsis", end="")
        self.value = value
        self._measure = Measurement(len(text), len(text))

    def __rich_measure__(self, console: Any, options: Any) -> Measurement:
        return self._measure


def _sort_key(reverse: bool) -> Callable[[Any], Any]:
    missing = -math.inf if reverse else math.inf

    def key(cell: Any) -> Any:
        v = getattr(cell, "value", cell)
        if v is None:
            return (1 if not reverse else 0, missing, "")
        if isinstance(v, str):
            return (0 if not reverse else 1, 0.0, v.lower())
        return (0 if not reverse else 1, float(v), "")

    return key


CONSTANT_OPS = frozenset({"Constant", "ConstantOfShape"})


def is_constant_row(r: LayerRow) -> bool:
    """A layer that only produces a constant (a weight), hidden by default like ``info`` does."""
    return not r.engine_internal and (r.op_type in CONSTANT_OPS or bool(getattr(r.layer, "constant", False)))


def layer_count_text(visible: list[LayerRow], rows: list[LayerRow], scope: str, op_filter: str,
                     show_constants: bool) -> str:
    """``12/27 layers (all) + 1 engine row · 308 constants hidden (k)``: model layers counted as the overview does."""
    shown = sum(1 for r in visible if not r.engine_internal)
    total = sum(1 for r in rows if not r.engine_internal)
    text = f"{shown}/{total} layers ({scope}" + (f", {op_filter}" if op_filter != ALL_OPS else "") + ")"
    engine = sum(1 for r in visible if r.engine_internal)
    if engine:
        text += f" + {engine} engine row{'s' if engine > 1 else ''} (time the engine spends outside the layers)"
    hidden = 0 if show_constants else sum(1 for r in rows if is_constant_row(r))
    if hidden:
        text += f" · {hidden} constants hidden (k shows)"
    return text


class LayersScreen(Screen):
    """Layer summaries with Summary Type, Value Display, sorting, filters, attributes and charts."""

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
        self.prunable_only = False
        self.display_mode = "measured"
        self.level: float | None = None  # None = baseline
        self.optimized = None  # Summary Type "optimized": tui.widgets.optim_summary.OptimizedSummary
        self.sort_column = "depth"
        self.sort_reverse = False
        self.op_filter = ALL_OPS
        self.name_pattern = ""
        self.pattern_error = ""  # why the name pattern is not a valid regular expression
        self.show_constants = False  # Constant/ConstantOfShape rows (a converted model has hundreds)
        self.by_op = False
        self.chart_metric = "ms"
        self.show_charts: bool | None = None  # None = automatic (hidden when the terminal is short)
        self.show_attributes: bool | None = None  # None = automatic (hidden when narrow)
        self.data: ModelData | None = None
        self.visible_rows: list[LayerRow] = []
        self.selected_id: str | None = None
        self._filter_timer = None
        self._chart_timer = None
        self._widths: list[int] = []
        self._attr_lines = -1
        self._ops_in_select: list[str] = []

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
        if getattr(self, "_last_width", None) not in (None, width) and not self.by_op:
            self.call_after_refresh(self._refit_name_column)
        self._last_width = width

    def _refit_name_column(self) -> None:
        """Give the name column the width the table has now (without refilling the rows)."""
        table = self.query_one("#layer-table", DataTable)
        keys = [k for k, _, _ in self.columns()]
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
        if data is self.data and data is not None:
            return
        self.data = data
        if data is not None:
            levels = data.summary_levels
            if self.level is not None and self.level not in levels:
                self.level = None
            refresh_optimized(self)  # Summary Type "optimized"
            self._fill_op_select()
        self.rebuild()

    def _fill_op_select(self) -> None:
        ops = self.data.op_types if self.data else []
        if ops == self._ops_in_select:
            return
        self._ops_in_select = ops
        select = self.query_one("#op-filter", Select)
        if self.op_filter not in ops:
            self.op_filter = ALL_OPS
        with self.prevent(Select.Changed):
            select.set_options([("all op types", ALL_OPS)] + [(op, op) for op in ops])
            select.value = self.op_filter

    def columns(self) -> list[tuple[str, str, str]]:
        """The layer table's columns: INT8 sensitivity only when a quant profile exists."""
        if self.data is not None and self.data.quant:
            return COLUMNS + [QUANT_COLUMN]
        return COLUMNS

    @property
    def sens_level(self) -> float:
        if self.level is not None:
            return self.level
        return self.data.eval_sparsity if self.data else 0.9

    def filtered_rows(self) -> list[LayerRow]:
        if self.data is None:
            return []
        rows = self.data.rows
        if not self.show_constants:
            rows = [r for r in rows if not is_constant_row(r)]
        if self.prunable_only:
            rows = [r for r in rows if r.prunable]
        if self.op_filter != ALL_OPS:
            rows = [r for r in rows if r.op_type == self.op_filter]
        self.pattern_error = ""
        if self.name_pattern:
            try:
                rx = re.compile(self.name_pattern, re.IGNORECASE)
                rows = [r for r in rows if rx.search(r.name) or rx.search(r.id)]
            except re.error as exc:
                self.pattern_error = str(exc)
                p = self.name_pattern.lower()
                rows = [r for r in rows if p in r.name.lower() or p in r.id.lower()]
        return rows

    # ------------------------------------------------------------------ table
    def _column_labels(self) -> dict[str, str]:
        lvl = fmt_level(self.sens_level)
        ms_label = "Base ms" if self.level is None else f"ms@{fmt_level(self.level)}"
        return column_labels(self, {"ms": ms_label, "perf": f"Perf@{lvl}", "loss": f"Loss@{lvl}"})

    def _name_width(self, widths: list[int], name_i: int, table: DataTable) -> int:
        """Give the name column what the other columns leave (at least 12, at most its longest name)."""
        avail = table.size.width or self.size.width or self.app.size.width
        pad = 2 * table.cell_padding
        others = sum(w + pad for i, w in enumerate(widths) if i != name_i)
        room = avail - others - pad - 2  # 2: the vertical scrollbar
        return max(12, min(widths[name_i], NAME_WIDTH, room))

    def rebuild(self) -> None:
        """Refill the table(s) from the data with the current filters and display."""
        if not self._ready:
            return
        self.visible_rows = self.filtered_rows()
        if self.by_op:
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
        labels = self._column_labels()
        data = self.data
        rows = self.visible_rows
        level, sens_level, disp = self.level, self.sens_level, self.display_mode
        all_rows = data.rows if data else []
        # totals over all layers (not only the visible ones) for "percent of total"
        tot = {
            "params": sum(r.params or 0 for r in all_rows),
            "flops": sum(r.flops or 0 for r in all_rows),
            "ms": sum(v for v in (r.ms_at(level) for r in all_rows) if v is not None),
            "perf": sum(v for v in (r.perf_sensitivity(sens_level) for r in all_rows) if v is not None and v > 0),
            "loss": sum(v for v in (r.loss_sensitivity(sens_level) for r in all_rows) if v is not None and v > 0),
        }
        cursor_id = self.selected_id
        out = []
        for r in rows:
            ms = r.ms_at(level)
            ms, params_v, flops_v = current_values(self, r, ms)  # Summary Type "optimized"
            perf = r.perf_sensitivity(sens_level)
            loss = r.loss_sensitivity(sens_level)
            vals = {
                "params": transform(params_v, disp, tot["params"]) if params_v is not None else None,
                "flops": transform(flops_v, disp, tot["flops"]),
                "ms": transform(ms, disp, tot["ms"]),
                "perf": transform(perf, disp, tot["perf"]),
                "loss": transform(loss, disp, tot["loss"]),
            }
            share = 100.0 * ms / tot["ms"] if ms is not None and tot["ms"] else None
            name_style = "italic dim" if r.engine_internal else ("bold" if r.prunable else "")
            out.append((
                Cell("-" if r.depth is None else str(r.depth), r.depth, justify="right"),
                Cell(r.name, r.name, style=name_style),
                Cell(r.op_type, r.op_type),
                Cell(fmt_value(vals["params"], disp, "count"), vals["params"], justify="right"),
                Cell(fmt_value(vals["flops"], disp, "count"), vals["flops"], justify="right"),
                Cell(fmt_value(vals["ms"], disp, "ms"), vals["ms"], justify="right"),
                Cell("-" if share is None else f"{share:.1f}%", share, justify="right"),
                Cell(fmt_value(vals["perf"], disp, "sens"), vals["perf"], justify="right"),
                Cell(fmt_value(vals["loss"], disp, "sens"), vals["loss"], justify="right"),
            ))
        columns = self.columns()
        if len(columns) > len(COLUMNS):  # the INT8 sensitivity of a quant profile
            tot_q = sum(r.quant_sens for r in all_rows if r.quant_sens is not None and r.quant_sens > 0)
            for i, r in enumerate(rows):
                q = transform(r.quant_sens, disp, tot_q)
                out[i] = out[i] + (Cell(fmt_value(q, disp, "sens"), q, justify="right"),)
        table.clear(columns=True)
        name_i = [k for k, _, _ in columns].index("name")
        widths = [len(labels.get(k, label)) for k, label, _ in columns]
        for cells in out:
            for i, c in enumerate(cells):
                n = len(c)
                if n > widths[i]:
                    widths[i] = n
        op_i = [k for k, _, _ in columns].index("op")
        widths[op_i] = min(widths[op_i], OP_WIDTH)
        self._widths = list(widths)
        name_w = self._name_width(widths, name_i, table)
        if name_w < widths[name_i]:  # cut long names in the middle: layer3.0.co… would hide conv1 from conv2
            for j, r in enumerate(rows):
                c = out[j][name_i]
                if len(r.name) > name_w:
                    short = Cell(ellipsize_middle(r.name, name_w), r.name, style=c.style)
                    out[j] = out[j][:name_i] + (short,) + out[j][name_i + 1:]
        for i, (key, label, _kind) in enumerate(columns):
            table.add_column(labels.get(key, label), key=key, width=name_w if i == name_i else widths[i])
        for cells, r in zip(out, rows):
            table.add_row(*cells, key=r.id)
        if self.sort_column != "depth" or self.sort_reverse:
            table.sort(self.sort_column, key=_sort_key(self.sort_reverse), reverse=self.sort_reverse)
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
        labels = self._column_labels()
        sums = op_summaries(self.visible_rows, self.level, self.sens_level)
        disp = self.display_mode
        tot = {
            "params": sum(s.params for s in sums),
            "flops": sum(s.flops or 0 for s in sums),
            "ms": sum(s.ms or 0 for s in sums),
            "perf": sum(max(s.perf_sens or 0, 0) for s in sums),
            "loss": sum(max(s.loss_sens or 0, 0) for s in sums),
        }
        table.clear(columns=True)
        for key, label, _kind in OP_COLUMNS:
            table.add_column(labels.get(key, label), key=key)
        for s in sums:
            vals = {
                "params": transform(s.params, disp, tot["params"]),
                "flops": transform(s.flops, disp, tot["flops"]),
                "ms": transform(s.ms, disp, tot["ms"]),
                "perf": transform(s.perf_sens, disp, tot["perf"]),
                "loss": transform(s.loss_sens, disp, tot["loss"]),
            }
            share = 100.0 * s.ms / tot["ms"] if s.ms is not None and tot["ms"] else None
            table.add_row(
                Cell(s.op_type, s.op_type, style="bold"),
                Cell(str(s.count), s.count, justify="right"),
                Cell(str(s.prunable), s.prunable, justify="right"),
                Cell(fmt_value(vals["params"], disp, "count"), vals["params"], justify="right"),
                Cell(fmt_value(vals["flops"], disp, "count"), vals["flops"], justify="right"),
                Cell(fmt_value(vals["ms"], disp, "ms"), vals["ms"], justify="right"),
                Cell("-" if share is None else f"{share:.1f}%", share, justify="right"),
                Cell(fmt_value(vals["perf"], disp, "sens"), vals["perf"], justify="right"),
                Cell(fmt_value(vals["loss"], disp, "sens"), vals["loss"], justify="right"),
                key=f"op:{s.op_type}",
            )
        col = self.sort_column if self.sort_column in {k for k, _, _ in OP_COLUMNS} else None
        if col is not None and (col != "op" or self.sort_reverse):
            table.sort(col, key=_sort_key(self.sort_reverse), reverse=self.sort_reverse)

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort the layer table by ``column`` (keeps the filters; only reorders rows)."""
        if reverse is None:
            reverse = (not self.sort_reverse) if column == self.sort_column else column not in ("depth", "name", "op")
        self.sort_column = column
        self.sort_reverse = reverse
        table_id = "#op-table" if self.by_op else "#layer-table"
        table = self.query_one(table_id, DataTable)
        if column not in table.columns:
            self.rebuild()
            return
        table.sort(column, key=_sort_key(reverse), reverse=reverse)
        if not self.by_op:
            self._restore_cursor(table, self.selected_id)
        self._update_status()

    # ------------------------------------------------------------------ side panels
    def _on_jobs(self, *_: Any) -> None:
        if self._ready and self.is_current:
            self._update_status()

    def _jobs_text(self) -> str:
        """Running profiles of this project, for the status line: "perf 40% (level 0.6)"."""
        active = self.app.active_jobs()
        if not active:
            return ""
        job = active[0]
        text = f"{job.kind} profile {'queued' if job.state == 'queued' else f'{100 * job.fraction:.0f}%'}"
        if job.label:
            text += f" ({job.label if len(job.label) <= 28 else job.label[:27] + '…'})"
        if len(active) > 1:
            text += f" +{len(active) - 1}"
        return text + ", x cancels"

    def _update_status(self) -> None:
        data = self.data
        status = self.query_one("#layers-status", Static)
        running = self._jobs_text()
        if data is None:
            msg = "analysing the model…" if self.app.loading else "no model data"
            status.update(msg + (f"  ·  {running}" if running else ""))
            return
        label = dict((k, lbl) for k, lbl, _ in self.columns() + OP_COLUMNS).get(self.sort_column, self.sort_column)
        arrow = "↓" if self.sort_reverse else "↑"
        perf = data.perf
        perf_txt = "no perf profile yet"
        if running:
            perf_txt = running
        elif perf:
            perf_txt = f"perf: {perf.get('engine', '?')}" + (" (approximated)" if perf.get("approximated") else "")
            warns = quality_warnings(perf)
            if warns:  # the times below come from a doubtful profile: say so where they are shown
                perf_txt += f" {QUALITY_MARK} {warns[0]}" + (f" (+{len(warns) - 1} more)" if len(warns) > 1 else "")
        loss_txt = f"loss: {data.loss.get('method', '?')}" if data.loss else "no loss profile yet"
        scope = "prunable" if self.prunable_only else "all"
        text = Text(overflow="ellipsis")  # up to two lines: the profiles used stay in view
        items = [
            ("Summary Type ", summary_label(self, fmt_level(self.level))),
            ("Value Display ", VALUE_DISPLAY_LABELS[self.display_mode]),
            ("sort ", f"{label} {arrow}"),
            ("", layer_count_text(self.visible_rows, data.rows, scope, self.op_filter, self.show_constants)),
            ("", perf_txt),
            ("", loss_txt),
        ]
        if self.pattern_error:  # said first: otherwise "0/27 layers" looks like no layer matched
            items.insert(0, ("", f"not a regular expression ({self.pattern_error}): matching the text as typed"))
        if running:  # a running profile matters most: first, so a narrow terminal shows it
            items.remove(("", perf_txt))
            items.insert(0, ("⟳ ", perf_txt))
        for i, (k, v) in enumerate(items):
            if i:
                text.append("  ·  ", style="dim")
            if k:
                text.append(k, style="bold")
            text.append(v, style="bold red" if self.pattern_error and i == 0 else "")
        status.update(text)

    def _update_attributes(self) -> None:
        panel = self.query_one("#attributes", Static)
        row = self.data.row(self.selected_id) if (self.data and self.selected_id) else None
        text = layer_attributes_text(row, self.data, self.sens_level) if row is not None else Text("no layer selected")
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
        bars = self.query_one("#bars", LayerBarsChart)
        rows = [r for r in self.visible_rows if r.depth is not None]
        sl = self.sens_level
        metric = self.chart_metric
        if metric == "ms":
            values = [r.ms_at(self.level) for r in rows]
            title = f"{'Baseline MS' if self.level is None else 'MS @ ' + fmt_level(self.level)} per layer"
        elif metric == "flops":
            values = [r.flops for r in rows]
            title = "FLOPs per layer"
        elif metric == "perf":
            values = [r.perf_sensitivity(sl) for r in rows]
            title = f"Performance Sensitivity @ {fmt_level(sl)} (ms saved)"
        else:
            values = [r.loss_sensitivity(sl) for r in rows]
            title = f"Loss Sensitivity @ {fmt_level(sl)}"
        sel = self.data.row(self.selected_id) if self.selected_id else None
        bars.set_data([r.depth for r in rows], values, title, highlight=sel.depth if sel else None)
        self._update_curve()

    def _update_curve(self) -> None:
        curve = self.query_one("#curve", SensitivityChart)
        row = self.data.row(self.selected_id) if (self.data and self.selected_id) else None
        if row is None:
            curve.set_data("", [], [])
            return
        perf_pts = [(s, row.baseline_ms - t) for s, t in row.ms_points] if row.baseline_ms is not None else []
        curve.set_data(row.name, perf_pts, row.loss_points, mark=self.sens_level)

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
            self.name_pattern = value.strip()
            self.rebuild()

        self._filter_timer = self.set_timer(0.15, apply)

    @on(Input.Submitted, "#name-filter")
    def _name_submitted(self, event: Input.Submitted) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self.name_pattern = event.value.strip()
        self.rebuild()
        self._focus_table()

    @on(Select.Changed, "#op-filter")
    def _op_changed(self, event: Select.Changed) -> None:
        value = event.value if isinstance(event.value, str) else ALL_OPS
        if value != self.op_filter:
            self.op_filter = value
            self.rebuild()

    def _focus_table(self) -> None:
        self.query_one("#op-table" if self.by_op else "#layer-table", DataTable).focus()

    # ------------------------------------------------------------------ actions
    def action_toggle_prunable(self) -> None:
        self.prunable_only = not self.prunable_only
        self.rebuild()

    def action_cycle_display(self) -> None:
        i = VALUE_DISPLAYS.index(self.display_mode)
        self.display_mode = VALUE_DISPLAYS[(i + 1) % len(VALUE_DISPLAYS)]
        self.rebuild()

    def action_cycle_summary(self) -> None:
        if cycle_summary(self):  # with an optimization, the cycle ends with "optimized"
            self.rebuild()
            return
        levels = self.data.summary_levels if self.data else []
        if not levels:
            self.notify("no profile with sparsity levels yet: the Summary Type stays baseline", timeout=3)
            return
        choices: list[float | None] = [None] + levels
        i = choices.index(self.level) if self.level in choices else 0
        self.level = choices[(i + 1) % len(choices)]
        self.rebuild()

    def action_cycle_sort(self) -> None:
        cols = [k for k, _, _ in (OP_COLUMNS if self.by_op else self.columns())]
        i = cols.index(self.sort_column) if self.sort_column in cols else -1
        col = cols[(i + 1) % len(cols)]
        self.sort_by(col, reverse=col not in ("depth", "name", "op"))

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    def action_cycle_op_filter(self) -> None:
        ops = [ALL_OPS] + (self.data.op_types if self.data else [])
        i = ops.index(self.op_filter) if self.op_filter in ops else 0
        self.op_filter = ops[(i + 1) % len(ops)]
        select = self.query_one("#op-filter", Select)
        with self.prevent(Select.Changed):
            select.value = self.op_filter
        self.rebuild()

    def action_focus_filter(self) -> None:
        self.query_one("#name-filter", Input).focus()

    def action_toggle_constants(self) -> None:
        self.show_constants = not self.show_constants
        self.rebuild()

    def action_toggle_groups(self) -> None:
        self.by_op = not self.by_op
        if self.by_op and self.sort_column not in {k for k, _, _ in OP_COLUMNS}:
            self.sort_column, self.sort_reverse = "ms", True
        elif not self.by_op and self.sort_column not in {k for k, _, _ in self.columns()}:
            self.sort_column, self.sort_reverse = "depth", False
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


def layer_attributes_text(row: LayerRow, data: ModelData | None, sens_level: float) -> Text:
    """The Layer Attributes panel: what the analysis and the profiles know about one layer."""
    t = Text()

    def line(label: str, value: Any, style: str = "") -> None:
        t.append(f"{label}: ", style="bold")
        t.append(f"{value}\n", style=style)

    line("name", row.name)
    if row.id != row.name:
        line("id", row.id)
    line("op type", row.op_type + ("  (engine-internal)" if row.engine_internal else ""))
    line("Layer Depth", "-" if row.depth is None else row.depth)
    layer = row.layer
    if layer is not None:
        if layer.graph_path:
            line("subgraph", layer.graph_path)
        if layer.input_shapes:
            line("input shapes", ", ".join(str(s) for s in layer.input_shapes))
        if layer.output_shapes:
            line("output shapes", ", ".join(str(s) for s in layer.output_shapes))
        if layer.weight_shape:
            line("weight", f"{layer.weight_name} {layer.weight_shape}")
        if layer.bias_shape:
            line("bias", f"{layer.bias_shape}")
        line("params", fmt_count(layer.params))
        if layer.prunable:
            line("prunable params", fmt_count(layer.prunable_params))
            if layer.sparsity is not None:
                line("sparsity", f"{100 * layer.sparsity:.1f}%")
        line("FLOPs", "unknown" if layer.flops is None else fmt_count(layer.flops))
        for k, v in (layer.attributes or {}).items():
            text = str(v)
            line(k, text if len(text) < 60 else text[:57] + "…")
    line("prunable", "yes" if row.prunable else "no")
    if row.baseline_ms is not None:
        total = data.total_ms(None) if data else None
        share = f" ({100 * row.baseline_ms / total:.1f}% of total)" if total else ""
        line("Baseline MS", fmt_ms(row.baseline_ms) + share)
        ps = row.perf_sensitivity(sens_level)
        if ps is not None:
            line(f"Perf sens @{fmt_level(sens_level)}", f"{fmt_ms(ps)} ms saved")
    if len(row.group) > 1:
        line("measured with", ", ".join(g for g in row.group if g != row.id)[:200])
    if row.kernel:
        line("kernel", row.kernel)
    ls = row.loss_sensitivity(sens_level)
    if ls is not None:
        line(f"Loss sens @{fmt_level(sens_level)}", f"{ls:.4g}")
    if row.quant_sens is not None:
        line("INT8 sens", f"{row.quant_sens:.4g}")
    t.rstrip()
    return t
