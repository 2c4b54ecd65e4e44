"""Background jobs of the app: what a job is, the blocking function each kind runs, and :class:`JobManager`.

Every long piece of work the app starts — a perf, loss or INT8 profile, a
validation, a deployment search — is a :class:`Job`. The app's
:class:`JobManager` keeps the list of jobs and moves each through its states
(queued, running, done / failed / cancelled); the App only routes: it runs
:meth:`JobManager.execute` in a thread worker (``SparsifyApp._run_job``),
which reports with messages (``JobStarted``, ``JobProgress``, ``JobFinished``,
``JobFailed``), and the App's handlers hand each message back to the manager
on the app's thread. Screens watch ``app.jobs_version`` and read the jobs'
attributes. :meth:`JobManager.execute` calls :func:`run_job`, which calls the
core functions of :mod:`sparsify_tui.actions`;
those run the engine in a child process, so a crash there ends in an
``EngineError`` here, never in a dead app. Measurements run one at a time
(``MEASURE_LOCK``): two timing on the same cores would spoil each other's
numbers; the second waits in the "queued" state.

Progress events have one shape, :mod:`sparsify_tui.progress`'s
``{"done", "total", "label"}``.

Nothing here touches Textual: the worker forwards progress with messages.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from sparsify_tui.actions import profiles as profiles_action
from sparsify_tui.errors import SparsifyError
from sparsify_tui.tui.launch import close_quietly

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.project import Project

MEASURE_LOCK = threading.Lock()
_ids = itertools.count(1)

# job states
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"

PROFILE_KINDS = ("perf", "loss", "quant")


def canonical_settings(kind: str, settings: dict[str, Any], project: "Project") -> dict[str, Any]:
    """The full settings of a profile the app asks for, exactly as the command line would store them."""
    shapes = dict(getattr(project, "input_shapes", {}) or {})
    s = dict(settings or {})
    if kind == "perf":
        keys = ("engine", "batch_size", "cores", "levels", "iterations", "warmup", "repeats", "data", "approximate",
                "precision")
        return profiles_action.perf_settings(input_shapes=shapes, **{k: s[k] for k in keys if s.get(k) is not None})
    if kind == "loss":
        keys = ("method", "levels", "eval_sparsity", "samples", "data")
        return profiles_action.loss_settings(input_shapes=shapes, **{k: s[k] for k in keys if s.get(k) is not None})
    if kind == "quant":
        keys = ("samples", "data")
        return profiles_action.quant_settings(input_shapes=shapes, **{k: s[k] for k in keys if s.get(k) is not None})
    return s


@dataclass
class Job:
    """One background job of one project: a profile (``perf``, ``loss``, ``quant``) or a ``validate``."""

    kind: str
    settings: dict[str, Any]
    project: "Project"
    name: str = ""
    id: int = field(default_factory=lambda: next(_ids))
    state: str = QUEUED
    fraction: float = 0.0
    label: str = ""
    error: str = ""
    started: float | None = None
    ended: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    entry_id: str | None = None  # the project's profile id once saved
    result: dict | None = None  # the finished document (profiles and validations alike)
    live: dict = field(default_factory=dict)  # deploy: {"rows": [...]} as they come (read by the Deploy screen)

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    @property
    def title(self) -> str:
        if self.name:
            return self.name
        if self.kind in PROFILE_KINDS:
            return profiles_action.profile_name(self.kind, self.settings)
        if self.kind == "validate":
            return f"validation of {self.settings.get('optimization', '')}".strip()
        if self.kind == "deploy":
            return f"deployment search b{self.settings.get('batch_size', 1)}"
        return self.kind

    def status_text(self) -> str:
        """``running 15%: measuring level 0.85``; a long step says what it does."""
        if self.state == RUNNING:
            pct = f"{100 * self.fraction:.0f}%"
            return f"running {pct}" + (f": {progress_words(self.label)}" if self.label else "")
        if self.state == FAILED:
            return f"failed: {self.error}"
        return self.state


def progress_words(label: str) -> str:
    """A progress label as words: ``level 0.85: 1.23 ms`` -> ``level 0.85 measured: 1.23 ms``."""
    import re

    m = re.match(r"^level ([0-9.]+%?)(: (.*))?$", label)
    if m and m.group(3) and m.group(3) != "failed":
        return f"level {m.group(1)} measured: {m.group(3)}"
    if m and not m.group(2):
        return f"measuring sparsity level {m.group(1)}"
    m = re.match(r"^dense(, repeat (\d+/\d+))?: (.*)$", label)
    if m:
        return f"dense model{' repeat ' + m.group(2) if m.group(2) else ''} measured: {m.group(3)}"
    return label


JOB_NICE = 5


def lower_thread_priority(increment: int = JOB_NICE) -> None:
    """Lower the scheduling priority of the calling thread (Linux: per thread).

    The child process that the engine runner starts from this thread inherits
    it, so on a machine whose cores are all busy measuring, the app's own
    thread still gets the CPU when a key is pressed. On an otherwise idle
    machine a nice value changes nothing in the measured times.
    """
    import os

    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except (AttributeError, OSError):  # not Linux, or not allowed: keep the default priority
        pass


def needs_measure_slot(job: Job) -> bool:
    """Jobs that time the engine or run it heavily wait for each other."""
    if job.kind == "perf":
        return not job.settings.get("approximate", False)
    if job.kind == "loss":
        return job.settings.get("method", "approx") != "approx"
    return True


def progress_fraction(event: Any) -> tuple[float | None, str]:
    """(fraction done or None, label) of a progress event ``{"done", "total", "label"}``."""
    if not isinstance(event, dict):
        return None, ""
    label = str(event.get("label") or "")
    done, total = event.get("done"), event.get("total")
    if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
        return max(0.0, min(1.0, float(done) / float(total))), label
    return None, label


def run_job(job: Job, on_progress: Callable[[float, str], None], graph: "ModelGraph | None" = None) -> dict:
    """Run the job (blocking) and return its document.

    Raises ``SparsifyError`` subclasses (``EngineError``, ``CancelledError``...) on failure.
    """
    from sparsify_tui.errors import CancelledError, UsageError

    def cb(event: Any) -> None:
        frac, label = progress_fraction(event)
        if frac is not None or label:
            on_progress(job.fraction if frac is None else frac, label)

    if job.cancel.is_set():
        raise CancelledError("the job was cancelled before it started")
    if job.kind in PROFILE_KINDS:
        return profiles_action.measure(job.project.model_path, job.kind, job.settings, graph=graph,
                                       on_progress=cb, cancel=job.cancel)
    if job.kind == "validate":
        from sparsify_tui.actions.validate import validate_optimization

        kwargs = {k: v for k, v in job.settings.items() if k != "optimization"}
        return validate_optimization(job.project, job.settings["optimization"], on_progress=cb,
                                     cancel=job.cancel, **kwargs)
    if job.kind == "deploy":
        # the core function stores the result (and a cancelled search's finished rounds) itself
        from sparsify_tui.actions.deploy import run_deploy

        def rows(r: list[dict]) -> None:
            job.live = {"rows": r}
            on_progress(job.fraction, job.label)

        keys = ("engines", "precisions", "optimizations", "batch_size", "cores", "data", "max_output_change",
                "repeats", "force")
        return run_deploy(job.project, **{k: job.settings[k] for k in keys if k in job.settings}, on_progress=cb,
                          on_rows=rows, cancel=job.cancel)
    raise UsageError(f"unknown job kind {job.kind!r}")


def save_job_result(job: Job, doc: dict) -> Any:
    """Store a finished profile job's document as a profile of its project; returns the entry."""
    return profiles_action.store(job.project, job.kind, job.settings, doc, name=job.name or None)


def elapsed_text(job: Job) -> str:
    if job.started is None:
        return ""
    end = job.ended or time.monotonic()
    return f"{end - job.started:.0f}s"


def job_label(job: Any) -> str:
    """``perf 'deepsparse b1 c2'``: a job's kind and name, for questions and notices."""
    name = getattr(job, "name", "") or ""
    kind = getattr(job, "kind", "profile")
    return f"{kind} {name!r}" if name else kind


@dataclass
class JobOutcome:
    """How :meth:`JobManager.execute` ended: a document, or an error (``cancelled``; ``partial`` levels kept)."""

    doc: dict | None = None
    error: str = ""
    cancelled: bool = False
    partial: dict | None = None


class JobHost(Protocol):
    """What the manager needs of the app (``SparsifyApp`` is one): the current project and four calls."""

    project: "Project | None"

    def notify(self, message: str, *, severity: str = ..., timeout: float | None = ...) -> None: ...

    def jobs_changed(self) -> None: ...  # a job was added or moved on (the app bumps ``jobs_version``)

    def run_in_worker(self, job: Job) -> None: ...  # call ``execute(job, ...)`` in a thread

    def use_entry(self, kind: str, entry_id: str | None) -> bool: ...  # show this profile in the summaries

    def reload_project(self) -> None: ...


class JobManager:
    """The app's background jobs: start, execute (in a worker thread), finish, fail, cancel.

    Every method but :meth:`execute` runs on the app's thread; :meth:`execute`
    runs in the worker and only reports through its callbacks.
    """

    def __init__(self, host: JobHost) -> None:
        self.host = host
        self.jobs: list[Job] = []

    # ------------------------------------------------------------------ queries
    def job(self, job_id: int) -> Job | None:
        return next((j for j in self.jobs if j.id == job_id), None)

    def active(self, project: "Project | None" = None) -> list[Job]:
        """The queued and running jobs (of ``project`` when given)."""
        return [j for j in self.jobs if j.active and (project is None or j.project is project)]

    # ------------------------------------------------------------------ start
    def _writable(self, what: str) -> "Project | None":
        project = self.host.project
        if project is None:
            self.host.notify("open a project first", severity="warning")
            return None
        if getattr(project, "readonly", False):
            self.host.notify(f"this project is open read-only: {what}", severity="error")
            return None
        return project

    def start_profile(self, kind: str, settings: dict | None = None, *, name: str = "") -> Job | None:
        """Queue a profile of the current project with the settings the command line would store."""
        project = self._writable("profiles cannot be saved")
        if project is None:
            return None
        try:
            full = canonical_settings(kind, settings or {}, project)
        except SparsifyError as exc:
            self.host.notify(str(exc), severity="error")
            return None
        return self.start(Job(kind=kind, settings=full, project=project, name=name))

    def start_validation(self, opt_name: str, **kwargs: Any) -> Job | None:
        """Validate an optimization of the current project (one validation at a time)."""
        project = self.host.project
        if project is None:
            return None
        if any(j.kind == "validate" for j in self.active()):
            self.host.notify("a validation is already running", timeout=3)
            return None
        return self.start(Job(kind="validate", settings={"optimization": opt_name, **kwargs}, project=project))

    def start_deploy(self, settings: dict | None = None) -> Job | None:
        """Start the deployment search of the current project (one at a time; it measures like a profile)."""
        project = self._writable("a deployment search cannot be saved")
        if project is None:
            return None
        if any(j.kind == "deploy" for j in self.active(project)):
            self.host.notify("a deployment search is already running", severity="warning")
            return None
        return self.start(Job(kind="deploy", settings=dict(settings or {}), project=project))

    def start(self, job: Job) -> Job:
        """Add any job and have the host run it in a worker."""
        self.jobs.append(job)
        self.host.jobs_changed()
        self.host.run_in_worker(job)
        return job

    # ------------------------------------------------------------------ the worker's side
    @staticmethod
    def execute(job: Job, *, started: Callable[[], None], progress: Callable[[float, str], None],
                cancelled: Callable[[], bool] = lambda: False, graph: "ModelGraph | None" = None) -> JobOutcome:
        """Run the job (blocking, in a worker thread): wait for the measuring slot, run it, say how it ended.

        ``cancelled()``: the worker was cancelled (the app is closing); ``job.cancel`` is the user's cancel.
        """
        from sparsify_tui.errors import CancelledError

        lower_thread_priority()  # the engine's child process inherits it: keys stay responsive
        lock = MEASURE_LOCK if needs_measure_slot(job) else None
        try:
            if lock is not None:
                while not lock.acquire(timeout=0.2):
                    if job.cancel.is_set() or cancelled():
                        raise CancelledError("cancelled while queued")
            try:
                started()
                return JobOutcome(doc=run_job(job, progress, graph=graph))
            finally:
                if lock is not None:
                    lock.release()
        except CancelledError as exc:
            return JobOutcome(error=str(exc) or "cancelled", cancelled=True, partial=getattr(exc, "partial", None))
        except SparsifyError as exc:
            return JobOutcome(error=str(exc), partial=getattr(exc, "partial", None))
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the app
            return JobOutcome(error=f"internal error: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ the app's side of the messages
    def started(self, job_id: int) -> None:
        job = self.job(job_id)
        if job is not None and job.state == QUEUED:
            job.state = RUNNING
            job.started = time.monotonic()
            self.host.jobs_changed()

    def progressed(self, job_id: int, fraction: float, label: str) -> None:
        job = self.job(job_id)
        if job is None or not job.active:
            return
        job.state = RUNNING
        job.fraction = fraction
        job.label = label
        self.host.jobs_changed()

    def finished(self, job_id: int, doc: dict) -> None:
        """A job ended with its document: store a profile, report a validation or a deployment search."""
        job = self.job(job_id)
        if job is None:
            return
        job.ended = time.monotonic()
        job.result = doc
        if job.kind == "deploy":
            self._finish_deploy(job)
        elif job.kind not in PROFILE_KINDS:
            self._finish_validation(job)
        else:
            self._finish_profile(job, doc)

    def _done(self, job: Job) -> None:
        job.state = DONE
        job.fraction = 1.0
        self.host.jobs_changed()

    def _finish_profile(self, job: Job, doc: dict) -> None:
        try:
            entry = save_job_result(job, doc)
        except Exception as exc:  # noqa: BLE001 - report, keep the app alive
            job.state = FAILED
            job.error = f"the result could not be saved: {exc}"
            self.host.notify(f"{job.title}: {job.error}", severity="error", timeout=10)
            self.host.jobs_changed()
            return
        job.entry_id = getattr(entry, "id", None)
        job.name = getattr(entry, "name", job.name)
        self._done(job)
        if doc.get("incomplete"):
            why = doc.get("error") or "stopped early"
            self.host.notify(f"{job.kind} profile {job.title!r} is incomplete (finished levels kept): {why}",
                             severity="warning", timeout=12)
        else:
            self.host.notify(f"{job.kind} profile {job.title!r} finished", timeout=4)
        if job.project is self.host.project:
            self.host.use_entry(job.kind, job.entry_id)
            self.host.reload_project()
        self.close_if_orphan(job.project)

    def _finish_deploy(self, job: Job) -> None:
        from sparsify_tui.actions.deploy import summary_line

        job.entry_id = (job.result or {}).get("entry_id")  # stored by the core function
        self._done(job)
        self.host.notify(summary_line(job.result or {}), timeout=10)
        if job.project is self.host.project:
            self.host.reload_project()
        self.close_if_orphan(job.project)

    def _finish_validation(self, job: Job) -> None:
        self._done(job)
        v = job.result or {}
        v = v.get("validation", v) if isinstance(v.get("validation"), dict) else v
        ms, es = v.get("measured_speedup"), v.get("estimated_speedup")
        if isinstance(ms, (int, float)):
            est = f", estimated {es:.2f}x" if isinstance(es, (int, float)) else ""
            self.host.notify(f"{job.title}: measured {ms:.2f}x{est}", timeout=10)
        if job.project is self.host.project:
            self.host.reload_project()

    def failed(self, job_id: int, error: str, *, cancelled: bool = False, partial: dict | None = None) -> None:
        """A job ended with an error or was cancelled; a profile's finished levels are stored as "(partial)"."""
        job = self.job(job_id)
        if job is None:
            return
        job.ended = time.monotonic()
        job.state = CANCELLED if cancelled else FAILED
        job.error = error
        # finished levels are kept, but never in place of a complete profile of the same settings
        if partial and job.kind in PROFILE_KINDS and \
                profiles_action.find_cached(job.project, job.kind, job.settings, partial.get("machine")) is None:
            try:
                job.name = (job.name or profiles_action.profile_name(job.kind, job.settings, partial)) + " (partial)"
                job.entry_id = getattr(save_job_result(job, partial), "id", None)
            except Exception:  # noqa: BLE001
                pass
        self.host.jobs_changed()
        if cancelled:
            self.host.notify(f"{job.title} cancelled", timeout=4)
        else:
            self.host.notify(f"{job.title} failed: {error}", severity="error", timeout=12)
        self.close_if_orphan(job.project)

    # ------------------------------------------------------------------ cancel, close
    def cancel_active(self) -> int:
        """Ask every queued and running job to stop; how many were asked."""
        active = self.active()
        for job in active:
            job.cancel.set()
        return len(active)

    def close_if_orphan(self, project: "Project") -> None:
        """Close a project that is no longer the current one once its last job ended."""
        if project is not self.host.project and not self.active(project):
            close_quietly(project)

    def shut_down(self) -> None:
        """The app ends: cancel every job, close every project the app or a job holds."""
        for job in self.jobs:
            job.cancel.set()
        projects = {id(j.project): j.project for j in self.jobs}
        if self.host.project is not None:
            projects[id(self.host.project)] = self.host.project
        for p in projects.values():
            close_quietly(p)
