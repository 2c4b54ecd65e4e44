"""Job kind ``loss_one_shot`` (owned by the loss profile, engineer D): see :mod:`sparsify_tui.profiles.loss`."""

from __future__ import annotations

from sparsify_tui.engines.jobs import register


@register("loss_one_shot")
def loss_one_shot(job: dict, ctx) -> dict:
    from sparsify_tui.profiles.loss import loss_one_shot_job

    return loss_one_shot_job(job, ctx)
