"""The worker child process and its runner: protocol, crash, time limit, cancel, kill."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from sparsify_tui.engines.runner import run_job
from sparsify_tui.errors import CancelledError, EngineError, ProfileError, UsageError


@pytest.fixture
def test_jobs(monkeypatch):
    monkeypatch.setenv("SPARSIFY_TUI_TEST_JOBS", "1")


def test_protocol_survives_stdout_chatter_and_pins_cores(test_jobs):
    events = []
    res = run_job({"kind": "_test_echo", "payload": {"x": [1, 2]}, "steps": 3}, on_progress=events.append, cores=1)
    assert res["echo"] == {"x": [1, 2]}
    assert len(res["affinity"]) == 1  # pinned to one CPU
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and isinstance(events[0]["pid"], int)
    assert [e["data"]["step"] for e in events if e["event"] == "partial"] == [1, 2, 3]
    assert [e["done"] for e in events if e["event"] == "progress"] == [1, 2, 3]


def test_segfault_becomes_engine_error_with_output_tail(test_jobs):
    with pytest.raises(EngineError) as info:
        run_job({"kind": "_test_crash"})
    assert "SIGSEGV" in str(info.value)
    assert "last words of the engine" in info.value.output_tail
    assert info.value.partials == [{"level": "0.0", "ms": 1.0}]


def test_silent_child_is_killed_by_the_time_limit(test_jobs):
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="no progress for 1 s"):
        run_job({"kind": "_test_hang", "seconds": 60}, timeout_s=1)
    assert time.monotonic() - t0 < 15


def test_cancel_kills_the_child(test_jobs):
    cancel = threading.Event()
    pids = []

    def on_progress(ev):
        if ev["event"] == "started":
            pids.append(ev["pid"])
        if ev["event"] == "partial" and ev["data"]["step"] == 2:
            cancel.set()

    with pytest.raises(CancelledError) as info:
        run_job({"kind": "_test_slow_steps", "steps": 50, "delay": 0.1}, on_progress=on_progress, cancel=cancel)
    assert [p["step"] for p in info.value.partials] == [1, 2]
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_sigkill_mid_job_keeps_partials(test_jobs):
    def on_progress(ev):
        if ev["event"] == "partial" and ev["data"]["step"] == 3:
            os.kill(ev["data"]["pid"], signal.SIGKILL)

    with pytest.raises(EngineError, match="SIGKILL") as info:
        run_job({"kind": "_test_slow_steps", "steps": 50, "delay": 0.05}, on_progress=on_progress)
    assert [p["step"] for p in info.value.partials] == [1, 2, 3]


def test_job_errors_keep_their_class(test_jobs):
    with pytest.raises(ProfileError, match="failed on purpose"):
        run_job({"kind": "_test_error"})
    with pytest.raises(EngineError, match="unknown job kind"):
        run_job({"kind": "no_such_kind"})


def test_test_kinds_are_unreachable_without_the_switch(monkeypatch):
    import json
    import subprocess

    monkeypatch.delenv("SPARSIFY_TUI_TEST_JOBS", raising=False)
    with pytest.raises(UsageError):
        run_job({"kind": "_test_crash"})
    # the worker itself does not register them either
    out = subprocess.run([sys.executable, "-m", "sparsify_tui.jobs.worker"],
                         input=json.dumps({"kind": "_test_crash"}), capture_output=True, text=True,
                         env=dict(os.environ), timeout=60)
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["event"] == "error" and "unknown job kind" in last["message"]
    assert out.returncode != 0


def test_ctrl_c_in_the_parent_kills_the_child(test_jobs):
    import subprocess

    code = (
        "import sys\n"
        "from sparsify_tui.engines.runner import run_job\n"
        "def cb(ev):\n"
        "    if ev['event'] == 'started':\n"
        "        print(ev['pid'], flush=True)\n"
        "try:\n"
        "    run_job({'kind': '_test_hang', 'seconds': 120}, on_progress=cb)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    sys.exit(130)\n"
    )
    from tests.conftest import interruptible_popen, send_sigint

    parent = interruptible_popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    child_pid = int(parent.stdout.readline())
    os.kill(child_pid, 0)  # alive
    send_sigint(parent)
    assert parent.wait(timeout=30) == 130
    assert parent.stdout.read().strip() == "interrupted"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker survived the parent's Ctrl+C")


def test_real_engine_abort_names_its_assertion_in_one_line(corpus):
    """DeepSparse 1.8 aborts (assertion + ~30 native backtrace frames) compiling the light ResNet-50,
    whose Reshape hard-codes batch 1, at batch size 2. The user's one error line names the assertion,
    which the backtrace would have pushed out of the output tail."""
    import subprocess

    from tests.conftest import deepsparse_available

    if not deepsparse_available():
        pytest.skip("needs DeepSparse")
    p = subprocess.run([sys.executable, "-m", "sparsify_tui", "benchmark", str(corpus.path("resnet50")),
                        "--engine", "deepsparse", "--batch-size", "2", "--iterations", "2", "--warmup", "1",
                        "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, p.stderr
    assert "exited with status" in errors[0] and "it said: Assertion at " in errors[0], errors[0]


def test_telling_line_skips_backtrace_frames():
    from sparsify_tui.engines.runner import telling_line

    assert telling_line("Assertion at ./src/include/wand/engine/compute/planner.hpp:70")
    assert telling_line("RuntimeError: NM: error: cannot compile")
    assert telling_line("Segmentation fault (core dumped)")
    assert not telling_line(" 2# wand::engine::compiler::compiler::compile(wand::engine::intake::graph&&) const")
    assert not telling_line("    [4518488b4d104c8d4d806a00488bb5f8feffff4489e24889c74989c5e874ebff]")
    assert not telling_line('  File "/x/y.py", line 3, in f')
    assert not telling_line("Cores/sockets/threads: [2, 1, 2]")
