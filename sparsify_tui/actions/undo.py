"""A small undo/redo history of snapshots (plain dicts), used by the optimizer editor
(:class:`~sparsify_tui.actions.optimizer_editor.OptimizationEditor`).

Each entry is a snapshot of the state *before* an edit plus a label saying
what the edit was ("target sparsity 0.85 -> 0.90"), so the editor can tell
the user what ``u`` undid. No Textual here: the history is tested alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UndoHistory:
    """Bounded undo and redo stacks of (label, snapshot)."""

    limit: int = 200
    _undo: list[tuple[str, Any]] = field(default_factory=list)
    _redo: list[tuple[str, Any]] = field(default_factory=list)

    def push(self, before: Any, label: str) -> None:
        """Record the state before an edit; a new edit clears the redo stack."""
        self._undo.append((label, copy.deepcopy(before)))
        if len(self._undo) > self.limit:
            del self._undo[0]
        self._redo.clear()

    def undo(self, current: Any) -> tuple[str, Any] | None:
        """(label, state to restore) or None; ``current`` goes onto the redo stack."""
        return self._move(self._undo, self._redo, current)

    def redo(self, current: Any) -> tuple[str, Any] | None:
        """(label, state to restore) or None; ``current`` goes back onto the undo stack."""
        return self._move(self._redo, self._undo, current)

    @staticmethod
    def _move(src: list, dst: list, current: Any) -> tuple[str, Any] | None:
        if not src:
            return None
        label, state = src.pop()
        dst.append((label, copy.deepcopy(current)))
        return label, state

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def __len__(self) -> int:
        return len(self._undo)
