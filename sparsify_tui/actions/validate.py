"""One-shot pruning of an optimization's plan, and its measured speedup.

``prune_optimization`` writes the plan as an ONNX file: every layer's weight
pruned by unstructured magnitude to exactly round(s*n) zeros, and, when the
optimization quantizes, INT8 through ONNX Runtime's ``quantize_static``
(QDQ, per channel, calibrated on the samples).

``validate_optimization`` checks the estimate against the engine: it prunes,
then benchmarks dense against pruned with the same engine and settings in one
child process, alternating the two (job kind ``ab_benchmark``), and stores
beside the optimization:

* ``estimated_speedup``: the optimizer's estimate from a perf profile measured
  with the SAME engine (one is measured and stored in the project if missing,
  at the levels the plan uses);
* ``measured_speedup``: dense ms / pruned ms, each the fastest of its
  alternating repeats (``median_ratio``: the median of the per-repeat ratios);
* ``relative_error`` = (estimated - measured) / measured;
* ``output_change``: how far the pruned model's outputs move from the dense
  model's on the samples (:func:`sparsify_tui.metrics.compare_outputs`; its
  metric, unit, reading and per-output values in ``output_change_metric``,
  ``_unit``, ``_reading``, ``_samples``, ``_outputs``): one-shot, before any retraining;
* ``departure``: a sentence when the pruned model's outputs no longer follow
  the dense model's (:func:`sparsify_tui.metrics.departure`, e.g. "outputs no
  longer follow the original: 74% of decisions flipped"), else None; it is
  also the first of the validation's warnings (``quality.warnings``, notes).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from sparsify_tui.errors import UsageError

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.optim.plan import Plan
    from sparsify_tui.project import Project

VALIDATION_LEVEL_STEP = 0.05
MIN_LEVEL_MS = 250.0  # each level of the estimate's profile runs at least this long (tiny models: more iterations)
MAX_VALIDATION_LEVELS = 8
DEFAULT_CALIBRATION_SAMPLES = 32
SYNTHETIC_EVAL_SAMPLES = 8
METRIC_EVAL_SAMPLES = 256  # with --metric the evaluation takes up to this many samples (64 without)
_EVAL_SEED = 1_000_003  # synthetic evaluation inputs are drawn from seeds no calibration input uses
MISS_TOLERANCE = 0.20  # an estimate further than this from the measured speedup is explained (quality.estimate_miss)
SIDE_TOLERANCE = 0.10  # a side (dense or pruned) whose deployed time departs from the profile's by more is named


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "optimization"


def load_plan(project: "Project", opt_name: str | None = None):
    """(graph, optimization with per-layer sparsities, optimizer context) of a project's optimization."""
    from sparsify_tui.actions.optimizer import OptimizerContext, load_optimization

    if not project.optimizations:
        raise UsageError(f"project {project.dir} has no optimization yet: run "
                         f"'sparsify-tui optimize {project.dir}' first")
    name = opt_name or project.optimization_names()[0]
    opt = load_optimization(project, name)
    if opt is None:
        names = ", ".join(repr(n) for n in project.optimization_names())
        raise UsageError(f"project {project.dir} has no optimization named {name!r} (it has {names})")
    ctx = OptimizerContext.for_project(project, None, opt)
    if not opt.layers:
        opt = ctx.evaluator.allocate(opt)
    return ctx.graph, opt, ctx


def quantize_file(src: str | Path, dst: str | Path, samples: list[dict],
                  nodes_to_exclude: list[str] | None = None) -> dict:
    """INT8-quantize ``src`` into ``dst`` (:func:`sparsify_tui.profiles.quant.quantize_file`, which the
    channel perf job uses too); ``nodes_to_exclude`` stay fp32."""
    from sparsify_tui.profiles.quant import quantize_file as quantize

    return quantize(src, dst, samples, nodes_to_exclude)


def prune_optimization(project: "Project", out_path: str | Path, opt_name: str | None = None, *,
                       quantize: bool | None = None, method: str = "magnitude", data: str | None = None,
                       samples: int = DEFAULT_CALIBRATION_SAMPLES, sequential: bool = False,
                       on_progress: Callable[[dict], Any] | None = None) -> dict:
    """Write the optimization's plan as a pruned (and maybe INT8) ONNX file; return what was done."""
    import os

    from sparsify_tui.optim.calibrated import check_method

    method = check_method(method)
    out = Path(out_path).expanduser()
    if out.exists() and out.is_dir():
        raise UsageError(f"{out} is a directory: give the pruned model's file name, e.g. {out}/pruned.onnx")
    if not out.parent.exists():
        raise UsageError(f"cannot write {out}: the directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UsageError(f"cannot write {out}: the directory {out.parent} is not writable")
    graph, opt, _ctx = load_plan(project, opt_name)
    cal, _ev, notes = split_samples(project, graph, method, data, samples, None, need_eval=False)
    info = _write_plan(project, graph, opt, out, quantize, method=method, calibration=cal, sequential=sequential,
                       on_progress=on_progress)
    info["notes"] = notes + info.get("notes", [])
    return info


def _prune_to(project: "Project", graph: "ModelGraph", plan: "Plan", path: Path, method: str, calibration: list | None,
              sequential: bool, on_progress: Callable[[dict], Any] | None) -> dict:
    from sparsify_tui.optim.calibrated import prune_model_calibrated

    _model, info = prune_model_calibrated(project.model_path, plan, path, graph=graph, method=method,
                                          samples=calibration, sequential=sequential, on_progress=on_progress)
    return info


def _write_plan(project: "Project", graph: "ModelGraph", opt: Any, out: Path, quantize: bool | None, *,
                method: str = "magnitude", calibration: list | None = None, sequential: bool = False,
                on_progress: Callable[[dict], Any] | None = None) -> dict:
    import os
    import tempfile

    plan = opt.plan
    do_quant = opt.quantization.enabled if quantize is None else quantize
    info: dict[str, Any] = {"optimization": opt.name, "output": str(out), "layers_pruned": len(plan.sparsities()),
                            "quantized": False, "method": method,
                            "calibration_samples": len(calibration or []) if method != "magnitude" else 0}
    if not do_quant:
        pinfo = _prune_to(project, graph, plan, out, method, calibration, sequential, on_progress)
    else:
        from sparsify_tui.engines.inputs import make_inputs

        with tempfile.TemporaryDirectory(prefix="sparsify-prune-", dir=str(out.parent)) as tmp:
            pruned = Path(tmp) / "pruned.onnx"
            pinfo = _prune_to(project, graph, plan, pruned, method, calibration, sequential, on_progress)
            samples = [make_inputs(project.model_path, 1, project.input_shapes or {}, seed=i) for i in range(4)]
            # the layers the plan keeps fp32 (a budgeted plan's mixed precision) are left out of INT8
            q = quantize_file(pruned, Path(tmp) / "int8.onnx", samples, plan.fp32_node_names(graph.layers))
            os.replace(Path(tmp) / "int8.onnx", out)
        info.update(quantized=True, quant_format=q["format"])
    if pinfo.get("magnitude_layers"):
        info["magnitude_layers"] = pinfo["magnitude_layers"]
    if method != "magnitude":
        info["sequential"] = bool(sequential)
        info["prune_seconds"] = pinfo.get("seconds")
    info["sparsity"] = plan.overall_sparsity(graph.prunable_layers)
    return info


def _sample_key(sample: dict) -> bytes:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(sample):
        a = np.ascontiguousarray(sample[k])
        h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.digest()


def _with_values(samples: list[dict], values: dict) -> list[dict]:
    """The samples with the ``--input-value`` inputs set to their values."""
    return [{k: (np.full(np.shape(v), values[k], dtype=np.asarray(v).dtype) if k in values else v)
             for k, v in s.items()} for s in samples]


def split_samples(project: "Project", graph: "ModelGraph", method: str, data: str | None, samples: int,
                  eval_data: str | None, *, need_eval: bool = True, max_eval: int = 64) -> tuple[list, list, list]:
    """(calibration samples, evaluation samples, notes saying where they came from); they never overlap
    (:func:`split_labelled_samples` without the labels)."""
    cal, ev, notes, _labels = split_labelled_samples(project, graph, method, data, samples, eval_data,
                                                     need_eval=need_eval, max_eval=max_eval, labels=False)
    return cal, ev, notes


def split_labelled_samples(project: "Project", graph: "ModelGraph", method: str, data: str | None, samples: int,
                           eval_data: str | None, *, need_eval: bool = True, max_eval: int = 64,
                           labels: bool = True) -> tuple[list, list, list, list | None]:
    """(calibration samples, evaluation samples, notes saying where they came from, the evaluation samples'
    labels or None); the samples never overlap.

    The labels (``labels`` in the ``.npz``, :func:`sparsify_tui.engines.inputs.load_labels_for`) follow
    their samples through the split and are never fed to the model.

    ``data`` gives the calibration samples (the first ``samples`` rows); without
    ``eval_data`` its rows are split: the last quarter (at least 1) is kept for the
    evaluation and the calibration takes at most ``samples`` of the others. Without
    ``data`` the inputs are synthetic (random, fitted to the model as the profiles
    draw them), from seeds that differ between calibration and evaluation.
    """
    from sparsify_tui.engines.inputs import load_labels_for, load_samples_for

    shapes = project.input_shapes or None
    notes: list[str] = []
    needs_cal = method != "magnitude"
    cal: list = []
    ev: list = []
    ev_labels: list | None = None
    if data is not None:
        rows = load_samples_for(project.model_path, graph, data=data, samples=100_000, input_shapes=shapes)
        if eval_data is None and need_eval:
            if len(rows) < 2:
                raise UsageError(f"{data} holds {len(rows)} sample; the calibration and evaluation need at "
                                 "least 2 (or give --eval-data)")
            n_ev = min(max_eval, max(1, len(rows) // 4))
            ev = rows[len(rows) - n_ev:]
            if labels:
                every = load_labels_for(project.model_path, graph, data=data, samples=len(rows),
                                        input_shapes=shapes)
                ev_labels = every[len(rows) - n_ev:] if every is not None else None
            cal = rows[:min(samples, len(rows) - n_ev)] if needs_cal else []
            notes.append(f"{data}: {len(rows)} samples, {len(cal)} for calibration and the last {n_ev} "
                         "for evaluation")
        else:
            cal = rows[:samples] if needs_cal else []
            if needs_cal:
                notes.append(f"calibration: {len(cal)} samples of {data}")
    elif needs_cal:
        cal = load_samples_for(project.model_path, graph, data=None, samples=samples, input_shapes=shapes, seed=0)
        notes.append(f"no --data: calibrated on {len(cal)} synthetic inputs (random, fitted to the model's "
                     "inputs); give real samples with --data for a meaningful reconstruction")
    if need_eval:
        if eval_data is not None:
            ev = load_samples_for(project.model_path, graph, data=eval_data, samples=max_eval, input_shapes=shapes)
            notes.append(f"evaluation: {len(ev)} samples of {eval_data}")
            if labels:
                ev_labels = load_labels_for(project.model_path, graph, data=eval_data, samples=len(ev),
                                            input_shapes=shapes)
        elif data is None:
            ev = load_samples_for(project.model_path, graph, data=None, samples=SYNTHETIC_EVAL_SAMPLES,
                                  input_shapes=shapes, seed=_EVAL_SEED)
            notes.append(f"evaluation: {len(ev)} synthetic inputs, none of them used for calibration")
        seen = {_sample_key(s) for s in cal}
        shared = sum(1 for s in ev if _sample_key(s) in seen)
        if shared:
            raise UsageError(f"{shared} of the {len(ev)} evaluation samples are also calibration samples: "
                             "give --eval-data samples that are not in --data")
    if ev_labels is not None and len(ev_labels) != len(ev):
        raise UsageError(f"the evaluation holds {len(ev)} samples but {len(ev_labels)} labels")
    return cal, ev, notes, ev_labels


def measure_user_metric(metric: Any, model_a: str | Path, model_b: str | Path, samples: list[dict] | str | Path,
                        labels: list | None, *, scratch: str | Path,
                        on_progress: Callable[[dict], Any] | None = None,
                        cancel: threading.Event | None = None) -> dict:
    """The ``user_metric`` dict (:mod:`sparsify_tui.user_metric`) of ``model_b`` against the reference
    ``model_a`` on ``samples`` (a list, or a .npz written by :func:`save_samples`) with their ``labels``.

    The outputs come from ONNX Runtime in a child process (job kind ``outputs``, as the output change's do);
    the user's function runs here. ``metric`` is a spec or a loaded :class:`~sparsify_tui.user_metric.UserMetric`.
    A metric that raises or returns nonsense raises UsageError (the caller stores nothing)."""
    from sparsify_tui.engines.runner import run_job
    from sparsify_tui.jobs.ab_benchmark import read_samples
    from sparsify_tui.jobs.outputs import read_outputs
    from sparsify_tui.user_metric import load_metric

    um = load_metric(metric)
    scratch = Path(scratch)
    if isinstance(samples, (str, Path)):
        sample_file = Path(samples)
        samples = read_samples(str(sample_file))
    else:
        sample_file = scratch / "metric-samples.npz"
        save_samples(sample_file, samples)
    res = run_job({"kind": "outputs", "models": [str(model_a), str(model_b)], "samples": str(sample_file),
                   "out_dir": str(scratch)}, on_progress=on_progress, cancel=cancel, timeout_s=900)
    names = list(res["names"])
    ref, chg = (read_outputs(f, names) for f in res["files"])
    return um.evaluate(ref, chg, samples, labels, names=names)


def check_metric(metric: Any, max_drop: Any) -> tuple[Any, float | None]:
    """(the loaded ``--metric`` or None, ``--max-drop`` or None); UsageError on a bad one, or a drop without
    a metric."""
    from sparsify_tui.user_metric import load_metric, parse_max_drop

    metric = load_metric(metric)
    max_drop = parse_max_drop(max_drop)
    if max_drop is not None and metric is None:
        raise UsageError("--max-drop is a budget on the user's metric: give --metric module:function too")
    return metric, max_drop


def _score_or_discard(metric: Any, model: Path, out: Path, ev: list, labels: list | None, scratch: Any,
                      note: Callable[[str], None], on_progress: Callable[[dict], Any] | None,
                      cancel: threading.Event | None) -> dict | None:
    """The pruned file's ``user_metric`` (None without a metric); when it fails, the scratch directory and the
    pruned file are removed before the error goes up (nothing is left of a validation that did not finish)."""
    if metric is None:
        return None
    note(f"scoring the pruned model with --metric {metric.spec} on {len(ev)} evaluation samples")
    try:
        return measure_user_metric(metric, model, out, ev, labels, scratch=scratch.name, on_progress=on_progress,
                                   cancel=cancel)
    except BaseException:
        scratch.cleanup()
        out.unlink(missing_ok=True)
        raise


def save_samples(path: Path, samples: list[dict]) -> None:
    """Write samples as one .npz (array ``"<i>:<input name>"`` per sample and input)."""
    np.savez(str(path), **{f"{i}:{k}": v for i, s in enumerate(samples) for k, v in s.items()})


def _levels_for(plan: "Plan") -> list[float]:
    """The perf levels an estimate of ``plan`` needs: 0, its sparsities rounded to 0.05, and 0.9."""
    lv = {0.0}
    for s in plan.sparsities().values():
        lv.add(round(round(s / VALIDATION_LEVEL_STEP) * VALIDATION_LEVEL_STEP, 4))
    lv = sorted(x for x in lv if 0.0 <= x < 1.0)
    if len(lv) > MAX_VALIDATION_LEVELS:
        from sparsify_tui.settings import PERF_LEVELS

        lv = sorted(set(PERF_LEVELS))
    return lv


def _same_engine_profile(project: "Project", engine: str, batch: int, cores: int | None, plan: "Plan",
                         precision: str | None = None):
    """(entry, doc) of the newest usable perf profile measured with ``engine`` at this batch size
    (and precision: None matches profiles measured without one)."""
    from sparsify_tui.engines.registry import get_engine

    best = None
    top = min(max(_levels_for(plan)), 0.9)  # the highest level the estimate needs (as measured for it)
    for e in project.profiles_of("perf"):
        if e.engine != engine or project.is_stale(e):
            continue
        s = e.settings or {}
        if int(s.get("batch_size", 1) or 1) != batch:
            continue
        if cores and s.get("cores") and int(s["cores"]) != int(cores):
            continue
        if (s.get("precision") or None) != (precision or None):
            continue
        try:
            doc = project.load_profile(e)
        except Exception:  # noqa: BLE001 - an unreadable profile is skipped
            continue
        if doc.get("approximated") and get_engine(engine).sparse_speedup:  # the others' always are
            continue
        have = [float(x) for x in doc.get("levels", [])]
        if have and max(have) + 1e-9 < top:
            continue
        if best is None or str(e.created) > str(best[0].created):
            best = (e, doc)
    return best


def ab_benchmark_job(model_a: str | Path, model_b: str | Path, *, engine: str, batch_size: int, cores: int | None,
                     iterations: int, warmup: int, repeats: int, input_shapes: dict | None, eval_data: str | Path,
                     model_magnitude: str | Path | None = None, input_values: dict | None = None,
                     precision: str | None = None) -> dict:
    """The ``ab_benchmark`` job: dense ``model_a`` against pruned ``model_b``, alternating, on the evaluation
    samples (and ``model_magnitude``'s output change beside them when given)."""
    job = {"kind": "ab_benchmark", "model_a": str(model_a), "model_b": str(model_b), "engine": engine,
           "batch_size": batch_size, "cores": cores, "iterations": iterations, "warmup": warmup,
           "repeats": repeats, "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
           "eval_data": str(eval_data),
           "model_magnitude": str(model_magnitude) if model_magnitude is not None else None}
    if input_values:
        job["input_values"] = dict(input_values)
    if precision:
        job["precision"] = precision
    return job


def _optimizer_profile(project: "Project", ctx: Any, opt: Any) -> tuple[Any, Any]:
    """(entry, cores) of the perf profile the optimizer's estimate came from (None, None without one)."""
    opt_perf_id = (ctx.profile_ids or {}).get("perf", "") or getattr(opt, "perf_profile_id", "")
    opt_entry = next((e for e in project.profiles_of("perf") if e.id == opt_perf_id), None)
    opt_cores = (opt_entry.settings or {}).get("cores") if opt_entry is not None else None
    return opt_entry, opt_cores


def _validation_cores(cores: int | None, opt_entry: Any, opt_cores: Any) -> int:
    """``--cores`` when given, else the cores of the optimizer's measured perf profile, else all usable cores."""
    from sparsify_tui.settings import usable_cores as default_cores

    if cores:
        return int(cores)
    if opt_cores and not (opt_entry.settings or {}).get("approximate"):
        return int(opt_cores)
    return default_cores()


def _optimizer_profile_fits(project: "Project", opt_entry: Any, chosen: str, prec: str | None, batch_size: int,
                            cores: int) -> tuple[Any, dict] | None:
    """(entry, doc) of the optimizer's own perf profile when the estimate can use it (same engine, precision,
    batch size and cores, fresh, readable and measured), else None."""
    if opt_entry is None or (prec is not None and (opt_entry.settings or {}).get("precision") != prec):
        return None  # none, or measured at another precision: not this estimate's profile
    if opt_entry.engine != chosen or project.is_stale(opt_entry):
        return None
    st = opt_entry.settings or {}
    if int(st.get("batch_size", 1) or 1) != batch_size or (st.get("cores") and int(st["cores"]) != cores):
        return None
    try:
        doc0 = project.load_profile(opt_entry)
    except Exception:  # noqa: BLE001 - unreadable: another profile is used, said in the notes
        return None
    from sparsify_tui.engines.registry import REFERENCE

    if doc0 is None or (doc0.get("approximated") and chosen != REFERENCE):
        return None
    return opt_entry, doc0


def _measure_validation_profile(project: "Project", plan: "Plan", chosen: str, prec: str | None, *,
                                batch_size: int, cores: int, iterations: int, warmup: int,
                                on_progress: Callable[[dict], Any] | None, cancel: threading.Event | None,
                                input_values: dict | None, note: Callable[[str], None]) -> tuple[Any, dict]:
    """Measure and store a ``chosen`` perf profile at the levels ``plan`` needs; its (entry, doc)."""
    from sparsify_tui.engines.machine import machine_summary
    from sparsify_tui.profiles.perf import run_perf_profile

    levels = _levels_for(plan)
    note(f"measuring a {chosen} perf profile at levels {', '.join(f'{x:g}' for x in levels)}")
    doc = run_perf_profile(project.model_path, engine=chosen, batch_size=batch_size, cores=cores,
                           levels=levels, iterations=max(20, iterations), warmup=warmup, repeats=3,
                           input_shapes=project.input_shapes or {}, on_progress=on_progress,
                           cancel=cancel, min_level_ms=MIN_LEVEL_MS, precision=prec,
                           input_values=input_values)
    settings = {"engine": chosen, "batch_size": batch_size, "cores": cores, "levels": levels,
                "iterations": max(20, iterations), "warmup": warmup, "repeats": 3,
                "input_shapes": {k: list(v) for k, v in sorted((project.input_shapes or {}).items())},
                "purpose": "validation", **({"precision": prec} if prec else {})}
    entry = project.add_profile("perf", f"{chosen} b{batch_size} (validation)", settings, doc["engine"],
                                doc.get("engine_version") or "", doc.get("machine") or machine_summary(),
                                doc)
    return entry, doc


def validate_optimization(project: "Project", opt_name: str | None = None, *, engine: str = "auto",
                          iterations: int = 20, warmup: int = 5, repeats: int = 5, batch_size: int = 1,
                          cores: int | None = None, out_path: str | Path | None = None,
                          on_progress: Callable[[dict], Any] | None = None,
                          cancel: threading.Event | None = None, precision: str | None = None,
                          method: str = "magnitude", data: str | None = None,
                          samples: int = DEFAULT_CALIBRATION_SAMPLES, eval_data: str | None = None,
                          sequential: bool = False, input_values: dict | None = None,
                          metric: Any = None, max_drop: float | None = None) -> dict:
    """Prune, benchmark dense against pruned, store and return the validation (see module doc).

    ``input_values`` (``--input-value NAME=V``): those inputs hold ``V`` in every sample and timed batch
    (a sample rate a model branches on) instead of random values.

    ``metric`` (``--metric module:function``, :mod:`sparsify_tui.user_metric`): the user's metric of the
    pruned model against the dense one on the evaluation samples (up to ``METRIC_EVAL_SAMPLES``, with their
    labels), stored as ``user_metric``; measured right after pruning, so a metric that fails stores nothing
    (and removes the pruned file). ``max_drop`` (``--max-drop``, the metric's units): ``max_drop`` and
    ``within_max_drop`` are stored beside it."""
    import tempfile

    from sparsify_tui.engines.registry import get_engine, resolve_auto
    from sparsify_tui.engines.runner import run_job
    from sparsify_tui.optim.calibrated import check_method
    from sparsify_tui.optim.estimate import Evaluator
    from sparsify_tui.profiles.perf import validate_engine, validate_precision

    project.require_writable() if hasattr(project, "require_writable") else None
    metric, max_drop = check_metric(metric, max_drop)
    engine = validate_engine(engine)
    precision = validate_precision(engine, precision)
    method = check_method(method)
    cores_given = bool(cores)
    graph, opt, ctx = load_plan(project, opt_name)
    # the profile the optimizer's estimate came from: the validation uses it when it can (same engine,
    # batch size and, unless --cores says otherwise, its core count), and says why when it cannot
    opt_entry, opt_cores = _optimizer_profile(project, ctx, opt)
    cores = _validation_cores(cores, opt_entry, opt_cores)
    plan = opt.plan
    if not plan.sparsities():
        raise UsageError(f"optimization {opt.name!r} prunes no layer: nothing to validate")
    cal, ev, sample_notes, ev_labels = split_labelled_samples(
        project, graph, method, data, samples, eval_data, labels=metric is not None,
        max_eval=METRIC_EVAL_SAMPLES if metric is not None else 64)
    if input_values:
        cal, ev = _with_values(cal, input_values), _with_values(ev, input_values)

    def note(label: str) -> None:
        if on_progress:
            on_progress({"event": "progress", "done": 0, "total": 1, "label": label})

    out = Path(out_path) if out_path else project.dir / "validation" / f"{_safe_name(opt.name)}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    note(f"pruning {len(plan.sparsities())} layers ({method})")
    pruned_info = _write_plan(project, graph, opt, out, None, method=method, calibration=cal,
                              sequential=sequential, on_progress=on_progress)
    scratch = tempfile.TemporaryDirectory(prefix="sparsify-validate-", dir=str(out.parent))
    eval_file = Path(scratch.name) / "evaluation.npz"
    save_samples(eval_file, ev)
    user_metric = _score_or_discard(metric, project.model_path, out, ev, ev_labels, scratch, note, on_progress,
                                    cancel)
    magnitude_file = None
    if method != "magnitude":
        note("pruning by magnitude at the same plan (for comparison)")
        magnitude_file = Path(scratch.name) / "magnitude.onnx"
        _write_plan(project, graph, opt, magnitude_file, None)
    chosen, auto_reason = resolve_auto(engine)

    def estimate_and_measure(chosen: str) -> tuple[Any, dict, Any, dict]:
        # the estimate, from the optimizer's own profile when it fits, else a profile measured with the
        # same engine (measured now if there is none)
        prec = precision if get_engine(chosen).precision_hint or precision == "int8" else None
        found = (_optimizer_profile_fits(project, opt_entry, chosen, prec, batch_size, cores)
                 or _same_engine_profile(project, chosen, batch_size, cores, plan, prec)
                 or _measure_validation_profile(project, plan, chosen, prec, batch_size=batch_size, cores=cores,
                                                iterations=iterations, warmup=warmup, on_progress=on_progress,
                                                cancel=cancel, input_values=input_values, note=note))
        perf_entry, perf_doc = found
        est = Evaluator(graph, perf_doc, ctx.evaluator.loss, ctx.evaluator.quant).evaluate(opt)
        note("benchmarking dense against pruned")
        job = ab_benchmark_job(project.model_path, out, engine=chosen, batch_size=batch_size, cores=cores,
                               iterations=iterations, warmup=warmup, repeats=repeats,
                               input_shapes=project.input_shapes, eval_data=eval_file,
                               model_magnitude=magnitude_file, input_values=input_values, precision=prec)
        res = run_job(job, on_progress=on_progress, cancel=cancel, timeout_s=900, cores=cores)
        return perf_entry, perf_doc, est, res

    try:
        perf_entry, perf_doc, est, res = _measure_with_fallback(estimate_and_measure, chosen, engine, note, auto_reason)
    finally:
        scratch.cleanup()
    return _store_validation(project, opt, res, perf_entry, perf_doc, est, chosen, batch_size, cores,
                             iterations, repeats, pruned_info, out, method, cal, ev, sample_notes,
                             opt_entry=opt_entry, opt_cores=opt_cores, cores_given=cores_given,
                             user_metric=user_metric, max_drop=max_drop)


def explain_miss(v: dict, *, profile_warnings: int = 0, tolerance: float = MISS_TOLERANCE) -> list[str]:
    """Why the estimate missed the measured speedup by more than ``tolerance``: one sentence (empty when it did not).

    ``v`` holds the validation's figures: ``estimated_speedup``, ``measured_speedup``, ``estimated_ms`` and
    ``baseline_ms`` (the profile's pruned estimate and dense time, on the deployed scale), ``dense_ms`` and
    ``pruned_ms`` (as deployed), ``speedup_spread`` ([lowest, highest] per-repeat speedup), ``engine``,
    ``estimate_approximated`` and ``interference``. Each cause is named only where these figures show it:
    a FLOPs estimate, a profile with warnings, other processes on the cores, repeats that disagree by as
    much as the miss, and which side (dense or pruned) ran away from the profile's prediction.
    """
    from sparsify_tui.engines import interference as itf

    if not v.get("estimated_speedup") or not v.get("measured_speedup"):
        return []
    est, meas = float(v["estimated_speedup"]), float(v["measured_speedup"])
    err = (est - meas) / meas
    if abs(err) <= tolerance:
        return []
    engine = v.get("engine") or "the engine"
    causes: list[str] = []
    if v.get("estimate_approximated"):
        causes.append(f"the estimate comes from FLOPs (what a sparsity-aware engine would gain) while {engine} "
                      "runs sparse weights at dense speed")
    if profile_warnings:
        causes.append(f"the perf profile behind it has {profile_warnings} warning(s), listed above")
    share = v.get("interference")
    if itf.above(share):
        causes.append(f"other processes used {float(share):.0%} of the measured cores during the timed blocks")
    spread = v.get("speedup_spread") or []
    if len(spread) == 2 and float(spread[0]) > 0:
        lo, hi = float(spread[0]), float(spread[1])
        if lo <= est <= hi or (hi - lo) / meas >= abs(err):
            causes.append(f"the repeats' speedups ranged {lo:.2f}x-{hi:.2f}x, as wide as the miss: this machine's "
                          "own noise (time the hypervisor gives other guests counts as interference only as steal)")
    times = [v.get(k) for k in ("dense_ms", "pruned_ms", "baseline_ms", "estimated_ms")]
    if not v.get("estimate_approximated") and all(times):
        dense, pruned, base, est_ms = (float(t) for t in times)
        d_side, p_side = dense / base, pruned / est_ms
        if meas < 1.0 <= est:
            causes.append(
                f"{engine} as deployed ran the pruned file slower than the dense one ({pruned:.2f} ms against "
                f"{dense:.2f} ms) while the profile's levels, timed with the sparsity imposed by the "
                "analysis run, were faster: for this file's layers at these sparsities the deployed engine "
                "picks kernels slower than dense on this CPU; trust the measured speedup")
        elif abs(d_side - 1.0) <= SIDE_TOLERANCE:
            which = "slower" if p_side > 1.0 else "faster"
            causes.append(
                f"the dense model ran as the profile says ({dense:.2f} ms against {base:.2f} ms) but the "
                f"pruned one {which} than estimated ({pruned:.2f} ms against {est_ms:.2f} ms): the miss "
                "is in the sparse levels (the analysis run imposes the sparsity on every layer; the deployed engine "
                "chooses its kernels for the file's real zeros)")
        elif abs(p_side - 1.0) <= SIDE_TOLERANCE:
            causes.append(
                f"the pruned model ran as estimated ({pruned:.2f} ms against {est_ms:.2f} ms) but the "
                f"dense one took {d_side:.2f}x the profile's time ({dense:.2f} ms against {base:.2f} ms): "
                "the miss is in the dense time (the profile and this benchmark saw the model at different speeds)")
        else:
            causes.append(
                f"both sides departed from the profile: dense {d_side:.2f}x its time ({dense:.2f} ms), pruned "
                f"{p_side:.2f}x its estimate ({pruned:.2f} ms)")
    if not causes:
        causes.append("none of the checks explains it (no profile warning, quiet cores, repeats that agree, "
                      "both sides as predicted)")
    how = "above" if err > 0 else "below"
    return [f"the estimate ({est:.2f}x) is {abs(err):.0%} {how} the measured speedup ({meas:.2f}x): "
            + "; ".join(causes)]


def _measure_with_fallback(estimate_and_measure, chosen, engine, note, auto_reason: str = ""):
    from sparsify_tui.engines.registry import REFERENCE
    from sparsify_tui.errors import EngineError

    try:
        perf_entry, perf_doc, est, res = estimate_and_measure(chosen)
        if (engine or "auto").lower() == "auto" and res.get("engine") == chosen:
            # the A/B job was given the engine auto chose: its own reason would say "requested with --engine"
            res["engine_reason"] = f"no engine given (auto): {auto_reason}"
    except EngineError as exc:
        # DeepSparse may compile the dense model and still fail, or crash, on the pruned one: with engine
        # "auto" the validation is then measured with ONNX Runtime, saying why
        if engine != "auto" or chosen == REFERENCE:
            raise
        why = f"{chosen} failed on the pruned model ({exc.message})"
        note(f"{why}; measuring with {REFERENCE}")
        perf_entry, perf_doc, est, res = estimate_and_measure(REFERENCE)
        res["engine_reason"] = why
    return perf_entry, perf_doc, est, res


def _profile_mismatch_note(opt_entry: Any, perf_entry: Any, res: dict, batch_size: int, cores: int) -> str | None:
    """Why the estimate comes from another perf profile than the optimizer's (None when it is the optimizer's)."""
    if opt_entry is not None and perf_entry.id == opt_entry.id:
        return None
    if opt_entry is None:
        why = "the optimizer used no stored perf profile (times approximated from FLOPs)"
    else:
        st = opt_entry.settings or {}
        diffs = []
        if opt_entry.engine != res.get("engine"):
            diffs.append(f"it was measured with {opt_entry.engine}, this validation runs {res.get('engine')}")
        if int(st.get("batch_size", 1) or 1) != batch_size:
            diffs.append(f"batch size {st.get('batch_size')} there, {batch_size} here")
        if st.get("cores") and int(st["cores"]) != cores:
            diffs.append(f"{st['cores']} cores there, {cores} here (--cores)")
        if st.get("approximate") or opt_entry.engine in ("flops", "flops-estimate"):
            diffs.append("it is approximated (no engine measured it)")
        why = f"the optimizer's estimate comes from perf profile {opt_entry.name!r}, but " + \
              ("; ".join(diffs) or "it cannot be read")
    return f"estimate from perf profile {perf_entry.name!r} ({perf_entry.id}), not the optimizer's: {why}"


def _validation_notes(res: dict, perf_entry: Any, perf_doc: dict, chosen: str, batch_size: int, cores: int,
                      pruned_info: dict, method: str, sample_notes: list, opt_entry: Any) -> list[str]:
    """The validation's notes before its warnings: where the samples, the estimate and the measurement came from."""
    notes = list(sample_notes)
    if pruned_info.get("magnitude_layers"):
        ml = pruned_info["magnitude_layers"]
        notes.append(f"{len(ml)} layers pruned by magnitude ({method} cannot handle them): "
                     + "; ".join(f"{k}: {v}" for k, v in list(ml.items())[:3]) + ("; ..." if len(ml) > 3 else ""))
    mismatch = _profile_mismatch_note(opt_entry, perf_entry, res, batch_size, cores)
    if mismatch:
        notes.append(mismatch)
    if res.get("engine") != chosen:
        notes.append(f"measured with {res.get('engine')}: {res.get('engine_reason')}")
    # an output whose metric was switched (saturated softmax, all-zero output) says so
    notes += [n for o in res.get("output_change_outputs") or [] for n in o.get("notes") or []]
    if perf_doc.get("approximated"):
        notes.append(f"{res.get('engine')} runs sparse weights no faster: the estimate comes from FLOPs "
                     f"(what a sparsity-aware engine such as DeepSparse would gain), the measurement shows "
                     f"{res.get('engine')}'s own speed")
    return notes


def _validation_quality(res: dict, perf_entry: Any, perf_doc: dict, est: Any) -> tuple[dict, str | None]:
    """(quality, departure): the benchmark's and the profile's warnings, the departure first and the
    estimate's miss (:func:`explain_miss`) last."""
    from sparsify_tui.metrics import departure

    pq = perf_doc.get("quality") if isinstance(perf_doc.get("quality"), dict) else {}
    rq = res.get("quality") if isinstance(res.get("quality"), dict) else {}
    warnings = list(rq.get("warnings") or [])
    warnings += [f"the estimate rests on perf profile {perf_entry.id}, which has a warning: {w}"
                 for w in pq.get("warnings") or []]
    # the pruned model's outputs no longer resemble the dense model's (metrics.departure thresholds)
    departed = departure(res)
    if departed:
        warnings.insert(0, departed)
    quality = {"interference": rq.get("interference"), "interference_by_block": rq.get("interference_by_block"),
               "profile_interference": pq.get("interference"), "deployed_ms": res.get("dense_ms"),
               "instrumentation_ratio": pq.get("instrumentation_ratio"), "warnings": warnings}
    miss = explain_miss(
        {"engine": res.get("engine"), "estimated_speedup": float(est.estimated_speedup),
         "measured_speedup": res.get("measured_speedup"),
         "estimated_ms": est.estimated_ms, "baseline_ms": est.baseline_ms, "dense_ms": res.get("dense_ms"),
         "pruned_ms": res.get("pruned_ms"), "speedup_spread": res.get("speedup_spread"),
         "estimate_approximated": bool(perf_doc.get("approximated")), "interference": rq.get("interference")},
        profile_warnings=len(pq.get("warnings") or []))
    if miss:
        quality["estimate_miss"] = miss
        warnings.extend(miss)
    return quality, departed


def _store_validation(project, opt, res, perf_entry, perf_doc, est, chosen, batch_size, cores, iterations,
                      repeats, pruned_info, out, method, cal, ev, sample_notes, *, opt_entry=None, opt_cores=None,
                      cores_given=False, user_metric=None, max_drop=None):
    from sparsify_tui.optim.optimization import now_iso
    from sparsify_tui.actions.optimizer import save_optimization

    notes = _validation_notes(res, perf_entry, perf_doc, chosen, batch_size, cores, pruned_info, method,
                              sample_notes, opt_entry)
    quality, departed = _validation_quality(res, perf_entry, perf_doc, est)
    notes.extend(quality["warnings"])  # the departure, the warnings, then the estimate's miss
    measured = res.get("measured_speedup")
    estimated = float(est.estimated_speedup)
    validation = {
        "created": now_iso(),
        "engine": res["engine"], "engine_version": res.get("engine_version") or "",
        "engine_reason": res.get("engine_reason") or "",
        "precision": res.get("precision") or "fp32",
        "batch_size": batch_size, "cores": cores, "iterations": iterations, "repeats": repeats,
        "iterations_used": res.get("iterations"),
        "dense_ms": res["dense_ms"], "pruned_ms": res["pruned_ms"],
        "dense_repeat_ms": res["dense_repeat_ms"], "pruned_repeat_ms": res["pruned_repeat_ms"],
        "measured_speedup": measured, "median_ratio": res.get("median_ratio"),
        "speedup_spread": res.get("speedup_spread"),
        "estimated_speedup": estimated, "estimated_ms": est.estimated_ms, "baseline_ms": est.baseline_ms,
        "estimate_profile": perf_entry.id,
        "estimate_profile_name": perf_entry.name,
        "optimizer_profile": opt_entry.id if opt_entry is not None else "",
        "optimizer_profile_name": opt_entry.name if opt_entry is not None else "",
        "cores_reason": ("requested with --cores" if cores_given else
                         "the cores of the optimizer's perf profile" if opt_cores and cores == int(opt_cores)
                         else "all usable cores"),
        "relative_error": (estimated - measured) / measured if measured else None,
        "output_change": res.get("output_change"),
        "output_change_error": res.get("output_change_error"),
        "departure": departed,
        # the metric, unit, plain-words reading and per-output values (sparsify_tui.metrics)
        **{k: v for k, v in res.items() if k.startswith("output_change_") and k != "output_change_error"},
        "method": method,
        "magnitude_output_change": res.get("magnitude_output_change") if method != "magnitude"
        else res.get("output_change"),
        "calibration_samples": len(cal) if method != "magnitude" else 0,
        "evaluation_samples": len(ev),
        "sequential": bool(pruned_info.get("sequential", False)),
        "achieved_sparsity": pruned_info["sparsity"], "quantized": pruned_info["quantized"],
        "pruned_file": str(out),
        "estimate_approximated": bool(perf_doc.get("approximated")),
        "notes": notes,
        "quality": quality,
    }
    if user_metric is not None:
        from sparsify_tui.user_metric import over_budget

        validation["user_metric"] = user_metric
        notes.append(f"--metric {user_metric['spec']}: {user_metric['name']} on the {len(ev)} evaluation samples "
                     + ("with their labels" if user_metric.get("labels") else "(they carry no labels)"))
        if max_drop is not None:
            validation["max_drop"] = max_drop
            validation["within_max_drop"] = over_budget(user_metric, max_drop) is None
    opt.validation = validation
    save_optimization(project, opt)
    return {"optimization": opt.name, **validation}
