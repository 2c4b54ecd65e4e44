"""New profile dialog: the settings of a performance or loss profile, then start it.

Returns the settings dict (``dismiss(settings)``) or None when cancelled; the
caller (the overview) hands them to ``App.start_profile``.
"""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from sparsify_tui.tui.screens.setup import installed_engines, usable_cores

DEFAULT_LEVELS = "0.4,0.6,0.7,0.8,0.85,0.9,0.95,0.975,0.99"


def precision_choices(machine: dict) -> list[str]:
    """The precisions the dialog offers: what any engine runs on this CPU (the registry's precisions), in
    order: fp32, bf16 / fp16 where the CPU has them, int8 (a QDQ model as is)."""
    from sparsify_tui.engines.registry import PRECISIONS, engines

    offered = {p for e in engines() for p in e.precisions(machine)}
    return [p for p in PRECISIONS if p in offered]


def parse_perf_settings(engine: str, batch: str, cores: str, iterations: str, levels: str,
                        max_cores: int, precision: str = "fp32") -> dict[str, Any]:
    """Validate the perf dialog's fields (UsageError naming the field otherwise)."""
    from sparsify_tui.errors import UsageError
    from sparsify_tui.settings import parse_int, parse_levels

    from sparsify_tui.engines.registry import AUTO, get_engine, precision_problem

    precision = (precision or "fp32").strip().lower()
    problem = precision_problem(engine, precision, {"bf16": True, "fp16": True})  # the CPU was asked already
    if problem:
        raise UsageError(problem)
    settings: dict[str, Any] = {
        "engine": engine,
        "batch_size": parse_int("batch size", batch, minimum=1, maximum=4096),
        "iterations": parse_int("iterations", iterations, minimum=1, maximum=100000),
    }
    c = parse_int("cores", cores, minimum=1, maximum=max_cores)
    settings["cores"] = None if c == max_cores else c
    lv = parse_levels("levels", levels.strip() or None, [])
    settings["levels"] = None if levels.strip() in ("", DEFAULT_LEVELS) else lv
    if (engine != AUTO and get_engine(engine).precision_hint) or precision != "fp32":
        settings["precision"] = precision
    return settings


class DialogSelect(Select):
    """A Select whose enter starts the dialog (as its header says); space or the arrows open the menu."""

    BINDINGS = [
        Binding("enter", "screen.start", "Start", show=False),
        Binding("down,space,up", "show_overlay", "Show menu", show=False),
    ]


class ProfileDialog(ModalScreen[dict | None]):
    """Settings of a new profile (kind ``perf`` or ``loss``)."""

    PALETTE_GROUP = "New profile"
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="cancel_profile"),
    ]

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def compose(self) -> ComposeResult:
        machine = self.app.machine
        cores = usable_cores(machine)
        with Vertical(id="dialog"):
            if self.kind == "perf":
                yield Static("[b]New performance profile[/b]  [dim]enter starts, space opens a list, escape cancels[/dim]")
                with Horizontal(classes="field"):
                    yield Label("Engine", classes="field-label")
                    yield DialogSelect([("auto", "auto")] + [(e, e) for e in installed_engines()], value="auto",
                                       allow_blank=False, id="engine")
                    yield Label("Precision", classes="field-label")
                    yield DialogSelect([(p, p) for p in precision_choices(machine)], value="fp32",
                                       allow_blank=False, id="precision")
                with Horizontal(classes="field"):
                    yield Label("Batch size", classes="field-label")
                    yield Input("1", id="batch-size")
                with Horizontal(classes="field"):
                    yield Label("Cores", classes="field-label")
                    yield Input(str(cores), id="cores", classes="short")
                    yield Static(f"of {cores}; ISA {' '.join(machine.get('isa') or []) or '?'}",
                                 classes="field-note")
                with Horizontal(classes="field"):
                    yield Label("Iterations", classes="field-label")
                    yield Input("10", id="iterations")
                with Horizontal(classes="field"):
                    yield Label("Levels", classes="field-label")
                    yield Input(DEFAULT_LEVELS, id="levels")
            elif self.kind == "quant":
                yield Static("[b]New INT8 quantization profile[/b]  [dim]enter starts, escape cancels[/dim]")
                yield Static("[dim]each layer quantized alone (weights per channel, activations calibrated on "
                             "the samples), then the whole model with ONNX Runtime[/dim]")
                with Horizontal(classes="field"):
                    yield Label("Samples", classes="field-label")
                    yield Input("4", id="samples")
            else:
                yield Static("[b]New loss profile[/b]  [dim]enter starts, escape cancels[/dim]")
                with Horizontal(classes="field"):
                    yield Label("Method", classes="field-label")
                    yield DialogSelect([("approx (weight magnitude, no data)", "approx"),
                                        ("one-shot (measured on samples)", "one-shot")],
                                       value="approx", allow_blank=False, id="method")
                with Horizontal(classes="field"):
                    yield Label("Samples", classes="field-label")
                    yield Input("4", id="samples")
            yield Static("", id="dialog-error")
            with Horizontal(id="dialog-buttons"):
                yield Button("Start", variant="primary", id="start")
                yield Button("Cancel", id="cancel")

    def collect(self) -> dict[str, Any]:
        if self.kind == "perf":
            return parse_perf_settings(
                str(self.query_one("#engine", Select).value),
                self.query_one("#batch-size", Input).value,
                self.query_one("#cores", Input).value,
                self.query_one("#iterations", Input).value,
                self.query_one("#levels", Input).value,
                usable_cores(self.app.machine),
                str(self.query_one("#precision", Select).value),
            )
        from sparsify_tui.settings import parse_int

        if self.kind == "quant":
            return {"samples": parse_int("samples", self.query_one("#samples", Input).value,
                                         minimum=1, maximum=10000)}
        method = str(self.query_one("#method", Select).value)
        settings: dict[str, Any] = {"method": method}
        if method != "approx":
            settings["samples"] = parse_int("samples", self.query_one("#samples", Input).value,
                                            minimum=1, maximum=10000)
        return settings

    def action_start(self) -> None:
        from sparsify_tui.errors import SparsifyError

        try:
            settings = self.collect()
        except SparsifyError as exc:
            self.query_one("#dialog-error", Static).update(f"[red]{exc}[/red]")
            return
        self.dismiss(settings)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
