"""Optimizer speed: re-estimate a 500-layer model after an edit (target: at most 50 ms).

A synthetic model (500 prunable Conv/Gemm layers + 500 Relu, perf and loss
profiles with the real documents' keys) is built once; an ``Evaluator`` is
bound to it (curves precomputed, not part of the figure). Then each edit
changes the optimization and re-runs ``allocate`` + ``evaluate``:

* override: one layer's sparsity override changes (all 21 candidate plans are
  recomputed: the worst case of an edit);
* target: the target sparsity changes (same work);
* filters: an edit with the min-sparsity and min-speedup filters on;
* balance: only the balance changes (candidate plans cached: the slider case).

Prints the median, 90th percentile and maximum wall time of each, and the median CPU time
(process time: what the edit costs when other processes compete for the 2 cores). Usage::

    python benchmarks/bench_optim.py [--layers 500] [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparsify_tui.optim.estimate import Evaluator  # noqa: E402
from sparsify_tui.optim.optimization import default_optimization  # noqa: E402
from sparsify_tui.optim.synthetic import synthetic_model  # noqa: E402


def _measure(ev: Evaluator, opt, edit, runs: int) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for k in range(runs):
        edit(opt, k)
        t, c = time.perf_counter(), time.process_time()
        new = ev.allocate(opt)
        est = ev.evaluate(new)
        wall.append((time.perf_counter() - t) * 1000.0)
        cpu.append((time.process_time() - c) * 1000.0)
        assert est.layers
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=500)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()

    graph, perf, loss = synthetic_model(a.layers, seed=1)
    t = time.perf_counter()
    ev = Evaluator(graph, perf, loss)
    build_ms = (time.perf_counter() - t) * 1000.0
    opt = default_optimization(graph)
    ids = [lay.id for lay in graph.prunable_layers]

    def override(o, k):
        o.pruning.overrides = {ids[k % len(ids)]: 0.3 + 0.01 * (k % 50)}

    def target(o, k):
        o.pruning.overrides = {}
        o.pruning.target_sparsity = 0.6 + 0.01 * (k % 35)

    def filters(o, k):
        o.pruning.target_sparsity = 0.8
        o.pruning.min_sparsity, o.pruning.min_speedup = 0.4, 1.05
        o.pruning.overrides = {ids[k % len(ids)]: 0.5 + 0.01 * (k % 40)}

    def balance(o, k):
        o.pruning.min_sparsity, o.pruning.min_speedup = 0.0, 0.0
        o.pruning.overrides = {}
        o.pruning.target_sparsity = 0.85
        o.pruning.balance = (k % 21) / 20

    ev.evaluate(ev.allocate(opt))  # warm up numpy
    rows = []
    for name, edit in (("override one layer", override), ("change target", target),
                       ("edit with filters on", filters), ("move balance (cached)", balance)):
        ts, cpu = _measure(ev, opt, edit, a.runs)
        ts.sort()
        rows.append((name, statistics.median(ts), ts[int(0.9 * (len(ts) - 1))], max(ts), statistics.median(cpu)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"optimizer: {a.layers}-layer synthetic model, {a.runs} runs per edit, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}")
    print(f"Evaluator build (once per model + profiles): {build_ms:.1f} ms")
    print(f"{'edit':26s} {'median ms':>10s} {'p90 ms':>8s} {'max ms':>8s} {'CPU ms':>8s}")
    for name, med, p90, mx, c in rows:
        print(f"{name:26s} {med:10.1f} {p90:8.1f} {mx:8.1f} {c:8.1f}")
    worst = max(r[1] for r in rows)
    print(f"worst median {worst:.1f} ms: {'OK' if worst <= 50 else 'ABOVE'} the 50 ms target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
