"""Channel perf profiles: what removing a fraction of each channel group's channels saves, measured.

:func:`run_channel_perf_profile` runs job kind ``perf_channels`` (:mod:`sparsify_tui.jobs.perf_channels`
says how it measures) in a child process and returns the document (``kind: "perf_channels"``):

* ``engine``, ``engine_version``, ``engine_reason``, ``precision``, ``batch_size``, ``cores``,
  ``fractions``, ``repeats``, ``iterations`` (per timed block);
* ``dense_ms`` (the fastest dense block of the run), ``dense_block_ms`` (every dense block);
* ``combinations``: each measured variant: ``fraction``, ``groups`` (those it prunes), ``ratio``
  (variant / dense time, median of the pairs), ``ratio_spread``, ``saved_ms``;
* ``rows``: one per group and fraction: ``group``, ``fraction``, ``removed`` (channels) of ``channels``,
  ``saved_ms`` (fitted over the combinations), ``ms_per_gflop``, ``removed_flops`` (layer id -> FLOPs the
  removal alone takes from it);
* ``groups`` (id, channels, producers), ``layer_flops``,
  ``total_flops``, ``notes``, ``machine``, ``created``, ``schema_version``.

:func:`sparsify_tui.optim.channel_estimate.estimate_channel_speedup` turns it into a plan's speedup.
"""

from __future__ import annotations

import datetime as _dt
import threading
from typing import Any, Callable

from sparsify_tui.errors import UsageError
from sparsify_tui.profiles import SCHEMA_VERSION

DEFAULT_FRACTIONS = (0.25, 0.5, 0.75)
PRECISIONS = ("fp32", "int8", "bf16")


def check_fractions(fractions: Any) -> list[float]:
    """Sorted distinct fractions, each in (0, 1) (UsageError otherwise)."""
    out = sorted({round(float(f), 6) for f in fractions})
    if not out:
        raise UsageError("--fractions needs at least one fraction, e.g. 0.25,0.5,0.75")
    for f in out:
        if not 0.0 < f < 1.0:
            raise UsageError(f"--fractions: each fraction of channels removed must be in (0, 1), got {f:g}")
    return out


def method_note(doc: dict) -> str:
    per = {}
    for c in doc.get("combinations") or []:
        per[c["fraction"]] = per.get(c["fraction"], 0) + 1
    n = max(per.values()) if per else 0
    return (f"measured in batches: at each fraction, {n} variants of the whole model with that fraction of "
            "the channels physically removed from several groups at once (all groups, then random halves), "
            "timed in blocks alternating with the dense model; each group's saving is a least-squares fit "
            "over them (per removed FLOP, pulled towards the pooled value), not a FLOPs guess")


def run_channel_perf_profile(model_path: Any, *, engine: str = "auto", precision: str | None = None,
                             batch_size: int = 1, cores: int | None = None, fractions: Any = None,
                             combinations: int | None = None, repeats: int = 3, warmup: int = 3,
                             input_shapes: dict | None = None, data: Any = None,
                             min_block_ms: float | None = None,
                             on_progress: Callable[[dict], Any] | None = None,
                             cancel: threading.Event | None = None, timeout_s: float | None = 600.0) -> dict:
    """Measure a channel perf profile in a child process; the document."""
    from pathlib import Path

    from sparsify_tui.engines.machine import machine_summary
    from sparsify_tui.engines.registry import check_engine, check_precision
    from sparsify_tui.engines.runner import run_job
    from sparsify_tui.errors import ModelError
    from sparsify_tui.settings import usable_cores

    engine = check_engine(engine)
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision with --structure channels must be one of {', '.join(PRECISIONS)}, "
                         f"got {precision!r}")
    if precision != "int8":  # int8: the pruned files are quantized, any engine runs them
        check_precision(engine, None if precision == "fp32" else precision)
    if not Path(model_path).exists():
        raise ModelError(f"{model_path}: no such file")
    cores = int(cores) if cores else usable_cores()
    job: dict[str, Any] = {
        "kind": "perf_channels", "model_path": str(model_path), "engine": engine, "precision": precision,
        "batch_size": int(batch_size), "cores": cores,
        "fractions": check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions),
        "repeats": int(repeats), "warmup": int(warmup),
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "data": None if data is None else str(data),
    }
    if combinations:
        job["combinations"] = int(combinations)
    if min_block_ms is not None:
        job["min_block_ms"] = float(min_block_ms)
    doc = run_job(job, on_progress=on_progress, cancel=cancel, timeout_s=timeout_s, cores=cores)
    doc.update({"kind": "perf_channels", "schema_version": SCHEMA_VERSION, "machine": machine_summary(),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "input_shapes": job["input_shapes"]})
    doc.setdefault("notes", []).insert(0, method_note(doc))
    return doc
