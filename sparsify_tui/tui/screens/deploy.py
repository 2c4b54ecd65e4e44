"""Deploy screen: the deployment search (engines x precisions x sparsity) of the project.

The table lists every measured row (fastest first; * marks the best row within
the budget, ! a row the budget leaves out because its outputs no longer follow
the original or its engine disagrees with ONNX Runtime, P the Pareto front);
the Change column's header names the highlighted row's unit, and the detail
line under the table gives its reading and each output's metric. The chart
plots speedup against output change with the front drawn. With no budget typed,
the default one applies (outputs must follow the original); "none" gives the
raw fastest. The search runs as an App job (``app.start_deploy``):
rows appear as their configuration compiles and their times fill in round
after round; cancelling (x) keeps the finished rounds. The budget (b) picks the
best row again without measuring; e exports the highlighted row (model + snippet).

When the project holds results of ``deploy --servers`` (one per cluster server), s cycles the shown result
through this machine and each server (the table, chart and export are that server's), and a "ship this" table
under the chart says, per server, the engine, precision, plan, speedup and output change to run there.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from sparsify_tui.tui.widgets.charts import DeployChart

COLUMNS = (("", 1), ("Engine", 11), ("Prec", 4), ("Sparsity", 12), ("ms", 7), ("Speedup", 7),
           ("Change", 8), ("Top-1", 5), ("MB", 5))


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


class DeployScreen(Screen):
    """Deployment search results, live progress, budget and export."""

    PALETTE_GROUP = "Deploy"
    AUTO_FOCUS = "#deploy-table"
    DEFAULT_CSS = """
    DeployScreen #deploy-top { height: 1; }
    DeployScreen #deploy-top Static { width: auto; padding: 0 1 0 0; }
    DeployScreen .deploy-input { height: 1; border: none; padding: 0; width: 14; }
    DeployScreen #deploy-export-path { width: 1fr; }
    DeployScreen #deploy-status { width: 1fr; }
    DeployScreen #deploy-table { height: 1fr; min-height: 4; }
    DeployScreen #deploy-chart { height: 9; }
    DeployScreen.-tall #deploy-chart { height: 16; }
    DeployScreen #deploy-detail { height: auto; max-height: 3; }
    DeployScreen #deploy-info { height: auto; max-height: 3; }
    DeployScreen #deploy-ship { height: auto; max-height: 8; }
    """
    BINDINGS = [
        Binding("m", "measure", "Measure", id="deploy_measure",
                tooltip="Run the deployment search (all engines, precisions and optimizations)"),
        Binding("b", "focus_budget", "Budget", id="deploy_budget",
                tooltip="Edit the output-change budget: the best row is the fastest within it (empty: the default, "
                "outputs must follow the original; none: the raw fastest)"),
        Binding("e", "export", "Export", id="deploy_export", tooltip="Write the highlighted row's model and snippet"),
        Binding("c", "toggle_chart", "Chart", id="deploy_chart", tooltip="Show or hide the scatter"),
        Binding("s", "next_server", "Server", id="deploy_server",
                tooltip="Show the next server's result (deploy --servers), then this machine's"),
        Binding("escape", "back", "Back", id="deploy_back", tooltip="Back"),
    ]

    def __init__(self, project: Any) -> None:
        super().__init__()
        self.project = project
        self.doc: dict | None = None
        self.budget: float | str | None = None  # None: the default budget; "none": no budget
        self._entry_id: str | None = None
        self._live_best: str | None = None
        self._loaded_after_job: int | None = None
        self._ready = False
        self.server: str | None = None  # None: this machine; else a cluster server of deploy --servers
        self.servers: list[str] = []
        self.ship: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="deploy-top"):
            yield Static("Budget")
            yield Input(placeholder="default", id="deploy-budget-input", classes="deploy-input")
            yield Input(placeholder="OUT.onnx (enter writes)", id="deploy-export-path", classes="deploy-input")
            yield Static("", id="deploy-status")
        yield DataTable(id="deploy-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="deploy-detail")
        yield DeployChart(id="deploy-chart")
        yield Static("", id="deploy-info")
        yield Static("", id="deploy-ship")
        yield Footer()

    def on_mount(self) -> None:
        self._ready = True
        self.sub_title = f"{self.project.name} — deploy"
        table = self.query_one("#deploy-table", DataTable)
        for name, width in COLUMNS:
            table.add_column(name, key=name or "mark", width=width)
        self.query_one("#deploy-export-path", Input).display = False
        self.watch(self.app, "jobs_version", self._refresh, init=False)
        self._load_stored()
        self._refresh()

    def on_screen_resume(self) -> None:
        self._load_stored()
        self._refresh()

    # ------------------------------------------------------------------ data
    def _job(self):
        for j in reversed(getattr(self.app, "jobs", [])):
            if j.kind == "deploy" and j.project is self.project:
                return j
        return None

    def _load_stored(self) -> None:
        from sparsify_tui.actions.deploy import apply_budget, latest, result_servers

        servers = result_servers(self.project)
        if servers != self.servers:
            self.servers = servers
            self.refresh_bindings()
        if self.server is not None and self.server not in servers:
            self.server = None
        self._load_ship()
        found = latest(self.project, self.server)
        if found is None:
            self.doc = None
            self._entry_id = None
            return
        entry, doc = found
        if self.doc is None or entry.id != self._entry_id:
            stored = doc.get("budget")
            if self._entry_id is None and self.budget is None and isinstance(stored, dict) \
                    and stored.get("kind") == "max_output_change":
                self.budget = stored.get("value")
                self.query_one("#deploy-budget-input", Input).value = f"{self.budget:g}"
        self._entry_id = entry.id
        self.doc = apply_budget(doc, self.budget)

    def _load_ship(self) -> None:
        """The "ship this" table of the cluster servers' stored results, for the current budget."""
        from sparsify_tui.actions.deploy import apply_budget, latest, ship_row

        self.ship = []
        for name in self.servers:
            found = latest(self.project, name)
            self.ship.append(ship_row(name, apply_budget(found[1], self.budget) if found else None))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "next_server":
            return bool(self.servers)  # hidden until the project holds a deploy --servers result
        return True

    def action_next_server(self) -> None:
        if not self.servers:
            return
        order: list[str | None] = [None] + list(self.servers)
        self.server = order[(order.index(self.server) + 1) % len(order)] if self.server in order else None
        self.doc = None
        self._load_stored()
        self._refresh()

    def _rows(self) -> tuple[list[dict], str]:
        """(rows to show, status text): the running search's rows, or the stored result's."""
        from sparsify_tui.actions.deploy import apply_budget

        job = self._job()
        if job is not None and job.active and self.server is None:
            rows = list((job.live or {}).get("rows") or [])
            doc = apply_budget({"rows": [r for r in rows if r.get("median_ms") is not None]}, self.budget)
            self._live_best = (doc.get("best") or {}).get("id")
            return rows, f"{job.status_text()}  [dim]x cancels (finished rounds are kept)[/dim]"
        self._live_best = None
        if job is not None and job.id != self._loaded_after_job:
            # the search ended (finished, cancelled or failed): read what it stored
            self._loaded_after_job = job.id
            self._load_stored()
        where = "" if not self.servers else (f"server {escape(self.server)}: " if self.server
                                              else "this machine (s: the servers): ")
        if self.doc is None:
            return [], where + "no deployment search yet: m measures"
        d = self.doc
        if self.server:
            m = d.get("machine") or {}
            where = (f"server {escape(self.server)} ({escape(str(m.get('cpu_model') or '?'))}, "
                     f"{' '.join(m.get('isa') or []) or '-'}): ")
        state = "" if d.get("complete") else f" [yellow]incomplete ({d.get('error') or 'stopped'})[/yellow]"
        name = escape(str((d.get("budget") or {}).get("name") or ""))
        return list(d.get("rows") or []), (f"{where}budget: {name}; {d.get('rounds')} rounds, batch "
                                           f"{d.get('batch_size')}, {d.get('cores')} cores{state}")

    # ------------------------------------------------------------------ refresh
    def _refresh(self, *_: Any) -> None:
        from sparsify_tui.actions.deploy import plan_cell

        if not self._ready:
            return
        rows, status = self._rows()
        best = self._live_best if self._live_best is not None else ((self.doc or {}).get("best") or {}).get("id")
        self.query_one("#deploy-status", Static).update(Text.from_markup(status))
        table = self.query_one("#deploy-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        order = sorted(rows, key=lambda r: -(r.get("speedup") or 0))
        for r in order:
            flagged = bool(r.get("departure") or r.get("engines_disagree"))
            mark = "*" if r["id"] == best else ("!" if flagged else ("P" if r.get("pareto") else ""))
            style = "bold green" if mark == "*" else ("red" if mark == "!" else "")
            fb = r.get("file_bytes")
            table.add_row(
                Text(mark, style=style), Text(r["engine"], style=style), Text(r["precision"]),
                Text(plan_cell(r, short=True)),
                Text(_fmt(r.get("median_ms"), ".2f") if r.get("median_ms") is not None else "…", justify="right"),
                Text(_fmt(r.get("speedup"), ".2f") + ("x" if r.get("speedup") is not None else ""),
                     justify="right"),
                Text(_fmt(r.get("output_change"), ".3g"), justify="right", style="red" if flagged else ""),
                Text(_fmt(r.get("top1_agreement"), ".0%"), justify="right"),
                Text(_fmt(fb / 1e6 if fb else None, ".1f"), justify="right"),
                key=r["id"],
            )
        if table.row_count:
            table.move_cursor(row=min(max(cursor, 0), table.row_count - 1))
        self._rows_by_id = {r["id"]: r for r in rows}
        self._show_detail()
        self.query_one("#deploy-chart", DeployChart).set_data(
            [r for r in rows if r.get("median_ms") is not None], best,
            self.budget if isinstance(self.budget, float) else None)
        self.query_one("#deploy-info", Static).update(self._info(rows))
        ship = self.query_one("#deploy-ship", Static)
        ship.display = bool(self.ship)
        if self.ship:
            ship.update(self._ship_text())

    def _ship_text(self) -> Text:
        from sparsify_tui.metrics import format_change

        text = Text("Ship this (per server, within the budget):", style="bold")
        for r in self.ship:
            mark = "> " if r["server"] == self.server else "  "
            if r["engine"] is None:
                text.append(f"\n{mark}{r['server']}: {r['why_none']}", style="dim")
                continue
            change = "-" if r["change"] is None else format_change(
                {"output_change": r["change"], "output_change_metric": r["change_metric"]}, short=True)[0]
            text.append(f"\n{mark}{r['server']}: {r['engine']} {r['precision']} {r['plan']}, "
                        f"{_fmt(r['speedup'], '.2f')}x, change {change}")
        return text

    def highlighted(self) -> dict | None:
        """The highlighted row's dict (live or stored), or None."""
        table = self.query_one("#deploy-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return getattr(self, "_rows_by_id", {}).get(key)

    @on(DataTable.RowHighlighted, "#deploy-table")
    def _highlight(self, _event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        """The Change header in the highlighted row's unit; under the table its reading, each output's
        metric and why the budget leaves it out."""
        from sparsify_tui.actions.deploy import left_out_reason, row_label
        from sparsify_tui.metrics import SHORTER, format_change

        table = self.query_one("#deploy-table", DataTable)
        r = self.highlighted()
        metric = (r or {}).get("output_change_metric")
        unit = str(SHORTER.get(metric, metric or ""))  # a metric without a short word shows its name
        col = table.columns.get("Change")  # type: ignore[call-overload]
        label = (f"Δ {unit}" if len(unit) <= 6 else unit) if unit else "Change"
        if col is not None and col.label.plain != label:
            col.label = Text(label)
            table._update_count += 1  # the header is cached per update: draw it again with the new label
            table.refresh()
        detail = self.query_one("#deploy-detail", Static)
        if r is None or r.get("output_change") is None:
            detail.update("")
            return
        value, reading = format_change(r)
        outs = r.get("output_change_outputs") or []
        per = ", ".join(f"{o.get('name')}: {SHORTER.get(str(o.get('metric')), o.get('metric'))}" for o in outs)
        per = f" on {outs[0].get('name')}" if len(outs) == 1 else (f" ({per})" if per else "")
        text = Text(f"{row_label(r)}: change {value}{per}"
                    + (f", {reading}" if reading else ""))
        if r.get("engines_disagree"):
            text.append(f"\n{r['engines_disagree']}", style="red")
        elif (why := left_out_reason(r, self.budget)):
            text.append(f"\nleft out by the budget: {why}", style="red")
        detail.update(text)

    def _info(self, rows: list[dict]) -> Text:
        from sparsify_tui.actions.deploy import summary_line

        if self.doc is None and not rows:
            return Text("Times every engine x precision x sparsity in one process against ONNX Runtime fp32 "
                        "dense; output change on held-out samples.", style="dim")
        text = Text()
        job = self._job()
        if self.doc is not None and not (job is not None and job.active):
            text.append(summary_line(self.doc))
            skipped = self.doc.get("skipped") or []
            if skipped:
                reasons = sorted({s["reason"] for s in skipped})
                text.append(f"\n{len(skipped)} skipped: " + "; ".join(reasons), style="dim")
        return text

    # ------------------------------------------------------------------ actions
    def action_measure(self) -> None:
        if self.server is not None:
            self.notify("m measures this machine; sparsify-tui deploy --servers measures the cluster's servers",
                        timeout=6)
            self.server = None
            self.doc = None
            self._load_stored()
        self.app.start_deploy({"max_output_change": self.budget})

    def action_focus_budget(self) -> None:
        self.query_one("#deploy-budget-input", Input).focus()

    @on(Input.Submitted, "#deploy-budget-input")
    def _budget_set(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or text.lower() == "default":
            self.budget = None
        elif text.lower() == "none":
            self.budget = "none"
        else:
            try:
                value = float(text)
                if not (value >= 0 and value < float("inf")):
                    raise ValueError
            except ValueError:
                self.notify(f"the budget must be a number >= 0, 'none' or empty (the default), not {text!r}",
                            severity="error")
                return
            self.budget = value
        if self.doc is not None:
            from sparsify_tui.actions.deploy import apply_budget

            self.doc = apply_budget(self.doc, self.budget, "the budget box")
        self._load_ship()
        self.query_one("#deploy-table", DataTable).focus()
        self._refresh()

    def selected_row(self) -> dict | None:
        table = self.query_one("#deploy-table", DataTable)
        if not table.row_count or self.doc is None:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return next((r for r in self.doc.get("rows") or [] if r["id"] == key), None)

    def action_export(self) -> None:
        row = self.selected_row()
        if row is None:
            self.notify("no measured row to export", severity="warning")
            return
        box = self.query_one("#deploy-export-path", Input)
        box.display = True
        if not box.value:
            box.value = str(self.project.dir / f"deploy-{row['id'].replace('/', '-')}.onnx")
        box.focus()

    @on(Input.Submitted, "#deploy-export-path")
    def _export(self, event: Input.Submitted) -> None:
        row = self.selected_row()
        if row is None or self.doc is None:
            return
        path = event.value.strip()
        event.input.display = False
        self.query_one("#deploy-table", DataTable).focus()
        self.notify(f"exporting {row['id']}…", timeout=3)
        self.run_worker(lambda: self._export_work(dict(self.doc), row, path), thread=True, exclusive=True,
                        group="deploy-export", exit_on_error=False)

    def _export_work(self, doc: dict, row: dict, path: str) -> None:
        from sparsify_tui.actions.deploy import export_row
        from sparsify_tui.errors import SparsifyError

        try:
            res = export_row(self.project, doc, row, path)
        except SparsifyError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=10)
            return
        self.app.call_from_thread(self.notify, f"wrote {res['model']} and {res['snippet']}", timeout=8)

    def action_toggle_chart(self) -> None:
        chart = self.query_one("#deploy-chart", DeployChart)
        chart.display = not chart.display

    def action_back(self) -> None:
        box = self.query_one("#deploy-export-path", Input)
        if box.display:
            box.display = False
            self.query_one("#deploy-table", DataTable).focus()
            return
        self.app.pop_screen()
