"""How long a channel perf profile takes on the ResNet-50-sized demo model, and how its estimate compares.

usage: python benchmarks/bench_perf_channels.py [--runs N] [--engine onnxruntime] [--precision fp32]
                                               [--fractions 0.25,0.5,0.75] [--combinations N] [--repeats 3]
                                               [--no-check]

Builds ``analysis.demo.build_resnet50_model``, measures the channel perf profile (the ``perf_channels`` job
in a child process, as ``profile perf --structure channels`` does) ``--runs`` times, and prints the median
wall time, the compiles (1 + fractions x combinations) and the dense time. Unless ``--no-check``, it then
removes half of every prunable group's channels, times that file against the dense model (interleaved A/B,
the ``ab_benchmark`` job) and prints the profile's estimate beside the measured speedup. The machine may be
shared: the load average is printed with every run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--engine", default="onnxruntime")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--fractions", default="0.25,0.5,0.75")
    ap.add_argument("--combinations", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()

    import onnx

    from sparsify_tui.analysis.demo import build_resnet50_model
    from sparsify_tui.analysis.shapes import infer
    from sparsify_tui.engines.runner import run_job
    from sparsify_tui.jobs.perf_channels import removed_count
    from sparsify_tui.onnxkit.channels import remove_channels
    from sparsify_tui.optim.channel_estimate import estimate_channel_speedup, flops_reduction
    from sparsify_tui.profiles.perf_channels import run_channel_perf_profile

    fractions = [float(x) for x in args.fractions.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-chperf-") as tmp:
        path = build_resnet50_model(Path(tmp) / "resnet50.onnx")
        walls, doc = [], None
        for i in range(args.runs):
            t = time.perf_counter()
            doc = run_channel_perf_profile(path, engine=args.engine, precision=args.precision, fractions=fractions,
                                           combinations=args.combinations, repeats=args.repeats)
            walls.append(time.perf_counter() - t)
            print(f"run {i + 1}: {walls[-1]:.1f} s  (load average {os.getloadavg()[0]:.1f})", flush=True)
        assert doc is not None
        print(f"channel perf profile, {args.engine} {args.precision}: median {statistics.median(walls):.1f} s over "
              f"{len(walls)} runs; {len(doc['groups'])} prunable groups, {1 + len(doc['combinations'])} compiles "
              f"(dense compile {doc['compile_s']:.2f} s), dense {doc['dense_ms']:.1f} ms, "
              f"{doc['iterations']} runs per block")
        if args.no_check:
            return
        plan = {g["id"]: 0.5 for g in doc["groups"]}
        model = onnx.load(str(path))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        shapes = infer(model, opset)[1]
        small = remove_channels(model, {g["id"]: range(removed_count(g["channels"], 0.5)) for g in doc["groups"]},
                                shapes)
        onnx.save(small, str(Path(tmp) / "half.onnx"))
        ab = run_job({"kind": "ab_benchmark", "model_a": str(path), "model_b": str(Path(tmp) / "half.onnx"),
                      "engine": args.engine, "precision": None if args.precision == "fp32" else args.precision,
                      "repeats": 7, "warmup": 3, "iterations": 10, "change_samples": 1})
        est = estimate_channel_speedup(doc, plan)
        print(f"half of every group's channels: FLOPs -{flops_reduction(doc, plan):.0%}; estimate {est:.2f}x, "
              f"measured {ab['median_ratio']:.2f}x (median of 7 interleaved pairs, spread "
              f"{ab['speedup_spread'][0]:.2f}-{ab['speedup_spread'][1]:.2f}); estimate/measured "
              f"{est / ab['median_ratio']:.2f}  (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
