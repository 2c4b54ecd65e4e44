"""Speed of perf profiles: overhead over the engine, and against SparseML's own sweep.

usage: python benchmarks/bench_perf.py [--runs N] [--model PATH] [--engine deepsparse]
                                      [--sparseml-python PATH]

(a) Overhead: wall time of a 10-level profile (as the caller sees it: child
    process start, imports, analysis, inputs, mapping, JSON) divided by the
    time spent inside the engine's own compile+run calls
    (``model_debug_analysis`` / the ORT session). Target: <= 1.25x.
(b) Against SparseML: ``pruning_perf_sens_one_shot`` sweeps 10 levels x
    (10 iterations + 5 warm-up) on the ResNet-50-sized model that
    ``scripts/build_resnet50.py`` writes, at optimization level 0; it
    takes 25-34 s on these machines. Ours runs the same
    levels and iterations at optimization level 1, with 1 and with 3 repeats
    of the dense level (the spread).

(c) With ``--sparseml-python PATH`` (a Python that has sparseml 1.8 and
    deepsparse 1.8; SparseML is not one of our dependencies), SparseML's own
    ``pruning_perf_sens_one_shot`` (``sparseml_perf_sweep.py``, the call's wall
    time in-process) and ``sparsify-tui profile perf --iterations 10 --warmup 5
    --repeats 1`` (a whole process) run turn about, ``--runs`` times each, so
    both are timed on the same machine in the same minutes; the ratio is the
    median of the per-pair ratios. The CPU seconds of each whole process are
    printed beside (a loaded machine stretches wall times, CPU time less).

Prints medians over ``--runs`` runs; ``extra s`` is the wall time outside the
engine calls (process start, imports, analysis, inputs, mapping). The machine is shared and noisy: the
load average is printed with every row.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

from sparsify_tui.settings import PERF_LEVELS  # noqa: E402
from sparsify_tui.profiles.perf import run_perf_profile  # noqa: E402

SPARSEML_SECONDS = (25.2, 34.4)


def resnet50_sized(out_dir: Path) -> Path:
    path = out_dir / "resnet50.onnx"
    if not path.exists():
        from sparsify_tui.analysis.demo import build_resnet50_model

        build_resnet50_model(path)
    return path


def one(model: Path, engine: str, iterations: int, warmup: int, repeats: int) -> dict:
    t0 = time.perf_counter()
    doc = run_perf_profile(model, engine=engine, levels=PERF_LEVELS, iterations=iterations, warmup=warmup,
                           repeats=repeats)
    wall = time.perf_counter() - t0
    if doc.get("incomplete"):
        print(f"  warning: incomplete profile: {doc.get('error')}", file=sys.stderr)
    return {"wall_s": wall, "engine_s": doc["engine_seconds"], "baseline_ms": doc["baseline_ms"],
            "ms_09": doc["model_ms_by_level"].get("0.9"), "engine": doc["engine"], "load": os.getloadavg()[0]}


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def sparseml_once(python: str, model: Path, iterations: int, warmup: int) -> float:
    return sparseml_timed(python, model, iterations, warmup)[0]


def sparseml_timed(python: str, model: Path, iterations: int, warmup: int) -> tuple[float, float]:
    """SparseML's sweep in its own process: (wall s of the sweep call, CPU s of the whole process)."""
    import json

    script = Path(__file__).with_name("sparseml_perf_sweep.py")
    c0 = _child_cpu()
    proc = subprocess.run([python, str(script), str(model), "--iterations", str(iterations), "--warmup", str(warmup)],
                          capture_output=True, text=True)
    cpu = _child_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"error: SparseML's sweep failed: {proc.stderr.strip().splitlines()[-1:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["wall_s"]), cpu


def cli_timed(model: Path, iterations: int, warmup: int, repeats: int, engine: str = "deepsparse",
              tree: Path | None = None) -> tuple[float, float]:
    """``sparsify-tui profile perf`` of ``tree`` (default: this one, not an installed one) as a whole process:
    (wall s, CPU s of the process and its worker)."""
    cmd = [sys.executable, "-m", "sparsify_tui", "profile", "perf", str(model), "--engine", engine,
           "--iterations", str(iterations), "--warmup", str(warmup), "--repeats", str(repeats), "--json"]
    env = dict(os.environ, PYTHONPATH=str(tree or Path(__file__).resolve().parents[1]))
    c0 = _child_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = _child_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return wall, cpu


def head_to_head(model: Path, engine: str, python: str, runs: int) -> None:
    """SparseML's sweep (in-process wall of the call) and ours as a whole process, turn about."""
    ours, theirs, ratios, cpu_ratios = [], [], [], []
    eng = "deepsparse" if engine == "auto" else engine
    for i in range(runs):
        s, s_cpu = sparseml_timed(python, model, 10, 5)
        o, o_cpu = cli_timed(model, 10, 5, 1, eng)
        theirs.append(s)
        ours.append(o)
        ratios.append(o / s)
        cpu_ratios.append(o_cpu / s_cpu)
        print(f"  pair {i + 1}: SparseML (opt level 0, in-process) {s:.1f} s ({s_cpu:.1f} CPU s, whole process), "
              f"ours (opt level 1, whole process) {o:.1f} s ({o_cpu:.1f} CPU s), ours/SparseML {o / s:.2f} "
              f"(CPU {o_cpu / s_cpu:.2f}), load {os.getloadavg()[0]:.1f}", flush=True)
    med = statistics.median
    print(f"(c) 10 levels x (10 + 5) iterations, {runs} pairs: SparseML {med(theirs):.1f} s, ours {med(ours):.1f} s, "
          f"ours/SparseML {med(ratios):.2f} (<= 1.00: no slower); CPU seconds ours/SparseML {med(cpu_ratios):.2f}")
    print()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default=None, help="default: the ResNet-50-sized model of build_resnet50.py")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "sparsify-bench"))
    ap.add_argument("--sparseml-python", default=None,
                    help="a Python with sparseml+deepsparse 1.8: time SparseML's sweep turn about with ours")
    ap.add_argument("--only-vs-sparseml", action="store_true", help="skip (a) and (b), run only (c)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else resnet50_sized(work)
    print(f"model: {model}  ({model.stat().st_size / 1e6:.1f} MB), 10 levels {list(PERF_LEVELS)}")
    if args.sparseml_python:
        head_to_head(model, args.engine, args.sparseml_python, args.runs)
        if args.only_vs_sparseml:
            return 0
    configs = [("10 it + 5 warm-up, 1 repeat (SparseML's sweep)", 10, 5, 1),
               ("10 it + 5 warm-up, 3 repeats of the dense level", 10, 5, 3)]
    rows = []
    for label, it, wu, rep in configs:
        runs = []
        for i in range(args.runs):
            r = one(model, args.engine, it, wu, rep)
            runs.append(r)
            print(f"  {label} run {i + 1}: wall {r['wall_s']:.1f} s, engine {r['engine_s']:.1f} s, "
                  f"overhead {r['wall_s'] / r['engine_s']:.2f}x, dense {r['baseline_ms']:.1f} ms, "
                  f"0.9 {r['ms_09']:.1f} ms, load {r['load']:.1f}", flush=True)
        rows.append((label, runs))
    print()
    print(f"{'configuration':52s} {'wall s':>8s} {'engine s':>9s} {'overhead':>9s} {'extra s':>8s} {'dense ms':>9s} "
          f"{'0.9 ms':>8s} {'speedup':>8s}")
    for label, runs in rows:
        w = statistics.median(r["wall_s"] for r in runs)
        e = statistics.median(r["engine_s"] for r in runs)
        ov = statistics.median(r["wall_s"] / r["engine_s"] for r in runs)
        d = statistics.median(r["baseline_ms"] for r in runs)
        s9 = statistics.median(r["ms_09"] for r in runs)
        extra = statistics.median(r["wall_s"] - r["engine_s"] for r in runs)
        print(f"{label:52s} {w:8.1f} {e:9.1f} {ov:8.2f}x {extra:8.1f} {d:9.1f} {s9:8.1f} {d / s9:7.2f}x")
    print(f"SparseML pruning_perf_sens_one_shot, same sweep (reference, opt level 0): "
          f"{SPARSEML_SECONDS[0]}-{SPARSEML_SECONDS[1]} s")
    print(f"engine: {rows[0][1][0]['engine']}; load average now {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
