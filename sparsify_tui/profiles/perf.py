"""Performance profiles: per-layer timings and performance sensitivity.

:func:`run_perf_profile` measures a model in a child process (job kind
``perf``, see :mod:`sparsify_tui.jobs.perf`) and returns the perf JSON
document; :func:`approx_perf_profile` estimates one from FLOPs alone.

Document keys (``kind: "perf"``):

* ``engine`` (``deepsparse``, ``onnxruntime``, ``openvino`` or ``flops-estimate``),
  ``engine_version``, ``engine_reason`` (why this engine), ``approximated``
  (true when the per-level times are not measured); ``precision`` (the one
  asked for: fp32 unless ``--precision``) and, with OpenVINO,
  ``inference_precision`` (what the compiled model reports: f32, bf16, f16);
* settings: ``batch_size``, ``cores``, ``levels``, ``iterations``, ``warmup``,
  ``repeats``, ``input_shapes``;
* ``baseline_ms``: median over ``repeats`` of the dense model's time per batch;
  ``spread_ms``: [min, max] over the repeats; ``repeat_ms``: each repeat;
  ``items_per_second``: ``batch_size * 1000 / baseline_ms``;
* ``model_ms_by_level``: ``level_key(s)`` -> the model's time at sparsity s
  (level 0 is ``baseline_ms``);
* ``layers``: every ONNX layer in execution order (Layer Depth), then the
  engine-internal rows: ``id`` (same as ``info``), ``name``, ``op_type``,
  (OpenVINO) ``kernel`` (the ``exec_type`` of the node that computed it) and
  ``runtime_precision``,
  ``depth``, ``baseline_ms``, ``share`` (of the sum of rows),
  ``ms_by_level``, ``group`` (ids of the layers the engine measured together
  with this one, itself included), ``group_name`` (the engine's step),
  ``engine_internal`` (a step of the engine that matches no ONNX layer:
  re-layouts, glue subgraphs, run overhead), ``prunable``, ``flops``;
* ``machine`` (``engines.machine.machine_info()``), ``created``,
  ``schema_version``; ``incomplete`` and ``error`` when a later level failed
  and only the finished levels are kept.

How the times are obtained:

* DeepSparse: ``model_debug_analysis`` at optimization level 1, one call per
  level with ``imposed_ks = level`` (the dense level is repeated ``repeats``
  times for the spread; the layer times come from the repeat with the median
  total). A level's model time is the engine's average total (the sum of its
  steps), so layers + engine rows add up to it. Fused groups share their time
  among members in proportion to FLOPs (:mod:`sparsify_tui.engines.mapping`).
* ONNX Runtime: its profiler on the dense model (``ORT_ENABLE_ALL``); it does
  not run sparse weights faster, so each level is approximated:
  ``t_layer(s) = t_layer(0) * (1 - s * p)`` with ``p`` the share of the
  layer's FLOPs that use its prunable weight (0 for other layers), and
  ``approximated`` is true.
* OpenVINO: its performance counters on the dense model at the chosen
  precision (:func:`sparsify_tui.engines.openvino_engine.profile`); like ONNX
  Runtime it runs unstructured sparse weights no faster, so the levels are
  approximated the same way.
* FLOPs estimate (no engine): ``t_layer = flops / (ASSUMED_GFLOPS_PER_CORE * cores)``,
  levels as for ONNX Runtime.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from sparsify_tui.errors import (
    CancelledError,
    EngineError,
    ProfileError,
    UsageError,
)
from sparsify_tui.settings import PERF_LEVELS, level_key
from sparsify_tui.profiles import SCHEMA_VERSION
from sparsify_tui.settings import usable_cores
from sparsify_tui.engines.machine import machine_summary

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph

ASSUMED_GFLOPS_PER_CORE = 100.0
DEFAULT_TIMEOUT_S = 600.0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- document assembly
def _layer_rows(setup: dict, base: dict, level_parts: dict[str, dict], approximated: bool,
                levels: list[float]) -> list[dict]:
    from sparsify_tui.engines.ort import approx_level_ms

    class _M:  # the fields approx_level_ms reads
        def __init__(self, d: dict) -> None:
            self.prunable = d.get("prunable", False)
            self.flops = d.get("flops")
            self.bias_flops = d.get("bias_flops", 0.0)

    owner = base.get("owner", {})
    groups = base.get("groups", {})
    rows = []
    for meta in setup["layers"]:
        lid = meta["id"]
        b = float(base["layer_ms"].get(lid, 0.0))
        gname = owner.get(lid)
        row = {
            "id": lid, "name": meta.get("name", ""), "op_type": meta.get("op_type", ""),
            "depth": meta.get("depth"), "baseline_ms": b, "share": 0.0, "ms_by_level": {},
            "group": list(groups.get(gname, [lid])) if gname else [lid],
            "group_name": gname, "engine_internal": False,
            "prunable": bool(meta.get("prunable", False)), "flops": meta.get("flops"),
        }
        if meta.get("constant"):
            row["constant_folded"] = True
        _add_kernel(row, base, lid)
        for lv in levels:
            k = level_key(lv)
            if approximated:
                row["ms_by_level"][k] = approx_level_ms(b, _M(meta), lv)
            elif k in level_parts:
                row["ms_by_level"][k] = float(level_parts[k]["layer_ms"].get(lid, 0.0))
        row["ms_by_level"][level_key(0.0)] = b
        rows.append(row)
    # engine-internal rows: union over levels, stable ids
    internal_ids: list[str] = []
    internal_names: dict[str, str] = {}
    for part in [base] + [level_parts[k] for k in level_parts]:
        for item in part.get("internal", []):
            if item["id"] not in internal_names:
                internal_ids.append(item["id"])
                internal_names[item["id"]] = item["name"]
    depth = max((r["depth"] or 0 for r in rows), default=0) + 1
    for i, rid in enumerate(internal_ids):
        b = sum(x["ms"] for x in base.get("internal", []) if x["id"] == rid)
        row = {
            "id": rid, "name": internal_names[rid], "op_type": "engine", "depth": depth + i,
            "baseline_ms": b, "share": 0.0, "ms_by_level": {}, "group": [rid], "group_name": internal_names[rid],
            "engine_internal": True, "prunable": False, "flops": None,
        }
        _add_kernel(row, base, rid)
        for lv in levels:
            k = level_key(lv)
            if approximated:
                row["ms_by_level"][k] = b
            elif k in level_parts:
                row["ms_by_level"][k] = sum(x["ms"] for x in level_parts[k].get("internal", []) if x["id"] == rid)
        row["ms_by_level"][level_key(0.0)] = b
        rows.append(row)
    total = sum(r["baseline_ms"] for r in rows)
    for r in rows:
        r["share"] = (r["baseline_ms"] / total) if total > 0 else 0.0
    return rows


def _add_kernel(row: dict, base: dict, rid: str) -> None:
    """OpenVINO: the kernel (``exec_type``) and runtime precision of the node that computed the row."""
    kernel = (base.get("kernels") or {}).get(rid)
    if kernel:
        row["kernel"] = kernel
        prec = (base.get("layer_precision") or {}).get(rid)
        if prec:
            row["runtime_precision"] = prec


def assemble(setup: dict, parts: list[dict], settings: dict, *, error: str | None = None,
             wall_s: float | None = None) -> dict:
    """Build the perf document from the worker's ``setup`` and ``level`` partials (finished levels only)."""
    levels = [float(x) for x in settings["levels"]]
    base_parts = [p for p in parts if p.get("type") == "baseline"]
    level_parts = {p["key"]: p for p in parts if p.get("type") == "level"}
    if not base_parts:
        raise ProfileError(error or "the profile has no finished measurement")
    repeat_ms = [float(p["model_ms"]) for p in base_parts]
    baseline_ms = statistics.median(repeat_ms)
    # the layer times of the repeat with the median total
    ordered = sorted(base_parts, key=lambda p: p["model_ms"])
    base = ordered[(len(ordered) - 1) // 2]
    approximated = bool(setup.get("approximated"))
    rows = _layer_rows(setup, base, level_parts, approximated, levels)
    k0 = level_key(0.0)
    model_by_level: dict[str, float] = {}
    for lv in levels:
        k = level_key(lv)
        if k == k0:
            model_by_level[k] = baseline_ms
        elif approximated:
            saved = sum(r["baseline_ms"] - r["ms_by_level"].get(k, r["baseline_ms"]) for r in rows)
            model_by_level[k] = baseline_ms - saved
        elif k in level_parts:
            model_by_level[k] = float(level_parts[k]["model_ms"])
    batch = int(settings["batch_size"])
    doc = {
        "kind": "perf",
        "schema_version": SCHEMA_VERSION,
        "created": _now(),
        "model_path": str(settings.get("model_path", "")),
        "engine": setup["engine"],
        "engine_version": setup.get("engine_version"),
        "engine_reason": setup.get("engine_reason", ""),
        "approximated": approximated,
        "batch_size": batch,
        "cores": settings.get("cores"),
        "levels": levels,
        "levels_measured": [lv for lv in levels if level_key(lv) in model_by_level],
        "iterations": settings.get("iterations"),
        "iterations_used": setup.get("iterations_used", settings.get("iterations")),
        "warmup": settings.get("warmup"),
        "repeats": settings.get("repeats"),
        "input_shapes": setup.get("input_shapes") or settings.get("input_shapes") or {},
        "baseline_ms": baseline_ms,
        "spread_ms": [min(repeat_ms), max(repeat_ms)],
        "repeat_ms": repeat_ms,
        "items_per_second": (batch * 1000.0 / baseline_ms) if baseline_ms > 0 else None,
        "model_ms_by_level": model_by_level,
        "layers": rows,
        "machine": setup.get("machine") or machine_summary(),
        "engine_seconds": round(sum(float(p.get("engine_s", 0.0)) for p in parts), 3),
    }
    if wall_s is not None:
        doc["wall_seconds"] = round(wall_s, 3)
    if setup.get("notes"):
        doc["notes"] = list(setup["notes"])
    doc["precision"] = setup.get("precision") or settings.get("precision") or "fp32"
    if setup.get("inference_precision"):
        doc["inference_precision"] = setup["inference_precision"]
    missing = [lv for lv in levels if level_key(lv) not in model_by_level]
    if error is not None or missing:
        doc["incomplete"] = True
        doc["error"] = error or f"levels not measured: {', '.join(level_key(x) for x in missing)}"
    return doc


# ---------------------------------------------------------------- quality (issue 16)
INSTRUMENTATION_TOLERANCE = 1.25  # instrumented / deployed model time beyond this (either way) is a warning


def add_quality(doc: dict, parts: list[dict], deployed: dict | None, *, idle: dict | None = None,
                level_notes: list[str] | None = None, threshold: float | None = None) -> dict:
    """The document's ``quality``: interference per level and overall (the largest share of the
    measured cores' time other processes used during a timed block), the deployed engine's model
    time and the instrumentation ratio (instrumented baseline / deployed), and the warnings."""
    from sparsify_tui.engines import interference as itf

    threshold = itf.THRESHOLD if threshold is None else threshold
    by_level: dict[str, float] = {}
    attempts: dict[str, int] = {}
    for p in parts:
        sh = p.get("interference")
        if sh is None:
            continue
        k = p.get("key", level_key(0.0))
        by_level[k] = max(by_level.get(k, 0.0), float(sh))
        attempts[k] = max(attempts.get(k, 1), int(p.get("attempts", 1)))
    warnings: list[str] = []
    for k, sh in by_level.items():
        if sh > threshold:
            what = "the dense model" if k == level_key(0.0) else f"level {k}"
            warnings.append(itf.busy_warning(what, sh, attempts.get(k, 1)))
    q: dict[str, Any] = {"interference": max(by_level.values()) if by_level else None,
                         "interference_by_level": by_level, "interference_threshold": threshold,
                         "deployed_ms": None, "instrumentation_ratio": None, "warnings": warnings}
    if deployed and deployed.get("deployed_ms"):
        q["deployed_ms"] = deployed["deployed_ms"]
        q["deployed_repeat_ms"] = deployed.get("repeat_ms")
        base = float(doc.get("baseline_ms") or 0)
        if base > 0:
            ratio = base / deployed["deployed_ms"]
            q["instrumentation_ratio"] = ratio
            if ratio > INSTRUMENTATION_TOLERANCE or ratio < 1 / INSTRUMENTATION_TOLERANCE:
                warnings.append(
                    f"the instrumented run ({base:.3f} ms) and the engine as deployed ({deployed['deployed_ms']:.3f} ms) "
                    f"differ by {ratio:.2f}x: per-layer times carry instrumentation overhead; estimates are scaled "
                    "to the deployed time")
        dsh = deployed.get("interference")
        if dsh is not None:
            q["deployed_interference"] = dsh
            q["interference"] = max(q["interference"] or 0.0, dsh)
            if dsh > threshold:
                warnings.append(itf.busy_warning("the deployed engine's timing", dsh, 1))
    elif deployed and deployed.get("error"):
        q["deployed_error"] = deployed["error"]
    if idle is not None:
        q["wait_idle"] = idle
    warnings.extend(level_notes or [])
    doc["quality"] = q
    return q


# What each quality warning is about, for a one-line-per-kind view (the overview): a phrase that the
# sentence built above for that kind always holds, and the kind's short label.
WARNING_KINDS = (
    ("busy machine", "other processes used"),
    ("busy machine", "stayed busy when measured again"),
    ("instrumentation overhead", "per-layer times carry instrumentation overhead"),
    ("level order", "slower than level"),
)


def warning_kind(text: str) -> str:
    """The short label of a quality warning's kind (``"other"`` for a sentence no kind holds)."""
    for label, phrase in WARNING_KINDS:
        if phrase in text:
            return label
    return "other"


# ---------------------------------------------------------------- parent side
def validate_engine(engine: str) -> str:
    """``--engine``: auto or an installed engine of the registry (UsageError / EngineUnavailableError)."""
    from sparsify_tui.engines.registry import check_engine

    return check_engine(engine)


def validate_precision(engine: str, precision: str | None) -> str | None:
    """The precision to run ``engine`` at: None (the engine's fp32 default) or a checked name.

    OpenVINO runs fp32, bf16, fp16 (each only where this CPU has it) and int8 (a QDQ file as is);
    ONNX Runtime and DeepSparse run fp32, and int8 for a QDQ file (what the file holds).
    """
    from sparsify_tui.engines.registry import check_precision

    return check_precision(engine, precision)


def run_perf_profile(model_path, *, engine: str = "auto", batch_size: int = 1, cores: int | None = None,
                     levels=None, iterations: int = 10, warmup: int = 5, repeats: int = 3,
                     input_shapes: dict | None = None, data=None,
                     on_progress: Callable[[dict], Any] | None = None,
                     cancel: threading.Event | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                     min_level_ms: float = 0.0, precision: str | None = None,
                     input_values: dict | None = None, wait_idle_s: float = 0.0,
                     remeasure: int | None = None, deployed: bool = True) -> dict:
    """Measure a perf profile in a child process; return the perf document.

    ``min_level_ms`` > 0: with DeepSparse, once the first dense run shows the
    model's time, the other runs use enough iterations to last at least this
    long each (tiny models are otherwise timed over a few ms of a noisy
    machine); the document's ``iterations_used`` says how many.

    ``on_progress(event)`` receives the worker's progress/partial events. If
    the child fails after some levels finished, the document of the finished
    levels is returned with ``incomplete: true`` and ``error``; if nothing
    finished, the error is raised (EngineError / CancelledError / ...).
    Cancelling after some levels also returns the incomplete document.
    """
    from sparsify_tui.engines.runner import run_job

    engine = validate_engine(engine)
    precision = validate_precision(engine, precision)
    cores = int(cores) if cores else usable_cores()
    levels = sorted(set(float(x) for x in (levels if levels is not None else PERF_LEVELS)) | {0.0})
    for lv in levels:
        if not 0.0 <= lv < 1.0:
            raise UsageError(f"sparsity levels must be in [0, 1), got {lv:g}")
    job = {
        "kind": "perf", "model_path": str(model_path), "engine": engine, "batch_size": int(batch_size),
        "cores": cores, "levels": levels, "iterations": int(iterations), "warmup": int(warmup),
        "repeats": int(repeats), "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "data": None if data is None else str(data),
    }
    if min_level_ms:
        job["min_level_ms"] = float(min_level_ms)
    if precision:
        job["precision"] = precision
    if input_values:
        job["input_values"] = dict(input_values)
    if wait_idle_s:
        job["wait_idle_s"] = float(wait_idle_s)
    if remeasure is not None:
        job["remeasure"] = int(remeasure)
    if not deployed:
        job["deployed"] = False
    _validate_locally(job)
    t0 = time.perf_counter()
    try:
        return run_job(job, on_progress=on_progress, cancel=cancel, timeout_s=timeout_s, cores=cores)
    except (EngineError, CancelledError) as exc:
        partials = getattr(exc, "partials", [])
        setup = next((p for p in partials if p.get("type") == "setup"), None)
        parts = [p for p in partials if p.get("type") in ("baseline", "level")]
        if setup is None or not any(p.get("type") == "baseline" for p in parts):
            from sparsify_tui.engines.registry import REFERENCE, resolve_auto

            picked = setup.get("engine") if setup is not None else resolve_auto("auto")[0]
            if isinstance(exc, EngineError) and engine == "auto" and picked != REFERENCE:
                # the engine auto picked (DeepSparse) crashed (an assertion, a segfault) before anything
                # finished: the reference engine instead
                job["engine"] = REFERENCE
                doc = run_job(job, on_progress=on_progress, cancel=cancel, timeout_s=timeout_s, cores=cores)
                doc["engine_reason"] = f"{picked} crashed ({exc.message}); fell back to {REFERENCE}"
                doc.setdefault("notes", []).append(doc["engine_reason"])
                return doc
            raise
        settings = dict(job)
        message = str(exc)
        doc = assemble(setup, parts, settings, error=message, wall_s=time.perf_counter() - t0)
        tail = getattr(exc, "output_tail", "")
        if tail:
            doc["error_output_tail"] = tail
        return doc


def _validate_locally(job: dict) -> None:
    """Fail fast in the parent on bad user input (missing model, bad shapes, bad data)."""
    from pathlib import Path

    from sparsify_tui.engines.inputs import make_inputs

    p = Path(job["model_path"])
    if not p.exists():
        from sparsify_tui.errors import ModelError

        raise ModelError(f"{p}: no such file")
    make_inputs(p, job["batch_size"], job["input_shapes"], data=job["data"], values=job.get("input_values"))
    if job.get("precision") == "int8":
        from sparsify_tui.engines.openvino_engine import has_qdq

        if not has_qdq(str(p)):
            raise UsageError(f"--precision int8 runs a quantized (QDQ) model as is, and {p} has no "
                             "QuantizeLinear/DequantizeLinear nodes: quantize it first")


def approx_perf_profile(graph: "ModelGraph", batch_size: int = 1, levels=None, cores: int | None = None) -> dict:
    """A perf profile estimated from FLOPs alone (no engine): ``engine: "flops-estimate"``.

    ``graph`` is an analysed ``ModelGraph`` (at batch size 1); a layer's time is
    ``flops * batch_size / (ASSUMED_GFLOPS_PER_CORE * cores)``; layers with
    unknown FLOPs get 0 and are listed in ``notes``.
    """
    levels = sorted(set(float(x) for x in (levels if levels is not None else PERF_LEVELS)) | {0.0})
    cores = int(cores) if cores else usable_cores()
    rate = ASSUMED_GFLOPS_PER_CORE * 1e9 * cores / 1000.0  # FLOPs per ms
    metas, layer_ms = [], {}
    unknown = 0
    for layer in graph.layers:
        bias = 0.0
        if layer.prunable and layer.bias_name and layer.output_shapes and layer.output_shapes[0]:
            try:
                n = 1
                for d in layer.output_shapes[0]:
                    n *= int(d)
                bias = float(n)
            except (TypeError, ValueError):
                bias = 0.0
        metas.append({"id": layer.id, "name": layer.name, "op_type": layer.op_type, "depth": layer.depth,
                      "flops": layer.flops, "prunable": layer.prunable, "bias_flops": bias})
        if layer.flops is None:
            unknown += 1
        layer_ms[layer.id] = (float(layer.flops or 0) * batch_size) / rate
    total = sum(layer_ms.values())
    notes = [f"estimated from FLOPs at an assumed {ASSUMED_GFLOPS_PER_CORE:g} GFLOP/s per core; nothing measured"]
    if unknown:
        notes.append(f"{unknown} layers have unknown FLOPs and count as 0 ms")
    setup = {"type": "setup", "engine": "flops-estimate", "engine_version": None,
             "engine_reason": "no measurement: estimated from FLOPs", "approximated": True,
             "layers": metas, "machine": machine_summary(), "notes": notes,
             "input_shapes": graph.input_shapes() if hasattr(graph, "input_shapes") else {}}
    part = {"type": "baseline", "key": level_key(0.0), "level": 0.0, "model_ms": total, "layer_ms": layer_ms,
            "internal": [], "engine_s": 0.0, "owner": {}, "groups": {}}
    settings = {"model_path": getattr(graph, "path", ""), "batch_size": batch_size, "cores": cores,
                "levels": levels, "iterations": 0, "warmup": 0, "repeats": 1}
    return assemble(setup, [part], settings)


def validate_perf_document(doc: Any, source: str = "the profile") -> dict:
    """Check an imported perf document's structure; ProfileError naming ``source`` otherwise."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{source} is not a JSON object")
    if doc.get("kind") != "perf":
        raise ProfileError(f"{source} is not a perf profile (kind is {doc.get('kind')!r})")
    for key in ("engine", "batch_size", "levels", "baseline_ms", "model_ms_by_level", "layers"):
        if key not in doc:
            raise ProfileError(f"{source} has no {key!r} key: not a sparsify-tui perf profile")
    if not isinstance(doc["layers"], list) or not all(isinstance(x, dict) and isinstance(x.get("id"), str)
                                                      for x in doc["layers"]):
        raise ProfileError(f"{source} has a malformed 'layers' list")

    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not number(doc["baseline_ms"]) or doc["baseline_ms"] <= 0:
        raise ProfileError(f"{source} has no positive baseline_ms")
    for row in doc["layers"]:
        if not number(row.get("baseline_ms", 0)):
            raise ProfileError(f"{source}: layer {row['id']!r} has a non-numeric baseline_ms")
        for key in ("name", "op_type"):
            if not isinstance(row.get(key, ""), str):
                raise ProfileError(f"{source}: layer {row['id']!r} has a non-text {key}")
    by_level = doc["model_ms_by_level"]
    if not isinstance(by_level, dict) or not all(number(v) for v in by_level.values()):
        raise ProfileError(f"{source} has a malformed 'model_ms_by_level' (level -> ms)")
    if doc.get("items_per_second") is not None and not number(doc["items_per_second"]):
        raise ProfileError(f"{source} has a non-numeric items_per_second")
    return doc


__all__ = ["run_perf_profile", "approx_perf_profile", "assemble", "validate_perf_document"]
