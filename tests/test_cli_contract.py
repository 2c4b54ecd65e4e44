"""The command-line contract: bad flags end in one `error:` line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparsify_tui", *args], capture_output=True, text=True, timeout=120)


def assert_user_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_version():
    p = run("--version")
    assert p.returncode == 0 and "sparsify-tui" in p.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["frobnicate", "--x"], "unknown command or missing file"),
        (["prfile", "perf", "x.onnx"], "did you mean 'profile'"),
        (["profile"], "KIND"),
        (["profile", "perf"], "target"),
        (["info"], "target"),
        (["prune", "somewhere"], "-o"),
    ],
)
def test_bad_usage_is_one_line(args, needle):
    assert_user_error(run(*args), needle)
