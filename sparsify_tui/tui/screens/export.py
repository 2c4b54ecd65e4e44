"""Export: the optimization as a SparseML recipe, its code sample, saving, and the validation.

* the recipe YAML (``optim.recipe.export_recipe``) with syntax highlighting;
* the framework (pytorch, keras, tensorflow) and the code type (integration
  or training) of the code sample (``optim.code_samples.code_sample``);
* a name map path (JSON or CSV, ONNX weight name -> framework name): checked
  inline, its warnings shown; without one the recipe names ONNX weights;
* a path to save the recipe to (``ctrl+s`` or enter): checked inline (folder
  exists, not a directory, writable); the code sample is saved beside it
  when a code path is given;
* ``v`` runs the validation (prune one-shot + benchmark dense against pruned,
  ``actions.validate.validate_optimization``) in an App-level thread worker,
  so leaving the screen does not stop it; ``x`` cancels it. The result
  (measured against estimated speedup) is shown here and in a notification.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Input, Select, Static

from sparsify_tui.errors import SparsifyError, UsageError
from sparsify_tui.optim.code_samples import code_sample
from sparsify_tui.optim.optimization import Optimization
from sparsify_tui.tui.widgets.footer import FitFooter

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.project import Project

FRAMEWORKS = ("pytorch", "keras", "tensorflow")
CODE_KINDS = ("integration", "training")
NAME_NOTE = ("Recipe params are the model's ONNX weight (initializer) names; they may not match your "
             "framework's parameter names unless a name map is given.")


def check_save_path(text: str, what: str = "recipe") -> Path:
    """The path to write the ``what`` file to, or UsageError with one sentence."""
    t = text.strip()
    if not t:
        raise UsageError(f"type a path to save the {what} to")
    p = Path(t).expanduser()
    if p.exists() and p.is_dir():
        raise UsageError(f"{p} is a directory: add a file name such as {p / ('recipe.yaml' if what == 'recipe' else 'train.py')}")
    if not p.parent.exists():
        raise UsageError(f"folder {p.parent} does not exist")
    if not p.parent.is_dir():
        raise UsageError(f"{p.parent} is not a folder")
    import os

    if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{p} cannot be written (no permission)")
    return p


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except (ValueError, OSError):
        return False


def validation_table(v: dict) -> Table:
    """Measured against estimated speedup of a validation section."""
    table = Table(box=None, padding=(0, 2), show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")

    def num(key: str, fmt: str) -> str:
        x = v.get(key)
        return fmt.format(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"

    table.add_row("Measured speedup", Text(num("measured_speedup", "{:.2f}x"), style="bold green"))
    table.add_row("Estimated speedup", num("estimated_speedup", "{:.2f}x"))
    table.add_row("Relative error", num("relative_error", "{:+.0%}"))
    table.add_row("Dense / pruned ms", f"{num('dense_ms', '{:.3f}')} / {num('pruned_ms', '{:.3f}')}")
    from sparsify_tui.metrics import format_change

    change, meaning = format_change(v)
    table.add_row("Output change", change if v.get("output_change") is not None else "-")
    if meaning:
        table.add_row("", Text(meaning, style="italic"))
    method = v.get("method") or "magnitude"
    table.add_row("Pruning method", method)
    mag = v.get("magnitude_output_change")
    if method != "magnitude" and isinstance(mag, (int, float)):
        table.add_row("Magnitude, same plan", f"{mag:.4g} (output change; what {method} bought)")
    eng = v.get("engine")
    if eng:
        table.add_row("Engine", f"{eng} {v.get('engine_version', '')}".strip())
    for n in v.get("notes") or []:
        table.add_row("Note", Text(str(n), style="italic"))
    return table


class ExportScreen(Screen):
    """Recipe, code sample, name map, save, validation."""

    PALETTE_GROUP = "Export"
    AUTO_FOCUS = "#export-recipe-box"
    BINDINGS = [
        Binding("w,ctrl+s", "save", "Save", id="export_save", tooltip="Write the recipe (and code) to the paths"),
        Binding("p", "focus('#export-path')", "Path", id="export_path", tooltip="Type where to save the recipe"),
        Binding("m", "focus('#export-namemap')", "Name map", id="export_namemap",
                tooltip="Type the path of a name map (JSON or CSV)"),
        Binding("f", "cycle_framework", "Framework", id="export_framework",
                tooltip="PyTorch, Keras or TensorFlow code sample"),
        Binding("k", "cycle_kind", "Code type", id="export_kind", tooltip="Integration lines or a training script"),
        Binding("n", "next_optimization", "Next optimization", id="export_next_opt",
                tooltip="Export another optimization of the project"),
        Binding("v", "validate", "Validate", id="export_validate",
                tooltip="Prune one-shot and benchmark dense against pruned, in the background"),
        Binding("o", "cycle_method", "Pruning method", id="export_method",
                tooltip="How v prunes one-shot: magnitude, wanda or sparsegpt (keeps the outputs)"),
        Binding("x", "cancel_validation", "Cancel", show=False, id="export_cancel",
                tooltip="Cancel the validation (or the running profiles)"),
        Binding("f1,question_mark", "area_help", "Help here", id="export_help"),
        Binding("escape", "back", "Back", id="export_back", tooltip="Leave the field, or go back"),
    ]

    def __init__(self, project: "Project | None" = None, graph: "ModelGraph | None" = None, *,
                 opt_name: str | None = None) -> None:
        super().__init__()
        self.project = project
        self.graph = graph
        self.opt_name = opt_name
        self.opt: Optimization | None = None
        self.framework = "pytorch"
        self.kind = "integration"
        self.name_map: dict[str, str] | None = None
        self.recipe_text = ""
        self.code_text = ""
        self.saved: list[Path] = []
        self.validation_kw: dict[str, Any] = {}  # extra arguments of validate_optimization (tests: fewer iterations)
        self.prune_method = "magnitude"  # how validation prunes: magnitude | wanda | sparsegpt (o cycles)

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="export-body"):
            yield Static("", id="export-title")
            with Vertical(id="export-form"):
                with Horizontal(classes="export-row"):
                    yield Static("Framework")
                    yield Select([(f, f) for f in FRAMEWORKS], value="pytorch", allow_blank=False,
                                 id="export-framework", compact=True)
                    yield Select([(k, k) for k in CODE_KINDS], value="integration", allow_blank=False,
                                 id="export-kind", compact=True)
                with Horizontal(classes="export-row"):
                    yield Static("Name map")
                    yield Input(placeholder="optional: ONNX -> framework names (.json or .csv), enter to load",
                                id="export-namemap", compact=True, select_on_focus=False)
                with Horizontal(classes="export-row"):
                    yield Static("Save recipe to")
                    yield Input(placeholder="recipe.yaml (enter saves)", id="export-path", compact=True, select_on_focus=False)
                with Horizontal(classes="export-row"):
                    yield Static("Save code to")
                    yield Input(placeholder="optional: train.py", id="export-code-path", compact=True, select_on_focus=False)
            yield Static(Text(NAME_NOTE), id="export-note")
            yield Static("", id="export-error")
            yield Static(Text(f"Validation: v prunes the model one-shot ({self.prune_method}; o changes it) and "
                              "measures dense against pruned.",
                              style="dim"), id="export-validation")
            with Horizontal(id="export-panes"):
                with VerticalScroll(id="export-recipe-box"):
                    yield Static("", id="export-recipe")
                with VerticalScroll(id="export-code-box"):
                    yield Static("", id="export-code")
        yield FitFooter()

    def on_mount(self) -> None:
        if self.project is None:
            self.project = getattr(self.app, "project", None)
        if self.graph is None:
            self.graph = getattr(getattr(self.app, "model_data", None), "graph", None)
        self.query_one("#export-recipe-box").border_title = "recipe (YAML)"
        self.query_one("#export-code-box").border_title = "code sample"
        default = str(Path(self.project.dir) / "recipe.yaml") if self.project is not None else "recipe.yaml"
        if self.readonly:  # nothing is written into a project open read-only
            default = ""
            path_box = self.query_one("#export-path", Input)
            path_box.placeholder = "read-only project: type a path outside it"
        self.query_one("#export-path", Input).value = default
        self.watch(self.app, "jobs_version", self._on_jobs, init=False)
        self._load()

    # ------------------------------------------------------------ content
    def _load(self) -> None:
        self.run_worker(self._prepare, thread=True, exclusive=True, group="export-load",
                        exit_on_error=False, description="Preparing the recipe")

    def _prepare(self) -> None:
        try:
            if self.project is None:
                raise UsageError("open a project first")
            names = self.project.optimization_names()
            graph = self.graph
            if graph is None:
                from sparsify_tui.analysis import analyze

                graph = analyze(self.project.model_path, self.project.input_shapes or None)
            if not names:
                from sparsify_tui.optim.optimization import default_optimization
                from sparsify_tui.actions.optimizer import OptimizerContext

                ctx = OptimizerContext.for_project(self.project, graph)
                opt = ctx.attach(ctx.evaluator.allocate(default_optimization(graph)))
                notice = "no optimization yet: the default one is shown (open the optimizer, F2, to edit it)"
            else:
                name = self.opt_name if self.opt_name in names else names[0]
                opt = Optimization.from_dict(self.project.get_optimization(name))
                notice = ""
                if opt.pruning.enabled and not opt.layers:
                    from sparsify_tui.actions.optimizer import OptimizerContext

                    ctx = OptimizerContext.for_project(self.project, graph, opt)
                    opt = ctx.evaluator.allocate(opt)
        except SparsifyError as exc:
            self.app.call_from_thread(self._error, str(exc))
            return
        self.app.call_from_thread(self._loaded, graph, opt, notice)

    def _loaded(self, graph: "ModelGraph", opt: Optimization, notice: str) -> None:
        self.graph = graph
        self.opt = opt
        self.opt_name = opt.name
        t = Text()
        t.append(f"Export optimization {opt.name!r}", style="bold")
        names = self.project.optimization_names() if self.project is not None else []
        if len(names) > 1:
            t.append(f"  ({names.index(opt.name) + 1 if opt.name in names else '?'} of {len(names)}, n: next)",
                     style="dim")
        if notice:
            t.append("\n" + notice, style="yellow")
        from sparsify_tui.actions.optimizer import loss_measured

        if opt.pruning.enabled and not loss_measured(self.project, opt):
            t.append("\nPlanned without a measured loss profile: sensitivities from weight magnitudes "
                     "(profile loss one-shot, then validate)", style="bold yellow")
        self.query_one("#export-title", Static).update(t)
        self.render_recipe()
        self._show_validation((self.project.get_optimization(opt.name) or {}).get("validation")
                              if self.project is not None else None)

    def render_recipe(self) -> None:
        if self.opt is None:
            return
        from sparsify_tui.optim.recipe import export_recipe

        warnings: list[str] = []
        try:
            from sparsify_tui.actions.optimizer import loss_measured, profile_labels

            labels = profile_labels(self.project, self.opt) if self.project is not None else None
            from sparsify_tui.optim.channel_plan import is_channel_plan

            if is_channel_plan(self.opt):  # a recipe only where SparseML's filter masks express the plan
                from sparsify_tui.actions.channels import channel_recipe

                recipe, why = channel_recipe(self.opt, self.graph, self.name_map, warnings, profiles=labels,
                                             loss_measured=loss_measured(self.project, self.opt))
                self.recipe_text = recipe or (f"# {why}\n# export it from the command line: sparsify-tui export "
                                              f"PROJECT --optimization {self.opt.name} --onnx PRUNED.onnx\n")
            else:
                self.recipe_text = export_recipe(self.opt, self.graph, name_map=self.name_map, warnings=warnings,
                                                 profiles=labels, loss_measured=loss_measured(self.project, self.opt))
            missing = [f"{k} profile {v}" for k, v in (labels or {}).items() if "missing" in v]
            if missing:
                warnings.append("this optimization was planned with a profile that no longer exists ("
                                + "; ".join(missing) + "): open it in the optimizer (F2) to re-plan")
        except SparsifyError as exc:
            self._error(str(exc))
            self.recipe_text = ""
        self.query_one("#export-recipe", Static).update(
            Syntax(self.recipe_text, "yaml", theme="ansi_dark", word_wrap=False, line_numbers=False))
        # the comment header is long: start the view at the recipe itself (scroll up for the header)
        lines = self.recipe_text.splitlines()
        first = next((i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")), 0)
        box = self.query_one("#export-recipe-box")
        self.call_after_refresh(box.scroll_to, y=first, animate=False)
        self.render_code()
        if warnings:
            self.notify("; ".join(warnings[:3]), severity="warning", timeout=8)

    def render_code(self) -> None:
        recipe_path = self.query_one("#export-path", Input).value.strip() or "recipe.yaml"
        try:
            self.code_text = code_sample(self.framework, self.kind, recipe_path=recipe_path,
                                         mapped=bool(self.name_map))
        except SparsifyError as exc:
            self.code_text = f"# {exc}"
        self.query_one("#export-code", Static).update(
            Syntax(self.code_text, "python", theme="ansi_dark", word_wrap=False))
        self.query_one("#export-code-box").border_title = f"code sample: {self.framework}, {self.kind}"

    def _error(self, message: str) -> None:
        err = self.query_one("#export-error", Static)
        err.update(Text(message, style="bold red") if message else "")
        err.display = bool(message)

    # ------------------------------------------------------------ inputs
    @on(Select.Changed, "#export-framework")
    def _framework(self, event: Select.Changed) -> None:
        self.framework = str(event.value)
        self.render_code()

    @on(Select.Changed, "#export-kind")
    def _kind(self, event: Select.Changed) -> None:
        self.kind = str(event.value)
        self.render_code()

    def action_cycle_framework(self) -> None:
        sel = self.query_one("#export-framework", Select)
        sel.value = FRAMEWORKS[(FRAMEWORKS.index(self.framework) + 1) % len(FRAMEWORKS)]

    def action_cycle_kind(self) -> None:
        sel = self.query_one("#export-kind", Select)
        sel.value = CODE_KINDS[(CODE_KINDS.index(self.kind) + 1) % len(CODE_KINDS)]

    @on(Input.Submitted, "#export-namemap")
    def _namemap(self, event: Input.Submitted) -> None:
        event.stop()
        self.load_name_map(event.value)

    def load_name_map(self, text: str) -> bool:
        from sparsify_tui.optim.recipe import load_name_map

        if not text.strip():
            self.name_map = None
            self._error("")
            self.query_one("#export-note", Static).update(Text(NAME_NOTE))
            self.render_recipe()
            return True
        try:
            mapping, warns = load_name_map(text.strip(), self.graph)
        except SparsifyError as exc:
            self._error(str(exc))
            return False
        self._error("")
        self.name_map = mapping
        note = Text(f"Name map {Path(text.strip()).name}: {len(mapping)} names mapped.", style="green")
        for w in warns[:3]:
            note.append("\n" + w, style="yellow")
        self.query_one("#export-note", Static).update(note)
        self.render_recipe()
        return True

    @on(Input.Submitted, "#export-path")
    @on(Input.Submitted, "#export-code-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    @on(Input.Changed, "#export-path")
    def _path_changed(self, event: Input.Changed) -> None:
        if self.opt is not None:
            self.render_code()

    def action_save(self) -> list[Path]:
        """Write the recipe (and the code sample when a code path is typed); inline error otherwise."""
        from sparsify_tui.fsutil import atomic_write_text

        if self.opt is None or not self.recipe_text:
            self._error("nothing to save yet: the recipe could not be built")
            return []
        written: list[Path] = []
        try:
            path = check_save_path(self.query_one("#export-path", Input).value, "recipe")
            code_in = self.query_one("#export-code-path", Input).value
            code_path = check_save_path(code_in, "code sample") if code_in.strip() else None
            if self.readonly:
                for target in (path, code_path):
                    if target is not None and _inside(target, Path(self.project.dir)):
                        raise UsageError(f"{target} is inside the project, which is open read-only: "
                                         "save it somewhere else")
            atomic_write_text(path, self.recipe_text)
            written.append(path)
            if code_path is not None:
                self.render_code()
                atomic_write_text(code_path, self.code_text)
                written.append(code_path)
        except SparsifyError as exc:
            self._error(str(exc))
            return written
        except OSError as exc:
            self._error(f"could not write {exc.filename or 'the file'}: {exc.strerror or exc}")
            return written
        self._error("")
        self.saved = written
        self.notify("saved " + ", ".join(str(p) for p in written), timeout=5)
        return written

    @property
    def readonly(self) -> bool:
        return bool(getattr(self.project, "readonly", False))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "validate" and self.readonly:
            return None  # a validation is stored in the project
        return True

    def action_next_optimization(self) -> None:
        names = self.project.optimization_names() if self.project is not None else []
        if len(names) < 2:
            self.notify("the project has one optimization: copy it in the optimizer (F2, c)", timeout=3)
            return
        i = names.index(self.opt_name) if self.opt_name in names else -1
        self.opt_name = names[(i + 1) % len(names)]
        self._load()

    # ------------------------------------------------------------ validation
    def action_validate(self) -> None:
        if self.opt is None or self.project is None:
            return
        if self.project.get_optimization(self.opt.name) is None:  # the default one shown: store it first
            try:
                self.project.set_optimization(self.opt.to_dict())
            except Exception as exc:  # noqa: BLE001 - read-only project
                self._show_validation(None, error=f"the optimization could not be saved: {exc}")
                return
        self.app.start_validation(self.opt.name, **{"method": self.prune_method, **self.validation_kw})
        self._show_validation(None, running=True)

    def action_cycle_method(self) -> None:
        from sparsify_tui.optim.calibrated import METHODS

        self.prune_method = METHODS[(METHODS.index(self.prune_method) + 1) % len(METHODS)]
        if self._validation_job(active_only=True) is None:
            self._show_validation(None)

    def _validation_job(self, active_only: bool = False) -> Any:
        """The app's newest validation job of the optimization shown."""
        for job in reversed(getattr(self.app, "jobs", [])):
            if job.kind == "validate" and job.settings.get("optimization") == self.opt_name \
                    and (job.active or not active_only):
                return job
        return None

    def action_cancel_validation(self) -> None:
        job = self._validation_job(active_only=True)
        if job is not None:
            job.cancel.set()
            self.notify("cancelling the validation…", timeout=3)
        else:
            self.app.run_action("cancel_jobs")

    def action_focus(self, selector: str) -> None:
        self.query_one(selector).focus()

    def action_back(self) -> None:
        if isinstance(self.focused, (Input, Select)):
            self.query_one("#export-recipe-box").focus()
            return
        self.app.pop_screen()

    def _show_validation(self, v: dict | None, *, running: bool = False, label: str = "",
                         error: str = "") -> None:
        box = self.query_one("#export-validation", Static)
        if error:
            box.update(Text(f"Validation failed: {error}", style="bold red"))
        elif running:
            box.update(Text(f"Validation running in the background… {label}  (x cancels)", style="yellow"))
        elif v:
            box.update(validation_table(v))
        else:
            box.update(Text(f"Validation: v prunes the model one-shot ({self.prune_method}; o changes it) and "
                            "measures dense against pruned (measured vs estimated speedup).", style="dim"))

    def _on_jobs(self) -> None:
        """A job moved on: show the state of this optimization's validation."""
        job = self._validation_job()
        if job is None:
            return
        if job.active:
            label = job.label or ("queued behind another measurement" if job.state == "queued" else "")
            self._show_validation(None, running=True, label=label)
        elif job.state == "done":
            v = job.result or {}
            self._show_validation(v.get("validation", v) if isinstance(v.get("validation"), dict) else v)
        elif job.state in ("failed", "cancelled"):
            self._show_validation(None, error=job.error or job.state)

    def action_area_help(self) -> None:
        from sparsify_tui.tui.screens.glossary import GlossaryScreen

        f = self.focused
        area = "export-recipe"
        if f is not None and f.id in ("export-framework", "export-kind", "export-code-path"):
            area = "export-code"
        self.app.push_screen(GlossaryScreen(area=area))
