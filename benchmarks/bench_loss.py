"""Speed of the loss profiles on the ResNet-50-sized model (``scripts/build_resnet50.py``).

    python benchmarks/bench_loss.py [--model resnet50.onnx] [--repeats 5] [--one-shot-repeats 1] [--full]

Prints a table: the approx (weight magnitude, 100 levels) and one-shot (10
levels, one sample of batch 1) timings next to SparseML's on the same kind of
2-vCPU machine (1.13 s and 158.8 s).
With ``--full`` it also times one-shot with the whole model run for every
measurement (one session, every weight an input) for comparison.
Times are medians over repeats; the machine is shared and noisy, so the
machine's load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

HERE = Path(__file__).resolve().parent
SPARSEML_APPROX_S = 1.13
SPARSEML_ONE_SHOT_S = 158.8


def _model(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    from sparsify_tui.analysis.demo import build_resnet50_model

    return build_resnet50_model(tmp / "resnet50.onnx")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--one-shot-repeats", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="also time whole-model runs (slow)")
    args = ap.parse_args()

    from sparsify_tui.analysis import analyze
    from sparsify_tui.settings import LOSS_ONE_SHOT_LEVELS
    from sparsify_tui.profiles.loss import approx_loss_profile, compute_one_shot

    with tempfile.TemporaryDirectory(prefix="bench-loss-") as d:
        model = _model(args.model, Path(d))
        t = time.perf_counter()
        graph = analyze(model)
        analyze_s = time.perf_counter() - t
        n_layers = len(graph.prunable_layers)
        approx, approx_cpu = [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            approx_loss_profile(graph)
            approx.append(time.perf_counter() - t)
            approx_cpu.append(time.process_time() - c)
        ncores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        rows = [("analyze (not part of the profile)", analyze_s, None)]
        rows.append((f"approx, 100 levels, {n_layers} layers", statistics.median(approx), SPARSEML_APPROX_S))
        rows.append((f"  approx CPU time / {min(2, ncores)} threads (the wall time on an idle machine)",
                     statistics.median(approx_cpu) / min(2, ncores), SPARSEML_APPROX_S))
        one, cpu = [], []
        doc = None
        for _ in range(args.one_shot_repeats):
            t, c = time.perf_counter(), time.process_time()
            doc = compute_one_shot(model, samples=1, levels=LOSS_ONE_SHOT_LEVELS, graph=graph)
            one.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        rows.append((f"one-shot, 10 levels, 1 sample ({doc['execution']}, {doc['runs']} runs)",
                     statistics.median(one), SPARSEML_ONE_SHOT_S))
        rows.append((f"  one-shot CPU time / {ncores} cores (the wall time on an idle machine)",
                     statistics.median(cpu) / ncores, SPARSEML_ONE_SHOT_S))
        if args.full:
            from sparsify_tui.profiles import downstream

            orig = downstream.DownstreamModel.build_session

            def unsupported(self):
                raise downstream._Unsupported("disabled by --full")

            downstream.DownstreamModel.build_session = unsupported
            try:
                t, c = time.perf_counter(), time.process_time()
                d2 = compute_one_shot(model, samples=1, levels=LOSS_ONE_SHOT_LEVELS, graph=graph)
                rows.append((f"one-shot, whole model per run ({d2['runs']} runs)", time.perf_counter() - t,
                             SPARSEML_ONE_SHOT_S))
                rows.append((f"  whole model per run: CPU time / {ncores} cores", (time.process_time() - c) / ncores,
                             SPARSEML_ONE_SHOT_S))
            finally:
                downstream.DownstreamModel.build_session = orig
    print(f"model: {model.name}  prunable layers: {n_layers}  load average: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}  cores: {os.cpu_count()}")
    w = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(w)}  {'ours (s)':>9}  {'SparseML (s)':>12}  {'faster':>7}")
    for name, ours, ref in rows:
        ratio = f"{ref / ours:6.1f}x" if ref else ""
        print(f"{name.ljust(w)}  {ours:9.3f}  {'' if ref is None else f'{ref:12.2f}'}  {ratio:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
