"""The optimizer's tables: settings, per-layer plan, LR modifiers, each updating only what changed.

Each table is a :class:`~sparsify_tui.tui.widgets.optim_table.FastDataTable`
that sets up its own columns (``setup``) and shows an optimization or its
estimates (``show``), remembering what it shows so an edit rewrites only the
cells whose text changed. The layer table writes the rows in view (and a few
around) in the same frame as the estimates and the others right after that
frame is drawn. :class:`EditBar` is the one-line field where a value is typed,
:class:`ErrorLine` the line under it that says why a value was refused.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input, Static

from sparsify_tui.actions.optimizer_settings import SETTINGS, fmt_lr_args, fmt_setting, lr_to_text
from sparsify_tui.tui.data import ellipsize_middle, fmt_count
from sparsify_tui.tui.optimizer_view import (
    LAYER_COLUMNS,
    LAYER_WIDTHS,
    LR_COLUMNS,
    cell,
    layer_sig,
    layer_specs,
    shared_cell,
)
from sparsify_tui.tui.widgets.optim_table import FastDataTable


class SettingsTable(FastDataTable):
    """One row per setting (``SETTINGS``): label and value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: dict[str, str] = {}

    def setup(self) -> None:
        self.add_column("Setting", key="label")
        self.add_column("Value", key="value", width=13)
        for s in SETTINGS:
            self.add_row(cell(s.label), cell(""), key=s.key)

    def show(self, opt: Any) -> None:
        changes = []
        for s in SETTINGS:
            v = fmt_setting(opt, s)
            if self._shown.get(s.key) != v:
                changes.append((s.key, "value", cell(v, "bold")))
                self._shown[s.key] = v
        self.set_cells(changes)


class LayerPlanTable(FastDataTable):
    """One row per prunable layer of the estimates: sparsity, speedup, time, sensitivities, note."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._layer_cache: dict[str, dict[str, tuple[str, str, str]]] = {}
        self._layer_keys: dict[str, Any] = {}
        self._layers_pending: list | None = None
        self._layer_sigs: dict[str, tuple] = {}

    def setup(self) -> None:
        for key, label in LAYER_COLUMNS:
            self.add_column(label, key=key, width=LAYER_WIDTHS.get(key))

    def show(self, est: Any, rebuild: bool = False) -> None:
        keys = self._layer_keys
        if rebuild or self.row_count != len(est.layers) or any(le.id not in keys for le in est.layers):
            self._rebuild(est.layers)
            return
        # rows in view (and a few around) now, in this frame; the others right after it is drawn
        self._layers_pending = None
        top = int(self.scroll_offset.y) - 5
        bottom = top + self.size.height + 10
        index = self._row_locations.get
        now, later = [], []
        for le in est.layers:
            i = index(le.id)
            (now if i is not None and top <= i < bottom else later).append(le)
        self._apply_layer_rows(now)
        if later:
            self._layers_pending = later
            self.screen.call_after_refresh(self._flush_layer_rows, later)

    def _rebuild(self, layers: list) -> None:
        self._layers_pending = None
        self.clear()
        self._layer_cache = {}
        self._layer_sigs = {}
        rows = []
        for le in layers:
            specs = layer_specs(le)
            self._layer_cache[le.id] = specs
            self._layer_sigs[le.id] = layer_sig(le)
            cells = {k: cell(*spec) for k, spec in specs.items()}
            rows.append((cell(ellipsize_middle(le.name, LAYER_WIDTHS["name"])), cells["sparsity"], cells["speedup"],
                         cells["time"], cells["loss"], cells["perf"], cells["note"], cells["recovery"],
                         cell(fmt_count(le.params), justify="right"), cell(le.op_type)))
        self._layer_keys = {}
        for le, row in zip(layers, rows):
            self._layer_keys[le.id] = self.add_row(*row, key=le.id)

    def _flush_layer_rows(self, pending: list) -> None:
        if self._layers_pending is pending:  # else a newer edit superseded it (and did all rows again)
            self._layers_pending = None
            self._apply_layer_rows(pending)

    def _apply_layer_rows(self, layers: list) -> None:
        """Put the changed cells of these layers' rows in the table (rows that show no change are skipped)."""
        changes = []
        sigs = self._layer_sigs
        cache = self._layer_cache
        keys = self._layer_keys
        for le in layers:
            sig = layer_sig(le)
            if sigs.get(le.id) == sig:
                continue  # nothing this row shows changed: skip formatting
            sigs[le.id] = sig
            old = cache[le.id]
            for k, spec in layer_specs(le).items():
                if old.get(k) != spec:
                    old[k] = spec
                    changes.append((keys[le.id], k, shared_cell(*spec)))
        self.set_cells(changes)  # repaints only changed rows in view


class LRTable(FastDataTable):
    """One row per learning-rate modifier; the cursor stays on its row when the list is redrawn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shown: list[str] = []

    def setup(self) -> None:
        for key, label in LR_COLUMNS:
            self.add_column(label, key=key)

    def show(self, opt: Any) -> None:
        shown = [lr_to_text(m) for m in opt.lr_modifiers]
        if shown == self.shown:
            return
        cur = self.cursor_row
        self.clear()
        for i, m in enumerate(opt.lr_modifiers):
            self.add_row(str(i + 1), m.kind, f"{m.start_epoch:g}", "end" if m.end_epoch < 0 else f"{m.end_epoch:g}",
                         f"{m.init_lr:g}", fmt_lr_args(m), key=str(i))
        if self.row_count:
            self.move_cursor(row=min(cur, self.row_count - 1))
        self.shown = shown


class EditBar(Horizontal):
    """A label and the field a value is typed in; ``target`` says what the value is for (None: closed)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target: tuple[str, Any] | None = None
        self._return: Widget | None = None
        self.display = False

    def compose(self) -> ComposeResult:
        yield Static("", id="opt-edit-label")
        yield Input(id="opt-edit")

    def open(self, target: tuple[str, Any], label: str, value: str, back: Widget | None) -> None:
        """Show the field with ``value`` for ``target``; closing focuses ``back`` again."""
        self.target = target
        self._return = back
        self.query_one("#opt-edit-label", Static).update(label)
        self.display = True
        inp = self.query_one("#opt-edit", Input)
        inp.value = value
        inp.focus()
        inp.action_end()

    def close(self) -> None:
        self.target = None
        self.display = False
        back = self._return
        if back is not None and back.is_attached:
            back.focus()


class ErrorLine(Static):
    """Why the last edit was refused, in bold red (hidden when there is nothing to say)."""

    shown = ""

    def show(self, message: str) -> None:
        if message == self.shown:
            return
        self.shown = message
        self.update(Text(message, style="bold red") if message else "")
        self.display = bool(message)
