"""The test run never touches the user's own sparsify-tui files (issue #19 item 7)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _real_dirs() -> list[Path]:
    from platformdirs import user_cache_dir, user_config_dir, user_data_dir

    return [Path(f("sparsify-tui", appauthor=False)) for f in (user_data_dir, user_cache_dir, user_config_dir)]


@pytest.fixture(scope="session")
def dirs_seen_by_session_fixtures():
    """What a session-scoped fixture (set up before any function-scoped autouse fixture) writes into."""
    from sparsify_tui import paths

    return [paths.data_dir(), paths.cache_dir(), paths.config_dir(), paths.recent_projects_file()]


def test_session_fixtures_and_children_use_a_private_home(dirs_seen_by_session_fixtures):
    real = _real_dirs()
    for d in dirs_seen_by_session_fixtures:
        assert not any(d == r or r in d.parents for r in real), d
    code = "from sparsify_tui import paths; print(paths.recent_projects_file())"
    child = Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=REPO).stdout.strip())
    assert not any(r in child.parents for r in real), child


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_ctrl_c_tests_pass_under_a_runner_that_ignores_sigint():
    """``nohup pytest`` or a background job of a script: SIGINT is ignored and children inherit that."""
    test = "tests/engines/test_engine_runner.py::test_ctrl_c_in_the_parent_kills_the_child"
    p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", test],
                       capture_output=True, text=True, timeout=300, cwd=REPO, preexec_fn=_ignore_sigint)
    assert p.returncode == 0, p.stdout[-3000:]
