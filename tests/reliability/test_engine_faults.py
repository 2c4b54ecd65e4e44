"""Engine faults and Ctrl+C: the worker killed or hung, SIGINT during a profile and during a save.

The real ``sparsify-tui profile perf`` runs in a subprocess on the demo model;
the test reads its progress on stderr and strikes at a known step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import interruptible_popen, send_sigint

from .helpers import PY, assert_user_error, cli_env, snapshot_dir


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Cli:
    """``sparsify-tui ARGS`` in its own session (like a shell's foreground job), stderr read line by line."""

    def __init__(self, *args, pre: str = "") -> None:
        code = pre + "\nimport sys\nfrom sparsify_tui.cli import main\nsys.exit(main(sys.argv[1:]))\n"
        self.proc = interruptible_popen([PY, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=cli_env(), start_new_session=True)
        self.err: list[str] = []

    def wait_line(self, needle: str, timeout: float = 90) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.err.append(line)
            if needle in line:
                return line
        raise AssertionError(f"{needle!r} never appeared on stderr:\n{''.join(self.err)}")

    def worker(self, timeout: float = 30) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            kids = _children(self.proc.pid)
            if kids:
                return kids[0]
            time.sleep(0.02)
        raise AssertionError("the engine worker never started")

    def finish(self, timeout: float = 120) -> subprocess.CompletedProcess:
        out, err = self.proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, "".join(self.err) + err)


DS = ("--engine", "deepsparse", "--levels", "0,0.5,0.9", "--iterations", "3", "--warmup", "1", "--repeats", "1")


def _deepsparse():
    from .helpers import cli_env  # noqa: F401
    import importlib.util

    if importlib.util.find_spec("deepsparse") is None:
        pytest.skip("DeepSparse is not installed")


def test_worker_sigkill_mid_profile_keeps_finished_levels(demo_project):
    _deepsparse()
    cli = Cli("profile", "perf", demo_project, *DS, "--json")
    cli.wait_line("dense, repeat 1/1")  # the baseline level is finished and sent
    worker = cli.worker()
    os.kill(worker, signal.SIGKILL)
    res = cli.finish()
    assert "Traceback" not in res.stderr
    assert res.returncode == 0, res.stderr
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: the profile is incomplete")]
    assert len(warn) == 1 and "SIGKILL" in warn[0], res.stderr
    doc = json.loads(res.stdout)
    assert doc["incomplete"] is True and doc["baseline_ms"] > 0
    assert 0.0 in doc["levels_measured"] and 0.9 not in doc["levels_measured"]
    from sparsify_tui.project import Project

    p = Project.open(demo_project, readonly=True)
    stored = p.load_profile(p.profiles_of("perf")[0])
    assert stored["incomplete"] is True and stored["baseline_ms"] == doc["baseline_ms"]
    assert not _alive(worker)


def test_hung_worker_is_stopped_by_the_time_limit(demo_project):
    before = snapshot_dir(demo_project)
    cli = Cli("profile", "perf", demo_project, "--engine", "onnxruntime", "--timeout", "2", "--iterations", "3",
              "--warmup", "1", "--repeats", "1")
    worker = cli.worker()
    os.kill(worker, signal.SIGSTOP)  # hangs: alive, silent
    t0 = time.monotonic()
    res = cli.finish()
    assert time.monotonic() - t0 < 60
    assert_user_error(res, "no progress for 2 s")
    assert not _alive(worker)
    assert snapshot_dir(demo_project) == before  # nothing half-measured was stored


def test_ctrl_c_during_a_profile(demo_project):
    before = snapshot_dir(demo_project)
    # many iterations: the profile is still running when Ctrl+C comes
    cli = Cli("profile", "perf", demo_project, "--engine", "onnxruntime", "--iterations", "2000", "--warmup", "1",
              "--repeats", "1")
    cli.wait_line("compiling")
    worker = cli.worker()
    send_sigint(cli.proc, group=True)  # the terminal's Ctrl+C goes to the foreground process group
    res = cli.finish()
    assert "Traceback" not in res.stderr
    assert res.returncode == 130
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: interrupted; saved work is kept"], res.stderr
    time.sleep(0.5)
    assert not _alive(worker), "the engine worker outlived Ctrl+C"
    assert snapshot_dir(demo_project) == before


# SIGINT delivered to the process itself at the N-th fsync: inside a save, between writing the temporary
# file and renaming it (the profile JSON first, then project.toml and its .bak)
SIGINT_AT_FSYNC = """
import os, signal
_fsync = os.fsync
_n = [0]
def _fsync_then_ctrl_c(fd):
    _fsync(fd)
    _n[0] += 1
    if _n[0] == {n}:
        os.kill(os.getpid(), signal.SIGINT)
os.fsync = _fsync_then_ctrl_c
"""


@pytest.mark.parametrize("command,n", [("loss", 1), ("loss", 2), ("loss", 3), ("optimize", 1), ("optimize", 2)])
def test_ctrl_c_during_a_save(project, command, n):
    from sparsify_tui.cli import main
    from sparsify_tui.project import Project

    assert main(["optimize", str(project), "--sparsity", "0.5"]) == 0
    old_toml = (project / "project.toml").read_text()
    args = ("profile", "loss", project) if command == "loss" else ("optimize", project, "--sparsity", "0.7")
    cli = Cli(*args, pre=SIGINT_AT_FSYNC.replace("{n}", str(n)))
    res = cli.finish()
    assert "Traceback" not in res.stderr
    assert res.returncode == 130, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: interrupted; saved work is kept"], res.stderr
    # the project is old or new, never torn; every listed profile loads; no temporary file is left
    p = Project.open(project)
    assert not p.readonly, p.notices
    for e in p.profiles:
        assert p.load_profile(e)["kind"] == e.kind
    assert [o["name"] for o in p.optimizations] == ["default"]
    p.close()
    assert not [f for f in project.rglob("*") if f.name.endswith(".tmp")]
    new_toml = (project / "project.toml").read_text()
    assert new_toml == old_toml or ("loss" in new_toml if command == "loss" else new_toml != old_toml)
    if command == "optimize":  # the optimization is the old one (0.5) or the new one (0.7), complete
        from sparsify_tui.project import Project as P

        q = P.open(project, readonly=True)
        assert q.get_optimization("default")["pruning"]["target_sparsity"] in (0.5, 0.7)


@pytest.mark.parametrize("n", [1, 2])
def test_ctrl_c_during_new_leaves_no_half_project(tmp_path, demo_model, n):
    dest = tmp_path / "proj"
    res = Cli("new", demo_model, "--dir", dest, pre=SIGINT_AT_FSYNC.replace("{n}", str(n))).finish()
    assert "Traceback" not in res.stderr and res.returncode == 130, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error:")] == \
        ["error: interrupted; saved work is kept"]
    assert not dest.exists() or not (dest / "project.toml").exists()
    res = Cli("new", demo_model, "--dir", dest).finish()  # trying again just works
    assert res.returncode == 0, res.stderr
    from sparsify_tui.project import Project

    Project.open(dest, readonly=True)
