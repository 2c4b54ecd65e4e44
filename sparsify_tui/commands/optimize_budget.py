"""``sparsify-tui optimize PROJECT --max-output-change X``: the closed-loop budgeted optimization.

Checks the flags, calls :func:`sparsify_tui.actions.budget.run_budget` with a progress bar on stderr and
prints the steps, the result and what holds it back (``--json``: the result document).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sparsify_tui.commands.common import Progress, emit_json, print_table
from sparsify_tui.errors import UsageError
from sparsify_tui.settings import parse_float, parse_int

_SPARSITY_FLAGS = ("sparsity", "balance", "min_sparsity", "min_speedup", "min_recovery", "max_sparsity",
                   "tiny_params", "copy")


def run_budget(args: argparse.Namespace) -> int:
    from sparsify_tui.actions import budget as core
    from sparsify_tui.commands.optimize import _open_project

    x = core.parse_budget(args.max_output_change)
    given = [f"--{f.replace('_', '-')}" for f in _SPARSITY_FLAGS if getattr(args, f, None) is not None]
    if given or args.override or args.exclude or args.quantize:
        given += ["--override"] * bool(args.override) + ["--exclude"] * bool(args.exclude) \
            + ["--quantize"] * bool(args.quantize)
        raise UsageError(f"--max-output-change chooses every layer's sparsity and precision itself: drop "
                         f"{', '.join(given)}")
    minutes = None if args.max_minutes is None else parse_float("--max-minutes", args.max_minutes, minimum=0.0,
                                                                 maximum=10000.0)
    cores = None if args.cores is None else parse_int("--cores", args.cores, minimum=1)
    if args.data is not None and not Path(args.data).expanduser().exists():
        raise UsageError(f"--data {args.data}: no such file or directory")
    if getattr(args, "name", None) is not None and not str(args.name).strip():
        raise UsageError("--name must not be empty")
    project = _open_project(args.project)
    try:
        progress = Progress("optimize (budget)")

        def on_progress(ev: dict) -> None:
            if ev.get("event") == "progress":
                progress.update(ev.get("done", 0), ev.get("total", 1) or 1, str(ev.get("label", "")))

        try:
            doc = core.run_budget(project, x, engine=args.engine or "auto", precision=args.precision,
                                  structure=args.structure or "unstructured", max_minutes=minutes,
                                  name=args.name, data=args.data, cores=cores, on_progress=on_progress)
        finally:
            progress.done()
        if args.json:
            emit_json(doc)
            return 0
        _print(doc)
        return 0
    finally:
        project.close()


def _f(v, spec: str = ".4g", none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _print(doc: dict) -> None:
    print_table(["step", "levers", "output change", "ms", "speedup", "within", "restored / re-applied"],
                [[str(r["iteration"]), str(r["levers_applied"]), _f(r["measured_output_change"]), _f(r["ms"], ".2f"),
                  _f(r["measured_speedup"], ".2f") + "x", "yes" if r["within_budget"] else "no",
                  (f"-{len(r['restored'])}: " + ", ".join(r["restored"][:3]) if r["restored"] else
                   f"+{len(r['reapplied'])}: " + ", ".join(r["reapplied"][:3]) if r["reapplied"] else "")]
                 for r in doc["iterations"]], right=(1, 2, 3, 4))
    print()
    w = doc.get("whole_model_int8")
    d = doc.get("dense_fp32")
    print(f"stored optimization {doc['optimization']!r}: {doc['chosen']} on {doc['engine']} {doc['precision']}, "
          f"output change {doc['measured_output_change']:.4g} (budget {doc['budget']:g}, "
          f"{doc['under_budget']:.4g} under it, {doc['under_budget_share']:.0%}), "
          f"{_f(doc['measured_speedup'], '.2f')}x against onnxruntime fp32 dense")
    if d:
        print(f"  {doc['engine']} fp32 dense: {_f(d['measured_speedup'], '.2f')}x")
    if w:
        print(f"  {doc['engine']} whole-model INT8: {_f(w['measured_speedup'], '.2f')}x, output change "
              f"{_f(w['output_change'])}")
    n32 = len(doc["fp32_layers"])
    if doc["precision"] == "int8":
        print(f"  {len(doc['precision_by_layer']) - n32} layers INT8, {n32} kept fp32")
    if doc["sparsity_by_layer"]:
        print(f"  {len(doc['sparsity_by_layer'])} layers pruned")
    print(f"  stopped: {doc['stopped']} ({len(doc['iterations'])} steps, {doc['seconds']:.0f} s)")
    if doc["held_back"]:
        print("  held back by (left out, most ms first): " + "; ".join(
            f"{h['label']} ({h['ms_saved']:.2f} ms, change {h['predicted_change']:.3g})" for h in doc["held_back"]))
    for n in doc.get("notes") or []:
        print(f"note: {n}")
