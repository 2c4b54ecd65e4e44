"""Latency benchmark of one model (runs inside the worker; job kind ``benchmark``).

:func:`benchmark_model` compiles the model once (DeepSparse ``compile_model``,
an ONNX Runtime session at ``ORT_ENABLE_ALL``, or OpenVINO at the chosen
precision, :mod:`sparsify_tui.engines.openvino_engine`), runs ``warmup`` iterations,
then ``repeats`` blocks of ``iterations`` timed runs. ``median_ms`` is the
median of the per-block medians; ``min_ms`` / ``max_ms`` are the extremes of
the block medians (the spread between repeats); ``items_per_second`` is
``batch_size * 1000 / median_ms``. The validation step of the pruning issue
reuses it (dense vs pruned, same engine and settings).
"""

from __future__ import annotations

import numpy as np

import statistics
import time
from pathlib import Path
from typing import Any, Callable

from sparsify_tui.engines.machine import loadavg


def time_block(fn: Callable[[], Any], iterations: int) -> float:
    """Median wall time, in ms, of ``iterations`` calls of ``fn`` (one timed block of the in-process jobs)."""
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def _watched(run, cores: int | None, heartbeat, retries: int) -> dict:
    """run(beat) -> result; with the interference of each repeat (its runs end at the beat), measured
    again (``retries`` times at most) while other processes take the cores."""
    from sparsify_tui.engines import interference as itf

    def once():
        ends: list[float] = []

        def beat(label):
            ends.append(time.perf_counter())
            if heartbeat:
                heartbeat(label)

        with itf.Sampler(engine_cores=cores) as sampler:
            out = run(beat)
            its = out["iteration_ms"]
            per = len(its) // max(1, len(out["repeat_ms"]))
            out["interference_by_repeat"] = [
                sampler.share(end - sum(its[r * per:(r + 1) * per]) / 1000.0, end).interference
                for r, end in enumerate(ends[:len(out["repeat_ms"])])]
        return out, max((x for x in out["interference_by_repeat"] if x is not None), default=None)

    out, _share, attempts = itf.remeasure(once, retries=retries)
    out["attempts"] = attempts
    return out


def _quality(res: dict, med: float, idle) -> dict[str, Any]:
    """How far the benchmark can be trusted: the busiest repeat's interference, and its warning."""
    from sparsify_tui.engines import interference as itf

    shares = [x for x in res.get("interference_by_repeat") or [] if x is not None]
    share = max(shares) if shares else None
    warnings = []
    if itf.above(share):
        warnings.append(itf.busy_warning("the benchmark", share, res.get("attempts", 1)))
    quality = {"interference": share, "interference_by_repeat": res.get("interference_by_repeat"),
               "interference_threshold": itf.THRESHOLD, "deployed_ms": med, "instrumentation_ratio": None,
               "warnings": warnings}
    if idle is not None:
        quality["wait_idle"] = idle
    return quality


def benchmark_model(path: str, engine: str = "auto", batch_size: int = 1, cores: int | None = None,
                    iterations: int = 20, warmup: int = 5, repeats: int = 3,
                    input_shapes: dict | None = None, data: str | None = None, heartbeat=None,
                    precision: str | None = None, input_values: dict | None = None,
                    remeasure: int | None = None, wait_idle_s: float = 0.0) -> dict[str, Any]:
    """Benchmark ``path``; returns model, engine, engine_reason, batch_size, cores, median/min/max ms, items/s,
    precision (and, with OpenVINO, inference_precision: what the compiled model runs).

    Each repeat's interference (the share of the cores' time other processes took while it ran,
    :mod:`sparsify_tui.engines.interference`) is measured; while the largest is above the threshold
    the benchmark is run again (``remeasure`` times at most) and the quietest run is kept;
    ``quality`` says what stayed busy.
    """
    from sparsify_tui.engines import interference as itf
    from sparsify_tui.engines.registry import REFERENCE, get_engine
    from sparsify_tui.errors import EngineError
    from sparsify_tui.engines.inputs import input_specs, make_inputs

    path = str(path)
    shapes = input_shapes or {}
    specs = input_specs(path, shapes)
    names = [s.name for s in specs]
    inputs = make_inputs(path, batch_size, shapes, data=data, values=input_values)
    from sparsify_tui.engines.registry import resolve_auto

    chosen, reason = resolve_auto(engine)
    idle = itf.wait_idle(float(wait_idle_s)) if wait_idle_s else None
    t0 = time.perf_counter()
    load_start = loadavg()
    retries = itf.MAX_REMEASURE if remeasure is None else int(remeasure)

    def timed(name: str) -> dict:
        return _watched(lambda beat: get_engine(name).benchmark(
            path, inputs, names=names, batch_size=batch_size, cores=cores, iterations=iterations, warmup=warmup,
            repeats=repeats, heartbeat=beat, precision=precision), cores, heartbeat, retries)

    try:
        res = timed(chosen)
    except EngineError as exc:
        if (engine or "auto") != "auto" or chosen == REFERENCE:
            raise
        chosen, reason = REFERENCE, exc.message  # auto: the engine it picked failed on this model
        res = timed(chosen)
    spec = get_engine(chosen)
    version = spec.version()
    if res.get("note"):
        reason = f"{reason} ({res['note']})"
    if spec.precision_hint:
        reason = f"{reason} ({res['precision']}, runs in {res['inference_precision']})"
    med = statistics.median(res["repeat_ms"])
    return {
        "quality": _quality(res, med, idle),
        "model": path,
        "model_name": Path(path).name,
        "engine": chosen,
        "engine_version": version,
        "engine_reason": reason,
        "batch_size": int(batch_size),
        "input_shapes": {n: list(np.shape(inputs[n])) for n in names},  # the shapes actually fed
        "cores": cores,
        "iterations": int(iterations),
        "warmup": int(warmup),
        "repeats": int(repeats),
        "median_ms": med,
        "min_ms": min(res["repeat_ms"]),
        "max_ms": max(res["repeat_ms"]),
        "repeat_ms": res["repeat_ms"],
        "iteration_min_ms": min(res["iteration_ms"]),
        "iteration_max_ms": max(res["iteration_ms"]),
        "items_per_second": batch_size * 1000.0 / med if med > 0 else None,
        "compile_s": res.get("compile_s"),
        "precision": res.get("precision") or precision or "fp32",
        "wall_s": time.perf_counter() - t0,
        "load_average": [load_start, loadavg()],
        **({"inference_precision": res["inference_precision"]} if res.get("inference_precision") else {}),
    }


