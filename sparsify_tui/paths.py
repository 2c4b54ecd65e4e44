"""Where the app keeps its own files.

``SPARSIFY_TUI_HOME`` (used by the tests) puts everything under one directory;
otherwise the platform's user data, cache and config directories are used
(``~/.local/share/sparsify-tui``, ``~/.cache/sparsify-tui``, ``~/.config/sparsify-tui``
on Linux).
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "sparsify-tui"


def _home() -> Path | None:
    h = os.environ.get("SPARSIFY_TUI_HOME")
    return Path(h).expanduser() if h else None


def _user_dir(kind: str) -> Path:
    """``$SPARSIFY_TUI_HOME/<kind>`` when set, else the platform's user directory of that kind."""
    h = _home()
    if h:
        return h / kind
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")(APP, appauthor=False))


def data_dir() -> Path:
    return _user_dir("data")


def cache_dir() -> Path:
    return _user_dir("cache")


def config_dir() -> Path:
    return _user_dir("config")


def recent_projects_file() -> Path:
    return data_dir() / "recent.json"


def demo_project_dir() -> Path:
    return data_dir() / "demo"
