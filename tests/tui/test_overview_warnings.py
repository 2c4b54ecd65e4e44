"""The overview with a flagged perf profile: one line per kind of warning, the sentences on `w`.

A perf profile measured on a busy machine carries several long warnings; the
overview must still show the model's own facts (Layers, Params, FLOPs,
Baseline) at 80x24. The warnings here are built by the same function a real
measurement uses (``profiles.perf.add_quality``) from the figures of a busy
run: interference on two levels and on the deployed timing, an instrumented
run 1.6x the deployed one, and a level-order note.
"""

from __future__ import annotations

import pytest

from sparsify_tui.tui.app import SparsifyApp
from tests.tui.conftest import FIXED_MACHINE, FIXED_TIME, make_demo_project, settle


@pytest.fixture
def flagged_demo(tmp_path, tui_home):
    from sparsify_tui.analysis import analyze
    from sparsify_tui.profiles.perf import add_quality, approx_perf_profile

    project = make_demo_project(tmp_path / "demo")
    graph = analyze(project.model_path)
    doc = approx_perf_profile(graph, cores=2)
    doc.update(machine=dict(FIXED_MACHINE), created=FIXED_TIME, model_path="model.onnx")
    parts = [{"key": "0.0", "interference": 0.41, "attempts": 3}, {"key": "0.4", "interference": 0.33},
             {"key": "0.8", "interference": 0.02}]
    deployed = {"deployed_ms": float(doc["baseline_ms"]) / 1.6, "interference": 0.27}
    note = ("level 0.9 measured 2.310 ms, slower than level 0.8 (2.120 ms) beyond the spread of its repeats, "
            "also when measured again: its time is doubtful (a busy machine, or sparse kernels slower than dense here)")
    add_quality(doc, parts, deployed, level_notes=[note])
    assert len(doc["quality"]["warnings"]) == 5
    project.add_profile("perf", "approximated b1", {"approximate": True, "batch_size": 1}, doc["engine"], "",
                        dict(FIXED_MACHINE), doc)
    for entry in project.profiles:
        entry.created = FIXED_TIME
    project.save()
    yield project
    project.close()


def test_warnings_group_by_kind():
    from sparsify_tui.engines.interference import busy_warning
    from sparsify_tui.tui.data import warning_groups

    ws = [busy_warning("the dense model", 0.4, 2), "something new", busy_warning("level 0.5", 0.3, 1)]
    assert warning_groups(ws) == [("busy machine", [ws[0], ws[2]]), ("other", ["something new"])]


def test_snapshot_overview_flagged_80x24(snap_compare, flagged_demo):
    async def before(pilot):
        await settle(pilot, pilot.app)

    assert snap_compare(SparsifyApp(flagged_demo, machine=FIXED_MACHINE), terminal_size=(80, 24), run_before=before)


async def test_flagged_overview_keeps_the_model_facts_on_screen_and_w_shows_every_warning(flagged_demo):
    app = SparsifyApp(flagged_demo, machine=FIXED_MACHINE)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        screen = app.export_screenshot()
        for label in ("Layers", "Params", "FLOPs", "Baseline", "busy", "machine", "×3", "instrumentation",
                      "level", "order"):
            assert label in screen, label
        assert "other processes used" not in screen  # the sentences are behind `w`
        await pilot.press("w")
        await pilot.pause()
        assert type(app.screen).__name__ == "WarningsScreen"
        text = str(app.screen.query_one("#warnings-text").render())
        assert text.count("other processes used") == 3
        assert "instrumentation overhead" in text and "slower than level 0.8" in text
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "OverviewScreen"
