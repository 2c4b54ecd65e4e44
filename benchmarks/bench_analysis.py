"""Speed and memory of the model analysis.

usage: python benchmarks/bench_analysis.py [MODEL.onnx ...] [--runs N]

Without a model it builds the ResNet-50-sized model of
``scripts/build_resnet50.py`` (100 MB, 25.5M weights) in a temporary
directory. For each model it prints the median in-process ``analyze()`` time
(interpreter start excluded; the first, cold call is shown apart), the
median wall time of ``sparsify-tui info --json`` as a whole process, and the
peak RSS of that process, against the targets of issue 2:
analyze <= 0.15 s, info --json <= 0.6 s, peak RSS <= 2 x file size + 200 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
def build_resnet50(out_dir: Path) -> Path:
    from sparsify_tui.analysis.demo import build_resnet50_model

    return build_resnet50_model(out_dir / "resnet50.onnx")


def in_process(path: Path, runs: int) -> tuple[float, float, float, object]:
    """First (cold) wall time, median wall time, median CPU time of analyze()."""
    from sparsify_tui.analysis import analyze

    t = time.perf_counter()
    g = analyze(path)
    first = time.perf_counter() - t
    times, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        g = analyze(path)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return first, statistics.median(times), statistics.median(cpu), g


def whole_process(path: Path, runs: int) -> tuple[float, float, int]:
    """Median wall time, median CPU time (user+sys) and max peak RSS (bytes) of
    `python -m sparsify_tui info --json PATH`."""
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1")
    # As after `pip install`: our modules' bytecode cached. (This dev environment sets
    # PYTHONDONTWRITEBYTECODE, which makes every start recompile sparsify_tui: +0.1 s.)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "sparsify_tui", "info", "--json", str(path)], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm-up: writes the bytecode
    walls, cpus, peaks = [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "sparsify_tui", "info", "--json", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"error: info failed on {path}: {proc.stderr.read().decode(errors='replace')}")
        peaks.append(usage.ru_maxrss * 1024)  # KiB on Linux
        cpus.append(usage.ru_utime + usage.ru_stime)
    return statistics.median(walls), statistics.median(cpus), max(peaks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="ONNX files (default: build the ResNet-50-sized model)")
    ap.add_argument("--runs", type=int, default=9, help="runs per measurement (default 9, at least 7 advised)")
    args = ap.parse_args()
    tmp = None
    paths = [Path(m) for m in args.models]
    if not paths:
        tmp = tempfile.TemporaryDirectory(prefix="bench_analysis_")
        paths = [build_resnet50(Path(tmp.name))]
    rows = []
    for p in paths:
        size = p.stat().st_size
        first, med, med_cpu, g = in_process(p, args.runs)
        wall, cpu, peak = whole_process(p, args.runs)
        limit_rss = 2 * size + 200e6
        rows.append((p.name, size, len(g.layers), g.params, first, med, med_cpu, wall, cpu, peak, limit_rss))
    print(f"{'model':<28} {'MB':>6} {'layers':>6} {'params':>11} {'analyze 1st':>11} {'analyze med':>11} "
          f"{'(cpu)':>7} {'info --json':>11} {'(cpu)':>7} {'peak RSS':>9}  verdict")
    ok_all = True
    for name, size, nl, params, first, med, med_cpu, wall, cpu, peak, limit_rss in rows:
        ok = med <= 0.15 and wall <= 0.6 and peak <= limit_rss
        ok_all &= ok
        print(f"{name:<28} {size / 1e6:>6.1f} {nl:>6} {params:>11,} {first:>10.3f}s {med:>10.3f}s {med_cpu:>6.3f}s "
              f"{wall:>10.3f}s {cpu:>6.3f}s {peak / 1e6:>7.0f}MB  {'ok' if ok else 'OVER'} "
              f"(targets 0.15 s / 0.6 s / {limit_rss / 1e6:.0f} MB)")
    load = os.getloadavg()[0]
    print(f"runs per figure: {args.runs}; python {sys.version.split()[0]}; cores usable: "
          f"{len(os.sched_getaffinity(0))}; load average {load:.1f}"
          + (" (busy machine: wall times are inflated; the cpu columns are less affected)" if load > 1.5 else ""))
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
