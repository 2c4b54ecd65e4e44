"""Job kind ``perf_channels``: each channel group's time saved with a fraction of its channels removed.

Every variant is a physically smaller file (:func:`sparsify_tui.onnxkit.channels.remove_channels`; INT8: the
pruned file quantized as the deployment search does), compiled on the chosen engine and precision and timed
against the dense model compiled once in the same process: dense and variant blocks (each the median of
``iterations`` runs) alternate, the order flipping each repeat, so both see the same drift and load; a
variant's ratio is its fastest block over the fastest dense block among those interleaved with it (the
least-disturbed of each, as the A/B benchmark does), and its saving is ``dense_ms * (1 - ratio)`` with
``dense_ms`` the fastest dense block of the run.

Compiles: ``1 + measured groups x fractions``. Only the ``max_groups`` groups that remove the most FLOPs at
the middle fraction are measured one by one; the others (each a small share of the model) get the measured
groups' pooled saving per removed FLOP at the same fraction (``estimated: true`` in their rows).

For the estimator the result keeps, for every group and fraction, the FLOPs it removes from each layer
(``removed_flops``: layer id -> FLOPs; from the analysis of the pruned file), and the dense FLOPs of those
layers (``layer_flops``): a layer between two pruned groups loses ``1 - (1-a)(1-b)`` of its FLOPs, not
``a + b`` (:func:`sparsify_tui.optim.channel_estimate.estimate_channel_speedup`).

Job keys: ``model_path``, ``engine``, ``precision``, ``batch_size``, ``cores``, ``input_shapes``, ``data``,
``fractions``, ``max_groups``, ``repeats`` (pairs per variant), ``warmup``, ``min_block_ms``.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from sparsify_tui.jobs import register

MIN_BLOCK_MS = 120.0
MAX_ITERATIONS = 2000
MAX_GROUPS = 12
CALIBRATION_SAMPLES = 4


def removed_count(channels: int, fraction: float) -> int:
    """Channels removed from a group of ``channels`` at ``fraction``: rounded, at least 1, one kept."""
    return max(1, min(channels - 1, int(round(fraction * channels))))


def _block(fn: Callable[[], Any], iterations: int) -> float:
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def _layer_flops(model: Any, shapes: dict | None) -> dict[str, int]:
    from sparsify_tui.analysis import analyze

    g = analyze(model, shapes or None)
    return {la.id: int(la.flops or 0) for la in g.layers}


@register("perf_channels")
def perf_channels_job(job: dict, ctx) -> dict[str, Any]:  # noqa: C901 - the steps are short and in order
    import onnx

    from sparsify_tui.analysis.shapes import infer
    from sparsify_tui.engines.inputs import input_specs, load_samples_for, make_inputs
    from sparsify_tui.engines.registry import get_engine, resolve_auto
    from sparsify_tui.errors import ProfileError
    from sparsify_tui.onnxkit.channels import find_groups, remove_channels

    path = str(job["model_path"])
    fractions = sorted({float(f) for f in job.get("fractions") or (0.25, 0.5, 0.75)})
    batch = int(job.get("batch_size", 1))
    cores = job.get("cores")
    shapes = job.get("input_shapes") or {}
    precision = job.get("precision") or "fp32"
    repeats = max(1, int(job.get("repeats", 3)))
    warmup = max(0, int(job.get("warmup", 3)))
    max_groups = max(1, int(job.get("max_groups", MAX_GROUPS)))
    min_block = float(job.get("min_block_ms", MIN_BLOCK_MS))
    engine, reason = resolve_auto(job.get("engine", "auto"))
    spec = get_engine(engine)

    model = onnx.load(path)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    tshapes = infer(model, opset)[1]
    groups = [g for g in find_groups(model, tshapes) if g.prunable]
    if not groups:
        raise ProfileError("the model has no prunable channel group: no channel perf profile to measure")
    dense_flops = _layer_flops(model, shapes)
    names = [s.name for s in input_specs(path, shapes)]
    inputs = make_inputs(path, batch, shapes, data=job.get("data"))
    calib = None
    if precision == "int8":
        from sparsify_tui.analysis import analyze

        calib = load_samples_for(path, analyze(path, shapes or None), data=job.get("data"),
                                 samples=CALIBRATION_SAMPLES, input_shapes=shapes)

    def removed_flops(gid: str, channels: int, f: float) -> tuple[Any, dict[str, int]]:
        small = remove_channels(model, {gid: range(removed_count(channels, f))}, tshapes)
        after = _layer_flops(small, shapes)
        return small, {k: v - after.get(k, 0) for k, v in dense_flops.items() if v - after.get(k, 0) > 0}

    # rank: FLOPs each group removes at the middle fraction (an analysis only, no engine)
    mid = fractions[len(fractions) // 2]
    ranked: list[tuple[int, Any, dict[str, int]]] = []
    for i, g in enumerate(groups):
        ctx.progress(i, len(groups), label=f"FLOPs of group {g.id}")
        _, rem = removed_flops(g.id, g.channels, mid)
        ranked.append((sum(rem.values()), g, rem))
    ranked.sort(key=lambda r: -r[0])
    measured = [g for _, g, _ in ranked[:max_groups]]
    rest = [(g, rem) for _, g, rem in ranked[max_groups:]]

    with tempfile.TemporaryDirectory(prefix="sparsify-chperf-") as tmp:
        def compiled(src: Any, stem: str) -> Callable[[], Any]:
            if isinstance(src, (str, Path)):
                p = Path(src)
            else:
                p = Path(tmp) / f"{stem}.onnx"
                onnx.save(src, str(p))
            if calib is not None:
                from sparsify_tui.profiles.quant import quantize_file

                q = Path(tmp) / f"{stem}.int8.onnx"
                quantize_file(p, q, calib)
                p = q
            with spec.prepared(str(p)) as (pp, _note):
                return spec.runner(pp, inputs, names=names, batch_size=batch, cores=cores,
                                   precision=precision, tmp=tmp)

        total = len(measured) * len(fractions) + 1
        ctx.progress(0, total, label=f"compiling the dense model ({engine})")
        t0 = time.perf_counter()
        run_dense = compiled(path, "dense")
        compile_s = time.perf_counter() - t0
        for _ in range(warmup):
            run_dense()
        one = _block(run_dense, 3)
        iterations = max(3, min(MAX_ITERATIONS, math.ceil(min_block / one))) if one > 0 else 3
        dense_blocks: list[float] = []
        rows: list[dict[str, Any]] = []
        step = 1
        for g in measured:
            for f in fractions:
                k = removed_count(g.channels, f)
                ctx.progress(step, total, label=f"group {g.id}: {k}/{g.channels} channels removed")
                small, rem = removed_flops(g.id, g.channels, f)
                run_v = compiled(small, f"v{step}")
                for _ in range(warmup):
                    run_v()
                pairs, ds, vs = [], [], []
                for r in range(repeats):
                    if r % 2 == 0:
                        d, v = _block(run_dense, iterations), _block(run_v, iterations)
                    else:
                        v, d = _block(run_v, iterations), _block(run_dense, iterations)
                    ds.append(d)
                    vs.append(v)
                    pairs.append(v / d if d > 0 else 1.0)
                del run_v
                dense_blocks += ds
                ratio = min(vs) / min(ds) if min(ds) > 0 else 1.0
                row = {"group": g.id, "fraction": f, "removed": k, "channels": g.channels, "ratio": ratio,
                       "ratio_spread": [min(pairs), max(pairs)], "removed_flops": rem, "estimated": False}
                rows.append(row)
                ctx.partial({"row": row})
                step += 1
        dense_ms = min(dense_blocks) if dense_blocks else one
        for row in rows:
            row["saved_ms"] = dense_ms * (1.0 - row["ratio"])
        # the groups not measured: the measured groups' pooled ms per removed FLOP at the same fraction
        for f in fractions:
            at = [r for r in rows if r["fraction"] == f]
            flops = sum(sum(r["removed_flops"].values()) for r in at)
            per_flop = sum(r["saved_ms"] for r in at) / flops if flops > 0 else 0.0
            for g, rem_mid in rest:
                scale = removed_count(g.channels, f) / removed_count(g.channels, mid)
                rem = {lid: int(round(v * scale)) for lid, v in rem_mid.items()}
                rows.append({"group": g.id, "fraction": f, "removed": removed_count(g.channels, f),
                             "channels": g.channels, "ratio": None, "removed_flops": rem, "estimated": True,
                             "saved_ms": per_flop * sum(rem.values())})
    touched = {lid for r in rows for lid in r["removed_flops"]}
    ctx.progress(total, total, label="done")
    return {
        "engine": engine, "engine_version": spec.version(), "engine_reason": reason, "precision": precision,
        "batch_size": batch, "cores": cores, "fractions": fractions, "repeats": repeats, "iterations": iterations,
        "dense_ms": dense_ms, "dense_block_ms": dense_blocks, "compile_s": compile_s,
        "measured_groups": [g.id for g in measured], "estimated_groups": [g.id for g, _ in rest],
        "groups": [{"id": g.id, "channels": g.channels, "producers": list(g.producers)} for g in groups],
        "layer_flops": {lid: dense_flops[lid] for lid in sorted(touched)},
        "total_flops": sum(dense_flops.values()),
        "rows": rows,
    }
