"""Job kind ``loss_one_shot``: the worker side of :func:`sparsify_tui.profiles.loss.run_loss_profile`."""

from __future__ import annotations

from sparsify_tui.jobs import JobContext, profile_job_args, register
from sparsify_tui.profiles.loss import compute_one_shot


@register("loss_one_shot")
def loss_one_shot_job(job: dict, ctx: JobContext) -> dict:
    """Worker side of job kind ``loss_one_shot``."""
    args = profile_job_args("loss_one_shot", job, ctx)
    return compute_one_shot(job["model_path"], levels=job.get("levels"),
                            eval_sparsity=float(job.get("eval_sparsity", 0.9)),
                            prune_method=str(job.get("prune_method") or "magnitude"),
                            pruner_factory=_calibrated_pruner, **args)


def _calibrated_pruner(*args, **kwargs):
    """The Wanda/SparseGPT weights of ``--prune-method`` (optim builds them; profiles cannot import optim)."""
    from sparsify_tui.optim.calibrated import CalibratedPruner

    return CalibratedPruner(*args, **kwargs)
