"""Discover the benchmark servers of a Ray cluster and their machine summaries.

A server is an alive Ray node with the ``sparsify-bench`` resource. Its name
is the ``<NAME>`` of its ``sparsify-server:<NAME>`` resource (or, when a node
joined without one, ``node-<first 8 hex digits of its node id>``). Its
machine summary (cores, instruction sets, engines with versions) comes from
running :func:`sparsify_tui.cluster.tasks.probe` as a task pinned to the node
(hard node affinity, no CPU reserved, so it answers even while a measurement
runs there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sparsify_tui.cluster import BENCH_RESOURCE, SERVER_RESOURCE_PREFIX, require_ray
from sparsify_tui.errors import ClusterError


@dataclass
class Server:
    """One benchmark server (a Ray node with the ``sparsify-bench`` resource)."""

    name: str
    node_id: str
    address: str
    cpus: float                   # CPUs the node advertises to Ray
    bench_slots: float            # its sparsify-bench amount (should be 1)
    named: bool                   # joined with a sparsify-server:<NAME> resource
    machine: dict | None = None   # machine_info() measured on the server
    error: str | None = None      # why the probe failed, if it did
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """True when the server answered its probe and can take sweep jobs."""
        return self.machine is not None and self.error is None

    @property
    def cores(self) -> int:
        """Cores a measurement may use there (machine_info's usable cores, else Ray's CPUs)."""
        m = self.machine or {}
        for key in ("usable_cores", "logical_cores", "physical_cores"):
            v = m.get(key)
            if isinstance(v, int) and v > 0:
                return v
        return max(1, int(self.cpus))

    @property
    def physical_cores(self) -> int:
        m = self.machine or {}
        v = m.get("physical_cores")
        if isinstance(v, int) and v > 0:
            return min(v, self.cores)
        return self.cores

    @property
    def isa(self) -> list[str]:
        """Instruction sets, in machine_info's display order."""
        return list((self.machine or {}).get("isa") or [])

    @property
    def engines(self) -> dict[str, str | None]:
        return dict((self.machine or {}).get("engines") or {})

    def has_engine(self, engine: str) -> bool:
        return bool(self.engines.get(engine))

    def equivalent_to(self, other: "Server") -> bool:
        """Can stand in for ``other``: same instruction sets and at least as many cores."""
        return set(self.isa) == set(other.isa) and self.cores >= other.cores

    def to_dict(self) -> dict:
        m = self.machine or {}
        return {
            "name": self.name,
            "node_id": self.node_id,
            "address": self.address,
            "ray_cpus": self.cpus,
            "cores": self.cores if self.machine else None,
            "physical_cores": m.get("physical_cores"),
            "cpu_model": m.get("cpu_model"),
            "isa": self.isa,
            "engines": self.engines,
            "fingerprint": m.get("fingerprint"),
            "machine": self.machine,
            "usable": self.usable,
            "error": self.error,
            "notes": list(self.notes),
        }


def _server_name(node: dict) -> tuple[str, bool]:
    for key in (node.get("Resources") or {}):
        if key.startswith(SERVER_RESOURCE_PREFIX) and len(key) > len(SERVER_RESOURCE_PREFIX):
            return key[len(SERVER_RESOURCE_PREFIX):], True
    return f"node-{str(node.get('NodeID', ''))[:8]}", False


def bench_nodes() -> list[dict]:
    """Alive Ray nodes that carry the ``sparsify-bench`` resource (``ray.nodes()`` rows)."""
    ray = require_ray()
    return [n for n in ray.nodes() if n.get("Alive") and (n.get("Resources") or {}).get(BENCH_RESOURCE)]


def alive_node_ids() -> set[str]:
    ray = require_ray()
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def pinned(remote_fn: Any, node_id: str, **options: Any) -> Any:
    """``remote_fn`` with a hard affinity to ``node_id`` (fails at once if the node is gone)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return remote_fn.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False), **options
    )


def list_servers(*, probe: bool = True, timeout_s: float = 120.0) -> list[Server]:
    """The cluster's benchmark servers, sorted by name, each probed for its machine summary.

    A server whose probe fails (sparsify-tui not installed there, no answer
    within ``timeout_s``) is listed with ``error`` set and is not usable.
    """
    servers: list[Server] = []
    for node in bench_nodes():
        name, named = _server_name(node)
        res = node.get("Resources") or {}
        s = Server(
            name=name,
            node_id=node["NodeID"],
            address=str(node.get("NodeManagerAddress", "")),
            cpus=float(res.get("CPU", 0)),
            bench_slots=float(res.get(BENCH_RESOURCE, 0)),
            named=named,
        )
        if not named:
            s.notes.append("joined without a sparsify-server:<NAME> resource; named after its node id")
        if s.bench_slots != 1:
            s.notes.append(f"has sparsify-bench={s.bench_slots:g}; use 1 so measurements never overlap")
        servers.append(s)
    servers.sort(key=lambda s: (s.name, s.node_id))
    seen: dict[str, int] = {}
    for s in servers:
        seen[s.name] = seen.get(s.name, 0) + 1
    for s in servers:
        if seen[s.name] > 1:
            s.notes.append(f"{seen[s.name]} servers share the name {s.name!r}; give each its own")
    if probe:
        probe_servers(servers, timeout_s=timeout_s)
    return servers


def probe_servers(servers: list[Server], *, timeout_s: float = 120.0) -> list[Server]:
    """Fill in each server's ``machine`` (or ``error``) by running the probe task on its node, all at once."""
    ray = require_ray()
    from sparsify_tui.cluster import tasks

    if not servers:
        return servers
    remote_probe = ray.remote(tasks.probe)
    refs = {}
    for s in servers:
        refs[pinned(remote_probe, s.node_id, num_cpus=0, max_retries=0).remote()] = s
    deadline = time.monotonic() + timeout_s
    pending = list(refs)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=min(left, 1.0))
        for ref in ready:
            s = refs[ref]
            try:
                info = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - any Ray/task error: report it
                s.error = _probe_error(exc)
                continue
            if info.get("machine") is None:
                s.error = f"could not read the machine summary: {info.get('error', 'unknown error')}"
            else:
                s.machine = info["machine"]
    for ref in pending:
        refs[ref].error = f"did not answer within {timeout_s:g} s"
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001
            pass
    return servers


def _probe_error(exc: BaseException) -> str:
    text = str(exc)
    if "No module named" in text and "sparsify_tui" in text:
        return "sparsify-tui is not installed on this server (pip install 'sparsify-tui[cluster]')"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def select_servers(servers: list[Server], spec: str | None) -> list[Server]:
    """Servers named by ``--servers`` (``all`` or ``NAME,NAME``); ClusterError for unknown names."""
    if not servers:
        raise ClusterError(
            "the Ray cluster has no benchmark server: join one with "
            "ray start --address=HEAD:PORT --resources='{\"sparsify-bench\": 1, \"sparsify-server:NAME\": 1}'"
        )
    spec = (spec or "all").strip()
    if spec.lower() in ("", "all"):
        chosen = list(servers)
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        by_name: dict[str, list[Server]] = {}
        for s in servers:
            by_name.setdefault(s.name, []).append(s)
        unknown = [n for n in names if n not in by_name]
        if unknown:
            known = ", ".join(sorted(by_name)) or "none"
            raise ClusterError(f"no server named {', '.join(unknown)} in the cluster (servers: {known})")
        chosen = []
        for n in dict.fromkeys(names):
            chosen.extend(by_name[n])
    names_seen: set[str] = set()
    for s in chosen:
        if s.name in names_seen:
            raise ClusterError(
                f"two servers are named {s.name!r}; restart one with its own sparsify-server:<NAME> resource"
            )
        names_seen.add(s.name)
    return chosen
