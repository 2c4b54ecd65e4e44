"""Run a measurement job in a child process and stream its events.

:func:`run_job` starts ``python -m sparsify_tui.jobs.worker`` in its own
process group, writes the job as JSON on its stdin and reads JSON lines from
its stdout (see :mod:`sparsify_tui.jobs.worker` for the protocol).

* ``on_progress(event)`` is called (in the calling thread) with every
  ``started`` (carries the child's ``pid``), ``progress``, ``partial``,
  ``heartbeat`` and ``log`` event as it arrives;
  ``partial`` events carry finished pieces (e.g. one sparsity level) that the
  caller keeps even if the child dies later. The partial ``data`` dicts are
  also attached to the raised exception as ``exc.partials``.
* ``cancel`` (a ``threading.Event``): when set, the child's process group is
  killed and :class:`CancelledError` is raised.
* ``timeout_s``: the child must send an event (progress or heartbeat) at least
  this often; a child silent for longer is killed and :class:`EngineError`
  says so. Jobs send one at the start and end of each level, so this is a
  per-level time limit.
* ``cores``: the child pins itself to that many CPUs (``os.sched_setaffinity``)
  and sizes the engines' thread pools to it.
* A crash (segfault, abort, non-zero exit, or exit without a result) raises
  :class:`EngineError` whose ``output_tail`` holds the last ~20 lines the
  child wrote on stderr (engine messages included), and whose message ends
  with the engine's own last telling line (``Assertion at ...``, ``Segmentation
  fault``, ``...Error: ...``), which a long native backtrace would otherwise
  push out of the tail.
* Ctrl+C (KeyboardInterrupt) in the parent kills the child before propagating.
"""

from __future__ import annotations

import collections
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sparsify_tui import errors
from sparsify_tui.errors import CancelledError, EngineError, SparsifyError

TAIL_LINES = 20
# A line of an engine's dying output that says what went wrong (not a backtrace frame).
_TELLING = re.compile(r"(Assertion|assert|Segmentation fault|Abort|Fatal|FATAL|Killed|MemoryError|"
                      r"[A-Za-z]+Error\b|[A-Za-z]+Exception\b|error:|what\(\))")
_FRAME = re.compile(r"^\s*(\d+#|\[[0-9a-f]{16,}\]|File \"|at 0x|#\d+ )")


def telling_line(line: str) -> bool:
    """True for an output line that says why an engine died (and is not a backtrace frame)."""
    return bool(_TELLING.search(line)) and not _FRAME.match(line)
_PKG_PARENT = str(Path(__file__).resolve().parent.parent.parent)


def _error_class(name: str | None) -> type[SparsifyError]:
    cls = getattr(errors, name or "", None)
    if isinstance(cls, type) and issubclass(cls, SparsifyError):
        return cls
    return EngineError


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


def _child_env(env: dict[str, str] | None) -> dict[str, str]:
    """The worker's environment: ours, analytics off, unbuffered, this package first on the path."""
    child_env = dict(os.environ)
    child_env["NM_DISABLE_ANALYTICS"] = "1"
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + child_env["PYTHONPATH"] if child_env.get("PYTHONPATH") else "")
    if env:
        child_env.update(env)
    return child_env


class _Worker:
    """One worker child process: started with the job on its stdin, its stderr tail kept, its events read."""

    def __init__(self, job: dict, env: dict[str, str]) -> None:
        self.kind = str(job.get("kind", ""))
        self.partials: list[dict] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.telling: list[str] = []  # the last telling line of the child's stderr
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparsify_tui.jobs.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # own process group: we kill it whole; a terminal's Ctrl+C reaches us only
        )
        self._err_thread = threading.Thread(target=self._read_stderr, name="worker-stderr", daemon=True)
        self._err_thread.start()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(job).encode("utf-8"))
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.strip():
                self.tail.append(line)
                if telling_line(line):
                    self.telling[:] = [line.strip()[:200]]

    def output_tail(self) -> str:
        self._err_thread.join(timeout=2)
        return "\n".join(self.tail)

    def fail(self, exc: SparsifyError) -> SparsifyError:
        """``exc`` with the partial data received so far attached."""
        exc.partials = self.partials  # type: ignore[attr-defined]
        return exc

    def events(self, cancel: threading.Event | None, timeout_s: float | None) -> Any:
        """Yield the child's JSON events until its stdout closes; kill it and raise on cancel or silence."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        last_event = time.monotonic()
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    _kill_group(self.proc)
                    raise self.fail(CancelledError(f"the {self.kind} job was cancelled"))
                if timeout_s is not None and time.monotonic() - last_event > timeout_s:
                    _kill_group(self.proc)
                    raise self.fail(EngineError(
                        f"the {self.kind} job was stopped: no progress for {timeout_s:g} s (time limit per step)",
                        output_tail=self.output_tail(),
                    ))
                if not sel.select(timeout=0.1):
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        self.tail.append(line.decode("utf-8", "replace"))
                        continue
                    last_event = time.monotonic()
                    yield event
                if not chunk:
                    return
        finally:
            sel.close()

    def wait(self, finished: bool) -> int | None:
        """The child's exit status (it gets longer to exit after its last event); killed when it hangs."""
        try:
            return self.proc.wait(timeout=30 if finished else 10)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
            return self.proc.returncode

    def error_from(self, event: dict) -> SparsifyError:
        """The exception of the job's ``error`` event, of the class the job raised."""
        cls = _error_class(event.get("type"))
        message = str(event.get("message") or "the engine failed")
        exc = cls(message, hint=event.get("hint")) if cls is not EngineError else EngineError(
            message, output_tail=self.output_tail(), hint=event.get("hint"))
        if isinstance(exc, EngineError):
            exc.output_tail = self.output_tail()
        return exc

    def crash_error(self, code: int | None) -> EngineError:
        """The child ended without a result or an error event."""
        tail_text = self.output_tail()
        said = f"; it said: {self.telling[0]}" if self.telling else ""
        return EngineError(f"the {self.kind} job's engine process {_describe_exit(code)} before finishing{said}",
                           output_tail=tail_text)

    def close(self) -> None:
        if self.proc.poll() is None:
            _kill_group(self.proc)
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


def run_job(
    job: dict,
    *,
    on_progress: Callable[[dict], Any] | None = None,
    cancel: threading.Event | None = None,
    timeout_s: float | None = None,
    cores: int | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """Run ``job`` in a worker child process; return its result data.

    Raises EngineError (crash, time limit, engine failure; ``output_tail`` set),
    CancelledError (``cancel`` set), or the SparsifyError subclass the job raised.
    """
    kind = str(job.get("kind", ""))
    if kind.startswith("_") and os.environ.get("SPARSIFY_TUI_TEST_JOBS") != "1":
        raise errors.UsageError(f"job kind {kind!r} is for tests only")
    job = dict(job)
    if cores is not None:
        job["cores"] = int(cores)
    worker = _Worker(job, _child_env(env))
    result: dict | None = None
    error_event: dict | None = None
    try:
        for event in worker.events(cancel, timeout_s):
            kind_ev = event.get("event")
            if kind_ev == "result":
                result = event.get("data") or {}
                break
            if kind_ev == "error":
                error_event = event
                break
            if kind_ev == "partial":
                worker.partials.append(event.get("data") or {})
            if on_progress is not None:
                on_progress(event)
        code = worker.wait(finished=result is not None or error_event is not None)
        if result is not None:
            return result
        raise worker.fail(worker.error_from(error_event) if error_event is not None else worker.crash_error(code))
    except KeyboardInterrupt:
        _kill_group(worker.proc)
        raise
    finally:
        worker.close()
