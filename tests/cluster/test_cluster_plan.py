"""Planning a sweep and choosing servers: pure logic, no Ray needed (runs in every venv)."""

from __future__ import annotations

import pytest

from sparsify_tui.cluster.servers import Server, select_servers
from sparsify_tui.cluster.sweep import SweepSpec, plan_sweep
from sparsify_tui.errors import ClusterError, UsageError


def server(name, cores=4, isa=("avx2", "avx512"), engines=None, error=None):
    engines = {"onnxruntime": "1.18.1", "deepsparse": None} if engines is None else engines
    machine = None if error else {"usable_cores": cores, "physical_cores": cores, "isa": list(isa),
                                  "engines": engines, "fingerprint": f"fp-{name}"}
    return Server(name=name, node_id=f"{name}-node", address="127.0.0.1", cpus=cores, bench_slots=1, named=True,
                  machine=machine, error=error)


def test_select_servers_by_name():
    fleet = [server("a"), server("b"), server("c")]
    assert [s.name for s in select_servers(fleet, "all")] == ["a", "b", "c"]
    assert [s.name for s in select_servers(fleet, "c, a,c")] == ["c", "a"]
    with pytest.raises(ClusterError, match="no server named x, y in the cluster"):
        select_servers(fleet, "a,x,y")
    with pytest.raises(ClusterError, match="two servers are named 'a'"):
        select_servers(fleet + [server("a")], "all")
    with pytest.raises(ClusterError, match="no benchmark server"):
        select_servers([], "all")


def test_equivalent_server_needs_same_isa_and_as_many_cores():
    big, small, other = server("big", 8), server("small", 4), server("arm", 8, isa=("neon",))
    assert big.equivalent_to(small) and not small.equivalent_to(big)
    assert not other.equivalent_to(small)
    assert server("reordered", 4, isa=("avx512", "avx2")).equivalent_to(small)


def test_plan_skips_what_a_server_cannot_run(tmp_path):
    from sparsify_tui.project import Project

    from .conftest import build_tiny_model

    p = Project.create(build_tiny_model(tmp_path / "m.onnx"), dir=tmp_path / "p", name="p")
    fleet = [server("four", 4), server("two", 2, engines={"onnxruntime": "1.18.1", "deepsparse": "1.8.0"}),
             server("broken", error="sparsify-tui is not installed on this server")]
    spec = SweepSpec(engines=["deepsparse", "onnxruntime"], batch_sizes=[1, 16], cores=[1, 4])
    plan = plan_sweep(p, fleet, spec)
    todo = sorted((j.server, j.engine, j.batch_size, j.cores) for j in plan.jobs)
    assert todo == sorted([("four", "onnxruntime", b, c) for b in (1, 16) for c in (1, 4)]
                          + [("two", e, b, 1) for e in ("deepsparse", "onnxruntime") for b in (1, 16)])
    reasons = {(r["server"], r["engine"], r["batch_size"], r["cores"]): r["reason"] for r in plan.skipped}
    assert reasons[("four", "deepsparse", 1, 1)] == "deepsparse is not installed on server four"
    assert reasons[("two", "onnxruntime", 16, 4)] == "server two has only 2 cores"
    assert all("sparsify-tui is not installed" in v for k, v in reasons.items() if k[0] == "broken")
    assert len(plan.jobs) + len(plan.skipped) == 3 * 2 * 2 * 2
    # default cores: all of each server's cores
    plan = plan_sweep(p, fleet[:2], SweepSpec(engines=["onnxruntime"]))
    assert sorted((j.server, j.cores) for j in plan.jobs) == [("four", 4), ("two", 2)]
    p.close()


@pytest.mark.parametrize("kw, message", [
    (dict(kind="speed"), "--kind must be one of"),
    (dict(engines=["tvm"]), "--engines must list engines"),
    (dict(batch_sizes=[0]), "--batch-sizes"),
    (dict(cores=[]), "--cores"),
])
def test_bad_specs(kw, message):
    with pytest.raises(UsageError, match=message):
        SweepSpec(**kw).validate()


def test_sweep_into_a_project_another_process_writes_is_refused(tmp_path):
    from sparsify_tui.cluster.sweep import run_sweep
    from sparsify_tui.project import Project

    from .conftest import build_tiny_model

    writer = Project.create(build_tiny_model(tmp_path / "m.onnx"), dir=tmp_path / "p", name="p")
    try:
        second = Project.open(writer.dir, readonly=True)
        with pytest.raises(ClusterError, match="cannot sweep into project"):
            run_sweep(second, SweepSpec(cores=[1]))
    finally:
        writer.close()
