"""Optimizer editor on the demo project (real allocation and estimates on approximated profiles)."""

from __future__ import annotations

import gc

from textual.widgets import DataTable, Input, Static

from sparsify_tui.optim.optimization import Optimization
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.data import fmt_ms
from sparsify_tui.tui.screens.optimizer import OptimizerScreen
from tests.tui.conftest import FIXED_MACHINE, settle, wait_for, widget_text


async def open_optimizer(pilot, app) -> OptimizerScreen:
    await settle(pilot, app)
    screen = OptimizerScreen()
    app.push_screen(screen)
    await wait_for(pilot, lambda: screen.ready)
    await pilot.pause()
    return screen


def stored(project, name="default") -> Optimization:
    return Optimization.from_dict(project.get_optimization(name))


async def test_target_sparsity_by_keys_changes_estimate_and_saves(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        # a fresh project gets the default optimization, allocated and saved
        assert [o["name"] for o in demo_project.optimizations] == ["default"]
        assert stored(demo_project).pruning.target_sparsity == 0.85
        before = screen.est.estimated_speedup
        text0 = widget_text(screen.query_one("#opt-estimates", Static), 200)
        assert f"{before:.2f}x" in text0 and "Recovery Confidence" in text0 and "approximated" in text0
        # target sparsity is the first setting: ] = +5 steps of 0.01
        assert screen.focused.id == "opt-settings"
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert screen.opt.pruning.target_sparsity == 0.9
        after = screen.est.estimated_speedup
        assert after > before
        text1 = widget_text(screen.query_one("#opt-estimates", Static), 200)
        assert f"{after:.2f}x" in text1 and f"{before:.2f}x" not in text1
        # saved after the debounce
        await wait_for(pilot, lambda: not screen.dirty, timeout=5)
        assert stored(demo_project).pruning.target_sparsity == 0.9
        # the layer table shows the allocated sparsities
        lt = screen.query_one("#opt-layers", DataTable)
        assert lt.row_count == len(screen.est.layers) > 0
        shown = {str(k.value): lt.get_row(k)[1].plain for k in lt.rows}
        for le in screen.est.layers:
            assert shown[le.id].startswith(f"{le.sparsity * 100:.1f}%")
        # undo
        await pilot.press("u")
        await pilot.pause()
        assert screen.opt.pruning.target_sparsity == 0.85
        assert screen.est.estimated_speedup == before
        await wait_for(pilot, lambda: not screen.dirty, timeout=5)
        assert stored(demo_project).pruning.target_sparsity == 0.85


async def test_invalid_typed_values_show_error_and_save_nothing(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        saved = demo_project.get_optimization("default")
        for bad, words in (("abc", "must be a number"), ("1.5", "at most 0.99")):
            await pilot.press("e")
            inp = screen.query_one("#opt-edit", Input)
            assert screen.focused is inp
            inp.value = bad
            await pilot.press("enter")
            await pilot.pause()
            err = widget_text(screen.query_one("#opt-error", Static), 200)
            assert words in err, err
            assert screen.opt.pruning.target_sparsity == 0.85
            await pilot.press("escape")
            await pilot.pause()
        # negative epochs (third setting)
        await pilot.press("down", "down", "e")
        inp = screen.query_one("#opt-edit", Input)
        inp.value = "-3"
        await pilot.press("enter")
        await pilot.pause()
        assert "Epochs must be at least 1" in widget_text(screen.query_one("#opt-error", Static), 200)
        await pilot.press("escape")
        await pilot.pause(0.8)
        assert not screen.dirty
        assert demo_project.get_optimization("default") == saved
        # a valid typed epochs value reschedules
        await pilot.press("e")
        inp.value = "50"
        await pilot.press("enter")
        await pilot.pause()
        assert screen.opt.epochs == 50 and screen.opt.pruning.end_epoch <= 50
        assert not screen.query_one("#opt-error", Static).display


async def test_layer_override_typed_and_reset(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        lt = screen.query_one("#opt-layers", DataTable)
        lt.focus()
        await pilot.press("down")
        lid = screen.current_layer()
        await pilot.press("e")
        screen.query_one("#opt-edit", Input).value = "50%"
        await pilot.press("enter")
        await pilot.pause()
        assert screen.opt.layers[lid].sparsity == 0.5 and screen.opt.layers[lid].overridden
        row = lt.get_row(lid)
        assert row[1].plain == "50.0% *"
        await wait_for(pilot, lambda: not screen.dirty, timeout=5)
        assert stored(demo_project).pruning.overrides == {lid: 0.5}
        await pilot.press("r")
        await pilot.pause()
        assert lid not in screen.opt.pruning.overrides
        assert not lt.get_row(lid)[1].plain.endswith("*")
        # exclude, with the reason in the row
        await pilot.press("x")
        await pilot.pause()
        assert screen.opt.layers[lid].sparsity == 0
        assert "excluded by user" in lt.get_row(lid)[6].plain


async def test_copy_version_and_switch(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        await pilot.press("c")
        await pilot.pause()
        assert [o["name"] for o in demo_project.optimizations] == ["default", "default-v2"]
        assert screen.opt.name == "default-v2"
        await pilot.press("minus")  # only the copy changes
        await pilot.pause()
        await wait_for(pilot, lambda: not screen.dirty, timeout=5)
        assert stored(demo_project, "default-v2").pruning.target_sparsity == 0.84
        assert stored(demo_project, "default").pruning.target_sparsity == 0.85
        await pilot.press("n")
        await pilot.pause()
        assert screen.opt.name == "default" and screen.opt.pruning.target_sparsity == 0.85
        assert "version 1 of 2" in widget_text(screen.query_one("#opt-title", Static), 200)


async def test_lr_modifiers_add_edit_remove(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        n0 = len(screen.opt.lr_modifiers)
        await pilot.press("2")
        await pilot.pause()
        assert screen.focused.id == "opt-lr"
        await pilot.press("a")
        inp = screen.query_one("#opt-edit", Input)
        inp.value = "exponential start=70 end=-1 lr=0.005 gamma=0.9"
        await pilot.press("enter")
        await pilot.pause()
        assert len(screen.opt.lr_modifiers) == n0 + 1
        assert screen.opt.lr_modifiers[-1].kind == "exponential"
        lr = screen.query_one("#opt-lr", DataTable)
        assert lr.row_count == n0 + 1
        chart = screen.query_one("#opt-lr-chart")
        xs, ys = chart._args[0], chart._args[1]
        assert xs and min(ys) < 0.005
        # a bad edit is refused inline
        lr.move_cursor(row=n0)
        await pilot.press("e")
        inp.value = "step start=70 gamma=2"
        await pilot.press("enter")
        await pilot.pause()
        assert "gamma must be in (0, 1]" in widget_text(screen.query_one("#opt-error", Static), 200)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
        assert len(screen.opt.lr_modifiers) == n0
        # the training summary shows the ranges
        await pilot.press("3")
        await pilot.pause()
        rows = [r[0] for r in screen.query_one("#opt-summary").rows]
        assert rows[0] == "Epoch Range" and "Stabilization" in rows and "Fine-tuning" in rows
        assert any(r.startswith("Pruning (") for r in rows)


async def test_keys_open_optimizer_and_area_help(demo_project):
    from sparsify_tui.tui.screens.glossary import GlossaryScreen

    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, OptimizerScreen) and app.screen.ready)
        screen = app.screen
        screen.query_one("#opt-layers").focus()
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, GlossaryScreen)
        area = widget_text(app.screen.query_one("#glossary-area", Static), 100)
        assert "per-layer plan" in area and "Override" in area and "Speedup factor" in area
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, OptimizerScreen)


async def test_unsaved_changes_ask_before_quitting(demo_project):
    from sparsify_tui.project import Project
    from sparsify_tui.tui.screens.optimizer import ConfirmLeave

    ro = Project.open(demo_project.dir, readonly=True)
    app = SparsifyApp(ro, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert screen.opt.pruning.target_sparsity == 0.85  # read-only: the edit keys are disabled (#19)
        # an edit that could not be saved (made through the screen's own method, as a key would)
        from sparsify_tui.actions.optimizer_settings import with_setting

        screen.dirty = True
        screen._show_opt(with_setting(screen.opt, "target_sparsity", 0.9))
        screen._save_now()
        await pilot.pause(0.3)
        assert screen.dirty  # a read-only project cannot be saved
        title = widget_text(screen.query_one("#opt-title", Static), 200)
        assert "not saved" in title and "read-only" in title
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmLeave)
        await pilot.press("escape")  # stay
        await pilot.pause()
        assert app.screen is screen and screen.opt.pruning.target_sparsity == 0.9
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("d")  # leave without saving
        await pilot.pause()
        assert app.return_code == 0  # the app exited
    assert "optimizations" not in (demo_project.dir / "project.toml").read_text()  # nothing was written


async def test_new_profile_recomputes_estimates(demo_project):
    """A perf profile landing while the editor is open replaces the approximated one in the estimates."""
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        approx = demo_project.load_profile(demo_project.profiles_of("perf")[0])
        assert abs(screen.est.baseline_ms - approx["baseline_ms"]) < 1e-9
        job = app.start_profile("perf", {"engine": "onnxruntime", "iterations": 2, "warmup": 1, "repeats": 1,
                                         "levels": [0.0, 0.9]})
        await wait_for(pilot, lambda: not job.active, timeout=120)
        await wait_for(pilot, lambda: screen.ready and screen.ctx.profile_ids.get("perf") == job.entry_id,
                       timeout=60)
        await pilot.pause()
        ort = demo_project.load_profile(job.entry_id)
        assert ort["engine"] == "onnxruntime"
        assert screen.opt.perf_profile_id == job.entry_id
        # estimates now use the measured time: the model's time in the engine as deployed sets the scale
        scale = (ort.get("quality") or {}).get("deployed_ms") or ort["baseline_ms"]
        assert abs(screen.est.baseline_ms - scale) < 1e-9
        text = widget_text(screen.query_one("#opt-estimates", Static), 200)
        assert f"{screen.est.estimated_speedup:.2f}x" in text and f"/{fmt_ms(scale)} ms" in text
        await wait_for(pilot, lambda: not screen.dirty, timeout=5)
        assert stored(demo_project).perf_profile_id == job.entry_id


def chain_project(directory, n_convs: int):
    """A project on a chain of ``n_convs`` 1x1 Conv + Relu (more layers than the table shows)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sparsify_tui.project import Project
    from tests.tui.conftest import add_approx_profiles

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(n_convs):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((8, 8, 1, 1)) * (0.5 + (i % 7) / 7)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"conv{i}"], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        x = f"relu{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 4, 4])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 8, 4, 4])], inits)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(directory / "chain.onnx"))
    project = Project.create(directory / "chain.onnx", dir=directory / "proj", name="chain")
    add_approx_profiles(project)
    return project


def table_lines(table) -> list[str]:
    from textual.geometry import Region

    return ["".join(seg.text for seg in strip)
            for strip in table.render_lines(Region(0, 0, table.size.width, table.size.height))]


async def test_long_layer_table_rows_out_of_view_follow_each_edit(tmp_path, tui_home):
    """Rows out of view are updated right after the frame with the estimates: all rows right, also scrolled."""
    project = chain_project(tmp_path, 120)
    app = SparsifyApp(project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        lt = screen.query_one("#opt-layers", DataTable)
        assert lt.row_count == len(screen.est.layers) == 120 > lt.size.height
        assert gc.get_freeze_count() > 0  # the loaded heap is left out of full collections while editing

        def check_rows() -> None:
            shown = {str(k.value): lt.get_row(k) for k in lt.rows}
            for le in screen.est.layers:
                assert shown[le.id][1].plain.startswith(f"{le.sparsity * 100:.1f}%"), le.id
                assert shown[le.id][2].plain == f"{le.est_speedup:.2f}x", le.id

        for key in ("minus", "right_square_bracket", "plus"):
            before = {le.id: le.sparsity for le in screen.est.layers}
            await pilot.press(key)
            await pilot.pause()
            assert any(le.sparsity != before[le.id] for le in screen.est.layers[60:])  # rows out of view changed
            check_rows()
        # what the table draws at the bottom is the current plan too
        lt.focus()
        lt.move_cursor(row=lt.row_count - 1)
        await pilot.pause()
        assert lt.scroll_offset.y > 0 and lt.scroll_offset.x == 0
        lines = table_lines(lt)
        last = screen.est.layers[-1]
        assert any(last.name in line and f"{last.sparsity * 100:.1f}%" in line for line in lines), lines
        # an override typed near the bottom, then undo: the rows at the top (out of view now) follow
        top_before = {le.id: le.sparsity for le in screen.est.layers[:10]}
        await pilot.press("plus")
        await pilot.pause()
        assert screen.opt.pruning.overrides
        check_rows()
        await pilot.press("u")
        await pilot.pause()
        check_rows()
        lt.move_cursor(row=0)
        await pilot.pause()
        assert lt.scroll_offset.y == 0
        lines = table_lines(lt)
        for le in screen.est.layers[:10]:
            assert le.sparsity == top_before[le.id]
            assert any(le.name in line and f"{le.sparsity * 100:.1f}%" in line for line in lines), (le.name, lines)
        # an edit while the table is hidden (training summary tab), then back to the plan
        await pilot.press("3")
        await pilot.pause()
        before = {le.id: le.sparsity for le in screen.est.layers[:10]}
        await pilot.press("minus")
        await pilot.pause()
        assert any(le.sparsity != before[le.id] for le in screen.est.layers[:10])
        await pilot.press("1")
        await pilot.pause()
        lines = table_lines(lt)
        for le in screen.est.layers[:10]:
            assert any(le.name in line and f"{le.sparsity * 100:.1f}%" in line for line in lines), (le.name, lines)
        await pilot.press("escape")  # leaving the editor hands the frozen objects back to the collector
        await pilot.pause()
        assert not isinstance(app.screen, OptimizerScreen)
        assert gc.get_freeze_count() == 0
    project.close()


async def test_protect_edges_setting_reasons_and_no_measured_loss_note(demo_project):
    """The default plan leaves the demo model's stem dense with its reason in the row; the estimates panel says
    that no measured loss profile backs the plan; Protect edges off (] on the setting) plans the stem."""
    from sparsify_tui.optim.optimization import REASON_STEM
    from sparsify_tui.actions.optimizer_settings import SETTINGS

    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        stem = screen.graph.prunable_layers[0].id
        lt = screen.query_one("#opt-layers", DataTable)
        assert screen.opt.pruning.protect_edges is True
        assert screen.opt.layers[stem].sparsity == 0 and screen.opt.layers[stem].excluded_reason == REASON_STEM
        assert lt.get_row(stem)[6].plain.startswith("protected: stem")
        text = widget_text(screen.query_one("#opt-estimates", Static), 200)
        assert "(no measured loss profile)" in text, text
        st = screen.query_one("#opt-settings", DataTable)
        st.move_cursor(row=[s.key for s in SETTINGS].index("protect_edges"))
        await pilot.pause()
        assert "on" in st.get_row_at(st.cursor_row)[1].plain
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert screen.opt.pruning.protect_edges is False
        assert screen.opt.layers[stem].sparsity > 0 and not screen.opt.layers[stem].excluded_reason
        assert not lt.get_row(stem)[6].plain.startswith("protected")
        await wait_for(pilot, lambda: not screen.dirty, timeout=5)
        assert stored(demo_project).pruning.protect_edges is False
