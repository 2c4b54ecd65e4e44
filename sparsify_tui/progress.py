"""The one shape of progress events and cancellation, shared by every job and face.

A progress event is a dict ``{"event": "progress", "done": float, "total": float, "label": str}``;
jobs in the child process emit it, the runner passes it on, the CLI prints it and the app shows it."""

from __future__ import annotations

from typing import Any, Callable

from sparsify_tui.errors import CancelledError


def check_cancel(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("the profile was cancelled; finished layers are kept")


ProgressFn = Callable[[dict], Any]


def emit_progress(on_progress: ProgressFn | None, done: float, total: float, label: str = "") -> None:
    if on_progress is not None:
        on_progress({"event": "progress", "done": done, "total": total, "label": label})
