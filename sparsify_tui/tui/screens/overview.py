"""Project overview: model totals and the project's profiles with their state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Header, ProgressBar, Static

from sparsify_tui.tui import jobs as jobs_mod
from sparsify_tui.tui.data import QUALITY_MARK, fmt_count, fmt_ms, quality_warnings, totals, warning_groups
from sparsify_tui.tui.widgets.footer import FitFooter

if TYPE_CHECKING:
    from sparsify_tui.project import Project


_SHORT = {"batch_size": "batch", "iterations": "iter", "warmup": "warmup", "cores": "cores",
          "method": "", "samples": "samples", "engine": ""}


def _fmt_settings(settings: dict) -> str:
    """A compact one-line summary of a profile's settings."""
    parts = []
    for k, v in (settings or {}).items():
        if v is None or k in ("levels", "model_path", "input_shapes", "data") or isinstance(v, (dict, list)):
            continue
        if k == "approximate":
            if v:
                parts.append("from FLOPs")
            continue
        short = _SHORT.get(k, k)
        parts.append(f"{short} {v}".strip())
    text = ", ".join(parts)
    return text if len(text) <= 40 else text[:39] + "…"


def _deploy_best(project: "Project") -> tuple[str, str] | None:
    """(value, note) of the overview's Deploy row: the fastest configuration within the stored budget
    and how much it beats the sparse plan alone; None without a deploy result."""
    from sparsify_tui.actions.deploy import apply_budget, latest, row_label

    try:
        found = latest(project)
    except Exception:  # noqa: BLE001 - the overview must open whatever the file holds
        return None
    if found is None:
        return None
    doc = apply_budget(found[1], found[1].get("budget"))
    best = doc.get("best")
    budget = doc.get("budget") or {}
    within = {"default": "default budget (outputs follow the original)", "none": "no budget"}.get(
        budget.get("kind"), f"change <= {budget.get('value') or 0:g}")
    if not best:
        return "none within budget", within
    note = f"{best['speedup']:.2f}x ORT fp32, {within}"
    if doc.get("versus_sparse_plan"):
        note += f"; {doc['versus_sparse_plan']:.2f}x the sparse plan alone"
    return row_label(best), note


class OverviewScreen(Screen):
    """Model totals (params, FLOPs, Baseline MS, Items per Second, engine, ISA) and profiles."""

    _ready = False
    PALETTE_GROUP = "Overview"
    AUTO_FOCUS = "#profiles"
    BINDINGS = [
        Binding("l", "app.show_layers", "Layers", id="show_layers", tooltip="Layer summaries and charts"),
        Binding("p", "start_perf", "Perf profile", id="start_perf",
                tooltip="Measure a performance profile: engine, batch size, cores, levels"),
        Binding("a", "start_loss", "Loss profile", id="start_loss",
                tooltip="A loss profile: approximated (weight magnitude) or one-shot (measured)"),
        Binding("i", "start_quant", "INT8 profile", id="start_quant",
                tooltip="Measure each layer's sensitivity to INT8 quantization"),
        Binding("w", "show_warnings", "Warnings", id="show_warnings",
                tooltip="The perf profile's warnings in full (the overview shows one line per kind)"),
        Binding("r", "reload", "Reload", id="reload", tooltip="Read the project and its profiles again"),
        Binding("escape", "app.home", "Home", id="home", tooltip="Back to the home screen"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="overview-body"):
            with Horizontal(id="overview-top"):
                yield Static("", id="project-info")
                yield Static("", id="totals")
            yield Static("", id="notices")
            yield Static("Profiles  [dim](enter: use it in the layer summaries)[/dim]", classes="section-title")
            yield DataTable(id="profiles", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="job-bar"):
                yield Static("", id="job-label")
                yield ProgressBar(total=1.0, show_eta=False, id="job-progress")
        yield FitFooter()

    def on_mount(self) -> None:
        self._ready = True
        table = self.query_one("#profiles", DataTable)
        table.add_column("", key="sel", width=1)
        table.add_column("Name", key="name")
        table.add_column("Kind", key="kind")
        table.add_column("Engine", key="engine")
        table.add_column("Settings", key="settings")
        table.add_column("State", key="state")
        table.add_column("Created", key="created")
        self.watch(self.app, "data_version", self._refresh_all, init=False)
        self.watch(self.app, "jobs_version", self._refresh_jobs, init=False)
        self._refresh_all()

    def on_screen_resume(self) -> None:
        self._refresh_all()

    # ------------------------------------------------------------------ refresh
    def _shown_project(self) -> "Project | None":
        """The app's project, once the screen is composed."""
        return self.app.project if self._ready else None

    def _refresh_all(self, *_: Any) -> None:
        project = self._shown_project()
        if project is None:
            return
        app = self.app
        self.sub_title = f"{project.name} — overview" + ("  (read-only)" if getattr(project, "readonly", False) else "")
        info = Table.grid(padding=(0, 1))
        info.add_column(style="bold")
        info.add_column()
        info.add_row("Project", Text(str(project.name)))
        if project.description:
            info.add_row("", Text(str(project.description), style="italic"))
        info.add_row("Model", Text(str(project.model_path.name)))
        shapes = getattr(project, "input_shapes", {}) or {}
        data = app.model_data
        if data is not None and data.graph is not None:
            ins = ", ".join(f"{t.name} {list(t.shape)}" for t in data.graph.inputs)
            info.add_row("Inputs", Text(ins))
        elif shapes:
            info.add_row("Inputs", Text(", ".join(f"{k} {v}" for k, v in shapes.items())))
        m = app.machine
        info.add_row("Machine", Text(f"{m.get('physical_cores', '?')} physical cores, "
                                     f"{m.get('logical_cores', '?')} logical"))
        if m.get("cpu_model"):
            info.add_row("", Text(str(m.get("cpu_model")), style="dim"))
        engines = m.get("engines") or {}
        if engines:
            info.add_row("Engines", Text(", ".join(f"{k} {v}" for k, v in engines.items() if v)
                                         or "none installed"))
        if getattr(project, "readonly", False):
            info.add_row("Mode", Text("read-only", style="bold red"))
        self.query_one("#project-info", Static).update(info)
        self._refresh_totals()
        notes = list(getattr(project, "notices", []) or []) + list(app.load_errors)
        notices = self.query_one("#notices", Static)
        notices.update(Text("\n".join(notes), style="yellow"))
        notices.display = bool(notes)
        self._refresh_jobs()

    def _refresh_totals(self) -> None:
        app = self.app
        data = app.model_data
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")

        def row(label: str, value: str, note: str = "") -> None:
            text = Text(value)
            if note:  # the gap belongs to the value: SVG exports drop the leading spaces of a styled run
                text.append("  ")
                text.append(note, style="dim")
            grid.add_row(label, text)

        if data is None:
            row("Model", "analysing…" if app.loading else "not analysed")
            self.query_one("#totals", Static).update(grid)
            return
        t = totals(data.graph, data.perf, data.loss, app.machine, data.quant)
        row("Layers", f"{t.layers}", f"{t.prunable_layers} prunable")
        row("Params", fmt_count(t.params), f"{fmt_count(t.prunable_params)} prunable")
        flops = fmt_count(t.flops) if t.flops is not None else (
            f">= {fmt_count(t.flops_known)}" if t.flops_known else "unknown")
        row("FLOPs", flops, "per inference")
        if t.sparsity:
            row("Sparsity", f"{100 * t.sparsity:.1f}%", "of prunable weights")
        if data.perf is None:
            row("Baseline MS", "-", "no perf profile yet")
        else:
            spread = f"min {fmt_ms(t.spread_ms[0])}, max {fmt_ms(t.spread_ms[1])}" if t.spread_ms else ""
            if t.approximated:
                spread = (spread + "; approximated").lstrip("; ")
            warns = quality_warnings(data.perf)
            row(f"Baseline MS {QUALITY_MARK}" if warns else "Baseline MS", fmt_ms(t.baseline_ms), spread)
            q = data.perf.get("quality") if isinstance(data.perf.get("quality"), dict) else {}
            if isinstance(q.get("deployed_ms"), (int, float)):
                ratio = q.get("instrumentation_ratio")
                row("Deployed MS", fmt_ms(q["deployed_ms"]),
                    f"the engine as deployed; instrumented/deployed {ratio:.2f}x" if ratio else "the engine as deployed")
            if isinstance(q.get("interference"), (int, float)):
                row("Interference", f"{100 * q['interference']:.0f}%", "of the measured cores' time taken by "
                    "other processes (largest over the timed blocks)")
            for i, (kind, items) in enumerate(warning_groups(warns)):  # one line per kind; sentences on `w`
                line = Text(f"{kind} ×{len(items)}" if len(items) > 1 else kind, style="yellow")
                if i == 0:  # the gap inside the styled run: SVG exports drop a styled run's leading spaces
                    line = Text(f"{line.plain}  ", style="yellow") + Text("w: details", style="dim")
                grid.add_row(Text(QUALITY_MARK, style="bold yellow"), line)
            ips = f"{t.items_per_second:,.1f}" if t.items_per_second is not None else "-"
            row("Items per Second", ips, f"batch {t.batch_size}" if t.batch_size else "")
            eng = f"{t.engine or '?'} {t.engine_version or ''}".strip()
            row("Engine", eng, f"{t.cores} cores" if t.cores else "")
            if t.engine_reason:
                row("", "", str(t.engine_reason))
        from sparsify_tui.engines.machine import capability_line

        row("Instruction sets", " ".join(t.isa) or "unknown", capability_line({"isa": t.isa, "bf16": t.bf16}))
        if data.loss is not None and t.average_loss_sensitivity is not None:
            row("Avg Sensitivity", f"{t.average_loss_sensitivity:.4g}", f"loss profile, {t.loss_method}")
        if data.quant is not None:
            if t.int8_ms is not None and t.fp32_ms:
                row("INT8 model", f"{fmt_ms(t.int8_ms)} ms", f"fp32 {fmt_ms(t.fp32_ms)} ms, "
                    f"{t.fp32_ms / t.int8_ms:.2f}x" if t.int8_ms else "")
            if t.quant_output_change is not None:
                row("INT8 output change", t.quant_output_change_text or f"{t.quant_output_change:.4g}",
                    t.quant_output_change_reading or "whole model quantized")
        dep = _deploy_best(app.project)
        if dep is not None:
            row("Deploy", *dep)
        self.query_one("#totals", Static).update(grid)

    def _refresh_jobs(self, *_: Any) -> None:
        project = self._shown_project()
        if project is None:
            return
        app = self.app
        table = self.query_one("#profiles", DataTable)
        cursor = table.cursor_row
        table.clear()
        selected = {app.perf_entry_id, app.loss_entry_id}
        for entry in getattr(project, "profiles", []) or []:
            try:
                stale = project.is_stale(entry)
            except Exception:  # noqa: BLE001
                stale = False
            state = Text("stale (model changed)", style="yellow") if stale else Text("done", style="green")
            if not stale and entry.id == app.perf_entry_id and app.model_data is not None:
                n = len(quality_warnings(app.model_data.perf))
                if n:
                    state = Text(f"done {QUALITY_MARK} {n} warning{'s' if n > 1 else ''}", style="yellow")
            table.add_row(
                Text("●" if entry.id in selected else ""),
                Text(str(entry.name)),
                Text(str(entry.kind)),
                Text(f"{entry.engine} {entry.engine_version}".strip()),
                Text(_fmt_settings(entry.settings)),
                state,
                Text(str(entry.created)[:19].replace("T", " ")),
                key=f"entry:{entry.id}",
            )
        for job in app.jobs:
            if job.project is not project or job.state == jobs_mod.DONE:
                continue
            style = {"failed": "red", "cancelled": "dim", "running": "cyan", "queued": "cyan"}.get(job.state, "")
            table.add_row(
                Text(""), Text(job.title), Text(job.kind), Text(str(job.settings.get("engine", "") or "")),
                Text(_fmt_settings(job.settings)), Text(job.status_text(), style=style),
                Text(jobs_mod.elapsed_text(job)), key=f"job:{job.id}",
            )
        if table.row_count:
            table.move_cursor(row=min(max(cursor, 0), table.row_count - 1))
        running = [j for j in app.jobs if j.project is project and j.active]
        bar = self.query_one("#job-bar")
        bar.display = bool(running)
        if running:
            job = running[0]
            more = f" (+{len(running) - 1} queued)" if len(running) > 1 else ""
            self.query_one("#job-label", Static).update(
                f"{job.title}: {job.status_text()}{more}  [dim]x cancels[/dim]")
            self.query_one("#job-progress", ProgressBar).update(progress=job.fraction)
        if not getattr(project, "profiles", None) and not any(j.project is project for j in app.jobs):
            table.add_row(Text(""), Text("no profiles yet: p measures performance, a approximates loss",
                                         style="dim"), Text(""), Text(""), Text(""), Text(""), Text(""),
                          key="empty")

    # ------------------------------------------------------------------ events / actions
    @on(DataTable.RowSelected, "#profiles")
    def _use_profile(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value or ""
        if key.startswith("entry:"):
            self.app.select_profile(key.split(":", 1)[1])

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("start_perf", "start_loss", "start_quant") and getattr(self.app.project, "readonly", False):
            return None  # shown disabled: a read-only project cannot store profiles
        if action == "show_warnings":
            return bool(self._warnings())  # hidden without warnings: the line that counts them says `w`
        return True

    def _warnings(self) -> list[str]:
        data = self.app.model_data if self._ready else None
        return quality_warnings(data.perf) if data is not None else []

    def action_show_warnings(self) -> None:
        warns = self._warnings()
        if warns:
            self.app.push_screen(WarningsScreen(warning_groups(warns)))

    def action_start_perf(self) -> None:
        self._ask_and_start("perf")

    def action_start_loss(self) -> None:
        self._ask_and_start("loss")

    def action_start_quant(self) -> None:
        self._ask_and_start("quant")

    def _ask_and_start(self, kind: str) -> None:
        from sparsify_tui.tui.screens.profile_dialog import ProfileDialog

        def start(settings: dict | None) -> None:
            if settings is not None:
                self.app.start_profile(kind, settings)

        self.app.push_screen(ProfileDialog(kind), start)

    def action_reload(self) -> None:
        self.app.reload_project()


class WarningsScreen(ModalScreen[None]):
    """The perf profile's warnings in full, by kind (the overview shows one line per kind)."""

    BINDINGS = [Binding("escape,w,q", "close", "Close", id="warnings_close")]

    def __init__(self, groups: list[tuple[str, list[str]]]) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        text = Text()
        for kind, items in self.groups:
            text.append(f"{QUALITY_MARK} {kind}\n", style="bold yellow")
            for w in items:
                text.append(f"  • {w}\n")
        text.append("escape closes", style="dim")
        with VerticalScroll(id="warnings-box"):
            yield Static("[b]Perf profile warnings[/b]", id="warnings-title")
            yield Static(text, id="warnings-text")

    def action_close(self) -> None:
        self.dismiss(None)
