"""New project: model path (completion + validation), name, description, input shapes,
perf profile settings (engine, batch size, cores), loss profile method; Create starts
the profiles in the background."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Header, Input, Label, Select, Static

from sparsify_tui.tui.widgets.footer import FitFooter
from sparsify_tui.tui.widgets.path_input import PathInput

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.project import Project


def installed_engines() -> list[str]:
    try:
        from sparsify_tui.engines.machine import installed_engines as fn

        return list(fn())
    except Exception:  # noqa: BLE001 - fall back to the registry's plain import probe
        from sparsify_tui.engines.registry import installed_engines as probe

        return probe()


def usable_cores(machine: dict) -> int:
    for key in ("usable_cores", "physical_cores", "logical_cores"):
        v = machine.get(key)
        if isinstance(v, int) and v > 0:
            return v
    return os.cpu_count() or 1


def dynamic_inputs(graph: "ModelGraph") -> list[tuple[str, str]]:
    """(input name, prefilled shape text) for each model input with dynamic or assumed dims."""
    out = []
    for t in graph.inputs:
        dynamic = bool(getattr(t, "assumed", None)) or any(not isinstance(d, int) for d in t.shape)
        if dynamic:
            out.append((t.name, ",".join(str(d) for d in t.shape)))
    return out


class SetupScreen(Screen):
    """The new-project flow."""

    PALETTE_GROUP = "New project"
    BINDINGS = [
        Binding("f9", "create", "Create", id="create_project", tooltip="Create the project and start its profiles"),
        Binding("escape", "cancel", "Cancel", id="cancel_setup", tooltip="Back without creating anything"),
    ]

    def __init__(self, model: str = "") -> None:
        super().__init__()
        self._initial_model = model
        self.graph: "ModelGraph | None" = None
        self.model_error: str | None = None
        self._validated_path: str | None = None
        self._name_touched = False
        self._dir_touched = False
        self._filling = False
        self._shape_names: list[str] = []
        self._creating = False

    def compose(self) -> ComposeResult:
        machine = self.app.machine
        engines = installed_engines()
        cores = usable_cores(machine)
        isa = " ".join(machine.get("isa") or []) or "unknown"
        yield Header()
        with VerticalScroll(id="setup-body"):
            yield Static("[b]New project[/b]", classes="section-title")
            with Horizontal(classes="field"):
                yield Label("ONNX model", classes="field-label")
                yield PathInput(self._initial_model, placeholder="path/to/model.onnx  (tab completes)",
                                id="model-path", onnx_only=True)
            yield Static("", id="model-status")
            with Horizontal(classes="field"):
                yield Label("Name", classes="field-label")
                yield Input(placeholder="project name", id="name")
            with Horizontal(classes="field"):
                yield Label("Description", classes="field-label")
                yield Input(placeholder="optional", id="description")
            with Horizontal(classes="field"):
                yield Label("Directory", classes="field-label")
                yield PathInput(placeholder="where to create the project", id="directory")
            yield Static("Input shapes [dim](for dynamic dimensions; prefilled from the model)[/dim]",
                         classes="section-title", id="shapes-title")
            yield Vertical(id="shape-inputs")
            yield Static("Performance profile", classes="section-title")
            with Horizontal(classes="field"):
                yield Label("Engine", classes="field-label")
                yield Select([("auto (DeepSparse if it compiles, else ONNX Runtime)", "auto")]
                             + [(e, e) for e in engines], value="auto", allow_blank=False, id="engine")
            with Horizontal(classes="field"):
                yield Label("Batch size", classes="field-label")
                yield Input("1", type="integer", id="batch-size")
            with Horizontal(classes="field"):
                yield Label("Cores", classes="field-label")
                yield Input(str(cores), type="integer", id="cores")
                yield Static(f"of {cores} usable   ISA: {isa}", id="machine-info", classes="field-note")
            yield Static("Loss profile", classes="section-title")
            with Horizontal(classes="field"):
                yield Label("Method", classes="field-label")
                yield Select([("approx (weight magnitude, no data)", "approx"),
                              ("one-shot (measured on samples)", "one-shot")],
                             value="approx", allow_blank=False, id="loss-method")
            yield Checkbox("Start the profiles when the project is created", True, id="start-profiles")
            yield Static("", id="setup-error")
            with Horizontal(id="setup-buttons"):
                yield Button("Create  [F9]", variant="primary", id="create")
                yield Button("Cancel  [Esc]", id="cancel")
        yield FitFooter()

    def on_mount(self) -> None:
        self.sub_title = "new project"
        self.query_one("#shapes-title").display = False
        self.query_one("#model-path", Input).focus()
        if self._initial_model:
            self._validate_model(self._initial_model)

    # ------------------------------------------------------------------ model validation
    @on(Input.Submitted, "#model-path")
    def _model_submitted(self, event: Input.Submitted) -> None:
        self._validate_model(event.value)
        self.query_one("#name", Input).focus()

    @on(Input.Blurred, "#model-path")
    def _model_blurred(self, event: Input.Blurred) -> None:
        if event.value.strip() and event.value.strip() != self._validated_path:
            self._validate_model(event.value)

    @on(Input.Changed, "#name")
    def _name_changed(self, event: Input.Changed) -> None:
        if not self._filling:
            self._name_touched = True
            if not self._dir_touched:
                self._fill_directory(event.value)

    @on(Input.Changed, "#directory")
    def _dir_changed(self, event: Input.Changed) -> None:
        if not self._filling:
            self._dir_touched = True

    def _fill_directory(self, name: str) -> None:
        from sparsify_tui import paths

        try:
            from sparsify_tui.project import slugify

            slug = slugify(name or "project")
        except Exception:  # noqa: BLE001
            slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in (name or "project")) or "project"
        self._filling = True
        try:
            self.query_one("#directory", Input).value = str(paths.data_dir() / "projects" / slug)
        finally:
            self._filling = False

    def _validate_model(self, value: str) -> None:
        path = value.strip()
        if not path:
            return
        self._validated_path = path
        self.graph = None
        self.model_error = None
        self.query_one("#model-status", Static).update("[dim]analysing…[/dim]")
        self._analyze(path)

    @work(thread=True, exclusive=True, exit_on_error=False, group="setup-analyze")
    def _analyze(self, path: str) -> None:
        from sparsify_tui.errors import SparsifyError

        try:
            p = Path(path).expanduser()
            if p.is_dir():
                raise_msg = f"{p} is a directory: give the path of an ONNX model file"
                self.app.call_from_thread(self._analysis_done, path, None, raise_msg)
                return
            from sparsify_tui.analysis import analyze

            graph = analyze(p)
        except SparsifyError as exc:
            self.app.call_from_thread(self._analysis_done, path, None, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - any failure is a message, not a crash
            self.app.call_from_thread(self._analysis_done, path, None, f"{path}: cannot analyse: {exc}")
            return
        self.app.call_from_thread(self._analysis_done, path, graph, None)

    def _analysis_done(self, path: str, graph: "ModelGraph", error: str | None) -> None:
        if path != self._validated_path:
            return  # a newer path was typed meanwhile
        status = self.query_one("#model-status", Static)
        self.graph = graph
        self.model_error = error
        if error:
            status.update(f"[red]{error}[/red]")
            return
        from sparsify_tui.tui.data import fmt_count

        flops = fmt_count(graph.flops) if graph.flops is not None else f">= {fmt_count(graph.flops_known)}"
        status.update(
            f"[green]ok[/green]  {len(graph.layers)} layers ({len(graph.prunable_layers)} prunable), "
            f"{fmt_count(graph.params)} params, {flops} FLOPs, opset {graph.opset}"
        )
        if not self._name_touched:
            self._filling = True
            try:
                self.query_one("#name", Input).value = Path(path).stem
            finally:
                self._filling = False
            if not self._dir_touched:
                self._fill_directory(Path(path).stem)
        self._fill_shapes(graph)

    def _fill_shapes(self, graph: "ModelGraph") -> None:
        box = self.query_one("#shape-inputs", Vertical)
        box.remove_children()
        dyn = dynamic_inputs(graph)
        self._shape_names = [name for name, _ in dyn]
        self.query_one("#shapes-title").display = bool(dyn)
        rows = []
        for i, (name, text) in enumerate(dyn):
            rows.append(Horizontal(Label(name, classes="field-label"),
                                   Input(text, id=f"shape-{i}", placeholder="e.g. 1,3,224,224"),
                                   classes="field"))
        if rows:
            box.mount_all(rows)

    # ------------------------------------------------------------------ create
    def collect(self) -> dict[str, Any]:
        """Read and validate the form; raises SparsifyError with the first problem."""
        from sparsify_tui.errors import UsageError

        model = self.query_one("#model-path", Input).value.strip()
        if not model:
            raise UsageError("give the path of an ONNX model")
        if self.model_error and self._validated_path == model:
            raise UsageError(self.model_error)
        name = self.query_one("#name", Input).value.strip() or Path(model).stem
        description = self.query_one("#description", Input).value
        directory = self.query_one("#directory", Input).value.strip()
        if not directory:
            self._fill_directory(name)
            directory = self.query_one("#directory", Input).value
        shape_args = []
        for i, input_name in enumerate(self._shape_names):
            text = self.query_one(f"#shape-{i}", Input).value.strip()
            shape_args.append(f"{input_name}={text}")
        from sparsify_tui.analysis import parse_input_shapes

        shapes = parse_input_shapes(shape_args) if shape_args else {}
        from sparsify_tui.settings import parse_int

        batch = parse_int("batch size", self.query_one("#batch-size", Input).value, minimum=1, maximum=4096)
        max_c = usable_cores(self.app.machine)
        cores = parse_int("cores", self.query_one("#cores", Input).value, minimum=1, maximum=max_c)
        engine = self.query_one("#engine", Select).value
        method = self.query_one("#loss-method", Select).value
        return {
            "model": model, "name": name, "description": description, "dir": directory,
            "input_shapes": shapes,
            "perf": {"engine": engine, "batch_size": batch, "cores": None if cores == max_c else cores},
            "loss": {"method": method},
            "start": self.query_one("#start-profiles", Checkbox).value,
        }

    def action_create(self) -> None:
        from sparsify_tui.errors import SparsifyError

        if self._creating:
            return
        err = self.query_one("#setup-error", Static)
        try:
            form = self.collect()
        except SparsifyError as exc:
            err.update(f"[red]{exc}[/red]")
            self.notify(str(exc), severity="error", timeout=6)
            return
        err.update("[dim]creating the project…[/dim]")
        self._creating = True
        self._create(form)

    @work(thread=True, exclusive=True, exit_on_error=False, group="setup-create")
    def _create(self, form: dict[str, Any]) -> None:
        from sparsify_tui.errors import SparsifyError

        try:
            from sparsify_tui.project import Project

            project = Project.create(form["model"], dir=form["dir"], name=form["name"],
                                     description=form["description"], input_shapes=form["input_shapes"] or None)
        except SparsifyError as exc:
            self.app.call_from_thread(self._create_failed, str(exc))
            return
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self._create_failed, f"the project could not be created: {exc}")
            return
        self.app.call_from_thread(self._created, project, form)

    def _create_failed(self, message: str) -> None:
        self._creating = False
        self.query_one("#setup-error", Static).update(f"[red]{message}[/red]")
        self.notify(message, severity="error", timeout=8)

    def _created(self, project: "Project", form: dict[str, Any]) -> None:
        self._creating = False
        app = self.app
        app.open_project(project)
        if form["start"]:
            app.start_profile("perf", form["perf"])
            app.start_profile("loss", form["loss"])
        app.notify(f"project {project.name!r} created in {project.dir}", timeout=5)

    @on(Button.Pressed, "#create")
    def _create_pressed(self) -> None:
        self.action_create()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss()
