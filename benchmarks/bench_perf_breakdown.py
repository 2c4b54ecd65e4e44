"""Where the time of a DeepSparse perf profile goes, phase by phase.

usage: python benchmarks/bench_perf_breakdown.py [--runs N] [--model PATH] [--iterations 10] [--warmup 5]
                                                [--repeats 1] [--cli] [--base-tree DIR]

Runs the ``perf`` job in this process (as the worker does) with timers around
each phase and prints, per phase, the median over ``--runs`` runs:

* ``load+analysis``: reading the model and its FLOP analysis; ``inputs``;
* ``private copy``: the copy of the model DeepSparse may rewrite (input shapes fixed once);
* ``dense`` / ``levels``: each ``model_debug_analysis`` call, split into its compile
  (+ warm-up, the call's time outside the timed iterations) and its timed iterations;
* ``re-measures``: calls beyond one per level (interference above the threshold, or a
  level slower than the one before -- the level sanity check);
* ``deployed``: the engine as deployed (``compile_model`` and its timed repeats);
* ``sampler``: CPU time of the interference sampler's thread (snapshots of /proc);
* ``assemble+quality``: building the document and its quality block;
* ``CPU s of the job``: the process CPU time of the whole job (a loaded machine stretches the
  wall times; CPU time much less). The counts say how many compiles ran, how many were
  re-measures, and how many level checks (a level slower than the one before) were answered
  without a compile more (the level's timed runs were quiet, or the machine stayed busy).

The whole-process runs print each process's CPU seconds (it and its worker) beside its wall time.

With ``--cli`` it also times ``sparsify-tui profile perf`` as a whole process (the
issue's figure). With ``--base-tree DIR`` (an export of another commit) the
whole-process run of that tree and of this one alternate, run by run, so both are
timed in the same minutes; the ratio is the median of the per-pair ratios. With
``--sparseml-python PY`` SparseML's ``pruning_perf_sens_one_shot`` (``sparseml_perf_sweep.py``)
runs first in each pair.
The machine may be shared: the load average is printed with every run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

ROOT = Path(__file__).resolve().parents[1]


def resnet50_sized(out_dir: Path) -> Path:
    path = out_dir / "resnet50.onnx"
    if not path.exists():
        from sparsify_tui.analysis.demo import build_resnet50_model

        build_resnet50_model(path)
    return path


@contextlib.contextmanager
def patched(obj, name, wrapper):
    old = getattr(obj, name)
    setattr(obj, name, wrapper(old))
    try:
        yield
    finally:
        setattr(obj, name, old)


def breakdown_once(model: Path, iterations: int, warmup: int, repeats: int) -> dict:
    """One in-process perf job; {phase: seconds} and a few counts."""
    from sparsify_tui.engines import deepsparse_engine as dse
    from sparsify_tui.engines import inputs as inp
    from sparsify_tui.engines import interference as itf
    from sparsify_tui.engines import modelinfo
    from sparsify_tui.jobs import JobContext
    from sparsify_tui.jobs import perf as perfjob
    from sparsify_tui.settings import PERF_LEVELS, usable_cores

    t = defaultdict(float)
    counts = defaultdict(int)
    seen_levels: set = set()
    sampler_cpu = [0.0]

    def timed(phase):
        def wrap(fn):
            def inner(*a, **k):
                t0 = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    t[phase] += time.perf_counter() - t0
            return inner
        return wrap

    def wrap_analyze(fn):
        def inner(*a, **k):
            t0 = time.perf_counter()
            res = fn(*a, **k)
            wall = time.perf_counter() - t0
            lv = k.get("level") or 0.0
            timed_s = sum(res["iteration_ms"]) / 1000.0
            first = lv not in seen_levels or (lv == 0.0 and counts["dense calls"] < repeats)
            if lv == 0.0:
                counts["dense calls"] += 1
            seen_levels.add(lv)
            if first:
                key = "dense" if lv == 0.0 else "levels"
                t[f"{key}: compile+warm-up"] += wall - timed_s
                t[f"{key}: timed iterations"] += timed_s
                t[f"{key}: mapping"] += wall - res["engine_s"]
                counts["compiles"] += 1
            else:
                t["re-measures"] += wall
                counts["re-measures"] += 1
                counts["compiles"] += 1
            return res
        return inner

    def wrap_bench(fn):
        def inner(*a, **k):
            t0 = time.perf_counter()
            res = fn(*a, **k)
            wall = time.perf_counter() - t0
            t["deployed: compile"] += res.get("compile_s", 0.0)
            t["deployed: timed runs"] += wall - res.get("compile_s", 0.0)
            counts["compiles"] += 1
            return res
        return inner

    orig_loop = itf.Sampler._loop

    def loop(self):
        c0 = time.thread_time()
        try:
            orig_loop(self)
        finally:
            sampler_cpu[0] += time.thread_time() - c0

    orig_compatible = dse.compatible_model

    @contextlib.contextmanager
    def compatible(*a, **k):
        t0 = time.perf_counter()
        with orig_compatible(*a, **k) as v:
            t["private copy"] += time.perf_counter() - t0
            yield v

    job = {"kind": "perf", "model_path": str(model), "engine": "deepsparse", "batch_size": 1,
           "cores": usable_cores(), "levels": list(PERF_LEVELS), "iterations": iterations, "warmup": warmup,
           "repeats": repeats, "input_shapes": {}, "data": None}
    ctx = JobContext(lambda _e: None, cores=usable_cores())

    def wrap_sanity(fn):
        def inner(self, lv):
            res = fn(self, lv)
            counts["level checks without a compile (quiet or stayed busy)" if res is None
                   else "level checks measured again"] += 1
            return res
        return inner

    with contextlib.ExitStack() as st:
        st.enter_context(patched(perfjob.PerfRun, "_sanity_again", wrap_sanity))
        st.enter_context(patched(dse, "analyze_level", wrap_analyze))
        st.enter_context(patched(dse, "benchmark", wrap_bench))
        st.enter_context(patched(dse, "compatible_model", lambda _f: compatible))
        st.enter_context(patched(modelinfo, "load_model_info", timed("load+analysis")))
        st.enter_context(patched(inp, "make_inputs", timed("inputs")))
        st.enter_context(patched(perfjob, "assemble", timed("assemble+quality")))
        st.enter_context(patched(perfjob, "add_quality", timed("assemble+quality")))
        st.enter_context(patched(itf.Sampler, "_loop", lambda _f: loop))
        t0 = time.perf_counter()
        c0 = time.process_time()
        doc = perfjob.perf_job(job, ctx)
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
    t["sampler (CPU of its thread)"] = sampler_cpu[0]
    accounted = sum(v for k, v in t.items() if not k.startswith(("sampler", "CPU")))
    t["other"] = total - accounted
    t["total (in-process job)"] = total
    t["CPU s of the job (all threads)"] = cpu
    q = doc.get("quality") or {}
    counts["instrumentation ratio x100"] = round(100 * (q.get("instrumentation_ratio") or 0))
    return {"t": dict(t), "counts": dict(counts), "load": os.getloadavg()[0]}


def cli_once(tree: Path, model: Path, iterations: int, warmup: int, repeats: int) -> float:
    return cli_timed(tree, model, iterations, warmup, repeats)[0]


def cli_timed(tree: Path, model: Path, iterations: int, warmup: int, repeats: int) -> tuple[float, float]:
    """The whole ``sparsify-tui profile perf`` process of ``tree`` on DeepSparse: (wall s, CPU s of it and its
    worker), timed as ``bench_perf.py`` times it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_perf import cli_timed as timed

    return timed(model, iterations, warmup, repeats, tree=tree)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default=None, help="default: the ResNet-50-sized demo model")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "sparsify-bench"))
    ap.add_argument("--cli", action="store_true", help="also time the whole process (sparsify-tui profile perf)")
    ap.add_argument("--base-tree", default=None, help="another tree: its whole-process run alternates with ours")
    ap.add_argument("--sparseml-python", default=None,
                    help="a Python with sparseml+deepsparse 1.8: SparseML's sweep runs in each pair too")
    ap.add_argument("--no-breakdown", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else resnet50_sized(work)
    print(f"model: {model} ({model.stat().st_size / 1e6:.1f} MB); {args.iterations} it + {args.warmup} warm-up, "
          f"{args.repeats} repeat(s); {os.cpu_count()} CPUs")
    if not args.no_breakdown:
        runs = []
        for i in range(args.runs):
            r = breakdown_once(model, args.iterations, args.warmup, args.repeats)
            runs.append(r)
            print(f"  run {i + 1}: {r['t']['total (in-process job)']:.1f} s, {r['counts']}, load {r['load']:.1f}",
                  flush=True)
        phases = list(dict.fromkeys(k for r in runs for k in r["t"]))
        print(f"{'phase':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
        for ph in phases:
            xs = [r["t"].get(ph, 0.0) for r in runs]
            print(f"{ph:40s} {statistics.median(xs):9.2f} {min(xs):7.2f} {max(xs):7.2f}")
    if args.cli or args.base_tree or args.sparseml_python:
        ours, base, ratios = [], [], []
        theirs = []
        cpus = defaultdict(list)
        for i in range(args.runs):
            line = f"  pair {i + 1}:"
            if args.sparseml_python:
                sys.path.insert(0, str(Path(__file__).parent))
                from bench_perf import sparseml_timed

                s, s_cpu = sparseml_timed(args.sparseml_python, model, args.iterations, args.warmup)
                theirs.append(s)
                cpus["SparseML"].append(s_cpu)
                line += f" SparseML {s:.1f} s ({s_cpu:.1f} CPU s),"
            if args.base_tree:
                b, b_cpu = cli_timed(Path(args.base_tree), model, args.iterations, args.warmup, args.repeats)
                base.append(b)
                cpus["base"].append(b_cpu)
                line += f" base {b:.1f} s ({b_cpu:.1f} CPU s),"
            o, o_cpu = cli_timed(ROOT, model, args.iterations, args.warmup, args.repeats)
            ours.append(o)
            cpus["ours"].append(o_cpu)
            line += f" ours {o:.1f} s ({o_cpu:.1f} CPU s)"
            if args.base_tree:
                ratios.append(o / b)
                line += f", ours/base {o / b:.2f}"
            print(f"{line}, load {os.getloadavg()[0]:.1f}", flush=True)
        med = statistics.median
        msg = f"whole process, {args.runs} runs: ours {med(ours):.1f} s"
        if base:
            msg += f", base {med(base):.1f} s, ours/base {med(ratios):.2f} (median of pairs)"
        if theirs:
            msg += f", SparseML {med(theirs):.1f} s, ours/SparseML {med(o / s for o, s in zip(ours, theirs)):.2f}"
            if base:
                msg += f", base/SparseML {med(b / s for b, s in zip(base, theirs)):.2f}"
        print(msg)
        print("CPU seconds (whole processes, medians): "
              + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in cpus.items()))
    print(f"load average now {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda a: None  # a sampler thread ending at exit is not an error here
    raise SystemExit(main())
