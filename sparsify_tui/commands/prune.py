"""``sparsify-tui prune`` (one-shot pruning, optional validation) and ``sparsify-tui benchmark``."""

from __future__ import annotations

from typing import TYPE_CHECKING
import argparse
from pathlib import Path

from sparsify_tui.commands.common import Progress, dynamic_shape_hint, emit_json, print_table
from sparsify_tui.settings import parse_float, parse_int, parse_int_list
from sparsify_tui.settings import usable_cores as max_cores
from sparsify_tui.errors import ModelError, UsageError

if TYPE_CHECKING:
    from sparsify_tui.project import Project


def _refuse_project_file(project: "Project", out: Path) -> None:
    """UsageError when ``-o`` would overwrite the project's own files (data loss) or names a directory."""
    from sparsify_tui.commands.common import refuse_project_file

    refuse_project_file(project, out, "-o")
    target = out.resolve()
    if target.is_dir():
        raise UsageError(f"-o {out} is a directory; give the file to write, e.g. {target / 'pruned.onnx'}")


def _sample_files(args) -> tuple[str | None, str | None]:
    """``--data`` and ``--eval-data``: each an existing file, the held-out one only with ``--validate``."""
    data, eval_data = getattr(args, "data", None), getattr(args, "eval_data", None)
    for flag, value in (("--data", data), ("--eval-data", eval_data)):
        if value is not None and not Path(value).expanduser().exists():
            raise UsageError(f"{flag} {value}: no such file or directory")
    if eval_data is not None and not args.validate:
        raise UsageError("--eval-data is only used with --validate")
    return data, eval_data


def _progress_callback(progress: Progress):
    """An ``on_progress`` that shows a job's progress events on ``progress``."""
    def on_progress(ev: dict) -> None:
        if ev.get("event") == "progress":
            progress.update(ev.get("done", 0), ev.get("total", 1) or 1, str(ev.get("label", "")))

    return on_progress


def _unstructured_flags(args: argparse.Namespace) -> dict:
    """The checked flags of an unstructured ``prune`` (UsageError on a flag it does not take or a bad value)."""
    from sparsify_tui.engines.inputs import parse_input_values
    from sparsify_tui.optim.calibrated import check_method
    from sparsify_tui.profiles.perf import validate_engine, validate_precision

    for flag, attr in (("--round-to", "round_to"), ("--flops-reduction", "flops_reduction"),
                       ("--channel-fraction", "channel_fraction"), ("--save-as", "save_as")):
        if getattr(args, attr, None) is not None:
            raise UsageError(f"{flag} is only used with --structure channels")
    if str(getattr(args, "method", None) or "").strip().lower() in ("l2", "reconstruct"):
        raise UsageError(f"--method {args.method} removes channels: add --structure channels")
    engine = validate_engine(args.engine)
    precision = validate_precision(engine, getattr(args, "precision", None))
    iterations = parse_int("--iterations", args.iterations, minimum=1)
    method = check_method(getattr(args, "method", None) or "magnitude")
    samples = parse_int("--samples", getattr(args, "samples", "32"), minimum=1, maximum=100000)
    data, eval_data = _sample_files(args)
    values = parse_input_values(getattr(args, "input_value", None))
    if values and not args.validate:
        raise UsageError("--input-value is only used with --validate")
    sequential = bool(getattr(args, "sequential", False))
    if sequential and method == "magnitude":
        raise UsageError("--sequential needs --method wanda or sparsegpt")
    metric, max_drop = _metric_flags(args)
    return {"engine": engine, "precision": precision, "iterations": iterations, "method": method,
            "samples": samples, "data": data, "eval_data": eval_data, "values": values, "sequential": sequential,
            "metric": metric, "max_drop": max_drop}


def _metric_flags(args: argparse.Namespace) -> tuple:
    """(the loaded ``--metric`` or None, ``--max-drop`` or None): both only with ``--validate``; the metric's
    module is imported now, so a bad one fails before any work."""
    from sparsify_tui.actions.validate import check_metric

    metric, max_drop = getattr(args, "metric", None), getattr(args, "max_drop", None)
    for flag, value in (("--metric", metric), ("--max-drop", max_drop)):
        if value is not None and not args.validate:
            raise UsageError(f"{flag} is only used with --validate")
    return check_metric(metric, max_drop)


def _print_validation(doc: dict, out: Path) -> None:
    """The validation as a table, then its notes (the departure, shown in the table, once)."""
    from sparsify_tui.metrics import format_change

    print(f"wrote {out}")
    change, meaning = format_change(doc)
    rows = [
        ["Engine", _engine_label(doc)],
        ["Cores", f"{doc['cores']}  ({doc.get('cores_reason', '')})"],
        ["Dense", f"{doc['dense_ms']:.3f} ms"],
        ["Pruned", f"{doc['pruned_ms']:.3f} ms  (sparsity {doc['achieved_sparsity']:.3f})"],
        ["Measured speedup", f"{doc['measured_speedup']:.2f}x"],
        ["Estimated speedup", f"{doc['estimated_speedup']:.2f}x  (from perf profile "
                              f"{doc.get('estimate_profile_name') or doc['estimate_profile']!r})"],
        ["Relative error", "n/a" if doc["relative_error"] is None else f"{doc['relative_error']:+.1%}"],
        ["Output change", f"{change}  ({doc.get('method', 'magnitude')}, one-shot, before retraining; "
         f"{doc.get('evaluation_samples')} evaluation samples)"],
    ]
    if meaning:
        rows.append(["", meaning])
    um = doc.get("user_metric")
    if um:
        from sparsify_tui.user_metric import budget_line, format_metric

        rows.append(["User metric", f"{format_metric(um)}  (--metric {um['spec']}; {um['samples']} evaluation "
                                    f"samples{', labelled' if um.get('labels') else ', no labels'})"])
        if doc.get("max_drop") is not None:
            rows.append(["Budget", budget_line(um, doc["max_drop"])])
    if doc.get("departure"):
        rows.append(["", f"warning: {doc['departure']}"])
    if doc.get("method", "magnitude") != "magnitude":
        mc = doc.get("magnitude_output_change")
        rows.append(["Magnitude at same plan", "n/a" if mc is None else f"{mc:.4g}"])
        rows.append(["Calibration samples", str(doc.get("calibration_samples"))])
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}")
    for n in doc.get("notes") or []:
        if n != doc.get("departure"):  # shown above, beside the output change
            print(f"Note: {n}")


def _validate_and_show(args: argparse.Namespace, project: "Project", out: Path, f: dict) -> int:
    """``prune --validate``: prune, benchmark dense against pruned, store the validation and show it."""
    from sparsify_tui.actions.validate import validate_optimization

    progress = Progress("validate")
    cores = None
    if getattr(args, "cores", None) is not None:
        cores = parse_int("--cores", args.cores, minimum=1, maximum=max_cores())
    doc = validate_optimization(project, args.optimization, engine=f["engine"], iterations=f["iterations"],
                                cores=cores, out_path=out, on_progress=_progress_callback(progress),
                                precision=f["precision"], method=f["method"], data=f["data"], samples=f["samples"],
                                eval_data=f["eval_data"], sequential=f["sequential"],
                                input_values=f["values"] or None, metric=f["metric"], max_drop=f["max_drop"])
    progress.done()
    if args.json:
        emit_json(doc)
    else:
        _print_validation(doc, out)
    return 0


def _prune_only(args: argparse.Namespace, project: "Project", out: Path, f: dict) -> int:
    """``prune`` without ``--validate``: write the pruned file and say what was done."""
    import sys

    from sparsify_tui.actions.validate import prune_optimization

    progress = Progress(f"prune ({f['method']})")
    info = prune_optimization(project, out, args.optimization, method=f["method"], data=f["data"],
                              samples=f["samples"], sequential=f["sequential"],
                              on_progress=_progress_callback(progress))
    progress.done()
    for n in info.get("notes") or []:
        print(f"note: {n}", file=sys.stderr)
    if args.json:
        emit_json(info)
    else:
        q = f", INT8 ({info['quant_format']})" if info.get("quantized") else ""
        print(f"wrote {out}: {info['layers_pruned']} layers pruned, sparsity {info['sparsity']:.3f}{q}")
        from sparsify_tui.commands.common import next_steps

        next_steps(f"sparsify-tui benchmark {project.model_path} {out}   (dense and pruned side by side)")
    if project.readonly and project.notices:
        for n in project.notices:
            print(f"note: {n}", file=sys.stderr)
    return 0


def run_prune(args: argparse.Namespace) -> int:
    """``prune PROJECT_DIR -o OUT.onnx [--optimization N] [--validate] [--engine] [--iterations] [--json]``."""
    from sparsify_tui.project import Project

    structure = str(getattr(args, "structure", None) or "unstructured").strip().lower()
    if structure not in ("unstructured", "channels"):
        raise UsageError(f"--structure must be unstructured or channels, got {args.structure!r}")
    if structure == "channels" or _names_channel_plan(args):
        return run_prune_channels(args)
    flags = _unstructured_flags(args)
    path = Path(args.project).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        raise UsageError(f"{path} is a model file: prune needs a project directory "
                         f"(create one with 'sparsify-tui new {path}', then 'sparsify-tui optimize')")
    project = Project.open(path, readonly=not args.validate)
    try:
        out = Path(args.output).expanduser()
        _refuse_project_file(project, out)
        if args.validate:
            return _validate_and_show(args, project, out, flags)
        return _prune_only(args, project, out, flags)
    finally:
        project.close()


def _names_channel_plan(args: argparse.Namespace) -> bool:
    """True when the optimization ``prune`` would read (``--optimization``, else the default one) is a stored
    channel plan (``optimize --structure channels``): it is pruned by removing channels."""
    from sparsify_tui.actions.optimizer import default_optimization_name, load_optimization
    from sparsify_tui.errors import SparsifyError
    from sparsify_tui.optim.channel_plan import is_channel_plan
    from sparsify_tui.project import Project

    path = Path(args.project).expanduser()
    if not path.is_dir():
        return False
    try:
        project = Project.open(path, readonly=True)
    except SparsifyError:
        return False  # the unstructured path reports the problem
    try:
        name = args.optimization or default_optimization_name(project)
        return is_channel_plan(load_optimization(project, name))
    except SparsifyError:
        return False
    finally:
        project.close()


def _channel_optimization(args: argparse.Namespace, project: "Project") -> str | None:
    """The channel optimization ``prune --structure channels`` prunes: ``--optimization``, else the default
    optimization when it is a channel plan and no --flops-reduction/--channel-fraction is given."""
    from sparsify_tui.actions.optimizer import default_optimization_name, load_optimization
    from sparsify_tui.optim.channel_plan import is_channel_plan

    if args.optimization is not None:
        return args.optimization
    if getattr(args, "flops_reduction", None) is not None or getattr(args, "channel_fraction", None) is not None \
            or getattr(args, "round_to", None) is not None:
        return None
    name = default_optimization_name(project)
    return name if is_channel_plan(load_optimization(project, name)) else None


def run_prune_channels(args: argparse.Namespace) -> int:
    """``prune PROJECT_DIR -o OUT.onnx --structure channels [--method l2|reconstruct] [--flops-reduction R |
    --channel-fraction F] [--round-to N] [--validate --engine E --precision P] [--json]``."""
    import sys

    from sparsify_tui.actions.channels import check_fraction, prune_channels_project
    from sparsify_tui.engines.inputs import parse_input_values
    from sparsify_tui.optim.channels import check_method, check_round_to
    from sparsify_tui.profiles.perf import validate_engine, validate_precision
    from sparsify_tui.project import Project

    if getattr(args, "metric", None) is not None or getattr(args, "max_drop", None) is not None:
        raise UsageError("--metric and --max-drop validate unstructured plans; --structure channels reports "
                         "the output change only")
    method = check_method(getattr(args, "method", None) or "l2")
    engine = validate_engine(args.engine)
    precision = validate_precision(engine, getattr(args, "precision", None))
    iterations = parse_int("--iterations", args.iterations, minimum=1)
    samples = parse_int("--samples", getattr(args, "samples", "32"), minimum=1, maximum=100000)
    round_to = check_round_to(args.round_to) if getattr(args, "round_to", None) is not None else None
    flops = getattr(args, "flops_reduction", None)
    frac = getattr(args, "channel_fraction", None)
    if flops is not None and frac is not None:
        raise UsageError("give --flops-reduction or --channel-fraction, not both")
    flops = check_fraction("--flops-reduction", flops, 1.0) if flops is not None else None
    frac = check_fraction("--channel-fraction", frac, 1.0) if frac is not None else None
    if getattr(args, "sequential", False):
        raise UsageError("--sequential is for the unstructured methods; --method reconstruct is sequential already")
    if getattr(args, "optimization", None) is not None and (flops is not None or frac is not None):
        raise UsageError("--optimization is the plan: give it without --flops-reduction or --channel-fraction")
    data, eval_data = _sample_files(args)
    values = parse_input_values(getattr(args, "input_value", None))
    cores = None
    if getattr(args, "cores", None) is not None:
        cores = parse_int("--cores", args.cores, minimum=1, maximum=max_cores())
    path = Path(args.project).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        raise UsageError(f"{path} is a model file: prune needs a project directory "
                         f"(create one with 'sparsify-tui new {path}')")
    save_as = getattr(args, "save_as", None)
    if save_as is not None and not str(save_as).strip():
        raise UsageError("--save-as needs a name for the optimization")
    project = Project.open(path, readonly=save_as is None)
    try:
        out = Path(args.output).expanduser()
        _refuse_project_file(project, out)
        progress = Progress(f"prune channels ({method})")

        def on_progress(ev: dict) -> None:
            if ev.get("event") == "progress":
                progress.update(ev.get("done", 0), ev.get("total", 1) or 1, str(ev.get("label", "")))

        doc = prune_channels_project(project, out, method=method, flops_reduction=flops, fraction=frac,
                                     round_to=round_to, data=data, samples=samples, eval_data=eval_data,
                                     validate=bool(args.validate), engine=engine, precision=precision,
                                     iterations=iterations, cores=cores, input_values=values or None,
                                     on_progress=on_progress, save_as=save_as,
                                     optimization=_channel_optimization(args, project))
        progress.done()
        if args.json:
            emit_json(doc)
            return 0
        fr = doc.get("flops_reduction")
        print(f"wrote {out}: {doc['removed_channels']} channels removed from {doc['pruned_groups']} of "
              f"{doc['prunable_groups']} prunable groups ({method}, round to {doc['round_to']}, "
              f"{doc['round_to_reason']}); FLOPs {'n/a' if fr is None else f'-{fr:.1%}'}")
        if doc.get("saved_as"):
            print(f"saved the plan as optimization {doc['saved_as']['name']!r} "
                  f"({doc['saved_as']['groups']} channel groups)")
        if args.validate:
            sp = doc.get("measured_speedup")
            oc_, l2 = doc.get("output_change"), doc.get("l2_output_change")
            rows = [["Engine", _engine_label(doc)],
                    ["Dense", f"{doc['dense_ms']:.3f} ms"], ["Pruned", f"{doc['pruned_ms']:.3f} ms"],
                    ["Measured speedup", "n/a" if sp is None else f"{sp:.2f}x"],
                    ["Output change", "n/a" if oc_ is None else f"{oc_:.4g}  ({method}; "
                                                             f"{doc.get('evaluation_samples')} evaluation samples)"],
                    ["l2 at same plan", "n/a" if l2 is None else f"{l2:.4g}"],
                    ["Calibration samples", str(doc.get("calibration_samples"))]]
            w = max(len(k) for k, _ in rows)
            for k, v in rows:
                print(f"{k.ljust(w)}  {v}")
        for n in doc.get("notes") or []:
            print(f"note: {n}", file=sys.stderr)
        return 0
    finally:
        project.close()


def _engine_label(r: dict) -> str:
    """``onnxruntime 1.18.1``; with a precision other than fp32 (or OpenVINO's): ``openvino 2026.4.1 bf16``."""
    label = f"{r['engine']} {r.get('engine_version') or ''}".strip()
    from sparsify_tui.engines.registry import engine_names, get_engine

    hinted = r.get("engine") in engine_names() and get_engine(r["engine"]).precision_hint
    if hinted or (r.get("precision") or "fp32") != "fp32":
        label += f" {r.get('precision') or 'fp32'}"
    return label


def run_with_fallback(job: dict, **kw) -> dict:
    """run_job; with ``--engine auto``, a DeepSparse crash (an assertion, a segfault: the worker dies)
    runs the job again on ONNX Runtime, and the result's engine_reason says why."""
    from sparsify_tui.engines.runner import run_job
    from sparsify_tui.errors import CancelledError, EngineError

    try:
        return run_job(job, **kw)
    except CancelledError:
        raise
    except EngineError as exc:
        if job.get("engine", "auto") != "auto" or type(exc) is not EngineError:
            raise
        from sparsify_tui.engines.registry import REFERENCE, resolve_auto

        res = run_job(dict(job, engine=REFERENCE), **kw)
        res["engine_reason"] = f"{resolve_auto('auto')[0]} crashed ({exc.message}); fell back to {REFERENCE}"
        return res


def _project_model_shapes(p: Path) -> tuple[Path, dict] | None:
    """(model path, stored input shapes) when ``p`` is a project directory or a project's model file."""
    from sparsify_tui.project import Project, is_project_dir

    d = p if p.is_dir() else p.parent
    if not is_project_dir(d):
        return None
    project = Project.open(d, readonly=True)
    try:
        model = project.model_path
        if not p.is_dir():
            try:
                if p.resolve() != model.resolve():
                    return None
            except OSError:
                return None
        return model, {k: list(v) for k, v in (project.input_shapes or {}).items()}
    finally:
        project.close()


def run_benchmark(args: argparse.Namespace) -> int:
    from sparsify_tui.analysis import parse_input_shapes
    from sparsify_tui.engines.inputs import make_inputs
    from sparsify_tui.settings import usable_cores as default_cores
    from sparsify_tui.profiles.perf import validate_engine, validate_precision

    engine = validate_engine(args.engine)
    precision = validate_precision(engine, getattr(args, "precision", None))
    batches = parse_int_list("--batch-size", args.batch_size, minimum=1)
    if args.cores is None:
        cores_list = [default_cores()]
    else:
        cores_list = parse_int_list("--cores", args.cores, minimum=1)
        for c in cores_list:
            if c > max_cores():
                raise UsageError(f"--cores must be at most {max_cores()}, got {c}")
    iterations = parse_int("--iterations", args.iterations, minimum=1)
    warmup = parse_int("--warmup", args.warmup, minimum=0)
    repeats = parse_int("--repeats", args.repeats, minimum=1)
    from sparsify_tui.engines.inputs import parse_input_values

    shapes = parse_input_shapes(args.input_shape or [])
    values = parse_input_values(getattr(args, "input_value", None))
    wait_idle = parse_float("--wait-idle", args.wait_idle, minimum=0.0) if getattr(args, "wait_idle", None) else 0.0
    models = []
    model_shapes: dict[Path, dict] = {}
    for m in args.models:
        p = Path(m).expanduser()
        # a project directory, or a project's own model file: the input shapes stored in the project
        # are used (--input-shape still overrides them)
        stored = _project_model_shapes(p)
        if stored is not None:
            p, pshapes = stored
        else:
            pshapes = {}
        if not p.is_file():
            raise ModelError(f"{p}: no such file")
        mshapes = {**pshapes, **shapes}
        # fail fast on a bad model / bad shapes before any child starts
        with dynamic_shape_hint(p, mshapes):
            make_inputs(p, batches[0], dict(mshapes), values=values)
        models.append(p)
        model_shapes[p] = mshapes
    progress = Progress("benchmark")
    results = []
    total = len(models) * len(batches) * len(cores_list)
    done = 0
    for p in models:
        for b in batches:
            for c in cores_list:
                label = f"{p.name} batch {b} cores {c}"
                progress.update(done, total, label)
                job = {"kind": "benchmark", "model_path": str(p), "engine": engine, "batch_size": b,
                       "iterations": iterations, "warmup": warmup, "repeats": repeats,
                       "input_shapes": {k: list(v) for k, v in model_shapes[p].items()}, "input_values": values,
                       "wait_idle_s": wait_idle if done == 0 else 0.0}
                if precision:
                    job["precision"] = precision
                res = run_with_fallback(job, cores=c, timeout_s=600)
                for w in res.get("quality", {}).get("warnings", []):
                    progress.note(f"warning: {p.name}: {w}")
                results.append(res)
                done += 1
                progress.update(done, total, f"{label}: {res['median_ms']:.2f} ms")
    progress.done()
    if args.json:
        emit_json({"results": results})
        return 0
    first = {(r["batch_size"], r["cores"]): r["median_ms"] for r in results[: len(batches) * len(cores_list)]}
    rows = []
    for r in results:
        ref = first.get((r["batch_size"], r["cores"]))
        rows.append([
            r["model_name"], _engine_label(r), r["batch_size"], r["cores"],
            f"{r['median_ms']:.3f}", f"{r['min_ms']:.3f}", f"{r['max_ms']:.3f}",
            f"{r['items_per_second']:.1f}" if r.get("items_per_second") else "",
            f"{ref / r['median_ms']:.2f}x" if ref and r["median_ms"] > 0 and len(models) > 1 else "",
        ])
    from sparsify_tui.commands.info import fit_columns, terminal_width

    headers = ["Model", "Engine", "Batch", "Cores", "Median ms", "Min ms", "Max ms", "Items/s", "Speedup vs first"]
    if len(models) < 2:  # nothing to compare against: no empty column
        headers, rows = headers[:-1], [r[:-1] for r in rows]
    headers, rows, dropped = fit_columns(headers, rows, terminal_width(), drop_order=("Min ms", "Max ms"),
                                         shrink="Model", min_width=20)
    right_names = {"Batch", "Cores", "Median ms", "Min ms", "Max ms", "Items/s", "Speedup vs first"}
    print_table(headers, rows, right=[i for i, h in enumerate(headers) if h in right_names])
    if dropped:
        print(f"({', '.join(dropped)} in --json)")
    reasons = {(r["model_name"], r["engine_reason"]) for r in results}
    for name, reason in sorted(reasons):
        print(f"{name}: {reason}")
    loads = [x for r in results for x in (r.get("load_average") or []) if x is not None]
    usable = max_cores()
    if loads and max(loads) > usable + 0.5:
        print(f"Note: the machine was busy (load average up to {max(loads):.1f} on {usable} usable cores); "
              "other processes competed for the cores, so these times are less reliable")
    return 0
