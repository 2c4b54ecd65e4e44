"""Job kind ``benchmark``: latency of one model at one batch size and core count."""

from __future__ import annotations

from sparsify_tui.jobs import register


@register("benchmark")
def benchmark(job: dict, ctx) -> dict:
    from sparsify_tui.engines.bench import benchmark_model

    ctx.progress(0, 1, label=f"compiling {job['model_path']}")
    res = benchmark_model(
        job["model_path"], engine=job.get("engine", "auto"), batch_size=int(job.get("batch_size", 1)),
        cores=job.get("cores"), iterations=int(job.get("iterations", 20)), warmup=int(job.get("warmup", 5)),
        repeats=int(job.get("repeats", 3)), input_shapes=job.get("input_shapes") or {}, data=job.get("data"),
        heartbeat=ctx.heartbeat, precision=job.get("precision"),
        input_values=job.get("input_values") or None, remeasure=job.get("remeasure"),
        wait_idle_s=float(job.get("wait_idle_s") or 0.0),
    )
    ctx.progress(1, 1, label=f"{res['median_ms']:.2f} ms")
    return res
