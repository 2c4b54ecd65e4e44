"""Issue 16: a perf profile measured while a hog held its core is marked wherever its numbers appear."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from textual.widgets import DataTable, Static

from sparsify_tui.engines import interference as itf
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.data import QUALITY_MARK, quality_warnings
from sparsify_tui.tui.screens.layers import LayersScreen
from tests.tui.conftest import FIXED_MACHINE, settle, widget_text


def _busy_profile(model) -> dict:
    """A real ONNX Runtime perf profile on one core that a CPU-bound process shares."""
    from sparsify_tui.profiles.perf import run_perf_profile

    cpu = itf.measured_cpus()[-1]
    with itf.pinned([cpu]):  # the worker inherits the one CPU
        hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
        try:
            os.sched_setaffinity(hog.pid, {cpu})
            time.sleep(0.3)
            return run_perf_profile(model, engine="onnxruntime", cores=1, levels=[0, 0.5], iterations=100,
                                    warmup=5, repeats=3, remeasure=0)
        finally:
            hog.kill()
            hog.wait()


async def test_a_busy_profile_is_marked_in_the_overview_and_the_layers(demo_project):
    doc = _busy_profile(demo_project.model_path)
    warns = quality_warnings(doc)
    assert doc["quality"]["interference"] > 3 * itf.THRESHOLD and warns
    entry = demo_project.add_profile("perf", "busy", {"engine": "onnxruntime", "cores": 1}, doc["engine"],
                                     doc.get("engine_version") or "", doc["machine"], doc)
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(pilot, app)
        app.select_profile(entry.id)
        await settle(pilot, app)
        screen = app.screen
        totals = widget_text(screen.query_one("#totals", Static), width=150)
        assert f"Baseline MS {QUALITY_MARK}" in totals
        assert "busy machine" in totals  # one line per kind of warning; the sentences are behind `w`
        assert "other processes used" not in " ".join(totals.split())
        assert f"{100 * doc['quality']['interference']:.0f}%" in totals  # Interference row
        table = screen.query_one("#profiles", DataTable)
        states = {table.get_row_at(i)[1].plain: table.get_row_at(i)[5].plain for i in range(table.row_count)}
        assert states["busy"].startswith(f"done {QUALITY_MARK} {len(warns)} warning")
        await pilot.press("l")
        await settle(pilot, app)
        assert isinstance(app.screen, LayersScreen)
        status = widget_text(app.screen.query_one("#layers-status", Static), width=400)
        assert QUALITY_MARK in status and "other processes used" in status
