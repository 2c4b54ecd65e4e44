"""Sweeps on a real Ray cluster of several nodes on this machine (every address 127.0.0.1).

Each job runs a real ONNX Runtime perf profile of the tiny model (level 0
only, 1 iteration) on the server it was planned for. No time is asserted;
only where jobs ran, that they never overlapped on one server, what was
stored in the project, and what a lost server or a resumed sweep does.
"""

from __future__ import annotations

import time

import pytest

from sparsify_tui.errors import ClusterError

FAST = dict(levels=[0.0], iterations=1, warmup=1, repeats=1)


def spec(**kw):
    from sparsify_tui.cluster.sweep import SweepSpec

    base = dict(kind="perf", engines=["onnxruntime"], batch_sizes=[1], cores=[1, 2], **FAST)
    base.update(kw)
    return SweepSpec(**base)


def sweep(project, cluster, on_event=None, **kw):
    from sparsify_tui.cluster.sweep import run_sweep

    return run_sweep(project, spec(**kw), address=cluster.address, on_event=on_event)


def assert_no_overlap(rows):
    """Per server (the one that measured), the [started, finished] intervals never overlap."""
    by_server = {}
    for r in rows:
        by_server.setdefault(r["measured_on"], []).append((r["started"], r["finished"]))
    for server, spans in by_server.items():
        spans.sort()
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            assert s2 >= e1, f"two measurements overlapped on {server}: {(s1, e1)} and {(s2, e2)}"


def test_jobs_land_on_the_servers_asked_for_one_at_a_time(ray_cluster, swept):
    project, report, events = swept

    assert report.failed == [] and report.skipped == [] and report.cached == []
    assert report.total == 8 and len(report.measured) == 8
    combos = sorted((r["server"], r["batch_size"], r["cores"]) for r in report.measured)
    assert combos == [(s, b, c) for s in ("alpha", "beta") for b in (1, 4) for c in (1, 2)]
    for r in report.measured:
        assert r["measured_on"] == r["server"]
        assert r["node_id"] == ray_cluster.node_id(r["server"]), "a job ran on another node than its server's"
        assert r["items_per_second"] > 0 and r["baseline_ms"] > 0
        assert r["finished"] > r["started"]
    assert_no_overlap(report.measured)
    # both servers worked in parallel: the driver started the first job of each before any finished
    kinds = [(e["event"], e.get("server")) for e in events]
    first_done = next(i for i, k in enumerate(kinds) if k[0] == "done")
    assert {s for k, s in kinds[:first_done] if k == "start"} == {"alpha", "beta"}

    # every result is a profile of the project, with the server's machine summary
    entries = [e for e in project.profiles_of("perf")]
    assert len(entries) == 8
    for e in entries:
        assert e.settings["sweep"] is True and e.settings["server"] in ("alpha", "beta")
        assert e.settings["batch_size"] in (1, 4) and e.settings["cores"] in (1, 2)
        assert e.engine == "onnxruntime" and e.engine_version
        assert e.machine.get("fingerprint") and e.machine.get("isa") is not None
        doc = project.load_profile(e)
        assert doc["kind"] == "perf" and doc["engine"] == "onnxruntime"
        assert doc["cores"] == e.settings["cores"] and doc["batch_size"] == e.settings["batch_size"]
        assert doc["layers"], "a sweep profile has the per-layer timings of a local one"
        assert doc["sweep"]["server"] == e.settings["server"]
        assert doc["sweep"]["node_id"] == ray_cluster.node_id(e.settings["server"])
    # the cache keys differ per server
    assert len({e.key for e in entries}) == 8


def test_resumed_sweep_measures_only_what_is_missing(ray_cluster, make_project):
    project = make_project("resume")
    first = sweep(project, ray_cluster, servers="alpha,beta", cores=[1])
    assert len(first.measured) == 2

    again = sweep(project, ray_cluster, servers="alpha,beta", cores=[1])
    assert again.measured == [] and len(again.cached) == 2
    assert {r["profile_id"] for r in again.cached} == {r["profile_id"] for r in first.measured}

    # lose one stored profile and widen the sweep: only the missing combinations are measured
    gone = next(r for r in first.measured if r["server"] == "beta")
    project.remove_profile(gone["profile_id"])
    events = []
    third = sweep(project, ray_cluster, on_event=events.append, servers="alpha,beta", cores=[1, 2])
    measured = sorted((r["server"], r["cores"]) for r in third.measured)
    assert measured == [("alpha", 2), ("beta", 1), ("beta", 2)]
    assert [(r["server"], r["cores"]) for r in third.cached] == [("alpha", 1)]
    assert sum(1 for e in events if e["event"] == "start") == 3
    assert len(project.profiles_of("perf")) == 4


def test_servers_flag_selects_servers(ray_cluster, make_project):
    project = make_project("only-beta")
    report = sweep(project, ray_cluster, servers="beta", cores=[1])
    assert [(r["server"], r["node_id"]) for r in report.measured] == [("beta", ray_cluster.node_id("beta"))]
    with pytest.raises(ClusterError, match="no server named nosuch"):
        sweep(project, ray_cluster, servers="beta,nosuch")


def test_more_cores_than_a_server_has_are_skipped(ray_cluster, make_project):
    from sparsify_tui.settings import usable_cores as max_cores

    project = make_project("skip")
    too_many = max_cores() + 1
    report = sweep(project, ray_cluster, servers="alpha", cores=[1, too_many])
    assert [r["cores"] for r in report.measured] == [1]
    assert [r["cores"] for r in report.skipped] == [too_many]
    assert "has only" in report.skipped[0]["reason"]


def test_ray_never_runs_two_measurements_at_once_on_a_server(ray_cluster, tiny_model):
    """Even submitted together (two sweeps sharing the cluster), the bench resource serializes them."""
    from sparsify_tui.cluster.servers import list_servers
    from sparsify_tui.cluster.sweep import submit_measure

    ray = ray_cluster.ray
    beta = next(s for s in list_servers() if s.name == "beta")
    model_ref = ray.put(tiny_model.read_bytes())
    payload = {"kind": "perf", "engine": "onnxruntime", "batch_size": 1, "cores": 1, **FAST}
    refs = [submit_measure(beta, model_ref, payload) for _ in range(3)]
    results = ray.get(refs, timeout=300)
    for res in results:
        assert "error" not in res, res.get("error")
        assert res["node_id"] == beta.node_id
    assert_no_overlap([{"measured_on": "beta", **r} for r in results])


def test_node_lost_mid_sweep_is_retried_on_an_equivalent_server(ray_cluster, make_project):
    ray_cluster.add_server("gamma")
    project = make_project("lost-gamma")
    killed = []

    def on_event(ev):
        # gamma's second job has just been submitted: let it start, then kill the node under it
        if ev["event"] == "start" and ev["server"] == "gamma" and ev["cores"] == 2 and not killed:
            # short: on an idle machine the tiny job finishes within a second
            time.sleep(0.2)
            ray_cluster.remove_server("gamma", graceful=False)  # SIGKILL, like a server losing power
            killed.append(time.time())

    report = sweep(project, ray_cluster, on_event=on_event, servers="alpha,gamma")
    assert killed, "the test did not kill gamma"
    assert report.failed == []
    got = {(r["server"], r["cores"]): r for r in report.measured}
    assert set(got) == {("alpha", 1), ("alpha", 2), ("gamma", 1), ("gamma", 2)}
    # gamma's first profile was kept; its second job ran on alpha (same ISA, as many cores)
    assert got[("gamma", 1)]["measured_on"] == "gamma"
    moved = got[("gamma", 2)]
    assert moved["measured_on"] == "alpha" and moved["retried_from"] == ["gamma"]
    assert moved["node_id"] == ray_cluster.node_id("alpha")
    assert_no_overlap(report.measured)
    entry = next(e for e in project.profiles_of("perf") if e.id == moved["profile_id"])
    assert entry.settings["server"] == "gamma" and entry.settings["measured_on"] == "alpha"
    assert len(project.profiles_of("perf")) == 4


def test_node_lost_without_equivalent_is_reported_and_finished_work_kept(ray_cluster, make_project):
    ray_cluster.add_server("delta")
    project = make_project("lost-delta")
    killed = []

    def on_event(ev):
        if ev["event"] == "done" and ev["server"] == "delta" and not killed:
            ray_cluster.remove_server("delta")
            killed.append(True)

    report = sweep(project, ray_cluster, on_event=on_event, servers="delta")
    assert killed
    assert [(r["server"], r["cores"]) for r in report.measured] == [("delta", 1)]
    assert [(r["server"], r["cores"]) for r in report.failed] == [("delta", 2)]
    assert "no equivalent server" in report.failed[0]["reason"]
    # the finished profile is saved: a fresh open of the project sees it
    from sparsify_tui.project import Project

    project.close()
    reopened = Project.open(project.dir, readonly=True)
    assert [e.settings["server"] for e in reopened.profiles_of("perf")] == ["delta"]


def test_cancelled_sweep_keeps_what_finished_and_resumes(ray_cluster, make_project):
    import threading

    from sparsify_tui.cluster.sweep import run_sweep
    from sparsify_tui.errors import CancelledError

    project = make_project("cancel")
    cancel = threading.Event()

    def on_event(ev):
        if ev["event"] == "done":
            cancel.set()

    with pytest.raises(CancelledError):
        run_sweep(project, spec(servers="beta", cores=[1, 2], batch_sizes=[1, 2]), address=ray_cluster.address,
                  on_event=on_event, cancel=cancel)
    kept = project.profiles_of("perf")
    assert 1 <= len(kept) < 4, "the finished profile is kept, the rest was not measured"
    # the same sweep again measures only what is missing
    report = sweep(project, ray_cluster, servers="beta", cores=[1, 2], batch_sizes=[1, 2])
    assert len(report.cached) == len(kept)
    assert len(report.cached) + len(report.measured) == 4 and report.failed == []
    assert {e.id for e in kept} == {r["profile_id"] for r in report.cached}


def test_model_with_external_data_travels_whole(ray_cluster, tmp_path, tiny_model):
    """The object store carries model.onnx and its external data file; the server measures it."""
    import onnx

    from sparsify_tui.cluster.sweep import model_files
    from sparsify_tui.project import Project

    src = tmp_path / "src"
    src.mkdir()
    onnx.save(onnx.load(str(tiny_model)), str(src / "ext.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.weights", size_threshold=0)
    project = Project.create(src / "ext.onnx", dir=tmp_path / "proj", name="ext")
    try:
        files = model_files(project.model_path)
        assert sorted(files) == ["ext.weights", "model.onnx"] and len(files["ext.weights"]) > 10_000
        report = sweep(project, ray_cluster, servers="beta", cores=[1])
        assert report.failed == [] and len(report.measured) == 1
        assert report.measured[0]["items_per_second"] > 0
    finally:
        project.close()
