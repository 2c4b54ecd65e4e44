"""Estimated against measured speedup over the corpus models.

For each model: a project, the default optimization at a target sparsity
(0.85 unless --sparsity), then the validation step (`sparsify-tui prune
--validate`): one-shot prune, benchmark dense against pruned (DeepSparse where
it compiles the model, otherwise ONNX Runtime) and the estimate from a perf
profile measured with the same engine. Prints one row per model (``warnings``: the validation's
warnings other than the miss itself, mostly the profile's), then the validation's explanation of every
estimate more than 20% from the measurement.

usage: python benchmarks/estimate_vs_measured.py [MODELS_DIR] [--sparsity 0.85] [--iterations 20]
       (MODELS_DIR defaults to $SPARSIFY_TEST_MODELS or ~/.cache/sparsify-tui/models)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def cli(*args: str) -> dict:
    p = subprocess.run([PY, "-m", "sparsify_tui", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}")
    return json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="?", default=os.environ.get("SPARSIFY_TEST_MODELS")
                    or str(Path.home() / ".cache/sparsify-tui/models"))
    ap.add_argument("--sparsity", default="0.85")
    ap.add_argument("--iterations", default="20")
    ap.add_argument("--only", default="", help="substring filter on model file names")
    a = ap.parse_args()
    root = Path(a.models)
    hints = json.loads((root / "inputs.json").read_text())
    rows = []
    whys: list[str] = []
    with tempfile.TemporaryDirectory(prefix="est-vs-meas-") as tmp:
        for f in sorted(root.glob("*.onnx")):
            if a.only and a.only not in f.name:
                continue
            shapes = []
            for name, h in hints.get(f.name, {}).items():
                shapes += ["--input-shape", f"{name}={','.join(map(str, h['shape']))}"]
            d = Path(tmp) / f.stem
            t0 = time.perf_counter()
            try:
                subprocess.run([PY, "-m", "sparsify_tui", "new", str(f), "--dir", str(d), *shapes],
                               check=True, capture_output=True, text=True)
                cli("optimize", str(d), "--sparsity", a.sparsity, "--json")
                v = cli("prune", str(d), "-o", str(Path(tmp) / f"{f.stem}.pruned.onnx"), "--validate",
                        "--iterations", a.iterations, "--json")
                rows.append([f.name[:44], v["engine"], f"{v['achieved_sparsity']:.3f}",
                             f"{v['dense_ms']:.2f}", f"{v['pruned_ms']:.2f}",
                             f"{v['estimated_speedup']:.2f}x", f"{v['measured_speedup']:.2f}x",
                             f"{v['relative_error']:+.1%}",
                             "n/a" if v["output_change"] is None else f"{v['output_change']:.3g}",
                             f"{time.perf_counter() - t0:.0f}s"])
                miss = (v.get("quality") or {}).get("estimate_miss") or []
                whys += [f"{f.name}: {m}" for m in miss]
                rows[-1].insert(-1, str(len((v.get("quality") or {}).get("warnings") or []) - len(miss)))
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                msg = exc.stderr.strip().splitlines()[-1] if isinstance(exc, subprocess.CalledProcessError) \
                    else str(exc)
                rows.append([f.name[:44], "-", "-", "-", "-", "-", "-", "-", "-", "-", f"failed: {msg[:80]}"])
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    head = ["model", "engine", "sparsity", "dense ms", "pruned ms", "estimated", "measured", "rel. error",
            "output change", "warnings", "time"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if whys:
        print("\nEstimates more than 20% off, as the validation explains them:")
        for w in whys:
            print(f"- {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
