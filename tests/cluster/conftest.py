"""Fixtures for the Ray cluster tests.

They need Ray (the ``[cluster]`` extra). Without
Ray they SKIP, unless ``SPARSIFY_REQUIRE_RAY=1`` is set: then they FAIL, so a CI
job that installs the extra can never skip them silently.

``ray_cluster`` is one real Ray cluster for the whole session, every address
127.0.0.1: a head node ``alpha`` and a node ``beta``, each a benchmark server
with ``num_cpus=1`` and its own name resource. Tests that kill nodes add their
own extra nodes (``add_server``) and remove them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Keep every Ray address on the loopback interface: with this (Ray's switch for
# single-machine clusters) Ray resolves "this node" to 127.0.0.1 instead of the
# machine's network address, so the test cluster is not reachable from outside.
# It must be set before Ray is imported; subprocesses inherit it.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


def import_ray_or_skip():
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("SPARSIFY_REQUIRE_RAY") == "1":
            pytest.fail("Ray is not installed but SPARSIFY_REQUIRE_RAY=1: pip install 'sparsify-tui[cluster]'")
        pytest.skip("Ray is not installed (pip install 'sparsify-tui[cluster]'; SPARSIFY_REQUIRE_RAY=1 makes this fail)")
    return ray


def server_resources(name: str) -> dict:
    from sparsify_tui.cluster import BENCH_RESOURCE, server_resource

    return {BENCH_RESOURCE: 1, server_resource(name): 1}


class RayTestCluster:
    def __init__(self, ray) -> None:
        from ray.cluster_utils import Cluster

        self.ray = ray
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                            "resources": server_resources("alpha"), "include_dashboard": False,
                            # notice a killed node within ~1 s instead of ~15 s (Ray's defaults)
                            "_system_config": {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
                                               "health_check_failure_threshold": 2}},
        )
        self.nodes = {"alpha": self.cluster.head_node}
        self.add_server("beta")
        self.address = self.cluster.address
        ray.init(address=self.address, log_to_driver=False, logging_level="WARNING")

    def add_server(self, name: str):
        node = self.cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources=server_resources(name))
        self.nodes[name] = node
        return node

    def node_id(self, name: str) -> str:
        return self.nodes[name].node_id

    def remove_server(self, name: str, *, graceful: bool = True) -> None:
        """Kill the node's processes: SIGTERM first with ``graceful``, else SIGKILL at once."""
        node = self.nodes.pop(name)
        self.cluster.remove_node(node, allow_graceful=graceful)

    def shutdown(self) -> None:
        try:
            self.ray.shutdown()
        finally:
            self.cluster.shutdown()


@pytest.fixture(scope="session")
def ray_cluster():
    ray = import_ray_or_skip()
    if ray.is_initialized():  # pragma: no cover - another test left Ray running
        ray.shutdown()
    c = RayTestCluster(ray)
    try:
        yield c
    finally:
        c.shutdown()


def build_tiny_model(path: Path) -> Path:
    """A small CNN (2 Conv, ReLU, pool, MatMul head) whose batch dimension is dynamic ("N")."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(16, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((32, 10)).astype(np.float32), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("cluster-model") / "tiny.onnx")


@pytest.fixture(scope="session")
def swept(ray_cluster, tiny_model, tmp_path_factory):
    """A project swept once on alpha and beta (batch 1 and 4, cores 1 and 2, ONNX Runtime, level 0):
    ``(project, report, events)``. Shared by the tests that only read it."""
    from sparsify_tui.cluster.sweep import SweepSpec, run_sweep
    from sparsify_tui.project import Project

    project = Project.create(tiny_model, dir=tmp_path_factory.mktemp("swept") / "proj", name="swept")
    events: list[dict] = []
    spec = SweepSpec(kind="perf", servers="alpha,beta", engines=["onnxruntime"], batch_sizes=[1, 4], cores=[1, 2],
                     levels=[0.0], iterations=1, warmup=1, repeats=1)
    report = run_sweep(project, spec, address=ray_cluster.address, on_event=events.append)
    try:
        yield project, report, events
    finally:
        project.close()


@pytest.fixture
def make_project(tmp_path, tiny_model):
    """``make_project(name)`` -> a new, open project on the tiny model (closed after the test)."""
    from sparsify_tui.project import Project

    opened = []

    def make(name: str = "proj"):
        p = Project.create(tiny_model, dir=tmp_path / name, name=name)
        opened.append(p)
        return p

    yield make
    for p in opened:
        try:
            p.close()
        except Exception:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
