"""Messages the app's workers and screens post (dataclass messages; they go up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from sparsify_tui.project import Project


@dataclass
class JobProgress(Message):
    """A background job moved on; many of these collapse into the latest one."""

    job_id: int
    fraction: float
    label: str = ""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobProgress) and message.job_id == self.job_id


@dataclass
class JobStarted(Message):
    """A queued job acquired the measurement slot and is running."""

    job_id: int


@dataclass
class JobFinished(Message):
    """A job ended with a profile document (to be saved into its project)."""

    job_id: int
    doc: dict


@dataclass
class JobFailed(Message):
    """A job ended with an error (or was cancelled); ``partial`` keeps finished levels."""

    job_id: int
    error: str
    cancelled: bool = False
    partial: dict | None = None


@dataclass
class ProjectLoaded(Message):
    """The project's model was analysed and its profiles read (in a worker)."""

    project: "Project"
    data: Any  # tui.data.ModelData
    errors: list[str]


@dataclass
class ProjectOpenFailed(Message):
    error: str
