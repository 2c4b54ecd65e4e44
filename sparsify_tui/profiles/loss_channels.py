"""Channel loss profiles: how much removing a fraction of one channel group's channels changes the model.

:func:`run_channel_loss_profile` runs job kind ``loss_channels`` (in the measurement child process) and
returns the document (``kind: "loss_channels"``). One-shot, on the project's samples: for every prunable
channel group and every fraction, that group alone loses ``round(fraction * channels)`` channels (at least
one, never all: the count a plan of that fraction removes), chosen by the filter L2 norm order
(``prune --structure channels --method l2``). The removal is measured masked, in ONE session: every weight
that reads group channels is an input of the session (:class:`sparsify_tui.onnxkit.channels.FedMask`) and a
removal feeds them with the removed input channels zeroed, whose outputs equal the physically smaller model's
(tested); building a model and a session per removal took ~10 s each on the ResNet-50-sized model under
load. When a consumer weight is not a plain initializer, each removal is its own smaller model
(:func:`sparsify_tui.onnxkit.channels.remove_channels`; ``execution: "removed"``). The pruned model runs on the samples with ONNX Runtime and
its outputs are compared with the dense model's by :func:`sparsify_tui.metrics.compare_outputs` (the same
output change as the unstructured one-shot loss profile, with the metric plan fixed from the dense outputs).

The document has the loss profile's shape, one row per group instead of per layer, so the optimizer reads
its curves as it reads a loss profile's: ``layers``: ``id`` (the group id), ``layers`` (its weighted layers),
``channels``, ``params``, ``removed_by_level`` ({fraction actually removed: channels}),
``sensitivity_by_level`` ({fraction actually removed: smoothed output change, 0 at 0}), ``raw_by_level``,
``sensitivity`` (at the largest fraction), ``rank``; plus ``fractions``, ``unprunable`` (id, layers,
reasons), ``output_metrics``, ``samples``, ``engine``, ``elapsed_s``, ``notes``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np

from sparsify_tui.errors import UsageError

DEFAULT_FRACTIONS = (0.25, 0.5, 0.75)
LOSS_CHANNELS_HELP = (
    "Channel loss sensitivity (one-shot, measured): each prunable channel group alone loses a fraction of its "
    "channels (smallest filter L2 norms first, physically removed), the model runs on the samples and the "
    "change of its outputs from the dense model's is recorded. Curves are smoothed by a running maximum so "
    "they never decrease; the value at 0 is exactly 0."
)


def removed_count(channels: int, fraction: float) -> int:
    """Channels a plan of ``fraction`` removes from a group of ``channels``: rounded, at least 1, one kept."""
    return max(1, min(int(channels) - 1, int(round(float(fraction) * int(channels)))))


def _session(model: Any, cores: int | None, optimize: bool = False):
    import onnxruntime as ort

    from sparsify_tui.engines.ort import session_options

    so = session_options(cores, level="all" if optimize else "basic")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(sess, samples: list[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
    names = {i.name for i in sess.get_inputs()}
    return [sess.run(None, {k: v for k, v in s.items() if k in names}) for s in samples]


def _shapes(dense: Any, sample_list: list, infer: Callable) -> dict | None:
    """The tensor shapes of ``dense`` with its dynamic input dimensions fixed by the samples' (None: onnx's
    own inference, inside channel_map, is the fallback)."""
    opset = max([int(o.version) for o in dense.opset_import if o.domain in ("", "ai.onnx")] or [13])
    fixed = type(dense)()
    fixed.CopyFrom(dense)
    for vi in fixed.graph.input:
        s = sample_list[0].get(vi.name) if sample_list else None
        if s is not None and vi.type.tensor_type.HasField("shape") and len(vi.type.tensor_type.shape.dim) == s.ndim:
            for d, v in zip(vi.type.tensor_type.shape.dim, s.shape):
                d.Clear()
                d.dim_value = int(v)
    try:
        return infer(fixed, opset)[1]
    except Exception:  # noqa: BLE001
        return None


def _runner(dense: Any, shapes: dict | None, sample_list: list, cores: int | None) -> tuple[Any, Callable]:
    """(the FedMask, outputs(removed) -> the model's outputs on the samples with ``removed`` channels gone)."""
    from sparsify_tui.onnxkit.channels import FedMask, remove_channels

    fed = FedMask(dense, shapes)
    if fed.ok:  # one session, the consumer weights fed: a removal is a feed, not a model and a session
        sess = _session(fed.model, cores, optimize=True)
        names = {i.name for i in sess.get_inputs()} - set(fed.dense)

        def outputs(removed: dict) -> list[list[np.ndarray]]:
            w = fed.weights(removed)
            return [sess.run(None, {**{k: v for k, v in x.items() if k in names}, **w}) for x in sample_list]
    else:
        def outputs(removed: dict) -> list[list[np.ndarray]]:
            return _run(_session(remove_channels(dense, removed, shapes) if removed else dense, cores), sample_list)
    return fed, outputs


def compute_channel_loss(model_path: str, *, scores_fn: Callable[[Any, Any], Mapping[str, np.ndarray]],
                         fractions: Any = None, data: Any = None, samples: int = 4,
                         input_shapes: dict | None = None, cores: int | None = None,
                         on_progress: Callable[[dict], Any] | None = None,
                         on_partial: Callable[[dict], Any] | None = None, cancel=None) -> dict:
    """The ``loss_channels`` document, measured here (the child process calls this; see the module doc).

    ``scores_fn(prepared_model, channel_map)`` gives each group's per-channel score (lowest removed first):
    the l2 ranking of ``optim.channels``, which this layer cannot import."""
    import onnx

    from sparsify_tui.analysis import analyze
    from sparsify_tui.analysis.loader import bounded_output_names
    from sparsify_tui.analysis.shapes import infer
    from sparsify_tui.engines.inputs import load_samples_for
    from sparsify_tui.errors import ProfileError
    from sparsify_tui.metrics import compare_outputs, plan_notes, plan_outputs, plan_to_json
    from sparsify_tui.onnxkit.channels import channel_map, fold_constants, group_layers
    from sparsify_tui.progress import check_cancel
    from sparsify_tui.profiles import SCHEMA_VERSION
    from sparsify_tui.profiles.ranks import running_max, sensitivity_ranks
    from sparsify_tui.settings import level_key

    t0 = time.perf_counter()
    fracs = sorted({round(float(f), 6) for f in (DEFAULT_FRACTIONS if fractions is None else fractions)})
    if not fracs or any(not 0.0 < f < 1.0 for f in fracs):
        raise UsageError("--fractions: each fraction of channels removed must be in (0, 1)")
    graph = analyze(model_path, input_shapes or None)
    sample_list = load_samples_for(model_path, graph, data=data, samples=samples, input_shapes=input_shapes)
    model = onnx.load(str(model_path))
    dense = type(model)()
    dense.CopyFrom(model)
    fold_constants(dense)
    shapes = _shapes(dense, sample_list, infer)
    cmap = channel_map(dense, shapes)
    layers_of = group_layers(cmap)
    prunable = [g for g in cmap.groups if g.prunable]
    if not prunable:
        raise ProfileError("the model has no prunable channel group: no channel loss profile to measure")
    scores = scores_fn(dense, cmap)
    fed, outputs = _runner(dense, shapes, sample_list, cores)
    ref = outputs({})
    out_names = [o.name for o in dense.graph.output]
    plan = plan_outputs(ref, out_names, bounded=bounded_output_names(model_path))
    total = len(prunable) * len(fracs)
    done = 0
    rows = []
    for g in prunable:
        order = np.argsort(np.asarray(scores[g.id]), kind="stable")
        levels, raw, removed_by = [0.0], [0.0], {level_key(0.0): 0}
        at_top: dict = {}
        for f in fracs:
            check_cancel(cancel)
            k = removed_count(g.channels, f)
            actual = round(k / g.channels, 6)
            if actual in levels:
                continue
            change = compare_outputs(ref, outputs({g.id: order[:k].tolist()}), plan, out_names)
            levels.append(actual)
            raw.append(max(0.0, float(change.value)))
            removed_by[level_key(actual)] = int(k)
            at_top = change.values_by_output()
            done += 1
            if on_progress:
                on_progress({"event": "progress", "done": done, "total": total, "label": f"group {g.id} at {f:g}"})
        done = (prunable.index(g) + 1) * len(fracs)
        order_lv = np.argsort(levels)
        lv = [levels[i] for i in order_lv]
        rv = [raw[i] for i in order_lv]
        smooth = running_max(rv)
        row = {"id": g.id, "layers": layers_of.get(g.id, []), "channels": g.channels, "params": g.params,
               "removed_by_level": removed_by,
               "sensitivity_by_level": {level_key(x): float(y) for x, y in zip(lv, smooth)},
               "raw_by_level": {level_key(x): float(y) for x, y in zip(lv, rv)},
               "sensitivity": float(smooth[-1]), "output_values": at_top}
        rows.append(row)
        if on_partial:
            on_partial({"group": g.id, "raw": row["raw_by_level"]})
    for r, k in zip(rows, sensitivity_ranks([r["sensitivity"] for r in rows])):
        r["rank"] = k
    return {
        "kind": "loss_channels", "schema_version": SCHEMA_VERSION, "method": "one-shot", "structure": "channels",
        "definition": LOSS_CHANNELS_HELP, "fractions": fracs, "samples": len(sample_list),
        "data": str(data) if data is not None else None, "engine": "onnxruntime",
        "output_metrics": plan_to_json(plan), "layers": rows,
        "unprunable": [{"id": g.id, "layers": layers_of.get(g.id, []), "reasons": list(g.reasons)}
                       for g in cmap.groups if not g.prunable],
        "average_sensitivity": float(np.mean([r["sensitivity"] for r in rows])) if rows else None,
        "execution": "masked" if fed.ok else "removed",
        "notes": plan_notes(plan) + ([] if fed.ok else [f"each removal measured on its own smaller model: {fed.reason}"]),
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }


def run_channel_loss_profile(model_path: Any, *, fractions: Any = None, data: Any = None, samples: int = 4,
                             input_shapes: dict | None = None, cores: int | None = None,
                             on_progress: Callable[[dict], Any] | None = None, cancel=None,
                             timeout_s: float | None = None) -> dict:
    """Measure a channel loss profile in a child process (job kind ``loss_channels``); the document."""
    from pathlib import Path

    from sparsify_tui.engines.runner import run_job
    from sparsify_tui.errors import ModelError

    if not Path(model_path).exists():
        raise ModelError(f"{model_path}: no such file")
    if int(samples) < 1:
        raise UsageError(f"the number of samples must be at least 1, got {samples}")
    job = {"kind": "loss_channels", "model_path": str(Path(model_path).resolve()),
           "data": str(Path(data).expanduser().resolve()) if data is not None else None,
           "samples": int(samples), "input_shapes": input_shapes or None,
           "fractions": list(DEFAULT_FRACTIONS if fractions is None else fractions)}
    return run_job(job, on_progress=on_progress, cancel=cancel, timeout_s=timeout_s, cores=cores)
