"""A Ray cluster of named benchmark servers on this machine (all on 127.0.0.1), for trying sweeps and for tests.

``python -m sparsify_tui.cluster.local ADDRESS_FILE NAME [NAME ...]`` starts one
Ray node per name (1 CPU each, carrying the benchmark and server resources),
writes the head's address to ADDRESS_FILE and runs until its stdin closes.
:func:`local_cluster` runs that in a helper process, so the caller never calls
``ray.init`` itself and can connect with ``--address``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from sparsify_tui.errors import ClusterError


def _serve(address_file: str, names: list[str]) -> None:
    from ray.cluster_utils import Cluster

    from sparsify_tui.cluster import BENCH_RESOURCE, server_resource

    def res(name: str) -> dict:
        return {BENCH_RESOURCE: 1, server_resource(name): 1}

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "resources": res(names[0]), "include_dashboard": False})
    for name in names[1:]:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources=res(name))
    Path(address_file).write_text(cluster.address)
    sys.stdin.read()  # until the caller closes stdin
    cluster.shutdown()


@contextlib.contextmanager
def local_cluster(workdir: Path, names: tuple[str, ...] = ("alpha", "beta"), *, env: dict | None = None,
                  timeout_s: float = 120.0) -> Iterator[str]:
    """A local cluster with one server per name, in a helper process; yields its address (ClusterError if it
    does not start within ``timeout_s``)."""
    address_file = Path(workdir) / "ray-address"
    proc = subprocess.Popen([sys.executable, "-m", "sparsify_tui.cluster.local", str(address_file), *names],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            text=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not address_file.exists():
            if proc.poll() is not None:
                raise ClusterError(f"the local Ray cluster did not start: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise ClusterError(f"the local Ray cluster did not start within {timeout_s:g} s")
            time.sleep(0.2)
        yield address_file.read_text().strip()
    finally:
        with contextlib.suppress(Exception):
            proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2:])
