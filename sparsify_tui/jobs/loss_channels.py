"""Job kind ``loss_channels``: the worker side of :func:`sparsify_tui.profiles.loss_channels.run_channel_loss_profile`."""

from __future__ import annotations

from sparsify_tui.jobs import JobContext, profile_job_args, register


@register("loss_channels")
def loss_channels_job(job: dict, ctx: JobContext) -> dict:
    """Worker side of job kind ``loss_channels``."""
    from sparsify_tui.profiles.loss_channels import compute_channel_loss

    args = profile_job_args("loss_channels", job, ctx)
    return compute_channel_loss(job["model_path"], scores_fn=_l2_scores, fractions=job.get("fractions"), **args)


def _l2_scores(dense, cmap):
    """The l2 ranking of ``prune --structure channels --method l2`` (optim computes it; profiles cannot import optim)."""
    from sparsify_tui.optim.channels import l2_scores

    return l2_scores(dense, cmap)
