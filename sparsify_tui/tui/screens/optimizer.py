"""Optimizer editor: the optimization's settings, per-layer plan, estimates, LR modifiers, schedule.

Everything is keyboard driven:

* settings table (``#opt-settings``): ``+``/``-`` step the highlighted
  setting, ``]``/``[`` take 5 steps, ``enter``/``e`` types a value (validated
  inline: nothing changes or is saved until the value is valid);
* layer table (``#opt-layers``): ``enter``/``e`` types a sparsity override for
  the layer, ``r`` resets it, ``x`` excludes the layer (or includes it again);
* learning-rate tab: ``a`` adds a modifier, ``enter``/``e`` edits the
  highlighted one (``kind start=.. end=.. lr=.. gamma=.. step_size=..``),
  ``d`` removes it; the LR curve is redrawn;
* ``u`` / ``ctrl+z`` undo, ``ctrl+y`` redo; ``c`` copies the optimization as a
  new version, ``n`` switches to the next version;
* every change re-runs the allocation and the estimates (the Evaluator caches
  its curves, a few ms) and updates only the cells that changed: the rows in
  view in the same frame as the estimates, the other rows right after that
  frame is drawn; the project is saved after 0.5 s without edits. Leaving
  with unsaved changes asks first.
"""

from __future__ import annotations

import functools
import gc
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Header, Input, Static, TabbedContent, TabPane

from sparsify_tui.errors import SparsifyError, UsageError
from sparsify_tui.optim.optimization import (
    INTERPOLATIONS,
    LR_KINDS,
    MASK_TYPES,
    NO_MEASURED_LOSS_NOTE,
    REASON_USER,
    LRModifier,
    Optimization,
    default_optimization,
    reschedule,
)
from sparsify_tui.tui.data import ellipsize_middle, fmt_count, fmt_ms, fmt_sens
from sparsify_tui.tui.undo import UndoHistory
from sparsify_tui.tui.widgets.footer import FitFooter
from sparsify_tui.tui.widgets.optim_lr import LRChart
from sparsify_tui.tui.widgets.optim_table import FastDataTable
from sparsify_tui.tui.widgets.optim_training import TrainingSummary, training_rows

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.project import Project

SAVE_DELAY_S = 0.5


# ---------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    key: str
    label: str
    kind: str  # float | int | choice | bool
    step: float = 0.0
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""


SETTINGS: list[Setting] = [
    Setting("target_sparsity", "Target sparsity", "float", 0.01, 0.0, 0.99, help="share of prunable weights zeroed"),
    Setting("balance", "Balance (0=perf)", "float", 0.05, 0.0, 1.0, help="0 performance, 1 recovery"),
    Setting("epochs", "Epochs", "int", 1, 1, 100000, help="rescales the default schedule"),
    Setting("pruning_start", "Pruning start", "float", 1.0, 0.0, None),
    Setting("pruning_end", "Pruning end", "float", 1.0, 0.0, None),
    Setting("update_frequency", "Update frequency", "float", 0.25, 0.0, None),
    Setting("init_sparsity", "Initial sparsity", "float", 0.01, 0.0, 0.99),
    Setting("interpolation", "Interpolation", "choice", choices=INTERPOLATIONS),
    Setting("mask_type", "Mask type", "choice", choices=MASK_TYPES),
    Setting("max_sparsity", "Max sparsity", "float", 0.01, 0.01, 0.99, help="per-layer cap"),
    Setting("min_sparsity", "Min sparsity", "float", 0.05, 0.0, 0.99),
    Setting("min_speedup", "Min speedup (x)", "float", 0.05, 0.0, 100.0),
    Setting("min_recovery", "Min recovery", "float", 0.05, 0.0, 1.0),
    Setting("protect_edges", "Protect edges", "bool",
            help="leave the stem, output heads and tiny layers dense"),
    Setting("tiny_params", "Tiny layer (<N w)", "int", 256, 0, 10**9, help="with Protect edges; 0 = off"),
    Setting("buckets", "Buckets", "int", 1, 0, 100),
    Setting("quantization", "INT8 QAT", "bool"),
]
SETTING_BY_KEY = {s.key: s for s in SETTINGS}

LAYER_COLUMNS = [
    ("name", "Layer"),
    ("sparsity", "Sparsity"),
    ("speedup", "Speedup"),
    ("time", "Est ms vs base"),
    ("loss", "Loss sens"),
    ("perf", "Perf sens"),
    ("note", "Excluded / note"),
    ("recovery", "Recovery"),
    ("params", "Params"),
    ("op", "Op"),
]
LAYER_WIDTHS = {"name": 20, "op": 8, "params": 8, "sparsity": 8, "speedup": 7, "time": 14,
                "loss": 13, "perf": 13, "recovery": 8, "note": 24}
LR_COLUMNS = [("n", "#"), ("kind", "Kind"), ("start", "Start"), ("end", "End"), ("lr", "Init LR"), ("args", "Args")]


def get_setting(opt: Optimization, key: str) -> Any:
    p = opt.pruning
    if key == "epochs":
        return opt.epochs
    if key == "pruning_start":
        return p.start_epoch
    if key == "pruning_end":
        return p.end_epoch
    if key == "quantization":
        return opt.quantization.enabled
    return getattr(p, key)


def fmt_setting(opt: Optimization, s: Setting) -> str:
    v = get_setting(opt, s.key)
    if s.kind == "bool":
        return "on" if v else "off"
    if s.kind == "choice":
        return str(v)
    if s.kind == "int":
        return "off" if s.key == "tiny_params" and not v else f"{int(v)}"
    if s.key in ("min_sparsity", "min_speedup", "min_recovery") and not v:
        return "off"
    return f"{float(v):.4g}"


def with_setting(opt: Optimization, key: str, value: Any) -> Optimization:
    """A copy of ``opt`` with one setting changed (epochs reschedules)."""
    if key == "epochs":
        return reschedule(opt, int(value))
    new = opt.copy()
    p = new.pruning
    if key == "pruning_start":
        p.start_epoch = float(value)
    elif key == "pruning_end":
        p.end_epoch = float(value)
    elif key == "quantization":
        new.quantization.enabled = bool(value)
    elif key in ("interpolation", "mask_type"):
        setattr(p, key, str(value))
    elif key == "buckets":
        p.buckets = int(value)
    elif key == "tiny_params":
        p.tiny_params = int(value)
    elif key == "protect_edges":
        p.protect_edges = bool(value)
    else:
        setattr(p, key, float(value))
    return new


def parse_setting(s: Setting, text: str) -> Any:
    """The typed value for setting ``s`` or UsageError with one sentence."""
    t = text.strip()
    if s.kind == "bool":
        if t.lower() in ("on", "true", "yes", "1"):
            return True
        if t.lower() in ("off", "false", "no", "0"):
            return False
        raise UsageError(f"{s.label} must be on or off, got {t!r}")
    if s.kind == "choice":
        if t not in s.choices:
            raise UsageError(f"{s.label} must be one of {', '.join(s.choices)}, got {t!r}")
        return t
    if s.kind == "int":
        if s.key == "tiny_params" and t.lower() == "off":
            return 0
        try:
            v: Any = int(t)
        except ValueError:
            raise UsageError(f"{s.label} must be a whole number, got {t!r}") from None
    else:
        if s.key.startswith("min_") and t.lower() == "off":
            return 0.0
        try:
            v = float(t.rstrip("%")) / (100.0 if t.endswith("%") else 1.0)
        except ValueError:
            raise UsageError(f"{s.label} must be a number, got {t!r}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise UsageError(f"{s.label} must be a finite number, got {t!r}")
    if s.lo is not None and v < s.lo:
        raise UsageError(f"{s.label} must be at least {s.lo:g}, got {v:g}")
    if s.hi is not None and v > s.hi:
        raise UsageError(f"{s.label} must be at most {s.hi:g}, got {v:g}")
    return v


def parse_sparsity(text: str) -> float:
    t = text.strip()
    try:
        v = float(t.rstrip("%")) / (100.0 if t.endswith("%") else 1.0)
    except ValueError:
        raise UsageError(f"a layer sparsity must be a number in [0, 1) such as 0.8 or 80%, got {t!r}") from None
    if not (0.0 <= v < 1.0):
        raise UsageError(f"a layer sparsity must be in [0, 1), got {t!r}")
    return v


def fmt_lr_args(m: LRModifier) -> str:
    parts = []
    for k, v in m.args.items():
        if k == "milestones":
            parts.append("milestones=" + ",".join(f"{x:g}" for x in v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{k}={v:g}")
    return " ".join(parts)


def lr_to_text(m: LRModifier) -> str:
    return f"{m.kind} start={m.start_epoch:g} end={m.end_epoch:g} lr={m.init_lr:g} {fmt_lr_args(m)}".strip()


def parse_lr(text: str) -> LRModifier:
    """``step start=60 end=-1 lr=0.01 gamma=0.1 step_size=14`` -> LRModifier (UsageError if bad)."""
    words = text.split()
    if not words:
        raise UsageError("a learning-rate modifier needs a kind: " + ", ".join(LR_KINDS))
    kind = words[0]
    if kind not in LR_KINDS:
        raise UsageError(f"learning-rate modifier kind must be one of {', '.join(LR_KINDS)}, got {kind!r}")
    m = LRModifier(kind=kind)
    for w in words[1:]:
        if "=" not in w:
            raise UsageError(f"learning-rate modifier values are written key=value, got {w!r}")
        k, v = w.split("=", 1)
        try:
            if k == "milestones":
                m.args["milestones"] = [float(x) for x in v.split(",") if x]
            elif k in ("start", "start_epoch"):
                m.start_epoch = float(v)
            elif k in ("end", "end_epoch"):
                m.end_epoch = float(v)
            elif k in ("lr", "init_lr"):
                m.init_lr = float(v)
            elif k in ("gamma", "step_size", "lr_min", "cycle_epochs"):
                m.args[k] = float(v)
            else:
                raise UsageError(f"unknown learning-rate modifier key {k!r} (start, end, lr, gamma, step_size, "
                                 "milestones, lr_min, cycle_epochs)")
        except ValueError:
            raise UsageError(f"learning-rate modifier value {w!r} is not a number") from None
    return m


def cell(text: str, style: str = "", justify: str = "left") -> Text:
    return Text(text, style=style, justify=justify, no_wrap=True, overflow="ellipsis", end="")


# The layer table's changing cells repeat the same few thousand values ("85.3%", "1.42x"):
# one shared Text per value (never mutated: the tables copy before padding) saves most of
# the ~1000 Text constructions an edit on a 500-layer plan would need.
shared_cell = functools.lru_cache(maxsize=8192)(cell)


RANK_STYLE = {"top 5%": "bold red", "high": "yellow", "medium": "", "low": "dim"}


def layer_specs(le: Any) -> dict[str, tuple[str, str, str]]:
    """(text, style, justify) of the cells of one LayerEstimate that change with the plan."""
    # * = your override; ✗ = left dense (excluded by you, filtered, not prunable: the Note column says why)
    sp = f"{le.sparsity * 100:.1f}%" + (" *" if le.overridden else " ✗" if le.excluded_reason else "")
    if le.est_ms is not None and le.baseline_ms is not None:
        tm = f"{fmt_ms(le.est_ms)} {100 * le.est_ms / le.baseline_ms:.0f}%" if le.baseline_ms > 0 else fmt_ms(le.est_ms)
    elif le.flops_before is not None:
        tm = f"{fmt_count(le.flops_after)}/{fmt_count(le.flops_before)} fl"
    else:
        tm = "-"
    perf = "-" if le.perf_sensitivity is None else fmt_sens(le.perf_sensitivity)
    return {
        "sparsity": (sp, "bold" if le.overridden else "italic yellow" if le.excluded_reason else "", "right"),
        "speedup": (f"{le.est_speedup:.2f}x", "", "right"),
        "time": (tm, "", "right"),
        "loss": (f"{fmt_sens(le.loss_sensitivity)} {le.loss_rank}", RANK_STYLE.get(le.loss_rank, ""), "left"),
        "perf": (f"{perf} {le.perf_rank}", RANK_STYLE.get(le.perf_rank, ""), "left"),
        "recovery": (f"{le.recovery:.2f}", "", "right"),
        "note": (le.excluded_reason or "", "italic yellow" if le.excluded_reason else "", "left"),
    }


def layer_sig(le: Any) -> tuple:
    """Everything a layer row shows that an edit can change (equal: the row needs no formatting)."""
    return (le.sparsity, le.overridden, le.est_speedup, le.est_ms, le.baseline_ms, le.flops_after,
            le.loss_sensitivity, le.perf_sensitivity, le.recovery, le.excluded_reason, le.loss_rank,
            le.perf_rank)


def estimates_text(est: Any, width: int = 120, profile: str = "") -> Group:
    """The estimates panel: speedup, time vs baseline, FLOPs and params reduction, recovery confidence.

    Three columns, two lines, and a third line for notes (approximated, target not reachable, INT8).
    """
    def pair(label: str, value: str, style: str = "", extra: str = "") -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(label + " ", style="bold")
        t.append(value, style=style)
        if extra:
            t.append(" " + extra, style="dim")
        return t

    narrow = width < 100
    grid = Table.grid(expand=True, padding=(0, 1 if narrow else 2))
    for r in ((1, 1) if narrow else (10, 13, 10)):
        grid.add_column(ratio=r, no_wrap=True)
    if est.estimated_ms is not None and est.baseline_ms is not None:
        tvb = pair("Est. Time" if narrow else "Est. Time vs Baseline",
                   f"{fmt_ms(est.estimated_ms)}/{fmt_ms(est.baseline_ms)} ms",
                   extra=f"{100 * est.estimated_ms / est.baseline_ms:.0f}%" if est.baseline_ms else "")
    else:
        tvb = pair("Est. Time vs Baseline", "- (FLOPs only)")
    cells = [
        pair("Estimated Speedup", f"{est.estimated_speedup:.2f}x", "bold green"), tvb,
        pair("Recovery Confidence", f"{est.recovery_confidence:.2f}", "bold"),
        pair("FLOPs Reduction", f"{est.flops_reduction:.2f}x" if est.flops_reduction else "-",
             extra="" if narrow else f"{fmt_count(est.flops_after)}/{fmt_count(est.flops_before)}"),
        pair("Params Reduction", f"{est.compression:.2f}x",
             extra="" if narrow else f"{fmt_count(est.params_after)}/{fmt_count(est.params_before)}"),
        pair("Sparsity", f"{est.achieved_sparsity * 100:.1f}%", extra=f"target {est.target_sparsity * 100:.0f}%"),
    ]
    if narrow:  # speedup, time / recovery, flops / params, sparsity
        cells = [cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]]
        for i in range(0, 6, 2):
            grid.add_row(cells[i], cells[i + 1])
    else:
        grid.add_row(*cells[:3])
        grid.add_row(*cells[3:])
    notes = Text(no_wrap=True, overflow="ellipsis")
    drop = next((n for n in est.notes if "fell" in n and "as the target rose" in n), "")
    if drop:  # first: it explains the number the user just saw change
        notes.append(drop + "  ", style="bold yellow")
    no_loss = NO_MEASURED_LOSS_NOTE in est.notes  # the plan rests on weight magnitudes, not on the outputs
    if est.approximated:
        named = f" {profile!r}" if profile else ""
        notes.append(f"Approximated Profile{named}: {est.perf_basis} times, {est.loss_basis} loss sensitivity"
                     + (" (no measured loss profile)" if no_loss else "") + "  ", style="bold yellow")
        profile = ""  # named already
    elif no_loss:
        notes.append(f"No measured loss profile: {est.loss_basis} loss sensitivity  ", style="bold yellow")
    if not est.reachable:
        notes.append(next((n for n in est.notes if "not reachable" in n), "target not reachable") + "  ",
                     style="yellow")
    if profile:  # the one named profile this plan's estimates come from (validation and export name it too)
        notes.append(f"from perf profile {profile!r}  ", style="bold")
    if est.quantization.get("estimated_speedup_with_quant"):
        notes.append(f"with INT8 {est.quantization['estimated_speedup_with_quant']:.2f}x (rough)", style="dim")
    return Group(grid, notes)


def target_drop_note(old_opt: Any, old_est: Any, new_opt: Any, new_est: Any) -> str:
    """Why an estimate fell when only the target sparsity rose ("" when none fell).

    Per layer the allocation only ever adds sparsity as the target rises, so
    with Buckets 0 no estimate falls; grouping the plan into a few sparsity
    values (one recipe modifier each) can regroup layers and lower one.
    """
    if old_opt is None or old_est is None or new_opt is None or new_est is None:
        return ""
    a, b = old_opt.pruning, new_opt.pruning
    if not b.target_sparsity > a.target_sparsity + 1e-9:
        return ""
    same = (a.enabled, a.balance, a.max_sparsity, a.min_sparsity, a.min_speedup, a.min_recovery, a.buckets,
            a.protect_edges, a.tiny_params, sorted(a.overrides.items()), sorted(a.exclusions.items()))
    if same != (b.enabled, b.balance, b.max_sparsity, b.min_sparsity, b.min_speedup, b.min_recovery, b.buckets,
                b.protect_edges, b.tiny_params, sorted(b.overrides.items()), sorted(b.exclusions.items())):
        return ""
    if new_est.estimated_speedup < old_est.estimated_speedup - 5e-5:
        fell = f"Speedup fell {old_est.estimated_speedup:.2f}x→{new_est.estimated_speedup:.2f}x"
    elif old_est.flops_reduction and new_est.flops_reduction and \
            new_est.flops_reduction < old_est.flops_reduction - 5e-5:
        fell = f"FLOPs reduction fell {old_est.flops_reduction:.2f}x→{new_est.flops_reduction:.2f}x"
    else:
        return ""
    if b.buckets > 0:
        return f"{fell} as the target rose: {b.buckets} buckets regrouped layers (Buckets 0 avoids this)"
    return f"{fell} as the target rose: a filter or the balance chose another plan"


def next_version_name(names: list[str], base: str) -> str:
    stem = base
    i = 2
    while f"{stem}-v{i}" in names:
        i += 1
    return f"{stem}-v{i}"


# ---------------------------------------------------------------- modal: unsaved changes
class ConfirmLeave(ModalScreen[str]):
    """Unsaved changes: save (s), discard (d) or stay (escape)."""

    BINDINGS = [
        Binding("s", "choose('save')", "Save and leave"),
        Binding("d", "choose('discard')", "Leave without saving"),
        Binding("escape", "choose('stay')", "Stay"),
    ]

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(f"[b]Unsaved changes[/b]\n{self.what}\n\n"
                         "[b]s[/b] save and leave   [b]d[/b] leave without saving   [b]escape[/b] stay",
                         id="confirm-text")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


# ---------------------------------------------------------------- the screen
class OptimizerScreen(Screen):
    """Edit an optimization with the keyboard and see its estimates after every edit."""

    PALETTE_GROUP = "Optimizer"
    AUTO_FOCUS = "#opt-settings"
    BINDINGS = [
        Binding("plus,equals_sign", "step(1)", "+ step", id="opt_step_up", tooltip="Raise the highlighted setting"),
        Binding("minus", "step(-1)", "- step", id="opt_step_down", tooltip="Lower the highlighted setting"),
        Binding("right_square_bracket", "step(5)", "+5 steps", show=False, id="opt_step_up5"),
        Binding("left_square_bracket", "step(-5)", "-5 steps", show=False, id="opt_step_down5"),
        Binding("e", "edit", "Edit value", id="opt_edit",
                tooltip="Type a value for the highlighted setting, layer override or LR modifier"),
        Binding("r", "reset_override", "Reset override", id="opt_reset", tooltip="Give the layer back to the allocation"),
        Binding("x", "toggle_exclude", "Exclude layer", id="opt_exclude", tooltip="Leave the layer dense (or not)"),
        Binding("a", "add_lr", "Add LR", id="opt_add_lr", tooltip="Add a learning-rate modifier"),
        Binding("d", "delete_lr", "Remove LR", id="opt_del_lr", tooltip="Remove the highlighted LR modifier"),
        Binding("u,ctrl+z", "undo", "Undo", id="opt_undo", tooltip="Undo the last edit"),
        Binding("ctrl+y", "redo", "Redo", show=False, id="opt_redo"),
        Binding("c", "copy_version", "Copy version", id="opt_copy", tooltip="Copy this optimization as a new version"),
        Binding("n", "next_version", "Next version", id="opt_next", tooltip="Switch to the next version"),
        Binding("1", "tab('tab-plan')", "Plan", show=False, id="opt_tab_plan"),
        Binding("2", "tab('tab-lr')", "Learning rate", show=False, id="opt_tab_lr"),
        Binding("3", "tab('tab-summary')", "Training summary", show=False, id="opt_tab_summary"),
        Binding("f1,question_mark", "area_help", "Help here", id="opt_help", tooltip="Help for the focused area"),
        Binding("escape", "back", "Back", id="opt_back", tooltip="Save and go back"),
        Binding("q", "leave_app", "Quit", show=False, id="opt_quit"),
    ]
    # bindings that only make sense in one area (hidden from the footer elsewhere)
    AREA_ACTIONS = {"reset_override": ("opt-layers",), "toggle_exclude": ("opt-layers",),
                    "delete_lr": ("opt-lr", "opt-lr-chart")}

    def __init__(self, project: "Project | None" = None, graph: "ModelGraph | None" = None, *, context: Any = None,
                 opt_name: str | None = None) -> None:
        super().__init__()
        self.project = project
        self.graph = graph
        self.ctx = context
        self.opt_name = opt_name
        self.opt: Optimization | None = None
        self.est: Any = None
        self.layer_ids: set[str] = set()
        self.histories: dict[str, UndoHistory] = {}
        self.dirty = False
        self.save_error = ""
        self._save_timer = None
        self._edit_target: tuple[str, Any] | None = None
        self._layer_cache: dict[str, dict[str, tuple[str, str, str]]] = {}
        self._layer_keys: dict[str, Any] = {}
        self._layers_pending: list | None = None
        self._heap_frozen = False
        self._settings_cache: dict[str, str] = {}
        self._layer_sigs: dict[str, tuple] = {}
        self._error_shown = ""
        self._lr_sig: tuple = ()
        self._lr_shown: list[str] = []
        self.last_update_ms: float | None = None
        self.ready = False
        self._reloading = False
        self._seen_profiles: tuple = ()

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="opt-body"):
            yield Static("loading the optimization…", id="opt-title")
            yield Static("", id="opt-estimates")
            with TabbedContent(id="opt-tabs", initial="tab-plan"):
                with TabPane("1 Plan", id="tab-plan"):
                    with Horizontal(id="opt-plan"):
                        yield FastDataTable(id="opt-settings", cursor_type="row", zebra_stripes=True)
                        yield FastDataTable(id="opt-layers", cursor_type="row", zebra_stripes=True)
                with TabPane("2 Learning rate", id="tab-lr"):
                    with Horizontal(id="opt-lr-box"):
                        yield FastDataTable(id="opt-lr", cursor_type="row")
                        yield LRChart(id="opt-lr-chart")
                with TabPane("3 Training summary", id="tab-summary"):
                    yield TrainingSummary(id="opt-summary")
            with Horizontal(id="opt-edit-bar"):
                yield Static("", id="opt-edit-label")
                yield Input(id="opt-edit")
            yield Static("", id="opt-error")
        yield FitFooter()

    def on_mount(self) -> None:
        # the widgets every edit touches, looked up once
        self._settings_table = st = self.query_one("#opt-settings", FastDataTable)
        self._layers_table = self.query_one("#opt-layers", FastDataTable)
        self._estimates_box = self.query_one("#opt-estimates", Static)
        self._title_box = self.query_one("#opt-title", Static)
        st.add_column("Setting", key="label")
        st.add_column("Value", key="value", width=13)
        for s in SETTINGS:
            st.add_row(cell(s.label), cell(""), key=s.key)
        lt = self.query_one("#opt-layers", DataTable)
        for key, label in LAYER_COLUMNS:
            lt.add_column(label, key=key, width=LAYER_WIDTHS.get(key))
        lr = self.query_one("#opt-lr", DataTable)
        for key, label in LR_COLUMNS:
            lr.add_column(label, key=key)
        self.query_one("#opt-edit-bar").display = False
        if self.project is None:
            self.project = getattr(self.app, "project", None)
        if self.graph is None:
            md = getattr(self.app, "model_data", None)
            self.graph = getattr(md, "graph", None)
        if self.ctx is not None:
            self._setup(self.ctx)
        else:
            self._load_context()
        self.watch(self.app, "data_version", self._on_app_data, init=False)

    def _profile_ids(self) -> tuple:
        return tuple(e.id for e in getattr(self.project, "profiles", []) or [])

    def _on_app_data(self, *_: Any) -> None:
        """A profile finished (or was removed) while the editor is open: re-estimate with the new profiles."""
        if not self.ready or self.project is None or self._profile_ids() == self._seen_profiles:
            return
        self._save_now()
        self.ready = False
        self._reloading = True
        self._load_context()

    @work(thread=True, exclusive=True, exit_on_error=False, group="optimizer-load",
          description="Preparing the optimizer")
    def _load_context(self) -> None:
        from sparsify_tui.actions.optimizer import OptimizerContext

        try:
            if self.project is None:
                raise UsageError("open a project first")
            stored = None
            if self.opt_name:
                stored = self.project.get_optimization(self.opt_name)
            elif self.project.optimizations:
                stored = self.project.optimizations[0]
            opt = Optimization.from_dict(stored) if stored else None
            if self._reloading:  # new profiles arrived: use the newest ones, not the plan's recorded ids
                opt = None
            ctx = OptimizerContext.for_project(self.project, self.graph, opt)
        except SparsifyError as exc:
            self.app.call_from_thread(self._fail, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - shown on screen, the app stays alive
            self.app.call_from_thread(self._fail, f"the optimizer could not start: {type(exc).__name__}: {exc}")
            return
        self.app.call_from_thread(self._setup, ctx)

    def _fail(self, message: str) -> None:
        self.query_one("#opt-title", Static).update(Text(message, style="bold red"))

    def _setup(self, ctx: Any) -> None:
        self.ctx = ctx
        self.graph = ctx.graph
        self.layer_ids = {lay.id for lay in ctx.graph.layers}
        self._seen_profiles = self._profile_ids()
        if self._reloading and self.opt is not None:  # new profiles: same optimization, new estimates
            self._reloading = False
            opt = ctx.attach(self.opt.copy())
            self.dirty = True
            self._show_opt(opt)
            self._schedule_save()
            self.ready = True
            self._freeze_heap()
            self.notify("profiles changed: estimates recomputed", timeout=3)
            return
        names = self.project.optimization_names() if self.project is not None else []
        name = self.opt_name or (names[0] if names else None)
        stored = self.project.get_optimization(name) if (self.project is not None and name) else None
        if stored:
            opt = Optimization.from_dict(stored)
            fresh = False
        else:
            opt = ctx.attach(default_optimization(ctx.graph, name=name or "default"))
            fresh = True
        self._show_opt(opt, first=True)
        if fresh:
            self.dirty = True
            self._save_now()
        self.ready = True
        self._freeze_heap()
        for note in ctx.notes:
            self.notify(note, timeout=5)

    # ------------------------------------------------------------ recompute and show
    def _show_opt(self, opt: Optimization, *, first: bool = False) -> None:
        """Allocate, estimate, and update what changed on screen."""
        t0 = time.perf_counter()
        old_opt, old_est = (None, None) if first else (self.opt, self.est)
        self.opt, self.est = self.ctx.evaluator.run(opt)
        drop = target_drop_note(old_opt, old_est, self.opt, self.est)
        if drop:
            self.est.notes.append(drop)
        self.opt_name = self.opt.name
        self.histories.setdefault(self.opt.name, UndoHistory())
        self._update_title()
        box = self._estimates_box
        box.update(estimates_text(self.est, box.size.width or self.app.size.width, self.perf_profile_name()),
                   layout=False)
        self._update_settings()
        self._update_layers(rebuild=first)
        self._update_lr()
        summary = self.query_one("#opt-summary", TrainingSummary)
        if first or training_rows(self.opt) != summary.rows or summary.end != self.opt.end_epoch:
            summary.set_opt(self.opt)
        self.last_update_ms = (time.perf_counter() - t0) * 1000

    def perf_profile_name(self) -> str:
        """The name of the stored perf profile the estimates come from ("" when approximated from FLOPs)."""
        pid = (getattr(self.ctx, "profile_ids", None) or {}).get("perf", "")
        if not pid or self.project is None:
            return ""
        return next((e.name for e in self.project.profiles_of("perf") if e.id == pid), "")

    def _update_title(self) -> None:
        names = self.version_names()
        idx = names.index(self.opt.name) + 1 if self.opt.name in names else len(names) + 1
        state = "unsaved" if self.dirty else "saved"
        if self.save_error:
            state = f"not saved: {self.save_error}"
        t = Text()
        t.append(f"Optimization {self.opt.name!r}", style="bold")
        t.append(f"  version {idx} of {max(len(names), idx)}  ({state})", style="dim")
        if getattr(self.project, "readonly", False):
            t.append("  read-only project: viewing only, edits are off", style="bold red")
        self._title_box.update(t, layout=False)

    def _update_settings(self) -> None:
        changes = []
        for s in SETTINGS:
            v = fmt_setting(self.opt, s)
            if self._settings_cache.get(s.key) != v:
                changes.append((s.key, "value", cell(v, "bold")))
                self._settings_cache[s.key] = v
        self._settings_table.set_cells(changes)

    def _update_layers(self, rebuild: bool = False) -> None:
        lt = self._layers_table
        keys = self._layer_keys
        if rebuild or lt.row_count != len(self.est.layers) or any(le.id not in keys for le in self.est.layers):
            self._layers_pending = None
            lt.clear()
            self._layer_cache = {}
            self._layer_sigs = {}
            rows = []
            for le in self.est.layers:
                specs = layer_specs(le)
                self._layer_cache[le.id] = specs
                self._layer_sigs[le.id] = layer_sig(le)
                cells = {k: cell(*spec) for k, spec in specs.items()}
                rows.append((cell(ellipsize_middle(le.name, LAYER_WIDTHS["name"])), cells["sparsity"], cells["speedup"], cells["time"], cells["loss"],
                             cells["perf"], cells["note"], cells["recovery"],
                             cell(fmt_count(le.params), justify="right"), cell(le.op_type)))
            self._layer_keys = {}
            for le, row in zip(self.est.layers, rows):
                self._layer_keys[le.id] = lt.add_row(*row, key=le.id)
            return
        # rows in view (and a few around) now, in this frame; the others right after it is drawn
        self._layers_pending = None
        top = int(lt.scroll_offset.y) - 5
        bottom = top + lt.size.height + 10
        index = lt._row_locations.get
        now, later = [], []
        for le in self.est.layers:
            i = index(le.id)
            (now if i is not None and top <= i < bottom else later).append(le)
        self._apply_layer_rows(now)
        if later:
            self._layers_pending = later
            self.call_after_refresh(self._flush_layer_rows, later)

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
        self._layers_table.set_cells(changes)  # repaints only changed rows in view

    def _update_lr(self) -> None:
        lr = self.query_one("#opt-lr", DataTable)
        shown = [lr_to_text(m) for m in self.opt.lr_modifiers]
        if shown != self._lr_shown:
            cur = lr.cursor_row
            lr.clear()
            for i, m in enumerate(self.opt.lr_modifiers):
                lr.add_row(str(i + 1), m.kind, f"{m.start_epoch:g}", "end" if m.end_epoch < 0 else f"{m.end_epoch:g}",
                           f"{m.init_lr:g}", fmt_lr_args(m), key=str(i))
            if lr.row_count:
                lr.move_cursor(row=min(cur, lr.row_count - 1))
            self._lr_shown = shown
        p = self.opt.pruning
        sig = (tuple(shown), self.opt.start_epoch, self.opt.end_epoch, p.enabled, p.start_epoch, p.end_epoch)
        if sig != self._lr_sig:
            self._lr_sig = sig
            self.query_one("#opt-lr-chart", LRChart).set_opt(self.opt)

    # ------------------------------------------------------------ edits
    def apply(self, new: Optimization, label: str) -> bool:
        """Validate ``new``; if good make it current (undoable) and schedule a save. Else show the error."""
        try:
            new.validate(self.layer_ids)
        except UsageError as exc:
            self.show_error(str(exc))
            return False
        self.show_error("")
        self.histories.setdefault(self.opt.name, UndoHistory()).push(self.opt.to_dict(), label)
        self.dirty = True
        self._show_opt(new)
        self._schedule_save()
        return True

    def show_error(self, message: str) -> None:
        if message == self._error_shown:
            return
        self._error_shown = message
        err = self.query_one("#opt-error", Static)
        err.update(Text(message, style="bold red") if message else "")
        err.display = bool(message)

    def focused_area(self) -> str:
        f = self.focused
        while f is not None and not (f.id or "").startswith("opt-"):
            f = f.parent
        return (f.id if f is not None else "") or ""

    def current_setting(self) -> Setting:
        st = self.query_one("#opt-settings", DataTable)
        return SETTINGS[max(0, min(st.cursor_row, len(SETTINGS) - 1))]

    def current_layer(self) -> str | None:
        lt = self.query_one("#opt-layers", DataTable)
        if not lt.row_count:
            return None
        return self.est.layers[lt.cursor_row].id

    def action_step(self, n: int) -> None:
        if not self.ready:
            return
        if self.focused_area() == "opt-layers":
            lid = self.current_layer()
            if lid is None:
                return
            cur = self.opt.layers.get(lid)
            s = round((cur.sparsity if cur else 0.0) + 0.01 * n, 4)
            s = min(max(s, 0.0), 0.99)
            self._set_override(lid, s)
            return
        s = self.current_setting()
        value = get_setting(self.opt, s.key)
        if s.kind == "bool":
            new_value: Any = not value
        elif s.kind == "choice":
            i = s.choices.index(value) if value in s.choices else 0
            new_value = s.choices[(i + (1 if n > 0 else -1)) % len(s.choices)]
        else:
            new_value = round(value + s.step * n, 6)
            if s.kind == "int":
                new_value = int(new_value)
            if s.lo is not None and new_value < s.lo:
                new_value = s.lo if value > s.lo else None
            if s.hi is not None and new_value is not None and new_value > s.hi:
                new_value = s.hi if value < s.hi else None
            if new_value is None:
                self.show_error(f"{s.label} is already at its limit {value:g}")
                return
        self.apply(with_setting(self.opt, s.key, new_value), f"{s.label} {value} -> {new_value}")

    def _set_override(self, lid: str, s: float) -> None:
        new = self.opt.copy()
        new.pruning.overrides[lid] = float(s)
        new.pruning.exclusions.pop(lid, None)
        self.apply(new, f"override {lid} = {s:g}")

    def action_edit(self) -> None:
        if not self.ready:
            return
        area = self.focused_area()
        if area == "opt-layers":
            lid = self.current_layer()
            if lid is None:
                return
            r = self.opt.layers.get(lid)
            self._open_edit(("layer", lid), f"sparsity of {lid} (0-0.99 or %):",
                            f"{r.sparsity:g}" if r else "0")
        elif area in ("opt-lr", "opt-lr-chart"):
            lr = self.query_one("#opt-lr", DataTable)
            if not lr.row_count:
                self.action_add_lr()
                return
            i = lr.cursor_row
            self._open_edit(("lr", i), f"LR modifier {i + 1}:", lr_to_text(self.opt.lr_modifiers[i]))
        else:
            s = self.current_setting()
            self._open_edit(("setting", s.key), f"{s.label}:", fmt_setting(self.opt, s).replace("off", "0")
                            if s.kind != "bool" else fmt_setting(self.opt, s))

    def _open_edit(self, target: tuple[str, Any], label: str, value: str) -> None:
        self._edit_target = target
        self._edit_return = self.focused
        self.query_one("#opt-edit-label", Static).update(label)
        bar = self.query_one("#opt-edit-bar")
        bar.display = True
        inp = self.query_one("#opt-edit", Input)
        inp.value = value
        inp.focus()
        inp.action_end()

    def _close_edit(self) -> None:
        self._edit_target = None
        self.query_one("#opt-edit-bar").display = False
        back = getattr(self, "_edit_return", None)
        if back is not None and back.is_attached:
            back.focus()

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id in ("opt-settings", "opt-layers", "opt-lr"):
            self.action_edit()

    @on(Input.Submitted, "#opt-edit")
    def _edit_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        target = self._edit_target
        if target is None:
            return
        kind, what = target
        try:
            if kind == "setting":
                s = SETTING_BY_KEY[what]
                value = parse_setting(s, event.value)
                new = with_setting(self.opt, s.key, value)
                label = f"{s.label} = {value}"
            elif kind == "layer":
                v = parse_sparsity(event.value)
                new = self.opt.copy()
                new.pruning.overrides[what] = v
                new.pruning.exclusions.pop(what, None)
                label = f"override {what} = {v:g}"
            else:
                m = parse_lr(event.value)
                new = self.opt.copy()
                if what is None:
                    new.lr_modifiers.append(m)
                else:
                    new.lr_modifiers[what] = m
                label = f"LR modifier {m.kind}"
        except UsageError as exc:
            self.show_error(str(exc))
            return
        if self.apply(new, label):
            self._close_edit()

    def action_reset_override(self) -> None:
        lid = self.current_layer() if self.ready else None
        if lid is None:
            return
        p = self.opt.pruning
        if lid not in p.overrides and lid not in p.exclusions:
            self.show_error(f"layer {lid} has no override to reset")
            return
        new = self.opt.copy()
        new.pruning.overrides.pop(lid, None)
        new.pruning.exclusions.pop(lid, None)
        self.apply(new, f"reset {lid}")

    def action_toggle_exclude(self) -> None:
        lid = self.current_layer() if self.ready else None
        if lid is None:
            return
        new = self.opt.copy()
        if lid in new.pruning.exclusions:
            new.pruning.exclusions.pop(lid)
            label = f"include {lid}"
        else:
            new.pruning.overrides.pop(lid, None)
            new.pruning.exclusions[lid] = REASON_USER
            label = f"exclude {lid}"
        self.apply(new, label)

    def action_add_lr(self) -> None:
        if not self.ready:
            return
        self.action_tab("tab-lr")
        p = self.opt.pruning
        start = p.end_epoch if p.enabled else self.opt.start_epoch
        span = max(1.0, (self.opt.end_epoch - start) / 4)
        lr0 = self.opt.lr_modifiers[0].init_lr if self.opt.lr_modifiers else 0.01
        self._open_edit(("lr", None), "new LR modifier:",
                        f"step start={start:g} end=-1 lr={lr0:g} gamma=0.1 step_size={span:g}")

    def action_delete_lr(self) -> None:
        if not self.ready:
            return
        lr = self.query_one("#opt-lr", DataTable)
        if self.focused_area() not in ("opt-lr", "opt-lr-chart") or not lr.row_count:
            self.show_error("go to the Learning rate tab (2) and highlight a modifier to remove it")
            return
        i = lr.cursor_row
        new = self.opt.copy()
        m = new.lr_modifiers.pop(i)
        self.apply(new, f"remove LR modifier {i + 1} ({m.kind})")

    def action_undo(self) -> None:
        if not self.ready:
            return
        h = self.histories.setdefault(self.opt.name, UndoHistory())
        got = h.undo(self.opt.to_dict())
        if got is None:
            self.notify("nothing to undo", timeout=2)
            return
        label, state = got
        self.dirty = True
        self._show_opt(Optimization.from_dict(state))
        self._schedule_save()
        self.notify(f"undone: {label}", timeout=2)

    def action_redo(self) -> None:
        if not self.ready:
            return
        h = self.histories.setdefault(self.opt.name, UndoHistory())
        got = h.redo(self.opt.to_dict())
        if got is None:
            self.notify("nothing to redo", timeout=2)
            return
        label, state = got
        self.dirty = True
        self._show_opt(Optimization.from_dict(state))
        self._schedule_save()
        self.notify(f"redone: {label}", timeout=2)

    # ------------------------------------------------------------ versions
    def version_names(self) -> list[str]:
        if self.project is None:
            return [self.opt.name] if self.opt else []
        return self.project.optimization_names()

    def action_copy_version(self) -> None:
        if not self.ready:
            return
        self._save_now()
        name = next_version_name(self.version_names(), self.opt.name.split("-v")[0])
        new = self.opt.copy(name=name)
        self.dirty = True
        self._show_opt(new)
        self._save_now()
        self.notify(f"copied as {name!r}", timeout=3)

    def action_next_version(self) -> None:
        if not self.ready:
            return
        names = self.version_names()
        if len(names) < 2:
            self.notify("only one version: press c to copy it", timeout=3)
            return
        self._save_now()
        i = names.index(self.opt.name) if self.opt.name in names else -1
        name = names[(i + 1) % len(names)]
        self.switch_to(name)

    def switch_to(self, name: str) -> None:
        d = self.project.get_optimization(name)
        if d is None:
            return
        self._show_opt(Optimization.from_dict(d))
        self.notify(f"version {name!r}", timeout=2)

    # ------------------------------------------------------------ saving
    def _schedule_save(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(SAVE_DELAY_S, self._save_now)
        self._update_title()

    def _save_now(self) -> bool:
        if self._save_timer is not None:
            self._save_timer.stop()
            self._save_timer = None
        if not self.dirty or self.opt is None or self.project is None:
            return True
        d = self.opt.to_dict()
        current = self.project.get_optimization(self.opt.name) or {}
        for k, v in current.items():  # keep what other tools stored (e.g. the validation section)
            d.setdefault(k, v)
        try:
            self.opt.touch()
            d["modified"] = self.opt.modified
            self.project.set_optimization(d)
        except Exception as exc:  # noqa: BLE001 - read-only project, disk full: stay dirty, say why
            self.save_error = str(exc)
            self._update_title()
            self.notify(f"the optimization could not be saved: {exc}", severity="error", timeout=8)
            return False
        self.dirty = False
        self.save_error = ""
        self._update_title()
        return True

    def _leave(self, then: Callable[[], None]) -> None:
        if self.dirty and not self._save_now():
            def chosen(choice: str | None) -> None:
                if choice == "save":
                    if self._save_now():
                        then()
                elif choice == "discard":
                    self.dirty = False
                    then()
            self.app.push_screen(ConfirmLeave(f"{self.opt.name!r} could not be saved: {self.save_error}"), chosen)
            return
        then()

    def action_back(self) -> None:
        if self._edit_target is not None:  # escape in the edit field cancels the edit
            self.show_error("")
            self._close_edit()
            return
        self._leave(self.app.pop_screen)

    def action_leave_app(self) -> None:
        self._leave(self.app.exit)

    def on_unmount(self) -> None:
        if self.dirty:
            try:
                self._save_now()
            except Exception:  # noqa: BLE001
                pass
        if self._heap_frozen:
            self._heap_frozen = False
            gc.unfreeze()  # what was frozen (this screen's widgets too) can be collected again

    def _freeze_heap(self) -> None:
        """Leave everything alive now (model graph, profiles, the tables' rows) out of the collector's full passes.

        A full (generation 2) collection walks every tracked object: with a
        500-layer model loaded that is an 80 ms pause every few seconds of
        editing, which would land on some key presses. The frozen objects are
        handed back to the collector when the editor closes.
        """
        gc.freeze()
        self._heap_frozen = True

    # ------------------------------------------------------------ misc
    WRITE_ACTIONS = frozenset({"step", "edit", "reset_override", "toggle_exclude", "add_lr", "delete_lr",
                               "undo", "redo", "copy_version"})

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.WRITE_ACTIONS and getattr(self.project, "readonly", False):
            return None  # shown disabled: a read-only project's plan cannot change
        areas = self.AREA_ACTIONS.get(action)
        if areas is not None and self.focused_area() not in areas:
            return False
        return True

    def on_descendant_focus(self, event) -> None:  # noqa: ANN001
        self.refresh_bindings()

    def on_resize(self, event) -> None:  # noqa: ANN001
        if self.est is not None:
            box = self.query_one("#opt-estimates", Static)
            box.update(estimates_text(self.est, event.size.width - 4, self.perf_profile_name()))

    def action_tab(self, tab: str) -> None:
        tabs = self.query_one("#opt-tabs", TabbedContent)
        tabs.active = tab
        target = {"tab-plan": "#opt-settings", "tab-lr": "#opt-lr", "tab-summary": "#opt-summary"}[tab]
        w = self.query_one(target)
        if w.can_focus:
            w.focus()

    def action_area_help(self) -> None:
        from sparsify_tui.tui.screens.glossary import GlossaryScreen

        self.app.push_screen(GlossaryScreen(area=self.focused_area() or "opt-settings"))
