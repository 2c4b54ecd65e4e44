"""Profile sweeps across a fleet of benchmark servers, on a Ray cluster.

Ray is an optional extra (``pip install 'sparsify-tui[cluster]'``) and is
imported lazily: importing this package (or :mod:`sparsify_tui.actions.sweeps`,
which the TUI uses) never imports Ray. Only :func:`require_ray` and the modules
that call it need Ray.

How the cluster is organised
----------------------------
Every *benchmark server* is a Ray node that carries two custom resources:

* ``sparsify-bench: 1`` — marks the node as a benchmark server and, because
  every measurement task asks for one unit of it, guarantees that at most one
  measurement runs on a server at a time (even when several sweeps, from
  several users, share the cluster);
* ``sparsify-server:<NAME>: 1`` — the server's name, used by ``--servers``.

A sweep task also carries a hard node-affinity to the server's node, so it can
never land elsewhere, and it fails at once (instead of waiting forever) when
that node is gone.

Modules: :mod:`.session` (connect to or start Ray), :mod:`.servers`
(discover servers and their machine summaries), :mod:`.tasks` (the code that
runs on a server), :mod:`.sweep` (plan, schedule, store, retry, resume),
:mod:`.results` (pure functions grouping sweep profiles for the TUI).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from sparsify_tui.errors import ClusterError

BENCH_RESOURCE = "sparsify-bench"
SERVER_RESOURCE_PREFIX = "sparsify-server:"
INSTALL_HINT = "pip install 'sparsify-tui[cluster]'"
MISSING_RAY_MESSAGE = f"the cluster commands need Ray: {INSTALL_HINT}"


def server_resource(name: str) -> str:
    """The custom resource naming server ``name``: ``sparsify-server:<name>``."""
    return SERVER_RESOURCE_PREFIX + name


def ray_available() -> bool:
    """True when Ray can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # pragma: no cover - broken installs
        return False


def require_ray() -> Any:
    """Import and return the ``ray`` module, or raise :class:`ClusterError` saying how to install it."""
    # no usage statistics, ever (no network access on most benchmark servers)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    if not ray_available():
        raise ClusterError(MISSING_RAY_MESSAGE)
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(f"{MISSING_RAY_MESSAGE} (importing it failed: {exc})") from None
    return ray


__all__ = [
    "BENCH_RESOURCE",
    "SERVER_RESOURCE_PREFIX",
    "INSTALL_HINT",
    "MISSING_RAY_MESSAGE",
    "server_resource",
    "ray_available",
    "require_ray",
]
