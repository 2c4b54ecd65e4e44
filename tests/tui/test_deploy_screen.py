"""Deploy screen on a real stored deployment search (ONNX Runtime and OpenVINO really measured)."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Static

from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.screens.deploy import DeployScreen
from sparsify_tui.tui.screens.overview import OverviewScreen
from sparsify_tui.tui.widgets.charts import DeployChart
from tests.reliability.helpers import cli_env, run_cli
from tests.tui.conftest import FIXED_MACHINE, make_demo_project, settle, wait_for, widget_text


@pytest.fixture
def deployed_project(tmp_path, tui_home):
    """The demo model with an optimization and a stored deploy result (real run, 2 rounds)."""
    from sparsify_tui.actions.deploy import run_deploy
    from sparsify_tui.project import Project

    project = make_demo_project(tmp_path / "demo")
    project.close()
    res = run_cli("optimize", tmp_path / "demo", "--sparsity", "0.8", env=cli_env(SPARSIFY_TUI_HOME=str(tui_home)))
    assert res.returncode == 0, res.stderr
    project = Project.open(tmp_path / "demo")
    doc = run_deploy(project, engines=["onnxruntime", "openvino"], repeats=2, min_block_ms=50)
    yield project, doc
    project.close()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_deploy_screen_shows_the_stored_search(deployed_project, size, tmp_path):
    project, doc = deployed_project
    rows = doc["rows"]
    assert len(rows) >= 4
    app = SparsifyApp(project, machine=FIXED_MACHINE)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        # the overview names the fastest configuration and how it compares to the sparse plan alone
        assert isinstance(app.screen, OverviewScreen)
        totals = widget_text(app.screen.query_one("#totals", Static), width=200)
        assert "Deploy" in totals
        fastest = max(rows, key=lambda r: r["speedup"])
        best = doc["best"]  # the default budget: the fastest row whose outputs follow the original
        assert doc["budget"]["kind"] == "default"
        assert best["id"] == max((r for r in rows if not r["departure"]), key=lambda r: r["speedup"])["id"]
        assert f"{best['engine']} {best['precision']}" in totals and f"{best['speedup']:.2f}x" in totals
        if doc["versus_sparse_plan"]:
            assert f"{doc['versus_sparse_plan']:.2f}x the sparse plan alone" in totals
        await pilot.press("f6")
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, DeployScreen)
        table = screen.query_one("#deploy-table", DataTable)
        chart = screen.query_one("#deploy-chart", DeployChart)
        assert table.row_count == len(rows)
        shown = [table.get_row_at(i) for i in range(table.row_count)]
        speed = [float(r[5].plain.rstrip("x")) for r in shown]
        assert speed == sorted(speed, reverse=True)  # fastest first
        marks = {table.coordinate_to_cell_key((i, 0)).row_key.value: shown[i][0].plain for i in range(len(shown))}
        assert [k for k, m in marks.items() if m == "*"] == [best["id"]]
        for r in rows:  # ! marks the rows whose outputs departed (or whose engine disagrees), P the front
            if r["id"] != best["id"]:
                want = "!" if (r["departure"] or r["engines_disagree"]) else ("P" if r["pareto"] else "")
                assert marks[r["id"]] == want, r
        status = widget_text(screen.query_one("#deploy-status", Static), width=300)
        assert "budget: default: outputs must follow the original" in status
        # the Change column names the highlighted row's unit; the detail line its reading and output metric
        from sparsify_tui.metrics import SHORTER, format_change

        for i in (0, len(shown) - 1):
            table.move_cursor(row=i)
            await settle(pilot, app)
            r = next(x for x in rows if x["id"] == table.coordinate_to_cell_key((i, 0)).row_key.value)
            unit = SHORTER.get(r["output_change_metric"], r["output_change_metric"])
            assert unit in table.columns["Change"].label.plain
            detail = widget_text(screen.query_one("#deploy-detail", Static), width=400)
            assert detail.startswith(f"{r['engine']} {r['precision']} {r['optimization'] or 'dense'}: change ")
            assert r["output_change_reading"] in detail
            outs = r["output_change_outputs"]  # the metric of each output (one: the change's own)
            if len(outs) == 1:
                assert f"change {format_change(r)[0]} on {outs[0]['name']}" in detail
            else:
                for out in outs:
                    assert f"{out['name']}: {SHORTER.get(out['metric'], out['metric'])}" in detail
            if r["departure"] and not r["engines_disagree"]:
                assert f"left out by the budget: {r['departure']}" in detail
        table.move_cursor(row=0)
        await settle(pilot, app)
        assert chart.points == len(rows)
        # it fits: table, chart, info and footer inside the screen, none of them collapsed
        for w in (table, chart, screen.query_one("#deploy-info"), screen.query_one("#deploy-detail")):
            assert w.region.height > 0 and w.region.right <= size[0] and w.region.bottom <= size[1] - 1
        assert table.region.height >= 4 and chart.region.height >= 8
        # a budget below the fastest row's change picks another best row, without measuring again
        changes = sorted({r["output_change"] for r in rows})
        tight = changes[0]
        await pilot.press("b")
        box = screen.query_one("#deploy-budget-input", Input)
        assert box.has_focus
        box.value = repr(tight)
        await pilot.press("enter")
        await settle(pilot, app)
        want = max((r for r in rows if r["output_change"] <= tight), key=lambda r: r["speedup"])
        assert screen.doc["best"]["id"] == want["id"]
        best_row = next(table.get_row_at(i) for i in range(table.row_count) if table.get_row_at(i)[0].plain == "*")
        assert best_row[1].plain == want["engine"] and best_row[3].plain == (want["optimization"] or "dense")
        assert f"within the budget (output change <= {tight:g})" in widget_text(
            screen.query_one("#deploy-info", Static), width=300)
        assert screen.doc["budget"]["source"] == "the budget box"
        # none: the raw fastest
        await pilot.press("b")
        box.value = "none"
        await pilot.press("enter")
        await settle(pilot, app)
        assert screen.doc["best"]["id"] == fastest["id"] and screen.doc["budget"]["kind"] == "none"
        # export the highlighted row (the first: the fastest)
        await pilot.press("e")
        path = screen.query_one("#deploy-export-path", Input)
        assert path.display and path.has_focus
        out = tmp_path / f"export-{size[0]}.onnx"
        path.value = str(out)
        await pilot.press("enter")
        await wait_for(pilot, lambda: out.exists() and out.with_suffix(".py").exists(), timeout=120)
        assert fastest["engine"].replace("onnxruntime", "onnxruntime") in out.with_suffix(".py").read_text()
        await pilot.press("escape")
        await settle(pilot, app)
        assert isinstance(app.screen, OverviewScreen)


async def test_deploy_screen_without_result_and_palette(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        from sparsify_tui.tui.commands import EXTRA_COMMANDS

        assert any(a == "show_deploy" for _n, _h, a in EXTRA_COMMANDS)
        await pilot.press("f6")
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, DeployScreen)
        assert "no deployment search yet" in widget_text(screen.query_one("#deploy-status", Static), width=200)
        assert screen.query_one("#deploy-table", DataTable).row_count == 0


async def test_deploy_screen_live_rows_and_cancel_keeps_them(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f6")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DeployScreen)
        job = app.start_deploy({"engines": ["onnxruntime", "openvino"], "repeats": 200})
        table = screen.query_one("#deploy-table", DataTable)

        def timed_rows() -> int:
            return sum(1 for i in range(table.row_count) if table.get_row_at(i)[4].plain not in ("…", "-"))

        # rows appear while it measures, their times after the first rounds
        await wait_for(pilot, lambda: job.active and table.row_count >= 3 and timed_rows() >= 3, timeout=300)
        assert "running" in widget_text(screen.query_one("#deploy-status", Static), width=200)
        await pilot.press("x")
        await wait_for(pilot, lambda: not job.active, timeout=60)
        await settle(pilot, app)
        assert job.state == "cancelled"
        # the finished rounds were stored: the screen shows them from the project
        stored = [e for e in demo_project.profiles_of("deploy")]
        assert len(stored) == 1
        doc = demo_project.load_profile(stored[0])
        assert doc["complete"] is False and doc["rows"]
        assert table.row_count == len(doc["rows"]) and timed_rows() == len(doc["rows"])
        assert "incomplete" in widget_text(screen.query_one("#deploy-status", Static), width=200)
