"""``sparsify-tui prune`` (one-shot pruning; not here yet) and ``sparsify-tui benchmark``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparsify_tui.commands.common import (
    Progress,
    emit_json,
    max_cores,
    parse_int,
    parse_int_list,
    print_table,
)
from sparsify_tui.errors import ModelError, UsageError


def run_prune(args: argparse.Namespace) -> int:
    raise UsageError("not implemented yet")


def run_benchmark(args: argparse.Namespace) -> int:
    from sparsify_tui.analysis import parse_input_shapes
    from sparsify_tui.engines.runner import run_job
    from sparsify_tui.profiles.inputs import make_inputs
    from sparsify_tui.profiles.perf import default_cores, validate_engine

    engine = validate_engine(args.engine)
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
    shapes = parse_input_shapes(args.input_shape or [])
    models = []
    for m in args.models:
        p = Path(m).expanduser()
        if not p.is_file():
            raise ModelError(f"{p}: no such file")
        # fail fast on a bad model / bad shapes before any child starts
        make_inputs(p, batches[0], {k: v for k, v in shapes.items()})
        models.append(p)
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
                       "input_shapes": {k: list(v) for k, v in shapes.items()}}
                res = run_job(job, cores=c, timeout_s=600)
                results.append(res)
                done += 1
                progress.update(done, total, f"{label}: {res['median_ms']:.2f} ms")
    progress.done()
    if args.json:
        emit_json({"results": results})
        return 0
    rows = [[r["model_name"], f"{r['engine']} {r.get('engine_version') or ''}".strip(), r["batch_size"], r["cores"],
             f"{r['median_ms']:.3f}", f"{r['min_ms']:.3f}", f"{r['max_ms']:.3f}",
             f"{r['items_per_second']:.1f}" if r.get("items_per_second") else ""] for r in results]
    print_table(["Model", "Engine", "Batch", "Cores", "Median ms", "Min ms", "Max ms", "Items/s"], rows,
                right=(2, 3, 4, 5, 6, 7))
    reasons = {(r["model_name"], r["engine_reason"]) for r in results}
    for name, reason in sorted(reasons):
        print(f"{name}: {reason}")
    return 0
