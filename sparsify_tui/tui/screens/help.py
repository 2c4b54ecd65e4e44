"""Help: the keys of the current screen and of the app, and short definitions."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

DEFINITIONS: list[tuple[str, str]] = [
    ("Layer", "one ONNX node, at any depth (If/Loop/Scan bodies included); its id is its first output name."),
    ("Layer Depth", "the layer's position in execution order, counted from 0."),
    ("Prunable layer", "a Conv, ConvTranspose, Gemm or MatMul (or quantized form) whose weight is constant."),
    ("Params", "elements of the constant tensors the layers use as weights, biases or normalization "
               "parameters, each tensor counted once."),
    ("FLOPs", "floating-point operations for one inference at the batch size; a multiply-add counts 2. "
              "'?' means unknown, never 0."),
    ("Baseline MS", "time of the dense model (or layer) for one batch, in milliseconds (median of repeats)."),
    ("Items per Second", "batch size x 1000 / Baseline MS: inputs processed per second."),
    ("Share", "a layer's time as a percentage of the sum over all layers."),
    ("Performance Sensitivity", "a layer's baseline time minus its time at sparsity s: the ms that pruning "
                                "it to s saves. Higher means more speedup. Linear between measured levels."),
    ("Loss Sensitivity", "how much the model's output moves when that layer alone is pruned to s. "
                         "Approximated profiles use a weight-magnitude proxy (no data); one-shot profiles "
                         "measure the change of the outputs on samples."),
    ("Sparsity", "fraction of a weight tensor's elements that are exactly zero."),
    ("Summary Type", "baseline values, or the values at one of the profile's sparsity levels."),
    ("Value Display", "measured values, percent of the total over all layers, or their natural log."),
    ("Approximated", "estimated from FLOPs or weights, not measured by an engine; labelled wherever shown."),
    ("Stale", "the model file changed since the profile was measured: the profile is kept but may be wrong."),
    ("Instruction sets", "the CPU's vector instructions the engines can use (AVX2, AVX-512, VNNI, AMX, NEON)."),
]


def _key_name(binding: Binding, app: Any) -> str:
    if binding.key_display:
        return binding.key_display
    key = binding.key.split(",")[0]
    try:
        return app.get_key_display(binding)
    except Exception:  # noqa: BLE001
        return {"question_mark": "?", "slash": "/"}.get(key, key)


def keys_table(screen: Any, app: Any) -> Table:
    """The bindings of ``screen`` and of the App, with their descriptions."""
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("Key", style="bold cyan", no_wrap=True)
    table.add_column("Action")
    table.add_column("", style="dim")
    seen: set[tuple[str, str]] = set()
    groups = [(getattr(screen, "PALETTE_GROUP", "") or "This screen", getattr(screen, "BINDINGS", [])),
              ("Everywhere", getattr(app, "BINDINGS", []))]
    for group, bindings in groups:
        # one row per action: keys bound to the same action are listed together
        rows: dict[tuple[str, str], list] = {}
        for b in bindings:
            if isinstance(b, tuple) or not b.description:
                continue
            k = (b.action, b.description)
            if (b.key, b.description) in seen:
                continue
            seen.add((b.key, b.description))
            rows.setdefault(k, []).append(b)
        if rows:
            table.add_row(Text(group, style="underline"), "", "")
        for (_action, description), bs in rows.items():
            keys = " / ".join(_key_name(b, app) for b in bs)
            tooltip = next((b.tooltip for b in bs if b.tooltip), "")
            table.add_row(keys, description, tooltip)
    table.add_row(Text("Everywhere", style="underline") if not seen else "", "", "")
    table.add_row("ctrl+p", "Command palette", "every action, searchable")
    table.add_row("ctrl+q", "Quit", "")
    table.add_row("tab", "Next field / panel", "")
    return table


def term_table(rows, *, term_style: str = "bold", padding: int = 2, width: int | None = None,
               expand: bool = False) -> Table:
    """Terms beside their definitions: two columns, no header, the terms on one line (``width``
    fixes their column; ``expand`` fills the width, the definitions taking what is left)."""
    table = Table(box=None, padding=(0, padding), show_header=False, expand=expand)
    table.add_column(style=term_style, no_wrap=True, min_width=width, max_width=width)
    table.add_column(ratio=1 if expand else None)
    for term, text in rows:
        table.add_row(term, text)
    return table


def definitions_table() -> Table:
    return term_table(DEFINITIONS)


class HelpScreen(ModalScreen[None]):
    """Keys of the screen underneath plus definitions of the words used on screen."""

    PALETTE_GROUP = "Help"
    BINDINGS = [
        Binding("escape", "dismiss", "Close", id="close_help"),
        Binding("f1", "dismiss", "Close", show=False),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, under: Any = None) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static("[b]Keys[/b]", classes="section-title")
            yield Static(keys_table(self.under, self.app), id="help-keys")
            yield Static("[b]Definitions[/b]", classes="section-title")
            yield Static(definitions_table(), id="help-definitions")
            yield Static("[dim]escape / F1 / ? closes this help[/dim]")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def action_dismiss(self, result: Any = None) -> None:  # type: ignore[override]
        self.dismiss(None)
