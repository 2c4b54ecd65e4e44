"""``sparsify-tui profile loss TARGET`` and ``profile quant TARGET``.

TARGET is a project directory (the profile is stored in it and reused on the
next call with the same settings unless ``--force``) or an ONNX file (the
profile is printed). ``--json`` prints the profile document; progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from sparsify_tui.commands.common import Progress, dynamic_shape_hint, emit_json, next_steps, print_table, resolve_target, shorten_names
from sparsify_tui.settings import parse_float, parse_int, parse_levels
from sparsify_tui.actions import profiles as profiles_action
from sparsify_tui.errors import UsageError
from sparsify_tui.settings import LOSS_APPROX_LEVELS, LOSS_ONE_SHOT_LEVELS, level_key


NO_LAYERS = "The model has no prunable layers (Conv, ConvTranspose, Gemm or MatMul with a constant weight)."


def _check_data(data: str | None) -> None:
    if data is not None and not Path(data).expanduser().exists():
        raise UsageError(f"{data}: no such data file or directory")


def _on_progress(progress: Progress):
    def cb(ev: dict) -> None:
        if ev.get("event") == "progress":
            progress.update(ev.get("done", 0), ev.get("total", 1), ev.get("label", ""))
        elif ev.get("event") == "log" and ev.get("message"):
            progress.note(str(ev["message"]))

    return cb


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(v)


def _names(doc: dict, file) -> tuple[str, list[str]]:
    """Layer ids for the table: a shared path prefix said once above it, long ids cut with an ellipsis."""
    prefix, names = shorten_names([r["id"] for r in doc.get("layers") or []], 40)
    if prefix:
        print(f"(layer ids below start with {prefix})", file=file)
    return prefix, names


# ---------------------------------------------------------------- loss
def _notes_and_layers(doc: dict, file) -> bool:
    """Print the profile's notes and a blank line; False (after saying so) when it has no layers."""
    for note in doc.get("notes") or []:
        print(f"Note: {note}", file=file)
    print(file=file)
    if not doc.get("layers"):
        print(NO_LAYERS, file=file)
        return False
    return True


def print_loss(doc: dict, file=None) -> None:
    file = file or sys.stdout
    method = doc.get("method")
    print(f"Loss profile:        {method} ({'weight magnitude, no data' if method == 'approx' else 'measured on ' + str(doc.get('samples')) + ' sample(s)'})", file=file)
    print(f"Evaluation sparsity: {doc.get('eval_sparsity'):g}    levels: {len(doc.get('levels') or [])}", file=file)
    print(f"Average Sensitivity: {_fmt(doc.get('average_sensitivity'))}", file=file)
    if method == "one-shot":
        rc = doc.get("rank_correlation")
        print(f"Rank correlation with the approximation (Spearman): {_fmt(rc, 3)}", file=file)
        if doc.get("execution"):
            print(f"Execution: {doc['execution']} ({doc.get('runs')} runs, {doc.get('elapsed_s')} s)", file=file)
        _print_metrics(doc, file)
    if not _notes_and_layers(doc, file):
        return
    k = level_key(doc.get("eval_sparsity", 0.9))
    rows = []
    prefix, names = _names(doc, file)
    for name, r in zip(names, doc.get("layers") or []):
        rows.append([r.get("rank") if r.get("rank") is not None else "-", name, r.get("op_type", ""),
                     _fmt(r.get("sensitivity")), r.get("skipped", "")])
    headers = ["Rank", "Layer", "Op", f"Sensitivity @{k}", "Note"]
    if not any(r[4] for r in rows):  # no skipped layer: no empty column
        headers, rows = headers[:4], [r[:4] for r in rows]
    print_table(headers, rows, right=(0, 3), file=file)


def print_channel_loss(doc: dict, file=None) -> None:
    """The human view of a channel loss document: one row per group, its output change at each fraction."""
    file = file or sys.stdout
    print(f"Channel loss profile: one-shot, measured on {doc.get('samples')} sample(s), l2 order, "
          f"{doc.get('elapsed_s')} s", file=file)
    _print_metrics(doc, file)
    for note in doc.get("notes") or []:
        print(f"Note: {note}", file=file)
    print(file=file)
    fr = doc.get("fractions") or []
    rows = []
    for r in doc.get("layers") or []:
        vals = sorted((float(k), v) for k, v in (r.get("sensitivity_by_level") or {}).items() if float(k) > 0)
        rows.append([r.get("rank") or "-", r["id"][:32], str(r.get("channels")),
                     ", ".join(r.get("layers") or [])[:40]] + [_fmt(v) for _, v in vals[:len(fr)]]
                    + ["-"] * (len(fr) - len(vals[:len(fr)])))
    print_table(["Rank", "Group", "Channels", "Layers"] + [f"@{f:g}" for f in fr], rows,
                right=tuple(range(4, 4 + len(fr))) + (0, 2), file=file)
    un = doc.get("unprunable") or []
    if un:
        print(f"\n{len(un)} group(s) cannot be pruned:", file=file)
        for g in un[:20]:
            print(f"  {g['id']}: {'; '.join(g.get('reasons') or [])}", file=file)
        if len(un) > 20:
            print(f"  ... {len(un) - 20} more (--json lists all)", file=file)


def _run_channel_loss(args: argparse.Namespace) -> int:
    """``profile loss TARGET --structure channels [--fractions F,...] [--samples N] [--data D]``."""
    from sparsify_tui.profiles.perf_channels import check_fractions

    if str(args.method or "approx").strip().lower() not in ("approx", "one-shot", "oneshot", "one_shot"):
        raise UsageError(f"--method must be approx or one-shot, got {args.method!r}")
    if args.levels is not None:
        raise UsageError("--levels is for unstructured profiles; with --structure channels use --fractions")
    if (getattr(args, "prune_method", None) or "magnitude") != "magnitude":
        raise UsageError("--prune-method is for unstructured profiles; channels are removed in l2 order")
    samples = parse_int("--samples", args.samples, minimum=1, maximum=10000)
    fractions = None
    if args.fractions is not None:
        try:
            fractions = [float(x) for x in str(args.fractions).split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--fractions must be numbers separated by commas, e.g. 0.25,0.5, got "
                             f"{args.fractions!r}") from None
        check_fractions(fractions)
    _check_data(args.data)
    target = resolve_target(args.target, args.input_shape)
    settings = profiles_action.channel_loss_settings(fractions=fractions, samples=samples, data=args.data,
                                                     input_shapes=target.input_shapes)
    return _measure_or_reuse(args, target, "loss_channels", settings, Progress("profile loss channels"),
                             print_channel_loss)


def run_loss(args: argparse.Namespace) -> int:
    from sparsify_tui.profiles.loss import METHODS

    structure = str(getattr(args, "structure", None) or "unstructured").strip().lower()
    if structure not in ("unstructured", "channels"):
        raise UsageError(f"--structure must be unstructured or channels, got {args.structure!r}")
    if structure == "channels":
        return _run_channel_loss(args)
    if getattr(args, "fractions", None) is not None:
        raise UsageError("--fractions needs --structure channels")
    method = str(args.method or "approx").strip().lower()
    if method == "oneshot" or method == "one_shot":
        method = "one-shot"
    if method not in METHODS:
        raise UsageError(f"--method must be approx or one-shot, got {args.method!r}")
    samples = parse_int("--samples", args.samples, minimum=1, maximum=10000)
    eval_s = parse_float("--eval-sparsity", getattr(args, "eval_sparsity", 0.9), minimum=0.0, maximum=1.0,
                         max_exclusive=True)
    levels = parse_levels("--levels", args.levels, LOSS_APPROX_LEVELS if method == "approx" else LOSS_ONE_SHOT_LEVELS)
    _check_data(args.data)
    if method == "approx" and args.data is not None:
        raise UsageError("--data is only used by --method one-shot (the approximation needs no data)")
    from sparsify_tui.optim.calibrated import check_method

    prune_method = check_method(getattr(args, "prune_method", None) or "magnitude")
    if prune_method != "magnitude" and method != "one-shot":
        raise UsageError("--prune-method is only used by --method one-shot")
    target = resolve_target(args.target, args.input_shape)
    settings = profiles_action.loss_settings(method=method, levels=levels, eval_sparsity=eval_s, samples=samples,
                                             data=args.data, input_shapes=target.input_shapes,
                                             prune_method=prune_method)
    return _measure_or_reuse(args, target, "loss", settings, Progress(f"profile loss ({method})"), print_loss)


def _measure_or_reuse(args: argparse.Namespace, target: Any, kind: str, settings: dict, progress: Progress,
                      printer: Any) -> int:
    """Print the project's stored profile of these settings, or measure (store) and print a new one."""
    project = target.project
    args._project_dir = str(project.dir) if project is not None else None
    try:
        with dynamic_shape_hint(target.model_path, target.input_shapes):
            if project is None:
                doc = profiles_action.measure(target.model_path, kind, settings, on_progress=_on_progress(progress))
            else:
                res = profiles_action.measure_or_reuse(project, kind, settings, force=args.force, name=args.name,
                                                       on_progress=_on_progress(progress))
                doc = res.doc
                if res.reused:
                    progress.note(f"reused cached profile {res.entry.id} (measure again with --force)")
                    _out(args, doc, printer)
                    return 0
        progress.done()
        if project is not None:
            progress.note(f"stored profile {doc['profile_id']} in {project.dir}")
        _out(args, doc, printer)
        return 0
    finally:
        if project is not None:
            project.close()


def _print_metrics(doc: dict, file) -> None:
    """The metric each output's change is measured with (sparsify_tui.metrics), when the document says."""
    from sparsify_tui.metrics import describe_metrics

    line = describe_metrics(doc.get("output_metrics"))
    if line:
        print(textwrap.fill(line, 80, initial_indent="Output change:       ", subsequent_indent=" " * 21),
              file=file)


# ---------------------------------------------------------------- quant
def print_quant(doc: dict, file=None) -> None:
    file = file or sys.stdout
    m = doc.get("model") or {}
    print(f"Quantization profile (INT8): {doc.get('samples')} sample(s)", file=file)
    if m.get("error"):
        print(f"Whole model: could not be quantized: {m['error']}", file=file)
    else:
        from sparsify_tui.metrics import format_change

        change, meaning = format_change(m, short=True)
        print(f"Whole model: ONNX Runtime static quantization ({m.get('format', 'QDQ')}), "
              f"output change {change}", file=file)
        print(f"             fp32 {_fmt(m.get('fp32_ms'), 2)} ms -> int8 {_fmt(m.get('int8_ms'), 2)} ms, "
              f"speedup {_fmt(m.get('speedup'), 2)}x", file=file)
        if meaning:
            print(textwrap.fill(meaning, 80, initial_indent=" " * 13, subsequent_indent=" " * 13), file=file)
    if doc.get("average_sensitivity") is not None:
        print(f"Average Sensitivity: {_fmt(doc.get('average_sensitivity'))}", file=file)
    _print_metrics(doc, file)
    if not _notes_and_layers(doc, file):
        return
    rows = []
    prefix, names = _names(doc, file)
    for name, r in zip(names, doc.get("layers") or []):
        what = r.get("skipped") or ("weights + activation" if r.get("activation_quantized") else "weights only")
        rows.append([r.get("rank") if r.get("rank") is not None else "-", name, r.get("op_type", ""),
                     _fmt(r.get("sensitivity")), what])
    print_table(["Rank", "Layer", "Op", "Sensitivity", "Quantized"], rows, right=(0, 3), file=file)


def run_quant(args: argparse.Namespace) -> int:

    samples = parse_int("--samples", args.samples, minimum=1, maximum=10000)
    _check_data(args.data)
    target = resolve_target(args.target, args.input_shape)
    settings = profiles_action.quant_settings(samples=samples, data=args.data, input_shapes=target.input_shapes)
    # quantized speed depends on the machine (VNNI, AMX): a stored profile is reused only on the same machine
    return _measure_or_reuse(args, target, "quant", settings, Progress("profile quant"), print_quant)


def _out(args: argparse.Namespace, doc: dict, printer) -> None:
    if args.json:
        emit_json(doc)
    else:
        printer(doc)
        project_dir = getattr(args, "_project_dir", None)
        if project_dir and printer is print_quant:
            next_steps(f"sparsify-tui optimize {project_dir} --quantize   (plan pruning + INT8)")
        elif project_dir and printer is print_channel_loss:
            next_steps(f"sparsify-tui optimize {project_dir} --structure channels   (per-group fractions and estimates)")
        elif project_dir:
            next_steps(f"sparsify-tui optimize {project_dir}   (per-layer sparsities and estimates)")
        elif getattr(args, "target", None):
            next_steps(f"sparsify-tui new {args.target}   (a project keeps profiles and plans a sparsification)")
