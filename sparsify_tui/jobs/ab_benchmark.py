"""Job kind ``ab_benchmark``: dense against pruned, timed in one process, interleaved.

On a noisy 2-core machine two separate benchmarks can disagree by 20% just
from the neighbours' load. This job compiles both models with the same engine
and settings, then alternates timed blocks (dense, pruned, dense, pruned...),
so both see the same conditions. The speedup is the ratio of each model's
fastest block (the median of ``iterations`` runs, minimum over the repeats):
the least-disturbed block of each, measured minutes apart at most; the median
of the per-repeat ratios is reported too (``median_ratio``). It also runs
both models once more with ONNX Runtime on the same samples and reports the output change of the pruned
model (:func:`sparsify_tui.metrics.compare_outputs`, on ``change_samples`` random batches, 8 by default,
the first being the timed one; on the data's first batch when ``data`` is given).

Job keys: ``model_a``, ``model_b``, ``engine`` (auto|deepsparse|onnxruntime|openvino), ``precision``
(OpenVINO: fp32|bf16|fp16|int8, default fp32),
``batch_size``, ``cores``, ``iterations``, ``warmup``, ``repeats``,
``input_shapes``, ``data``, ``eval_data`` (a .npz of evaluation samples written by
``actions.validate.save_samples``: the output change is then the mean over them),
``model_magnitude`` (a second pruned model whose output change on the same samples is
reported as ``magnitude_output_change``), ``min_block_ms`` (each timed block runs at least this long:
``iterations`` grows for fast models, 250 ms by default).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from typing import Any, Callable

import numpy as np

from sparsify_tui.engines.bench import time_block as _time_block
from sparsify_tui.jobs import register

MIN_BLOCK_MS = 250.0  # the shortest timed block (job key min_block_ms; 0 = exactly `iterations`)
MAX_ITERATIONS = 5000
CHANGE_SAMPLES = 8  # batches the output change is measured on (job key change_samples; only one with data)


def _runner(engine: str, path: str, inputs: dict[str, np.ndarray], names: list[str], batch_size: int,
            cores: int | None, tmp: str, precision: str | None = None) -> Callable[[], None]:
    """A zero-argument function running one inference of ``path`` on ``engine`` (the registry's runner)."""
    from sparsify_tui.engines.registry import get_engine

    return get_engine(engine).runner(path, inputs, names=names, batch_size=batch_size, cores=cores,
                                     precision=precision, tmp=tmp)


def _outputs(path: str, samples: list[dict[str, np.ndarray]]) -> tuple[list[str], list[list[np.ndarray]]]:
    """(output names, the outputs of every sample) of ``path`` in ONNX Runtime."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    outs = []
    for inputs in samples:
        feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
        outs.append([np.asarray(y) for y in sess.run(None, feed)])
    return [o.name for o in sess.get_outputs()], outs


def read_samples(path: str) -> list[dict[str, np.ndarray]]:
    """The samples of a .npz written by ``actions.validate.save_samples`` (arrays ``"<i>:<input name>"``)."""
    out: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            i, _, name = key.partition(":")
            out.setdefault(int(i), {})[name] = z[key]
    return [out[i] for i in sorted(out)]


def _output_change(job: dict, a: str, b: str, inputs: dict[str, np.ndarray], batch: int, shapes: dict,
                   values) -> tuple[dict[str, Any], str | None, float | None]:
    """The pruned model's output change against the dense one (ONNX Runtime, on the evaluation samples
    or the timed batch and more random ones), the error that stopped it, and the magnitude model's change."""
    from sparsify_tui.analysis.loader import bounded_output_names
    from sparsify_tui.engines.inputs import make_inputs
    from sparsify_tui.metrics import compare_outputs, plan_outputs

    change: dict[str, Any] = {"output_change": None}
    change_error = None
    magnitude_change = None
    try:
        if job.get("eval_data"):  # the validation's evaluation samples (never used for calibration)
            samples = read_samples(str(job["eval_data"]))
        else:
            # the timed batch, plus more random batches (CHANGE_SAMPLES in all) so top-1 counts mean something
            n = max(1, int(job.get("change_samples", CHANGE_SAMPLES)))
            samples = [inputs] + ([make_inputs(a, batch, shapes, seed=i, values=values) for i in range(1, n)]
                                  if job.get("data") is None else [])
        names, ya = _outputs(a, samples)
        _, yb = _outputs(b, samples)
        plan = plan_outputs(ya, names, bounded=bounded_output_names(a))
        change = compare_outputs(ya, yb, plan, names=names).to_json()
        if job.get("model_magnitude"):  # magnitude pruning at the same plan, on the same samples
            _, yc = _outputs(str(job["model_magnitude"]), samples)
            magnitude_change = compare_outputs(ya, yc, plan, names=names).value
    except Exception as exc:  # noqa: BLE001 - the timing is still worth reporting
        change_error = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return change, change_error, magnitude_change


@register("ab_benchmark")
def ab_benchmark(job: dict, ctx) -> dict[str, Any]:
    from sparsify_tui.engines.registry import REFERENCE, get_engine, resolve_auto
    from sparsify_tui.errors import EngineError
    from sparsify_tui.engines.inputs import input_specs, make_inputs

    a, b = str(job["model_a"]), str(job["model_b"])
    batch = int(job.get("batch_size", 1))
    cores = job.get("cores")
    iterations = max(1, int(job.get("iterations", 20)))
    warmup = max(0, int(job.get("warmup", 5)))
    repeats = max(1, int(job.get("repeats", 5)))
    shapes = job.get("input_shapes") or {}
    requested = job.get("engine", "auto")
    precision = job.get("precision")
    names = [s.name for s in input_specs(a, shapes)]
    values = job.get("input_values") or None
    inputs = make_inputs(a, batch, shapes, data=job.get("data"), values=values)
    engine, reason = resolve_auto(requested)
    total = 2 + 2 * repeats + 1
    with tempfile.TemporaryDirectory(prefix="sparsify-ab-") as tmp:
        ctx.progress(0, total, label=f"compiling the dense model ({engine})")
        try:
            spec = get_engine(engine)
            with spec.prepared(a) as (pa, note_a), spec.prepared(b) as (pb, _):
                run_a = _runner(engine, pa, inputs, names, batch, cores, tmp, precision)
                ctx.progress(1, total, label="compiling the pruned model")
                run_b = _runner(engine, pb, inputs, names, batch, cores, tmp, precision)
            if note_a:
                reason = f"{reason} ({note_a})"
        except EngineError as exc:
            if requested != "auto" or engine == REFERENCE:
                raise
            engine, reason = REFERENCE, exc.message
            run_a = _runner(engine, a, inputs, names, batch, cores, tmp)
            run_b = _runner(engine, b, inputs, names, batch, cores, tmp)
        version = get_engine(engine).version()
        for _ in range(warmup):
            run_a()
            run_b()
        # a timed block of a sub-millisecond model is over in a few ms, shorter than this machine's noise:
        # stretch blocks to at least MIN_BLOCK_MS (the iterations actually used are reported)
        min_block = float(job.get("min_block_ms", MIN_BLOCK_MS))
        one = min(_time_block(run_a, 3), _time_block(run_b, 3))
        if min_block > 0 and one > 0:
            iterations = max(iterations, min(MAX_ITERATIONS, math.ceil(min_block / one)))
        from sparsify_tui.engines import interference as itf

        def watched(fn) -> tuple[float, float | None]:
            """A timed block and its interference; re-measured (bounded) while other processes take the cores."""
            def once():
                with itf.block(engine_cores=cores) as blk:
                    ms = _time_block(fn, iterations)
                return (ms, blk.share.interference), blk.share.interference

            (ms, share), _share, _n = itf.remeasure(once, retries=int(job.get("remeasure", itf.MAX_REMEASURE)))
            return ms, share

        a_ms: list[float] = []
        b_ms: list[float] = []
        shares: list[float | None] = []
        step = 2
        for r in range(repeats):
            # alternate the order too, so neither model always runs right after the other
            order = (("a", run_a), ("b", run_b)) if r % 2 == 0 else (("b", run_b), ("a", run_a))
            for which, fn in order:
                ms, share = watched(fn)
                (a_ms if which == "a" else b_ms).append(ms)
                shares.append(share)
            step += 2
            ctx.progress(step, total, label=f"repeat {r + 1}/{repeats}: dense {a_ms[-1]:.2f} ms, "
                                            f"pruned {b_ms[-1]:.2f} ms")
        del run_a, run_b
    ratios = [x / y for x, y in zip(a_ms, b_ms) if y > 0]
    change, change_error, magnitude_change = _output_change(job, a, b, inputs, batch, shapes, values)
    ctx.progress(total, total, label="done")
    known = [x for x in shares if x is not None]
    worst = max(known) if known else None
    quality = {"interference": worst, "interference_by_block": shares, "interference_threshold": itf.THRESHOLD,
               "deployed_ms": min(a_ms), "instrumentation_ratio": None,
               "warnings": [itf.busy_warning("a benchmark block", worst, 1)] if itf.above(worst) else []}
    return {
        "quality": quality,
        "engine": engine, "engine_version": version, "engine_reason": reason,
        "precision": precision or "fp32",
        "batch_size": batch, "cores": cores, "iterations": iterations, "warmup": warmup, "repeats": repeats,
        "dense_ms": min(a_ms), "pruned_ms": min(b_ms),
        "dense_repeat_ms": a_ms, "pruned_repeat_ms": b_ms,
        "measured_speedup": (min(a_ms) / min(b_ms)) if b_ms and min(b_ms) > 0 else None,
        "median_ratio": statistics.median(ratios) if ratios else None,
        "speedup_spread": [min(ratios), max(ratios)] if ratios else None,
        **change, "output_change_error": change_error,
        "magnitude_output_change": magnitude_change,
    }
