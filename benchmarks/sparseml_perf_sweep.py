"""Run SparseML's own perf sensitivity sweep once and print its wall time as JSON.

Runs under a *separate* Python that has sparseml 1.8 and deepsparse 1.8
installed (SparseML is not a dependency of sparsify-tui):

    SPARSEML_PYTHON benchmarks/sparseml_perf_sweep.py MODEL.onnx [--iterations 10] [--warmup 5]

``bench_perf.py --sparseml-python PATH`` calls it between its own runs, so
both sweeps are timed on the same machine in the same minutes.
"""

import json
import os
import sys
import time

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    from sparseml.onnx.optim.sensitivity_pruning import pruning_perf_sens_one_shot
    from sparseml.onnx.utils import DataLoader

    data = DataLoader.from_model_random(args.model, batch_size=1, iter_steps=-1)
    t0 = time.perf_counter()
    analysis = pruning_perf_sens_one_shot(args.model, data, batch_size=1, iterations_per_check=args.iterations,
                                          warmup_iterations_per_check=args.warmup, show_progress=False)
    wall = time.perf_counter() - t0
    measured = analysis.results_model.sparse_measurements
    levels = {str(k): v for k, v in (measured.items() if isinstance(measured, dict) else [])}
    print(json.dumps({"wall_s": wall, "model_seconds_by_level": levels}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
