"""Path completion for ``Input`` widgets (a textual ``Suggester``)."""

from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester


def complete_path(value: str, *, onnx_only: bool = False) -> str | None:
    """The first directory entry that extends ``value`` (directories get a trailing ``/``).

    With ``onnx_only`` only directories and ``.onnx`` files are proposed.
    Hidden entries are proposed only when the typed name starts with a dot.
    """
    if not value:
        return None
    expanded = os.path.expanduser(value)
    head, tail = os.path.split(expanded)
    directory = Path(head or ".")
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    candidates = []
    for name in names:
        if not name.startswith(tail) or name == tail and not (directory / name).is_dir():
            continue
        if name.startswith(".") and not tail.startswith("."):
            continue
        full = directory / name
        is_dir = full.is_dir()
        if onnx_only and not is_dir and not name.lower().endswith(".onnx"):
            continue
        candidates.append((0 if (not is_dir and name.lower().endswith(".onnx")) else 1, name, is_dir))
    if not candidates:
        return None
    candidates.sort()
    _, name, is_dir = candidates[0]
    if name == tail and is_dir:
        return None if value.endswith("/") else value + "/"
    completed = os.path.join(head, name) + ("/" if is_dir else "")
    # keep the user's "~" instead of the expanded home
    if value.startswith("~") and not expanded.startswith("~"):
        home = os.path.expanduser("~")
        if completed.startswith(home):
            completed = "~" + completed[len(home):]
    return completed


class PathSuggester(Suggester):
    """Suggests the completion of a file path; accept it with tab or the right arrow."""

    def __init__(self, *, onnx_only: bool = False) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.onnx_only = onnx_only

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value, onnx_only=self.onnx_only)


from textual.binding import Binding  # noqa: E402
from textual.widgets import Input  # noqa: E402


class PathInput(Input):
    """An ``Input`` for file paths: tab accepts the completion (or moves on when there is none)."""

    BINDINGS = [Binding("tab", "complete", "Complete path", show=False)]

    def __init__(self, *args, onnx_only: bool = False, **kwargs) -> None:
        kwargs.setdefault("suggester", PathSuggester(onnx_only=onnx_only))
        super().__init__(*args, **kwargs)

    def action_complete(self) -> None:
        suggestion = self._suggestion
        if suggestion and len(suggestion) > len(self.value) and suggestion.startswith(self.value):
            self.value = suggestion
            self.cursor_position = len(self.value)
        else:
            self.screen.focus_next()
