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
    p.add_argument("--engines", default=None, help="onnxruntime,deepsparse,openvino (default: all)")
    p.add_argument("--precisions", default=None, help="fp32,bf16,int8 (default: all)")
    p.add_argument("--optimization", action="append", default=None, metavar="NAME",
                   help="an optimization to deploy one-shot pruned (repeatable; default: all of the project's)")
    p.add_argument("--dense-only", action="store_true", help="no optimization, dense rows only")
    p.add_argument("--prune-method", default="magnitude", choices=["magnitude", "wanda", "sparsegpt"],
                   help="how the optimizations are pruned one-shot: magnitude (default), or wanda / sparsegpt "
                        "calibrated on the calibration samples so the pruned model keeps its outputs")
    p.add_argument("--batch-size", default="1", help="batch size (default 1)")
    p.add_argument("--cores", default=None, help="cores to use (default: all this process may use)")
    p.add_argument("--max-output-change", default=None, metavar="X|none",
                   help="budget: the best row is the fastest whose output change is at most X; 'none': the raw "
                        "fastest (default: the fastest whose outputs still follow the original)")
    p.add_argument("--data", default=None, help=".npz/.npy file or directory of samples (calibration + held out)")
    p.add_argument("--repeats", default="7", help="timed rounds (default 7)")
    p.add_argument("--export", default=None, metavar="OUT.onnx",
                   help="write the chosen model here, and OUT.py: a snippet that runs it")
    p.add_argument("--row", default=None, metavar="ENGINE/PRECISION/OPT",
                   help="export this row instead of the best one (e.g. openvino/int8/dense)")
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
        if cores > max_cores():
            raise UsageError(f"--cores must be at most {max_cores()}, got {cores}")
    repeats = parse_int("--repeats", args.repeats, minimum=1, maximum=1000)
    budget = core.parse_budget(args.max_output_change)
    if args.data is not None and not Path(args.data).expanduser().exists():
        raise UsageError(f"--data {args.data}: no such file or directory")
    path = Path(args.project).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        raise UsageError(f"{path} is a model file: deploy needs a project directory "
                         f"(create one with 'sparsify-tui new {path}')")
    export = Path(args.export).expanduser() if args.export else None
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
                                  repeats=repeats, force=args.force, on_progress=on_progress,
                                  prune_method=args.prune_method)
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


def _print(doc: dict) -> None:
    from sparsify_tui.commands.info import fit_columns, terminal_width
    from sparsify_tui.metrics import format_change

    rows = []
    best = (doc.get("best") or {}).get("id")
    for r in sorted(doc.get("rows") or [], key=lambda r: -(r.get("speedup") or 0)):
        spread = r.get("spread_ms") or [None, None]
        rows.append([
            ("* " if r["id"] == best else "  ") + r["engine"], r["precision"], r.get("optimization") or "dense",
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
    for r in doc.get("rows") or []:
        if r.get("engines_disagree"):
            print(f"{row_label(r)}: {r['engines_disagree']}")
    for sk in doc.get("skipped") or []:
        print(f"skipped {sk['engine']} {sk['precision']} {sk.get('optimization') or 'dense'}: {sk['reason']}",
              file=sys.stdout)
    if not doc.get("complete"):
        print(f"Note: incomplete ({doc.get('error') or 'stopped early'}): the finished rounds are shown")
