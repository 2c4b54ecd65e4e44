"""Job kind ``quant``: the worker side of :func:`sparsify_tui.profiles.quant.run_quant_profile`."""

from __future__ import annotations

from sparsify_tui.jobs import JobContext, profile_job_args, register
from sparsify_tui.profiles.quant import compute_quant


@register("quant")
def quant_job(job: dict, ctx: JobContext) -> dict:
    """Worker side of job kind ``quant``."""
    args = profile_job_args("quant", job, ctx)
    return compute_quant(job["model_path"], whole_model=bool(job.get("whole_model", True)), **args)
