"""Loss profiles: how much each prunable layer hurts the model when it alone is pruned.

Two methods, one document format (``kind: "loss"``):

* ``approx`` (no data, instantaneous): the **weight-magnitude proxy**. For a
  layer whose weight has ``n`` elements, the value at sparsity ``s`` is the
  share of the weight's squared L2 norm that pruning to ``s`` removes::

      proxy(s) = sum of the round(s*n) smallest w^2  /  sum of all w^2

  It is 0 at s = 0, non-decreasing in s, at most 1, and 0 at every level for
  a layer whose weights are all zero. It needs no data and never runs the
  model; it says how much of the layer's "energy" the pruned weights carried,
  not how the model's outputs react (one-shot measures that). For weights
  stored quantized behind DequantizeLinear the dequantized values are used.
  Computed exactly with one sort of w^2 per layer and segment sums at all
  levels at once, two layers at a time (about 0.2 s for a ResNet-50 on 2 cores).

* ``one-shot`` (measured on data): for each prunable layer and level, that
  layer alone is pruned (exactly round(s*n) smallest-magnitude weights, see
  :mod:`sparsify_tui.optim.prune`), the model is run on the samples and the
  outputs are compared with the dense model's (see
  :func:`sparsify_tui.metrics.compare_outputs`: a metric chosen per output --
  KL at a temperature for class scores, cosine distance for embeddings,
  normalized squared error for other float outputs, changed fraction for
  integers -- summed over outputs, averaged over samples; the document's
  ``output_metrics`` names each output's metric and unit, and each layer's
  ``output_values`` holds the per-output values at the evaluation sparsity). It does NOT build a
  session per layer and level: ONE ONNX Runtime session is built
  (:class:`~sparsify_tui.profiles.downstream.DownstreamModel`) in which each
  prunable layer has an ``If`` branch holding a copy of the graph downstream
  of it, with that layer's weight as a graph input; a measurement runs only
  that branch, fed with the dense run's upstream activations and the pruned
  weight, so nothing upstream of the layer is recomputed. The layer's
  reference outputs come from the same branch fed with the dense weight, so
  level 0 (and any level that leaves a weight unchanged because it already
  holds enough zeros) is exactly 0 without running. A layer's levels run
  concurrently on a pool of single-threaded runs, one per core. When the
  model cannot be rewritten that way, the fallback is still one session, with
  every prunable weight a graph input and the whole model run each time
  (``execution: "full"`` and a note in the document). Weights stored behind
  DequantizeLinear are fed (and pruned) as the stored integer tensor, pruned
  elements taking the zero point. Weights inside If/Loop/Scan bodies are
  handled through their top-level parent node. It runs in the measurement
  child process (job kind ``loss_one_shot``) with progress, cancel and
  partial results (one per finished layer).

**Smoothing** (both methods): a layer's curve is made non-decreasing by a
running maximum over increasing sparsity (``sensitivity_by_level``); the
unsmoothed values are kept as ``raw_by_level`` for one-shot. The value at
sparsity 0 is exactly 0. The evaluation sparsity (0.9 by default) is always
among the measured levels (added when missing); a layer's ``sensitivity`` is
its smoothed value there, ``rank`` 1 is the most sensitive layer, and
``average_sensitivity`` is the unweighted mean over the measured layers.
For one-shot, ``rank_correlation`` is Spearman's rho between the one-shot and
the approx sensitivities at the evaluation sparsity (ties get averaged ranks).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from sparsify_tui.errors import UsageError
from sparsify_tui.settings import LOSS_APPROX_LEVELS, LOSS_ONE_SHOT_LEVELS, level_key
from sparsify_tui.profiles import SCHEMA_VERSION
from sparsify_tui.metrics import OUTPUT_CHANGE_HELP, plan_notes, plan_to_json
from sparsify_tui.progress import check_cancel
from sparsify_tui.engines.inputs import load_samples_for
from sparsify_tui.profiles.ranks import rank_correlation, running_max, sensitivity_ranks

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import Layer, ModelGraph

LOSS_APPROX_HELP = (
    "Approximate loss sensitivity (weight magnitude, no data): for a layer with n weights, the value at "
    "sparsity s is the share of the layer's squared weight norm that pruning to s removes, i.e. the sum of "
    "the round(s*n) smallest w^2 divided by the sum of all w^2. It is 0 at 0% sparsity, grows with s, is at "
    "most 1, and stays 0 for a layer whose weights are all zero. It looks only at the weights, never at the "
    "model's outputs; use the one-shot method for a measured value."
)

LOSS_ONE_SHOT_HELP = (
    "Measured (one-shot) loss sensitivity: each prunable layer alone is pruned to each level (exactly "
    "round(s*n) smallest-magnitude weights set to zero), the model runs on the samples and the change of its "
    "outputs from the dense model's is recorded. " + OUTPUT_CHANGE_HELP + " Curves are smoothed by a running "
    "maximum so they never decrease; the value at 0% sparsity is exactly 0."
)

METHODS = ("approx", "one-shot")


# ---------------------------------------------------------------- levels
def normalize_levels(levels, eval_sparsity: float) -> list[float]:
    """Sorted unique levels in [0, 1), with 0 and the evaluation sparsity included."""
    out = set()
    for x in list(levels) + [0.0, eval_sparsity]:
        x = float(x)
        if not 0.0 <= x < 1.0 or x != x:
            raise UsageError(f"sparsity levels must be in [0, 1), got {x:g}")
        out.add(round(x, 6))
    return sorted(out)


# ---------------------------------------------------------------- approx
def magnitude_proxy(w: np.ndarray, levels, magnitude: np.ndarray | None = None, *,
                    overwrite: bool = False) -> np.ndarray:
    """The proxy at every level: sum of the round(s*n) smallest w^2 / sum of w^2 (see the module doc).

    ``overwrite`` lets it square and sort ``w`` (or ``magnitude``) in place.
    """
    from sparsify_tui.onnxkit.sparsity import pruned_count

    m = np.asarray(w if magnitude is None else magnitude)
    n = m.size
    levels = np.asarray(list(levels), dtype=np.float64)
    if n == 0:
        return np.zeros(levels.size)
    if m.dtype.kind != "f" or m.dtype.itemsize < 4:
        m = m.astype(np.float32)
        overwrite = True
    m = m.reshape(-1)
    if overwrite and m.flags.writeable and m.flags.c_contiguous:
        sq = np.square(m, out=m)
    else:
        sq = np.square(m)
    sq.sort()
    ks = np.array([pruned_count(n, s) for s in levels], dtype=np.int64)
    bounds = np.unique(np.concatenate([ks[(ks > 0) & (ks < n)], [0]]))
    seg = np.add.reduceat(sq, bounds, dtype=np.float64)
    cs = np.concatenate([[0.0], np.cumsum(seg)])  # cs[j] = sum of the first bounds[j] (j < len) elements
    total = float(cs[-1])
    if not total > 0 or not np.isfinite(total):
        return np.zeros(levels.size)
    idx = np.searchsorted(bounds, ks, side="left")  # bounds[idx] == k, or idx == len(bounds) for k == n
    vals = cs[idx] / total
    vals[ks == 0] = 0.0
    return np.clip(vals, 0.0, 1.0)


def _layer_weight_for_approx(graph: "ModelGraph", layer: "Layer",
                             full_model_cache: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(stored weight, magnitude or None) of a prunable layer."""
    from sparsify_tui.analysis import read_weight

    w = np.asarray(read_weight(graph, layer))
    ref = layer.weight
    if ref is not None and "DequantizeLinear" in (ref.transform or []) and w.dtype.kind in "iu":
        from sparsify_tui.onnxkit.tensors import find_dequant, quant_magnitude_and_zero
        from sparsify_tui.onnxkit.modelio import load_model_copy

        if "model" not in full_model_cache:
            full_model_cache["model"] = load_model_copy(graph.path)[0] if graph.path else None
        model = full_model_cache["model"]
        dq = find_dequant(model, ref.name, ref.graph_path or "") if model is not None else None
        if dq is not None:
            mag, _ = quant_magnitude_and_zero(w, dq)
            return w, mag
    return w, None


def approx_loss_profile(graph: "ModelGraph", levels=LOSS_APPROX_LEVELS, eval_sparsity: float = 0.9) -> dict:
    """The weight-magnitude loss profile of every prunable layer (no data; see the module doc)."""
    levels = normalize_levels(LOSS_APPROX_LEVELS if levels is None else levels, eval_sparsity)
    layers = list(graph.prunable_layers)
    cache: dict = {}
    order = sorted(range(len(layers)), key=lambda i: -(layers[i].prunable_params or 0))

    def work(i: int) -> np.ndarray:
        w, mag = _layer_weight_for_approx(graph, layers[i], cache)
        return magnitude_proxy(w, levels, mag, overwrite=True)

    curves: list[Any] = [None] * len(layers)
    if len(layers) > 1 and sum(layer.prunable_params or 0 for layer in layers) > 200_000:
        with ThreadPoolExecutor(max_workers=2) as ex:
            for i, c in zip(order, ex.map(work, order)):
                curves[i] = c
    else:
        for i in order:
            curves[i] = work(i)
    raw = {layer.id: [float(v) for v in c] for layer, c in zip(layers, curves)}
    return build_document(
        "approx", layers, levels, eval_sparsity, raw, samples=0, keep_raw=False,
        extra={"definition": LOSS_APPROX_HELP},
    )


# ---------------------------------------------------------------- the document
def build_document(method: str, layers, levels: list[float], eval_sparsity: float,
                   raw: dict[str, list[float] | None], *, samples: int, keep_raw: bool,
                   approx_at_eval: dict[str, float] | None = None, extra: dict | None = None,
                   skipped: dict[str, str] | None = None) -> dict:
    """The ``kind: "loss"`` document from per-layer raw curves (one value per level, or None)."""
    eval_idx = levels.index(round(float(eval_sparsity), 6))
    rows = []
    for layer in layers:
        values = raw.get(layer.id)
        row: dict[str, Any] = {
            "id": layer.id,
            "name": layer.name,
            "op_type": layer.op_type,
            "depth": layer.depth,
            "params": layer.prunable_params,
        }
        if values is None:
            row.update({"sensitivity_by_level": None, "sensitivity": None, "rank": None})
            if skipped and layer.id in skipped:
                row["skipped"] = skipped[layer.id]
        else:
            vals = [0.0 if lv == 0 else max(0.0, float(v)) for lv, v in zip(levels, values)]
            smooth = running_max(vals)
            row["sensitivity_by_level"] = {level_key(lv): float(v) for lv, v in zip(levels, smooth)}
            if keep_raw:
                row["raw_by_level"] = {level_key(lv): float(v) for lv, v in zip(levels, vals)}
            row["sensitivity"] = float(smooth[eval_idx])
        rows.append(row)
    ranks = sensitivity_ranks([r["sensitivity"] for r in rows])
    for r, k in zip(rows, ranks):
        r["rank"] = k
    measured = [r["sensitivity"] for r in rows if r["sensitivity"] is not None]
    doc: dict[str, Any] = {
        "kind": "loss",
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "levels": [float(x) for x in levels],
        "eval_sparsity": float(eval_sparsity),
        "average_sensitivity": float(np.mean(measured)) if measured else None,
        "rank_correlation": None,
        "samples": int(samples),
        "layers": rows,
    }
    if approx_at_eval is not None:
        pairs = [(r["sensitivity"], approx_at_eval.get(r["id"])) for r in rows]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        doc["rank_correlation"] = rank_correlation([a for a, _ in pairs], [b for _, b in pairs])
    if extra:
        doc.update(extra)
    return doc


# ---------------------------------------------------------------- one-shot (in this process)
def _pruned_weights(fw, levels: list[float], pruner, layer_id: str) -> tuple[list[int | None], list[np.ndarray]]:
    """The layer's weight pruned at each level: ``arrays`` holds each distinct pruned weight once and
    ``slot_of_level`` points each level at its array (None: the weight is unchanged, exactly 0).
    A calibrated ``pruner`` gives the arrays where it can; else magnitude: levels ascend, and one
    working copy is pruned further at each level (only the newly removed elements are written) and
    snapshotted; each snapshot equals prune_array(dense, s)."""
    from sparsify_tui.onnxkit.sparsity import pruned_count

    order = fw.magnitude_order()
    work = fw.dense.copy()
    flat = work.reshape(-1)
    zero_flat = None if np.ndim(fw.zero) == 0 else \
        np.broadcast_to(np.asarray(fw.zero, dtype=work.dtype), work.shape).reshape(-1)
    slot_of_level: list[int | None] = []  # index into `arrays`, or None for an exact 0
    arrays: list[np.ndarray] = []
    last_k = 0
    wanted = [s for s in levels if s > 0 and pruned_count(fw.dense.size, s) > fw.existing_zeros]
    calibrated = pruner.weights(layer_id, fw.dense, wanted) if pruner is not None and wanted else None
    if calibrated is not None:
        by_level = dict(zip(wanted, calibrated))
        for s in levels:
            if s in by_level:
                arrays.append(by_level[s])
                slot_of_level.append(len(arrays) - 1)
            else:
                slot_of_level.append(None)
    for s in levels if calibrated is None else []:
        k = pruned_count(fw.dense.size, s)
        if s == 0 or k <= fw.existing_zeros:
            slot_of_level.append(None)  # unchanged weight: exactly 0
            continue
        if k != last_k or not arrays:
            idx = order[last_k:k]
            flat[idx] = fw.zero if zero_flat is None else zero_flat[idx]
            arrays.append(work.copy())
            last_k = k
        slot_of_level.append(len(arrays) - 1)
    return slot_of_level, arrays


def _measure_levels(runner, layer_id: str, fw, levels: list[float], pruner, eval_sparsity: float,
                    cancel) -> tuple[list[float], dict]:
    """The layer's output change at each level, and its per-output values at the evaluation sparsity."""
    slot_of_level, arrays = _pruned_weights(fw, levels, pruner, layer_id)
    check_cancel(cancel)
    results = runner.comparisons(layer_id, arrays, cancel=cancel) if arrays else []
    values = [0.0 if slot is None else results[slot].value for slot in slot_of_level]
    at_eval = slot_of_level[levels.index(round(float(eval_sparsity), 6))]
    return values, results[at_eval].values_by_output() if at_eval is not None else {}


def _one_shot_pruner(model_path, graph, data, samples: int, input_shapes, prune_method: str,
                     pruner_factory, cores, cancel) -> tuple[Any, int]:
    """The calibrated pruner of ``prune_method`` (None for magnitude) and its number of calibration samples."""
    if prune_method == "magnitude":
        return None, 0
    if pruner_factory is None:
        raise UsageError(f"--prune-method {prune_method} is measured in the profile's child process only")
    cal = _calibration_samples(model_path, graph, data, samples, input_shapes)
    return pruner_factory(model_path, graph, cal, prune_method, cores=cores, cancel=cancel), len(cal)


def compute_one_shot(
    model_path: str | os.PathLike,
    *,
    data=None,
    samples: int = 4,
    levels=LOSS_ONE_SHOT_LEVELS,
    input_shapes: dict[str, list[int]] | None = None,
    eval_sparsity: float = 0.9,
    on_progress: Callable[[dict], Any] | None = None,
    on_partial: Callable[[dict], Any] | None = None,
    cancel=None,
    cores: int | None = None,
    graph: "ModelGraph | None" = None,
    prune_method: str = "magnitude",
    pruner_factory: Callable[..., Any] | None = None,
) -> dict:
    """Measure the one-shot loss profile here (the child process calls this; see the module doc).

    ``prune_method`` other than magnitude: ``pruner_factory(model_path, graph, samples, method,
    cores=...)`` returns an object whose ``weights(layer_id, dense, levels)`` gives the layer's weight
    pruned at each level by that method (or None: magnitude for that layer). Its calibration samples
    are drawn apart from the measurement's (other rows of ``data``, or other random seeds).
    """
    from sparsify_tui.analysis import analyze

    t0 = time.perf_counter()
    levels = normalize_levels(LOSS_ONE_SHOT_LEVELS if levels is None else levels, eval_sparsity)
    if graph is None:
        graph = analyze(model_path, input_shapes=input_shapes or None)
    layers = list(graph.prunable_layers)
    sample_list = load_samples_for(model_path, graph, data=data, samples=samples, input_shapes=input_shapes)
    from sparsify_tui.profiles.downstream import LayerSwapRunner

    pruner, calibration = _one_shot_pruner(model_path, graph, data, samples, input_shapes, prune_method,
                                           pruner_factory, cores, cancel)
    runner = LayerSwapRunner(model_path, graph, sample_list, cores=cores)
    total = sum(1 for layer in layers if layer.id in runner.layer_weight) * max(1, len(levels) - 1)
    done = 0
    if on_progress:
        on_progress({"event": "progress", "done": 0, "total": total, "label": "dense outputs"})
    try:
        raw: dict[str, list[float] | None] = {}
        by_weight: dict[str, list[float]] = {}
        by_output: dict[str, dict] = {}  # layer id -> per-output values at the evaluation sparsity
        for layer in layers:
            name = runner.layer_weight.get(layer.id)
            if name is None:
                raw[layer.id] = None
                continue
            check_cancel(cancel)
            if name in by_weight:  # a weight shared with a layer already measured
                raw[layer.id] = list(by_weight[name])
                first = next(lid for lid, n in runner.layer_weight.items() if n == name and lid in by_output)
                by_output[layer.id] = by_output[first]
                done += max(1, len(levels) - 1)
            else:
                values, by_output[layer.id] = _measure_levels(runner, layer.id, runner.weights[name], levels,
                                                              pruner, eval_sparsity, cancel)
                done += max(1, len(levels) - 1)
                if on_progress:
                    on_progress({"event": "progress", "done": done, "total": total, "label": layer.id})
                runner.finish_layer(layer.id)
                by_weight[name] = values
                raw[layer.id] = values
            if on_partial:
                on_partial({"layer": layer.id, "raw": raw[layer.id]})
    finally:
        runner.close()
    kinds = [runner.kinds.get(n, "nse") for n in runner.output_names]
    # the approx proxy at the evaluation sparsity for the rank correlation
    approx_doc = approx_loss_profile(graph, levels=[0.0, eval_sparsity], eval_sparsity=eval_sparsity)
    approx_at_eval = {r["id"]: r["sensitivity"] for r in approx_doc["layers"]}
    doc = build_document(
        "one-shot", layers, levels, eval_sparsity, raw, samples=len(sample_list), keep_raw=True,
        approx_at_eval=approx_at_eval, skipped=runner.skipped,
        extra={
            "definition": LOSS_ONE_SHOT_HELP,
            "output_kinds": kinds,
            "output_metrics": plan_to_json(runner.plan),
            "engine": "onnxruntime",
            "engine_version": _ort_version(),
            "data": str(data) if data is not None else None,
            "runs": runner.runs,
            "execution": runner.mode,
            "prune_method": prune_method,
            "calibration_samples": calibration,
            "magnitude_layers": dict(getattr(pruner, "magnitude_layers", {}) or {}),
            "notes": ([runner.note] if runner.note else []) + plan_notes(runner.plan),
            "elapsed_s": round(time.perf_counter() - t0, 3),
        },
    )
    for row in doc["layers"]:
        if row["id"] in by_output:
            row["output_values"] = by_output[row["id"]]
    return doc


def _calibration_samples(model_path, graph, data, samples: int, input_shapes) -> list[dict]:
    """Calibration samples apart from the measurement's first ``samples``: the next rows of ``data``
    (all of them when it has no more), or random inputs from other seeds."""
    if data is None:
        return load_samples_for(model_path, graph, data=None, samples=32, input_shapes=input_shapes,
                                seed=1_000_003)
    rows = load_samples_for(model_path, graph, data=data, samples=samples + 32, input_shapes=input_shapes)
    return rows[samples:] or rows


def _ort_version() -> str | None:
    from sparsify_tui.engines.ort import version

    return version()


# ---------------------------------------------------------------- public entry
def run_loss_profile(
    model_path: str | os.PathLike,
    method: str = "one-shot",
    data=None,
    samples: int = 4,
    levels=None,
    input_shapes: dict[str, list[int]] | None = None,
    eval_sparsity: float = 0.9,
    on_progress: Callable[[dict], Any] | None = None,
    cancel=None,
    *,
    in_process: bool = False,
    cores: int | None = None,
    timeout_s: float | None = None,
    graph: "ModelGraph | None" = None,
    prune_method: str = "magnitude",
    pruner_factory: Callable[..., Any] | None = None,
) -> dict:
    """The loss profile of a model (``method`` "approx" or "one-shot"; see the module doc).

    ``approx`` runs here (it is instantaneous). ``one-shot`` runs in the
    measurement child process (job kind ``loss_one_shot``) unless
    ``in_process``; ``on_progress`` gets the runner's event dicts
    (``{"event": "progress", "done", "total", "label"}`` and
    ``{"event": "partial", "data": {"layer", "raw"}}``), ``cancel`` is a
    ``threading.Event``.
    """
    if method not in METHODS:
        raise UsageError(f"the loss method must be approx or one-shot, got {method!r}")
    if not 0.0 <= float(eval_sparsity) < 1.0:
        raise UsageError(f"the evaluation sparsity must be in [0, 1), got {eval_sparsity:g}")
    if int(samples) < 1:
        raise UsageError(f"the number of samples must be at least 1, got {samples}")
    if data is not None and not Path(data).expanduser().exists():
        raise UsageError(f"{data}: no such data file or directory")
    if method == "approx":
        from sparsify_tui.analysis import analyze

        if graph is None:
            graph = analyze(model_path, input_shapes=input_shapes or None)
        return approx_loss_profile(graph, LOSS_APPROX_LEVELS if levels is None else levels, eval_sparsity)
    if in_process:
        def _prog(ev):
            if on_progress:
                on_progress(ev)

        def _part(d):
            if on_progress:
                on_progress({"event": "partial", "data": d})

        return compute_one_shot(
            model_path, data=data, samples=int(samples), levels=levels, input_shapes=input_shapes,
            eval_sparsity=eval_sparsity, on_progress=_prog, on_partial=_part, cancel=cancel, cores=cores,
            graph=graph, prune_method=prune_method, pruner_factory=pruner_factory,
        )
    from sparsify_tui.engines.runner import run_job

    job = {
        "kind": "loss_one_shot",
        "model_path": str(Path(model_path).resolve()),
        "data": str(Path(data).expanduser().resolve()) if data is not None else None,
        "samples": int(samples),
        "levels": list(levels) if levels is not None else None,
        "input_shapes": input_shapes or None,
        "eval_sparsity": float(eval_sparsity),
    }
    if prune_method != "magnitude":
        job["prune_method"] = prune_method
    return run_job(job, on_progress=on_progress, cancel=cancel, timeout_s=timeout_s, cores=cores)
