"""Job kinds for the runner's tests only (registered when SPARSIFY_TUI_TEST_JOBS=1)."""

from __future__ import annotations

import os
import signal
import sys
import time

from sparsify_tui.jobs import register


@register("_test_echo")
def echo(job: dict, ctx) -> dict:
    print("engine chatter on stdout must not break the protocol")
    for i in range(int(job.get("steps", 3))):
        ctx.progress(i + 1, int(job.get("steps", 3)), label=f"step {i + 1}")
        ctx.partial({"step": i + 1})
    return {"echo": job.get("payload"), "affinity": sorted(os.sched_getaffinity(0))}


@register("_test_crash")
def crash(job: dict, ctx) -> dict:
    ctx.partial({"level": "0.0", "ms": 1.0})
    print("about to crash: last words of the engine", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)
    return {}


@register("_test_hang")
def hang(job: dict, ctx) -> dict:
    ctx.progress(0, 1, label="hanging")
    time.sleep(float(job.get("seconds", 60)))
    return {}


@register("_test_slow_steps")
def slow_steps(job: dict, ctx) -> dict:
    """Sends a partial every ``delay`` seconds, ``steps`` times (for kill-mid-job tests)."""
    steps = int(job.get("steps", 10))
    for i in range(steps):
        time.sleep(float(job.get("delay", 0.5)))
        ctx.partial({"step": i + 1, "pid": os.getpid()})
    return {"steps": steps}


@register("_test_error")
def error(job: dict, ctx) -> dict:
    from sparsify_tui.errors import ProfileError

    raise ProfileError("the test job failed on purpose")
