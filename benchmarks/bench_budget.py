"""``optimize --max-output-change`` on the ResNet-50-sized model with OpenVINO INT8: the issue's must-holds.

usage: python benchmarks/bench_budget.py [--corpus DIR] [--engine openvino] [--runs 1] [--max-minutes 10]
                                        [--project DIR]  (a project of the model with its profiles: reused)
                                        [--model PATH]   (another model, e.g. scripts/build_resnet50.py's)

Makes a scratch project of ``onnx-1.23.2_light-resnet50_constw.onnx`` (the corpus, input shape from
``inputs.json``), measures the profiles the budget needs (``profile perf --engine openvino``, ``profile
quant``), then runs ``optimize --max-output-change`` twice on ``--engine openvino --precision int8``:

* **probe**: a budget of 1e6 (anything meets it): one step, which measures whole-model OpenVINO INT8's
  output change C on the held-out samples;
* **loose**: 1.5 C, a budget whole-model INT8 meets: the stored plan's measured speedup must be at least
  whole-model OpenVINO INT8's, measured in the same child run;
* **tight**: 0.5 C: mixed precision must return a plan within the budget, measurably faster than OpenVINO
  fp32 dense (same run).

Prints per run the measured change, the speedups (against ONNX Runtime fp32 dense), the number of
closed-loop iterations and the time to the result (the profiles measured before; their own time is printed
first); medians over ``--runs``. Every
time here is taken on whatever machine runs it: on a shared machine, say "under load".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = "onnx-1.23.2_light-resnet50_constw.onnx"


def _cli(*args: str, env: dict, timeout: float = 3600) -> subprocess.CompletedProcess:
    code = "import sys\nfrom sparsify_tui.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _ok(res: subprocess.CompletedProcess, what: str) -> None:
    if res.returncode:
        sys.exit(f"{what} failed: {res.stderr.strip()[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.environ.get("SPARSIFY_TEST_MODELS", "~/.cache/sparsify-tui/models"))
    ap.add_argument("--engine", default="openvino")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--max-minutes", default="10")
    ap.add_argument("--project", default=None)
    ap.add_argument("--model", default=None)
    a = ap.parse_args()
    corpus = Path(a.corpus).expanduser()
    shape = json.loads((corpus / "inputs.json").read_text())[MODEL]
    env = dict(os.environ, PYTHONPATH=str(REPO), NM_DISABLE_ANALYTICS="1")
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        t_perf = t_quant = 0.0
        if a.project:
            pdir = Path(a.project).expanduser()
            print(f"profiles: reused from {pdir} (their time is not in the figures below)")
        else:
            pdir = Path(tmp) / "proj"
            shape_args = [] if a.model else [x for k, v in shape.items()
                                             for x in ("--input-shape", f"{k}={','.join(map(str, v['shape']))}")]
            model = Path(a.model).expanduser() if a.model else corpus / MODEL
            _ok(_cli("new", model, "--dir", pdir, "--link", *shape_args, env=env), "new")
            t0 = time.monotonic()
            _ok(_cli("profile", "perf", pdir, "--engine", a.engine, env=env), "profile perf")
            t_perf = time.monotonic() - t0
            t0 = time.monotonic()
            _ok(_cli("profile", "quant", pdir, env=env), "profile quant")
            t_quant = time.monotonic() - t0
            print(f"profiles: perf {t_perf:.0f} s, quant {t_quant:.0f} s")
        results: dict[str, list[dict]] = {"probe": [], "loose": [], "tight": []}
        for run in range(a.runs):
            for kind in ("probe", "loose", "tight"):
                if kind == "probe":
                    budget = 1e6
                else:
                    c = float(results["probe"][-1]["whole_model_int8"]["output_change"])
                    if c <= 0 and kind == "tight":
                        print("tight: skipped, whole-model INT8 moves this model's outputs by 0 (no budget is below)")
                        continue
                    budget = (1.5 if kind == "loose" else 0.5) * c if c > 0 else 1e-9
                t0 = time.monotonic()
                res = _cli("optimize", pdir, "--max-output-change", f"{budget:.6g}", "--engine", a.engine,
                           "--precision", "int8", "--max-minutes", a.max_minutes, "--name", f"{kind}{run}",
                           "--json", env=env)
                _ok(res, f"optimize ({kind})")
                doc = json.loads(res.stdout)
                doc["wall_s"] = time.monotonic() - t0
                results[kind].append(doc)
                w, d = doc.get("whole_model_int8") or {}, doc.get("dense_fp32") or {}
                fp32 = len(doc["fp32_layers"])
                print(f"run {run + 1} {kind}: budget {budget:.4g}, measured change {doc['measured_output_change']:.4g}"
                      f" ({doc['chosen']}, {fp32} layers fp32), speedup {doc['measured_speedup']:.2f}x; "
                      f"{a.engine} int8 dense {w.get('measured_speedup') or 0:.2f}x (change "
                      f"{w.get('output_change') or 0:.4g}), {a.engine} fp32 dense {d.get('measured_speedup') or 0:.2f}x; "
                      f"{len(doc['iterations'])} iterations, {doc['wall_s']:.0f} s; stopped: {doc['stopped']}")
        med = statistics.median
        lo, ti = results["loose"], results["tight"]
        print()
        print(f"loose: median speedup {med(r['measured_speedup'] for r in lo):.2f}x against whole-model INT8's "
              f"{med(r['whole_model_int8']['measured_speedup'] for r in lo):.2f}x; iterations "
              f"{med(len(r['iterations']) for r in lo):g}; time to result {med(r['wall_s'] for r in lo):.0f} s "
              f"(+ profiles {t_perf + t_quant:.0f} s)")
        print(f"tight: median speedup {med(r['measured_speedup'] for r in ti):.2f}x against {a.engine} fp32 dense "
                  f"{med(r['dense_fp32']['measured_speedup'] for r in ti):.2f}x; within budget "
                  f"{sum(r['measured_output_change'] <= r['budget'] for r in ti)}/{len(ti)}; iterations "
                  f"{med(len(r['iterations']) for r in ti):g}; time to result {med(r['wall_s'] for r in ti):.0f} s")
        holds = [
            ("loose: speedup >= whole-model INT8", all(r["measured_speedup"] >= r["whole_model_int8"]["measured_speedup"]
                                                      for r in lo)),
            ("tight: within the budget", bool(ti) and all(r["measured_output_change"] <= r["budget"] for r in ti)),
            ("tight: faster than fp32", bool(ti) and all(r["measured_speedup"] > r["dense_fp32"]["measured_speedup"] for r in ti)),
            ("time to a result, profiles measured before, <= 5 min", all(r["wall_s"] <= 300 for r in lo + ti)),
        ]
        for what, ok in holds:
            print(f"{'holds' if ok else 'FAILS'}: {what}")


if __name__ == "__main__":
    main()
