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

The edits themselves (stepping, typed values, overrides, undo, versions,
saving) are :class:`~sparsify_tui.actions.optimizer_editor.OptimizationEditor`,
without Textual; this screen lays out its widgets (``widgets/optim_plan.py``),
binds the keys, calls the editor and shows its errors.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Header, Input, Static, TabbedContent, TabPane

from sparsify_tui.actions.optimizer_editor import OptimizationEditor
from sparsify_tui.actions.optimizer_settings import SETTINGS, Setting
from sparsify_tui.errors import SparsifyError, UsageError
from sparsify_tui.optim.optimization import Optimization
from sparsify_tui.tui.delegate import Delegated
from sparsify_tui.tui.optimizer_view import estimates_text, title_text
from sparsify_tui.tui.widgets.footer import FitFooter
from sparsify_tui.tui.widgets.optim_lr import LRChart
from sparsify_tui.tui.widgets.optim_plan import EditBar, ErrorLine, LayerPlanTable, LRTable, SettingsTable
from sparsify_tui.tui.widgets.optim_training import TrainingSummary, training_rows

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.project import Project

SAVE_DELAY_S = 0.5


def freeze_heap() -> bool:
    """Leave everything alive now (model graph, profiles, the tables' rows) out of the collector's full passes.

    A full (generation 2) collection walks every tracked object: with a
    500-layer model loaded that is an 80 ms pause every few seconds of
    editing, which would land on some key presses. The editor hands the
    frozen objects back to the collector (``gc.unfreeze``) when it closes.
    """
    gc.freeze()
    return True


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
OPTIMIZER_BINDINGS = [
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


def _when_ready(action: Callable[..., None]) -> Callable[..., None]:
    """An action of the screen that does nothing until the screen is ready (its optimization is loaded)."""

    @functools.wraps(action)
    def run(self: "OptimizerScreen", *args: Any) -> None:
        if self.ready:
            action(self, *args)

    return run


class OptimizerScreen(Screen):
    """Edit an optimization with the keyboard and see its estimates after every edit."""

    PALETTE_GROUP = "Optimizer"
    AUTO_FOCUS = "#opt-settings"
    BINDINGS = OPTIMIZER_BINDINGS
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
        self.editor = OptimizationEditor(project)  # the optimization, its undo history and its saving
        self._save_timer = None
        self._heap_frozen = False
        self.last_update_ms: float | None = None
        self.ready = False
        self._reloading = False
        self._seen_profiles: tuple = ()

    # the editor's state, read by the rendering (and the tests)
    opt = Delegated("editor")  # Optimization | None
    est = Delegated("editor")
    dirty = Delegated("editor", writable=True)

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="opt-body"):
            yield Static("loading the optimization…", id="opt-title")
            yield Static("", id="opt-estimates")
            with TabbedContent(id="opt-tabs", initial="tab-plan"):
                with TabPane("1 Plan", id="tab-plan"):
                    with Horizontal(id="opt-plan"):
                        yield SettingsTable(id="opt-settings", cursor_type="row", zebra_stripes=True)
                        yield LayerPlanTable(id="opt-layers", cursor_type="row", zebra_stripes=True)
                with TabPane("2 Learning rate", id="tab-lr"):
                    with Horizontal(id="opt-lr-box"):
                        yield LRTable(id="opt-lr", cursor_type="row")
                        yield LRChart(id="opt-lr-chart")
                with TabPane("3 Training summary", id="tab-summary"):
                    yield TrainingSummary(id="opt-summary")
            yield EditBar(id="opt-edit-bar")
            yield ErrorLine("", id="opt-error")
        yield FitFooter()

    def on_mount(self) -> None:
        # the widgets every edit touches, looked up once
        self._settings_table = self.query_one("#opt-settings", SettingsTable)
        self._layers_table = self.query_one("#opt-layers", LayerPlanTable)
        self._lr_table = self.query_one("#opt-lr", LRTable)
        self._estimates_box = self.query_one("#opt-estimates", Static)
        self._title_box = self.query_one("#opt-title", Static)
        self._edit_bar = self.query_one("#opt-edit-bar", EditBar)
        self._error_line = self.query_one("#opt-error", ErrorLine)
        for table in (self._settings_table, self._layers_table, self._lr_table):
            table.setup()
        if self.project is None:
            self.project = self.editor.project = getattr(self.app, "project", None)
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
            # new profiles arrived (reloading): the newest ones, not the plan's recorded ids
            ctx = OptimizerContext.for_editor(self.project, self.graph, self.opt_name, newest=self._reloading)
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
        self.editor.bind(ctx)
        self._seen_profiles = self._profile_ids()
        reload = self._reloading and self.opt is not None  # new profiles: same optimization, new estimates
        if reload:
            self._reloading = False
            self.editor.reattach()
            self._update_view()
            self._schedule_save()
        else:
            fresh = self.editor.open(self.opt_name)
            self._update_view(first=True)
            if fresh:
                self._save_now()
        self.ready = True
        self._heap_frozen = freeze_heap()
        for note in ["profiles changed: estimates recomputed"] if reload else ctx.notes:
            self.notify(note, timeout=3 if reload else 5)

    # ------------------------------------------------------------ recompute and show
    def _show_opt(self, opt: Optimization, *, first: bool = False) -> None:
        """Allocate, estimate, and update what changed on screen."""
        self.editor.show(opt, first=first)
        self._update_view(first=first)

    def _update_view(self, *, first: bool = False) -> None:
        """Update what changed on screen after the editor's optimization changed."""
        self.opt_name = self.opt.name
        self._update_title()
        box = self._estimates_box
        box.update(estimates_text(self.est, box.size.width or self.app.size.width, self.editor.perf_profile_name()),
                   layout=False)
        self._settings_table.show(self.opt)
        self._layers_table.show(self.est, rebuild=first)
        self._lr_table.show(self.opt)
        self.query_one("#opt-lr-chart", LRChart).show(self.opt)
        summary = self.query_one("#opt-summary", TrainingSummary)
        if first or training_rows(self.opt) != summary.rows or summary.end != self.opt.end_epoch:
            summary.set_opt(self.opt)
        self.last_update_ms = (time.perf_counter() - self.editor.shown_at) * 1000  # allocation to cells

    def _update_title(self) -> None:
        ed = self.editor
        self._title_box.update(title_text(ed.opt.name, ed.version_names(), ed.dirty, ed.save_error,
                                          getattr(self.project, "readonly", False)), layout=False)

    # ------------------------------------------------------------ edits
    def _edit(self, edit: Callable[..., Any], *args: Any) -> bool:
        """Run one edit of the editor: show its error, or the new plan (and schedule a save)."""
        try:
            edit(*args)
        except UsageError as exc:
            self.show_error(str(exc))
            return False
        self.show_error("")
        self._update_view()
        self._schedule_save()
        return True

    def show_error(self, message: str) -> None:
        self._error_line.show(message)

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

    @_when_ready
    def action_step(self, n: int) -> None:
        if self.focused_area() == "opt-layers":
            lid = self.current_layer()
            if lid is not None:
                self._edit(self.editor.step_layer, lid, n)
            return
        self._edit(self.editor.step, self.current_setting().key, n)

    @_when_ready
    def action_edit(self) -> None:
        area = self.focused_area()
        if area == "opt-layers":
            target: tuple[str, Any] = ("layer", self.current_layer())
            if target[1] is None:
                return
        elif area in ("opt-lr", "opt-lr-chart"):
            if not self._lr_table.row_count:
                self.action_add_lr()
                return
            target = ("lr", self._lr_table.cursor_row)
        else:
            target = ("setting", self.current_setting().key)
        self._open_edit(target)

    def _open_edit(self, target: tuple[str, Any]) -> None:
        self._edit_bar.open(target, *self.editor.edit_field(*target), self.focused)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id in ("opt-settings", "opt-layers", "opt-lr"):
            self.action_edit()

    @on(Input.Submitted, "#opt-edit")
    def _edit_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        target = self._edit_bar.target
        if target is not None and self._edit(self.editor.edit, *target, event.value):
            self._edit_bar.close()

    def action_reset_override(self) -> None:
        lid = self.current_layer() if self.ready else None
        if lid is not None:
            self._edit(self.editor.reset, lid)

    def action_toggle_exclude(self) -> None:
        lid = self.current_layer() if self.ready else None
        if lid is not None:
            self._edit(self.editor.toggle_exclude, lid)

    @_when_ready
    def action_add_lr(self) -> None:
        self.action_tab("tab-lr")
        self._open_edit(("lr", None))

    @_when_ready
    def action_delete_lr(self) -> None:
        lr = self.query_one("#opt-lr", DataTable)
        if self.focused_area() not in ("opt-lr", "opt-lr-chart") or not lr.row_count:
            self.show_error("go to the Learning rate tab (2) and highlight a modifier to remove it")
            return
        self._edit(self.editor.delete_lr, lr.cursor_row)

    @_when_ready
    def action_undo(self) -> None:
        self._undo_redo(self.editor.undo, "undo", "undone")

    @_when_ready
    def action_redo(self) -> None:
        self._undo_redo(self.editor.redo, "redo", "redone")

    def _undo_redo(self, move: Callable[[], str | None], verb: str, done: str) -> None:
        label = move()
        if label is None:
            self.notify(f"nothing to {verb}", timeout=2)
            return
        self._update_view()
        self._schedule_save()
        self.notify(f"{done}: {label}", timeout=2)

    # ------------------------------------------------------------ versions
    @_when_ready
    def action_copy_version(self) -> None:
        self._save_now()
        name = self.editor.copy_version()
        self._update_view()
        self._save_now()
        self.notify(f"copied as {name!r}", timeout=3)

    @_when_ready
    def action_next_version(self) -> None:
        name = self.editor.next_version()
        if name is None:
            self.notify("only one version: press c to copy it", timeout=3)
            return
        self._save_now()
        self.switch_to(name)

    def switch_to(self, name: str) -> None:
        if self.editor.switch(name):
            self._update_view()
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
        if not self.editor.needs_save:
            return True
        saved = self.editor.save()
        self._update_title()
        if not saved:
            self.notify(f"the optimization could not be saved: {self.editor.save_error}", severity="error",
                        timeout=8)
        return saved

    def _leave(self, then: Callable[[], None]) -> None:
        if self.dirty and not self._save_now():
            def chosen(choice: str | None) -> None:
                if choice == "save":
                    if self._save_now():
                        then()
                elif choice == "discard":
                    self.dirty = False
                    then()
            self.app.push_screen(ConfirmLeave(f"{self.opt.name!r} could not be saved: {self.editor.save_error}"),
                                 chosen)
            return
        then()

    def action_back(self) -> None:
        if self._edit_bar.target is not None:  # escape in the edit field cancels the edit
            self.show_error("")
            self._edit_bar.close()
            return
        self._leave(self.app.pop_screen)

    def action_leave_app(self) -> None:
        self._leave(self.app.exit)

    def on_unmount(self) -> None:
        if self.dirty:
            with contextlib.suppress(Exception):
                self._save_now()
        if self._heap_frozen:
            self._heap_frozen = False
            gc.unfreeze()  # what was frozen (this screen's widgets too) can be collected again

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
            box.update(estimates_text(self.est, event.size.width - 4, self.editor.perf_profile_name()))

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
