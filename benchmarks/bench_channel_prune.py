"""Channel pruning with reconstruction of the ResNet-50-sized model: time and peak memory (issue 26).

usage: python benchmarks/bench_channel_prune.py [--fraction 0.3] [--samples 32] [--runs 3] [--dir /tmp/r50]

Each run is a child process that loads the model (``scripts/build_resnet50.py``'s, built once into
``--dir``), removes ``--fraction`` of every prunable group's channels with ``--method reconstruct`` on
``--samples`` calibration samples (1/f-noise images, as benchmarks/bench_prune_methods.py makes them) and
reports its wall time and peak resident memory (``resource.getrusage``: the whole process, model and
samples included). The median of the runs is printed, with the output change on 8 held-out samples
against ``l2`` at the same plan.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
import onnx
from benchmarks.bench_prune_methods import make_samples, outputs, change
from sparsify_tui.optim import channels as oc
p, frac, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
m = onnx.load(p)
samples = make_samples(p, n + 8, 0)
cal, ev = samples[:n], samples[n:]
t = time.perf_counter()
r = oc.prune_channels(m, frac, method="reconstruct", samples=cal, round_to=1)
secs = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_SELF)
peak = u.ru_maxrss / 1024
dense = outputs(p, ev)
l2 = oc.prune_channels(m, frac, method="l2", round_to=1)
print(json.dumps({"seconds": secs, "cpu_seconds": u.ru_utime + u.ru_stime, "peak_rss_mb": peak,
                  "refit_layers": r.refit_layers, "output_change": change(dense, outputs(r.model, ev)),
                  "l2_output_change": change(dense, outputs(l2.model, ev))}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/bench-channel-prune-r50")
    a = ap.parse_args()
    out = Path(a.dir)
    out.mkdir(parents=True, exist_ok=True)
    model = out / "resnet50.onnx"
    if not model.exists():
        sys.path.insert(0, str(ROOT))
        from sparsify_tui.analysis.demo import build_resnet50_model

        build_resnet50_model(model)
    env = dict(os.environ, PYTHONPATH=str(ROOT), NM_DISABLE_ANALYTICS="1")
    runs = []
    for i in range(a.runs):
        load = os.getloadavg()[0]
        p = subprocess.run([sys.executable, "-c", CHILD, str(model), str(a.fraction), str(a.samples)],
                           stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
        if p.returncode:
            raise SystemExit(f"run {i + 1} failed (exit {p.returncode})")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["load"] = load
        runs.append(r)
        print(f"run {i + 1}: {r['seconds']:.1f} s wall, {r['cpu_seconds']:.1f} s CPU, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"{r['refit_layers']} layers refit; output change {r['output_change']:.4g} (l2 {r['l2_output_change']:.4g}); "
              f"load average {load:.1f}", flush=True)
    med = statistics.median(r["seconds"] for r in runs)
    peak = max(r["peak_rss_mb"] for r in runs)
    print(f"\nResNet-50-sized model, reconstruct at {a.fraction} of channels with {a.samples} calibration samples: "
          f"median {med:.1f} s wall over {len(runs)} runs, peak RSS {peak:.0f} MB; "
          f"{len(os.sched_getaffinity(0))} cores")


if __name__ == "__main__":
    main()
