"""Background jobs of the app: what a job is, and the blocking function each kind runs.

Every long piece of work the app starts — a perf, loss or INT8 profile, a
validation — is a :class:`Job`. The App runs it in a thread worker
(``SparsifyApp._run_job``) and reports it with the same messages
(``JobStarted``, ``JobProgress``, ``JobFinished``, ``JobFailed``); screens
watch ``app.jobs_version`` and read the jobs' attributes. The thread calls
:func:`run_job`, which calls the core functions of :mod:`sparsify_tui.actions`;
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
from typing import TYPE_CHECKING, Any, Callable

from sparsify_tui.actions import profiles as profiles_action

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
