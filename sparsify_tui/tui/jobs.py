"""Background jobs of the app: what a profile job is, and the blocking function it runs.

The App starts each job in a thread worker (``SparsifyApp._run_job``); the
thread calls :func:`run_profile_job`, which calls the core functions
(``profiles.perf.run_perf_profile`` and the loss ones). Those run the engine
in a child process through ``engines.runner``, so a crash there ends in an
``EngineError`` here, never in a dead app. Measurements run one at a time
(``MEASURE_LOCK``): two profiles timing on the same cores would spoil each
other's numbers; the second waits in the "queued" state.

Nothing here touches Textual: the worker forwards progress with messages.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

MEASURE_LOCK = threading.Lock()
_ids = itertools.count(1)

# job states
QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"

DEFAULT_PERF_SETTINGS: dict[str, Any] = {
    "engine": "auto",
    "batch_size": 1,
    "cores": None,
    "levels": None,
    "iterations": 10,
    "warmup": 5,
}
DEFAULT_LOSS_SETTINGS: dict[str, Any] = {"method": "approx"}


@dataclass
class Job:
    """One profile job of one project."""

    kind: str  # perf | loss | quant
    settings: dict[str, Any]
    project: Any
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

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    @property
    def title(self) -> str:
        if self.name:
            return self.name
        if self.kind == "perf":
            s = self.settings
            return f"perf {s.get('engine', 'auto')} b{s.get('batch_size', 1)}"
        return f"{self.kind} {self.settings.get('method', '')}".strip()

    def status_text(self) -> str:
        if self.state == RUNNING:
            pct = f"{100 * self.fraction:.0f}%"
            return f"running {pct}" + (f" ({self.label})" if self.label else "")
        if self.state == FAILED:
            return f"failed: {self.error}"
        return self.state


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
    """Read a progress event of the core functions: a dict (``done``/``total``,
    ``fraction``, ``level``/``index``/``count``...) or a number in [0, 1]."""
    if isinstance(event, (int, float)):
        return max(0.0, min(1.0, float(event))), ""
    if not isinstance(event, dict):
        return None, ""
    label = str(event.get("label") or event.get("message") or event.get("stage") or "")
    if "level" in event and not label:
        try:
            label = f"level {float(event['level']) * 100:g}%"
        except (TypeError, ValueError):
            label = f"level {event['level']}"
    for key in ("fraction", "progress"):
        if isinstance(event.get(key), (int, float)):
            return max(0.0, min(1.0, float(event[key]))), label
    for done_k, total_k in (("done", "total"), ("index", "count"), ("step", "steps"), ("i", "n"),
                            ("level_index", "levels_total"), ("current", "total")):
        d, t = event.get(done_k), event.get(total_k)
        if isinstance(d, (int, float)) and isinstance(t, (int, float)) and t > 0:
            return max(0.0, min(1.0, float(d) / float(t))), label
    return None, label


def run_profile_job(job: Job, on_progress: Callable[[float, str], None], graph: Any = None) -> dict:
    """Run the job's profile (blocking) and return its document.

    Raises ``SparsifyError`` subclasses (``EngineError``, ``CancelledError``...) on failure.
    """
    from sparsify_tui.errors import CancelledError, ProfileError

    project = job.project
    model_path = project.model_path
    input_shapes = dict(getattr(project, "input_shapes", {}) or {})

    def cb(event: Any) -> None:
        frac, label = progress_fraction(event)
        if frac is not None or label:
            on_progress(job.fraction if frac is None else frac, label)

    if job.cancel.is_set():
        raise CancelledError("the job was cancelled before it started")
    s = job.settings
    if job.kind == "perf":
        from sparsify_tui.profiles import perf as perf_mod

        if s.get("approximate"):
            if graph is None:
                from sparsify_tui.analysis import analyze

                graph = analyze(model_path, input_shapes or None)
            return perf_mod.approx_perf_profile(graph)
        kwargs: dict[str, Any] = dict(
            engine=s.get("engine") or "auto",
            batch_size=int(s.get("batch_size") or 1),
            cores=s.get("cores"),
            levels=s.get("levels"),
            iterations=int(s.get("iterations") or 10),
            warmup=int(s.get("warmup") if s.get("warmup") is not None else 5),
            input_shapes=input_shapes or None,
            on_progress=cb,
            cancel=job.cancel,
        )
        if s.get("repeats") is not None:
            kwargs["repeats"] = int(s["repeats"])
        return perf_mod.run_perf_profile(model_path, **kwargs)
    if job.kind == "loss":
        from sparsify_tui.profiles import loss as loss_mod

        method = s.get("method") or "approx"
        if method == "approx":
            if graph is None:
                from sparsify_tui.analysis import analyze

                graph = analyze(model_path, input_shapes or None)
            return loss_mod.approx_loss_profile(graph)
        kwargs = dict(on_progress=cb, cancel=job.cancel)
        if input_shapes:
            kwargs["input_shapes"] = input_shapes
        if s.get("samples"):
            kwargs["samples"] = int(s["samples"])
        return loss_mod.run_loss_profile(model_path, method, **kwargs)
    if job.kind == "quant":
        from sparsify_tui.profiles import quant as quant_mod

        kwargs = dict(on_progress=cb, cancel=job.cancel)
        if input_shapes:
            kwargs["input_shapes"] = input_shapes
        if s.get("samples"):
            kwargs["samples"] = int(s["samples"])
        return quant_mod.run_quant_profile(model_path, **kwargs)
    raise ProfileError(f"unknown profile kind {job.kind!r}")


def profile_name(kind: str, settings: dict[str, Any], doc: dict | None = None) -> str:
    """A short readable name for a profile entry."""
    if kind == "perf":
        engine = (doc or {}).get("engine") or settings.get("engine") or "auto"
        if settings.get("approximate") or (doc or {}).get("approximated") and engine in ("flops", None):
            return f"approximated b{settings.get('batch_size', 1)}"
        cores = (doc or {}).get("cores") or settings.get("cores")
        return f"{engine} b{(doc or {}).get('batch_size') or settings.get('batch_size', 1)}" + (
            f" c{cores}" if cores else "")
    if kind == "loss":
        return f"{(doc or {}).get('method') or settings.get('method', 'approx')}"
    if kind == "quant":
        return f"int8 ({(doc or {}).get('samples') or settings.get('samples', 4)} samples)"
    return kind


def save_job_result(job: Job, doc: dict) -> Any:
    """Store a finished job's document as a profile of its project; returns the entry."""
    project = job.project
    name = job.name or profile_name(job.kind, job.settings, doc)
    if doc.get("incomplete") and "(incomplete)" not in name:
        name += " (incomplete)"
    settings = {k: v for k, v in job.settings.items() if v is not None}
    machine = doc.get("machine") if isinstance(doc.get("machine"), dict) else {}
    engine = str(doc.get("engine") or doc.get("method") or job.kind)
    engine_version = str(doc.get("engine_version") or "")
    return project.add_profile(job.kind, name, settings, engine, engine_version, machine, doc)


def elapsed_text(job: Job) -> str:
    if job.started is None:
        return ""
    end = job.ended or time.monotonic()
    return f"{end - job.started:.0f}s"
