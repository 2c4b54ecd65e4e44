"""Run a profile sweep on the benchmark servers of a Ray cluster.

Every combination *server x batch size x cores x engine* is one job (for
``kind="loss"`` / ``"quant"``, which do not depend on batch, cores or engine
timings, one job per server). A job runs on its server the same core function
as a local profile (:mod:`sparsify_tui.cluster.tasks`), and its result is
stored into the project (``Project.add_profile``) as soon as it arrives, with
the server's machine summary, so nothing finished is ever lost.

Scheduling
----------
* The model bytes go into Ray's object store once (``ray.put``); every task
  receives the same object reference.
* Each task asks for ``{"sparsify-bench": 1, "sparsify-server:<NAME>": 1}``
  and has a hard node affinity to its server: Ray itself guarantees at most
  one measurement per server at a time, whoever submits it. The driver also
  keeps at most one task in flight per server, so it can move a lost server's
  remaining jobs elsewhere.
* A server lost mid-sweep (its node died: ``NodeDiedError``, or the task
  cannot be scheduled on its node any more) has its running and queued jobs
  moved to an *equivalent* server of the selection (same instruction sets and
  at least as many cores; the one with the shortest queue); with none, they
  are reported as failed. A worker that crashed on a live server is retried
  once on the same server.
* An engine error (the model does not run with that engine, a time limit) is
  reported as failed; it is not retried.
* Cancelling (Ctrl+C, or the ``cancel`` event) cancels the tasks in flight
  (``ray.cancel``), still stores any that finish within a few seconds, then
  raises ``KeyboardInterrupt`` / ``CancelledError``. Profiles already stored stay.
* Resuming: running the same sweep again measures only the combinations that
  are not yet in the project. A combination is identified by its settings
  (``sweep``, ``server``, ``batch_size``, ``cores``, ``engine``, ``levels``,
  ``iterations``, ``warmup``, ``repeats``); a profile of a stale model or with
  an unreadable file does not count.

Settings stored with each profile
---------------------------------
``{"sweep": true, "server": NAME, "batch_size": B, "cores": C, "engine": E,
"levels": [...], "iterations": N, "warmup": W, "repeats": R}`` (openvino jobs
also ``"precision": P``, from ``--precision``, default fp32) plus
``"measured_on": OTHER`` when the job was retried on an equivalent server. The
profile document gets a ``"sweep"`` object with the server, node id, host
name, the server that measured it and the wall-clock start and end.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from sparsify_tui.cluster import BENCH_RESOURCE, require_ray, server_resource
from sparsify_tui.cluster.servers import Server, alive_node_ids, list_servers, probe_servers, select_servers
from sparsify_tui.engines.registry import REFERENCE, engine_names, get_engine
from sparsify_tui.errors import CancelledError, ClusterError, UsageError

if TYPE_CHECKING:
    from sparsify_tui.project import Project

SCHEMA_VERSION = 1
KINDS = ("perf", "loss", "quant")
ENGINES = engine_names()
MAX_CRASH_ATTEMPTS = 2      # a worker crash on a live server is retried once there
CANCEL_GRACE_S = 10.0       # after Ctrl+C, wait this long for tasks in flight to stop (and store finishers)
LIVENESS_EVERY_S = 3.0      # how often the driver checks that the servers are alive

EventCallback = Callable[[dict], None]


@dataclass
class SweepSpec:
    """What to measure. ``cores=None``: each server's physical cores; ``levels=None``: the default levels."""

    kind: str = "perf"
    servers: str = "all"
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    cores: list[int] | None = None
    engines: list[str] = field(default_factory=lambda: [REFERENCE])
    levels: list[float] | None = None
    iterations: int = 10
    warmup: int = 5
    repeats: int = 3
    method: str = "one-shot"          # loss profiles only
    timeout_s: float | None = None    # per-level time limit passed to the runner, if supported
    precision: str | None = None      # openvino jobs: fp32 (default), bf16, fp16 or int8

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        bad = [e for e in self.engines if e not in ENGINES]
        if bad or not self.engines:
            raise UsageError(f"--engines must list engines among {', '.join(ENGINES)}, got {','.join(self.engines)!r}")
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise UsageError("--batch-sizes must list whole numbers of at least 1")
        if self.cores is not None and (not self.cores or any(int(c) < 1 for c in self.cores)):
            raise UsageError("--cores must list whole numbers of at least 1")

    def level_list(self) -> list[float]:
        from sparsify_tui.settings import PERF_LEVELS

        levels = PERF_LEVELS if self.levels is None else self.levels
        return sorted({round(float(x), 6) for x in levels} | {0.0})


@dataclass
class Job:
    """One combination. ``server`` is the combination's server; ``run_on`` the one that runs it."""

    kind: str
    server: str
    batch_size: int | None = None
    cores: int | None = None
    engine: str | None = None
    run_on: str = ""
    attempts: int = 0
    crashes: int = 0
    retried_from: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_on = self.run_on or self.server

    def label(self) -> str:
        if self.kind != "perf":
            return f"{self.kind} profile"
        cores = f"{self.cores} core" + ("" if self.cores == 1 else "s")
        return f"batch {self.batch_size}, {cores}, {self.engine}"

    def _perf_fields(self, spec: SweepSpec) -> dict[str, Any]:
        """A perf combination's measurement settings (its settings and its job's payload share them)."""
        f: dict[str, Any] = {"batch_size": self.batch_size, "cores": self.cores, "engine": self.engine,
                             "levels": spec.level_list(), "iterations": spec.iterations, "warmup": spec.warmup,
                             "repeats": spec.repeats}
        if get_engine(self.engine).precision_hint:
            f["precision"] = spec.precision or "fp32"
        return f

    def settings(self, spec: SweepSpec, input_shapes: dict | None = None) -> dict:
        s: dict[str, Any] = {"sweep": True, "server": self.server}
        if self.kind == "perf":
            s.update(self._perf_fields(spec))
        if input_shapes:
            s["input_shapes"] = {k: [int(d) for d in v] for k, v in sorted(input_shapes.items())}
        elif self.kind == "loss":
            s["method"] = spec.method
        if self.run_on != self.server:
            s["measured_on"] = self.run_on
        return s

    def payload(self, spec: SweepSpec, input_shapes: dict) -> dict:
        p: dict[str, Any] = {"kind": self.kind, "input_shapes": input_shapes or {}}
        if self.kind == "perf":
            p.update(self._perf_fields(spec))
        elif self.kind == "loss":
            p["method"] = spec.method
        if spec.timeout_s:
            p["timeout_s"] = spec.timeout_s
        return p

    def row(self, **extra: Any) -> dict:
        r: dict[str, Any] = {"server": self.server, "measured_on": self.run_on, "kind": self.kind}
        if self.kind == "perf":
            r.update(batch_size=self.batch_size, cores=self.cores, engine=self.engine)
        if self.retried_from:
            r["retried_from"] = list(self.retried_from)
        r["attempts"] = self.attempts
        r.update(extra)
        return r


def combination_id(kind: str, settings: dict) -> str:
    """Identity of a sweep combination: its settings without ``measured_on``."""
    s = {k: v for k, v in (settings or {}).items() if k != "measured_on" and v is not None}
    if "levels" in s:
        s["levels"] = [round(float(x), 6) for x in s["levels"]]
    return json.dumps({"kind": kind, "settings": s}, sort_keys=True, separators=(",", ":"))


def finished_combinations(project: "Project", kind: str) -> dict[str, Any]:
    """``{combination_id: ProfileEntry}`` of the sweep profiles already in the project (fresh, readable)."""
    out: dict[str, Any] = {}
    for e in project.profiles_of(kind):
        if not (e.settings or {}).get("sweep") or (e.settings or {}).get("incomplete"):
            continue
        if project.is_stale(e):
            continue
        problem = getattr(project, "profile_problem", None)
        if problem is not None and problem(e):
            continue
        out[combination_id(kind, e.settings)] = e
    return out


# ---------------------------------------------------------------- planning
@dataclass
class Plan:
    servers: list[Server]
    jobs: list[Job]
    cached: list[dict]
    skipped: list[dict]


def plan_sweep(project: "Project", servers: list[Server], spec: SweepSpec) -> Plan:
    """Every combination on every server, minus those already measured or impossible there."""
    done = finished_combinations(project, spec.kind)
    jobs: list[Job] = []
    cached: list[dict] = []
    skipped: list[dict] = []
    for srv in servers:
        for job in _jobs_for(srv.name, spec, list(spec.cores) if spec.cores is not None else [srv.cores]):
            if not srv.usable:
                skipped.append(job.row(reason=f"server {srv.name} cannot take jobs: {srv.error}"))
                continue
            if job.engine and not srv.has_engine(job.engine):
                skipped.append(job.row(reason=f"{job.engine} is not installed on server {srv.name}"))
                continue
            if job.cores and job.cores > srv.cores:
                skipped.append(job.row(reason=f"server {srv.name} has only {srv.cores} cores"))
                continue
            entry = done.get(combination_id(spec.kind, job.settings(spec, project.input_shapes)))
            if entry is not None:
                cached.append(_cached_row(project, job, entry))
                continue
            jobs.append(job)
    return Plan(servers=servers, jobs=jobs, cached=cached, skipped=skipped)


def _cached_row(project: "Project", job: Job, entry: Any) -> dict:
    row = job.row(profile_id=entry.id, measured_on=entry.settings.get("measured_on", job.server))
    try:
        doc = project.load_profile(entry)
        row.update(items_per_second=doc.get("items_per_second"), baseline_ms=doc.get("baseline_ms"))
    except Exception:  # noqa: BLE001 - unreadable files were filtered out before; stay silent
        pass
    row.pop("attempts", None)
    return row


def _jobs_for(name: str, spec: SweepSpec, cores: list[int]) -> list[Job]:
    if spec.kind != "perf":
        return [Job(spec.kind, name)]
    return [Job("perf", name, int(b), int(c), e) for e in spec.engines for b in spec.batch_sizes for c in cores]


def all_cached(project: "Project", spec: SweepSpec, address: str | None) -> list[dict] | None:
    """The cached rows when every combination is already in the project (decided without Ray), else None.

    Only possible when the combinations are known without asking the servers:
    named servers (or the local machine without ``address``) and explicit cores.
    """
    if spec.kind == "perf" and spec.cores is None:
        return None
    if spec.servers.strip().lower() in ("", "all"):
        if address is not None:
            return None
        from sparsify_tui.cluster.session import local_server_name

        names = [local_server_name()]
    else:
        names = list(dict.fromkeys(n.strip() for n in spec.servers.split(",") if n.strip()))
    done = finished_combinations(project, spec.kind)
    rows = []
    for name in names:
        for job in _jobs_for(name, spec, list(spec.cores or [])):
            entry = done.get(combination_id(spec.kind, job.settings(spec, project.input_shapes)))
            if entry is None:
                return None
            rows.append(_cached_row(project, job, entry))
    return rows


# ---------------------------------------------------------------- running
@dataclass
class SweepReport:
    """What a sweep did; ``to_dict()`` is the ``sweep --json`` document."""

    project: str
    address: str
    kind: str
    servers: list[dict]
    total: int = 0
    measured: list[dict] = field(default_factory=list)
    cached: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    cancelled: bool = False
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "sweep",
            "profile_kind": self.kind,
            "project": self.project,
            "address": self.address,
            "servers": self.servers,
            "total": self.total,
            "counts": {"measured": len(self.measured), "cached": len(self.cached),
                       "skipped": len(self.skipped), "failed": len(self.failed)},
            "measured": self.measured,
            "cached": self.cached,
            "skipped": self.skipped,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def model_files(model_path: Any) -> dict[str, bytes]:
    """The model file and its external data files, ``{relative name: bytes}`` (the model as ``model.onnx``)."""
    from pathlib import Path

    path = Path(model_path)
    files = {MODEL_NAME: path.read_bytes()}
    import onnx

    from sparsify_tui.project import external_data_files

    proto = onnx.load(str(path), load_external_data=False)
    for rel in external_data_files(proto, path):
        files[rel] = (path.parent / rel).read_bytes()
    return files


MODEL_NAME = "model.onnx"


def measure_options(server: Server) -> dict:
    """Ray options of a measurement task on ``server``.

    One unit of ``sparsify-bench`` (each server has exactly one, so Ray runs at
    most one measurement there at a time), the server's name resource, a hard
    node affinity (never elsewhere; fails at once if the node is gone), no CPU
    reserved (the engine's child process pins its own cores) and no automatic
    retry (the driver decides where a lost job goes).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    resources = {BENCH_RESOURCE: 1}
    if server.named:
        resources[server_resource(server.name)] = 1
    return {
        "num_cpus": 0,
        "max_retries": 0,
        "resources": resources,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=server.node_id, soft=False),
    }


_REMOTE_MEASURE = None


def submit_measure(server: Server, model_ref: Any, payload: dict) -> Any:
    """Start one measurement task on ``server``; returns its ObjectRef (result: ``tasks.measure``'s dict)."""
    global _REMOTE_MEASURE
    ray = require_ray()
    if _REMOTE_MEASURE is None:
        from sparsify_tui.cluster import tasks

        _REMOTE_MEASURE = ray.remote(tasks.measure)
    return _REMOTE_MEASURE.options(**measure_options(server)).remote(model_ref, payload)


def _short_error(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


class _Runner:
    """The driver loop: one task in flight per server, results stored as they arrive."""

    def __init__(self, project: "Project", plan: Plan, spec: SweepSpec, report: SweepReport,
                 on_event: EventCallback | None, cancel: threading.Event | None) -> None:
        self.ray = require_ray()
        self.project = project
        self.spec = spec
        self.report = report
        self.on_event = on_event or (lambda e: None)
        self.cancel = cancel
        self.servers = {s.name: s for s in plan.servers if s.usable}
        self.queues: dict[str, collections.deque[Job]] = {n: collections.deque() for n in self.servers}
        for job in plan.jobs:
            self.queues[job.run_on].append(job)
        self.lost: set[str] = set()
        self.inflight: dict[Any, Job] = {}      # ObjectRef -> job
        self.busy: dict[str, Any] = {}          # server name -> ObjectRef
        self.model_ref = None

    # -- events
    def emit(self, event: str, job: Job | None = None, **data: Any) -> None:
        ev: dict[str, Any] = {"event": event}
        if job is not None:
            ev.update(job.row())
            ev["label"] = job.label()
        ev.update(data)
        try:
            self.on_event(ev)
        except (KeyboardInterrupt, CancelledError):
            raise
        except Exception:  # noqa: BLE001 - a broken progress callback must not lose results
            pass

    # -- scheduling
    def submit_ready(self) -> None:
        for name, queue in self.queues.items():
            if name in self.busy or name in self.lost or not queue:
                continue
            job = queue.popleft()
            srv = self.servers[name]
            job.attempts += 1
            ref = self.submit(srv, job)
            self.inflight[ref] = job
            self.busy[name] = ref
            self.emit("start", job, queued=len(queue))

    def submit(self, srv: Server, job: Job) -> Any:
        """Start ``job``'s task on ``srv`` (the deployment search overrides it)."""
        return submit_measure(srv, self.model_ref, job.payload(self.spec, self.project.input_shapes))

    def put_model(self) -> Any:
        """Send the model to Ray's object store once; the reference every task gets."""
        files = model_files(self.project.model_path)
        size = sum(len(b) for b in files.values())
        try:
            return self.ray.put(files)
        except Exception as exc:  # noqa: BLE001 - ObjectStoreFullError and friends
            raise ClusterError(f"could not send the model {self.project.model_path} ({size / 1e6:.0f} MB) "
                               f"to Ray's object store: {_short_error(exc)}") from None

    def _release(self, ref: Any) -> Job:
        job = self.inflight.pop(ref)
        if self.busy.get(job.run_on) is ref:
            del self.busy[job.run_on]
        return job

    def remaining(self) -> int:
        return len(self.inflight) + sum(len(q) for n, q in self.queues.items())

    # -- results
    def store(self, job: Job, result: dict) -> None:
        if result.get("error"):
            self.report.failed.append(job.row(reason=result["error"], error_type=result.get("error_type")))
            self.emit("failed", job, reason=result["error"])
            return
        doc = dict(result["profile"])
        machine = result.get("machine") or doc.get("machine") or {}
        srv = self.servers.get(job.run_on)
        doc["sweep"] = {
            "server": job.server,
            "measured_on": job.run_on,
            "node_id": result.get("node_id"),
            "hostname": result.get("hostname"),
            "started": result.get("started"),
            "finished": result.get("finished"),
            "retried_from": list(job.retried_from),
            "server_address": srv.address if srv else None,
        }
        doc.setdefault("machine", machine)
        engine = str(doc.get("engine") or job.engine or "")
        version = str(doc.get("engine_version") or (machine.get("engines") or {}).get(engine) or "")
        name = f"sweep {job.server}: {job.label()}" if job.kind == "perf" else f"sweep {job.server}: {job.kind}"
        settings = job.settings(self.spec, self.project.input_shapes)
        if doc.get("incomplete"):
            # finished levels of a measurement that failed later: kept, but the combination stays to do
            settings["incomplete"] = True
        entry = self.project.add_profile(job.kind, name, settings, engine, version, machine, doc)
        if doc.get("incomplete"):
            reason = f"incomplete on server {job.run_on}: {doc.get('error') or 'the engine stopped'}"
            self.report.failed.append(job.row(reason=reason, profile_id=entry.id))
            self.emit("failed", job, reason=f"{reason} (finished levels kept as {entry.id})")
            return
        row = job.row(profile_id=entry.id, node_id=result.get("node_id"),
                      started=result.get("started"), finished=result.get("finished"),
                      items_per_second=doc.get("items_per_second"), baseline_ms=doc.get("baseline_ms"))
        self.report.measured.append(row)
        self.emit("done", job, profile_id=entry.id, items_per_second=doc.get("items_per_second"),
                  baseline_ms=doc.get("baseline_ms"),
                  seconds=(result.get("finished") or 0) - (result.get("started") or 0))

    def handle(self, ref: Any) -> None:
        job = self._release(ref)
        ex = self.ray.exceptions
        try:
            result = self.ray.get(ref)
        except ex.TaskCancelledError:
            self.report.failed.append(job.row(reason="cancelled"))
            self.emit("failed", job, reason="cancelled")
            return
        except ex.RayTaskError as exc:
            # the task's own code raised (not a SparsifyError): a bug or a broken server install
            reason = f"the job raised on server {job.run_on}: {_short_error(exc.cause if exc.cause else exc)}"
            self.report.failed.append(job.row(reason=reason))
            self.emit("failed", job, reason=reason)
            return
        except ex.RayError as exc:
            self.system_failure(job, exc)
            return
        self.store(job, result)

    def system_failure(self, job: Job, exc: BaseException) -> None:
        """The task died with its worker or node: retry on the same server or move the server's jobs."""
        srv = self.servers[job.run_on]
        # NodeDiedError: the node died under the running task; TaskUnschedulableError: the node the task
        # is pinned to is gone. Both say so before the cluster's own view of the node catches up.
        gone = tuple(getattr(self.ray.exceptions, n) for n in ("NodeDiedError", "TaskUnschedulableError")
                     if hasattr(self.ray.exceptions, n))
        node_died = isinstance(exc, gone)
        if node_died or srv.node_id not in alive_node_ids():
            self.server_lost(srv.name, [job], why=_short_error(exc))
            return
        job.crashes += 1
        if job.crashes < MAX_CRASH_ATTEMPTS:
            self.queues[srv.name].appendleft(job)
            self.emit("retry", job, reason=f"worker crashed on {srv.name}: {_short_error(exc)}", to=srv.name)
        else:
            reason = f"the worker crashed {job.crashes} times on server {srv.name}: {_short_error(exc)}"
            self.report.failed.append(job.row(reason=reason))
            self.emit("failed", job, reason=reason)

    def server_lost(self, name: str, extra_jobs: list[Job], why: str = "") -> None:
        lost = self.servers[name]
        first = name not in self.lost
        self.lost.add(name)
        jobs = list(extra_jobs)
        if self.busy.get(name) is not None:
            ref = self.busy[name]
            jobs.append(self._release(ref))
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
        jobs.extend(self.queues[name])
        self.queues[name].clear()
        if first:
            self.emit("lost", None, server=name, reason=why or "its node is gone", jobs=len(jobs))
        candidates = [s for s in self.servers.values()
                      if s.name not in self.lost and s.name != name and s.equivalent_to(lost)]
        for job in jobs:
            if job.engine:
                cands = [s for s in candidates if s.has_engine(job.engine) and (job.cores or 0) <= s.cores]
            else:
                cands = list(candidates)
            if not cands:
                reason = (f"server {name} was lost and no equivalent server (same instruction sets, "
                          f"at least {lost.cores} cores) is in the selection")
                self.report.failed.append(job.row(reason=reason))
                self.emit("failed", job, reason=reason)
                continue
            target = min(cands, key=lambda s: (len(self.queues[s.name]) + (s.name in self.busy), s.name))
            job.retried_from.append(name)
            job.run_on = target.name
            self.queues[target.name].append(job)
            self.emit("retry", job, reason=f"server {name} was lost", to=target.name)

    def check_liveness(self) -> None:
        alive = alive_node_ids()
        for name, srv in self.servers.items():
            if name not in self.lost and srv.node_id not in alive:
                self.server_lost(name, [], why="its node left the cluster")

    # -- main loop
    def run(self) -> None:
        ray = self.ray
        self.model_ref = self.put_model()
        last_check = time.monotonic()
        try:
            while True:
                if self.cancel is not None and self.cancel.is_set():
                    raise CancelledError("the sweep was cancelled; finished profiles are kept")
                self.submit_ready()
                if not self.inflight:
                    if self.remaining() == 0:
                        break
                    # queued jobs on lost servers only: nothing can run
                    for name in list(self.queues):
                        if name in self.lost and self.queues[name]:
                            self.server_lost(name, [])
                    if not self.inflight and all(not q for n, q in self.queues.items() if n not in self.lost):
                        break
                    continue
                ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=0.5)
                for ref in ready:
                    self.handle(ref)
                if time.monotonic() - last_check > LIVENESS_EVERY_S:
                    last_check = time.monotonic()
                    self.check_liveness()
        except (KeyboardInterrupt, CancelledError):
            self.report.cancelled = True
            self.stop_inflight()
            raise
        finally:
            for q in self.queues.values():
                for job in q:
                    self.report.failed.append(job.row(reason="not run: the sweep was cancelled"))
                q.clear()

    def stop_inflight(self) -> None:
        """Cancel the tasks in flight; store those that still finish within the grace period."""
        ray = self.ray
        refs = list(self.inflight)
        if not refs:
            return
        self.emit("cancelling", None, running=len(refs))
        for ref in refs:
            try:
                ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + CANCEL_GRACE_S
        try:
            while self.inflight and time.monotonic() < deadline:
                ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=0.5)
                for ref in ready:
                    self.handle(ref)
        except KeyboardInterrupt:
            pass
        for ref in list(self.inflight):
            job = self._release(ref)
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
            self.report.failed.append(job.row(reason="cancelled"))


def run_sweep(project: "Project", spec: SweepSpec, *, address: str | None = None,
              on_event: EventCallback | None = None, cancel: threading.Event | None = None,
              probe_timeout_s: float = 120.0) -> SweepReport:
    """Run a sweep on the cluster at ``address`` (None: a local Ray instance) and store its profiles.

    ``project`` is an open, writable :class:`sparsify_tui.project.Project`.
    ``on_event(dict)`` receives ``plan``, ``start``, ``done``, ``failed``,
    ``retry``, ``lost`` and ``cancelling`` events (each with the job's server,
    measured_on, batch_size, cores, engine, label). Raises ``ClusterError``
    when the cluster cannot be reached or has no usable server,
    ``KeyboardInterrupt`` / ``CancelledError`` when cancelled (stored profiles stay).
    """
    from sparsify_tui.cluster.session import ray_session

    spec.validate()
    if getattr(project, "readonly", False):
        why = "; ".join(getattr(project, "notices", []) or []) or "it was opened read-only"
        raise ClusterError(f"cannot sweep into project {project.dir}: {why}")
    t0 = time.monotonic()
    cached = all_cached(project, spec, address)
    if cached is not None:
        # a finished sweep run again: nothing to measure, no need to start or reach Ray
        report = SweepReport(project=str(project.dir), address=address or "local", kind=spec.kind, servers=[],
                             total=len(cached), cached=cached)
        _emit_safe(on_event, {"event": "plan", "total": report.total, "to_measure": 0, "cached": len(cached),
                              "skipped": [], "servers": sorted({r["server"] for r in cached}), "per_server": {}})
        report.elapsed_s = time.monotonic() - t0
        return report
    with ray_session(address) as session:
        # select by name first, then probe only the selected servers
        servers = probe_servers(select_servers(list_servers(probe=False), spec.servers), timeout_s=probe_timeout_s)
        if not any(s.usable for s in servers):
            why = "; ".join(f"{s.name}: {s.error}" for s in servers)
            raise ClusterError(f"no selected server can take jobs ({why})")
        plan = plan_sweep(project, servers, spec)
        report = SweepReport(
            project=str(project.dir), address=session.address, kind=spec.kind,
            servers=[s.to_dict() for s in servers],
            total=len(plan.jobs) + len(plan.cached) + len(plan.skipped),
            cached=plan.cached, skipped=plan.skipped,
        )
        per_server = collections.Counter(j.run_on for j in plan.jobs)
        _emit_safe(on_event, {"event": "plan", "total": report.total, "to_measure": len(plan.jobs),
                              "cached": len(plan.cached), "skipped": plan.skipped,
                              "servers": [s.name for s in servers], "per_server": dict(per_server)})
        if plan.jobs:
            runner = _Runner(project, plan, spec, report, on_event, cancel)
            try:
                runner.run()
            finally:
                report.elapsed_s = time.monotonic() - t0
        report.elapsed_s = time.monotonic() - t0
        return report


def _emit_safe(cb: EventCallback | None, ev: dict) -> None:
    if cb is None:
        return
    try:
        cb(ev)
    except (KeyboardInterrupt, CancelledError):
        raise
    except Exception:  # noqa: BLE001
        pass


def cluster_status(address: str | None = None, *, timeout_s: float = 120.0) -> dict:
    """``cluster status --json``: the servers with their machine summaries."""
    from sparsify_tui.cluster.session import ray_session

    from sparsify_tui.cluster.deploy import search_capabilities

    with ray_session(address) as session:
        ray = require_ray()
        servers = list_servers(timeout_s=timeout_s)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "cluster_status",
            "address": session.address,
            "ray_version": getattr(ray, "__version__", None),
            "nodes": len(nodes),
            "servers": [dict(s.to_dict(), deploy=search_capabilities(s) if s.usable else None) for s in servers],
        }
