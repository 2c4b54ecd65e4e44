"""The deployment search on several servers of a Ray cluster (``sparsify-tui deploy --servers``).

The driver reads the optimizations' plans, prunes and quantizes once (none of
it depends on the machine: :func:`sparsify_tui.actions.deploy.build`) and puts
the files, the timing inputs and the held-out batches into Ray's object store
once. Each selected server then runs one task (:func:`.tasks.deploy_search`)
holding its ``sparsify-bench`` unit, so no two measurements share a server; it
runs today's child job there and returns the raw rows and rounds. The driver
computes timings, output change and Pareto flags per server against that
server's own ONNX Runtime fp32 dense reference, and stores one deploy profile
per server as soon as it arrives (settings + ``server``, keyed by that
server's machine fingerprint and engine versions), so running again measures
only the servers that are missing.

Faults follow the sweep (:mod:`.sweep`'s driver loop is reused): a server lost
mid-search has its search moved to an equivalent server of the selection (same
instruction sets, at least as many cores) or reported failed; Ctrl+C cancels the
tasks in flight and keeps the servers already stored.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsify_tui.cluster.servers import Server, list_servers, probe_servers, select_servers
from sparsify_tui.cluster.sweep import (
    CancelledError, ClusterError, EventCallback, Job, Plan, SweepReport, SweepSpec, _emit_safe, _Runner,
    model_files, measure_options,
)

if TYPE_CHECKING:
    from sparsify_tui.project import Project

SCHEMA_VERSION = 1
KIND = "deploy"


def machine_brief(machine: dict | None) -> dict:
    """What the deploy screen and JSON show of a server: CPU model, cores, instruction sets, AMX, bf16."""
    m = machine or {}
    isa = list(m.get("isa") or [])
    return {"cpu_model": m.get("cpu_model"), "cores": m.get("usable_cores") or m.get("logical_cores"),
            "physical_cores": m.get("physical_cores"), "isa": isa, "amx": any(x.startswith("amx") for x in isa),
            "bf16": bool(m.get("bf16")) or any("bf16" in x for x in isa), "fingerprint": m.get("fingerprint"),
            "engines": dict(m.get("engines") or {})}


def search_capabilities(server: Server) -> dict:
    """``{engine: {precision: None (runs) or why not}}`` of the deployment search on ``server``, from its probed
    machine summary (``cluster status``): the same checks the search's child job makes there."""
    from sparsify_tui.actions.deploy import ENGINES, PRECISIONS
    from sparsify_tui.engines.registry import get_engine, precision_problem

    out: dict[str, dict[str, str | None]] = {}
    for e in ENGINES:
        if not server.engines.get(e):
            out[e] = {p: get_engine(e).install_hint for p in PRECISIONS}
            continue
        out[e] = {p: precision_problem(e, p, server.machine) for p in PRECISIONS}
    return out


class _Target:
    """One server's search: its settings, cache key and (once known) its document."""

    def __init__(self, server: Server, cores: int, settings: dict, versions: dict[str, str], key: str) -> None:
        self.server, self.cores, self.settings, self.versions, self.key = server, cores, settings, versions, key
        self.doc: dict | None = None
        self.failed: str | None = None
        self.measured_on: str | None = None


_REMOTE_SEARCH = None


class _DeployRunner(_Runner):
    """The sweep's driver loop with one deployment search per server."""

    def __init__(self, project: "Project", servers: list[Server], targets: dict[str, _Target], bundle: dict,
                 setup: Any, built: Any, report: SweepReport, on_event: EventCallback | None,
                 cancel: threading.Event | None) -> None:
        # every usable server of the selection (also those whose result was cached) can take a lost one's search
        plan = Plan(servers=servers, jobs=[Job(KIND, name) for name in targets], cached=[], skipped=[])
        super().__init__(project, plan, SweepSpec(kind="perf"), report, on_event, cancel)
        self.targets, self.bundle, self.setup, self.built = targets, bundle, setup, built

    def put_model(self) -> Any:
        try:
            return self.ray.put(self.bundle)
        except Exception as exc:  # noqa: BLE001 - ObjectStoreFullError and friends
            raise ClusterError(f"could not send the deployment files to Ray's object store: {exc}") from None

    def submit(self, srv: Server, job: Job) -> Any:
        global _REMOTE_SEARCH
        if _REMOTE_SEARCH is None:
            from sparsify_tui.cluster import tasks

            _REMOTE_SEARCH = self.ray.remote(tasks.deploy_search)
        return _REMOTE_SEARCH.options(**measure_options(srv)).remote(self.model_ref, self.targets[job.server].cores)

    def store(self, job: Job, result: dict) -> None:
        from sparsify_tui.actions.deploy import make_doc, store_doc
        from sparsify_tui.optim.optimization import now_iso

        t = self.targets[job.server]
        t.measured_on = job.run_on
        m = result.get("measurement") or {}
        doc = make_doc(self.setup, self.built, m, cores=t.cores, machine=result.get("machine"),
                       versions=result.get("versions") or t.versions,
                       started=now_iso(), complete=not result.get("error"), error=result.get("error"))
        doc["cluster"] = {"server": job.server, "measured_on": job.run_on, "node_id": result.get("node_id"),
                          "hostname": result.get("hostname"), "started": result.get("started"),
                          "finished": result.get("finished"), "retried_from": list(job.retried_from)}
        if result.get("error"):
            t.failed = f"on server {job.run_on}: {result['error']}"
            self.report.failed.append(job.row(reason=t.failed))
            self.emit("failed", job, reason=t.failed)
            if m.get("rounds"):
                store_doc(self.project, dict(t.settings, incomplete=True), t.versions, t.server.machine, doc,
                          label=f"deploy {job.server}")
            return
        store_doc(self.project, t.settings, t.versions, t.server.machine, doc,
                  label=f"deploy {job.server} b{doc['batch_size']} c{doc['cores']}")
        doc["cached"] = False
        t.doc = doc
        self.report.measured.append(job.row(profile_id=doc.get("entry_id"), node_id=result.get("node_id"),
                                            started=result.get("started"), finished=result.get("finished")))
        self.emit("done", job, profile_id=doc.get("entry_id"), rows=len(doc["rows"]))


def _bundle(project: "Project", built: Any, tmp: Path) -> dict:
    """The files the servers need, ``{relative name: bytes}``, and the job naming them relatively."""
    files = {f"dense/{k}": v for k, v in model_files(project.model_path).items()}
    dense = str(Path(project.model_path))

    def rel(path: str | None) -> str | None:
        if not path:
            return None
        if path == dense:
            return "dense/model.onnx"
        name = str(Path(path).relative_to(tmp))
        files[name] = Path(path).read_bytes()
        return name

    job = dict(built.job)
    job["variants"] = [dict(v, fp32=rel(v["fp32"]), int8=rel(v.get("int8"))) for v in job["variants"]]
    job["timing_inputs"] = rel(job["timing_inputs"])
    job["heldout"] = [rel(h) for h in job["heldout"]]
    job.pop("scratch", None)
    return {"files": files, "job": job}


def _targets(project: "Project", setup: Any, servers: list[Server], failed: dict[str, str]) -> dict[str, _Target]:
    from sparsify_tui.actions.deploy import cache_key

    out = {}
    for srv in servers:
        if not srv.usable:
            failed[srv.name] = f"server {srv.name} cannot take jobs: {srv.error}"
            continue
        cores = setup.cores or srv.cores
        if cores > srv.cores:
            failed[srv.name] = f"server {srv.name} has only {srv.cores} cores"
            continue
        settings = dict(setup.settings_for(cores), server=srv.name)
        versions = {e: srv.engines.get(e) or "" for e in setup.engines}
        out[srv.name] = _Target(srv, cores, settings, versions, cache_key(project, settings, versions, srv.machine))
    return out


def run_cluster_deploy(project: "Project", *, address: str | None = None, servers: str = "all",
                       max_output_change: Any = None, force: bool = False, on_event: EventCallback | None = None,
                       cancel: threading.Event | None = None, probe_timeout_s: float = 120.0,
                       **options: Any) -> dict:
    """The deployment search of ``project`` on each selected server; the ``deploy --servers --json`` document.

    ``options`` are :func:`sparsify_tui.actions.deploy.prepare`'s (engines, precisions, optimizations,
    batch_size, cores (None: each server's), data, repeats, min_block_ms, prune_method). Raises
    ``ClusterError`` when no server can be reached, ``KeyboardInterrupt`` / ``CancelledError`` when cancelled
    (the servers already stored stay)."""
    from sparsify_tui.actions import deploy as core
    from sparsify_tui.cluster.session import ray_session

    if getattr(project, "readonly", False):
        why = "; ".join(getattr(project, "notices", []) or []) or "it was opened read-only"
        raise ClusterError(f"cannot deploy into project {project.dir}: {why}")
    budget = core.parse_budget(max_output_change)
    setup = core.prepare(project, **options)
    t0 = time.monotonic()
    with ray_session(address) as session:
        chosen = probe_servers(select_servers(list_servers(probe=False), servers), timeout_s=probe_timeout_s)
        failed: dict[str, str] = {}
        targets = _targets(project, setup, chosen, failed)
        todo = {}
        for name, t in targets.items():
            t.doc = None if force else core.cached(project, t.key)
            if t.doc is None:
                todo[name] = t
        _emit_safe(on_event, {"event": "plan", "servers": [s.name for s in chosen], "to_measure": sorted(todo),
                              "cached": sorted(set(targets) - set(todo)), "failed": dict(failed)})
        report = SweepReport(project=str(project.dir), address=session.address, kind=KIND,
                             servers=[s.to_dict() for s in chosen], total=len(chosen))
        if todo:
            with tempfile.TemporaryDirectory(prefix="sparsify-deploy-") as tmp:
                built = core.build(setup, Path(tmp), cancel=cancel)
                runner = _DeployRunner(project, [t.server for t in targets.values()], todo,
                                       _bundle(project, built, Path(tmp)), setup, built, report, on_event, cancel)
                runner.run()
        for r in report.failed:
            t = targets.get(r["server"])
            if t is not None and t.doc is None:
                t.failed = t.failed or r.get("reason")
        return assemble_report(chosen, targets, failed, budget, session.address, time.monotonic() - t0)


def assemble_report(chosen: list[Server], targets: dict[str, _Target], failed: dict[str, str], budget: Any,
                    address: str, elapsed: float) -> dict:
    """The document: ``servers`` -> {name, machine, rows, best, skipped, failed, ...} and the "ship this" table."""
    from sparsify_tui.actions import deploy as core

    out = []
    ship = []
    for srv in chosen:
        t = targets.get(srv.name)
        doc = core.apply_budget(t.doc, budget) if t is not None and t.doc is not None else None
        entry = {"name": srv.name, "machine": machine_brief(srv.machine), "rows": (doc or {}).get("rows") or [],
                 "best": (doc or {}).get("best"), "skipped": (doc or {}).get("skipped") or [],
                 "failed": failed.get(srv.name) or (t.failed if t is not None and doc is None else None),
                 "left_out": (doc or {}).get("left_out") or [], "reference": (doc or {}).get("reference"),
                 "cached": bool((doc or {}).get("cached")), "entry_id": (doc or {}).get("entry_id"),
                 "measured_on": ((doc or {}).get("cluster") or {}).get("measured_on", srv.name) if doc else None,
                 "cores": t.cores if t is not None else None}
        if entry["failed"] is None and doc is None:
            entry["failed"] = "not measured"
        out.append(entry)
        ship.append(core.ship_row(srv.name, doc, entry["failed"]))
    return {"schema_version": SCHEMA_VERSION, "kind": "deploy_cluster", "address": address,
            "budget": core.budget_info(budget), "servers": out, "ship": ship,
            "measured": sorted(s["name"] for s in out if s["entry_id"] and not s["cached"]),
            "cached": sorted(s["name"] for s in out if s["cached"]), "elapsed_s": round(elapsed, 3),
            "definition": core.DEFINITION}


__all__ = ["run_cluster_deploy", "assemble_report", "machine_brief", "search_capabilities", "CancelledError"]
