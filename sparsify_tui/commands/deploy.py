"""``sparsify-tui deploy PROJECT_DIR``: the deployment search (engines x precisions x sparsity)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparsify_tui.commands.common import Progress, emit_json, print_table
from sparsify_tui.settings import parse_int
from sparsify_tui.settings import usable_cores as max_cores
from sparsify_tui.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("deploy", help="fastest way to run the model here: engines x precisions x sparsity")
    p.add_argument("project", help="project directory")
    from sparsify_tui.engines.registry import engine_names

    p.add_argument("--engines", default=None, help=f"{','.join(engine_names())} (default: all)")
    p.add_argument("--precisions", default=None, help="fp32,bf16,int8 (default: all)")
    p.add_argument("--optimization", action="append", default=None, metavar="NAME",
                   help="an optimization to deploy one-shot pruned (repeatable; default: all of the project's)")
    p.add_argument("--dense-only", action="store_true", help="no optimization, dense rows only")
    p.add_argument("--prune-method", default="magnitude", choices=["magnitude", "wanda", "sparsegpt"],
                   help="how the optimizations are pruned one-shot: magnitude (default), or wanda / sparsegpt "
                        "calibrated on the calibration samples so the pruned model keeps its outputs")
    p.add_argument("--channel-method", default=None, metavar="l2|reconstruct",
                   help="how a channel plan (an optimization that removes whole channels) is pruned: reconstruct "
                        "(the default: each layer reading removed channels refit on the calibration samples) or l2")
    p.add_argument("--batch-size", default="1", help="batch size (default 1)")
    p.add_argument("--cores", default=None, help="cores to use (default: all this process may use)")
    p.add_argument("--max-output-change", default=None, metavar="X|none",
                   help="budget: the best row is the fastest whose output change is at most X; 'none': the raw "
                        "fastest (default: the fastest whose outputs still follow the original)")
    p.add_argument("--metric", default=None, metavar="MODULE:FUNCTION",
                   help="your metric of each row's outputs against the reference's (e.g. mymetrics:top1 or "
                        "metrics.py:top1; labels from a 'labels' array in --data), shown per row")
    p.add_argument("--max-drop", default=None, metavar="D",
                   help="with --metric: leave out the rows whose metric drops by more than D (its units)")
    p.add_argument("--data", default=None, help=".npz/.npy file or directory of samples (calibration + held out)")
    p.add_argument("--repeats", default="7", help="timed rounds (default 7)")
    p.add_argument("--export", default=None, metavar="OUT.onnx",
                   help="write the chosen model here, and OUT.py: a snippet that runs it")
    p.add_argument("--row", default=None, metavar="ENGINE/PRECISION/OPT",
                   help="export this row instead of the best one (e.g. openvino/int8/dense)")
    p.add_argument("--servers", default=None, metavar="all|NAME,...",
                   help="run the search on these servers of a Ray cluster (one task per server; default: here)")
    p.add_argument("--address", default=None, metavar="HEAD:PORT",
                   help="Ray head address for --servers (default: a local Ray instance)")
    p.add_argument("--force", action="store_true", help="measure again even if cached")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def run(args: argparse.Namespace) -> int:
    from sparsify_tui.actions import deploy as core
    from sparsify_tui.project import Project

    engines = core.parse_engines(args.engines)
    precisions = core.parse_precisions(args.precisions)
    batch = parse_int("--batch-size", args.batch_size, minimum=1)
    cores = None
    if args.cores is not None:
        cores = parse_int("--cores", args.cores, minimum=1)
        if cores > max_cores() and args.servers is None and args.address is None:  # servers check their own
            raise UsageError(f"--cores must be at most {max_cores()}, got {cores}")
    repeats = parse_int("--repeats", args.repeats, minimum=1, maximum=1000)
    budget = core.parse_budget(args.max_output_change)
    channel_method = core.parse_channel_method(getattr(args, "channel_method", None))
    if args.data is not None and not Path(args.data).expanduser().exists():
        raise UsageError(f"--data {args.data}: no such file or directory")
    path = Path(args.project).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        raise UsageError(f"{path} is a model file: deploy needs a project directory "
                         f"(create one with 'sparsify-tui new {path}')")
    export = Path(args.export).expanduser() if args.export else None
    metric, max_drop = core._check_metric(getattr(args, "metric", None), getattr(args, "max_drop", None))
    if metric is not None and (args.servers is not None or args.address is not None):
        raise UsageError("--metric runs on this machine only: leave out --servers/--address")
    if args.servers is not None or args.address is not None:
        return run_cluster(args, path, export, dict(
            engines=engines, precisions=precisions, optimizations=[] if args.dense_only else args.optimization,
            batch_size=batch, cores=cores, data=args.data, repeats=repeats, prune_method=args.prune_method,
            channel_method=channel_method), budget)
    if export is not None:
        if export.suffix.lower() != ".onnx":
            raise UsageError(f"--export {args.export}: give an .onnx file name")
        if not export.parent.is_dir():
            raise UsageError(f"--export {args.export}: the directory {export.parent} does not exist")
    project = Project.open(path)
    try:
        if export is not None:
            from sparsify_tui.commands.common import refuse_project_file

            refuse_project_file(project, export, "--export")
            refuse_project_file(project, export.with_suffix(".py"), "--export")
        progress = Progress("deploy")

        def on_progress(ev: dict) -> None:
            if ev.get("event") == "progress":
                progress.update(ev.get("done", 0), ev.get("total", 1) or 1, str(ev.get("label", "")))

        opts = [] if args.dense_only else args.optimization
        try:
            doc = core.run_deploy(project, engines=engines, precisions=precisions, optimizations=opts,
                                  batch_size=batch, cores=cores, data=args.data, max_output_change=budget,
                                  metric=metric, max_drop=max_drop,
                                  repeats=repeats, force=args.force, on_progress=on_progress,
                                  prune_method=args.prune_method, channel_method=channel_method)
        finally:
            progress.done()
        exported = None
        if export is not None:
            row = core.find_row(doc, args.row)
            exported = core.export_row(project, doc, row, export)
        if args.json:
            out = dict(doc)
            if exported:
                out["exported"] = exported
            emit_json(out)
            return 0
        _print(doc)
        if exported:
            print(f"wrote {exported['model']} ({exported['row']}) and {exported['snippet']}")
        return 0
    finally:
        project.close()


def _print(doc: dict, brief: bool = False) -> None:
    from sparsify_tui.actions.deploy import plan_cell
    from sparsify_tui.commands.info import fit_columns, terminal_width
    from sparsify_tui.metrics import format_change

    rows = []
    best = (doc.get("best") or {}).get("id")
    for r in sorted(doc.get("rows") or [], key=lambda r: -(r.get("speedup") or 0)):
        spread = r.get("spread_ms") or [None, None]
        rows.append([
            ("* " if r["id"] == best else "  ") + r["engine"], r["precision"], plan_cell(r),
            _fmt(r.get("median_ms"), ".2f"), f"{_fmt(spread[0], '.2f')}-{_fmt(spread[1], '.2f')}",
            _fmt(r.get("items_per_second"), ".1f"), _fmt(r.get("speedup"), ".2f") + "x",
            format_change(r, short=True)[0] if r.get("output_change") is not None else "-",
            _fmt(r.get("top1_agreement"), ".0%"),
            _fmt((r.get("file_bytes") or 0) / 1e6 if r.get("file_bytes") else None, ".1f"),
            "yes" if r.get("pareto") else "",
        ])
    headers = ["Engine", "Prec", "Sparsity", "Median ms", "Spread ms", "Items/s", "Speedup", "Out change",
               "Top-1", "MB", "Pareto"]
    headers, rows, dropped = fit_columns(headers, rows, terminal_width(), drop_order=("Spread ms", "Items/s", "MB"),
                                         shrink="Sparsity", min_width=8)
    right = {"Median ms", "Spread ms", "Items/s", "Speedup", "Out change", "Top-1", "MB"}
    print_table(headers, rows, right=[i for i, h in enumerate(headers) if h in right])
    if dropped:
        print(f"({', '.join(dropped)} in --json)")
    if brief:
        for sk in doc.get("skipped") or []:
            print(f"skipped {sk['engine']} {sk['precision']} {sk.get('optimization') or 'dense'}: {sk['reason']}")
        return
    m = doc.get("machine") or {}
    cached = " (cached; --force measures again)" if doc.get("cached") else ""
    print(f"Reference: onnxruntime fp32 dense, {_fmt((doc.get('reference') or {}).get('median_ms'), '.2f')} ms; "
          f"batch {doc.get('batch_size')}, {doc.get('cores')} cores, {doc.get('rounds')} interleaved rounds"
          f"{cached}")
    if m.get("cpu_model"):
        print(f"Machine: {m.get('cpu_model')} ({' '.join(m.get('isa') or [])})")
    s = doc.get("samples") or {}
    print(f"Output change on {s.get('heldout')} held-out samples; INT8 calibrated on {s.get('calibration')} others")
    from sparsify_tui.actions.deploy import row_label, summary_line

    line = summary_line(doc)
    print(line[0].upper() + line[1:])
    b = doc.get("budget") or {}
    if b.get("kind") == "default":
        print("Budget: " + b.get("name", "") + " (--max-output-change X sets one, 'none' gives the raw fastest)")
    _print_user_metric(doc)
    for r in doc.get("rows") or []:
        if r.get("engines_disagree"):
            print(f"{row_label(r)}: {r['engines_disagree']}")
    for sk in doc.get("skipped") or []:
        print(f"skipped {sk['engine']} {sk['precision']} {sk.get('optimization') or 'dense'}: {sk['reason']}",
              file=sys.stdout)
    if not doc.get("complete"):
        print(f"Note: incomplete ({doc.get('error') or 'stopped early'}): the finished rounds are shown")


def _print_user_metric(doc: dict) -> None:
    """One line per row with ``--metric``: "onnxruntime fp32 dense: top-1 75.0% → 75.0%", then the rows
    ``--max-drop`` leaves out."""
    from sparsify_tui.actions.deploy import row_label
    from sparsify_tui.user_metric import format_metric

    scored = [r for r in sorted(doc.get("rows") or [], key=lambda r: -(r.get("speedup") or 0)) if r.get("user_metric")]
    if not scored:
        return
    um = scored[0]["user_metric"]
    print(f"User metric (--metric {um['spec']}, on the held-out samples"
          f"{', labelled' if um.get('labels') else ', no labels'}):")
    for r in scored:
        print(f"  {row_label(r)}: {format_metric(r['user_metric'])}")
    for g in doc.get("over_max_drop") or []:
        print(f"left out {g['label']}: {g['reason']}")


# ---------------------------------------------------------------- on the servers of a Ray cluster
def run_cluster(args: argparse.Namespace, path: Path, export: Path | None, options: dict, budget) -> int:
    """``deploy --servers``: the search on each server, one "ship this" table, one model per server exported."""
    from sparsify_tui.cluster import require_ray
    from sparsify_tui.errors import ClusterError
    from sparsify_tui.project import Project

    if export is not None and export.suffix.lower() == ".onnx":
        raise UsageError(f"--export {args.export}: with --servers give a directory (one model per server)")
    if export is not None and not export.is_dir():
        raise UsageError(f"--export {args.export}: no such directory")
    require_ray()
    from sparsify_tui.cluster.deploy import run_cluster_deploy

    project = Project.open(path)
    try:
        doc = run_cluster_deploy(project, address=args.address, servers=args.servers or "all",
                                 max_output_change=budget, force=args.force, on_event=_ClusterProgress(),
                                 **options)
        if export is not None:
            doc["exported"] = _export_servers(project, doc, args.row, export)
    finally:
        project.close()
    if args.json:
        emit_json(doc)
    else:
        _print_cluster(doc)
    failed = [s for s in doc["servers"] if s["failed"]]
    if failed:
        raise ClusterError(f"{len(failed)} of {len(doc['servers'])} servers have no result (first: "
                           f"{failed[0]['name']}: {failed[0]['failed']}); the others are saved, run the same "
                           "command again to retry")
    return 0


class _ClusterProgress:
    """One stderr line per server event."""

    def __init__(self) -> None:
        from sparsify_tui.commands.cluster import SweepProgress

        self.out = SweepProgress()

    def __call__(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "plan":
            self.out._print(f"deploy: {len(ev['servers'])} server(s): measure {', '.join(ev['to_measure']) or 'none'}"
                            f"; already in the project: {', '.join(ev['cached']) or 'none'}")
            for name, why in (ev.get("failed") or {}).items():
                self.out._print(f"  {name}: {why}")
        elif kind == "done":
            self.out._print(f"{ev.get('measured_on')}: deployment search for {ev.get('server')} done "
                            f"({ev.get('rows')} rows) -> {ev.get('profile_id')}")
        else:
            self.out(ev)


def _export_servers(project, doc: dict, which: str | None, out_dir: Path) -> list[dict]:
    from sparsify_tui.actions import deploy as core

    done = []
    for s in doc["servers"]:
        if not s.get("entry_id"):
            continue
        full = core.apply_budget(project.load_profile(project.get_profile(s["entry_id"])), doc.get("budget"))
        row = core.find_row(full, which)
        done.append(dict(core.export_row(project, full, row, out_dir / f"{s['name']}.onnx"), server=s["name"]))
    return done


def _print_cluster(doc: dict) -> None:

    for s in doc["servers"]:
        m = s["machine"]
        print(f"== {s['name']}: {m.get('cpu_model') or '?'}, {m.get('cores') or '?'} cores, "
              f"{' '.join(m.get('isa') or []) or '-'}; AMX {'yes' if m.get('amx') else 'no'}, "
              f"bf16 {'yes' if m.get('bf16') else 'no'}"
              + (" (cached)" if s.get("cached") else "")
              + (f" (measured on {s['measured_on']})" if s.get("measured_on") not in (None, s["name"]) else ""))
        if s["failed"]:
            print(f"failed: {s['failed']}")
            continue
        _print({"rows": s["rows"], "best": s["best"], "reference": s["reference"], "machine": {},
                "samples": {}, "budget": doc["budget"], "left_out": s["left_out"], "skipped": s["skipped"],
                "complete": True, "cores": s["cores"], "cached": s["cached"]}, brief=True)
    print("Ship this:")
    rows = [[r["server"], r["engine"] or "-", r["precision"] or "-", r["plan"] or "-",
             _fmt(r["speedup"], ".2f") + ("x" if r["speedup"] is not None else ""),
             _ship_change(r),
             r["why_none"] or ""] for r in doc["ship"]]
    print_table(["SERVER", "ENGINE", "PREC", "PLAN", "SPEEDUP", "CHANGE", "NOTE"], rows, right=[4, 5])


def _ship_change(r: dict) -> str:
    from sparsify_tui.metrics import format_change

    if r["change"] is None:
        return "-"
    return format_change({"output_change": r["change"], "output_change_metric": r["change_metric"]}, short=True)[0]
