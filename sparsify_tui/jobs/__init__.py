"""Job kinds the worker (``python -m sparsify_tui.jobs.worker``) can run.

A job is a JSON object ``{"kind": "...", ...}``. Each kind is a function
registered with :func:`register`::

    # sparsify_tui/jobs/quant.py
    from sparsify_tui.jobs import register

    @register("quant")
    def quant_job(job: dict, ctx: JobContext) -> dict:
        for i, ... in enumerate(...):
            ctx.progress(i, n, label="layer conv1")   # also a heartbeat
            ctx.partial({"layer": ..., "value": ...})  # kept by the parent even if we crash later
        return {...}                                   # the "result" event's data

To add a kind, add one module to this package (its name should be the kind,
e.g. ``loss_one_shot.py`` for kind ``loss_one_shot``; the worker imports that
module first, and every module of the package if the kind is not found there).
Import heavy libraries (onnxruntime, deepsparse) inside the function, not at
module level, so the worker starts fast. A job function raises a
``SparsifyError`` for a user-facing failure; it is sent back as an ``error``
event and re-raised in the parent with the same class.

Kinds whose name starts with ``_`` are for tests only: they are registered
only when the environment variable ``SPARSIFY_TUI_TEST_JOBS=1`` is set, and
:func:`sparsify_tui.engines.runner.run_job` refuses them otherwise, so no
command can reach them.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any, Callable

JobFunc = Callable[[dict, "JobContext"], dict]

REGISTRY: dict[str, JobFunc] = {}


def test_jobs_enabled() -> bool:
    return os.environ.get("SPARSIFY_TUI_TEST_JOBS") == "1"


def register(kind: str) -> Callable[[JobFunc], JobFunc]:
    """Decorator: make ``func(job, ctx) -> dict`` the handler of job kind ``kind``."""

    def deco(func: JobFunc) -> JobFunc:
        if kind.startswith("_") and not test_jobs_enabled():
            return func
        REGISTRY[kind] = func
        return func

    return deco


class JobContext:
    """What a job function uses to talk to the parent (progress, partial results, logs)."""

    def __init__(self, emit: Callable[[dict], None], cores: int | None = None) -> None:
        self._emit = emit
        self.cores = cores

    def progress(self, done: float, total: float, label: str = "", **extra: Any) -> None:
        """Progress (and heartbeat): step ``done`` of ``total``."""
        self._emit({"event": "progress", "done": done, "total": total, "label": label, **extra})

    def heartbeat(self, label: str = "") -> None:
        """Tell the parent we are alive (resets its silence time limit)."""
        self._emit({"event": "heartbeat", "label": label})

    def partial(self, data: dict) -> None:
        """A finished piece of the result, kept by the parent even if the job dies later."""
        self._emit({"event": "partial", "data": data})

    def log(self, message: str) -> None:
        self._emit({"event": "log", "message": message})


def profile_job_args(kind: str, job: dict, ctx: JobContext) -> dict[str, Any]:
    """The arguments every measured-profile job (``loss_one_shot``, ``quant``) passes to its compute function
    after the model path: samples, input shapes, progress and partial results, cores."""
    from sparsify_tui.errors import ProfileError

    if not job.get("model_path"):
        raise ProfileError(f"the {kind} job needs a model_path")
    return {
        "data": job.get("data"),
        "samples": int(job.get("samples") or 4),
        "input_shapes": job.get("input_shapes") or None,
        "on_progress": lambda ev: ctx.progress(ev["done"], ev["total"], ev.get("label", "")),
        "on_partial": ctx.partial,
        "cores": ctx.cores,
    }


def find(kind: str) -> JobFunc | None:
    """The handler for ``kind``, importing this package's modules as needed."""
    if kind in REGISTRY:
        return REGISTRY[kind]
    if kind.replace("_", "").isalnum():
        try:
            importlib.import_module(f"{__name__}.{kind}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{kind}":
                raise
        if kind in REGISTRY:
            return REGISTRY[kind]
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
        if kind in REGISTRY:
            return REGISTRY[kind]
    return REGISTRY.get(kind)
