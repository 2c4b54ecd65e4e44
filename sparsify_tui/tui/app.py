"""The Textual application: :class:`SparsifyApp`.

The App owns the open project, its analysed model and loaded profiles
(``model_data``) and the background jobs (``job_manager``, a
:class:`~sparsify_tui.tui.jobs.JobManager`: the App runs its jobs in thread
workers and routes their messages back to it). Screens read those
attributes and watch the reactive counters ``data_version`` (the model or a
profile changed) and ``jobs_version`` (a job moved on) to refresh; they post
requests up by calling the App's public methods (``open_project``,
``start_profile``, ``cancel_jobs``...). Jobs start from the App, not from a
screen, so leaving a screen never kills a running profile.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.worker import Worker, WorkerState, get_current_worker

from sparsify_tui.tui import jobs as jobs_mod
from sparsify_tui.tui.commands import SparsifyCommands
from sparsify_tui.tui.data import ModelData
from sparsify_tui.tui.jobs import JobManager, job_label
from sparsify_tui.tui.launch import close_quietly as _close_quietly
from sparsify_tui.tui.launch import (
    held_project,
    load_model_data,
    machine_info,
    prepare_demo,
    remember,
    resolve_open_target,
)
from sparsify_tui.tui.messages import (
    JobFailed,
    JobFinished,
    JobProgress,
    JobStarted,
    ProjectLoaded,
    ProjectOpenFailed,
)

if TYPE_CHECKING:
    from sparsify_tui.project import Project

# the profile kinds the layer summaries use, and the App attribute holding the id of the one in use
_ENTRY_ATTRS = {"perf": "perf_entry_id", "loss": "loss_entry_id", "quant": "quant_entry_id"}


class SparsifyApp(App[None]):
    """sparsify-tui: profile an ONNX model layer by layer and plan its sparsification."""

    CSS_PATH = ["app.tcss", "optimizer.tcss"]
    TITLE = "sparsify-tui"
    COMMANDS = App.COMMANDS | {SparsifyCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide"), (150, "-xwide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("f1", "help", "Help", id="help", tooltip="Keys and definitions"),
        Binding("question_mark", "help", "Help", show=False, id="help_q"),
        Binding("x", "cancel_jobs", "Cancel job", id="cancel_jobs",
                tooltip="Cancel the running and queued profiles"),
        Binding("q", "quit", "Quit", id="quit", tooltip="Leave the app (jobs are cancelled)"),
        Binding("f2", "show_optimizer", "Optimizer", id="show_optimizer",
                tooltip="Edit the project's optimization and see its estimates"),
        Binding("f3", "show_compare", "Compare", show=False, id="show_compare",
                tooltip="Compare two performance profiles layer by layer"),
        Binding("f4", "show_export", "Export", show=False, id="show_export",
                tooltip="Recipe, code sample, validation"),
        Binding("f5", "show_glossary", "Glossary", show=False, id="show_glossary",
                tooltip="Searchable glossary of the app's terms"),
        Binding("f6", "show_deploy", "Deploy", id="show_deploy",
                tooltip="Deployment search: engines x precisions x sparsity, speed against output change"),
    ]

    data_version: reactive[int] = reactive(0, init=False)
    jobs_version: reactive[int] = reactive(0, init=False)

    def __init__(
        self,
        project: "Project | None" = None,
        *,
        initial: str = "overview",
        start_jobs: Iterable[tuple[str, dict]] = (),
        machine: dict | None = None,
    ) -> None:
        super().__init__()
        self.project: "Project | None" = None
        self.model_data: ModelData | None = None
        self.load_errors: list[str] = []
        self.loading = False
        self.job_manager = JobManager(self)
        self.jobs: list[jobs_mod.Job] = self.job_manager.jobs  # the same list (screens and tests read it)
        self.perf_entry_id: str | None = None
        self.loss_entry_id: str | None = None
        self.quant_entry_id: str | None = None
        self._machine = machine
        self._initial_project = project
        self._initial_screen = initial
        self._initial_jobs = list(start_jobs)
        self._open_started: float | None = None
        self.last_open_ms: float | None = None

    # ------------------------------------------------------------------ startup
    def get_default_screen(self):
        from sparsify_tui.tui.screens.home import HomeScreen

        return HomeScreen()

    def on_mount(self) -> None:
        if self._initial_project is not None:
            self.open_project(self._initial_project, screen=self._initial_screen)
            for kind, settings in self._initial_jobs:
                self.start_profile(kind, settings)

    @property
    def machine(self) -> dict:
        """This machine's cores, ISA and engines (``engines.machine.machine_info``), cached."""
        if self._machine is None:
            self._machine = machine_info()
        return self._machine

    # ------------------------------------------------------------------ projects
    def open_project(self, project: "Project", *, screen: str = "overview") -> None:
        """Make ``project`` the current one and show its overview (or layers)."""
        from sparsify_tui.tui.screens.layers import LayersScreen
        from sparsify_tui.tui.screens.overview import OverviewScreen

        old = self.project
        if old is not None and old is not project and not self.job_manager.active(old):
            _close_quietly(old)
        self.project = project
        self.model_data = None
        self.perf_entry_id = None
        self.loss_entry_id = None
        self.quant_entry_id = None
        self.load_errors = []
        if getattr(project, "readonly", False):  # up front, not when the first save fails
            why = next((n for n in getattr(project, "notices", []) if "read-only" in n), "opened read-only")
            self.notify(f"{why}. Viewing only: profiles, edits and validations are off.", severity="warning",
                        timeout=12)
        remember(project)
        # fresh project screens, installed so switching between them keeps their state
        for name in ("overview", "layers"):
            if self.is_screen_installed(name):
                try:
                    if self.get_screen(name) in self.screen_stack:
                        continue
                except KeyError:
                    pass
                self.uninstall_screen(name)
        self._pop_to_home()
        if not self.is_screen_installed("overview"):
            self.install_screen(OverviewScreen(), "overview")
        if not self.is_screen_installed("layers"):
            self.install_screen(LayersScreen(), "layers")
        self.push_screen(screen if screen in ("overview", "layers") else "overview")
        self.reload_project()

    def _pop_to_home(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def reload_project(self) -> None:
        """Analyse the model and read the selected profiles again, in a worker."""
        if self.project is None:
            return
        self.loading = True
        self._open_started = time.perf_counter()
        self.data_version += 1
        self._load_project(self.project, {kind: getattr(self, attr) for kind, attr in _ENTRY_ATTRS.items()})

    @work(thread=True, exclusive=True, exit_on_error=False, group="load", description="Reading the project")
    def _load_project(self, project: "Project", entry_ids: dict[str, str | None]) -> None:
        loaded = load_model_data(project, entry_ids, cancelled=lambda: get_current_worker().is_cancelled)
        if loaded is not None:
            self.post_message(ProjectLoaded(project, *loaded))

    @on(ProjectLoaded)
    def _on_project_loaded(self, message: ProjectLoaded) -> None:
        if message.project is not self.project:
            return
        self.model_data = message.data
        self.load_errors = message.errors
        self.loading = False
        for kind in _ENTRY_ATTRS:
            doc = getattr(message.data, kind)
            if doc is not None:
                self.use_entry(kind, doc.get("_entry_id"))
        if self._open_started is not None:
            self.last_open_ms = (time.perf_counter() - self._open_started) * 1000
        self.data_version += 1
        for err in message.errors:
            self.notify(err, severity="warning", timeout=8)

    @on(ProjectOpenFailed)
    def _on_open_failed(self, message: ProjectOpenFailed) -> None:
        self.notify(message.error, severity="error", timeout=10)

    def use_entry(self, kind: str, entry_id: str | None) -> bool:
        """Make ``entry_id`` the profile of ``kind`` in use; False for a kind the summaries do not use."""
        attr = _ENTRY_ATTRS.get(kind)
        if attr is None:
            return False
        setattr(self, attr, entry_id)
        return True

    def select_profile(self, entry_id: str) -> None:
        """Use this profile (perf or loss) in the layer summaries."""
        if self.project is None:
            return
        entry = next((e for e in self.project.profiles if e.id == entry_id), None)
        if entry is None:
            return
        if entry.kind == "deploy":  # a deployment search: its own screen
            self.action_show_deploy()
            return
        if not self.use_entry(entry.kind, entry.id):
            return
        self.notify(f"using {entry.kind} profile {entry.name!r}", timeout=3)
        self.reload_project()

    def open_path(self, text: str) -> None:
        """Open a project directory or an ONNX file (quick look) typed by the user."""
        from sparsify_tui.errors import SparsifyError

        path = Path(text.strip()).expanduser()
        if self.project is not None and path.is_dir() and self.held_project(path) is self.project:
            self._show("overview")  # already open here (it holds its own lock): just show it
            return
        try:
            project, jobs = resolve_open_target(path, self.held_project)
        except SparsifyError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self._after_open(project, jobs)

    def held_project(self, directory: Any) -> Any:
        """The project this app holds open in ``directory`` (the current one or a job's), or None.

        Opening it again must reuse that object: a second ``Project.open`` in
        this process is read-only, and closing the first would drop the lock.
        """
        return held_project(directory, ([self.project] if self.project is not None else []) +
                            [j.project for j in list(self.jobs)])

    def open_demo(self) -> None:
        self._open_demo()

    @work(thread=True, exclusive=True, exit_on_error=False, group="demo", description="Creating the demo")
    def _open_demo(self) -> None:
        from sparsify_tui.errors import SparsifyError

        try:
            project, jobs = prepare_demo(reuse=self.held_project)
        except SparsifyError as exc:
            self.post_message(ProjectOpenFailed(str(exc)))
            return
        self.call_from_thread(self._after_open, project, jobs)

    def _after_open(self, project: "Project", jobs: list[tuple[str, dict]]) -> None:
        self.open_project(project)
        for kind, settings in jobs:
            if not any(j.kind == kind for j in self.active_jobs(project)):
                self.start_profile(kind, settings)

    # ------------------------------------------------------------------ jobs (tui.jobs.JobManager does the work)
    def start_profile(self, kind: str, settings: dict | None = None, *, name: str = "") -> jobs_mod.Job | None:
        """Queue a profile of the current project and start it in a thread worker."""
        return self.job_manager.start_profile(kind, settings, name=name)

    def start_validation(self, opt_name: str, **kwargs: Any) -> jobs_mod.Job | None:
        """Validate an optimization of the current project (prune one-shot, measure against the dense model)."""
        return self.job_manager.start_validation(opt_name, **kwargs)

    def start_deploy(self, settings: dict | None = None) -> jobs_mod.Job | None:
        """Start the deployment search of the current project (one at a time; it measures like a profile)."""
        return self.job_manager.start_deploy(settings)

    def start_job(self, job: jobs_mod.Job) -> jobs_mod.Job:
        """Start any background job; its progress and end come back as Job* messages."""
        return self.job_manager.start(job)

    def jobs_changed(self) -> None:
        self.jobs_version += 1

    def run_in_worker(self, job: jobs_mod.Job) -> None:
        self._run_job(job)

    @work(thread=True, exclusive=False, exit_on_error=False, group="profile", description="Profile")
    def _run_job(self, job: jobs_mod.Job) -> None:
        graph = self.model_data.graph if self.model_data is not None and job.project is self.project else None
        outcome = JobManager.execute(
            job, graph=graph, started=lambda: self.post_message(JobStarted(job.id)),
            progress=lambda fraction, label: self.post_message(JobProgress(job.id, fraction, label)),
            cancelled=lambda: get_current_worker().is_cancelled)
        if outcome.doc is not None:
            self.post_message(JobFinished(job.id, outcome.doc))
        else:
            self.post_message(JobFailed(job.id, outcome.error, cancelled=outcome.cancelled, partial=outcome.partial))

    @on(JobStarted)
    def _on_job_started(self, message: JobStarted) -> None:
        self.job_manager.started(message.job_id)

    @on(JobProgress)
    def _on_job_progress(self, message: JobProgress) -> None:
        self.job_manager.progressed(message.job_id, message.fraction, message.label)

    @on(JobFinished)
    def _on_job_finished(self, message: JobFinished) -> None:
        self.job_manager.finished(message.job_id, message.doc)

    @on(JobFailed)
    def _on_job_failed(self, message: JobFailed) -> None:
        self.job_manager.failed(message.job_id, message.error, cancelled=message.cancelled, partial=message.partial)

    @on(Worker.StateChanged)
    def _on_worker_state(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.loading = False
            self.notify(f"{event.worker.description or event.worker.name} failed: {error}",
                        severity="error", timeout=10)
            self.data_version += 1

    def active_jobs(self, project: "Project | None" = None) -> list[jobs_mod.Job]:
        """The queued and running jobs of ``project`` (the current one by default)."""
        return self.job_manager.active(project or self.project)

    # ------------------------------------------------------------------ actions
    def action_help(self) -> None:
        from sparsify_tui.tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen(self.screen))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_jobs":  # the footer offers it only while a profile runs or waits
            return bool(self.job_manager.active())
        return True

    def watch_jobs_version(self) -> None:
        self.refresh_bindings()

    def action_cancel_jobs(self) -> None:
        n = self.job_manager.cancel_active()
        self.notify(f"cancelling {n} job(s)…" if n else "no profile is running", timeout=3)

    def action_home(self) -> None:
        self._pop_to_home()

    def action_show_overview(self) -> None:
        self._show("overview")

    def action_show_layers(self) -> None:
        self._show("layers")

    def _show(self, name: str) -> None:
        """Show the project's overview or layers screen (popping back to it when it is below)."""
        if self.project is None:
            self.notify("open a project first", severity="warning")
            return
        target = self.get_screen(name)
        if self.screen is target:
            return
        if target in self.screen_stack:
            while self.screen is not target:
                self.pop_screen()
            return
        if len(self.screen_stack) > 1 and self.screen in (self.get_screen("overview"), self.get_screen("layers")):
            self.switch_screen(name)
        else:
            self.push_screen(name)

    def action_new_project(self) -> None:
        from sparsify_tui.tui.screens.setup import SetupScreen

        self.push_screen(SetupScreen())

    def action_open_demo(self) -> None:
        self.open_demo()

    def action_start_perf(self) -> None:
        self.start_profile("perf", {})

    # the optimizer, compare, export and glossary screens (tui/navigation.py)
    def action_show_optimizer(self) -> None:
        from sparsify_tui.tui.navigation import show_project_screen
        show_project_screen(self, "optimizer")

    def action_show_compare(self) -> None:
        from sparsify_tui.tui.navigation import show_project_screen
        show_project_screen(self, "compare")

    def action_show_export(self) -> None:
        from sparsify_tui.tui.navigation import show_project_screen
        show_project_screen(self, "export")

    def action_show_glossary(self) -> None:
        from sparsify_tui.tui.navigation import show_project_screen
        show_project_screen(self, "glossary")

    def action_start_loss(self) -> None:
        self.start_profile("loss", {"method": "approx"})

    def action_show_deploy(self) -> None:
        if self.project is None:
            self.notify("open a project first", severity="warning")
            return
        from sparsify_tui.tui.screens.deploy import DeployScreen

        if isinstance(self.screen, DeployScreen):
            return
        self.push_screen(DeployScreen(self.project))

    async def action_quit(self) -> None:
        """Quit; while a profile runs or waits, ask first (quitting cancels it)."""
        from sparsify_tui.tui.screens.confirm import ConfirmQuit

        active = self.job_manager.active()
        if not active:
            self.exit()
            return
        if isinstance(self.screen, ConfirmQuit):
            return

        def done(quit_: bool | None) -> None:
            if quit_:
                self.job_manager.cancel_active()
                self.exit()

        self.push_screen(ConfirmQuit([job_label(j) for j in active]), done)

    def on_unmount(self) -> None:
        self.job_manager.shut_down()
