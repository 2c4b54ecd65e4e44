"""The compare screen on a project swept with the real ``sparsify-tui sweep`` command.

The fixture starts a two-server Ray cluster on 127.0.0.1 (servers ``alpha``
and ``beta``, in a helper process so this process never connects to Ray),
runs the real CLI ``sparsify-tui sweep DIR --address ... --batch-sizes 1,2
--cores 1,2 --engines onnxruntime`` on the demo model, and stops the cluster:
every sweep profile and number below comes from that run (ONNX Runtime, few
iterations). The tests then drive the app with Pilot and check the grouped
profile pickers and the scaling view against the profiles stored in the
project. About 20 s for the sweep, a few seconds per test.

Without Ray the swept tests SKIP, unless ``SPARSIFY_REQUIRE_RAY=1`` (CI): then
they FAIL. The no-sweep message and the snapshot need no Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest
from textual.widgets import DataTable, Static

from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.data import fmt_ms
from sparsify_tui.tui.screens.compare import CompareScreen, profile_label
from sparsify_tui.tui.widgets.scaling import ScalingView
from tests.tui.conftest import (
    FIXED_MACHINE,
    FIXED_TIME,
    add_approx_profiles,
    settle,
    wait_for,
    widget_text,
)

SERVERS = ("alpha", "beta")
BATCHES = (1, 2)
CORES = (1, 2)

@pytest.fixture(scope="module")
def swept_dir(tmp_path_factory):
    """The demo project with an approximated profile and a real two-server sweep: ``(dir, sweep report)``."""
    from tests.cluster.conftest import import_ray_or_skip

    import_ray_or_skip()
    from sparsify_tui.analysis.demo import build_demo_model
    from sparsify_tui.project import Project

    work = tmp_path_factory.mktemp("compare-sweep")
    env = dict(os.environ, SPARSIFY_TUI_HOME=str(work / "home"), RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", NM_DISABLE_ANALYTICS="1")
    project = Project.create(build_demo_model(work / "demo.onnx"), dir=work / "demo", name="demo")
    add_approx_profiles(project, fixed=True, loss=False)  # a profile that is not from the sweep
    project.close()  # the sweep command takes the project's lock
    from sparsify_tui.cluster.local import local_cluster

    # the cluster lives in its own process: this test process never calls ray.init (other tests may have)
    with local_cluster(work, SERVERS, env=env) as address:
        out = subprocess.run(
            [sys.executable, "-m", "sparsify_tui", "sweep", str(project.dir), "--address", address,
             "--servers", ",".join(SERVERS), "--batch-sizes", ",".join(map(str, BATCHES)),
             "--cores", ",".join(map(str, CORES)), "--engines", "onnxruntime", "--levels", "0",
             "--iterations", "3", "--warmup", "1", "--repeats", "1", "--json"],
            check=False, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["counts"] == {"measured": 8, "cached": 0, "skipped": 0, "failed": 0}, report
    return project.dir, report


@pytest.fixture
def swept(swept_dir, tui_home):
    """The swept project, open, and the stored numbers ``{(server, batch, cores): {"id", "ips", "ms"}}``."""
    from sparsify_tui.project import Project

    directory, report = swept_dir
    project = Project.open(directory)
    stored = {}
    for e in project.profiles_of("perf"):
        s = e.settings
        if s.get("sweep"):
            doc = project.load_profile(e)
            stored[(s["server"], s["batch_size"], s["cores"])] = {
                "id": e.id, "ips": doc["items_per_second"], "ms": doc["baseline_ms"]}
    # the project holds exactly what the command reported measuring
    assert sorted(stored) == sorted((srv, b, c) for srv in SERVERS for b in BATCHES for c in CORES)
    for row in report["measured"]:
        got = stored[(row["server"], row["batch_size"], row["cores"])]
        assert got["id"] == row["profile_id"] and got["ips"] == row["items_per_second"]
    try:
        yield project, stored
    finally:
        with contextlib.suppress(Exception):
            project.close()


def _plain(prompt) -> str:
    return prompt.plain if hasattr(prompt, "plain") else str(prompt)


async def _open_compare(pilot, app) -> CompareScreen:
    await settle(pilot, app)
    await pilot.press("f3")
    await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
    await pilot.pause()
    return app.screen


def _sweep_label(server: str, batch: int, cores: int) -> str:
    return f"{server} · b{batch} · {cores} core{'' if cores == 1 else 's'} · onnxruntime"


async def test_pickers_offer_sweep_profiles_grouped_by_server_batch_and_cores(swept):
    project, stored = swept
    approx = next(e for e in project.profiles_of("perf") if not e.settings.get("sweep"))
    app = SparsifyApp(project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_compare(pilot, app)
        expected = ["profile A", profile_label(approx)]  # not from the sweep: first, as before
        for server in SERVERS:
            for batch in BATCHES:
                expected.append(f"── {server} · batch {batch} ──")
                expected += [_sweep_label(server, batch, cores) for cores in CORES]
        overlay = screen.query_one("#compare-a").query_one("SelectOverlay")
        options = [overlay.get_option_at_index(i) for i in range(overlay.option_count)]
        assert [_plain(o.prompt) for o in options] == expected
        # the group headers cannot be chosen; every profile can
        assert [_plain(o.prompt) for o in options if o.disabled] == [p for p in expected if p.startswith("──")]

        # keyboard: open A's list, End, Up twice skips the "beta · batch 2" header -> beta b1 2 cores
        await pilot.press("a", "enter")
        await pilot.pause()
        await pilot.press("end", "up", "up", "enter")
        await pilot.pause()
        assert screen.a_id == stored[("beta", 1, 2)]["id"]
        # type to search: "alpha" jumps to the first alpha profile
        await pilot.press("b", "enter")
        await pilot.pause()
        await pilot.press(*"alpha")
        await pilot.press("enter")
        await pilot.pause()
        assert screen.b_id == stored[("alpha", 1, 1)]["id"]
        # the comparison shows the two stored profiles' items per second
        totals = widget_text(screen.query_one("#compare-totals", Static), 120)
        ips_line = next(ln for ln in totals.splitlines() if "Items per Second" in ln)
        a_ips, b_ips = stored[("beta", 1, 2)]["ips"], stored[("alpha", 1, 1)]["ips"]
        assert ips_line.split()[3:5] == [f"{a_ips:,.1f}", f"{b_ips:,.1f}"]
        assert screen.query_one("#compare-table", DataTable).row_count > 10


def _table_rows(table: DataTable) -> list[list[str]]:
    return [[c.plain if hasattr(c, "plain") else str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def _expected_rows(stored, axis: str, fixed: int) -> list[list[str]]:
    rows = []
    for server in SERVERS:
        for x in (CORES if axis == "cores" else BATCHES):
            batch, cores = (fixed, x) if axis == "cores" else (x, fixed)
            s = stored[(server, batch, cores)]
            rows.append([server, "onnxruntime", str(batch), str(cores), f"{s['ips']:,.1f}", fmt_ms(s["ms"])])
    return rows


async def test_scaling_view_draws_one_line_per_server_with_the_stored_numbers(swept):
    project, stored = swept
    app = SparsifyApp(project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_compare(pilot, app)
        a_before = screen.a_id
        assert not screen.scaling_shown
        await pilot.press("g")
        await pilot.pause()
        assert screen.scaling_shown
        view = screen.query_one(ScalingView)
        chart = screen.query_one("#scaling-chart")
        table = screen.query_one("#scaling-table", DataTable)

        def check(axis: str, fixed: int) -> None:
            assert (view.axis, view.fixed) == (axis, fixed)
            assert chart.axis == axis and chart.fixed == fixed
            assert list(chart.lines) == list(SERVERS)  # one line per server
            for server in SERVERS:
                if axis == "cores":
                    want = [(c, stored[(server, fixed, c)]["ips"]) for c in CORES]
                else:
                    want = [(b, stored[(server, b, fixed)]["ips"]) for b in BATCHES]
                assert chart.lines[server] == want
            assert _table_rows(table) == _expected_rows(stored, axis, fixed)
            status = widget_text(screen.query_one("#scaling-status", Static), 118)
            other = "batch size" if axis == "cores" else "cores"
            assert f"x: {'cores' if axis == 'cores' else 'batch size'} · {other} {fixed} of 1, 2" in status

        # x = cores for batch size 1 (both batch sizes have every point: the smallest is the default)
        check("cores", 1)
        await pilot.pause()
        assert chart.drawn == 2
        await pilot.press("right_square_bracket")  # next batch size
        check("cores", 2)
        await pilot.press("right_square_bracket")  # wraps around
        check("cores", 1)
        await pilot.press("c")  # batch size on the x axis, for one core count
        check("batch", 1)
        await pilot.press("left_square_bracket")
        check("batch", 2)
        await pilot.pause()
        assert chart.drawn == 2
        # the servers' machine summaries (stored with the profiles) are listed beside the table
        servers_text = widget_text(screen.query_one("#scaling-servers", Static), 64)
        for server in SERVERS:
            entry = project.get_profile(stored[(server, 1, 1)]["id"])
            assert f"{server}: {entry.machine['cpu_model']}" in servers_text
        # the layer-comparison keys do nothing here and are out of the footer; the chart keys are in it
        assert screen.check_action("swap", ()) is False and screen.check_action("scaling_axis", ()) is True
        assert screen.check_action("scaling_engine", ()) is False  # one engine only
        await pilot.press("s")
        assert screen.a_id == a_before
        # escape: back to the layers (not out of the screen), g toggles again
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen) and not screen.scaling_shown
        assert screen.check_action("scaling_axis", ()) is False and screen.check_action("swap", ()) is True
        await pilot.press("g")
        await pilot.pause()
        assert screen.scaling_shown and (view.axis, view.fixed) == ("batch", 2)  # kept


async def test_scaling_view_fits_80x24(swept):
    project, stored = swept
    app = SparsifyApp(project, machine=FIXED_MACHINE)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_compare(pilot, app)
        await pilot.press("g")
        await pilot.pause()
        await pilot.pause()
        view = screen.query_one(ScalingView)
        chart = screen.query_one("#scaling-chart")
        table = screen.query_one("#scaling-table", DataTable)
        status = screen.query_one("#scaling-status", Static)
        assert view.has_class("-narrow")  # table below the chart
        assert chart.drawn == 2 and list(chart.lines) == list(SERVERS)
        assert chart.region.height >= 10 and chart.region.width >= 76
        # every row of the table (header + one per server and core count) is on screen, above the footer
        assert table.region.y >= chart.region.bottom
        assert table.region.height == 1 + len(SERVERS) * len(CORES)
        assert table.region.bottom <= 23
        assert status.region.height <= 2
        assert _table_rows(table) == _expected_rows(stored, "cores", 1)


async def test_without_a_sweep_the_scaling_view_says_how_to_run_one(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_compare(pilot, app)
        await pilot.press("g")
        await pilot.pause()
        text = widget_text(screen.query_one("#scaling-status", Static), 78)
        assert "No sweep profiles yet" in text and "sparsify-tui sweep PROJECT_DIR" in text.replace("\n", " ")
        assert not screen.query_one("#scaling-chart").display
        assert screen.check_action("scaling_axis", ()) is False
        await pilot.press("c", "right_square_bracket", "e")  # nothing to switch: no error
        await pilot.pause()
        assert screen.scaling_shown and app.screen is screen
        # the pickers offer the approximated profile as before, without group headers
        overlay = screen.query_one("#compare-a").query_one("SelectOverlay")
        assert [_plain(overlay.get_option_at_index(i).prompt) for i in range(overlay.option_count)] == [
            "profile A", profile_label(demo_project.profiles_of("perf")[0])]
        assert not any(overlay.get_option_at_index(i).disabled for i in range(overlay.option_count))


def _add_approximated_sweep(project) -> None:
    """Sweep-tagged profiles computed from FLOPs (deterministic, for the snapshot only).

    Tagged exactly as a sweep tags what it stores (``Job.settings``), with fixed
    machine summaries and times; alpha has 4 cores, beta 2.
    """
    from sparsify_tui.analysis import analyze
    from sparsify_tui.cluster.sweep import Job, SweepSpec
    from sparsify_tui.profiles.perf import approx_perf_profile

    graph = analyze(project.model_path)
    spec = SweepSpec(kind="perf", servers="alpha,beta", batch_sizes=[1, 4], levels=[0.0])
    for server, cores_list in (("alpha", (1, 2, 4)), ("beta", (1, 2))):
        machine = dict(FIXED_MACHINE, cores=max(cores_list), physical_cores=max(cores_list))
        for batch in spec.batch_sizes:
            for cores in cores_list:
                job = Job("perf", server, batch, cores, "onnxruntime")
                doc = approx_perf_profile(graph, batch_size=batch, cores=cores, levels=[0.0])
                doc.update(machine=machine, created=FIXED_TIME, model_path="model.onnx")
                project.add_profile("perf", f"sweep {server}: {job.label()}", job.settings(spec), "onnxruntime",
                                    "1.18.1", machine, doc)
    for entry in project.profiles:
        entry.created = FIXED_TIME
    project.save()


def test_snapshot_scaling_view_80x24(snap_compare, demo_project):
    _add_approximated_sweep(demo_project)
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)

    async def before(pilot):
        for _ in range(3):
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
        await pilot.press("f3")
        for _ in range(400):
            if isinstance(pilot.app.screen, CompareScreen):
                break
            await pilot.pause(0.05)
        await pilot.pause()
        await pilot.press("g")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=before)
