"""The learning-rate curve of an optimization: a pure sampling function and its plotext chart."""

from __future__ import annotations

from typing import Any, Sequence

from textual_plotext import PlotextPlot

from sparsify_tui.actions.optimizer_settings import lr_to_text
from sparsify_tui.tui.widgets.charts import no_data


def lr_curve(opt: Any, points: int = 200) -> tuple[list[float], list[float]]:
    """(epochs, learning rates) over the optimization's Epoch Range.

    At each epoch the modifier that started last among the active ones wins
    (a later modifier overrides an earlier one, as in a SparseML recipe); after
    a modifier's end the rate it reached is kept until another one starts.
    """
    start, end = float(opt.start_epoch), float(opt.end_epoch)
    mods = sorted(enumerate(opt.lr_modifiers), key=lambda im: (im[1].start_epoch, im[0]))
    if end <= start or not mods:
        return [], []
    xs: list[float] = []
    ys: list[float] = []
    held: float | None = None
    n = max(2, int(points))
    for k in range(n):
        e = start + (end - start) * k / (n - 1)
        value = None
        for _i, m in mods:
            if m.start_epoch > e:
                continue
            v = m.lr_at(e)
            if v is None and m.end_epoch >= 0 and e >= m.end_epoch and m.kind != "set":
                v = m.lr_at(max(m.start_epoch, m.end_epoch - 1e-9))  # the rate it ended with
            if v is not None:
                value = v
        if value is None:
            value = held
        if value is not None:
            held = value
            xs.append(e)
            ys.append(value)
    return xs, ys


def draw_lr_curve(plt: Any, xs: Sequence[float], ys: Sequence[float], *, title: str = "learning rate",
                  marks: Sequence[float] = ()) -> int:
    """Draw the curve on a plotext figure (log y when it spans more than a decade); returns points drawn."""
    plt.clear_figure()
    plt.title(title)
    if not xs:
        return no_data(plt, "no learning-rate modifier")
    plt.plot(list(xs), list(ys), marker="braille")
    for m in marks:
        plt.vline(m)
    plt.xlabel("epoch")
    positive = [y for y in ys if y > 0]
    if positive and max(positive) / min(positive) > 10:
        plt.yscale("log")
    return len(xs)


class LRChart(PlotextPlot):
    """The optimization's learning rate over epochs (pruning range marked)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._args: tuple = ([], [], ())
        self._shown: tuple = ()
        self.points = 0

    def show(self, opt: Any) -> None:
        """``set_opt`` when what the curve shows changed (the modifiers, the epochs, the pruning window)."""
        p = opt.pruning
        shown = (tuple(lr_to_text(m) for m in opt.lr_modifiers), opt.start_epoch, opt.end_epoch, p.enabled,
                 p.start_epoch, p.end_epoch)
        if shown != self._shown:
            self._shown = shown
            self.set_opt(opt)

    def set_opt(self, opt: Any) -> None:
        xs, ys = lr_curve(opt)
        marks = ()
        if opt.pruning.enabled:
            marks = (opt.pruning.start_epoch, opt.pruning.end_epoch)
        self._args = (xs, ys, marks)
        self.refresh()

    def render(self):
        xs, ys, marks = self._args
        self.points = draw_lr_curve(self.plt, xs, ys, marks=marks)
        return super().render()
