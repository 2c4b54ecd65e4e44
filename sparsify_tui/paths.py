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


def data_dir() -> Path:
    h = _home()
    if h:
        return h / "data"
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    h = _home()
    if h:
        return h / "cache"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP, appauthor=False))


def config_dir() -> Path:
    h = _home()
    if h:
        return h / "config"
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP, appauthor=False))


def recent_projects_file() -> Path:
    return data_dir() / "recent.json"


def demo_project_dir() -> Path:
    return data_dir() / "demo"
