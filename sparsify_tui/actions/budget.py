"""Budgeted optimization (``optimize PROJECT --max-output-change X``): the fastest measured plan within X.

The question is "what is the fastest model I can run on this engine whose outputs move by at most X?".

**Levers** (:func:`levers`), one per layer and kind, each with its *predicted* output change (from the
measured profiles) and the milliseconds it saves on the engine:

* ``int8`` (with ``--precision int8``): the layer quantized. Change: the INT8 profile's per-layer
  sensitivity; ms saved: the layer's time in the engine's perf profile x (1 - int8/fp32), the whole-model
  ratio measured on the engine in the first closed-loop step (so every layer's INT8 saving is its share
  of a measured saving);
* ``sparsity`` (``--structure unstructured``, on an engine that runs sparse weights faster): the layer
  pruned one-shot by magnitude at the level of its loss-profile curve that saves the most ms per unit of
  change (at most ``MAX_SPARSITY``). Change: the one-shot loss profile's sensitivity at that level; ms
  saved: the perf profile's ``ms_by_level``. On an engine whose sparse levels are approximated from FLOPs
  (it runs sparse weights at dense speed) no sparsity lever is offered: it would save nothing.

A channel-group entry would be one more kind here (its group id as ``layer``): the search only reads
``change`` and ``ms``, and :func:`plan_of` turns the applied levers into the :class:`Plan`.

**Ranking**: by predicted change per millisecond saved, cheapest first. The plan "the first k levers"
is then a one-dimensional family: k = all is the most aggressive, smaller k restores the levers that cost
the most change per ms.

**Closed loop** (:func:`search`): each step builds the plan's model (pruned one-shot, then INT8 QDQ with
ONNX Runtime's ``quantize_static``, the fp32 layers given as ``nodes_to_exclude``, calibrated on the
calibration samples), and measures it in the child process (job kind ``deploy``, against ONNX Runtime
fp32 dense, in interleaved blocks): its output change on the HELD-OUT samples (:func:`measured_change`,
the one function a user metric would replace) and its speedup. The first step also measures the engine's
dense fp32 and whole-model INT8 files. Then k is moved: from the predicted changes scaled to what was
measured, then by interpolating between the nearest measured k within and over the budget (bisecting
where the profiles predict no difference between them), until the two are neighbours, ``--max-minutes`` runs out or ``MAX_STEPS`` steps were measured. Every step is recorded
(``iterations``: k, measured change and ms, speedup, the levers restored or re-applied).

**Result**: the fastest measured step within the budget (whole-model INT8 counts as a step) is stored as
an optimization whose Plan holds each layer's precision and sparsity; nothing is stored when no step is
within the budget (``UsageError`` naming the smallest change measured) or when the run is cancelled.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sparsify_tui.errors import CancelledError, UsageError

ProgressFn = Callable[[dict], Any]

MAX_SPARSITY = 0.9
MAX_STEPS = 8
AIM = 0.85  # the scaled prediction aims at this share of the budget (the sum of per-layer changes is rough)
DEFAULT_MAX_MINUTES = 10.0
BUDGET_OPT_NAME = "budget"
REPEATS = 3
MIN_BLOCK_MS = 150.0


@dataclass
class Lever:
    """One per-layer change the search may apply: ``kind`` int8 or sparsity (``level``), its predicted
    output change and ms saved on the engine."""

    kind: str
    layer: str
    change: float
    ms: float
    level: float = 0.0

    @property
    def ratio(self) -> float:
        return max(self.change, 0.0) / self.ms if self.ms > 0 else math.inf

    def label(self) -> str:
        return f"{self.layer} INT8" if self.kind == "int8" else f"{self.layer} at {self.level:g} sparsity"

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "layer": self.layer, "predicted_change": self.change, "ms_saved": self.ms}
        if self.kind == "sparsity":
            d["sparsity"] = self.level
        return d


def parse_budget(value: Any) -> float:
    """``--max-output-change X``: a positive number (the output change's unit, as the deployment search)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"--max-output-change must be a number (the largest output change allowed), "
                         f"got {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise UsageError(f"--max-output-change must be above 0, got {value!r}")
    return x


def measured_change(row: dict) -> float | None:
    """The number the budget bounds, from one measured row of the child job (the built model's outputs
    against ONNX Runtime fp32 dense's on the held-out samples): its output change. A user metric
    (reference outputs, changed outputs, samples -> number) plugs in here."""
    v = row.get("output_change")
    return float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None


# ---------------------------------------------------------------- profiles and levers
def _newest(project: Any, kind: str, want: Callable[[Any], bool] = lambda e: True) -> tuple[Any, dict] | None:
    for e in sorted(project.profiles_of(kind), key=lambda e: str(e.created or ""), reverse=True):
        if project.is_stale(e) or not want(e):
            continue
        try:
            doc = project.load_profile(e)
        except Exception:  # noqa: BLE001 - an unreadable profile is skipped
            continue
        if doc:
            return e, doc
    return None


def find_profiles(project: Any, engine: str, precision: str | None, sparse: bool) -> dict:
    """{kind: (entry, doc)} of the profiles the levers need; UsageError naming the command to run for a
    missing one."""
    d = str(project.dir)
    out: dict[str, Any] = {}
    perf = _newest(project, "perf", lambda e: e.engine == engine
                   and int((e.settings or {}).get("batch_size", 1) or 1) == 1
                   and (e.settings or {}).get("precision") in (None, "fp32"))
    if perf is None:
        raise UsageError(f"no {engine} perf profile in the project (the per-layer times the plan is ranked by): "
                         f"run 'sparsify-tui profile perf {d} --engine {engine}' first")
    out["perf"] = perf
    if precision == "int8":
        q = _newest(project, "quant")
        if q is None:
            raise UsageError(f"no INT8 profile in the project (each layer's change under INT8): run "
                             f"'sparsify-tui profile quant {d}' first")
        out["quant"] = q
    if sparse:
        loss = _newest(project, "loss", lambda e: not str((e.settings or {}).get("method", "")).startswith("approx"))
        if loss is None:
            raise UsageError(f"no one-shot loss profile in the project (each layer's change when pruned): run "
                             f"'sparsify-tui profile loss {d} --method one-shot' first")
        out["loss"] = loss
    return out


def _by_id(doc: dict | None) -> dict[str, dict]:
    return {str(r.get("id")): r for r in (doc or {}).get("layers") or [] if isinstance(r, dict)}


def _sparsity_lever(lid: str, perf_row: dict, loss_row: dict) -> Lever | None:
    ms = {float(k): float(v) for k, v in (perf_row.get("ms_by_level") or {}).items() if v is not None}
    sens = {float(k): float(v) for k, v in (loss_row.get("sensitivity_by_level") or {}).items() if v is not None}
    t0 = ms.get(0.0, float(perf_row.get("baseline_ms") or 0.0))
    best = None
    for lv in sorted(set(ms) & set(sens)):
        if lv <= 0 or lv > MAX_SPARSITY + 1e-9:
            continue
        saved = t0 - ms[lv]
        if saved <= 0:
            continue
        lev = Lever("sparsity", lid, sens[lv], saved, lv)
        if best is None or lev.ratio < best.ratio or (lev.ratio == best.ratio and lev.ms > best.ms):
            best = lev
    return best


def _rank(lv: Lever) -> tuple[float, float, float]:
    """Cheapest change per ms saved first; among levers saving nothing measured, the smallest change first."""
    return (lv.ratio, max(lv.change, 0.0), -lv.ms)


def levers(graph: Any, profiles: dict, precision: str | None, sparse: bool) -> tuple[list[Lever], list[str]]:
    """Every lever of the model, cheapest change per ms first, and notes on the layers left out."""
    perf = _by_id(profiles["perf"][1])
    quant = _by_id(profiles.get("quant", (None, None))[1])
    loss = _by_id(profiles.get("loss", (None, None))[1])
    out: list[Lever] = []
    notes: list[str] = []
    no_time = []
    for lay in graph.prunable_layers:
        p = perf.get(lay.id)
        t = float((p or {}).get("baseline_ms") or 0.0)
        if precision == "int8":
            q = quant.get(lay.id)
            if q is not None and isinstance(q.get("sensitivity"), (int, float)) and t > 0:
                out.append(Lever("int8", lay.id, float(q["sensitivity"]), t))
            elif t <= 0:
                no_time.append(lay.id)
        if sparse and p is not None and lay.id in loss:
            lev = _sparsity_lever(lay.id, p, loss[lay.id])
            if lev is not None:
                out.append(lev)
    if precision == "int8" and quant and not any(q.get("sensitivity") for q in quant.values()):
        notes.append("the INT8 profile measured no change for any layer (its metric does not move on these "
                     "outputs): INT8 layers are ranked by the ms they save alone, and the loop bisects")
    if no_time:
        notes.append(f"{len(no_time)} layers have no time of their own in the perf profile (fused into "
                     "others): they follow the whole model's INT8")
    out.sort(key=_rank)
    return out, notes


def plan_of(graph: Any, applied: list[Lever], precision: str | None, profile_ids: dict) -> Any:
    """The Plan of the applied levers: each prunable layer's sparsity and (with INT8) its precision."""
    from sparsify_tui.optim.plan import LayerPlan, Plan, Precision

    plan = Plan(perf_profile_id=profile_ids.get("perf", ""), loss_profile_id=profile_ids.get("loss", ""),
                quant_profile_id=profile_ids.get("quant", ""))
    int8 = {lv.layer for lv in applied if lv.kind == "int8"}
    sparse = {lv.layer: lv.level for lv in applied if lv.kind == "sparsity"}
    for lay in graph.prunable_layers:
        e = LayerPlan(sparse.get(lay.id, 0.0))
        if precision == "int8":
            e.precision = Precision.INT8 if lay.id in int8 else Precision.FP32
        plan.entries[lay.id] = e
    if precision == "int8":
        plan.default_precision = Precision.INT8
    return plan


# ---------------------------------------------------------------- building and measuring one step
def _named_copy(src: Path, dst: Path, graph: Any) -> dict[str, str]:
    """Copy ``src`` to ``dst`` giving every unnamed main-graph node a name; {layer id: node name} of the
    prunable layers (what ``nodes_to_exclude`` needs)."""
    import onnx

    from sparsify_tui.onnxkit.modelio import save_model_atomic

    m = onnx.load(str(src))
    by_output = {}
    for i, n in enumerate(m.graph.node):
        if not n.name:
            n.name = f"_sparsify_node_{i}"
        for o in n.output:
            by_output[o] = n.name
    save_model_atomic(m, dst)
    return {lay.id: by_output[lay.outputs[0]] for lay in graph.prunable_layers
            if lay.outputs and lay.outputs[0] in by_output and not lay.graph_path}


class Builder:
    """Builds each step's files in a scratch directory: the plan pruned one-shot (fp32) and, with INT8,
    quantized except its fp32 layers."""

    def __init__(self, project: Any, graph: Any, precision: str | None, tmp: Path, calib: list[dict]) -> None:
        self.project, self.graph, self.precision, self.tmp, self.calib = project, graph, precision, tmp, calib
        self.n = 0
        self.whole: str | None = None  # the whole-model INT8 file, once built

    def build(self, plan: Any) -> dict:
        from sparsify_tui.actions.deploy import _quantize
        from sparsify_tui.optim.plan import Precision
        from sparsify_tui.optim.prune import prune_model

        self.n += 1
        fp32 = self.tmp / f"step{self.n}.fp32.onnx"
        if plan.sparsities():
            prune_model(str(self.project.model_path), plan, fp32, graph=self.graph)
            names = _named_copy(fp32, fp32, self.graph)
        else:
            names = _named_copy(Path(self.project.model_path), fp32, self.graph)
        v = {"optimization": BUDGET_OPT_NAME, "fp32": str(fp32), "int8": None, "int8_error": None}
        if self.precision == "int8":
            keep = [names[lid] for lid, p in plan.precision_by_layer().items() if p is Precision.FP32 and lid in names]
            if not keep and not plan.sparsities() and self.whole:  # every layer INT8, dense: the whole-model file
                v["int8"] = self.whole
                return v
            q = self.tmp / f"step{self.n}.int8.onnx"
            _quantize(fp32, q, self.calib, keep)
            v["int8"] = str(q)
        return v


def _speedup(rounds: list[dict], ref: str, rid: str) -> tuple[float | None, float | None]:
    """(median ms of ``rid``'s blocks, median over rounds of reference block / its block)."""
    import statistics

    ms = [r[rid] for r in rounds if r.get(rid)]
    ratios = [r[ref] / r[rid] for r in rounds if r.get(rid) and r.get(ref)]
    return (statistics.median(ms) if ms else None), (statistics.median(ratios) if ratios else None)


class Meter:
    """Runs the child job ``deploy`` on a step's files: its measured change and speedup on the engine."""

    def __init__(self, project: Any, engine: str, precision: str, tmp: Path, held: list[dict], cores: int,
                 repeats: int, on_progress: ProgressFn | None, cancel: threading.Event | None) -> None:
        import numpy as np

        from sparsify_tui.engines.inputs import make_inputs

        self.engine, self.precision, self.cores, self.cancel = engine, precision, cores, cancel
        self.on_progress = on_progress
        self.dense = {"optimization": None, "fp32": str(project.model_path), "int8": None, "int8_error": None}
        np.savez(tmp / "timing.npz", **make_inputs(str(project.model_path), 1, dict(project.input_shapes or {})))
        held_paths = []
        for i, h in enumerate(held):
            np.savez(tmp / f"heldout{i}.npz", **h)
            held_paths.append(str(tmp / f"heldout{i}.npz"))
        self.base_job = {"kind": "deploy", "batch_size": 1, "timing_inputs": str(tmp / "timing.npz"),
                         "heldout": held_paths, "repeats": repeats, "min_block_ms": MIN_BLOCK_MS, "warmup": 2,
                         "skip": {}, "scratch": str(tmp)}

    step, steps = 0, MAX_STEPS

    def _relay(self, ev: dict) -> None:
        """The child's progress as the loop's: this step of the steps, the child's label."""
        if self.on_progress and ev.get("event") == "progress":
            self.on_progress({"event": "progress", "done": self.step, "total": self.steps,
                              "label": f"step {self.step + 1}: {ev.get('label', '')}"})

    def run(self, variant: dict, dense_int8: str | None = None) -> dict:
        """{row id: row with ``ms`` and ``speedup``} of the reference, the step (and, with ``dense_int8``,
        the engine's dense fp32 and whole-model INT8 rows)."""
        from sparsify_tui.engines.registry import REFERENCE
        from sparsify_tui.engines.runner import run_job
        from sparsify_tui.jobs.deploy import row_id

        ref = row_id(REFERENCE, "fp32", None)
        step = row_id(self.engine, self.precision, BUDGET_OPT_NAME)
        only = [step]
        dense = dict(self.dense)
        if dense_int8 is not None:
            dense["int8"] = dense_int8
            only += [row_id(self.engine, "fp32", None), row_id(self.engine, self.precision, None)]
        job = dict(self.base_job, variants=[dense, variant], engines=sorted({REFERENCE, self.engine}),
                   precisions=sorted({"fp32", self.precision}), only=only)
        res = run_job(job, on_progress=self._relay, cancel=self.cancel, timeout_s=900, cores=self.cores)
        rows = {r["id"]: dict(r) for r in res.get("rows") or []}
        for rid, r in rows.items():
            r["ms"], r["speedup"] = _speedup(res.get("rounds") or [], ref, rid)
        if step not in rows:
            why = next((s.get("reason") for s in res.get("skipped") or [] if s.get("id") == step), "no row")
            from sparsify_tui.errors import EngineError

            raise EngineError(f"{self.engine} could not run the budgeted model: {why}")
        return rows


# ---------------------------------------------------------------- the closed loop
def _step_record(i: int, k: int, lv: list[Lever], prev_k: int | None, row: dict, budget: float,
                 seconds: float) -> dict:
    change = measured_change(row)
    rec = {"iteration": i, "levers_applied": k, "measured_output_change": change,
           "ms": row.get("ms"), "measured_speedup": row.get("speedup"),
           "within_budget": change is not None and change <= budget, "seconds": round(seconds, 2),
           "restored": [], "reapplied": []}
    if prev_k is not None and k < prev_k:
        rec["restored"] = [x.label() for x in lv[k:prev_k]]
    elif prev_k is not None and k > prev_k:
        rec["reapplied"] = [x.label() for x in lv[prev_k:k]]
    return rec


def _next_k(lv: list[Lever], budget: float, within: dict[int, float], over: dict[int, float]) -> int | None:
    """The next prefix length to measure: between the largest k within and the smallest k over the budget,
    placed by the predicted changes scaled to the measured ones (None when they are neighbours)."""
    cum = [0.0]
    for x in lv:
        cum.append(cum[-1] + max(x.change, 0.0))
    lo = max(within) if within else 0
    hi = min(over)
    if hi - lo <= 1:
        return None
    m_lo = within.get(lo, 0.0)
    m_hi = over[hi]
    p_lo, p_hi = cum[lo], cum[hi]
    if not (m_hi > m_lo and p_hi > p_lo):  # the profiles predict no difference in between: bisect k
        return (lo + hi) // 2
    # interpolate the measured change along the predicted one
    target = p_lo + (AIM * budget - m_lo) * (p_hi - p_lo) / (m_hi - m_lo)
    k = max((j for j in range(lo + 1, hi) if cum[j] <= target), default=lo + 1)
    return min(max(k, lo + 1), hi - 1)


def search(lv: list[Lever], budget: float, measure_k: Callable[[int], dict], *, deadline: float,
           max_steps: int = MAX_STEPS, on_step: Callable[[dict], Any] | None = None) -> tuple[list[dict], str]:
    """The closed loop over k (the first k levers applied): (iterations, why it stopped). ``measure_k(k)``
    builds and measures the plan, returning its row; the first call is k = all."""
    iterations: list[dict] = []
    within: dict[int, float] = {}
    over: dict[int, float] = {}
    k: int | None = len(lv)
    prev = None
    stop = ""
    while k is not None:
        t0 = time.monotonic()
        row = measure_k(k)
        rec = _step_record(len(iterations) + 1, k, lv, prev, row, budget, time.monotonic() - t0)
        iterations.append(rec)
        if on_step:
            on_step(rec)
        change = rec["measured_output_change"]
        (within if rec["within_budget"] else over)[k] = change if change is not None else math.inf
        prev = k
        if k == len(lv) and rec["within_budget"]:
            stop = "every lever applied is within the budget"
            break
        if over and min(over) == 1 and not within:
            stop = "the cheapest lever alone is over the budget"
            break
        if len(iterations) >= max_steps:
            stop = f"{max_steps} steps measured (the most the loop takes)"
            break
        if time.monotonic() >= deadline:
            stop = "--max-minutes reached"
            break
        k = _next_k(lv, budget, within, over) if over else None
        if k is None and over and not within:
            k = 1 if 1 not in over else None
        if k is None:
            stop = (f"{max(within)} levers are within the budget and {min(over)} are over it" if within and over
                    else "no step left to try")
    return iterations, stop


# ---------------------------------------------------------------- the user action
@dataclass
class Setup:
    """What one budgeted run is about: the engine and precision, its levers and the profiles they rest on."""

    engine: str
    precision: str
    budget: float
    graph: Any
    levers: list[Lever]
    profile_ids: dict[str, str]
    notes: list[str]


def prepare(project: Any, budget: Any, *, engine: str = "auto", precision: str | None = None,
            structure: str = "unstructured") -> Setup:
    """Check the options and read the profiles; UsageError for what the user can fix."""
    from sparsify_tui.actions.deploy import already_quantized
    from sparsify_tui.analysis import analyze
    from sparsify_tui.engines.registry import get_engine, resolve_auto
    from sparsify_tui.profiles.perf import validate_engine, validate_precision

    x = parse_budget(budget)
    if str(structure or "unstructured").lower() != "unstructured":
        raise UsageError(f"--max-output-change plans --structure unstructured (single weights) and per-layer "
                         f"precision; --structure {structure} is not budgeted yet")
    chosen, _why = resolve_auto(validate_engine(engine))
    prec = validate_precision(chosen, precision) or "fp32"
    sparse = bool(get_engine(chosen).sparse_speedup)
    if prec != "int8" and not sparse:
        raise UsageError(f"{chosen} runs sparse weights at dense speed, so at {prec} nothing can be traded for "
                         "output change: give --precision int8 (mixed precision per layer) or an engine that "
                         "runs sparse weights faster")
    if prec == "int8" and already_quantized(project.model_path):
        raise UsageError(f"{already_quantized(project.model_path)}: --precision int8 has nothing to choose")
    found = find_profiles(project, chosen, prec, sparse)
    graph = analyze(project.model_path, dict(project.input_shapes or {}) or None)
    lv, notes = levers(graph, found, prec, sparse)
    if not lv:
        raise UsageError("no layer has both a measured time and a measured change in the profiles: "
                         "nothing to plan (measure the profiles again on this model)")
    ids = {k: e.id for k, (e, _d) in found.items()}
    return Setup(chosen, prec, x, graph, lv, ids, notes)


def _held_back(lv: list[Lever], k: int) -> list[dict]:
    """The levers left out of the result that would save the most ms: what holds it back."""
    rest = sorted(lv[k:], key=lambda x: -x.ms)[:5]
    return [dict(x.to_dict(), label=x.label()) for x in rest]


def _apply_int8_ratio(s: Setup, rows: dict, notes: list[str]) -> None:
    """Scale each INT8 lever's ms saved by the engine's measured whole-model INT8 saving; re-rank."""
    from sparsify_tui.jobs.deploy import row_id

    f32 = (rows.get(row_id(s.engine, "fp32", None)) or {}).get("ms")
    i8 = (rows.get(row_id(s.engine, "int8", None)) or {}).get("ms")
    if not f32 or not i8:
        return
    share = max(0.0, 1.0 - float(i8) / float(f32))
    if share == 0.0:
        notes.append(f"whole-model INT8 ran no faster than fp32 on {s.engine} here ({i8:.2f} ms against "
                     f"{f32:.2f} ms): INT8 layers save nothing measured")
    for x in s.levers:
        if x.kind == "int8":
            x.ms *= share
    s.levers.sort(key=_rank)


def _note(on_progress: ProgressFn | None, done: int, total: int, label: str) -> None:
    if on_progress:
        on_progress({"event": "progress", "done": done, "total": total, "label": label})


def run_budget(project: Any, max_output_change: Any, *, engine: str = "auto", precision: str | None = None,
               structure: str = "unstructured", max_minutes: float | None = None, name: str | None = None,
               data: str | None = None, cores: int | None = None, repeats: int = REPEATS,
               max_steps: int = MAX_STEPS, on_progress: ProgressFn | None = None,
               cancel: threading.Event | None = None) -> dict:
    """The fastest measured plan within the budget, stored as an optimization (see the module doc)."""
    from sparsify_tui.actions.deploy import _quantize, split_samples
    from sparsify_tui.jobs.deploy import row_id
    from sparsify_tui.settings import usable_cores

    started = time.monotonic()
    s = prepare(project, max_output_change, engine=engine, precision=precision, structure=structure)
    project.require_writable()
    deadline = started + 60.0 * float(max_minutes if max_minutes is not None else DEFAULT_MAX_MINUTES)
    cores = int(cores) if cores else usable_cores()
    calib, held, sample_info = split_samples(project, data, s.graph)
    notes = list(s.notes)
    first: dict[str, Any] = {}
    plans: dict[int, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sparsify-budget-") as tmp_s:
        tmp = Path(tmp_s)
        builder = Builder(project, s.graph, s.precision, tmp, calib)
        meter = Meter(project, s.engine, s.precision, tmp, held, cores, repeats, on_progress, cancel)
        whole = None
        if s.precision == "int8":
            _note(on_progress, 0, 1, f"quantizing the whole model to INT8 (calibrated on {len(calib)} samples)")
            whole = str(tmp / "whole.int8.onnx")
            _quantize(Path(project.model_path), Path(whole), calib)
            builder.whole = whole

        def measure_k(k: int) -> dict:
            if cancel is not None and cancel.is_set():
                raise CancelledError("the budgeted optimization was cancelled")
            _note(on_progress, len(plans), max_steps, f"step {len(plans) + 1}: building the plan of {k} levers")
            plans[k] = plan_of(s.graph, s.levers[:k], s.precision, s.profile_ids)
            meter.step, meter.steps = len(plans) - 1, max_steps
            rows = meter.run(builder.build(plans[k]), whole if not first else None)
            if not first:
                first.update(rows)
                _apply_int8_ratio(s, rows, notes)
            return rows[row_id(s.engine, s.precision, BUDGET_OPT_NAME)]

        def on_step(rec: dict) -> None:
            ch = rec["measured_output_change"]
            _note(on_progress, rec["iteration"], max_steps,
                  f"step {rec['iteration']}: {rec['levers_applied']} levers, change "
                  f"{'n/a' if ch is None else f'{ch:.4g}'}, {rec['measured_speedup'] or 0:.2f}x")

        iterations, stopped = search(s.levers, s.budget, measure_k, deadline=deadline, max_steps=max_steps,
                                     on_step=on_step)
    return _finish(project, s, iterations, stopped, plans, first, name=name, notes=notes,
                   sample_info=sample_info, cores=cores, seconds=time.monotonic() - started)


def _whole_model(s: Setup, first: dict) -> dict | None:
    """The engine's dense fp32 and whole-model INT8 rows of the first step: {output_change, speedup, ms}."""
    from sparsify_tui.jobs.deploy import row_id

    out = {}
    for key, prec in (("dense_fp32", "fp32"), ("whole_model_int8", "int8")):
        r = first.get(row_id(s.engine, prec, None))
        if r is not None and (prec == "fp32" or s.precision == "int8"):
            out[key] = {"output_change": measured_change(r), "measured_speedup": r.get("speedup"), "ms": r.get("ms")}
    return out or None


def _choose(s: Setup, iterations: list[dict], plans: dict, whole: dict | None) -> tuple[dict, Any, int]:
    """(the chosen record, its plan, its lever count): the fastest measured step within the budget, or
    whole-model INT8 when it is within and faster. UsageError when nothing is within."""
    ok = [r for r in iterations if r["within_budget"]]
    w = (whole or {}).get("whole_model_int8")
    w_ok = w is not None and w["output_change"] is not None and w["output_change"] <= s.budget
    if not ok and not w_ok:
        seen = [r["measured_output_change"] for r in iterations if r["measured_output_change"] is not None]
        low = f"{min(seen):.4g}" if seen else "not measurable"
        first = s.levers[0].label() if s.levers else "none"
        raise UsageError(f"no plan meets --max-output-change {s.budget:g}: the smallest change measured in "
                         f"{len(iterations)} step{'s' if len(iterations) != 1 else ''} was {low} (the cheapest lever, {first}, included); nothing "
                         "stored. Raise the budget")
    best = max(ok, key=lambda r: (r["measured_speedup"] or 0.0, r["levers_applied"])) if ok else None
    if w_ok and (best is None or (w["measured_speedup"] or 0.0) > (best["measured_speedup"] or 0.0)):
        whole_levers = [x for x in s.levers if x.kind == "int8"]
        plan = plan_of(s.graph, whole_levers, s.precision, s.profile_ids)
        for e in plan.entries.values():  # every layer INT8, as the whole-model file
            e.precision = plan.default_precision
        rec = {"iteration": 0, "levers_applied": len(whole_levers), "measured_output_change": w["output_change"],
               "measured_speedup": w["measured_speedup"], "ms": w["ms"], "whole_model": True}
        return rec, plan, len(s.levers)
    return best, plans[best["levers_applied"]], best["levers_applied"]


def _finish(project: Any, s: Setup, iterations: list[dict], stopped: str, plans: dict, first: dict, *,
            name: str | None, notes: list[str], sample_info: dict, cores: int, seconds: float) -> dict:
    from sparsify_tui.actions.optimizer import save_optimization
    from sparsify_tui.optim.optimization import Optimization, now_iso
    from sparsify_tui.optim.plan import Precision

    whole = _whole_model(s, first)
    rec, plan, k = _choose(s, iterations, plans, whole)
    change = float(rec["measured_output_change"])
    prec = {lid: p.value for lid, p in plan.precision_by_layer().items()}
    fp32 = sorted(lid for lid, p in prec.items() if p == Precision.FP32.value)
    held = [] if rec.get("whole_model") else _held_back(s.levers, k)
    under = s.budget - change
    result = {
        "budget": s.budget, "engine": s.engine, "precision": s.precision, "cores": cores,
        "measured_output_change": change, "measured_speedup": rec["measured_speedup"], "ms": rec["ms"],
        "under_budget": under, "under_budget_share": under / s.budget,
        "chosen_iteration": rec["iteration"], "chosen": "whole-model INT8" if rec.get("whole_model")
        else f"{k} of {len(s.levers)} levers",
        "iterations": iterations, "stopped": stopped, "levers": len(s.levers),
        "precision_by_layer": prec, "fp32_layers": fp32, "sparsity_by_layer": plan.sparsities(),
        "held_back": held, "reference": "onnxruntime fp32 dense", **(whole or {}),
        "samples": sample_info, "profiles": s.profile_ids, "notes": notes, "seconds": round(seconds, 1),
    }
    opt = Optimization(name=name or BUDGET_OPT_NAME, plan=plan)
    opt.notes = (f"budgeted: output change at most {s.budget:g} on {s.engine} {s.precision} "
                 f"(measured {change:.4g}, {rec['measured_speedup'] or 0:.2f}x against onnxruntime fp32 dense)")
    if s.precision == "int8":
        opt.quantization.enabled = True
        opt.quantization.skipped = {lid: "kept fp32 by the output-change budget" for lid in fp32}
    opt.validation = {
        "created": now_iso(), "kind": "budget", "engine": s.engine, "precision": s.precision, "cores": cores,
        "budget": s.budget, "output_change": change, "measured_speedup": rec["measured_speedup"],
        "pruned_ms": rec["ms"], "iterations": len(iterations), "stopped": stopped,
        "achieved_sparsity": plan.overall_sparsity(s.graph.prunable_layers), "quantized": s.precision == "int8",
        "evaluation_samples": sample_info.get("heldout"), "notes": notes,
    }
    opt.touch()
    save_optimization(project, opt)
    result["optimization"] = opt.name
    return result
