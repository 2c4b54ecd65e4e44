"""Issue #19, the screens: what a keyboard user met at 100x30 and 80x24, on the real demo project."""

from __future__ import annotations

from textual.widgets import Input, OptionList, Static

from sparsify_tui.tui import jobs as jobs_mod
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.screens.home import HomeScreen
from sparsify_tui.tui.screens.layers import LayersScreen
from tests.tui.conftest import FIXED_MACHINE, make_demo_project, settle, wait_for, widget_text


async def test_perf_dialog_cores_field_is_usable_and_enter_starts_from_the_engine_list(demo_project):
    from sparsify_tui.tui.screens.profile_dialog import ProfileDialog

    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("p")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ProfileDialog)
        assert dialog.query_one("#cores", Input).size.width >= 4  # was squeezed to 0 by the note
        assert app.focused.id == "engine"
        dialog.query_one("#iterations", Input).value = "1"
        dialog.query_one("#levels", Input).value = "0"
        await pilot.press("enter")  # on the Engine list: starts, does not open the list
        await pilot.pause()
        assert not isinstance(app.screen, ProfileDialog)
        assert [j.kind for j in app.jobs] == ["perf"]
        job = app.jobs[0]
        # q while it runs asks; n stays
        if job.active:
            await pilot.press("q")
            await pilot.pause()
            from sparsify_tui.tui.screens.confirm import ConfirmQuit

            if job.active:
                assert isinstance(app.screen, ConfirmQuit)
                assert "Quit while 1 profile(s) run?" in widget_text(app.screen.query_one("#quit-text", Static), 70)
                await pilot.press("n")
                await pilot.pause()
                assert not isinstance(app.screen, ConfirmQuit) and app.is_running
        await wait_for(pilot, lambda: not job.active, timeout=240)
        await settle(pilot, app)
        assert job.state == jobs_mod.DONE, job.error
        stored = next(e for e in demo_project.profiles if e.id == job.entry_id)
        assert job.title == stored.name  # the row and the notice say the stored name


async def test_q_asks_while_a_profile_runs(demo_project):
    from sparsify_tui.tui.screens.confirm import ConfirmQuit

    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        job = app.start_profile("perf", {"engine": "onnxruntime", "iterations": 100000, "levels": [0.0, 0.5]})
        await wait_for(pilot, lambda: job.state == jobs_mod.RUNNING, timeout=60)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmQuit) and app.is_running
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmQuit) and job.active
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert job.cancel.is_set()


async def test_layer_summaries_say_a_bad_regex_and_count_like_the_overview(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(200, 30)) as pilot:
        await settle(pilot, app)
        await pilot.press("l")
        await settle(pilot, app)
        screen = app.screen
        assert isinstance(screen, LayersScreen)
        status = widget_text(screen.query_one("#layers-status", Static), 400)
        n = len(app.model_data.graph.layers)
        assert f"{n}/{n} layers (all)" in status, status
        await pilot.press("slash")
        await pilot.press("c", "o", "n", "v", "[", "1")
        await pilot.pause(0.5)
        await settle(pilot, app)
        status = widget_text(screen.query_one("#layers-status", Static), 400)
        assert "not a regular expression" in status and "matching the text as typed" in status, status


async def test_constant_rows_are_hidden_until_k(tmp_path, tui_home, corpus):
    """The corpus MobileNetV3 keeps its weights in Constant nodes: hidden by default, k shows them."""
    from sparsify_tui.project import Project
    from tests.tui.conftest import add_approx_profiles

    project = Project.create(corpus.path("mobilenetv3"), dir=tmp_path / "mnv3", name="mnv3",
                             input_shapes=corpus.input_shapes("mobilenetv3"))
    add_approx_profiles(project)
    app = SparsifyApp(project, machine=FIXED_MACHINE)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot, app)
        await pilot.press("l")
        await settle(pilot, app)
        screen = app.screen
        constants = [r for r in app.model_data.rows if r.op_type in ("Constant", "ConstantOfShape")]
        assert len(constants) > 50
        assert not any(r.op_type == "Constant" for r in screen.visible_rows)
        assert screen.visible_rows[0].op_type != "Constant"
        status = widget_text(screen.query_one("#layers-status", Static), 400)
        assert f"{len([r for r in app.model_data.rows if r.op_type in ('Constant', 'ConstantOfShape') or getattr(r.layer, 'constant', False)])} constants hidden (k shows)" in status, status
        await pilot.press("k")
        await pilot.pause()
        assert sum(r.op_type == "Constant" for r in screen.visible_rows) == sum(
            r.op_type == "Constant" for r in app.model_data.rows)
    project.close()


async def test_home_escape_leaves_the_path_box(tmp_path, tui_home):
    p = make_demo_project(tmp_path / "demo")
    p.close()
    app = SparsifyApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("slash")
        box = app.screen.query_one("#open-path", Input)
        box.value = str(tmp_path / "nothing-here")
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.focused, Input)
        assert isinstance(app.screen, HomeScreen)
        await pilot.press("r")  # a key works again instead of being typed into the path
        await pilot.pause()
        assert box.value == str(tmp_path / "nothing-here")
        assert isinstance(app.focused, OptionList)


async def test_quick_look_shows_in_recents_by_its_model_name(tmp_path, tui_home):
    from sparsify_tui.analysis.demo import build_demo_model
    from sparsify_tui.project import recent_projects

    model = build_demo_model(tmp_path / "my-net.onnx")
    app = SparsifyApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        app.open_path(str(model))
        await settle(pilot, app)
        for j in app.jobs:
            j.cancel.set()
        await settle(pilot, app)
    assert recent_projects()[0]["name"] == "my-net"


async def test_read_only_window_says_so_and_disables_what_writes(demo_project):
    from sparsify_tui.project import Project

    other = Project.open(demo_project.dir)  # demo_project holds the lock: this one is read-only
    assert other.readonly
    app = SparsifyApp(other, machine=FIXED_MACHINE)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        assert "(read-only)" in app.screen.sub_title
        assert app.screen.check_action("start_perf", ()) is None
        await pilot.press("p")
        await pilot.pause()
        assert app.jobs == []
        await pilot.press("f2")
        await wait_for(pilot, lambda: getattr(app.screen, "ready", False))
        opt = app.screen
        assert "read-only project" in widget_text(opt.query_one("#opt-title", Static), 100)
        before = opt.opt.pruning.target_sparsity
        await pilot.press("plus")
        await pilot.pause()
        assert opt.opt.pruning.target_sparsity == before
        await pilot.press("f4")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ExportScreen")
        await settle(pilot, app)
        export = app.screen
        assert export.query_one("#export-path", Input).value == ""
        assert export.check_action("validate", ()) is None
        export.query_one("#export-path", Input).value = str(demo_project.dir / "recipe.yaml")
        assert export.action_save() == []
        assert not (demo_project.dir / "recipe.yaml").exists()
    other.close()


async def test_footer_keeps_help_and_whole_keys_at_80_columns(demo_project):
    from textual.widgets._footer import FooterKey

    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("l")
        await settle(pilot, app)
        keys = list(app.screen.query(FooterKey))
        assert any(k.action in ("help", "app.help") for k in keys)
        right = max(k.region.right for k in keys)
        assert right <= 80
        for k in keys:
            assert k.region.width >= len(k.key_display) + len(k.description)  # never cut
