"""Instrumented vs deployed model time, and interference, per corpus model and engine (issue 16).

usage: python benchmarks/bench_quality.py [--models DIR] [--engines onnxruntime,deepsparse]
                                          [--iterations N] [--wait-idle SECONDS]

For every model of the corpus (``inputs.json`` in DIR, default ``$SPARSIFY_TEST_MODELS``) and
every engine, a dense-only perf profile (``levels=[0]``) is measured; it also times the model in
the engine as deployed (DeepSparse ``compile_model``, a plain ONNX Runtime session), same batch,
cores and inputs. Printed per row:

* ``instr ms``: the instrumented run's model time (DeepSparse ``model_debug_analysis`` total,
  ONNX Runtime's profiled ``model_run``), the median of 3 repeats;
* ``deployed ms``: the deployed engine's median of 3 repeats;
* ``ratio``: instr / deployed (``quality.instrumentation_ratio``; beyond 1.25 either way the
  profile carries a warning);
* ``interf``: the largest share of the measured cores' time other processes used during a timed
  block (``quality.interference``; above 0.10 the numbers are flagged);
* the load average when the row finished.

Busy blocks are not re-measured unless ``--remeasure N`` (the CLI's profiles re-measure twice).

The machine is shared and noisy: read ``interf`` before trusting a row; ``--wait-idle`` waits for
a quiet machine before each profile.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("SPARSIFY_TEST_MODELS", ""))
    ap.add_argument("--engines", default="onnxruntime,deepsparse")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--wait-idle", type=float, default=0.0)
    ap.add_argument("--remeasure", type=int, default=0, help="re-measures of a busy block (the CLI does 2)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from sparsify_tui.profiles.perf import run_perf_profile

    root = Path(args.models)
    hints = json.loads((root / "inputs.json").read_text())
    rows = []
    print(f"{'model':44} {'engine':12} {'instr ms':>9} {'deployed ms':>11} {'ratio':>6} {'interf':>6} {'load':>5}",
          flush=True)
    for name in sorted(hints):
        shapes = {k: list(v["shape"]) for k, v in hints[name].items()}
        for engine in args.engines.split(","):
            try:
                doc = run_perf_profile(root / name, engine=engine, levels=[0], iterations=args.iterations,
                                       warmup=5, repeats=3, input_shapes=shapes, wait_idle_s=args.wait_idle,
                                       remeasure=args.remeasure)
            except Exception as exc:  # noqa: BLE001 - a benchmark row, not a crash
                print(f"{name[:44]:44} {engine:12} error: {exc}", flush=True)
                continue
            q = doc["quality"]
            load = os.getloadavg()[0]
            row = {"model": name, "engine": doc["engine"], "instrumented_ms": doc["baseline_ms"],
                   "deployed_ms": q["deployed_ms"], "instrumentation_ratio": q["instrumentation_ratio"],
                   "interference": q["interference"], "load": load}
            rows.append(row)
            ratio = f"{q['instrumentation_ratio']:.2f}" if q["instrumentation_ratio"] else "-"
            interf = f"{q['interference']:.2f}" if q["interference"] is not None else "-"
            print(f"{name[:44]:44} {doc['engine']:12} {doc['baseline_ms']:9.3f} {q['deployed_ms'] or 0:11.3f} "
                  f"{ratio:>6} {interf:>6} {load:5.1f}", flush=True)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
