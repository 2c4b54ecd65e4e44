"""Home screen (recent projects, open by path, demo) and the new-project flow on real models."""

from __future__ import annotations

import shutil

import pytest
from textual.widgets import Checkbox, DataTable, Input, OptionList, Select, Static

from sparsify_tui.tui import jobs as jobs_mod
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.screens.home import HomeScreen
from sparsify_tui.tui.screens.overview import OverviewScreen
from sparsify_tui.tui.screens.setup import SetupScreen
from sparsify_tui.tui.widgets.path_input import complete_path
from tests.tui.conftest import make_demo_project, settle, wait_for, widget_text


async def test_home_lists_recent_projects_and_opens_by_key(tmp_path, tui_home):
    a = make_demo_project(tmp_path / "a" / "demo-a")
    a.close()
    b = make_demo_project(tmp_path / "b" / "demo-b", profiles=False)
    b.close()
    app = SparsifyApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)
        recent = app.screen.query_one("#recent", OptionList)
        ids = [recent.get_option_at_index(i).id for i in range(recent.option_count)]
        assert ids[:2] == [str(b.dir), str(a.dir)]  # newest first
        await pilot.press("down", "enter")
        await settle(pilot, app)
        assert isinstance(app.screen, OverviewScreen)
        assert app.project.dir == a.dir
        assert app.model_data is not None and len(app.model_data.rows) == 27
        # escape goes home again; the project stays open for its jobs
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)
        # opening the project that is already open shows it again, still writable
        opened = app.project
        recent = app.screen.query_one("#recent", OptionList)
        recent.highlighted = [recent.get_option_at_index(i).id for i in range(recent.option_count)].index(str(a.dir))
        recent.focus()
        await pilot.press("enter")
        await settle(pilot, app)
        assert isinstance(app.screen, OverviewScreen)
        assert app.project is opened and not opened.readonly


async def test_home_open_typed_path_and_errors(tmp_path, tui_home):
    p = make_demo_project(tmp_path / "proj")
    p.close()
    app = SparsifyApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        # a directory that is not a project: a notification, still on the home screen
        app.screen.query_one("#open-path", Input).value = str(tmp_path)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)
        assert any("not a sparsify-tui project" in n.message for n in app._notifications)
        inp = app.screen.query_one("#open-path", Input)
        inp.value = str(p.dir)
        await pilot.press("enter")
        await settle(pilot, app)
        assert isinstance(app.screen, OverviewScreen) and app.project.name == "demo"


@pytest.mark.corpus
async def test_home_quick_look_at_a_model(tmp_path, tui_home, corpus):
    """Typing an ONNX file opens a scratch project in the cache with its perf profile started."""
    src = tmp_path / "mnv3.onnx"
    shutil.copy(corpus.path("mobilenetv3"), src)
    app = SparsifyApp()
    async with app.run_test(size=(120, 40)) as pilot:
        app.screen.query_one("#open-path", Input).value = str(src)
        app.screen.query_one("#open-path", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert app.project is not None
        assert app.project.dir.parent == tui_home / "cache" / "scratch"
        assert [j.kind for j in app.jobs] == ["perf"]
        app.action_cancel_jobs()  # the measurement itself is tested elsewhere
        await wait_for(pilot, lambda: not app.jobs[0].active, timeout=60)


def test_path_completion(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "resnet.onnx").write_bytes(b"x")
    (tmp_path / "models" / "readme.txt").write_text("x")
    (tmp_path / "mydata").mkdir()
    assert complete_path(str(tmp_path / "mod")) == str(tmp_path / "models") + "/"
    assert complete_path(str(tmp_path / "models" / "re"), onnx_only=True) == str(tmp_path / "models" / "resnet.onnx")
    assert complete_path(str(tmp_path / "models" / "rea")) == str(tmp_path / "models" / "readme.txt")
    assert complete_path(str(tmp_path / "models" / "rea"), onnx_only=True) is None
    assert complete_path(str(tmp_path / "nothing")) is None


async def _new_project_screen(app, pilot) -> SetupScreen:
    await pilot.press("n")
    await pilot.pause()
    assert isinstance(app.screen, SetupScreen)
    return app.screen


@pytest.mark.corpus
async def test_setup_validates_model_and_prefills_dynamic_shapes(tmp_path, tui_home, corpus):
    app = SparsifyApp()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _new_project_screen(app, pilot)
        status = screen.query_one("#model-status", Static)
        # a file that is not ONNX
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"this is not a model")
        screen.query_one("#model-path", Input).value = str(bad)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.model_error is not None, timeout=30)
        assert "bad.onnx" in widget_text(status)
        # a corpus model whose batch dimension is made dynamic ("N")
        import onnx

        model = onnx.load(str(corpus.path("mobilenetv3")))
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
        (tmp_path / "models").mkdir()
        dyn = tmp_path / "models" / "mnv3-dynamic.onnx"
        onnx.save(model, str(dyn))
        # tab completes the path
        path_input = screen.query_one("#model-path", Input)
        path_input.focus()
        path_input.value = str(tmp_path / "models" / "mnv3")
        path_input.cursor_position = len(path_input.value)
        await wait_for(pilot, lambda: bool(path_input._suggestion), timeout=10)
        await pilot.press("tab")
        assert path_input.value == str(dyn)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.graph is not None, timeout=60)
        assert "ok" in widget_text(status)
        assert screen.query_one("#name", Input).value == "mnv3-dynamic"
        # the dynamic input's shape field is prefilled with the analysis' concrete numbers
        from sparsify_tui.analysis import analyze

        await pilot.pause()
        shape = screen.query_one("#shape-0", Input)
        assert screen._shape_names == ["x"]
        assert [int(x) for x in shape.value.split(",")] == analyze(dyn).input_shapes()["x"]
        # a malformed shape is refused with a clear message, nothing is created
        shape.value = "1,3,abc"
        await pilot.press("f9")
        await pilot.pause()
        assert "x" in widget_text(screen.query_one("#setup-error", Static))
        assert "abc" in widget_text(screen.query_one("#setup-error", Static))
        assert app.project is None
        # engines offered are the installed ones
        engine = screen.query_one("#engine", Select)
        values = [v for _, v in engine._options]
        assert values[0] == "auto" and "onnxruntime" in values


@pytest.mark.corpus
async def test_setup_creates_project_and_starts_profiles(tmp_path, tui_home, corpus):
    app = SparsifyApp()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _new_project_screen(app, pilot)
        screen.query_one("#model-path", Input).value = str(corpus.path("mobilenetv3"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.graph is not None, timeout=60)
        screen.query_one("#name", Input).value = "my mnv3"
        screen.query_one("#description", Input).value = "created by a test"
        target = tmp_path / "created"
        screen.query_one("#directory", Input).value = str(target)
        screen.query_one("#engine", Select).value = "onnxruntime"
        screen.query_one("#cores", Input).value = "1"
        await pilot.pause()
        shape = ",".join(map(str, corpus.input_shapes("mobilenetv3")["x"]))
        screen.query_one("#shape-0", Input).value = shape  # the corpus model's input is dynamic
        assert screen.query_one("#start-profiles", Checkbox).value
        await pilot.press("f9")
        await wait_for(pilot, lambda: app.project is not None, timeout=60)
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)
        project = app.project
        assert project.dir == target and project.name == "my mnv3"
        assert project.description == "created by a test"
        assert project.input_shapes == corpus.input_shapes("mobilenetv3")
        kinds = {j.kind: j for j in app.jobs}
        assert set(kinds) == {"perf", "loss"}
        assert kinds["perf"].settings["engine"] == "onnxruntime" and kinds["perf"].settings["cores"] == 1
        await wait_for(pilot, lambda: not kinds["loss"].active, timeout=60)
        assert kinds["loss"].state == jobs_mod.DONE
        assert len(project.profiles_of("loss")) == 1
        app.action_cancel_jobs()
        await wait_for(pilot, lambda: not kinds["perf"].active, timeout=120)
        table = app.screen.query_one("#profiles", DataTable)
        assert table.row_count >= 2


async def test_setup_cancel_returns_home(tui_home):
    app = SparsifyApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await _new_project_screen(app, pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HomeScreen)
