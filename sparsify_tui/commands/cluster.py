"""``sparsify-tui cluster status`` and ``sparsify-tui sweep``: profile sweeps on a Ray cluster.

Both need the optional extra (``pip install 'sparsify-tui[cluster]'``);
without it they end in ``error: the cluster commands need Ray: ...`` (exit 2).
The work is in :mod:`sparsify_tui.cluster`; this module parses flag values,
prints tables or one JSON document, and reports progress per server on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from sparsify_tui.commands.common import emit_json, print_table
from sparsify_tui.settings import parse_int, parse_int_list
from sparsify_tui.errors import ClusterError, UsageError


def run(args: argparse.Namespace) -> int:
    if args.command == "cluster":
        return run_status(args)
    return run_sweep(args)


# ---------------------------------------------------------------- status
def run_status(args: argparse.Namespace) -> int:
    from sparsify_tui.cluster import require_ray

    require_ray()
    from sparsify_tui.cluster.sweep import cluster_status

    doc = cluster_status(args.address)
    if args.json:
        emit_json(doc)
        return 0
    servers = doc["servers"]
    where = "local Ray instance" if doc["address"] == "local" else f"Ray cluster at {doc['address']}"
    print(f"{where}: {doc['nodes']} node(s), {len(servers)} benchmark server(s), Ray {doc['ray_version']}")
    if not servers:
        print("no benchmark server: join one with "
              "ray start --address=HEAD:PORT --resources='{\"sparsify-bench\": 1, \"sparsify-server:NAME\": 1}'")
        return 0
    rows = []
    for s in servers:
        engines = ", ".join(f"{k} {v}" for k, v in sorted(s["engines"].items()) if v) or "-"
        rows.append([s["name"], s["node_id"][:12], s["address"],
                     "-" if s["cores"] is None else s["cores"],
                     " ".join(s["isa"]) or "-", engines,
                     "ok" if s["usable"] else (s["error"] or "not usable")])
    print_table(["SERVER", "NODE", "ADDRESS", "CORES", "ISA", "ENGINES", "STATE"], rows, right=[3])
    for s in servers:
        for note in s["notes"]:
            print(f"note: {s['name']}: {note}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- sweep
def _parse_list(flag: str, value: str) -> list[str]:
    items = [p.strip().lower() for p in str(value).split(",") if p.strip()]
    if not items:
        raise UsageError(f"{flag} needs at least one value")
    return list(dict.fromkeys(items))


def build_spec(args: argparse.Namespace) -> Any:
    from sparsify_tui.cluster.sweep import ENGINES, KINDS, SweepSpec
    from sparsify_tui.settings import parse_levels
    from sparsify_tui.settings import PERF_LEVELS

    kind = str(args.kind).strip().lower()
    if kind not in KINDS:
        raise UsageError(f"--kind must be one of {', '.join(KINDS)}, got {args.kind!r}")
    engines = _parse_list("--engines", args.engines)
    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise UsageError(f"--engines: unknown engine {bad[0]!r} (choose among {', '.join(ENGINES)})")
    batch_sizes = sorted(set(parse_int_list("--batch-sizes", args.batch_sizes)))
    cores = None if args.cores is None else sorted(set(parse_int_list("--cores", args.cores)))
    # flags a later cli.py may add to `sweep`; the defaults match `profile perf`
    levels = parse_levels("--levels", getattr(args, "levels", None), PERF_LEVELS)
    iterations = parse_int("--iterations", getattr(args, "iterations", None) or 10)
    warmup = parse_int("--warmup", getattr(args, "warmup", None) or 5, minimum=0)
    repeats = parse_int("--repeats", getattr(args, "repeats", None) or 3)
    servers = str(args.servers or "all").strip() or "all"
    precision = getattr(args, "precision", None)
    if precision is not None:
        from sparsify_tui.engines.registry import engines as all_engines, normalize_precision

        precision = normalize_precision(precision)
        hinted = [e.name for e in all_engines() if e.precision_hint]
        if not set(hinted) & set(engines):
            raise UsageError(f"--precision applies to the {' and '.join(hinted)} jobs: add "
                             f"{' or '.join(hinted)} to --engines")
    return SweepSpec(kind=kind, servers=servers, batch_sizes=batch_sizes, cores=cores, engines=engines,
                     levels=levels, iterations=iterations, warmup=warmup, repeats=repeats, precision=precision)


class SweepProgress:
    """Progress per server on stderr, one line per event."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.start = time.monotonic()
        self.total: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def _print(self, line: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.start:6.1f}s] {line}", file=sys.stderr, flush=True)

    def __call__(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "plan":
            self.total = dict(ev.get("per_server") or {})
            self._print(f"sweep: {ev['total']} combinations on {len(ev['servers'])} server(s): "
                        f"{ev['to_measure']} to measure, {ev['cached']} already in the project, "
                        f"{len(ev['skipped'])} skipped")
            for s in ev["skipped"]:
                self._print(f"  skipped {s['server']}: {s.get('reason')}")
            return
        if kind == "lost":
            self._print(f"{ev['server']}: server lost ({ev.get('reason')}); moving {ev.get('jobs', 0)} job(s)")
            return
        if kind == "cancelling":
            self._print(f"cancelling {ev.get('running', 0)} running job(s); finished profiles are kept")
            return
        srv = ev.get("measured_on") or ev.get("server")
        tag = srv if ev.get("server") == srv else f"{srv} (for {ev.get('server')})"
        if kind == "start":
            self._print(f"{tag}: measuring {ev['label']} ...")
        elif kind == "done":
            self.done[srv] = self.done.get(srv, 0) + 1
            ips = ev.get("items_per_second")
            extra = f"{ips:,.1f} items/s" if isinstance(ips, (int, float)) else ""
            self._print(f"{tag}: done {ev['label']}: {extra} in {ev.get('seconds', 0):.1f} s "
                        f"-> {ev.get('profile_id')}  [{self.done[srv]}/{self.total.get(srv, '?')}]")
        elif kind == "failed":
            self._print(f"{tag}: FAILED {ev['label']}: {ev.get('reason')}")
        elif kind == "retry":
            self._print(f"{ev.get('server')}: retrying {ev['label']} on {ev.get('to')} ({ev.get('reason')})")
            self.total[ev.get("to")] = self.total.get(ev.get("to"), 0) + 1


def run_sweep(args: argparse.Namespace) -> int:
    from sparsify_tui.cluster import require_ray

    spec = build_spec(args)
    require_ray()
    from sparsify_tui.cluster.sweep import run_sweep as do_sweep
    from sparsify_tui.commands.common import resolve_target

    target = resolve_target(args.project)
    if target.project is None:
        raise UsageError(f"{args.project} is not a project directory; create one with: sparsify-tui new MODEL.onnx")
    project = target.project
    try:
        report = do_sweep(project, spec, address=args.address, on_event=SweepProgress())
    finally:
        project.close()
    doc = report.to_dict()
    if args.json:
        emit_json(doc)
    else:
        _print_report(doc)
    if report.failed:
        first = report.failed[0]
        raise ClusterError(
            f"{len(report.failed)} of {report.total} sweep jobs failed (first: {first['server']}: "
            f"{first.get('reason')}); the finished profiles are saved in {project.dir}, run the same sweep "
            "again to retry the rest"
        )
    return 0


def _print_report(doc: dict) -> None:
    rows = []
    for status in ("measured", "cached"):
        for r in doc[status]:
            ips = r.get("items_per_second")
            rows.append([r["server"], r.get("measured_on", r["server"]), r.get("batch_size", "-"),
                         r.get("cores", "-"), r.get("engine", "-"),
                         f"{ips:,.1f}" if isinstance(ips, (int, float)) else "-",
                         r.get("profile_id", "-"), status])
    for status in ("skipped", "failed"):
        for r in doc[status]:
            rows.append([r["server"], r.get("measured_on", r["server"]), r.get("batch_size", "-"),
                         r.get("cores", "-"), r.get("engine", "-"), "-", "-", f"{status}: {r.get('reason')}"])
    if rows:
        print_table(["SERVER", "MEASURED ON", "BATCH", "CORES", "ENGINE", "ITEMS/S", "PROFILE", "STATUS"],
                    rows, right=[2, 3, 5])
    c = doc["counts"]
    print(f"{doc['total']} combinations: {c['measured']} measured, {c['cached']} already in the project, "
          f"{c['skipped']} skipped, {c['failed']} failed ({doc['elapsed_s']:.1f} s)")
