"""The deployment search on several servers of the real two-node test cluster (every address 127.0.0.1).

Each server runs the real child job on the tiny model, ONNX Runtime fp32 and INT8 only, with short blocks.
No time is asserted: where each search ran, that each server's rows are against its own reference row,
what is stored, what a second run measures (nothing) and what a lost server does.
"""

from __future__ import annotations

import json
import time

FAST = dict(engines=["onnxruntime"], precisions=["fp32", "int8"], repeats=2, min_block_ms=20.0)


def deploy(project, cluster, servers="alpha,beta", on_event=None, **kw):
    from sparsify_tui.cluster.deploy import run_cluster_deploy

    return run_cluster_deploy(project, address=cluster.address, servers=servers, on_event=on_event, **{**FAST, **kw})


def test_each_server_gets_its_own_search_stored_once(ray_cluster, make_project):
    from sparsify_tui.engines.machine import machine_summary

    project = make_project("fleet")
    events = []
    doc = deploy(project, ray_cluster, servers="all", on_event=events.append)
    by_name = {s["name"]: s for s in doc["servers"]}
    assert sorted(by_name) == ["alpha", "beta"] and doc["measured"] == ["alpha", "beta"]
    for name, s in by_name.items():
        assert s["failed"] is None and s["measured_on"] == name
        ids = {r["id"] for r in s["rows"]}
        assert ids == {"onnxruntime/fp32/dense", "onnxruntime/int8/dense"}
        ref = s["reference"]
        assert ref["id"] == "onnxruntime/fp32/dense" and ref["speedup"] == 1.0
        # the reference is this server's own: its output change is zero, and its block times are the ones
        # this server measured (the two servers' timings are independent measurements)
        assert ref["output_change"] == 0.0
        int8 = next(r for r in s["rows"] if r["precision"] == "int8")
        assert int8["speedup"] > 0 and int8["output_change"] > 0
        # the server's machine summary (both servers are this machine)
        here = machine_summary()
        assert s["machine"]["cpu_model"] == here["cpu_model"] and s["machine"]["isa"] == here["isa"]
        assert s["machine"]["bf16"] == bool(here["bf16"])
        assert s["machine"]["amx"] == any(x.startswith("amx") for x in here["isa"])
        assert s["machine"]["cores"] == here["usable_cores"]
    assert by_name["alpha"]["reference"]["block_ms"] != by_name["beta"]["reference"]["block_ms"]
    starts = [e for e in events if e["event"] == "start"]
    assert sorted(e["server"] for e in starts) == ["alpha", "beta"]
    # one stored deploy profile per server, with the server in its settings and the node that measured it
    entries = project.profiles_of("deploy")
    assert sorted(e.settings["server"] for e in entries) == ["alpha", "beta"]
    for e in entries:
        stored = project.load_profile(e)
        assert stored["cluster"]["node_id"] == ray_cluster.node_id(e.settings["server"])
    assert [r["server"] for r in doc["ship"]] == ["alpha", "beta"]
    assert all(r["engine"] == "onnxruntime" and r["speedup"] for r in doc["ship"])

    # the same search again measures nothing: every server's profile comes from the project
    events.clear()
    again = deploy(project, ray_cluster, on_event=events.append)
    assert again["measured"] == [] and again["cached"] == ["alpha", "beta"]
    assert not [e for e in events if e["event"] == "start"]
    assert {s["entry_id"] for s in again["servers"]} == {e.id for e in entries}
    assert len(project.profiles_of("deploy")) == 2


def test_cli_json_lists_the_rows_a_server_skipped(ray_cluster, make_project, capsys, tmp_path):
    """``deploy --servers NAME --json`` (in this process, on the test cluster): one JSON document; a
    configuration the server cannot run is listed in its ``skipped`` with why."""
    from sparsify_tui.cli import main

    project = make_project("fleet-cli")
    project.close()
    code = main(["deploy", str(project.dir), "--servers", "beta", "--address", ray_cluster.address,
                 "--engines", "onnxruntime", "--precisions", "fp32,bf16", "--repeats", "2", "--json",
                 "--export", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    (beta,) = doc["servers"]
    assert set(beta) >= {"name", "machine", "rows", "best", "skipped", "failed"}
    assert beta["name"] == "beta" and beta["failed"] is None
    assert [r["id"] for r in beta["rows"]] == ["onnxruntime/fp32/dense"]
    assert beta["best"]["id"] == "onnxruntime/fp32/dense"
    (skip,) = beta["skipped"]
    assert (skip["engine"], skip["precision"]) == ("onnxruntime", "bf16") and "openvino" in skip["reason"]
    assert doc["ship"] == [{"server": "beta", "engine": "onnxruntime", "precision": "fp32", "plan": "dense",
                            "speedup": 1.0, "change": 0.0, "change_metric": beta["best"]["output_change_metric"],
                            "row": "onnxruntime/fp32/dense", "why_none": None}]
    assert beta["best"]["output_change_metric"]
    # --export DIR: one model and snippet per server, the server's best row
    assert [(e["server"], e["row"]) for e in doc["exported"]] == [("beta", "onnxruntime/fp32/dense")]
    assert (tmp_path / "beta.onnx").read_bytes() == project.model_path.read_bytes()
    assert "onnxruntime" in (tmp_path / "beta.py").read_text()
    # with --servers, --export takes a directory: one clear error line
    assert main(["deploy", str(project.dir), "--servers", "beta", "--export", str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --export")


def test_cancel_keeps_the_servers_that_finished(ray_cluster, make_project):
    import threading

    import pytest

    from sparsify_tui.cluster.deploy import run_cluster_deploy
    from sparsify_tui.errors import CancelledError

    project = make_project("fleet-cancel")
    cancel = threading.Event()

    def on_event(ev):
        if ev["event"] == "done":
            cancel.set()

    with pytest.raises(CancelledError):
        run_cluster_deploy(project, address=ray_cluster.address, servers="alpha,beta", on_event=on_event,
                           cancel=cancel, **{**FAST, "precisions": ["fp32"]})
    kept = sorted(e.settings["server"] for e in project.profiles_of("deploy"))
    assert kept and set(kept) <= {"alpha", "beta"}
    again = deploy(project, ray_cluster, precisions=["fp32"])
    assert again["cached"] == kept and sorted(again["measured"] + again["cached"]) == ["alpha", "beta"]


def test_server_killed_mid_search_moves_to_an_equivalent_one(ray_cluster, make_project):
    ray_cluster.add_server("gamma")
    project = make_project("fleet-lost")
    killed = []

    def on_event(ev):
        if ev["event"] == "start" and ev["server"] == "gamma" and not killed:
            time.sleep(0.5)  # let its task start, then power the node off under it
            ray_cluster.remove_server("gamma", graceful=False)
            killed.append(True)

    doc = deploy(project, ray_cluster, servers="alpha,gamma", on_event=on_event, precisions=["fp32"])
    assert killed
    by_name = {s["name"]: s for s in doc["servers"]}
    assert by_name["alpha"]["failed"] is None and by_name["alpha"]["measured_on"] == "alpha"
    gamma = by_name["gamma"]
    assert gamma["failed"] is None, gamma["failed"]
    assert gamma["measured_on"] == "alpha" and gamma["rows"]
    assert gamma["reference"]["id"] == "onnxruntime/fp32/dense"
    # nothing finished was lost: both searches are in the project
    assert sorted(e.settings["server"] for e in project.profiles_of("deploy")) == ["alpha", "gamma"]


def test_server_killed_without_equivalent_is_reported_failed(ray_cluster, make_project):
    ray_cluster.add_server("delta")
    project = make_project("fleet-delta")
    killed = []

    def on_event(ev):
        if ev["event"] == "start" and ev["server"] == "delta" and not killed:
            time.sleep(0.5)
            ray_cluster.remove_server("delta", graceful=False)
            killed.append(True)

    doc = deploy(project, ray_cluster, servers="delta", on_event=on_event, precisions=["fp32"])
    assert killed
    (delta,) = doc["servers"]
    assert "no equivalent server" in delta["failed"] and delta["rows"] == []
    assert doc["ship"][0]["engine"] is None and "no equivalent server" in doc["ship"][0]["why_none"]
    assert project.profiles_of("deploy") == []


async def test_deploy_screen_selects_a_server_and_ships_per_server(ray_cluster, make_project):
    """The app's Deploy screen on two servers' real results: s shows each server's rows, the ship table both."""
    from textual.widgets import DataTable, Static

    from sparsify_tui.tui.app import SparsifyApp
    from sparsify_tui.tui.screens.deploy import DeployScreen
    from tests.tui.conftest import FIXED_MACHINE, settle, widget_text

    project = make_project("fleet-screen")
    doc = deploy(project, ray_cluster, precisions=["fp32"])
    by_name = {s["name"]: s for s in doc["servers"]}
    app = SparsifyApp(project, machine=FIXED_MACHINE)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, app)
        await pilot.press("f6")
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, DeployScreen)
        table = screen.query_one("#deploy-table", DataTable)
        # this machine has no result of its own; the ship table names both servers' best rows
        assert table.row_count == 0 and screen.servers == ["alpha", "beta"]
        ship = widget_text(screen.query_one("#deploy-ship", Static), width=200)
        for name in ("alpha", "beta"):
            best = by_name[name]["best"]
            assert f"{name}: {best['engine']} {best['precision']} dense, {best['speedup']:.2f}x" in ship
        for name in ("alpha", "beta"):
            await pilot.press("s")
            await settle(pilot, app)
            assert screen.server == name
            status = widget_text(screen.query_one("#deploy-status", Static), width=300)
            assert status.startswith(f"server {name} (")
            ids = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]
            assert ids == [r["id"] for r in by_name[name]["rows"]]
            assert screen.doc["entry_id"] == by_name[name]["entry_id"]
        await pilot.press("s")
        await settle(pilot, app)
        assert screen.server is None
