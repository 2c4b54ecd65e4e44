"""The Textual application: :class:`SparsifyApp`.

The App owns the open project, its analysed model and loaded profiles
(``model_data``) and the background profile jobs. Screens read those
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

from sparsify_tui.errors import SparsifyError
from sparsify_tui.tui import jobs as jobs_mod
from sparsify_tui.tui.commands import SparsifyCommands
from sparsify_tui.tui.data import ModelData, build_model_data
from sparsify_tui.tui.launch import close_quietly as _close_quietly
from sparsify_tui.tui.launch import load_selected as _load_selected
from sparsify_tui.tui.launch import prepare_demo, resolve_open_target
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


def job_label(job: Any) -> str:
    """``perf 'deepsparse b1 c2'``: a job's kind and name, for questions and notices."""
    name = getattr(job, "name", "") or ""
    kind = getattr(job, "kind", "profile")
    return f"{kind} {name!r}" if name else kind


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
        self.jobs: list[jobs_mod.Job] = []
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
            try:
                from sparsify_tui.engines.machine import machine_info

                self._machine = machine_info()
            except Exception:  # noqa: BLE001 - the machine panel is informative only
                import os

                self._machine = {"physical_cores": os.cpu_count() or 1, "logical_cores": os.cpu_count() or 1,
                                 "isa": [], "engines": {}, "cpu_model": "unknown"}
        return self._machine

    # ------------------------------------------------------------------ projects
    def open_project(self, project: "Project", *, screen: str = "overview") -> None:
        """Make ``project`` the current one and show its overview (or layers)."""
        from sparsify_tui.tui.screens.layers import LayersScreen
        from sparsify_tui.tui.screens.overview import OverviewScreen

        old = self.project
        if old is not None and old is not project:
            if not any(j.active and j.project is old for j in self.jobs):
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
        self._remember(project)
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
        self._load_project(self.project, self.perf_entry_id, self.loss_entry_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load", description="Reading the project")
    def _load_project(self, project: "Project", perf_id: str | None, loss_id: str | None) -> None:
        errors: list[str] = []
        graph = None
        try:
            from sparsify_tui.analysis import analyze

            graph = analyze(project.model_path, dict(project.input_shapes or {}) or None)
        except Exception as exc:  # noqa: BLE001 - shown on the overview
            errors.append(f"the model could not be analysed: {exc}")
        perf = _load_selected(project, "perf", perf_id, errors)
        loss = _load_selected(project, "loss", loss_id, errors)
        quant = _load_selected(project, "quant", self.quant_entry_id, errors)
        if get_current_worker().is_cancelled:
            return
        data = build_model_data(graph, perf, loss, quant)
        self.post_message(ProjectLoaded(project, data, errors))

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
                self._use_entry(kind, doc.get("_entry_id"))
        if self._open_started is not None:
            self.last_open_ms = (time.perf_counter() - self._open_started) * 1000
        self.data_version += 1
        for err in message.errors:
            self.notify(err, severity="warning", timeout=8)

    @on(ProjectOpenFailed)
    def _on_open_failed(self, message: ProjectOpenFailed) -> None:
        self.notify(message.error, severity="error", timeout=10)

    def _use_entry(self, kind: str, entry_id: str | None) -> bool:
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
        if not self._use_entry(entry.kind, entry.id):
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
        try:
            target = Path(directory).expanduser().resolve()
        except OSError:
            return None
        held = ([self.project] if self.project is not None else []) + [j.project for j in list(self.jobs)]
        for p in held:
            try:
                if not p.readonly and Path(p.dir).resolve() == target:
                    return p
            except (OSError, AttributeError):
                continue
        return None

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
            if not any(j.active and j.kind == kind for j in self.active_jobs(project)):
                self.start_profile(kind, settings)

    def _remember(self, project: "Project") -> None:
        try:
            from sparsify_tui import project as project_mod

            fn = getattr(project_mod, "remember_project", None) or getattr(project_mod, "add_recent_project", None)
            if fn is not None:
                fn(project.dir, getattr(project, "display_name", None))
        except Exception:  # noqa: BLE001 - recent list is a convenience
            pass

    # ------------------------------------------------------------------ jobs
    def start_profile(self, kind: str, settings: dict | None = None, *, name: str = "") -> jobs_mod.Job | None:
        """Queue a profile of the current project and start it in a thread worker."""
        if self.project is None:
            self.notify("open a project first", severity="warning")
            return None
        if getattr(self.project, "readonly", False):
            self.notify("this project is open read-only: profiles cannot be saved", severity="error")
            return None
        try:
            full = jobs_mod.canonical_settings(kind, settings or {}, self.project)
        except SparsifyError as exc:
            self.notify(str(exc), severity="error")
            return None
        return self.start_job(jobs_mod.Job(kind=kind, settings=full, project=self.project, name=name))

    def start_validation(self, opt_name: str, **kwargs: Any) -> jobs_mod.Job | None:
        """Validate an optimization of the current project (prune one-shot, measure against the dense model)."""
        if self.project is None:
            return None
        if any(j.kind == "validate" and j.active for j in self.jobs):
            self.notify("a validation is already running", timeout=3)
            return None
        return self.start_job(jobs_mod.Job(kind="validate", settings={"optimization": opt_name, **kwargs},
                                           project=self.project))

    def start_deploy(self, settings: dict | None = None) -> jobs_mod.Job | None:
        """Start the deployment search of the current project (one at a time; it measures like a profile)."""
        if self.project is None:
            self.notify("open a project first", severity="warning")
            return None
        if getattr(self.project, "readonly", False):
            self.notify("this project is open read-only: a deployment search cannot be saved", severity="error")
            return None
        if any(j.kind == "deploy" and j.active and j.project is self.project for j in self.jobs):
            self.notify("a deployment search is already running", severity="warning")
            return None
        return self.start_job(jobs_mod.Job(kind="deploy", settings=dict(settings or {}), project=self.project))

    def start_job(self, job: jobs_mod.Job) -> jobs_mod.Job:
        """Start any background job; its progress and end come back as Job* messages."""
        self.jobs.append(job)
        self.jobs_version += 1
        self._run_job(job)
        return job

    @work(thread=True, exclusive=False, exit_on_error=False, group="profile", description="Profile")
    def _run_job(self, job: jobs_mod.Job) -> None:
        from sparsify_tui.errors import CancelledError, SparsifyError

        graph = None
        if self.model_data is not None and job.project is self.project:
            graph = self.model_data.graph

        def progress(fraction: float, label: str) -> None:
            self.post_message(JobProgress(job.id, fraction, label))

        jobs_mod.lower_thread_priority()  # the engine's child process inherits it: keys stay responsive
        lock = jobs_mod.MEASURE_LOCK if jobs_mod.needs_measure_slot(job) else None
        try:
            if lock is not None:
                while not lock.acquire(timeout=0.2):
                    if job.cancel.is_set() or get_current_worker().is_cancelled:
                        raise CancelledError("cancelled while queued")
            try:
                self.post_message(JobStarted(job.id))
                doc = jobs_mod.run_job(job, progress, graph=graph)
            finally:
                if lock is not None:
                    lock.release()
        except CancelledError as exc:
            self.post_message(JobFailed(job.id, str(exc) or "cancelled", cancelled=True,
                                        partial=getattr(exc, "partial", None)))
            return
        except SparsifyError as exc:
            self.post_message(JobFailed(job.id, str(exc), partial=getattr(exc, "partial", None)))
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the app
            self.post_message(JobFailed(job.id, f"internal error: {type(exc).__name__}: {exc}"))
            return
        self.post_message(JobFinished(job.id, doc))

    def _job(self, job_id: int) -> jobs_mod.Job | None:
        return next((j for j in self.jobs if j.id == job_id), None)

    @on(JobStarted)
    def _on_job_started(self, message: JobStarted) -> None:
        job = self._job(message.job_id)
        if job is not None and job.state == jobs_mod.QUEUED:
            job.state = jobs_mod.RUNNING
            job.started = time.monotonic()
            self.jobs_version += 1

    @on(JobProgress)
    def _on_job_progress(self, message: JobProgress) -> None:
        job = self._job(message.job_id)
        if job is None or not job.active:
            return
        job.state = jobs_mod.RUNNING
        job.fraction = message.fraction
        job.label = message.label
        self.jobs_version += 1

    @on(JobFinished)
    def _on_job_finished(self, message: JobFinished) -> None:
        job = self._job(message.job_id)
        if job is None:
            return
        job.ended = time.monotonic()
        job.result = message.doc
        if job.kind == "deploy":
            self._finish_deploy(job)
            return
        if job.kind not in jobs_mod.PROFILE_KINDS:
            self._finish_validation(job)
            return
        try:
            entry = jobs_mod.save_job_result(job, message.doc)
        except Exception as exc:  # noqa: BLE001 - report, keep the app alive
            job.state = jobs_mod.FAILED
            job.error = f"the result could not be saved: {exc}"
            self.notify(f"{job.title}: {job.error}", severity="error", timeout=10)
            self.jobs_version += 1
            return
        job.state = jobs_mod.DONE
        job.fraction = 1.0
        job.entry_id = getattr(entry, "id", None)
        job.name = getattr(entry, "name", job.name)
        self.jobs_version += 1
        if message.doc.get("incomplete"):
            why = message.doc.get("error") or "stopped early"
            self.notify(f"{job.kind} profile {job.title!r} is incomplete (finished levels kept): {why}",
                        severity="warning", timeout=12)
        else:
            self.notify(f"{job.kind} profile {job.title!r} finished", timeout=4)
        if job.project is self.project:
            self._use_entry(job.kind, job.entry_id)
            self.reload_project()
        self._close_if_orphan(job.project)

    def _finish_deploy(self, job: jobs_mod.Job) -> None:
        from sparsify_tui.actions.deploy import summary_line

        job.state = jobs_mod.DONE
        job.fraction = 1.0
        job.entry_id = (job.result or {}).get("entry_id")  # stored by the core function
        self.jobs_version += 1
        self.notify(summary_line(job.result or {}), timeout=10)
        if job.project is self.project:
            self.reload_project()
        self._close_if_orphan(job.project)

    def _finish_validation(self, job: jobs_mod.Job) -> None:
        job.state = jobs_mod.DONE
        job.fraction = 1.0
        self.jobs_version += 1
        v = job.result or {}
        v = v.get("validation", v) if isinstance(v.get("validation"), dict) else v
        ms, es = v.get("measured_speedup"), v.get("estimated_speedup")
        if isinstance(ms, (int, float)):
            est = f", estimated {es:.2f}x" if isinstance(es, (int, float)) else ""
            self.notify(f"{job.title}: measured {ms:.2f}x{est}", timeout=10)
        if job.project is self.project:
            self.reload_project()

    @on(JobFailed)
    def _on_job_failed(self, message: JobFailed) -> None:
        job = self._job(message.job_id)
        if job is None:
            return
        job.ended = time.monotonic()
        job.state = jobs_mod.CANCELLED if message.cancelled else jobs_mod.FAILED
        job.error = message.error
        # finished levels are kept, but never in place of a complete profile of the same settings
        keep_partial = message.partial and job.kind in jobs_mod.PROFILE_KINDS and \
            jobs_mod.profiles_action.find_cached(job.project, job.kind, job.settings,
                                                 message.partial.get("machine")) is None
        if keep_partial:
            try:
                job.name = (job.name or jobs_mod.profiles_action.profile_name(job.kind, job.settings, message.partial)) \
                    + " (partial)"
                entry = jobs_mod.save_job_result(job, message.partial)
                job.entry_id = getattr(entry, "id", None)
            except Exception:  # noqa: BLE001
                pass
        self.jobs_version += 1
        if message.cancelled:
            self.notify(f"{job.title} cancelled", timeout=4)
        else:
            self.notify(f"{job.title} failed: {message.error}", severity="error", timeout=12)
        self._close_if_orphan(job.project)

    def _close_if_orphan(self, project: "Project") -> None:
        if project is not self.project and not any(j.active and j.project is project for j in self.jobs):
            _close_quietly(project)

    @on(Worker.StateChanged)
    def _on_worker_state(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.loading = False
            self.notify(f"{event.worker.description or event.worker.name} failed: {error}",
                        severity="error", timeout=10)
            self.data_version += 1

    def active_jobs(self, project: "Project | None" = None) -> list[jobs_mod.Job]:
        project = project or self.project
        return [j for j in self.jobs if j.active and (project is None or j.project is project)]

    # ------------------------------------------------------------------ actions
    def action_help(self) -> None:
        from sparsify_tui.tui.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
            return
        self.push_screen(HelpScreen(self.screen))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_jobs":  # the footer offers it only while a profile runs or waits
            return any(j.active for j in self.jobs)
        return True

    def watch_jobs_version(self) -> None:
        self.refresh_bindings()

    def action_cancel_jobs(self) -> None:
        active = [j for j in self.jobs if j.active]
        if not active:
            self.notify("no profile is running", timeout=3)
            return
        for job in active:
            job.cancel.set()
        self.notify(f"cancelling {len(active)} job(s)…", timeout=3)

    def action_home(self) -> None:
        self._pop_to_home()

    def action_show_overview(self) -> None:
        if self.project is None:
            self.notify("open a project first", severity="warning")
            return
        self._show("overview")

    def action_show_layers(self) -> None:
        if self.project is None:
            self.notify("open a project first", severity="warning")
            return
        self._show("layers")

    def _show(self, name: str) -> None:
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

        active = [j for j in self.jobs if j.active]
        if not active:
            self.exit()
            return
        if isinstance(self.screen, ConfirmQuit):
            return

        def done(quit_: bool | None) -> None:
            if quit_:
                for job in self.jobs:
                    if job.active:
                        job.cancel.set()
                self.exit()

        self.push_screen(ConfirmQuit([job_label(j) for j in active]), done)

    def on_unmount(self) -> None:
        for job in self.jobs:
            job.cancel.set()
        projects = {id(j.project): j.project for j in self.jobs}
        if self.project is not None:
            projects[id(self.project)] = self.project
        for p in projects.values():
            _close_quietly(p)
