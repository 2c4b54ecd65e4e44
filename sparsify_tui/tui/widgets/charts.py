"""Charts drawn with plotext inside the app (textual-plotext ``PlotextPlot``).

The drawing is done by plain builder functions (``draw_layer_bars``,
``draw_sensitivity_curve``) that take a plotext figure, so they can be tested
without a running app. The widgets hold their data and redraw on resize; the
colours follow the app's theme (textual-plotext's "auto" theme).
"""

from __future__ import annotations

from typing import Any, Sequence

from textual_plotext import PlotextPlot

CHART_METRICS = ("ms", "flops", "perf", "loss")
CHART_METRIC_LABELS = {
    "ms": "Baseline MS",
    "flops": "FLOPs",
    "perf": "Performance Sensitivity (ms saved)",
    "loss": "Loss Sensitivity",
}


def no_data(plt, message: str, xmax: float = 1) -> int:
    """An empty chart that says why (``message`` in its middle); returns 0, the number of series drawn."""
    plt.text(message, x=xmax / 2, y=0.5, alignment="center")
    plt.xlim(0, xmax)
    plt.ylim(0, 1)
    return 0


def si_label(x: float) -> str:
    """An axis label with an SI prefix: 75563008 -> '75.6M', 0.0005 -> '500µ', 12 -> '12'."""
    ax = abs(x)
    if ax == 0:
        return "0"
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0), ("m", 1e-3), ("µ", 1e-6)):
        if ax >= div:
            v = x / div
            return f"{v:.3g}{unit}"
    return f"{x:.1e}"


def si_ticks(lo: float, hi: float, n: int = 4) -> tuple[list[float], list[str]]:
    """``n + 1`` evenly spaced y ticks from ``lo`` to ``hi`` and their SI labels."""
    if not hi > lo:
        hi = lo + 1.0
    ticks = [lo + (hi - lo) * i / n for i in range(n + 1)]
    return ticks, [si_label(t) for t in ticks]


def draw_layer_bars(plt: Any, depths: Sequence[int], values: Sequence[float | None], *, title: str,
                    ylabel: str = "", highlight: int | None = None, width: int | None = None) -> int:
    """Bars of one value per layer (x = Layer Depth). Returns how many bars were drawn.

    Missing values are skipped; when there are more layers than columns the
    bars are drawn thin (plotext merges neighbours) rather than dropped.
    """
    plt.clear_figure()
    xs = [d for d, v in zip(depths, values) if v is not None]
    ys = [float(v) for v in values if v is not None]
    if not xs:
        plt.title(title)
        return no_data(plt, "no data")
    max_bars = max(8, (width or 80) - 12)  # about one column per bar beside the y axis
    group = 1
    if len(xs) > max_bars:
        # more layers than columns: one bar per group of neighbours, its height the group's maximum
        group = -(-len(xs) // max_bars)
        gx, gy = [], []
        for i in range(0, len(xs), group):
            gx.append(xs[i])
            gy.append(max(ys[i:i + group]))
        if highlight is not None and highlight in xs:
            highlight = xs[(xs.index(highlight) // group) * group]
        xs, ys = gx, gy
        title = f"{title} (max of {group} layers per bar)"
    plt.title(title)
    bar_width = 0.8 if group == 1 else 0.8 * group
    plt.bar(xs, ys, width=bar_width)
    lo, hi = min(0.0, min(ys)), max(0.0, max(ys))
    plt.yticks(*si_ticks(lo, hi))  # 75.6M, not 75563008.0
    if highlight is not None and highlight in xs:
        i = xs.index(highlight)
        plt.bar([xs[i]], [ys[i]], width=bar_width, color="red")
    plt.xlabel("Layer Depth")
    if ylabel:
        plt.ylabel(ylabel)
    return len(xs)


def draw_sensitivity_curve(plt: Any, name: str, perf: Sequence[tuple[float, float]],
                           loss: Sequence[tuple[float, float]], *, mark: float | None = None) -> int:
    """The selected layer's sensitivity across sparsity levels: perf (ms saved, left axis)
    and loss (right axis). Returns the number of curves drawn."""
    plt.clear_figure()
    plt.title(f"sensitivity: {name}" if name else "sensitivity")
    n = 0
    if perf:
        plt.plot([100 * x for x, _ in perf], [y for _, y in perf], label="perf (ms saved)", marker="braille")
        n += 1
    if loss:
        plt.plot([100 * x for x, _ in loss], [y for _, y in loss], label="loss", yside="right",
                 marker="braille")
        n += 1
    if not n:
        return no_data(plt, "no profile for this layer", xmax=100)
    if mark is not None:
        plt.vline(100 * mark)
    plt.xlabel("sparsity %")
    plt.xlim(0, 100)
    return n


class LayerBarsChart(PlotextPlot):
    """Per-layer bars of the chosen metric."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._args: tuple = ((), (), "", "", None)
        self.bars = 0

    def set_data(self, depths: Sequence[int], values: Sequence[float | None], title: str,
                 ylabel: str = "", highlight: int | None = None) -> None:
        self._args = (list(depths), list(values), title, ylabel, highlight)
        self.refresh()

    def render(self):
        depths, values, title, ylabel, highlight = self._args
        self.bars = draw_layer_bars(self.plt, depths, values, title=title, ylabel=ylabel,
                                    highlight=highlight, width=self.size.width)
        return super().render()


class SensitivityChart(PlotextPlot):
    """The selected layer's perf and loss sensitivity curves."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._args: tuple = ("", [], [], None)
        self.curves = 0

    def set_data(self, name: str, perf: Sequence[tuple[float, float]], loss: Sequence[tuple[float, float]],
                 mark: float | None = None) -> None:
        self._args = (name, list(perf), list(loss), mark)
        self.refresh()

    def render(self):
        name, perf, loss, mark = self._args
        self.curves = draw_sensitivity_curve(self.plt, name, perf, loss, mark=mark)
        return super().render()


def draw_deploy_scatter(plt: Any, rows: Sequence[dict], *, best_id: str | None = None,
                        budget: float | None = None) -> int:
    """Deployment search: speedup (y) against output change (x), one point per row, the Pareto front
    as a line, the best row within the budget in red, the budget as a vertical line. Returns the points drawn."""
    plt.clear_figure()
    plt.title("speedup vs output change (line: Pareto front, red x: best)")
    pts = [r for r in rows if r.get("speedup") is not None and r.get("output_change") is not None]
    if not pts:
        return no_data(plt, "no measured rows yet")
    plt.scatter([r["output_change"] for r in pts], [r["speedup"] for r in pts], marker="dot")
    front = sorted((r for r in pts if r.get("pareto")), key=lambda r: r["output_change"])
    if front:
        plt.plot([r["output_change"] for r in front], [r["speedup"] for r in front], marker="braille")
    best = next((r for r in pts if r.get("id") == best_id), None)
    if best is not None:
        plt.scatter([best["output_change"]], [best["speedup"]], marker="x", color="red")
    if budget is not None and budget <= max(r["output_change"] for r in pts):
        plt.vline(budget)
    plt.xlabel("output change")
    plt.ylabel("x ORT fp32")
    return len(pts)


class DeployChart(PlotextPlot):
    """The deployment search's scatter (see :func:`draw_deploy_scatter`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._args: tuple = ([], None, None)
        self.points = 0

    def set_data(self, rows: Sequence[dict], best_id: str | None, budget: float | None) -> None:
        self._args = (list(rows), best_id, budget)
        self.refresh()

    def render(self):
        rows, best_id, budget = self._args
        self.points = draw_deploy_scatter(self.plt, rows, best_id=best_id, budget=budget)
        return super().render()
