"""The deployment search (issue #17): the fastest accurate way to run the project's model on this server.

:func:`run_deploy` measures every engine (onnxruntime, deepsparse, openvino)
x precision (fp32, bf16, int8) x sparsity (dense, and each chosen optimization
one-shot pruned; an optimization of channel groups is a structured variant, its
file channel-pruned once by ``--channel-method`` and its rows marked
``structure = "channels"`` with the file's ``flops_reduction``) that this machine can run, in ONE child process (job kind
``deploy``, :mod:`sparsify_tui.jobs.deploy`), timed in interleaved blocks,
against ONNX Runtime fp32 dense (the reference row). The CLI (``sparsify-tui
deploy``) and the app call it.

* INT8: static quantization (ONNX Runtime ``quantize_static``, QDQ, per-channel
  int8 weights, uint8 activations, MinMax) calibrated on the CALIBRATION
  samples; one QDQ file per sparsity, run by every engine that runs INT8.
* Output change (``metrics.compare_outputs``: its primary metric per output, summed) and
  top-1 agreement (argmax of the first class-score output) are measured on the
  HELD-OUT samples, never on the calibration ones, against the reference
  row's outputs on the same batches.
* ``median_ms``: median of the row's block medians; ``spread_ms``: [min, max]
  of them; ``speedup``: the median over rounds of reference block / row block
  (blocks of one round run next to each other); ``pareto``: no other row is at
  least as fast with at most the same output change (and better in one).
* ``budget`` (``{"kind", "source", "value", "name"}``): with none given, the
  default one, "outputs must follow the original": a row whose outputs no
  longer follow the reference's (``metrics.departure``, e.g. an INT8 file that
  moves a spectrogram by 201% RMS) is left out; ``max_output_change`` X keeps
  the rows whose output change is at most X; ``"none"`` keeps every row (the
  raw fastest). ``best``: the fastest row the budget keeps; ``left_out``: the
  faster rows it left out, each with why.
* An already-quantized model (dynamic INT8 ops, QLinear ops, Q/DQ pairs) gets
  no INT8 rows: they are skipped with "the model is already quantized", never
  quantized twice. A dense fp32 row of another engine whose outputs differ from
  ONNX Runtime fp32's far beyond rounding carries ``engines_disagree``.

The result is stored in the project as a profile of kind ``deploy`` (cached by
its settings, the optimizations' plans, the engines' versions and the machine;
``force`` measures again). A cancelled or interrupted search stores the rounds
it finished (``complete`` false) and raises; temporary files never outlive the call.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sparsify_tui.engines.registry import REFERENCE, engine_names, engines as all_engines, get_engine
from sparsify_tui.errors import CancelledError, EngineError, SparsifyError, UsageError
from sparsify_tui.optim.plan import Plan
from sparsify_tui.optim.channel_plan import is_channel_plan

ENGINES = engine_names()
PRECISIONS = ("fp32", "bf16", "int8")
KIND = "deploy"
CALIBRATION_SAMPLES = 8
HELDOUT_SAMPLES = 4
METRIC_HELDOUT_SAMPLES = 256  # held-out samples of --data with --metric (the user's metric needs more than 4)
HELDOUT_SEED = 1000  # random held-out samples are drawn from other seeds than the calibration ones
DEFAULT_REPEATS = 7
CHANNEL_METHODS = ("l2", "reconstruct")
# a channel plan is pruned by reconstruct by default: l2 alone moves the outputs of the ResNet-50-sized model by
# 5.1 (KL) at 0.3 of its channels, far past the default budget, where reconstruct moves them by 0.0005 (README)
DEFAULT_CHANNEL_METHOD = "reconstruct"
MAX_RETRIES = 3

ProgressFn = Callable[[dict], Any]

DEFINITION = (
    "Each row runs the model with one engine, precision and sparsity. ms: median of its timed blocks "
    "(interleaved with every other row's, in one process); speedup: the median over rounds of ONNX Runtime "
    "fp32 dense's block time over the row's; output change: against ONNX Runtime fp32 dense's outputs on "
    "held-out samples (not the INT8 calibration samples); pareto: no other row is as fast with less change."
)


NO_BUDGET = "none"
DEFAULT_BUDGET_NAME = "default: outputs must follow the original"
# a dense fp32 row of another engine whose outputs move more than this (relative RMS, percent) from
# ONNX Runtime fp32's is beyond anything fp32 rounding does (rounding moves them ~1e-5 %)
ENGINES_DISAGREE_PCT = 1.0
# on an already-quantized model each engine rounds the INT8 ops its own way: OpenVINO fp32 moves a dynamically
# quantized MiniLM's outputs 1.8% RMS from ONNX Runtime's (cosine distance 5e-5), which is no disagreement
ENGINES_DISAGREE_QUANTIZED_PCT = 10.0
DYNAMIC_INT8_OPS = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")


# ---------------------------------------------------------------- settings
def parse_budget(value: Any) -> float | str | None:
    """``--max-output-change``: None (the default budget), ``"none"`` (no budget) or a number >= 0."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == NO_BUDGET:
            return NO_BUDGET
        if text in ("", "default"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"--max-output-change must be a number >= 0 or 'none', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
        raise UsageError(f"--max-output-change must be a finite number >= 0 or 'none', got {value!r}")
    return float(value)


def budget_info(budget: Any, source: str | None = None) -> dict:
    """The budget as stored in the JSON: ``kind`` (default / max_output_change / none), ``source``,
    ``value`` (the number, or None) and ``name`` (shown on screen and in the summary)."""
    if isinstance(budget, dict):
        if budget.get("max_drop") is not None:  # a stored budget with --max-drop keeps it (and its name)
            base = {k: v for k, v in budget.items() if k not in ("max_drop", "metric")}
            return with_max_drop(dict(budget_info(base, source), metric=budget.get("metric")), [],
                                 budget["max_drop"])
        kind = budget.get("kind")
        source = source or budget.get("source")
        budget = NO_BUDGET if kind == "none" else (budget.get("value") if kind == "max_output_change" else None)
    budget = parse_budget(budget)
    if budget is None:
        return {"kind": "default", "source": source or "default (no --max-output-change)", "value": None,
                "name": DEFAULT_BUDGET_NAME}
    if budget == NO_BUDGET:
        return {"kind": "none", "source": source or "--max-output-change none", "value": None,
                "name": "none (the raw fastest, outputs unchecked)"}
    return {"kind": "max_output_change", "source": source or "--max-output-change", "value": budget,
            "name": f"output change <= {budget:g}"}


def _choose(flag: str, value: Any, allowed: tuple[str, ...]) -> list[str]:
    """The comma-separated choices of ``flag`` (all of ``allowed`` when none), in ``allowed``'s order."""
    items = _split(value) or list(allowed)
    bad = [x for x in items if x not in allowed]
    if bad:
        raise UsageError(f"{flag} must be among {', '.join(allowed)}, got {bad[0]!r}")
    return [x for x in allowed if x in items]


def parse_engines(value: Any) -> list[str]:
    return _choose("--engines", value, tuple(ENGINES))


def parse_precisions(value: Any) -> list[str]:
    return _choose("--precisions", value, tuple(PRECISIONS))


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    out: list[str] = []
    for v in value:
        out += [x.strip().lower() for x in str(v).split(",") if x.strip()]
    return out


def _plan_hash(plan: "Plan") -> str:
    """The plan's identity, stored with a search so that an export can tell it changed since."""
    return plan.digest()


# ---------------------------------------------------------------- samples
def split_samples(project: Any, data: str | os.PathLike | None, graph: Any = None
                  ) -> tuple[list[dict], list[dict], dict]:
    """(calibration samples, held-out samples, description): single-item batches, never the same ones."""
    from sparsify_tui.engines.inputs import load_samples_for

    shapes = dict(project.input_shapes or {}) or None
    model = str(project.model_path)
    if data is None:
        calib = load_samples_for(model, graph, samples=CALIBRATION_SAMPLES, input_shapes=shapes)
        held = load_samples_for(model, graph, samples=HELDOUT_SAMPLES, input_shapes=shapes, seed=HELDOUT_SEED)
        return calib, held, {"data": None, "calibration": len(calib), "heldout": len(held),
                             "source": "random inputs (seeds 0.. for calibration, 1000.. held out)"}
    p = Path(data).expanduser()
    if not p.exists():
        raise UsageError(f"--data {data}: no such file or directory")
    every = load_samples_for(model, graph, data=str(p), samples=CALIBRATION_SAMPLES + HELDOUT_SAMPLES,
                             input_shapes=shapes)
    if len(every) < 2:
        raise UsageError(f"--data {data} holds {len(every)} sample; the deployment search needs at least 2 "
                         "(some to calibrate INT8, others held out to measure the output change)")
    n_held = max(1, min(HELDOUT_SAMPLES, len(every) // 3))
    calib, held = every[:-n_held], every[-n_held:]
    return calib, held, {"data": str(p.resolve()), "calibration": len(calib), "heldout": len(held),
                         "source": f"{p.name}: first {len(calib)} samples calibrate, last {len(held)} held out"}


def split_labelled(project: Any, data: str | os.PathLike | None, graph: Any = None, with_metric: bool = False
                   ) -> tuple[list[dict], list[dict], dict, list | None]:
    """:func:`split_samples` and the held-out samples' labels (None without labels). With ``with_metric``
    (``--metric``) the held-out part of ``data`` grows to ``METRIC_HELDOUT_SAMPLES`` (the calibration keeps
    its ``CALIBRATION_SAMPLES``), so the user's metric is measured on enough samples."""
    if not with_metric or data is None:
        calib, held, info = split_samples(project, data, graph)
        return calib, held, info, None
    from sparsify_tui.engines.inputs import load_labels_for, load_samples_for

    shapes = dict(project.input_shapes or {}) or None
    p = Path(data).expanduser()
    every = load_samples_for(str(project.model_path), graph, data=str(p),
                             samples=CALIBRATION_SAMPLES + METRIC_HELDOUT_SAMPLES, input_shapes=shapes)
    if len(every) < 2:
        raise UsageError(f"--data {data} holds {len(every)} sample; the deployment search needs at least 2 "
                         "(some to calibrate INT8, others held out to measure the output change)")
    n_cal = min(CALIBRATION_SAMPLES, len(every) - max(1, len(every) // 3))
    calib, held = every[:n_cal], every[n_cal:]
    labels = load_labels_for(str(project.model_path), graph, data=str(p), samples=len(every), input_shapes=shapes)
    return calib, held, {"data": str(p.resolve()), "calibration": len(calib), "heldout": len(held),
                         "source": f"{p.name}: first {len(calib)} samples calibrate, next {len(held)} held out"
                                   + (" (with their labels)" if labels is not None else "")}, \
        (labels[n_cal:] if labels is not None else None)


def _batches(samples: list[dict], batch: int) -> list[dict]:
    """The samples grouped into batches of ``batch`` items (cycling when there are fewer)."""
    if batch <= 1:
        return samples
    out = []
    n = len(samples)
    for b in range(max(1, n // batch) if n >= batch else 1):
        items = [samples[(b * batch + i) % n] for i in range(batch)]
        out.append({k: np.concatenate([s[k] for s in items], axis=0) for k in items[0]})
    return out


# ---------------------------------------------------------------- building the files
def _quantize(src: Path, dst: Path, calib: list[dict], exclude: list[str] | None = None) -> None:
    """INT8 QDQ of ``src`` calibrated on ``calib``; the nodes named in ``exclude`` stay fp32."""
    import logging

    from sparsify_tui.actions.validate import quantize_file

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
    try:
        quantize_file(src, dst, calib, exclude)
    finally:
        root.setLevel(level)


def quantized_ops(path: str | os.PathLike) -> dict[str, int]:
    """{op type: count} of the INT8 operators already in the model (dynamic INT8, QLinear*, and
    QuantizeLinear / DequantizeLinear when both are present, i.e. Q/DQ pairs)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}

    def walk(graph: Any) -> None:
        for n in graph.node:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
            for a in n.attribute:
                if a.g is not None and a.g.node:
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    walk(model.graph)
    out = {k: v for k, v in counts.items() if k in DYNAMIC_INT8_OPS or k.startswith("QLinear")}
    if counts.get("QuantizeLinear") and counts.get("DequantizeLinear"):
        out["QuantizeLinear"] = counts["QuantizeLinear"]
        out["DequantizeLinear"] = counts["DequantizeLinear"]
    return out


def already_quantized(path: str | os.PathLike) -> str | None:
    """"the model is already quantized (N dynamic INT8 ops)" (or QLinear / Q/DQ ops) when it is, else None:
    quantizing it again fails inside ONNX Runtime's quantizer with an unrelated message ("Graph is not a DAG")."""
    ops = quantized_ops(path)
    if not ops:
        return None
    dynamic = sum(v for k, v in ops.items() if k in DYNAMIC_INT8_OPS)
    qlinear = sum(v for k, v in ops.items() if k.startswith("QLinear"))
    qdq = ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0)
    parts = [f"{n} {what}" for n, what in ((dynamic, "dynamic INT8 ops"), (qlinear, "QLinear INT8 ops"),
                                           (qdq, "QuantizeLinear/DequantizeLinear ops")) if n]
    return f"the model is already quantized ({', '.join(parts)}): no INT8 row to add"


def _prune(project: Any, graph: Any, plan: "Plan", dst: Path, method: str = "magnitude",
           calib: list[dict] | None = None, channel_method: str = DEFAULT_CHANNEL_METHOD) -> dict:
    """The plan pruned one-shot into ``dst``: by magnitude, or by Wanda / SparseGPT on the calibration samples;
    a channel plan (structure ``channels``) by ``channel_method`` (l2, or reconstruct on the calibration samples:
    :func:`sparsify_tui.actions.channels.prune_channel_plan`). Returns what the file is (``structure``, and
    for a channel plan its ``flops_reduction`` and ``method``)."""
    if is_channel_plan(plan):
        from sparsify_tui.actions.channels import prune_channel_plan

        if plan.sparsities():
            raise UsageError("an optimization that removes channels and zeroes single weights at once cannot be "
                             "deployed yet: give it one structure")
        info = prune_channel_plan(project.model_path, plan, dst, method=channel_method, samples=calib,
                                  input_shapes=dict(project.input_shapes or {}) or None, graph=graph)
        return {"structure": "channels", "flops_reduction": info["flops_reduction"], "method": info["method"],
                "channel_share": info["channel_share"]}
    if method == "magnitude":
        from sparsify_tui.optim.prune import prune_model

        prune_model(str(project.model_path), plan, dst, graph=graph)
        return {"structure": "unstructured"}
    from sparsify_tui.optim.calibrated import prune_model_calibrated

    prune_model_calibrated(str(project.model_path), plan, dst, graph=graph, method=method, samples=calib)
    return {"structure": "unstructured"}


def load_plans(project: Any, names: list[str] | None) -> list[tuple[str, "Plan", Any]]:
    """(name, plan, graph) of each chosen optimization (default: all of the project's)."""
    from sparsify_tui.actions.validate import load_plan

    if names is None:
        names = project.optimization_names()
    out = []
    for n in names:
        graph, opt, _ctx = load_plan(project, n)
        plan = opt.plan
        # a plan that prunes nothing but keeps some layers fp32 (a budgeted mixed-precision plan) still makes
        # its own INT8 rows: "INT8 except those layers"
        if not plan.sparsities() and not is_channel_plan(plan) and not plan.fp32_node_names(graph.layers):
            raise UsageError(f"optimization {opt.name!r} prunes no layer: nothing to deploy beyond dense")
        out.append((opt.name, plan, graph))
    return out


# ---------------------------------------------------------------- results
def pareto_flags(rows: list[dict]) -> list[bool]:
    """Per row: on the front of (speedup up, output change down)? Rows without both values are not."""
    flags = []
    for r in rows:
        s, c = r.get("speedup"), r.get("output_change")
        if s is None or c is None:
            flags.append(False)
            continue
        dominated = False
        for o in rows:
            if o is r or o.get("speedup") is None or o.get("output_change") is None:
                continue
            if o["speedup"] >= s and o["output_change"] <= c and (o["speedup"] > s or o["output_change"] < c):
                dominated = True
                break
        flags.append(not dominated)
    return flags


def departure(row: dict) -> str | None:
    """Why the row's outputs no longer follow the reference's (``metrics.departure``), or None."""
    if row.get("output_change") is None:
        return None
    from sparsify_tui.metrics import departure as judge

    return judge(row)


def engines_disagree(row: dict, quantized: bool = False) -> str | None:
    """For a dense fp32 row of another engine than ONNX Runtime: "engines disagree: ..." when its outputs
    differ from ONNX Runtime fp32's far beyond rounding (``quantized``: the model already holds INT8 ops,
    whose rounding differs between engines); None otherwise (and for every other row)."""
    if row.get("precision") != "fp32" or row.get("optimization") or row.get("engine") == REFERENCE \
            or row.get("output_change") is None:
        return None
    pct = max((float(o["rel_rms_pct"]) for o in row.get("output_change_outputs") or []
               if isinstance(o.get("rel_rms_pct"), (int, float))), default=0.0)
    gone = departure(row)
    if gone is None and pct <= (ENGINES_DISAGREE_QUANTIZED_PCT if quantized else ENGINES_DISAGREE_PCT):
        return None
    what = row.get("output_change_reading") or f"outputs moved {pct:.3g}% RMS"
    return (f"engines disagree: {row['engine']} fp32 and ONNX Runtime fp32 run the same file, yet the outputs "
            f"differ ({what}), far beyond fp32 rounding; this engine's other rows are suspect too")


def annotate(rows: list[dict], quantized: bool = False) -> list[dict]:
    """Each row with ``departure`` and ``engines_disagree`` (recomputed: older documents lack them)."""
    for r in rows:
        r["departure"] = departure(r)
        r["engines_disagree"] = engines_disagree(r, quantized)
    return rows


def left_out_reason(row: dict, budget: Any) -> str | None:
    """Why ``budget`` leaves ``row`` out, or None when it keeps it (its ``max_drop`` first, then the output change)."""
    from sparsify_tui.user_metric import over_budget

    over = over_budget(row.get("user_metric"), budget.get("max_drop") if isinstance(budget, dict) else None)
    if over:
        return over
    info = budget_info(budget)
    if info["kind"] == "none":
        return None
    if info["kind"] == "default":
        return row.get("departure") if "departure" in row else departure(row)
    if row["output_change"] > info["value"]:
        from sparsify_tui.metrics import format_change

        return f"output change {format_change(row)[0]} is over the budget {info['value']:g}"
    return None


def _check_metric(metric: Any, max_drop: Any) -> tuple[Any, float | None]:
    from sparsify_tui.actions.validate import check_metric

    return check_metric(metric, max_drop)


def with_max_drop(info: dict, rows: list[dict], max_drop: float | None) -> dict:
    """The budget ``info`` with ``max_drop`` (``--max-drop``, in the user metric's units) and its name
    ("...; top-1 drop <= 0.5"); unchanged without one. UsageError when no row carries a ``user_metric``."""
    if max_drop is None:
        return info
    from sparsify_tui.user_metric import parse_max_drop

    max_drop = parse_max_drop(max_drop)
    um = next((r["user_metric"] for r in rows if r.get("user_metric")), None)
    if um is None and rows:
        raise UsageError("--max-drop is a budget on the user's metric, and this deployment search measured "
                         "none: give --metric module:function too")
    name = (um or {}).get("name") or info.get("metric") or "metric"
    return dict(info, max_drop=max_drop, metric=name, name=f"{info['name']}; {name} drop <= {max_drop:g}")


def over_max_drop(rows: list[dict], budget: Any) -> list[dict]:
    """Every row whose user metric drops by more than the budget's ``max_drop`` (fastest or not), with why."""
    from sparsify_tui.user_metric import over_budget

    limit = budget.get("max_drop") if isinstance(budget, dict) else None
    out = []
    for r in rows:
        why = over_budget(r.get("user_metric"), limit)
        if why:
            out.append({"id": r["id"], "label": row_label(r), "speedup": r.get("speedup"), "reason": why})
    return out


def _row_samples(built: Built) -> tuple[list[dict], list | None]:
    return getattr(built, "heldout", []), getattr(built, "heldout_labels", None)


def score_row(metric: Any, outputs_dir: str | os.PathLike, rid: str, samples: list[dict],
              labels: list | None) -> dict:
    """The ``user_metric`` of the row ``rid`` of a ``deploy`` job run with ``outputs_dir``: the user's function
    (a loaded :class:`~sparsify_tui.user_metric.UserMetric`) on that row's held-out outputs against the
    reference row's (ONNX Runtime fp32 dense), with the held-out batches ``samples`` and their ``labels``
    (:func:`split_labelled`, grouped as the batches are). UsageError when the metric fails. Any caller that
    runs the ``deploy`` job (the search, a budget's closed loop) scores its rows with this."""
    from sparsify_tui.jobs.deploy import outputs_file, row_id
    from sparsify_tui.jobs.outputs import output_names, read_outputs

    ref_file = outputs_file(str(outputs_dir), row_id(REFERENCE, "fp32", None))
    names = output_names(ref_file)
    return metric.evaluate(read_outputs(ref_file, names), read_outputs(outputs_file(str(outputs_dir), rid), names),
                           samples, labels, names=names)


def score_rows(rows: list[dict], built: Built, metric: Any) -> None:
    """Each row's ``user_metric`` (:func:`score_row`) in place. UsageError when the metric fails."""
    if metric is None or not rows:
        return
    samples, labels = _row_samples(built)
    for r in rows:
        if "user_metric" not in r:
            r["user_metric"] = score_row(metric, built.job["outputs_dir"], r["id"], samples, labels)


def _metric_first(on_update: Callable | None, built: Built, metric: Any) -> Callable | None:
    """``on_update`` that first scores the reference row as soon as it arrives (before the timed rounds), so a
    metric that fails ends the search before it runs for nothing."""
    if metric is None:
        return on_update
    from sparsify_tui.jobs.deploy import row_id

    def check(m: Measurement, d: dict) -> None:
        if "row" in d and d["row"]["id"] == row_id(REFERENCE, "fp32", None):
            score_rows([dict(d["row"])], built, metric)
        if on_update is not None:
            on_update(m, d)

    return check


def best_row(rows: list[dict], budget: Any) -> dict | None:
    """The fastest row that ``budget`` keeps (see :func:`budget_info`; None: the default budget)."""
    ok = [r for r in rows if r.get("speedup") is not None and r.get("output_change") is not None
          and left_out_reason(r, budget) is None]
    return max(ok, key=lambda r: r["speedup"]) if ok else None


def left_out(rows: list[dict], budget: Any, best: dict | None) -> list[dict]:
    """The rows faster than ``best`` (every measured row without one) that ``budget`` left out, fastest first."""
    out = []
    for r in rows:
        if r.get("speedup") is None or r.get("output_change") is None:
            continue
        if best is not None and r["speedup"] <= best["speedup"]:
            continue
        why = left_out_reason(r, budget)
        if why:
            out.append({"id": r["id"], "label": row_label(r), "speedup": r["speedup"], "reason": why})
    return sorted(out, key=lambda x: -x["speedup"])


def sparse_plan_row(rows: list[dict]) -> dict | None:
    """What following the sparsity plan alone ships: DeepSparse fp32 with the first optimization
    (ONNX Runtime fp32 when DeepSparse did not run it)."""
    for engine in [e.name for e in all_engines() if e.sparse_speedup] + [REFERENCE]:
        for r in rows:
            if r["engine"] == engine and r["precision"] == "fp32" and r.get("optimization") \
                    and r.get("structure") != "channels" and r.get("speedup") is not None:
                return r
    return None


def apply_budget(doc: dict, budget: Any, source: str | None = None, max_drop: float | None = None) -> dict:
    """``doc`` with ``budget`` (:func:`budget_info`), ``best``, ``left_out`` and ``versus_sparse_plan`` for
    this budget (None: the default one; ``"none"``: the raw fastest); rows get ``departure`` and
    ``engines_disagree``. ``max_drop`` (``--max-drop``, or the budget dict's) also leaves out the rows whose
    ``user_metric`` drops by more (:func:`with_max_drop`; every such row is in ``over_max_drop``)."""
    doc = dict(doc)
    info = with_max_drop(budget_info(budget, source), doc.get("rows") or [],
                         budget.get("max_drop") if max_drop is None and isinstance(budget, dict) else max_drop)
    doc["budget"] = info
    rows = annotate(doc.get("rows") or [], bool(doc.get("already_quantized")))
    best = best_row(rows, info)
    doc["best"] = best
    doc["left_out"] = left_out(rows, info, best)
    plan = sparse_plan_row(doc.get("rows") or [])
    doc["sparse_plan"] = plan
    doc["versus_sparse_plan"] = (best["speedup"] / plan["speedup"]) if best and plan and plan["speedup"] else None
    doc["over_max_drop"] = over_max_drop(rows, info)
    return doc


def row_label(r: dict) -> str:
    return f"{r['engine']} {r['precision']} {plan_cell(r)}"


def plan_cell(r: dict, short: bool = False) -> str:
    """What the row runs: ``dense``, the optimization's name, or for a channel plan ``NAME (channels -55% FLOPs)``
    (the CLI table and every summary line; ``short``: ``NAME ch-55%``, the app's table)."""
    name = r.get("optimization") or "dense"
    if r.get("structure") != "channels":
        return name
    fr = r.get("flops_reduction")
    known = isinstance(fr, (int, float))
    if short:
        return f"{name} ch" + (f"-{fr:.0%}" if known else "")
    return f"{name} (channels" + (f" -{fr:.0%} FLOPs)" if known else ")")


def summary_line(doc: dict) -> str:
    """One sentence: the fastest configuration within the budget and how it compares (overview, CLI)."""
    best = doc.get("best")
    info = budget_info(doc.get("budget"))
    within = f"within the budget ({info['name']})" if info["kind"] != "none" else "(no budget: outputs unchecked)"
    if not best:
        text = f"no configuration {within}"
    else:
        text = f"fastest {within}: {row_label(best)}, {best['speedup']:.2f}x ONNX Runtime fp32 dense"
        plan = doc.get("sparse_plan")
        if plan and doc.get("versus_sparse_plan"):
            text += f", {doc['versus_sparse_plan']:.2f}x the sparse plan alone ({row_label(plan)})"
    gone = doc.get("left_out") or []
    if gone:
        by_reason: dict[str, list[dict]] = {}
        for g in gone:
            by_reason.setdefault(g["reason"], []).append(g)
        text += (f"; left out {len(gone)} faster row{'s' if len(gone) > 1 else ''}: "
                 + "; ".join(", ".join(f"{g['label']} {g['speedup']:.2f}x" for g in group) + f" ({why})"
                             for why, group in by_reason.items()))
    return text


def assemble(rows_seen: list[dict], rounds: list[dict[str, float]], skipped: list[dict],
             files: dict[str, dict]) -> tuple[dict | None, list[dict]]:
    """(reference row, rows with timings) from the partial data: rows that finished at least one round."""
    out = []
    for r in rows_seen:
        blocks = [b[r["id"]] for b in rounds if r["id"] in b]
        if not blocks:
            continue
        row = dict(r)
        row["block_ms"] = blocks
        row["median_ms"] = statistics.median(blocks)
        row["spread_ms"] = [min(blocks), max(blocks)]
        f = files.get(r["id"]) or {}
        row["file_bytes"] = f.get("bytes")
        row["sparsity"] = f.get("sparsity", 0.0)
        row["structure"] = f.get("structure")  # None (dense), "unstructured" or "channels"
        if f.get("structure") == "channels":
            row["flops_reduction"] = f.get("flops_reduction")
            row["channel_share"] = f.get("channel_share")
            row["channel_method"] = f.get("method")
        out.append(row)
    ref = next((r for r in out if r["engine"] == REFERENCE and r["precision"] == "fp32"
                and r.get("optimization") is None), None)
    for row in out:
        if ref is None:
            row["speedup"] = None
            continue
        ratios = [b[ref["id"]] / b[row["id"]] for b in rounds if row["id"] in b and ref["id"] in b and b[row["id"]] > 0]
        row["speedup"] = 1.0 if row is ref else (statistics.median(ratios) if ratios else None)
    for row, flag in zip(out, pareto_flags(out)):
        row["pareto"] = flag
    return ref, out


def _items_per_second(rows: list[dict], batch: int) -> None:
    for r in rows:
        r["items_per_second"] = (1000.0 * batch / r["median_ms"]) if r.get("median_ms") else None


# ---------------------------------------------------------------- the search, in steps
class Setup:
    """The settings of one deployment search that do not depend on the machine (:func:`prepare`).

    ``settings_for(cores)`` is the cache key's settings on a machine with that many cores (the cluster path
    adds ``server``); ``plans`` are :func:`load_plans`' (name, plan, graph)."""

    def __init__(self, project: Any, engines: list[str], precisions: list[str], plans: list, batch: int,
                 cores: int | None, data: Any, repeats: int, min_block_ms: float, prune_method: str,
                 channel_method: str = DEFAULT_CHANNEL_METHOD) -> None:
        self.project = project
        self.engines, self.precisions, self.plans = engines, precisions, plans
        self.batch, self.cores, self.data = batch, cores, data
        self.repeats, self.min_block_ms, self.prune_method = int(repeats), float(min_block_ms), prune_method
        self.channel_method = channel_method

    @property
    def has_channel_plans(self) -> bool:
        return any(is_channel_plan(p) for _n, p, _g in self.plans)

    def settings_for(self, cores: int) -> dict:
        s = {"engines": self.engines, "precisions": self.precisions, "batch_size": self.batch, "cores": int(cores),
             "optimizations": [n for n, _p, _g in self.plans],
             "plans": {n: _plan_hash(p) for n, p, _g in self.plans},
             "data": str(Path(self.data).expanduser().resolve()) if self.data else None,
             "input_shapes": {k: list(v) for k, v in sorted((self.project.input_shapes or {}).items())},
             "repeats": self.repeats, "min_block_ms": self.min_block_ms}
        if self.prune_method != "magnitude":  # magnitude searches keep the cache key they always had
            s["prune_method"] = self.prune_method
        if self.has_channel_plans:  # so do searches without a channel plan
            s["channel_method"] = self.channel_method
        return s


def prepare(project: Any, *, engines: list[str] | None = None, precisions: list[str] | None = None,
            optimizations: list[str] | None = None, batch_size: int = 1, cores: int | None = None,
            data: str | os.PathLike | None = None, repeats: int = DEFAULT_REPEATS, min_block_ms: float = 250.0,
            prune_method: str = "magnitude", channel_method: str = DEFAULT_CHANNEL_METHOD) -> Setup:
    """Check the options and read the optimizations' plans: a :class:`Setup` (``cores`` None: each machine's)."""
    from sparsify_tui.optim.calibrated import check_method

    channel_method = parse_channel_method(channel_method)
    plans = load_plans(project, optimizations) if (optimizations is None and project.optimizations) \
        or optimizations else []
    return Setup(project, list(engines or ENGINES), list(precisions or PRECISIONS), plans, int(batch_size),
                 int(cores) if cores else None, data, repeats, min_block_ms, check_method(prune_method),
                 channel_method)


def parse_channel_method(value: Any) -> str:
    """``--channel-method``: how a channel plan is pruned, l2 or reconstruct (the default)."""
    m = str(value or DEFAULT_CHANNEL_METHOD).strip().lower()
    if m not in CHANNEL_METHODS:
        raise UsageError(f"--channel-method must be one of {', '.join(CHANNEL_METHODS)}, got {value!r}")
    return m


def version_text(versions: dict[str, str]) -> str:
    return " ".join(f"{e}={v}" for e, v in versions.items() if v)


def cache_key(project: Any, settings: dict, versions: dict[str, str], machine: dict | None) -> str:
    return project.profile_key(KIND, settings, KIND, version_text(versions), (machine or {}).get("fingerprint", ""))


def cached(project: Any, key: str) -> dict | None:
    """The stored, complete, fresh deploy document with this key (``cached`` true), or None."""
    entry = project.find_profile(key)
    if entry is None or project.is_stale(entry):
        return None
    try:
        doc = project.load_profile(entry)
    except SparsifyError:
        return None
    if not doc or not doc.get("complete"):
        return None
    doc["cached"] = True
    doc["entry_id"] = entry.id
    return doc


class Built:
    """The files of a search, built once (:func:`build`): the job without ``cores``, and what the rows need."""

    def __init__(self, job: dict, files: dict[str, dict], sample_info: dict, quantized_note: str | None) -> None:
        self.job, self.files, self.sample_info, self.quantized_note = job, files, sample_info, quantized_note


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("the deployment search was cancelled")


def _variant(setup: Setup, name: str | None, plan: Any, g: Any, t: Path, tag: str, calib: list[dict],
             quantized_note: str | None, note: Callable, cancel: threading.Event | None) -> tuple[dict, dict]:
    """One sparsity's files (the fp32 file, pruned unless dense, and its INT8 QDQ file, quantized from the pruned
    file) and what the rows say of them (``sparsity``; ``structure``, and a channel plan's ``flops_reduction``)."""
    project = setup.project
    if name is None:
        fp32, what = Path(project.model_path), {"sparsity": 0.0, "structure": None}
    else:
        _check_cancel(cancel)
        channels = is_channel_plan(plan)
        note(f"pruning for optimization {name!r} "
             f"({('channels, ' + setup.channel_method) if channels else setup.prune_method})")
        fp32 = t / f"{tag}.fp32.onnx"
        what = _prune(project, g, plan, fp32, setup.prune_method, calib, setup.channel_method)
        what["sparsity"] = 0.0 if channels else plan.overall_sparsity(g.prunable_layers)
    v: dict[str, Any] = {"optimization": name, "fp32": str(fp32), "int8": None, "int8_error": None}
    if "int8" in setup.precisions:
        _check_cancel(cancel)
        note(f"quantizing {name or 'the dense model'} to INT8 (calibrated on {len(calib)} samples)")
        q = t / f"{tag}.int8.onnx"
        quantized = quantized_note if name is None else already_quantized(fp32)
        if quantized:
            v["int8_error"] = quantized
        else:
            try:
                _quantize(fp32, q, calib, plan.fp32_node_names(g.layers))  # a plan's fp32 layers stay fp32
                v["int8"] = str(q)
            except SparsifyError as exc:
                v["int8_error"] = exc.message
    return v, what


def build(setup: Setup, tmp: Path, on_progress: ProgressFn | None = None,
          cancel: threading.Event | None = None) -> Built:
    """Prune per optimization and quantize to INT8 into ``tmp`` (none of it depends on the machine),
    with the timing inputs and held-out batches: the child job of every machine."""
    from sparsify_tui.engines.inputs import make_inputs

    project = setup.project
    plans = setup.plans
    graph = plans[0][2] if plans else None
    if graph is None:
        from sparsify_tui.analysis import analyze

        graph = analyze(project.model_path, dict(project.input_shapes or {}) or None)
    metric = getattr(setup, "metric", None)  # run_deploy's --metric: held-out labels, outputs kept per row
    calib, held, sample_info, held_labels = split_labelled(project, setup.data, graph, metric is not None)
    quantized_note = already_quantized(project.model_path)
    timing = make_inputs(str(project.model_path), setup.batch, dict(project.input_shapes or {}), data=setup.data)
    steps = 1 + len(plans) * (2 if "int8" in setup.precisions else 1)
    done = [0]

    def note(label: str) -> None:
        if on_progress:
            on_progress({"event": "progress", "done": done[0], "total": steps, "label": label})
        done[0] += 1

    variants: list[dict] = []
    files: dict[str, dict] = {}
    from sparsify_tui.optim.plan import Plan

    for name, plan, g in [(None, Plan(), graph)] + plans:
        tag = "dense" if name is None else f"opt{len(variants)}"
        v, what = _variant(setup, name, plan, g, tmp, tag, calib, quantized_note, note, cancel)
        for e in ENGINES:
            for p in PRECISIONS:
                path = v["int8"] if p == "int8" else v["fp32"]
                if path:
                    files[f"{e}/{p}/{name or 'dense'}"] = {"bytes": Path(path).stat().st_size, **what}
        variants.append(v)
    np.savez(tmp / "timing.npz", **timing)
    held_paths = []
    for i, h in enumerate(_batches(held, setup.batch)):
        np.savez(tmp / f"heldout{i}.npz", **h)
        held_paths.append(str(tmp / f"heldout{i}.npz"))
    job = {"kind": KIND, "variants": variants, "engines": setup.engines, "precisions": setup.precisions,
           "batch_size": setup.batch, "timing_inputs": str(tmp / "timing.npz"), "heldout": held_paths,
           "repeats": setup.repeats, "min_block_ms": setup.min_block_ms, "warmup": 3, "skip": {},
           "scratch": str(tmp)}
    built = Built(job, files, sample_info, quantized_note)
    if metric is not None:
        (tmp / "outputs").mkdir(exist_ok=True)
        job["outputs_dir"] = str(tmp / "outputs")
        built.heldout = _batches(held, setup.batch)  # type: ignore[attr-defined]
        built.heldout_labels = _batched_labels(held_labels, len(held), setup.batch)  # type: ignore[attr-defined]
    return built


def _batched_labels(labels: list | None, n: int, batch: int) -> list | None:
    """The labels grouped as :func:`_batches` groups their samples."""
    if labels is None or batch <= 1:
        return labels
    return [np.concatenate([labels[(b * batch + i) % n] for i in range(batch)], axis=0)
            for b in range(max(1, n // batch) if n >= batch else 1)]


class Measurement:
    """What the child reported so far: rows (compiled and checked), skips and the timed rounds."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.rounds: list[dict[str, float]] = []
        self.skipped: list[dict] = []
        self.config: str | None = None

    def clear(self) -> None:
        self.rows.clear()
        self.rounds.clear()
        self.skipped.clear()
        self.config = None

    def to_dict(self) -> dict:
        return {"rows": self.rows, "rounds": self.rounds, "skipped": self.skipped}


def measure(job: dict, cores: int, m: Measurement | None = None, *, on_progress: ProgressFn | None = None,
            on_update: Callable[[Measurement, dict], Any] | None = None,
            cancel: threading.Event | None = None) -> Measurement:
    """Run the child job ``deploy`` on the given files with ``cores`` cores, filling ``m`` as events arrive
    (so a caller keeps the finished rounds when it raises). A configuration the child crashed on is
    skipped with the reason and the job run again (at most MAX_RETRIES times)."""
    from sparsify_tui.engines.runner import run_job

    m = m if m is not None else Measurement()
    job = dict(job, skip=dict(job.get("skip") or {}))

    def on_event(ev: dict) -> None:
        kind = ev.get("event")
        if kind == "progress":
            m.config = ev.get("config")
            if on_progress:
                on_progress(ev)
        elif kind == "partial":
            d = ev.get("data") or {}
            if "row" in d:
                m.rows.append(d["row"])
            elif "skipped" in d:
                m.skipped.append(d["skipped"])
            elif "iterations" in d:
                for r in m.rows:
                    r["iterations"] = (d["iterations"] or {}).get(r["id"])
            elif "round" in d:
                m.config = None
                m.rounds.append(d.get("block_ms") or {})
            if on_update:
                on_update(m, d)
        elif on_progress and kind in ("heartbeat", "log", "started"):
            on_progress(ev)

    for attempt in range(MAX_RETRIES + 1):
        m.clear()
        try:
            run_job(job, on_progress=on_event, cancel=cancel, timeout_s=900, cores=cores)
            return m
        except EngineError as exc:
            # the child died (a segfault in one engine) while compiling or checking one configuration:
            # run again without it, saying why
            crashed = m.config
            if not crashed or attempt == MAX_RETRIES or crashed.startswith("onnxruntime/fp32/dense") \
                    or "engine process" not in exc.message:
                raise
            job["skip"][crashed] = f"the engine process crashed on it: {exc.message}"
    return m


def make_doc(setup: Setup, built: Built, m: Measurement | dict, *, cores: int, machine: dict | None,
             versions: dict[str, str], started: str, complete: bool, error: str | None = None) -> dict:
    """The deploy document of one machine from its measurement: rows with timings, speedups against this
    machine's own ONNX Runtime fp32 dense reference, and Pareto flags."""
    if isinstance(m, dict):
        rows_seen, rounds, skipped = m.get("rows") or [], m.get("rounds") or [], m.get("skipped") or []
    else:
        rows_seen, rounds, skipped = m.rows, m.rounds, m.skipped
    ref, rows = assemble(rows_seen, rounds, skipped, built.files)
    _items_per_second(rows, setup.batch)
    annotate(rows, bool(built.quantized_note))
    return {
        "kind": KIND, "created": started, "complete": complete, "error": error,
        "model": setup.project.model_path.name, "batch_size": setup.batch, "cores": cores,
        "engines": setup.engines, "precisions": setup.precisions, "optimizations": [n for n, _p, _g in setup.plans],
        "samples": built.sample_info, "rounds": len(rounds), "repeats": setup.repeats,
        "min_block_ms": setup.min_block_ms, "engine_versions": versions, "machine": machine,
        "reference": ref, "rows": rows, "skipped": list(skipped),
        "plans": {n: _plan_hash(p) for n, p, _g in setup.plans}, "prune_method": setup.prune_method,
        "channel_method": setup.channel_method if setup.has_channel_plans else None,
        "already_quantized": built.quantized_note, "definition": DEFINITION,
    }


def store_doc(project: Any, settings: dict, versions: dict[str, str], machine: dict | None, doc: dict,
              label: str | None = None) -> dict:
    """Store ``doc`` (when it has rows) as a profile of kind deploy; sets ``entry_id``."""
    if doc["rows"]:
        name = label or f"deploy b{doc['batch_size']} c{doc['cores']}"
        entry = project.add_profile(KIND, name + ("" if doc["complete"] else " (partial)"), settings, KIND,
                                    version_text(versions), machine, doc)
        doc["entry_id"] = entry.id
    return doc


def run_deploy(project: Any, *, engines: list[str] | None = None, precisions: list[str] | None = None,
               optimizations: list[str] | None = None, batch_size: int = 1, cores: int | None = None,
               data: str | os.PathLike | None = None, max_output_change: float | str | None = None,
               metric: Any = None, max_drop: float | None = None,
               repeats: int = DEFAULT_REPEATS, min_block_ms: float = 250.0, force: bool = False,
               on_progress: ProgressFn | None = None, on_rows: Callable[[list[dict]], Any] | None = None,
               cancel: threading.Event | None = None, store: bool = True, prune_method: str = "magnitude",
               channel_method: str = DEFAULT_CHANNEL_METHOD) -> dict:
    """Measure (or reuse) the deployment search of ``project`` on this machine; return its document with
    ``best`` for the budget.

    ``max_output_change``: None (the default budget: outputs must follow the original), a number, or
    ``"none"`` (the raw fastest); see :func:`budget_info`.

    ``prune_method`` prunes each optimization's plan by ``magnitude`` (the default), or keeps the outputs
    with ``wanda`` / ``sparsegpt`` calibrated on the same samples as INT8 (never the held-out ones);
    ``channel_method`` prunes each channel plan (an optimization of ``structure = channels`` entries) by ``l2``
    or ``reconstruct`` (the default, refit on those same calibration samples). Each channel plan gets rows for
    every engine x precision like any optimization: its INT8 file is quantized from the channel-pruned one.

    ``on_progress`` gets the runner's progress events; ``on_rows(rows)`` gets the
    rows known so far (each with ``median_ms`` once a round finished) as they arrive.

    ``metric`` (``--metric module:function``, :mod:`sparsify_tui.user_metric`) scores every row's held-out
    outputs against the reference row's (``user_metric`` per row; the held-out samples carry their labels);
    ``max_drop`` (``--max-drop``) leaves out the rows whose metric drops by more (:func:`apply_budget`).
    A metric that fails stores nothing (it is first tried on the reference row, before the timed rounds).
    """
    from sparsify_tui.engines.machine import machine_summary
    from sparsify_tui.jobs.deploy import engine_unavailable, engine_version
    from sparsify_tui.optim.optimization import now_iso
    from sparsify_tui.settings import usable_cores as default_cores

    max_output_change = parse_budget(max_output_change)
    metric, max_drop = _check_metric(metric, max_drop)
    setup = prepare(project, engines=engines, precisions=precisions, optimizations=optimizations,
                    batch_size=batch_size, cores=cores, data=data, repeats=repeats, min_block_ms=min_block_ms,
                    prune_method=prune_method, channel_method=channel_method)
    cores = setup.cores or default_cores()
    machine = machine_summary()
    versions = {e: engine_version(e) for e in setup.engines}
    settings = setup.settings_for(cores)
    setup.metric = metric  # type: ignore[attr-defined]  # build() holds the labels out, the job keeps outputs
    if metric is not None:
        settings["metric"] = {"spec": metric.spec, "digest": metric.digest()}
    if not force:
        doc = cached(project, cache_key(project, settings, versions, machine))
        if doc is not None:
            return apply_budget(doc, max_output_change, max_drop=max_drop)
    if store:
        project.require_writable()
    started = now_iso()
    m = Measurement()
    with tempfile.TemporaryDirectory(prefix="sparsify-deploy-") as tmp:
        built = build(setup, Path(tmp), on_progress, cancel)

        def doc_of(complete: bool, error: str | None = None) -> dict:
            return make_doc(setup, built, m, cores=cores, machine=machine, versions=versions, started=started,
                            complete=complete, error=error)

        def save(doc: dict) -> dict:
            return store_doc(project, settings, versions, machine, doc) if store else doc

        def on_update(_m: Measurement, d: dict) -> None:
            if on_rows and ("row" in d or "round" in d):
                on_rows(doc_of(False)["rows"] + [dict(r, median_ms=None) for r in m.rows
                                                 if not any(r["id"] in b for b in m.rounds)])

        try:
            measure(built.job, cores, m, on_progress=on_progress, on_update=_metric_first(on_update, built, metric),
                    cancel=cancel)
        except (CancelledError, KeyboardInterrupt) as exc:
            try:
                save(doc_of(False, "cancelled" if isinstance(exc, CancelledError) else "interrupted"))
            except SparsifyError:
                pass
            raise
        except SparsifyError as exc:
            if m.rounds:
                try:
                    exc.partial_doc = save(doc_of(False, exc.message))  # type: ignore[attr-defined]
                except SparsifyError:
                    pass
            raise
        score_rows(m.rows, built, metric)  # a metric that fails here raises before anything is stored
        doc = doc_of(True)
    doc["engines_missing"] = [e for e in setup.engines if engine_unavailable(e)]
    if not store:
        doc["entry_id"] = None
    save(doc)
    doc["cached"] = False
    return apply_budget(doc, max_output_change, max_drop=max_drop)


def latest(project: Any, server: str | None = None) -> tuple[Any, dict] | None:
    """(entry, doc) of the project's newest readable deploy result of this machine (``server`` None) or of the
    cluster server ``server`` (``deploy --servers``), or None."""
    for e in reversed(project.profiles_of(KIND)):
        if (e.settings or {}).get("server") != server or project.is_stale(e):
            continue
        try:
            doc = project.load_profile(e)
        except SparsifyError:
            continue
        doc["entry_id"] = e.id
        return e, doc
    return None


def result_servers(project: Any) -> list[str]:
    """The cluster servers with a stored deploy result (``deploy --servers``), sorted."""
    return sorted({str(e.settings["server"]) for e in project.profiles_of(KIND)
                   if (e.settings or {}).get("server") and not project.is_stale(e)})


def ship_row(server: str, doc: dict | None, failed: str | None = None) -> dict:
    """One line of the "ship this" table: what to run on ``server`` (its best row within the budget of ``doc``,
    see :func:`apply_budget`), or why there is nothing."""
    best = (doc or {}).get("best")
    why = failed or (None if best else ("not measured" if doc is None else "no row within the budget"))
    return {"server": server, "engine": best["engine"] if best else None,
            "precision": best["precision"] if best else None,
            "plan": (best.get("optimization") or "dense") if best else None,
            "speedup": best.get("speedup") if best else None, "change": best.get("output_change") if best else None,
            "change_metric": best.get("output_change_metric") if best else None, "row": best["id"] if best else None, "why_none": why}


# ---------------------------------------------------------------- export
def find_row(doc: dict, which: str | None) -> dict:
    """The row named ``which`` (its id ``engine/precision/optimization-or-dense``), or ``best``."""
    if which:
        for r in doc.get("rows") or []:
            if r["id"] == which:
                return r
        raise UsageError(f"the deploy result has no row {which!r} (rows: "
                         f"{', '.join(r['id'] for r in doc.get('rows') or [])})")
    if not doc.get("best"):
        name = budget_info(doc.get("budget"))["name"]
        raise UsageError(f"no configuration is within the budget ({name}): nothing to export "
                         "(raise --max-output-change, give 'none', or name a row with --row)")
    return doc["best"]


def export_row(project: Any, doc: dict, row: dict, out: str | os.PathLike) -> dict:
    """Write the row's model to ``out`` (atomically) and ``out`` with ``.py``: a snippet that runs it."""
    out = Path(out).expanduser()
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--export {out}: give an .onnx file name")
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: the directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"cannot write {out}: the directory {out.parent} is not writable")
    from sparsify_tui.fsutil import atomic_write_text

    opt = row.get("optimization")
    with tempfile.TemporaryDirectory(prefix=".sparsify-export-", dir=str(out.parent)) as tmp:
        t = Path(tmp)
        if opt:
            _name, plan, graph = load_plans(project, [opt])[0]
            want = (doc.get("plans") or {}).get(opt)
            if want and want != _plan_hash(plan):
                raise UsageError(f"optimization {opt!r} changed since this deploy search: run deploy again")
            src = t / "pruned.onnx"
            method = doc.get("prune_method") or "magnitude"
            cmethod = doc.get("channel_method") or DEFAULT_CHANNEL_METHOD
            calibrated = cmethod == "reconstruct" if is_channel_plan(plan) else method != "magnitude"
            calib_for_prune = split_samples(project, (doc.get("samples") or {}).get("data"), graph)[0] \
                if calibrated else None
            _prune(project, graph, plan, src, method, calib_for_prune, cmethod)
        else:
            src = Path(project.model_path)
            graph = None
        if row["precision"] == "int8":
            calib, _held, _info = split_samples(project, (doc.get("samples") or {}).get("data"), graph)
            q = t / "int8.onnx"
            _quantize(src, q, calib)
            src = q
        staged = t / "model.onnx"
        if src.parent == t:
            os.replace(src, staged)
        else:
            shutil.copyfile(src, staged)
        shapes = {k: [int(doc.get("batch_size") or 1)] + list(v)[1:]
                  for k, v in _input_shapes(project).items()}
        snippet = get_engine(row["engine"]).deploy_snippet().format(
            model=out.name, precision=row["precision"], cores=int(doc.get("cores") or 1),
            batch=int(doc.get("batch_size") or 1), shapes=repr(shapes),
            sparse=f", optimization {opt!r} one-shot pruned" if opt else ", dense",
            hint="bf16" if row["precision"] == "bf16" else "f32",
            int8_note=" (INT8 comes from the QDQ nodes in the file)" if row["precision"] == "int8" else "")
        os.replace(staged, out)
    snippet_path = out.with_suffix(".py")
    atomic_write_text(snippet_path, snippet)
    return {"model": str(out), "snippet": str(snippet_path), "row": row["id"]}


def _input_shapes(project: Any) -> dict[str, list[int]]:
    from sparsify_tui.engines.inputs import concrete_shape, input_specs

    out = {}
    for s in input_specs(str(project.model_path), project.input_shapes or None):
        try:
            out[s.name] = concrete_shape(s, 1)
        except SparsifyError:
            out[s.name] = [1]
    return out
