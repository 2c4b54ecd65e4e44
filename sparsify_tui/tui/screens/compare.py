"""Profile comparison: two performance profiles of the project side by side, layer by layer.

Pick profile A and B (any two perf profiles of the project: other batch
sizes, core counts, engines, or one imported with ``profile perf --import``).
Each layer shows A ms, B ms, the difference B - A and the ratio B / A; the
totals compare the baselines, items per second and the model time at every
level both have; the chart draws both per-layer times over Layer Depth.
Below, the dense vs pruned timings of the optimizations' validations (stored
by ``actions.validate``), or a sentence saying there is none yet.

Profiles measured by a sweep (``sparsify-tui sweep PROJECT_DIR``, settings
``sweep = true``) are offered after the others, grouped by server, then batch
size, then cores, under a header line per server and batch size (type a
server name in the open list to jump to it).

Keys: ``s`` swaps A and B, ``o`` cycles the row order (model order, biggest
difference, biggest ratio), ``g`` switches to the scaling view of the sweep
(Items per Second against cores or batch size, one line per server:
``c`` switches the x axis, ``[`` / ``]`` the batch size or core count it is
drawn for, ``e`` the engine; ``g`` or ``escape`` back to the layers),
``escape`` goes back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Header, Select, Static
from textual_plotext import PlotextPlot

from sparsify_tui.actions.sweeps import group_sweep_profiles, is_sweep_entry
from sparsify_tui.profiles.compare import compare_profiles
from sparsify_tui.tui.data import fmt_ms
from sparsify_tui.tui.widgets.charts import no_data
from sparsify_tui.tui.widgets.footer import FitFooter
from sparsify_tui.tui.widgets.scaling import ScalingView

if TYPE_CHECKING:
    from sparsify_tui.project import Project

ORDERS = ("model", "diff", "ratio")
ORDER_LABELS = {"model": "model order", "diff": "largest |B - A| first", "ratio": "largest B / A first"}


def profile_label(entry: Any, doc: dict | None = None) -> str:
    s = entry.settings or {}
    parts = [entry.name or entry.id, entry.engine or "?"]
    bs = s.get("batch_size") or (doc or {}).get("batch_size")
    if bs:
        parts.append(f"b{bs}")
    cores = s.get("cores") or (doc or {}).get("cores")
    if cores:
        parts.append(f"{cores} cores")
    if s.get("approximate") or (doc or {}).get("approximated"):
        parts.append("approximated")
    if s.get("imported_from") or s.get("imported") or "import" in (entry.name or "").lower():
        parts.append("imported")
    head = str(parts[0])
    return " · ".join([head] + [str(p) for p in parts[1:] if p and str(p) not in head])


GROUP_PREFIX = "\x00group:"  # value of a picker's group header line (never a profile id)


def sweep_label(row: dict) -> str:
    """A sweep profile in the pickers: ``alpha · b16 · 4 cores · onnxruntime`` (+ stale / measured on)."""
    cores = row.get("cores")
    parts = [str(row.get("server") or "?"), f"b{row.get('batch_size', '?')}",
             f"{cores} core{'' if cores == 1 else 's'}", str(row.get("engine") or "?")]
    if row.get("measured_on") and row.get("measured_on") != row.get("server"):
        parts.append(f"on {row['measured_on']}")
    if row.get("stale"):
        parts.append("stale")
    return " · ".join(parts)


def picker_options(project: "Project", entries: Sequence[Any]) -> tuple[list[tuple[Any, str]], set[str]]:
    """The pickers' options and the values of their group header lines.

    ``entries`` (perf profiles, newest first) that are not sweep profiles come
    first, as before; then the sweep profiles grouped by server, batch size and
    cores (:func:`sparsify_tui.actions.sweeps.group_sweep_profiles`), a header
    line before each server and batch size.
    """
    options: list[tuple[Any, str]] = [(profile_label(e), e.id) for e in entries if not is_sweep_entry(e)]
    headers: set[str] = set()
    if project is None or not any(is_sweep_entry(e) for e in entries):
        return options, headers
    known = {e.id for e in entries}
    groups = group_sweep_profiles(project, include_stale=True, load=False)
    for server, by_batch in groups.items():
        for batch, by_cores in by_batch.items():
            value = f"{GROUP_PREFIX}{server}:{batch}"
            headers.add(value)
            options.append((Text(f"── {server} · batch {batch} ──", style="bold"), value))
            for rows in by_cores.values():
                options.extend((sweep_label(r), r["id"]) for r in rows if r["id"] in known)
    return options, headers


class GroupedSelect(Select):
    """A Select whose group header lines (values in ``header_values``) cannot be chosen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_values: set[str] = set()

    def set_grouped_options(self, options: list[tuple[Any, str]], headers: set[str]) -> None:
        self.header_values = set(headers)
        self.set_options(options)

    def _setup_options_renderables(self) -> None:
        super()._setup_options_renderables()
        self._disable_headers()

    def _disable_headers(self) -> None:
        if not self.header_values:
            return
        try:
            overlay = self.query_one("SelectOverlay")  # the Select's drop-down list (an OptionList)
            disable = overlay.disable_option_at_index
        except Exception:  # noqa: BLE001 - not composed yet, or another Textual: headers stay inert
            return
        for i, (_, value) in enumerate(self._options):
            if value in self.header_values:
                disable(i)


def validation_rows(project: "Project") -> list[dict]:
    """The validation section of every optimization that has one (dense vs pruned, measured and estimated)."""
    out = []
    for o in getattr(project, "optimizations", []) or []:
        v = o.get("validation") if isinstance(o, dict) else None
        if isinstance(v, dict) and v:
            out.append({"optimization": o.get("name", "?"), **v})
    return out


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def fmt_diff(x: float | None) -> str:
    if x is None:
        return "-"
    return ("+" if x > 0 else "") + fmt_ms(x)


def draw_compare(plt: Any, depths: Sequence[int], a: Sequence[float | None], b: Sequence[float | None],
                 labels: tuple[str, str] = ("A", "B")) -> int:
    """Both profiles' per-layer times over Layer Depth; returns the number of series drawn."""
    plt.clear_figure()
    plt.title("per-layer ms: A and B")
    n = 0
    for ys, label in ((a, labels[0]), (b, labels[1])):
        pts = [(d, y) for d, y in zip(depths, ys) if y is not None]
        if pts:
            plt.plot([p[0] for p in pts], [p[1] for p in pts], label=label, marker="braille")
            n += 1
    if not n:
        return no_data(plt, "no data")
    plt.xlabel("Layer Depth")
    return n


class CompareChart(PlotextPlot):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._args: tuple = ([], [], [], ("A", "B"))
        self.series = 0

    def set_data(self, depths, a, b, labels=("A", "B")) -> None:  # noqa: ANN001
        self._args = (list(depths), list(a), list(b), labels)
        self.refresh()

    def render(self):
        self.series = draw_compare(self.plt, *self._args)
        return super().render()


class CompareScreen(Screen):
    """Two perf profiles layer by layer, with totals, a chart and the validations' dense vs pruned."""

    PALETTE_GROUP = "Compare"
    AUTO_FOCUS = "#compare-table"
    BINDINGS = [
        Binding("s", "swap", "Swap A/B", id="compare_swap", tooltip="Swap profiles A and B"),
        Binding("o", "cycle_order", "Order", id="compare_order",
                tooltip="Model order, largest difference or largest ratio first"),
        Binding("a", "focus_select('#compare-a')", "Pick A", id="compare_pick_a", tooltip="Choose profile A"),
        Binding("b", "focus_select('#compare-b')", "Pick B", id="compare_pick_b", tooltip="Choose profile B"),
        Binding("g", "toggle_scaling", "Scaling", id="compare_scaling",
                tooltip="Scaling view of the sweep: Items per Second against cores or batch size, per server"),
        Binding("c", "scaling_axis", "X axis", id="compare_scaling_axis",
                tooltip="Scaling chart: cores or batch size on the x axis"),
        Binding("right_square_bracket", "scaling_fixed(1)", "Next", key_display="]", id="compare_scaling_next",
                tooltip="Scaling chart: next batch size (x = cores) or core count (x = batch size)"),
        Binding("left_square_bracket", "scaling_fixed(-1)", "Prev", key_display="[", id="compare_scaling_prev",
                tooltip="Scaling chart: previous batch size or core count"),
        Binding("e", "scaling_engine", "Engine", id="compare_scaling_engine",
                tooltip="Scaling chart: every engine, or one of them"),
        Binding("f1,question_mark", "area_help", "Help here", id="compare_help"),
        Binding("escape", "back", "Back", id="compare_back",
                tooltip="From the scaling view: back to the layers; else leave the comparison"),
    ]

    def __init__(self, project: "Project | None" = None) -> None:
        super().__init__()
        self.project = project
        self.entries: list[Any] = []
        self.docs: dict[str, dict] = {}
        self.a_id: str | None = None
        self.b_id: str | None = None
        self.order = "model"
        self.result: dict | None = None

    DEFAULT_CSS = """
    CompareScreen #compare-views { height: 1fr; }
    """

    LAYER_ACTIONS = frozenset({"swap", "cycle_order", "focus_select"})
    SCALING_ACTIONS = frozenset({"scaling_axis", "scaling_fixed", "scaling_engine"})

    def compose(self) -> ComposeResult:
        yield Header()
        with ContentSwitcher(initial="compare-body", id="compare-views"):
            with Vertical(id="compare-body"):
                with Horizontal(id="compare-pick"):
                    yield GroupedSelect([], id="compare-a", prompt="profile A", allow_blank=True, compact=True)
                    yield GroupedSelect([], id="compare-b", prompt="profile B", allow_blank=True, compact=True)
                yield Static("", id="compare-totals")
                with Horizontal(id="compare-main"):
                    yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
                    yield CompareChart(id="compare-chart")
                yield Static("", id="compare-validation")
            yield ScalingView(id="compare-scaling")
        yield FitFooter()

    @property
    def scaling_shown(self) -> bool:
        return self.query_one("#compare-views", ContentSwitcher).current == "compare-scaling"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The layer keys in the layer view, the chart keys in the scaling view (the footer follows)."""
        try:
            scaling = self.scaling_shown
        except Exception:  # noqa: BLE001 - before compose
            return True
        if action in self.LAYER_ACTIONS:
            return not scaling
        if action in self.SCALING_ACTIONS:
            if not scaling:
                return False
            if action == "scaling_engine":
                return len(self.query_one(ScalingView).engines) > 1
            return self.query_one(ScalingView).has_sweep
        return True

    def on_mount(self) -> None:
        if self.project is None:
            self.project = getattr(self.app, "project", None)
        t = self.query_one("#compare-table", DataTable)
        for key, label, w in (("name", "Layer", 20), ("op", "Op", 7), ("a", "A ms", 8), ("b", "B ms", 8),
                              ("diff", "B - A", 9), ("ratio", "B / A", 6)):
            t.add_column(label, key=key, width=w)
        self.entries = list(self.project.profiles_of("perf")) if self.project is not None else []
        self.entries.sort(key=lambda e: str(e.created or ""), reverse=True)
        options, headers = picker_options(self.project, self.entries)
        for sel in ("#compare-a", "#compare-b"):
            self.query_one(sel, GroupedSelect).set_grouped_options(options, headers)
        if len(self.entries) >= 2:
            self.a_id, self.b_id = self.entries[1].id, self.entries[0].id
        elif self.entries:
            self.a_id = self.b_id = self.entries[0].id
        with self.prevent(Select.Changed):
            if self.a_id:
                self.query_one("#compare-a", Select).value = self.a_id
            if self.b_id:
                self.query_one("#compare-b", Select).value = self.b_id
        self.refresh_compare()
        self._show_validation()

    def _doc(self, entry_id: str) -> dict | None:
        if entry_id not in self.docs:
            entry = next((e for e in self.entries if e.id == entry_id), None)
            if entry is None:
                return None
            try:
                self.docs[entry_id] = self.project.load_profile(entry)
            except Exception as exc:  # noqa: BLE001 - shown inline
                self.notify(f"profile {entry.name!r} cannot be read: {exc}", severity="error", timeout=8)
                return None
        return self.docs[entry_id]

    @on(Select.Changed)
    def _picked(self, event: Select.Changed) -> None:
        value = event.value if isinstance(event.value, str) else None
        if value is not None and value.startswith(GROUP_PREFIX):
            # a group header line (only reachable if the Select could not disable it): keep the old pick
            old = self.a_id if event.select.id == "compare-a" else self.b_id
            with self.prevent(Select.Changed):
                if old:
                    event.select.value = old
                else:
                    event.select.clear()
            return
        if event.select.id == "compare-a":
            self.a_id = value
        elif event.select.id == "compare-b":
            self.b_id = value
        self.refresh_compare()

    def refresh_compare(self) -> None:
        totals = self.query_one("#compare-totals", Static)
        table = self.query_one("#compare-table", DataTable)
        table.clear()
        if not self.entries:
            totals.update(Text("This project has no performance profile yet: start one from the overview (p), "
                               "or import one with `sparsify-tui profile perf DIR --import FILE`.", style="yellow"))
            self.result = None
            return
        a = self._doc(self.a_id) if self.a_id else None
        b = self._doc(self.b_id) if self.b_id else None
        if a is None or b is None:
            totals.update(Text("pick profiles A and B (keys a and b)", style="yellow"))
            self.result = None
            return
        res = compare_profiles(a, b)
        self.result = res
        rows = list(res["layers"])
        if self.order == "diff":
            rows.sort(key=lambda r: -abs(r["diff_ms"]) if r["diff_ms"] is not None else 0.0)
        elif self.order == "ratio":
            rows.sort(key=lambda r: -(r["ratio"] or 0.0))
        for r in rows:
            style = "italic dim" if r.get("engine_internal") else ""
            table.add_row(Text(r["name"] or r["id"], style=style, no_wrap=True, overflow="ellipsis"),
                          r["op_type"], Text(fmt_ms(r["a_ms"]), justify="right"),
                          Text(fmt_ms(r["b_ms"]), justify="right"),
                          Text(fmt_diff(r["diff_ms"]), justify="right",
                               style="green" if (r["diff_ms"] or 0) < 0 else "red" if (r["diff_ms"] or 0) > 0 else ""),
                          Text(fmt_ratio(r["ratio"]), justify="right"), key=r["id"])
        totals.update(self._totals_table(res, a, b))
        model_rows = res["layers"]
        self.query_one("#compare-chart", CompareChart).set_data(
            list(range(len(model_rows))), [r["a_ms"] for r in model_rows], [r["b_ms"] for r in model_rows])

    def _totals_table(self, res: dict, a: dict, b: dict) -> Table:
        t = res["totals"]
        table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold", expand=False)
        for col in ("", "A", "B", "B - A", "B / A"):
            table.add_column(col, justify="right" if col else "left")
        table.add_row("Baseline MS", fmt_ms(t["a_ms"]), fmt_ms(t["b_ms"]), fmt_diff(t["diff_ms"]),
                      fmt_ratio(t["ratio"]))
        ipa, ipb = t.get("a_items_per_second"), t.get("b_items_per_second")
        table.add_row("Items per Second", "-" if ipa is None else f"{ipa:,.1f}", "-" if ipb is None else f"{ipb:,.1f}",
                      "", fmt_ratio(ipb / ipa) if ipa and ipb else "-")
        table.add_row("sum of layers ms", fmt_ms(t["a_layers_ms"]), fmt_ms(t["b_layers_ms"]),
                      fmt_diff(t["b_layers_ms"] - t["a_layers_ms"]),
                      fmt_ratio(t["b_layers_ms"] / t["a_layers_ms"]) if t["a_layers_ms"] else "-")
        for k, v in list(t.get("by_level", {}).items())[:3]:
            if k in ("0", "0.0"):
                continue
            table.add_row(f"model at {float(k) * 100:g}%", fmt_ms(v["a_ms"]), fmt_ms(v["b_ms"]),
                          fmt_diff(v["diff_ms"]), fmt_ratio(v["ratio"]))
        extra = []
        if res["only_in_a"] or res["only_in_b"]:
            extra.append(f"{len(res['only_in_a'])} layer(s) only in A, {len(res['only_in_b'])} only in B")
        extra.append(f"rows: {ORDER_LABELS[self.order]}")
        table.caption = " · ".join(extra)
        return table

    def _show_validation(self) -> None:
        box = self.query_one("#compare-validation", Static)
        rows = validation_rows(self.project) if self.project is not None else []
        if not rows:
            box.update(Text("Dense vs pruned: no validation yet. Run one from the export screen (F4, key v) or "
                            "with `sparsify-tui prune DIR -o OUT.onnx --validate`.", style="dim"))
            return
        table = Table(box=None, padding=(0, 2), header_style="bold", title="Dense vs pruned (validations)",
                      title_justify="left")
        for col in ("optimization", "engine", "dense ms", "pruned ms", "measured", "estimated", "error"):
            table.add_column(col, justify="left" if col in ("optimization", "engine") else "right")
        for v in rows:
            def num(key: str, fmt: str = "{:.2f}", v: dict = v) -> str:
                x = v.get(key)
                return fmt.format(x) if isinstance(x, (int, float)) else "-"
            table.add_row(str(v["optimization"]), str(v.get("engine", "?")), num("dense_ms", "{:.3f}"),
                          num("pruned_ms", "{:.3f}"), num("measured_speedup", "{:.2f}x"),
                          num("estimated_speedup", "{:.2f}x"), num("relative_error", "{:+.0%}"))
        box.update(table)

    # ------------------------------------------------------------ actions
    def action_swap(self) -> None:
        self.a_id, self.b_id = self.b_id, self.a_id
        with self.prevent(Select.Changed):
            for sel, v in (("#compare-a", self.a_id), ("#compare-b", self.b_id)):
                if v:
                    self.query_one(sel, Select).value = v
        self.refresh_compare()

    def action_cycle_order(self) -> None:
        self.order = ORDERS[(ORDERS.index(self.order) + 1) % len(ORDERS)]
        self.refresh_compare()

    def action_focus_select(self, selector: str) -> None:
        self.query_one(selector, Select).focus()

    def action_toggle_scaling(self) -> None:
        """Switch between the layer comparison and the scaling view of the sweep."""
        switcher = self.query_one("#compare-views", ContentSwitcher)
        if switcher.current == "compare-scaling":
            switcher.current = "compare-body"
            self.query_one("#compare-table", DataTable).focus()
        else:
            view = self.query_one(ScalingView)
            view.load(self.project)
            switcher.current = "compare-scaling"
            self.query_one("#scaling-table", DataTable).focus()
        self.refresh_bindings()

    def action_back(self) -> None:
        if self.scaling_shown:
            self.action_toggle_scaling()
        else:
            self.app.pop_screen()

    def action_scaling_axis(self) -> None:
        self.query_one(ScalingView).toggle_axis()

    def action_scaling_fixed(self, step: int) -> None:
        self.query_one(ScalingView).step_fixed(step)

    def action_scaling_engine(self) -> None:
        self.query_one(ScalingView).cycle_engine()
        self.refresh_bindings()

    def action_area_help(self) -> None:
        from sparsify_tui.tui.screens.glossary import GlossaryScreen

        self.app.push_screen(GlossaryScreen(area="compare-scaling" if self.scaling_shown else "compare-table"))
