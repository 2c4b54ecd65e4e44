"""Profile comparison on the demo project: an approximated profile against a real ONNX Runtime run."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static

from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.data import fmt_ms
from sparsify_tui.tui.screens.compare import CompareScreen, fmt_diff
from tests.tui.conftest import FIXED_MACHINE, settle, wait_for, widget_text


@pytest.fixture
def two_profiles(demo_project):
    """The demo project with its approximated b1 profile plus a real ORT profile on 1 core."""
    from sparsify_tui.profiles.perf import run_perf_profile

    doc = run_perf_profile(demo_project.model_path, engine="onnxruntime", batch_size=1, cores=1,
                           levels=[0.0], iterations=3, warmup=1, repeats=1)
    demo_project.add_profile("perf", "ort 1 core", {"batch_size": 1, "cores": 1}, doc["engine"],
                             doc.get("engine_version", ""), dict(FIXED_MACHINE), doc)
    return demo_project, doc


async def test_compare_two_profiles_side_by_side(two_profiles):
    project, ort = two_profiles
    approx = project.load_profile(project.profiles_of("perf")[0])
    app = SparsifyApp(project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("f3")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
        await pilot.pause()
        screen = app.screen
        # newest is B (the ORT run), A the approximated one
        assert screen.b_id == project.profiles_of("perf")[1].id
        table = screen.query_one("#compare-table", DataTable)
        a_rows = {r["id"]: r for r in approx["layers"]}
        b_rows = {r["id"]: r for r in ort["layers"]}
        common = [i for i in a_rows if i in b_rows and a_rows[i]["baseline_ms"] > 0]
        assert table.row_count >= len(common) > 5
        lid = common[0]
        row = table.get_row(lid)
        a_ms, b_ms = a_rows[lid]["baseline_ms"], b_rows[lid]["baseline_ms"]
        assert row[2].plain == fmt_ms(a_ms) and row[3].plain == fmt_ms(b_ms)
        assert row[4].plain == fmt_diff(b_ms - a_ms)
        assert row[5].plain == f"{b_ms / a_ms:.2f}"
        totals = widget_text(screen.query_one("#compare-totals", Static), 120)
        assert f"{ort['baseline_ms'] / approx['baseline_ms']:.2f}" in totals  # baseline ratio
        assert "Items per Second" in totals
        assert screen.query_one("#compare-chart").series == 2
        assert "no validation yet" in widget_text(screen.query_one("#compare-validation", Static), 120)
        # swap: the ratio inverts
        await pilot.press("s")
        await pilot.pause()
        assert table.get_row(lid)[5].plain == f"{a_ms / b_ms:.2f}"
        # order by ratio: first row has the largest ratio
        await pilot.press("o", "o")
        await pilot.pause()
        ratios = [float(table.get_row_at(i)[5].plain) for i in range(table.row_count)
                  if table.get_row_at(i)[5].plain != "-"]
        assert ratios == sorted(ratios, reverse=True)


async def test_compare_shows_validation_section(demo_project):
    demo_project.set_optimization({"name": "default", "validation": {
        "engine": "onnxruntime", "dense_ms": 2.0, "pruned_ms": 1.0, "measured_speedup": 2.0,
        "estimated_speedup": 2.5, "relative_error": 0.25}})
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        app.push_screen(CompareScreen(demo_project))
        await pilot.pause()
        text = widget_text(app.screen.query_one("#compare-validation", Static), 120)
        assert "2.00x" in text and "2.50x" in text and "+25%" in text
        # only one perf profile: A = B, ratio 1
        table = app.screen.query_one("#compare-table", DataTable)
        assert all(table.get_row_at(i)[5].plain in ("1.00", "-") for i in range(table.row_count))


async def test_compare_with_an_imported_profile(demo_project, tmp_path):
    """A profile measured elsewhere (``profile perf --json``) and imported with ``--import`` is offered."""
    import json

    from sparsify_tui.cli import main
    from sparsify_tui.profiles.perf import approx_perf_profile
    from sparsify_tui.analysis import analyze

    doc = approx_perf_profile(analyze(demo_project.model_path), cores=8)
    src = tmp_path / "other-server.json"
    src.write_text(json.dumps(doc))
    demo_project.close()
    assert main(["profile", "perf", str(demo_project.dir), "--import", str(src)]) == 0
    from sparsify_tui.project import Project

    project = Project.open(demo_project.dir)
    try:
        app = SparsifyApp(project, machine=FIXED_MACHINE)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            app.push_screen(CompareScreen(project))
            await pilot.pause()
            screen = app.screen
            imported = next(e for e in project.profiles_of("perf") if e.settings.get("imported_from"))
            assert screen.b_id == imported.id  # the newest
            labels = [str(o[0]) for o in screen.query_one("#compare-b")._options]
            assert any("imported" in lab for lab in labels)
            totals = widget_text(screen.query_one("#compare-totals", Static), 120)
            approx = project.load_profile(project.profiles_of("perf")[0])
            assert f"{doc['baseline_ms'] / approx['baseline_ms']:.2f}" in totals
    finally:
        project.close()
