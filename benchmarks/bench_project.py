"""Benchmark projects: SIGKILL-while-saving loop (large count), save/open/add_profile timings, hashing.

    python benchmarks/bench_project.py [--kills 1000] [--runs 15] [--model PATH]

Prints medians (and the spread) of several runs. Not a test: nothing is
asserted except what the kill loop checks after every kill (the project
opens with either the old or the new content; see tests/test_project_kill.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
if "SPARSIFY_TUI_HOME" not in os.environ:  # keep the user's recent-projects list clean
    import atexit
    import shutil

    os.environ["SPARSIFY_TUI_HOME"] = tempfile.mkdtemp(prefix="bench-project-home-")
    atexit.register(shutil.rmtree, os.environ["SPARSIFY_TUI_HOME"], True)

from sparsify_tui import fsutil  # noqa: E402
from sparsify_tui.project import Project  # noqa: E402
from test_project_kill import PAD, make_kill_project, run_kill_loop  # noqa: E402

MACHINE = {"cpu_model": "bench", "isa": ["avx2"], "cores": 2, "fingerprint": "bench"}


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(label: str, ms: list[float]) -> list[str]:
    q = statistics.quantiles(ms, n=4) if len(ms) >= 4 else [min(ms), statistics.median(ms), max(ms)]
    return [label, f"{statistics.median(ms):.2f}", f"{q[0]:.2f}", f"{q[-1]:.2f}", str(len(ms))]


def print_table(rows: list[list[str]]) -> None:
    headers = ["measure", "median ms", "p25 ms", "p75 ms", "runs"]
    widths = [max(len(r[i]) for r in rows + [headers]) for i in range(len(headers))]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=1000, help="SIGKILLs in the kill loop (default 1000)")
    ap.add_argument("--runs", type=int, default=15, help="runs per timing (default 15)")
    ap.add_argument("--model", default=None, help="ONNX model for the create timing (default: largest corpus model)")
    args = ap.parse_args()
    rows: list[list[str]] = []
    base = Path(tempfile.mkdtemp(prefix="bench-project-"))
    try:
        return _run(args, rows, base)
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def _run(args: argparse.Namespace, rows: list[list[str]], base: Path) -> int:

    # -------- kill loop
    d = make_kill_project(base / "kill")
    t = time.perf_counter()
    stats = run_kill_loop(d, args.kills, seed=7)
    dt = time.perf_counter() - t
    print(f"kill loop: {stats['kills']} SIGKILLs in {dt:.1f}s, all checks passed; "
          f"{stats['saves']} saves completed, {stats['torn']} kills left a half-written temporary file, "
          f"{stats['in_flight']} kills landed after a save reached the disk but before it was reported; "
          f"final save number {stats['final_n']}")
    print()

    # -------- save / open with many profiles
    m = base / "kill" / "m.onnx"
    for n_profiles in (10, 100):
        p = Project.create(m, dir=base / f"p{n_profiles}", name=f"p{n_profiles}")
        for i in range(n_profiles):
            p.add_profile("perf", f"p{i}", {"i": i, "levels": [0, 0.4, 0.6, 0.9], "pad": PAD[:200]},
                          "onnxruntime", "1.18.1", MACHINE, {"layers": [{"id": f"l{j}", "ms": j} for j in range(50)]})
        rows.append(row(f"save() with {n_profiles} profiles", timed(p.save, args.runs)))
        k = [0]

        def add() -> None:
            k[0] += 1
            p.add_profile("perf", "again", {"i": 0, "levels": [0, 0.4, 0.6, 0.9], "pad": PAD[:200]},
                          "onnxruntime", "1.18.1", MACHINE, {"n": k[0]})

        rows.append(row(f"add_profile() replacing, {n_profiles} profiles", timed(add, args.runs)))
        p.close()
        rows.append(row(f"open()+close() with {n_profiles} profiles",
                        timed(lambda: Project.open(p.dir).close(), args.runs)))
        q = Project.open(p.dir, readonly=True)
        def problems() -> None:
            q._profile_check_cache.clear()  # read every file again
            q.profile_problems()

        rows.append(row(f"profile_problems() reading {n_profiles} files", timed(problems, 5)))

    # -------- hashing a 100 MB model, and open() with an unchanged vs a changed model
    big = base / "big.bin"
    with open(big, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    rows.append(row("sha256 of 100 MB (1 MiB chunks)", timed(lambda: fsutil.sha256_file(big), 5)))
    corpus = REPO.parent / "cache" / "models"
    model = Path(args.model) if args.model else max(corpus.glob("*.onnx"), key=lambda x: x.stat().st_size,
                                                     default=None) if corpus.is_dir() else None
    if model is not None:
        def create() -> None:
            target = base / f"create-{time.monotonic_ns()}"
            Project.create(model, dir=target).close()

        rows.append(row(f"create() {model.name} ({model.stat().st_size / 1e6:.0f} MB, analyse+copy+hash)",
                        timed(create, 3)))
        pl = Project.create(model, dir=base / "linked", link=False)
        pl.close()
        rows.append(row("open() unchanged large model (no rehash)", timed(lambda: Project.open(pl.dir).close(), 5)))

        def touched_open() -> None:
            os.utime(pl.model_path)  # mtime changes: the model is hashed again
            Project.open(pl.dir).close()

        rows.append(row("open() after the model's mtime changed (rehash)", timed(touched_open, 5)))
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
