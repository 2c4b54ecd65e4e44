"""Job kind ``quant`` (owned by the quantization profile, engineer D): see :mod:`sparsify_tui.profiles.quant`."""

from __future__ import annotations

from sparsify_tui.engines.jobs import register


@register("quant")
def quant(job: dict, ctx) -> dict:
    from sparsify_tui.profiles.quant import quant_job

    return quant_job(job, ctx)
