"""The layer summaries' view-model: :class:`LayerView` (no Textual).

``LayersScreen`` owns one and asks it which rows pass the filters (constants,
prunable, op type, a name pattern that falls back to plain text when it is not
a regular expression), how a new sort column is ordered, the cells of both
tables, the chart's series and the status line's text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.measure import Measurement
from rich.text import Text

from sparsify_tui.tui.data import (
    QUALITY_MARK,
    VALUE_DISPLAY_LABELS,
    VALUE_DISPLAYS,
    LayerRow,
    ModelData,
    ellipsize_middle,
    fmt_count,
    fmt_level,
    fmt_ms,
    fmt_value,
    op_summaries,
    quality_warnings,
    transform,
)
from sparsify_tui.tui.widgets.optim_summary import column_labels, current_values, summary_label

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
ASCENDING_COLUMNS = ("depth", "name", "op")  # a new sort by these starts ascending, by numbers descending
CONSTANT_OPS = frozenset({"Constant", "ConstantOfShape"})
NAME_WIDTH = 34  # the name column's widest
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


def sort_key(reverse: bool) -> Callable[[Any], Any]:
    """Key of a cell (or raw value) for sorting: missing values last in either direction, text by its lower case."""
    missing = -math.inf if reverse else math.inf

    def key(cell: Any) -> Any:
        v = getattr(cell, "value", cell)
        if v is None:
            return (1 if not reverse else 0, missing, "")
        if isinstance(v, str):
            return (0 if not reverse else 1, 0.0, v.lower())
        return (0 if not reverse else 1, float(v), "")

    return key


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


def column_widths(columns: list[tuple[str, str, str]], labels: dict[str, str],
                  cells: list[tuple[Cell, ...]]) -> list[int]:
    """Each column's width: its widest label or cell (the op type's at most ``OP_WIDTH``)."""
    widths = [len(labels.get(k, label)) for k, label, _ in columns]
    for row in cells:
        for i, c in enumerate(row):
            n = len(c)
            if n > widths[i]:
                widths[i] = n
    op_i = [k for k, _, _ in columns].index("op")
    widths[op_i] = min(widths[op_i], OP_WIDTH)
    return widths


def name_width(widths: list[int], name_i: int, avail: int, pad: int) -> int:
    """What the other columns leave the name column of a table ``avail`` wide (at least 12, at most its longest)."""
    others = sum(w + pad for i, w in enumerate(widths) if i != name_i)
    room = avail - others - pad - 2  # 2: the vertical scrollbar
    return max(12, min(widths[name_i], NAME_WIDTH, room))


def shorten_names(cells: list[tuple[Cell, ...]], name_i: int, width: int) -> list[tuple[Cell, ...]]:
    """Names longer than ``width`` cut in the middle: ``layer3.0.co…`` would hide conv1 from conv2."""
    out = []
    for row in cells:
        c = row[name_i]
        if len(c.value) > width:
            row = row[:name_i] + (Cell(ellipsize_middle(c.value, width), c.value, style=c.style),) + row[name_i + 1:]
        out.append(row)
    return out


def jobs_text(active: list[Any]) -> str:
    """Running profiles of this project, for the status line: ``perf profile 40% (level 0.6), x cancels``."""
    if not active:
        return ""
    job = active[0]
    text = f"{job.kind} profile {'queued' if job.state == 'queued' else f'{100 * job.fraction:.0f}%'}"
    if job.label:
        text += f" ({job.label if len(job.label) <= 28 else job.label[:27] + '…'})"
    if len(active) > 1:
        text += f" +{len(active) - 1}"
    return text + ", x cancels"


def _share(ms: float | None, total: float) -> Cell:
    share = 100.0 * ms / total if ms is not None and total else None
    return Cell("-" if share is None else f"{share:.1f}%", share, justify="right")


@dataclass
class LayerView:
    """What the layer summaries show: the data, its filters, sort, Summary Type and Value Display."""

    data: ModelData | None = None
    prunable_only: bool = False
    display_mode: str = "measured"
    level: float | None = None  # Summary Type: None = baseline, else a sparsity level of the profiles
    optimized: Any = None  # Summary Type "optimized": tui.widgets.optim_summary.OptimizedSummary
    sort_column: str = "depth"
    sort_reverse: bool = False
    op_filter: str = ALL_OPS
    name_pattern: str = ""
    pattern_error: str = ""  # why the name pattern is not a valid regular expression
    show_constants: bool = False  # Constant/ConstantOfShape rows (a converted model has hundreds)
    by_op: bool = False  # summaries by op type instead of layers
    visible_rows: list[LayerRow] = field(default_factory=list)  # the rows that passed the filters

    # ------------------------------------------------------------------ data and filters
    def set_data(self, data: ModelData | None) -> None:
        """New model data: a Summary Type level the profiles no longer have goes back to baseline."""
        self.data = data
        if data is not None and self.level is not None and self.level not in data.summary_levels:
            self.level = None

    def columns(self) -> list[tuple[str, str, str]]:
        """The layer table's columns: INT8 sensitivity only when a quant profile exists."""
        if self.data is not None and self.data.quant:
            return COLUMNS + [QUANT_COLUMN]
        return COLUMNS

    @property
    def sens_level(self) -> float:
        """The sparsity the sensitivities are read at: the Summary Type's, else the evaluation sparsity."""
        if self.level is not None:
            return self.level
        return self.data.eval_sparsity if self.data else 0.9

    def filtered_rows(self) -> list[LayerRow]:
        """The rows passing the filters; an invalid regular expression matches as plain text (``pattern_error``)."""
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

    def refresh(self) -> list[LayerRow]:
        self.visible_rows = self.filtered_rows()
        return self.visible_rows

    def next_op_filter(self) -> str:
        """Key ``f``: the next op type (after the last, all of them again)."""
        ops = [ALL_OPS] + (self.data.op_types if self.data else [])
        i = ops.index(self.op_filter) if self.op_filter in ops else 0
        self.op_filter = ops[(i + 1) % len(ops)]
        return self.op_filter

    def keep_op_filter(self, ops: list[str]) -> None:
        if self.op_filter not in ops:
            self.op_filter = ALL_OPS

    # ------------------------------------------------------------------ sorting
    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by ``column``; without ``reverse``, the same column flips and a new one takes its natural order."""
        if reverse is None:
            reverse = (not self.sort_reverse) if column == self.sort_column else column not in ASCENDING_COLUMNS
        self.sort_column = column
        self.sort_reverse = reverse

    def next_sort(self) -> None:
        """Key ``s``: the next column of the table shown, in its natural order."""
        cols = [k for k, _, _ in (OP_COLUMNS if self.by_op else self.columns())]
        i = cols.index(self.sort_column) if self.sort_column in cols else -1
        col = cols[(i + 1) % len(cols)]
        self.sort_by(col, reverse=col not in ASCENDING_COLUMNS)

    def toggle_groups(self) -> None:
        """Key ``g``: layers <-> op types; a sort column the other table lacks becomes its default."""
        self.by_op = not self.by_op
        if self.by_op and self.sort_column not in {k for k, _, _ in OP_COLUMNS}:
            self.sort_column, self.sort_reverse = "ms", True
        elif not self.by_op and self.sort_column not in {k for k, _, _ in self.columns()}:
            self.sort_column, self.sort_reverse = "depth", False

    def layer_sort(self) -> str | None:
        """The column to sort the filled layer table by (None: it is in depth order already)."""
        return self.sort_column if self.sort_column != "depth" or self.sort_reverse else None

    def op_sort(self) -> str | None:
        """The column to sort the filled op table by (None: it is in op order already)."""
        col = self.sort_column if self.sort_column in {k for k, _, _ in OP_COLUMNS} else None
        return col if col is not None and (col != "op" or self.sort_reverse) else None

    # ------------------------------------------------------------------ Summary Type, Value Display
    def cycle_display(self) -> None:
        i = VALUE_DISPLAYS.index(self.display_mode)
        self.display_mode = VALUE_DISPLAYS[(i + 1) % len(VALUE_DISPLAYS)]

    def next_level(self) -> bool:
        """Baseline -> each sparsity level of the profiles -> baseline; False when there is no level."""
        levels = self.data.summary_levels if self.data else []
        if not levels:
            return False
        choices: list[float | None] = [None] + levels
        i = choices.index(self.level) if self.level in choices else 0
        self.level = choices[(i + 1) % len(choices)]
        return True

    def column_labels(self) -> dict[str, str]:
        lvl = fmt_level(self.sens_level)
        ms_label = "Base ms" if self.level is None else f"ms@{fmt_level(self.level)}"
        return column_labels(self, {"ms": ms_label, "perf": f"Perf@{lvl}", "loss": f"Loss@{lvl}"})

    # ------------------------------------------------------------------ cells
    def layer_cells(self) -> list[tuple[Cell, ...]]:
        """One tuple of cells per visible row, in the order of :meth:`columns`."""
        rows, all_rows = self.visible_rows, (self.data.rows if self.data else [])
        level, sens_level, disp = self.level, self.sens_level, self.display_mode
        # totals over all layers (not only the visible ones) for "percent of total"
        tot = {
            "params": sum(r.params or 0 for r in all_rows),
            "flops": sum(r.flops or 0 for r in all_rows),
            "ms": sum(v for v in (r.ms_at(level) for r in all_rows) if v is not None),
            "perf": sum(v for v in (r.perf_sensitivity(sens_level) for r in all_rows) if v is not None and v > 0),
            "loss": sum(v for v in (r.loss_sensitivity(sens_level) for r in all_rows) if v is not None and v > 0),
        }
        out = []
        for r in rows:
            ms, params_v, flops_v = current_values(self, r, r.ms_at(level))  # Summary Type "optimized"
            vals = {
                "params": transform(params_v, disp, tot["params"]) if params_v is not None else None,
                "flops": transform(flops_v, disp, tot["flops"]),
                "ms": transform(ms, disp, tot["ms"]),
                "perf": transform(r.perf_sensitivity(sens_level), disp, tot["perf"]),
                "loss": transform(r.loss_sensitivity(sens_level), disp, tot["loss"]),
            }
            name_style = "italic dim" if r.engine_internal else ("bold" if r.prunable else "")
            out.append((
                Cell("-" if r.depth is None else str(r.depth), r.depth, justify="right"),
                Cell(r.name, r.name, style=name_style),
                Cell(r.op_type, r.op_type),
                *self._value_cells(vals, ("params", "count"), ("flops", "count"), ("ms", "ms")),
                _share(ms, tot["ms"]),
                *self._value_cells(vals, ("perf", "sens"), ("loss", "sens")),
            ))
        if len(self.columns()) > len(COLUMNS):  # the INT8 sensitivity of a quant profile
            tot_q = sum(r.quant_sens for r in all_rows if r.quant_sens is not None and r.quant_sens > 0)
            for i, r in enumerate(rows):
                q = transform(r.quant_sens, disp, tot_q)
                out[i] = out[i] + (Cell(fmt_value(q, disp, "sens"), q, justify="right"),)
        return out

    def _value_cells(self, vals: dict[str, float | None], *keys: tuple[str, str]) -> list[Cell]:
        return [Cell(fmt_value(vals[k], self.display_mode, kind), vals[k], justify="right") for k, kind in keys]

    def op_cells(self) -> list[tuple[str, tuple[Cell, ...]]]:
        """(row key, cells) per op type of the visible rows, in the order of ``OP_COLUMNS``."""
        sums = op_summaries(self.visible_rows, self.level, self.sens_level)
        disp = self.display_mode
        tot = {
            "params": sum(s.params for s in sums),
            "flops": sum(s.flops or 0 for s in sums),
            "ms": sum(s.ms or 0 for s in sums),
            "perf": sum(max(s.perf_sens or 0, 0) for s in sums),
            "loss": sum(max(s.loss_sens or 0, 0) for s in sums),
        }
        out = []
        for s in sums:
            vals = {
                "params": transform(s.params, disp, tot["params"]),
                "flops": transform(s.flops, disp, tot["flops"]),
                "ms": transform(s.ms, disp, tot["ms"]),
                "perf": transform(s.perf_sens, disp, tot["perf"]),
                "loss": transform(s.loss_sens, disp, tot["loss"]),
            }
            out.append((f"op:{s.op_type}", (
                Cell(s.op_type, s.op_type, style="bold"),
                Cell(str(s.count), s.count, justify="right"),
                Cell(str(s.prunable), s.prunable, justify="right"),
                *self._value_cells(vals, ("params", "count"), ("flops", "count"), ("ms", "ms")),
                _share(s.ms, tot["ms"]),
                *self._value_cells(vals, ("perf", "sens"), ("loss", "sens")),
            )))
        return out

    # ------------------------------------------------------------------ charts
    def chart_series(self, metric: str) -> tuple[list[int], list[float | None], str]:
        """(layer depths, values, title) of the bar chart of ``metric`` over the visible layers."""
        rows = [r for r in self.visible_rows if r.depth is not None]
        sl = self.sens_level
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
        return [r.depth for r in rows], values, title

    @staticmethod
    def perf_curve(row: LayerRow) -> list[tuple[float, float]]:
        """(sparsity, ms saved) of one layer's perf profile."""
        return [(s, row.baseline_ms - t) for s, t in row.ms_points] if row.baseline_ms is not None else []

    # ------------------------------------------------------------------ status line
    def status_items(self, running: str = "") -> list[tuple[str, str]]:
        """(bold key, text) of the status line, most important first; ``running``: :func:`jobs_text`."""
        data = self.data
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
        return items

    def status_text(self, running: str = "", loading: bool = False) -> Text | str:
        """The status line (up to two lines: the profiles used stay in view)."""
        if self.data is None:
            msg = "analysing the model…" if loading else "no model data"
            return msg + (f"  ·  {running}" if running else "")
        text = Text(overflow="ellipsis")
        for i, (k, v) in enumerate(self.status_items(running)):
            if i:
                text.append("  ·  ", style="dim")
            if k:
                text.append(k, style="bold")
            text.append(v, style="bold red" if self.pattern_error and i == 0 else "")
        return text


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
