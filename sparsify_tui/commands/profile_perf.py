"""``sparsify-tui profile perf TARGET``: per-layer timings and performance sensitivity."""

from __future__ import annotations

from typing import TYPE_CHECKING

import argparse
import json
import sys
from pathlib import Path

from sparsify_tui.commands.common import Progress, dynamic_shape_hint, ellipsize, emit_json, next_steps, print_table, resolve_target
from sparsify_tui.settings import parse_cores, parse_float, parse_int, parse_levels
from sparsify_tui.actions import profiles as profiles_action
from sparsify_tui.errors import ProfileError, UsageError
from sparsify_tui.settings import PERF_LEVELS, level_key

if TYPE_CHECKING:
    from sparsify_tui.project import Project


def print_profile(doc: dict, *, file=None, max_rows: int | None = None) -> None:
    """The human view of a perf document."""
    file = file or sys.stdout
    m = doc.get("machine") or {}
    isa = ", ".join(m.get("isa") or []) or "unknown"
    prec = f" {doc['precision']}" if doc.get("precision") and doc["precision"] != "fp32" else ""
    print(f"Engine:           {doc['engine']} {doc.get('engine_version') or ''}".rstrip() + prec
          + f" ({doc.get('engine_reason', '')})", file=file)
    print(f"Batch size:       {doc['batch_size']}    cores: {doc.get('cores')}", file=file)
    print(f"CPU:              {m.get('cpu_model', '?')}    ISA: {isa}", file=file)
    spread = doc.get("spread_ms") or [doc["baseline_ms"], doc["baseline_ms"]]
    print(f"Baseline MS:      {doc['baseline_ms']:.3f} ms per batch (min {spread[0]:.3f}, max {spread[1]:.3f} "
          f"over {len(doc.get('repeat_ms') or [0])} repeats of {doc.get('iterations')} iterations)", file=file)
    ips = doc.get("items_per_second")
    print(f"Items per Second: {ips:.1f}" if ips else "Items per Second: unknown", file=file)
    if doc.get("approximated"):
        print("Note: the times at sparsity levels above 0 are APPROXIMATED from FLOPs, not measured.", file=file)
    from sparsify_tui.commands.info import _wrap, terminal_width

    for note in doc.get("notes") or []:
        print(_wrap("Note: ", str(note), terminal_width() if file is sys.stdout else 10_000), file=file)
    if doc.get("incomplete"):
        print(f"INCOMPLETE: {doc.get('error')}", file=file)
    print(file=file)
    k9 = level_key(0.9)
    has9 = any(k9 in (r.get("ms_by_level") or {}) for r in doc["layers"])
    has_kernel = any(r.get("kernel") for r in doc["layers"])
    headers = ["Depth", "Layer", "Op", "ms", "Share"] + (["ms @0.9"] if has9 else []) + ["Group"] + (
        ["Kernel"] if has_kernel else [])
    rows = []
    hidden = 0
    for r in doc["layers"]:
        if r.get("constant_folded") and not r.get("baseline_ms"):
            hidden += 1
            continue
        name = r["id"] if r.get("engine_internal") else (r.get("name") or r["id"])
        if name != r["id"] and not r.get("engine_internal"):
            name = f"{r['id']} ({r['name']})" if r.get("name") else r["id"]
        group = r.get("group") or []
        row = [
            "" if r.get("depth") is None else r["depth"],
            ellipsize(name, 36),
            "engine-internal" if r.get("engine_internal") else r.get("op_type", ""),
            f"{r['baseline_ms']:.3f}",
            f"{100 * r.get('share', 0):.1f}%",
        ]
        if has9:
            v = (r.get("ms_by_level") or {}).get(k9)
            row.append("" if v is None else f"{v:.3f}")
        row.append(f"{r.get('group_name') or ''} ({len(group)})" if len(group) > 1 else "")
        if has_kernel:
            row.append(r.get("kernel") or "")
        rows.append(row)
    if max_rows is not None and len(rows) > max_rows:
        rows = rows[:max_rows]
    from sparsify_tui.commands.info import fit_columns, terminal_width

    width = terminal_width() if file is sys.stdout else 10_000
    headers, rows, dropped = fit_columns(headers, rows, width, drop_order=("Group", "Kernel"), shrink="Layer", min_width=24)
    print("Layer Timings (execution order)" + (f"; {', '.join(dropped)} column in --json" if dropped else ""),
          file=file)
    right_names = {"Depth", "ms", "Share", "ms @0.9"}
    print_table(headers, rows, right=[i for i, h in enumerate(headers) if h in right_names], file=file)
    if hidden:
        print(f"({hidden} constant-folded layers with 0 ms not shown)", file=file)
    print(file=file)
    print("Model time by sparsity level" + (" (approximated)" if doc.get("approximated") else ""), file=file)
    base = doc["baseline_ms"]
    lrows = []
    for k, ms in doc["model_ms_by_level"].items():
        lrows.append([k, f"{ms:.3f}", f"{base / ms:.2f}x" if ms > 0 else ""])
    print_table(["Sparsity", "ms", "Speedup"], lrows, right=(1, 2), file=file)


def run(args: argparse.Namespace) -> int:
    from sparsify_tui.profiles.perf import validate_engine, validate_perf_document, validate_precision

    if getattr(args, "import_file", None):
        return _run_import(args)
    structure = getattr(args, "structure", None) or "unstructured"
    if structure == "channels":
        return _run_channels(args)
    if structure != "unstructured":
        raise UsageError(f"--structure must be unstructured or channels, got {structure!r}")
    for flag in ("fractions", "combinations"):
        if getattr(args, flag, None) is not None:
            raise UsageError(f"--{flag.replace('_', '-')} needs --structure channels")
    engine = validate_engine(args.engine)
    precision = validate_precision(engine, getattr(args, "precision", None))
    batch = parse_int("--batch-size", args.batch_size, minimum=1)
    cores = parse_cores("--cores", args.cores)
    levels = parse_levels("--levels", args.levels, PERF_LEVELS)
    iterations = parse_int("--iterations", args.iterations, minimum=1)
    warmup = parse_int("--warmup", args.warmup, minimum=0)
    repeats = parse_int("--repeats", getattr(args, "repeats", 3), minimum=1)
    timeout = parse_float("--timeout", getattr(args, "timeout", 600), minimum=1.0)
    if args.data is not None and not Path(args.data).expanduser().exists():
        raise UsageError(f"{args.data}: no such data file or directory")
    from sparsify_tui.engines.inputs import parse_input_values
    from sparsify_tui.engines.registry import preferred_engine

    values = parse_input_values(getattr(args, "input_value", None))
    wait_idle = parse_float("--wait-idle", args.wait_idle, minimum=0.0) if getattr(args, "wait_idle", None) else 0.0
    target = resolve_target(args.target, args.input_shape)
    project = target.project
    args._project_dir = str(project.dir) if project is not None else None
    settings = profiles_action.perf_settings(
        engine=engine, batch_size=batch, cores=cores, levels=levels, iterations=iterations, warmup=warmup,
        repeats=repeats, input_shapes=target.input_shapes, data=args.data, precision=precision,
        input_values=values)
    progress = Progress("profile perf")

    def on_progress(ev: dict) -> None:
        if ev.get("event") == "progress":
            progress.update(ev.get("done", 0), ev.get("total", 1), ev.get("label", ""))

    try:
        with dynamic_shape_hint(target.model_path, target.input_shapes):
            if project is None:
                doc = profiles_action.measure(target.model_path, "perf", settings, on_progress=on_progress,
                                              timeout_s=timeout, wait_idle_s=wait_idle)
            else:
                res = profiles_action.measure_or_reuse(project, "perf", settings, force=args.force, name=args.name,
                                                       on_progress=on_progress, timeout_s=timeout,
                                                       wait_idle_s=wait_idle)
                doc = res.doc
                if res.reused:
                    validate_perf_document(doc, f"cached profile {res.entry.id}")
                    progress.note(f"reused cached profile {res.entry.id} (measure again with --force)")
                    _output(args, doc)
                    return 0
        progress.done()
        for w in (doc.get("quality") or {}).get("warnings") or []:
            progress.note(f"warning: {w}")
        if engine == "auto" and doc.get("engine") != preferred_engine():
            progress.note(f"note: using {doc.get('engine')} instead of {preferred_engine()}: "
                          f"{doc.get('engine_reason')}")
        if doc.get("incomplete"):
            progress.note(f"warning: the profile is incomplete: {doc.get('error')}")
        if project is not None:
            progress.note(f"stored profile {doc['profile_id']} in {project.dir}")
        _output(args, doc)
        return 0
    finally:
        if project is not None:
            project.close()


def _output(args: argparse.Namespace, doc: dict) -> None:
    if args.json:
        emit_json(doc)
    else:
        print_profile(doc)
        project_dir = getattr(args, "_project_dir", None)
        if project_dir:
            next_steps(f"sparsify-tui profile loss {project_dir}   (loss sensitivity)",
                       f"sparsify-tui optimize {project_dir}      (per-layer sparsities and estimates)")
        elif getattr(args, "target", None):
            next_steps(f"sparsify-tui new {args.target}   (a project keeps profiles and plans a sparsification)")


def _run_import(args: argparse.Namespace) -> int:
    from sparsify_tui.profiles.perf import validate_perf_document

    src = Path(args.import_file).expanduser()
    try:
        doc = json.loads(src.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{src}: no such profile file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ProfileError(f"{src} is not a readable JSON profile ({exc})") from None
    validate_perf_document(doc, str(src))
    target = resolve_target(args.target, args.input_shape)
    if target.project is None:
        raise UsageError("--import needs a project directory as TARGET (the profile is stored in it)")
    project = target.project
    args._project_dir = str(project.dir)
    try:
        project.require_writable()
        known = {layer.id for layer in _analyse_ids(project)}
        ids = {r["id"] for r in doc["layers"] if not r.get("engine_internal")}
        if known and ids and not (ids & known):
            raise ProfileError(f"{src} measures layers that are not in the project's model (no layer id matches)")
        settings = {"engine": doc.get("engine"), "batch_size": doc.get("batch_size"), "cores": doc.get("cores"),
                    "levels": doc.get("levels"), "iterations": doc.get("iterations"), "warmup": doc.get("warmup"),
                    "repeats": doc.get("repeats"), "imported_from": str(src.resolve())}
        entry = project.add_profile("perf", args.name or f"imported {src.name}", settings, doc.get("engine", ""),
                                    doc.get("engine_version") or "", doc.get("machine") or {}, doc)
        doc["profile_id"] = entry.id
        print(f"imported {src} as profile {entry.id}", file=sys.stderr)
        _output(args, doc)
        return 0
    finally:
        project.close()


def _analyse_ids(project: "Project") -> list:
    try:
        from sparsify_tui.engines.modelinfo import load_model_info

        return load_model_info(str(project.model_path), project.input_shapes).layers
    except Exception:  # noqa: BLE001 - the check is a courtesy
        return []


def print_channel_profile(doc: dict, *, file=None) -> None:
    """The human view of a channel perf document: one row per group, its saving at each fraction."""
    file = file or sys.stdout
    m = doc.get("machine") or {}
    prec = f" {doc['precision']}" if doc.get("precision") and doc["precision"] != "fp32" else ""
    print(f"Engine:      {doc['engine']} {doc.get('engine_version') or ''}".rstrip() + prec
          + f" ({doc.get('engine_reason', '')})", file=file)
    print(f"Batch size:  {doc['batch_size']}    cores: {doc.get('cores')}    CPU: {m.get('cpu_model', '?')}",
          file=file)
    print(f"Dense:       {doc['dense_ms']:.3f} ms per batch (median of {len(doc.get('dense_block_ms') or [])} "
          f"blocks of {doc.get('iterations')} runs)", file=file)
    from sparsify_tui.commands.info import _wrap, terminal_width

    for note in doc.get("notes") or []:
        print(_wrap("Note: ", str(note), terminal_width() if file is sys.stdout else 10_000), file=file)
    print(file=file)
    fractions = doc.get("fractions") or []
    by_group: dict[str, dict[float, dict]] = {}
    for r in doc.get("rows") or []:
        by_group.setdefault(r["group"], {})[float(r["fraction"])] = r
    producers = {g["id"]: g.get("producers") or [] for g in doc.get("groups") or []}
    headers = ["Group", "Channels", "Layers"] + [f"saved ms @{f:g}" for f in fractions]
    rows = []
    for gid, per in by_group.items():
        first = next(iter(per.values()))
        cells = []
        for f in fractions:
            r = per.get(float(f))
            cells.append("" if r is None else f"{r['saved_ms']:.3f}")
        rows.append([ellipsize(gid, 32), str(first["channels"]), ellipsize(", ".join(producers.get(gid, [])), 40)]
                    + cells)
    print("Channel groups (time saved with a fraction of the group's channels removed, fitted)", file=file)
    print_table(headers, rows, right=[1] + [3 + i for i in range(len(fractions))], file=file)
    from sparsify_tui.optim.channel_estimate import estimate_channel_speedup, flops_reduction

    print(file=file)
    print("Estimated speedup with the same fraction removed from every group", file=file)
    erows = []
    for f in fractions:
        plan = {gid: float(f) for gid in by_group}
        erows.append([f"{f:g}", f"{100 * flops_reduction(doc, plan):.0f}%", f"{estimate_channel_speedup(doc, plan):.2f}x"])
    print_table(["Fraction", "FLOPs removed", "Speedup"], erows, right=(1, 2), file=file)


def _run_channels(args: argparse.Namespace) -> int:
    from sparsify_tui.profiles.perf import validate_engine
    from sparsify_tui.profiles.perf_channels import PRECISIONS

    engine = validate_engine(args.engine)
    precision = getattr(args, "precision", None) or "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision with --structure channels must be one of {', '.join(PRECISIONS)}, "
                         f"got {precision!r}")
    if getattr(args, "levels", None) is not None:
        raise UsageError("--levels is for unstructured profiles; with --structure channels use --fractions")
    fractions = None
    if getattr(args, "fractions", None) is not None:
        try:
            fractions = [float(x) for x in str(args.fractions).split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--fractions must be numbers separated by commas, e.g. 0.25,0.5, got "
                             f"{args.fractions!r}") from None
    combinations = (parse_int("--combinations", args.combinations, minimum=1)
                    if args.combinations is not None else None)
    batch = parse_int("--batch-size", args.batch_size, minimum=1)
    cores = parse_cores("--cores", args.cores)
    repeats = parse_int("--repeats", getattr(args, "repeats", 3), minimum=1)
    timeout = parse_float("--timeout", getattr(args, "timeout", 600), minimum=1.0)
    if args.data is not None and not Path(args.data).expanduser().exists():
        raise UsageError(f"{args.data}: no such data file or directory")
    from sparsify_tui.profiles.perf_channels import check_fractions

    if fractions is not None:
        check_fractions(fractions)  # before opening a project
    target = resolve_target(args.target, args.input_shape)
    project = target.project
    settings = profiles_action.channel_perf_settings(
        engine=engine, precision=precision, batch_size=batch, cores=cores, fractions=fractions,
        combinations=combinations, repeats=repeats, input_shapes=target.input_shapes, data=args.data)
    progress = Progress("profile perf channels")

    def on_progress(ev: dict) -> None:
        if ev.get("event") == "progress":
            progress.update(ev.get("done", 0), ev.get("total", 1), ev.get("label", ""))

    try:
        if project is None:
            doc = profiles_action.measure(target.model_path, "perf_channels", settings, on_progress=on_progress,
                                          timeout_s=timeout)
            progress.done()
        else:
            res = profiles_action.measure_or_reuse(project, "perf_channels", settings, force=args.force,
                                                   name=args.name, on_progress=on_progress, timeout_s=timeout)
            doc = res.doc
            progress.done()
            progress.note(f"reused cached profile {res.entry.id} (measure again with --force)" if res.reused
                          else f"stored profile {doc['profile_id']} in {project.dir}")
        if args.json:
            emit_json(doc)
        else:
            print_channel_profile(doc)
        return 0
    finally:
        if project is not None:
            project.close()
