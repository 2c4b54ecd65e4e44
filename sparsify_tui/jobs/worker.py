"""The measurement child process: ``python -m sparsify_tui.jobs.worker``.

Protocol: the parent writes one job (a JSON object with a ``kind``) on stdin
and closes it. The worker writes JSON lines on its stdout::

    {"event": "started", "pid": 1234, "kind": "perf"}         # first line
    {"event": "progress", "done": 1, "total": 10, "label": "level 0.4"}
    {"event": "heartbeat", "label": "..."}
    {"event": "partial", "data": {...}}
    {"event": "log", "message": "..."}
    {"event": "result", "data": {...}}          # last line on success
    {"event": "error", "message": "...", "type": "EngineError"}   # last line on failure

Engines print banners and warnings on stdout (DeepSparse does), so the first
thing the worker does is keep a private duplicate of the real stdout for the
protocol and point file descriptor 1 at stderr: anything an engine prints
ends up in stderr, which the parent keeps as the output tail of a crash.

Job kinds live in :mod:`sparsify_tui.jobs` (see there how to add one).
"""

from __future__ import annotations

import os

os.environ["NM_DISABLE_ANALYTICS"] = "1"

import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

_lock = threading.Lock()
_proto = None  # the protocol channel (a file on a dup of the original stdout)


def _setup_channels() -> None:
    global _proto
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)  # engine chatter on fd 1 now goes to stderr
    _proto = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
    sys.stdout = sys.stderr


def _json_default(o: Any) -> Any:
    """The package's JSON default; anything else is sent as its text (an event is never lost to its data)."""
    from sparsify_tui.fsutil import json_default

    try:
        return json_default(o)
    except TypeError:
        return str(o)


def emit(event: dict) -> None:
    line = json.dumps(event, default=_json_default)
    with _lock:
        assert _proto is not None
        _proto.write(line + "\n")
        _proto.flush()


def _min_cpus(job: dict) -> int:
    """The CPUs the job's engine needs in its mask: its own ``min_cpus``; for ``auto``, several engines or a
    name the job rejects itself, the most any engine needs."""
    from sparsify_tui.engines.registry import engine_names, engines, get_engine

    name = str(job.get("engine", "auto")).strip().lower()
    if name in engine_names():
        return get_engine(name).min_cpus
    return max((s.min_cpus for s in engines()), default=1)


def _apply_cores(cores: int | None, job: dict) -> None:
    """Pin this process to ``cores`` CPUs (the first ones it may use) and size thread pools.

    Exception: an engine may need more CPUs in its mask than it runs threads
    (its registration's ``min_cpus``): DeepSparse never finishes compiling sparse
    kernels (``imposed_ks``) in a process allowed on a single CPU (measured: stuck
    > 5 min where 2 CPUs take 2 s), so a job that may run DeepSparse (``auto``, the
    deployment search) keeps at least 2 CPUs in its mask; the engine itself still
    runs ``num_cores=cores`` worker threads.
    """
    if not cores:
        return
    try:
        allowed = sorted(os.sched_getaffinity(0))
        n = max(1, min(int(cores), len(allowed)))
        if not str(job.get("kind", "")).startswith("_"):
            n = max(n, min(_min_cpus(job), len(allowed)))
        os.sched_setaffinity(0, allowed[:n])
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NM_NUM_THREADS"):
        os.environ[var] = str(cores)


def main() -> int:
    _setup_channels()
    try:
        raw = sys.stdin.read()
        job = json.loads(raw)
        if not isinstance(job, dict) or "kind" not in job:
            raise ValueError("a job must be a JSON object with a 'kind'")
    except ValueError as exc:
        emit({"event": "error", "message": f"bad job: {exc}", "type": "EngineError"})
        return 3
    cores = job.get("cores")
    _apply_cores(cores, job)
    emit({"event": "started", "pid": os.getpid(), "kind": str(job["kind"])})

    from sparsify_tui.jobs import JobContext, find
    from sparsify_tui.errors import SparsifyError

    kind = str(job["kind"])
    try:
        func = find(kind)
    except Exception as exc:  # a broken job module
        traceback.print_exc()
        emit({"event": "error", "message": f"could not load job kind {kind!r}: {exc}", "type": "EngineError"})
        return 3
    if func is None:
        emit({"event": "error", "message": f"unknown job kind {kind!r}", "type": "EngineError"})
        return 3
    ctx = JobContext(emit, cores=cores)
    try:
        data = func(job, ctx)
    except SparsifyError as exc:
        hint = exc.hint
        if not hint and job.get("data") is None and "failed to run" in exc.message:
            from sparsify_tui.engines.inputs import synthetic_hint

            # a model that branches on an input's value fails on random ones (a failure the fed shapes
            # explain carries its own hint instead)
            hint = synthetic_hint(job.get("input_values"))
        emit({"event": "error", "message": exc.message, "type": type(exc).__name__,
              "hint": hint})
        return 4
    except Exception as exc:
        traceback.print_exc()
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}", "type": "EngineError",
              "traceback": traceback.format_exc()[-4000:]})
        return 5
    emit({"event": "result", "data": data if data is not None else {}})
    return 0


if __name__ == "__main__":
    code = main()
    try:
        sys.stderr.flush()
    finally:
        # skip interpreter teardown: some engines crash in their atexit handlers
        os._exit(code)
