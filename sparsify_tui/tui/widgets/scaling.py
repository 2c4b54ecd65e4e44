"""The scaling view of a profile sweep: Items per Second against cores or batch size, one line per server.

A *sweep* (``sparsify-tui sweep PROJECT_DIR``, :mod:`sparsify_tui.cluster.sweep`)
stores one perf profile per server x batch size x cores x engine. This view
reads them through :mod:`sparsify_tui.actions.sweeps` (pure, no Ray) and shows

* a plotext chart: x is the core count (for one chosen batch size) or the
  batch size (for one chosen core count), y the measured Items per Second,
  one line per server (``server · engine`` when several engines are shown);
* beside it (below it on a narrow terminal) the numbers of the chart: server,
  engine, batch size, cores, Items per Second and the median ms of one batch
  (the profile's Baseline MS).

The slicing and drawing are plain functions (:func:`slice_series`,
:func:`draw_scaling`) so they can be tested without an app; :class:`ScalingView`
holds the state (x axis, fixed value, engine) and is driven by the compare
screen's keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from sparsify_tui.tui.data import fmt_ms
from sparsify_tui.tui.widgets.charts import no_data

if TYPE_CHECKING:
    from sparsify_tui.project import Project

AXES = ("cores", "batch")
AXIS_LABELS = {"cores": "cores", "batch": "batch size"}
# plotext's own colour order, and the Rich colours that match them (the table's server column is the legend)
SERIES_COLORS = ("blue+", "green+", "red+", "cyan+", "magenta+", "yellow", "orange", "gray+")
RICH_COLORS = {"blue+": "bright_blue", "green+": "bright_green", "red+": "bright_red", "cyan+": "bright_cyan",
               "magenta+": "bright_magenta", "yellow": "yellow", "orange": "dark_orange", "gray+": "grey70"}
NO_SWEEP_MESSAGE = ("No sweep profiles yet: run `sparsify-tui sweep PROJECT_DIR` (add `--address HEAD:6379` "
                    "for a Ray cluster) to measure this model on every server, batch size and core count.")

Point = tuple[int, int, float]  # (cores, batch_size, items_per_second), as scaling_series returns them


def _other(axis: str) -> str:
    return "batch" if axis == "cores" else "cores"


def _index(axis: str) -> int:
    return 0 if axis == "cores" else 1


def axis_values(series: dict[str, Sequence[Point]], axis: str) -> list[int]:
    """The distinct values of ``axis`` ("cores" or "batch") over every series, sorted."""
    i = _index(axis)
    return sorted({int(p[i]) for pts in series.values() for p in pts})


def slice_series(series: dict[str, Sequence[Point]], axis: str, fixed: int | None) -> dict[str, list[tuple[int, float]]]:
    """``{series: [(x, items_per_second), ...]}`` with x on ``axis`` and the other dimension equal to ``fixed``.

    Series without a point at ``fixed`` are left out; points are sorted by x.
    """
    xi, fi = _index(axis), _index(_other(axis))
    out: dict[str, list[tuple[int, float]]] = {}
    for name, pts in series.items():
        sel = sorted((int(p[xi]), float(p[2])) for p in pts if fixed is not None and int(p[fi]) == int(fixed))
        if sel:
            out[name] = sel
    return out


def series_colors(names: Sequence[str]) -> dict[str, str]:
    """A plotext colour per series name, stable for a given list of names."""
    return {n: SERIES_COLORS[i % len(SERIES_COLORS)] for i, n in enumerate(names)}


def _positions(xs: list[int]) -> tuple[list[float], bool]:
    """Where each x value goes: its value, or log2 of it when the values span a factor of 8 or more."""
    if len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) >= 8:
        return [math.log2(x) for x in xs], True
    return [float(x) for x in xs], False


def draw_scaling(plt: Any, lines: dict[str, list[tuple[int, float]]], axis: str, fixed: int | None,
                 colors: dict[str, str] | None = None, height: int | None = None) -> int:
    """Items per Second against ``axis`` for one value of the other dimension; returns the lines drawn.

    ``height`` (rows of the whole chart) leaves room at the top for the legend, one row per line.
    """
    plt.clear_figure()
    other = AXIS_LABELS[_other(axis)]
    plt.title(f"Items per Second vs {AXIS_LABELS[axis]} ({other} {fixed if fixed is not None else '-'})")
    if not lines:
        return no_data(plt, "no sweep profile here")
    colors = colors or series_colors(list(lines))
    xs_all = sorted({x for pts in lines.values() for x, _ in pts})
    pos, log = _positions(xs_all)
    where = dict(zip(xs_all, pos))
    ymax = 0.0
    for name, pts in lines.items():
        px = [where[x] for x, _ in pts]
        py = [y for _, y in pts]
        ymax = max(ymax, max(py))
        color = colors.get(name, "default")
        if len(pts) > 1:
            # one dot per cell, not braille: the points (●) stay on their ticks in every font
            plt.plot(px, py, label=name, marker="dot", color=color)
            plt.scatter(px, py, marker="●", color=color)
        else:
            plt.scatter(px, py, marker="●", color=color, label=name)
    plt.xticks(pos, [str(x) for x in xs_all])
    if len(pos) == 1:
        plt.xlim(pos[0] - 1, pos[0] + 1)
    else:
        pad = (pos[-1] - pos[0]) * 0.04
        plt.xlim(pos[0] - pad, pos[-1] + pad)
    plot_rows = max(4, (height or 20) - 6)  # minus title, frame, x ticks and x label
    top = ymax * min(1.5, plot_rows / max(1.0, plot_rows - len(lines) - 1.0)) if ymax > 0 else 1.0
    plt.ylim(0, max(top, ymax * 1.1))
    plt.xlabel(AXIS_LABELS[axis] + (" (log scale)" if log else ""))
    plt.ylabel("items/s")
    return len(lines)


class ScalingChart(PlotextPlot):
    """The scaling chart; ``lines`` holds exactly what was drawn (``{series: [(x, items/s), ...]}``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: dict[str, list[tuple[int, float]]] = {}
        self.axis = "cores"
        self.fixed: int | None = None
        self.line_colors: dict[str, str] = {}
        self.drawn = 0

    def set_data(self, lines: dict[str, list[tuple[int, float]]], axis: str, fixed: int | None,
                 colors: dict[str, str]) -> None:
        self.lines, self.axis, self.fixed, self.line_colors = dict(lines), axis, fixed, dict(colors)
        self.refresh()

    def render(self):
        self.drawn = draw_scaling(self.plt, self.lines, self.axis, self.fixed, self.line_colors,
                                  height=self.size.height)
        return super().render()


class _ReadOnce:
    """A project seen by :mod:`sparsify_tui.actions.sweeps` whose profile files are read once per load."""

    def __init__(self, project: "Project") -> None:
        self._project = project
        self.profiles = list(getattr(project, "profiles", []) or [])
        self._docs: dict[str, Any] = {}

    def is_stale(self, entry: Any) -> bool:
        return bool(self._project.is_stale(entry))

    def load_profile(self, entry: Any) -> dict:
        key = getattr(entry, "id", entry)
        if key not in self._docs:
            try:
                self._docs[key] = self._project.load_profile(entry)
            except Exception as exc:  # noqa: BLE001 - kept and raised again: the row shows the problem
                self._docs[key] = exc
        doc = self._docs[key]
        if isinstance(doc, Exception):
            raise doc
        return doc


class ScalingView(Vertical):
    """Chart + table of a project's sweep profiles.

    :meth:`load` reads them; :meth:`toggle_axis`, :meth:`step_fixed` and
    :meth:`cycle_engine` are the compare screen's keys ``c``, ``[`` / ``]`` and ``e``.
    """

    DEFAULT_CSS = """
    ScalingView { height: 1fr; }
    ScalingView #scaling-status { height: auto; max-height: 3; padding: 0 1; }
    ScalingView #scaling-main { height: 1fr; }
    ScalingView #scaling-chart { width: 1fr; height: 1fr; min-height: 8; }
    ScalingView #scaling-side { width: 64; height: 1fr; }
    ScalingView #scaling-table { height: auto; max-height: 1fr; }
    ScalingView #scaling-servers { height: auto; padding: 1 1 0 1; }
    ScalingView.-narrow #scaling-main { layout: vertical; }
    ScalingView.-narrow #scaling-side { width: 1fr; height: auto; }
    ScalingView.-narrow #scaling-table { max-height: 6; }
    ScalingView.-narrow #scaling-servers { display: none; }
    """

    NARROW_BELOW = 110  # columns: under this the table goes below the chart

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project: "Project | None" = None
        self.rows: list[dict] = []          # sweep_rows of the project (fresh profiles, files read)
        self.engines: list[str] = []        # engines with at least one readable profile
        self.engine: str | None = None      # None: every engine
        self.series: dict[str, list[Point]] = {}
        self.axis = "cores"
        self.fixed: int | None = None
        self.lines: dict[str, list[tuple[int, float]]] = {}
        self.table_rows: list[dict] = []
        self.problems: list[dict] = []
        self.stale = 0
        self.loaded_key: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="scaling-status")
        with Horizontal(id="scaling-main"):
            yield ScalingChart(id="scaling-chart")
            with Vertical(id="scaling-side"):
                yield DataTable(id="scaling-table", cursor_type="none", zebra_stripes=True)
                yield Static("", id="scaling-servers")

    def on_mount(self) -> None:
        t = self.query_one("#scaling-table", DataTable)
        for key, label, w in (("server", "Server", 10), ("engine", "Engine", 11), ("batch", "Batch", 5),
                              ("cores", "Cores", 5), ("ips", "Items/s", 9), ("ms", "Median ms", 9)):
            t.add_column(label, key=key, width=w)

    def on_resize(self) -> None:
        self.set_class(self.size.width < self.NARROW_BELOW, "-narrow")

    # ------------------------------------------------------------ data
    @property
    def has_sweep(self) -> bool:
        return bool(self.series)

    def load(self, project: "Project", *, force: bool = False) -> None:
        """Read the project's sweep profiles (again only when its profile list changed, or ``force``)."""
        from sparsify_tui.actions.sweeps import sweep_rows

        key = (id(project), tuple((e.id, e.file) for e in getattr(project, "profiles", []) or []))
        if not force and key == self.loaded_key:
            return
        self.loaded_key = key
        self.project = _ReadOnce(project) if project is not None else None
        rows = sweep_rows(self.project, include_stale=True) if self.project is not None else []
        self.stale = sum(1 for r in rows if r["stale"])
        self.rows = [r for r in rows if not r["stale"]]
        self.problems = [r for r in self.rows if r["problem"]]
        good = [r for r in self.rows if self._usable(r)]
        self.engines = sorted({str(r["engine"]) for r in good})
        if self.engine not in self.engines:
            self.engine = None
        self._load_series()
        # defaults: cores on x when there are several core counts, else batch size
        if len(axis_values(self.series, "cores")) < 2 <= len(axis_values(self.series, "batch")):
            self.axis = "batch"
        self._fix_fixed()
        self.update_view()

    @staticmethod
    def _usable(r: dict) -> bool:
        return (r["problem"] is None and isinstance(r["items_per_second"], (int, float))
                and r["cores"] is not None and r["batch_size"] is not None)

    def _load_series(self) -> None:
        from sparsify_tui.actions.sweeps import scaling_series

        self.series = scaling_series(self.project, engine=self.engine) if self.project is not None else {}

    def fixed_values(self) -> list[int]:
        """The values the fixed dimension can take (batch sizes when x is cores, and the reverse)."""
        return axis_values(self.series, _other(self.axis))

    def _fix_fixed(self) -> None:
        values = self.fixed_values()
        if self.fixed not in values:
            # the value with the most points (the richest chart), smallest first
            counts = {v: len(slice_series(self.series, self.axis, v)) * 1000
                      + sum(len(p) for p in slice_series(self.series, self.axis, v).values()) for v in values}
            self.fixed = max(values, key=lambda v: (counts[v], -v)) if values else None

    # ------------------------------------------------------------ keys
    def toggle_axis(self) -> None:
        self.axis = _other(self.axis)
        self._fix_fixed()
        self.update_view()

    def step_fixed(self, step: int) -> None:
        values = self.fixed_values()
        if not values:
            return
        i = values.index(self.fixed) if self.fixed in values else 0
        self.fixed = values[(i + step) % len(values)]
        self.update_view()

    def cycle_engine(self) -> None:
        choices: list[str | None] = [None, *self.engines]
        self.engine = choices[(choices.index(self.engine) + 1) % len(choices)] if self.engine in choices else None
        self._load_series()
        self._fix_fixed()
        self.update_view()

    # ------------------------------------------------------------ drawing
    def _newest_rows(self) -> list[dict]:
        """The rows behind the chart: one per server, engine, batch and cores (the newest), in the slice."""
        newest: dict[tuple, dict] = {}
        for r in self.rows:  # sorted by server, engine, batch, cores, created: the last one wins
            if not self._usable(r) or (self.engine is not None and r["engine"] != self.engine):
                continue
            newest[(r["server"], str(r["engine"]), int(r["batch_size"]), int(r["cores"]))] = r
        fixed_key = "batch_size" if self.axis == "cores" else "cores"
        x_key = "cores" if self.axis == "cores" else "batch_size"
        out = [r for r in newest.values() if self.fixed is not None and int(r[fixed_key]) == int(self.fixed)]
        return sorted(out, key=lambda r: (r["server"], str(r["engine"]), int(r[x_key])))

    def _series_name(self, r: dict) -> str:
        """The chart line a row belongs to (named as ``scaling_series`` names it)."""
        return f"{r['server']} · {r['engine']}" if self.engine is None and len(self.engines) > 1 else r["server"]

    def update_view(self) -> None:
        status = self.query_one("#scaling-status", Static)
        chart = self.query_one("#scaling-chart", ScalingChart)
        table = self.query_one("#scaling-table", DataTable)
        table.clear()
        if not self.series:
            self.lines, self.table_rows = {}, []
            chart.display = table.display = False
            self.query_one("#scaling-servers", Static).update("")
            msg = Text(NO_SWEEP_MESSAGE, style="yellow")
            if self.rows or self.stale:
                why = self._unusable_notes("sweep profile(s) cannot be read",
                                           "sweep profile(s) are stale (the model changed since)")
                if why:
                    msg = Text("No usable sweep profile: " + "; ".join(why) + ". Run the sweep again: "
                               "`sparsify-tui sweep PROJECT_DIR`.", style="yellow")
            status.update(msg)
            return
        chart.display = table.display = True
        self.lines = slice_series(self.series, self.axis, self.fixed)
        colors = series_colors(list(self.series))
        chart.set_data(self.lines, self.axis, self.fixed, colors)
        self.table_rows = self._newest_rows()
        for r in self.table_rows:
            color = RICH_COLORS.get(colors.get(self._series_name(r), ""), "")
            table.add_row(Text(str(r["server"]), style=f"bold {color}".strip(), no_wrap=True, overflow="ellipsis"),
                          Text(str(r["engine"]), no_wrap=True, overflow="ellipsis"),
                          Text(str(r["batch_size"]), justify="right"), Text(str(r["cores"]), justify="right"),
                          Text(f"{r['items_per_second']:,.1f}", justify="right"),
                          Text(fmt_ms(r["baseline_ms"]), justify="right"), key=str(r["id"]))
        status.update(self._status_text())
        self.query_one("#scaling-servers", Static).update(self._servers_text(colors))

    def _unusable_notes(self, unreadable: str, stale: str) -> list[str]:
        """How many sweep profiles cannot be read and how many are stale, each with its wording (none: [])."""
        notes = []
        if self.problems:
            notes.append(f"{len(self.problems)} {unreadable}")
        if self.stale:
            notes.append(f"{self.stale} {stale}")
        return notes

    def _servers_text(self, colors: dict[str, str]) -> Text:
        """One line per server: the machine summary its profiles were measured with."""
        machines: dict[str, dict] = {}
        for r in self.rows:
            if self._usable(r):
                machines[r["server"]] = r.get("machine") or {}
        server_color: dict[str, str] = {}
        for name, c in colors.items():  # series "server" or "server · engine": the server's first colour
            server_color.setdefault(name.split(" · ")[0], RICH_COLORS.get(c, ""))
        t = Text()
        t.append("Servers\n", style="bold")
        for server, m in machines.items():
            color = server_color.get(server, "")
            cores = m.get("cores") or m.get("physical_cores") or m.get("usable_cores")
            isa = ", ".join(m.get("isa") or []) or "-"
            t.append(f"{server}:", style=f"bold {color}".strip())
            t.append(f" {m.get('cpu_model') or 'unknown CPU'} · {cores or '?'} cores · {isa}\n")
        return t

    def _status_text(self) -> Text:
        servers = sorted({r["server"] for r in self.rows if self._usable(r)})
        n = sum(1 for r in self.rows if self._usable(r))
        other = _other(self.axis)
        engine = self.engine or ("every engine" if len(self.engines) > 1 else (self.engines or ["-"])[0])
        t = Text()
        t.append(f"Sweep ({n} profile{'s' if n != 1 else ''}, {len(servers)} server{'s' if len(servers) != 1 else ''}"
                 f", {engine})", style="bold")
        t.append(f" · x: {AXIS_LABELS[self.axis]} · {AXIS_LABELS[other]} {self.fixed}")
        t.append(f" of {', '.join(str(v) for v in self.fixed_values())}", style="dim")
        missing = sorted(set(self.series) - set(self.lines))
        if missing:
            t.append(f"\nno profile at {AXIS_LABELS[other]} {self.fixed}: {', '.join(missing)}", style="dim")
        notes = self._unusable_notes("profile(s) cannot be read", "stale profile(s) left out")
        if notes:
            t.append("\n" + "; ".join(notes), style="yellow")
        return t
