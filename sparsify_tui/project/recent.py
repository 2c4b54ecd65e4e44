"""The list of recently opened projects (``paths.recent_projects_file()``, JSON, newest 30)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sparsify_tui import fsutil
from sparsify_tui.project.common import PROJECT_FILE, RECENT_MAX, now_iso


def _recent_file() -> Path:
    from sparsify_tui import paths

    return paths.recent_projects_file()


def recent_projects() -> list[dict[str, Any]]:
    """Recently opened projects, newest first: ``[{"path", "name", "opened", "exists"}]``."""
    try:
        doc = json.loads(_recent_file().read_text(encoding="utf-8"))
    except (OSError, ValueError, ImportError):
        return []
    items = doc.get("projects", []) if isinstance(doc, dict) else []
    out = []
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("path"), str):
            continue
        out.append({
            "path": it["path"],
            "name": str(it.get("name", "")),
            "opened": str(it.get("opened", "")),
            "exists": (Path(it["path"]) / PROJECT_FILE).exists(),
        })
    return out


def _write_recent(items: list[dict[str, Any]]) -> None:
    try:
        path = _recent_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write_json(path, {"schema_version": 1, "projects": items[:RECENT_MAX]}, durable=False)
    except (OSError, ValueError, ImportError):
        pass  # the list of recent projects is a convenience: never fail a command because of it


def remember_project(dir: str | os.PathLike, name: str | None = None) -> None:
    """Put ``dir`` first in the recent projects list (kept to the newest 30)."""
    d = str(Path(dir).expanduser().absolute())
    items = [{"path": i["path"], "name": i["name"], "opened": i["opened"]}
             for i in recent_projects() if i["path"] != d]
    items.insert(0, {"path": d, "name": name or Path(d).name, "opened": now_iso()})
    _write_recent(items)


def forget_project(dir: str | os.PathLike) -> None:
    """Remove ``dir`` from the recent projects list."""
    d = str(Path(dir).expanduser().absolute())
    items = [{"path": i["path"], "name": i["name"], "opened": i["opened"]}
             for i in recent_projects() if i["path"] != d]
    _write_recent(items)


def is_project_dir(path: str | os.PathLike) -> bool:
    p = Path(path).expanduser()
    return p.is_dir() and (p / PROJECT_FILE).is_file()

