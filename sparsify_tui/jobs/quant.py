"""Job kind ``quant``: the worker side of :func:`sparsify_tui.profiles.quant.run_quant_profile`."""

from __future__ import annotations

from sparsify_tui.errors import ProfileError
from sparsify_tui.jobs import JobContext, register
from sparsify_tui.profiles.quant import compute_quant


@register("quant")
def quant_job(job: dict, ctx: JobContext) -> dict:
    """Worker side of job kind ``quant``."""
    if not job.get("model_path"):
        raise ProfileError("the quant job needs a model_path")
    return compute_quant(
        job["model_path"],
        data=job.get("data"),
        samples=int(job.get("samples") or 4),
        input_shapes=job.get("input_shapes") or None,
        on_progress=lambda ev: ctx.progress(ev["done"], ev["total"], ev.get("label", "")),
        on_partial=ctx.partial,
        cores=ctx.cores,
        whole_model=bool(job.get("whole_model", True)),
    )
