"""Do the layer rankings of the output change stay those of the previous definition?

usage: python benchmarks/bench_output_change_rankings.py [--models DIR] [--keys k1,k2] [--base COMMIT]

For each corpus model (the directory of ``inputs.json``; ``SPARSIFY_TEST_MODELS`` by default), every
prunable layer alone is pruned to 0.9 on the same 2 inputs like the model's own (``load_samples_for``),
and the output change is computed twice from the same outputs: with ``sparsify_tui/metrics.py`` as it is
at ``--base`` (loaded from git, the definition before bounded maps and the negligible-energy guard) and as
it is now (with the graph's ``bounded_outputs`` hint). It prints each output's kind and metric under both,
whether the previous values were informative (not all equal, not all ~0), and the Spearman correlation of
the two rankings. Where no output changed kind, the rankings should agree (Spearman ~1).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load_base(commit: str):
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:sparsify_tui/metrics.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="metrics-base-")) / "metrics_base.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("metrics_base", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["metrics_base"] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.environ.get("SPARSIFY_TEST_MODELS", ""))
    ap.add_argument("--keys", default="")
    ap.add_argument("--base", default="7b9353f")
    args = ap.parse_args()
    from sparsify_tui import metrics as new
    from sparsify_tui.analysis import analyze
    from sparsify_tui.analysis.loader import bounded_output_names
    from sparsify_tui.engines.inputs import load_samples_for
    from sparsify_tui.profiles.fedmodel import WeightFedModel
    from sparsify_tui.profiles.ranks import rank_correlation

    old = load_base(args.base)
    root = Path(args.models)
    hints = json.loads((root / "inputs.json").read_text())
    wanted = [k for k in args.keys.split(",") if k]
    for fname, hint in hints.items():
        if wanted and not any(k in fname for k in wanted):
            continue
        t0 = time.perf_counter()
        path = str(root / fname)
        shapes = {n: list(h["shape"]) for n, h in hint.items()}
        graph = analyze(path, input_shapes=shapes)
        samples = load_samples_for(path, graph, samples=2, input_shapes=shapes)
        fed = WeightFedModel(path, graph)
        fed.build_session()
        dense = [fed.run(s) for s in samples]
        names = fed.output_names
        plan_old = old.plan_outputs(dense, names)
        plan_new = new.plan_outputs(dense, names, bounded=bounded_output_names(path))
        a, b = [], []
        for layer in graph.prunable_layers:
            wname = fed.layer_weight.get(layer.id)
            w = fed.weights[wname].pruned(0.9) if wname else None
            if w is None:
                continue
            changed = [fed.run(s, {wname: w}) for s in samples]
            a.append(old.compare_outputs(dense, changed, plan_old, names).value)
            b.append(new.compare_outputs(dense, changed, plan_new, names).value)
        informative = len(a) >= 3 and len(set(a)) > len(a) // 2 and max(a) > 1e-9
        same_kind = [(m.kind, m.metric) for m in plan_old] == [(m.kind, m.metric) for m in plan_new]
        rho = rank_correlation(a, b)
        print(f"{fname}: {len(a)} layers; before {[(m.name, m.kind, m.metric) for m in plan_old]}; "
              f"now {[(m.name, m.kind, m.metric) for m in plan_new]}; "
              f"{'same metrics' if same_kind else 'metric changed'}; previous values "
              f"{'informative' if informative else 'NOT informative'}; Spearman {rho if rho is None else f'{rho:.4f}'}"
              f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
