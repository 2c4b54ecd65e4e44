"""Job kind ``loss_one_shot``: the worker side of :func:`sparsify_tui.profiles.loss.run_loss_profile`."""

from __future__ import annotations

from sparsify_tui.errors import ProfileError
from sparsify_tui.jobs import JobContext, register
from sparsify_tui.profiles.loss import compute_one_shot


@register("loss_one_shot")
def loss_one_shot_job(job: dict, ctx: JobContext) -> dict:
    """Worker side of job kind ``loss_one_shot``."""
    if not job.get("model_path"):
        raise ProfileError("the loss_one_shot job needs a model_path")
    return compute_one_shot(
        job["model_path"],
        data=job.get("data"),
        samples=int(job.get("samples") or 4),
        levels=job.get("levels"),
        input_shapes=job.get("input_shapes") or None,
        eval_sparsity=float(job.get("eval_sparsity", 0.9)),
        on_progress=lambda ev: ctx.progress(ev["done"], ev["total"], ev.get("label", "")),
        on_partial=ctx.partial,
        cores=ctx.cores,
        prune_method=str(job.get("prune_method") or "magnitude"),
        pruner_factory=_calibrated_pruner,
    )


def _calibrated_pruner(*args, **kwargs):
    """The Wanda/SparseGPT weights of ``--prune-method`` (optim builds them; profiles cannot import optim)."""
    from sparsify_tui.optim.calibrated import CalibratedPruner

    return CalibratedPruner(*args, **kwargs)
