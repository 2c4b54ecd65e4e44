"""Overhead of a profile sweep on Ray, against the same profiles measured locally one after another.

usage: python benchmarks/bench_cluster.py [MODEL.onnx] [--runs N] [--iterations N]

Needs the ``[cluster]`` extra. Without a model it uses the demo model. For each
run it does, on this machine:

* local: ``run_perf_profile`` for every combination (batch 1,4 x cores 1,2,
  ONNX Runtime, level 0), one after another, in this process;
* sweep: the same combinations as a sweep on a new local Ray instance (one
  server), storing each into a fresh project.

It prints medians over the runs: the sweep's fixed start-up (Ray start,
server probe, planning), the time its jobs spent measuring (task start to
end, on the server), the rest (scheduling, moving results, storing profiles)
per job, and the local total. Noisy machine: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

BATCHES = (1, 4)
CORES = (1, 2)


def local_run(model: Path, iterations: int, shapes: dict) -> float:
    from sparsify_tui.profiles.perf import run_perf_profile

    t = time.perf_counter()
    for b in BATCHES:
        for c in CORES:
            run_perf_profile(model, engine="onnxruntime", batch_size=b, cores=c, levels=[0.0],
                             iterations=iterations, warmup=2, repeats=1, input_shapes=shapes)
    return time.perf_counter() - t


def sweep_run(model: Path, iterations: int, workdir: Path) -> dict:
    from sparsify_tui.cluster.sweep import SweepSpec, run_sweep
    from sparsify_tui.project import Project

    project = Project.create(model, dir=workdir / f"p{time.time_ns()}", name="bench")
    marks: dict[str, float] = {}

    def on_event(ev: dict) -> None:
        if ev["event"] == "plan":
            marks["plan"] = time.perf_counter()

    spec = SweepSpec(engines=["onnxruntime"], batch_sizes=list(BATCHES), cores=list(CORES), levels=[0.0],
                     iterations=iterations, warmup=2, repeats=1)
    t = time.perf_counter()
    report = run_sweep(project, spec, on_event=on_event)
    total = time.perf_counter() - t
    project.close()
    if report.failed:
        sys.exit(f"error: sweep jobs failed: {report.failed}")
    measuring = sum(r["finished"] - r["started"] for r in report.measured)
    startup = marks["plan"] - t
    return {"total": total, "startup": startup, "measuring": measuring,
            "rest_per_job": (total - startup - measuring) / len(report.measured), "jobs": len(report.measured)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.model:
            model = Path(args.model)
        else:
            from sparsify_tui.analysis.demo import build_demo_model

            model = build_demo_model(workdir / "demo.onnx")
        locals_, sweeps = [], []
        for i in range(args.runs):
            locals_.append(local_run(model, args.iterations, {}))
            sweeps.append(sweep_run(model, args.iterations, workdir))
            print(f"run {i + 1}: local {locals_[-1]:.1f} s, sweep {sweeps[-1]['total']:.1f} s", file=sys.stderr)
    med = lambda key: statistics.median(s[key] for s in sweeps)  # noqa: E731
    jobs = sweeps[0]["jobs"]
    print(f"model: {model.name}, {jobs} jobs (batch {BATCHES} x cores {CORES}, onnxruntime), "
          f"{args.iterations} iterations, medians of {args.runs} runs")
    rows = [
        ("local, one after another (total)", statistics.median(locals_)),
        ("sweep total", med("total")),
        ("  start-up (Ray, probe, plan)", med("startup")),
        ("  measuring on the server (sum)", med("measuring")),
        ("  rest per job (schedule, result, store)", med("rest_per_job")),
    ]
    for label, v in rows:
        print(f"{label:<42} {v:8.2f} s")


if __name__ == "__main__":
    main()
