"""The Training Summary: the recipe's modifiers drawn as rows over epochs.

``training_rows(opt)`` lists (label, start, end, kind) rows — the Epoch Range,
the stabilization, pruning and fine-tuning ranges, every learning-rate
modifier and quantization — and ``render_timeline(rows, end, width)`` draws
them as bars on a shared epoch axis (a Rich Text).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget

STYLES = {
    "range": "bold white on grey30",
    "stabilization": "black on yellow",
    "pruning": "black on red",
    "finetune": "black on green",
    "lr": "black on cyan",
    "quant": "black on magenta",
}


def training_rows(opt: Any) -> list[tuple[str, float, float, str]]:
    """(label, start epoch, end epoch, kind) for every row of the Training Summary."""
    s, e = float(opt.start_epoch), float(opt.end_epoch)
    rows: list[tuple[str, float, float, str]] = [("Epoch Range", s, e, "range")]
    p = opt.pruning
    if p.enabled:
        if p.start_epoch > s:
            rows.append(("Stabilization", s, p.start_epoch, "stabilization"))
        pruned = len(opt.plan.sparsities())
        rows.append((f"Pruning ({pruned} layers, {p.interpolation}, every {p.update_frequency:g})",
                     p.start_epoch, p.end_epoch, "pruning"))
        if p.end_epoch < e:
            rows.append(("Fine-tuning", p.end_epoch, e, "finetune"))
    for i, m in enumerate(opt.lr_modifiers):
        end = e if m.end_epoch < 0 else m.end_epoch
        if m.kind == "set":
            label = f"LR {i + 1}: set {m.init_lr:g}"
        else:
            extra = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                              for k, v in m.args.items())
            label = f"LR {i + 1}: {m.kind} from {m.init_lr:g}" + (f" ({extra})" if extra else "")
        rows.append((label, m.start_epoch, end, "lr"))
    q = opt.quantization
    if q.enabled:
        rows.append(("Quantization (INT8)", q.start_epoch, e, "quant"))
    return rows


def render_timeline(rows: list[tuple[str, float, float, str]], end: float, width: int) -> Text:
    """Bars on one epoch axis; labels in a left column. ``width`` is the total width in cells."""
    label_w = min(max((len(r[0]) for r in rows), default=10), max(12, width // 3))
    bar_w = max(10, width - label_w - 4)
    total = max(float(end), 1e-9)
    out = Text()

    def col(x: float) -> int:
        return max(0, min(bar_w, int(round(x / total * bar_w))))

    # axis
    axis = [" "] * (bar_w + 1)
    ticks = [0.0, total / 4, total / 2, 3 * total / 4, total]
    labels_line = [" "] * (bar_w + 1)
    for t in ticks:
        c = col(t)
        axis[min(c, bar_w)] = "|"
        lab = f"{t:.3g}"
        start = max(0, min(c - len(lab) // 2, bar_w + 1 - len(lab)))
        for j, ch in enumerate(lab):
            labels_line[start + j] = ch
    out.append(" " * (label_w + 2) + "".join(labels_line).rstrip() + "\n", style="dim")
    out.append(" " * (label_w + 2) + "".join(axis) + "\n", style="dim")
    for label, a, b, kind in rows:
        lab = label if len(label) <= label_w else label[: label_w - 1] + "…"
        out.append(lab.ljust(label_w) + "  ")
        c0, c1 = col(a), col(b)
        if c1 <= c0:
            c1 = min(c0 + 1, bar_w)
        out.append(" " * c0)
        span = f"{a:g}-{b:g}"
        body = span.center(c1 - c0) if len(span) <= c1 - c0 else " " * (c1 - c0)
        out.append(body, style=STYLES.get(kind, "reverse"))
        out.append("\n")
    out.append("epochs", style="dim")
    return out


class TrainingSummary(Widget):
    """Rows of modifiers over epochs, redrawn at the widget's width."""

    DEFAULT_CSS = "TrainingSummary { height: auto; } TrainingSummary:focus { background-tint: $foreground 5%; }"
    can_focus = True  # so the tab keeps the focus (a TabbedContent follows the focused widget)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows: list[tuple[str, float, float, str]] = []
        self.end = 1.0

    def set_opt(self, opt: Any) -> None:
        self.rows = training_rows(opt)
        self.end = float(opt.end_epoch)
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:  # noqa: ANN001
        return len(self.rows) + 3

    def render(self) -> Text:
        if not self.rows:
            return Text("no optimization")
        return render_timeline(self.rows, self.end, max(self.size.width, 40))
