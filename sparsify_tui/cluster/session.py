"""Connect to a Ray cluster, or start a local Ray instance that acts as one server.

``ray_session(address)`` is a context manager:

* ``address=None``: a new local Ray instance on this machine
  (``ray.init(address="local", num_cpus=<usable cores>, include_dashboard=False)``)
  carrying the benchmark resources, so this machine is one server named after
  its host name. The same sweep command then works on a laptop.
* ``address="HOST:PORT"`` (or ``"auto"``, or ``"ray://HOST:10001"`` for Ray
  Client): joins the existing cluster as a driver. A plain ``HOST:PORT`` is
  checked with a TCP connection first, because ``ray.init`` waits minutes on an
  address where nothing listens.
* Ray already initialised in this process (tests, the TUI): used as it is and
  left running.

Ray's own log lines are kept off stdout (``log_to_driver=False``) so that
``--json`` output stays one JSON document.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Iterator

from sparsify_tui.cluster import BENCH_RESOURCE, require_ray, server_resource
from sparsify_tui.errors import ClusterError


@dataclass
class Session:
    """What a sweep or a status call is connected to."""

    address: str            # "local" for a local instance, else the address given
    local: bool             # True when this process started the Ray instance
    local_server: str | None = None   # the server name of the local instance


def local_server_name() -> str:
    """The name the local machine gets as a server: its short host name."""
    name = socket.gethostname().split(".")[0].strip()
    return name or "local"


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (ClusterError) when nothing listens at a plain HOST:PORT address."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port_s = address.rpartition(":")
    if not sep or not host:
        raise ClusterError(f"the Ray address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        port = int(port_s)
    except ValueError:
        raise ClusterError(f"the Ray address {address!r} has no valid port number") from None
    host = host.strip("[]")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(
            f"nothing answers at the Ray head {address} ({reason}); start it with "
            f"'ray start --head --port={port}' or check the address"
        ) from None


def _usable_cpus() -> int:
    from sparsify_tui.settings import usable_cores as max_cores

    return max_cores()


@contextlib.contextmanager
def ray_session(address: str | None = None, *, local_name: str | None = None,
                local_cpus: int | None = None) -> Iterator[Session]:
    """Connect (or start a local instance), yield a :class:`Session`, then disconnect if we connected."""
    ray = require_ray()
    if ray.is_initialized():
        yield Session(address=address or "existing", local=False)
        return
    common = dict(log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    if address is None:
        name = local_name or local_server_name()
        try:
            ray.init(
                address="local",
                num_cpus=local_cpus or _usable_cpus(),
                resources={BENCH_RESOURCE: 1, server_resource(name): 1},
                include_dashboard=False,
                **common,
            )
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds
            raise ClusterError(f"could not start a local Ray instance: {_first_line(exc)}") from None
        session = Session(address="local", local=True, local_server=name)
    else:
        _check_reachable(address)
        try:
            ray.init(address=address, **common)
        except Exception as exc:  # noqa: BLE001
            hint = None
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                hint = ("if the cluster uses token authentication, set RAY_AUTH_MODE=token and "
                        "RAY_AUTH_TOKEN to the token 'ray get-auth-token' prints on the head")
            raise ClusterError(f"could not connect to the Ray cluster at {address}: {_first_line(exc)}",
                               hint=hint) from None
        session = Session(address=address, local=False)
    try:
        yield session
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
