"""The test run never touches the user's own sparsify-tui files (issue #19 item 7)."""

from __future__ import annotations

import ast
import re
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


_SHOW_SIGINT = ("import signal; h = signal.getsignal(signal.SIGINT)\n"
                "print({signal.SIG_IGN: 'ignored', signal.default_int_handler: 'KeyboardInterrupt'}.get(h, h))")
_WAIT_FOR_CTRL_C = """
import sys, time
try:
    print("ready", flush=True)  # inside the try: Ctrl+C can arrive as soon as "ready" is read
    time.sleep(60)
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


def test_interruptible_popen_restores_sigint_that_the_runner_ignores():
    from tests.conftest import interruptible_popen, send_sigint

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # this process now starts children like `nohup pytest`
    try:
        plain = subprocess.run([sys.executable, "-c", _SHOW_SIGINT], capture_output=True, text=True, check=True)
        helped = interruptible_popen([sys.executable, "-c", _SHOW_SIGINT], stdout=subprocess.PIPE, text=True)
        waiting = interruptible_popen([sys.executable, "-c", _WAIT_FOR_CTRL_C], stdout=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, old)
    assert plain.stdout.strip() == "ignored"  # what a child inherits without the helper
    assert helped.communicate(timeout=60)[0].strip() == "KeyboardInterrupt"
    assert waiting.stdout.readline().strip() == "ready"
    send_sigint(waiting)
    assert waiting.wait(timeout=30) == 130
    bare = subprocess.Popen([sys.executable, "-c", "pass"])
    with pytest.raises(AssertionError, match="interruptible_popen"):
        send_sigint(bare)  # a child started any other way is refused
    bare.wait(timeout=30)


# --- every test that sends SIGINT goes through tests.conftest.send_sigint, to a child of interruptible_popen

_SENDERS = {"send_signal", "kill", "killpg", "pidfd_send_signal", "raise_signal"}


def _is_sigint(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "SIGINT":
        return True
    if isinstance(node, ast.Name) and node.id == "SIGINT":
        return True
    return isinstance(node, ast.Constant) and node.value == 2 and not isinstance(node.value, bool)


def _sigint_violations(source: str, rel: str) -> list[str]:
    tree = ast.parse(source, filename=rel)
    out: list[tuple[int, str]] = []
    calls_helper = False
    self_interrupting: list[int] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "interruptible_popen":
                calls_helper = True
            if name in _SENDERS and any(_is_sigint(a) for a in [*node.args, *(k.value for k in node.keywords)]):
                out.append((node.lineno, "sends SIGINT itself: use tests.conftest.send_sigint(proc)"))
            if name == "Popen" and any(k.arg == "preexec_fn" and getattr(k.value, "id", "") == "default_sigint"
                                       for k in node.keywords):
                out.append((node.lineno, "Popen(preexec_fn=default_sigint): use interruptible_popen"))
        # child code (a string run by ``python -c``) that interrupts itself needs the default handler too
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "SIGINT" in node.value \
                and re.search(r"\b(kill|killpg|raise_signal|send_signal)\(", node.value):
            self_interrupting.append(node.lineno)
    if self_interrupting and not calls_helper:
        out += [(n, "child code sends itself SIGINT but the file never starts a child with interruptible_popen")
                for n in self_interrupting]
    return [f"{rel}:{n} {what}" for n, what in sorted(out)]


def test_every_test_that_sends_sigint_uses_the_helper():
    files = [p for p in sorted((REPO / "tests").rglob("*.py")) if p != REPO / "tests" / "conftest.py"]
    assert len(files) > 80
    violations = [v for p in files for v in _sigint_violations(p.read_text(), str(p.relative_to(REPO)))]
    assert violations == []
    # the check finds what it looks for: every form it must catch, and nothing in the helper's own calls
    probe = ("import os, signal\nos.kill(1, signal.SIGINT)\np.send_signal(signal.SIGINT)\nos.killpg(1, 2)\n"
             "subprocess.Popen(['x'], preexec_fn=default_sigint)\nCODE = 'os.kill(os.getpid(), signal.SIGINT)'\n"
             "os.kill(1, signal.SIGKILL)\nsend_sigint(p, group=True)\n")
    assert [v.split(" ", 1)[0] for v in _sigint_violations(probe, "probe.py")] == \
        [f"probe.py:{n}" for n in (2, 3, 4, 5, 6)]
    assert _sigint_violations(probe.replace("CODE", "interruptible_popen([])\nCODE"), "probe.py")[-1].startswith(
        "probe.py:5 ")  # child code that interrupts itself is fine once the file uses the helper
