"""Job kind ``perf``: a performance profile (see :mod:`sparsify_tui.profiles.perf`)."""

from __future__ import annotations

from sparsify_tui.engines.jobs import register


@register("perf")
def perf(job: dict, ctx) -> dict:
    from sparsify_tui.profiles.perf import perf_job

    return perf_job(job, ctx)
