"""Errors a user can act on.

Every exception meant for a user derives from :class:`SparsifyError` and carries
one clear sentence. The command line prints it as ``error: <sentence>`` and exits
with status 2; the TUI shows it as a notification. Anything else is a bug.
"""

from __future__ import annotations


class SparsifyError(Exception):
    """Base class: a problem the user can fix, described in one sentence."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(SparsifyError):
    """A flag or argument has a bad value."""


class ModelError(SparsifyError):
    """An ONNX file is missing, unreadable, not ONNX or cannot be analysed."""


class InputShapeError(UsageError):
    """A malformed or inconsistent ``--input-shape``."""


class ProjectError(SparsifyError):
    """A project directory or one of its files is missing or corrupt."""


class ProjectLockedError(ProjectError):
    """Another live process holds the project's write lock."""


class ReadOnlyProjectError(ProjectError):
    """The project was opened read-only and cannot be saved."""


class ProfileError(SparsifyError):
    """A profile file is missing, corrupt, or a profile could not be computed."""


class EngineError(SparsifyError):
    """An inference engine failed, crashed or timed out."""

    def __init__(self, message: str, *, hint: str | None = None, output_tail: str = "") -> None:
        super().__init__(message, hint=hint)
        self.output_tail = output_tail


class EngineUnavailableError(EngineError):
    """The requested engine is not installed or cannot run this model."""


class CancelledError(SparsifyError):
    """The user cancelled a long job."""


class RecipeError(SparsifyError):
    """A recipe could not be read or written."""


class ClusterError(SparsifyError):
    """A Ray cluster problem (missing extra, unreachable head, ...)."""
