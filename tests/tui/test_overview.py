"""Project overview on real projects: totals, profiles and their states, real background jobs."""

from __future__ import annotations

import os
import time

import pytest
from textual.widgets import DataTable, Static

from sparsify_tui.actions import profiles as profiles_action
from sparsify_tui.tui import jobs as jobs_mod
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.data import fmt_count
from sparsify_tui.tui.screens.layers import LayersScreen
from sparsify_tui.tui.screens.overview import OverviewScreen
from tests.tui.conftest import FIXED_MACHINE, settle, wait_for, widget_text


def _engine_children() -> list[tuple[int, int]]:
    """(pid, nice) of this process's engine worker children."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and b"sparsify_tui.jobs.worker" in cmd:
            out.append((int(d), int(fields[16])))
    return out


def _states(table: DataTable) -> dict[str, str]:
    return {table.get_row_at(i)[1].plain: table.get_row_at(i)[5].plain for i in range(table.row_count)}


async def test_overview_totals_and_profiles(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, OverviewScreen)
        graph = app.model_data.graph
        totals = widget_text(screen.query_one("#totals", Static))
        assert fmt_count(graph.params) in totals and fmt_count(graph.flops) in totals
        perf = app.model_data.perf
        assert f"{perf['baseline_ms']:.2f}" in totals  # Baseline MS
        assert f"{perf['items_per_second']:,.1f}" in totals  # Items per Second
        assert "flops-estimate" in totals and "approximated" in totals
        assert "avx512_vnni" in totals
        table = screen.query_one("#profiles", DataTable)
        assert _states(table) == {"approximated b1": "done", "approx": "done"}
        # enter on a profile selects it; l goes to the layers, o comes back
        await pilot.press("enter")
        await settle(pilot, app)
        assert app.perf_entry_id == demo_project.profiles_of("perf")[0].id
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, LayersScreen)
        await pilot.press("o")
        await pilot.pause()
        assert app.screen is screen


async def test_profile_dialog_validates_and_starts_a_real_loss_profile(demo_project):
    from textual.widgets import Input, Select

    from sparsify_tui.tui.screens.profile_dialog import ProfileDialog

    app = SparsifyApp(demo_project)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        # p: perf dialog; a bad batch size is refused in the dialog, nothing starts
        await pilot.press("p")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ProfileDialog) and dialog.kind == "perf"
        dialog.query_one("#batch-size", Input).value = "zero"
        dialog.query_one("#batch-size", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert "batch size" in widget_text(dialog.query_one("#dialog-error", Static))
        assert app.jobs == []
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen) and app.jobs == []
        # a: loss dialog; one-shot with 1 sample runs the real measurement in the child process
        await pilot.press("a")
        await pilot.pause()
        dialog = app.screen
        dialog.query_one("#method", Select).value = "one-shot"
        dialog.query_one("#samples", Input).value = "1"
        dialog.query_one("#samples", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        # the settings the command line would store for `profile loss --method one-shot --samples 1`
        cli = profiles_action.loss_settings(method="one-shot", samples=1, input_shapes=app.project.input_shapes)
        assert [j.settings for j in app.jobs] == [cli]
        job = app.jobs[0]
        await wait_for(pilot, lambda: not job.active, timeout=240)
        await settle(pilot, app)
        assert job.state == jobs_mod.DONE, job.error
        assert app.model_data.loss["method"] == "one-shot"
        # the layer summaries now show measured loss sensitivities of the prunable layers
        row = next(r for r in app.model_data.rows if r.prunable)
        assert row.loss_sensitivity(0.9) is not None and row.loss_sensitivity(0.0) == 0.0


@pytest.mark.slow  # a real INT8 profile: every layer quantized alone, then the whole model (~10-20 s)
async def test_real_int8_profile_adds_a_column(demo_project):
    from textual.widgets import Input

    app = SparsifyApp(demo_project)
    async with app.run_test(size=(150, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("i")
        await pilot.pause()
        app.screen.query_one("#samples", Input).value = "1"
        await pilot.press("enter")
        await pilot.pause()
        job = app.jobs[0]
        assert job.kind == "quant"
        assert job.settings == profiles_action.quant_settings(samples=1, input_shapes=app.project.input_shapes)
        await wait_for(pilot, lambda: not job.active, timeout=240)
        await settle(pilot, app)
        assert job.state == jobs_mod.DONE, job.error
        totals_text = widget_text(app.screen.query_one("#totals", Static), width=100)
        assert "INT8" in totals_text
        await pilot.press("l")
        await pilot.pause()
        table = app.screen.query_one("#layer-table", DataTable)
        assert "quant" in [c.value for c in table.columns]
        doc = app.model_data.quant
        measured = {e["id"]: e["sensitivity"] for e in doc["layers"] if e.get("sensitivity") is not None}
        assert measured
        i = [c.value for c in table.columns].index("quant")
        cells = {key.value: table.get_row(key)[i].value for key in table.rows}
        for layer_id, value in measured.items():
            assert cells[layer_id] == pytest.approx(value)


async def test_stale_profile_is_shown(demo_project):
    # the model changes on disk after the profiles were measured, then the project is opened again
    import onnx

    from sparsify_tui.project import Project

    model = onnx.load(str(demo_project.model_path))
    model.doc_string = "edited after profiling"
    onnx.save(model, str(demo_project.model_path))
    demo_project.close()
    project = Project.open(demo_project.dir)
    app = SparsifyApp(project)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        table = app.screen.query_one("#profiles", DataTable)
        states = _states(table)
        assert all(s.startswith("stale") for s in states.values()), states
        notices = widget_text(app.screen.query_one("#notices", Static))
        assert "stale" in notices
    project.close()


async def test_failed_profile_shows_reason_and_app_survives(demo_project):
    app = SparsifyApp(demo_project)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        job = app.start_profile("perf", {"engine": "no-such-engine"})
        await wait_for(pilot, lambda: not job.active)
        await pilot.pause()
        assert job.state == jobs_mod.FAILED
        assert "no-such-engine" in job.error
        states = _states(app.screen.query_one("#profiles", DataTable))
        assert any(s.startswith("failed:") and "engine" in s for s in states.values()), states
        # still alive and answering keys
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, LayersScreen)


@pytest.mark.corpus
async def test_real_perf_profile_runs_in_background_and_is_saved(mnv3_project):
    """A real ONNX Runtime profile (few iterations) runs in a worker; keys work meanwhile."""
    app = SparsifyApp(mnv3_project)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        before = len(mnv3_project.profiles_of("perf"))
        job = app.start_profile("perf", {"engine": "onnxruntime", "iterations": 3, "warmup": 1, "repeats": 1})
        await wait_for(pilot, lambda: job.state == jobs_mod.RUNNING, timeout=30)
        # the engine runs in a child process, at a lower priority than the app
        workers = []
        await wait_for(pilot, lambda: bool(workers.extend(_engine_children()) or workers) or not job.active,
                       timeout=30)
        if workers:
            print("engine workers (pid, nice):", workers)
            assert all(nice >= os.getpriority(os.PRIO_PROCESS, 0) + jobs_mod.JOB_NICE for _, nice in workers)
        # the interface answers while the child process measures
        t0 = time.perf_counter()
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, LayersScreen)
        status = widget_text(app.screen.query_one("#layers-status", Static), width=200)
        assert not job.active or "perf profile" in status  # progress shown on the layer summaries too
        await pilot.press("p", "v", "o")
        assert time.perf_counter() - t0 < 30  # sanity only: no time is asserted precisely
        await wait_for(pilot, lambda: not job.active, timeout=120)
        await settle(pilot, app)
        assert job.state == jobs_mod.DONE, job.error
        assert len(mnv3_project.profiles_of("perf")) == before + 1
        # the new profile is the one shown, measured by onnxruntime
        assert app.model_data.perf["engine"] == "onnxruntime"
        assert app.perf_entry_id == job.entry_id
        states = _states(app.screen.query_one("#profiles", DataTable))
        # "done", or "done ⚠ N warnings" when the machine was busy while it measured
        assert sum(str(s).startswith("done") for s in states.values()) == 3, states


@pytest.mark.corpus
async def test_cancel_key_stops_a_running_profile(mnv3_project):
    app = SparsifyApp(mnv3_project)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        job = app.start_profile("perf", {"engine": "onnxruntime", "iterations": 400, "warmup": 5, "repeats": 3})
        await wait_for(pilot, lambda: job.state == jobs_mod.RUNNING, timeout=30)
        await pilot.press("x")
        await wait_for(pilot, lambda: not job.active, timeout=60)
        assert job.state in (jobs_mod.CANCELLED, jobs_mod.DONE)
        if job.state == jobs_mod.DONE:  # cancelled after a level finished: the finished part is kept
            assert "incomplete" in mnv3_project.get_profile(job.entry_id).name
