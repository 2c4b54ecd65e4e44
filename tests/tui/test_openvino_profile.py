"""The app's perf dialog with OpenVINO: engine and precision at 80x24, a real profile, kernels shown."""

from __future__ import annotations

import pytest

from sparsify_tui.tui import jobs as jobs_mod
from sparsify_tui.tui.app import SparsifyApp
from tests.tui.conftest import settle, wait_for


async def test_perf_dialog_runs_openvino_at_the_chosen_precision(demo_project):
    from textual.widgets import Button, Input, Select

    from sparsify_tui.engines import openvino_engine as ove
    from sparsify_tui.tui.screens.layers import layer_attributes_text
    from sparsify_tui.tui.screens.profile_dialog import ProfileDialog

    if not ove.available():
        pytest.skip("openvino is not installed")
    app = SparsifyApp(demo_project)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("p")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ProfileDialog)
        engines = [v for _, v in dialog.query_one("#engine", Select)._options]
        assert "openvino" in engines
        precisions = [v for _, v in dialog.query_one("#precision", Select)._options]
        assert precisions[0] == "fp32" and ("bf16" in precisions) == bool(app.machine.get("bf16"))
        start = dialog.query_one("#start", Button)
        assert start.region.bottom <= 24 and start.region.height > 0  # the whole dialog fits 80x24
        want = "bf16" if "bf16" in precisions else "fp32"
        dialog.query_one("#engine", Select).value = "openvino"
        dialog.query_one("#precision", Select).value = want
        dialog.query_one("#iterations", Input).value = "2"
        dialog.query_one("#levels", Input).value = "0.9"
        dialog.query_one("#iterations", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        job = app.jobs[0]
        assert job.settings["engine"] == "openvino" and job.settings["precision"] == want
        await wait_for(pilot, lambda: not job.active, timeout=240)
        await settle(pilot, app)
        assert job.state == jobs_mod.DONE, job.error
        perf = app.model_data.perf
        assert perf["engine"] == "openvino" and perf["precision"] == want
        assert perf["inference_precision"] == {"bf16": "bf16", "fp32": "f32"}[want]
        convs = [r for r in app.model_data.rows if r.op_type == "Conv"]
        assert convs and all(r.kernel.endswith(f"({perf['inference_precision']})") for r in convs)
        text = layer_attributes_text(convs[0], app.model_data, 0.9).plain
        assert f"kernel: {convs[0].kernel}" in text
