"""The TUI under bad input and a tiny terminal (Textual Pilot on the demo project).

Typed nonsense in numeric fields gets an inline message and nothing is saved
(project.toml on disk byte for byte unchanged); shrinking the terminal to
40x10 and back never crashes a screen.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

pytest.importorskip("textual")

from textual.widgets import Input, Static  # noqa: E402

from .helpers import sha  # noqa: E402

MACHINE = {
    "cpu_model": "Example CPU", "arch": "x86_64", "physical_cores": 2, "logical_cores": 2, "usable_cores": 2,
    "isa": ["avx2"], "engines": {"onnxruntime": "1.18.1", "deepsparse": None}, "fingerprint": "000000000000",
}


@pytest.fixture
def tui_project(tmp_path, demo_model, monkeypatch):
    """The demo model as a project with approximated perf and loss profiles (real core calls)."""
    from sparsify_tui.analysis import analyze
    from sparsify_tui.profiles.loss import approx_loss_profile
    from sparsify_tui.profiles.perf import approx_perf_profile
    from sparsify_tui.project import Project

    monkeypatch.setenv("SPARSIFY_TUI_HOME", str(tmp_path / "home"))
    project = Project.create(demo_model, dir=tmp_path / "demo", name="demo")
    graph = analyze(project.model_path)
    doc = approx_perf_profile(graph, cores=2)
    project.add_profile("perf", "approximated", {"approximate": True}, doc["engine"], "", MACHINE, doc)
    project.add_profile("loss", "approx", {"method": "approx"}, "approx", "", MACHINE, approx_loss_profile(graph))
    yield project
    project.close()


async def settle(pilot, app) -> None:
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def wait_for(pilot, predicate, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await pilot.pause(0.05)


def text_of(widget) -> str:
    content = widget.content if hasattr(widget, "content") else widget.renderable
    return getattr(content, "plain", str(content))


async def type_into(pilot, inp: Input, text: str) -> None:
    inp.value = ""
    inp.focus()
    await pilot.pause()
    await pilot.press(*[{" ": "space", "-": "minus", ".": "full_stop", ",": "comma"}.get(c, c) for c in text])


async def open_optimizer(pilot, app):
    from sparsify_tui.tui.screens.optimizer import OptimizerScreen

    await settle(pilot, app)
    screen = OptimizerScreen()
    app.push_screen(screen)
    await wait_for(pilot, lambda: screen.ready)
    await wait_for(pilot, lambda: not screen.dirty, timeout=10)
    await pilot.pause(0.6)
    return screen


@pytest.mark.parametrize("value,words", [("abc", "must be a number"), ("1.5", "at most"),
                                         ("-0.2", "at least")])
async def test_optimizer_rejects_bad_sparsity_and_saves_nothing(tui_project, value, words):
    from sparsify_tui.tui.app import SparsifyApp

    app = SparsifyApp(tui_project, machine=MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        toml = tui_project.dir / "project.toml"
        before = sha(toml)
        target = screen.opt.pruning.target_sparsity
        await pilot.press("e")  # the first setting is the target sparsity
        inp = screen.query_one("#opt-edit", Input)
        await type_into(pilot, inp, value)
        await pilot.press("enter")
        await pilot.pause()
        err = screen.query_one("#opt-error", Static)
        assert err.display and words in text_of(err), text_of(err)
        assert screen.opt.pruning.target_sparsity == target
        await pilot.press("escape")
        await pilot.pause(0.8)  # longer than the save debounce
        assert not screen.dirty and sha(toml) == before


async def test_optimizer_rejects_negative_and_letter_epochs(tui_project):
    from sparsify_tui.tui.app import SparsifyApp

    app = SparsifyApp(tui_project, machine=MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_optimizer(pilot, app)
        toml = tui_project.dir / "project.toml"
        before = sha(toml)
        epochs = screen.opt.epochs
        await pilot.press("down", "down")  # third setting: epochs
        for value, words in (("-3", "at least 1"), ("ten", "")):
            await pilot.press("e")
            await type_into(pilot, screen.query_one("#opt-edit", Input), value)
            await pilot.press("enter")
            await pilot.pause()
            err = screen.query_one("#opt-error", Static)
            assert err.display and "Epochs" in text_of(err) and words in text_of(err), text_of(err)
            assert screen.opt.epochs == epochs
            await pilot.press("escape")
            await pilot.pause(0.8)
        assert sha(toml) == before


async def test_profile_dialog_rejects_letters_and_starts_nothing(tui_project):
    from sparsify_tui.tui.app import SparsifyApp
    from sparsify_tui.tui.screens.profile_dialog import ProfileDialog

    app = SparsifyApp(tui_project, machine=MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        before = sha(tui_project.dir / "project.toml")
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, ProfileDialog))
        dialog = app.screen
        for field, value, words in (("#batch-size", "abc", "batch size must be a whole number"),
                                    ("#iterations", "-5", "iterations must be at least 1"),
                                    ("#levels", "0.5,1.5", "levels must be below 1")):
            for f, v in (("#batch-size", "1"), ("#iterations", "10"), ("#levels", "0.5")):
                dialog.query_one(f, Input).value = v
            await type_into(pilot, dialog.query_one(field, Input), value)
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen is dialog  # still open: nothing started
            assert words in text_of(dialog.query_one("#dialog-error", Static))
        assert not app.jobs
        await pilot.press("escape")
        await pilot.pause()
        assert sha(tui_project.dir / "project.toml") == before


@pytest.mark.parametrize("screen_name", ["overview", "layers", "optimizer", "help"])
async def test_resize_to_40x10_and_back(tui_project, screen_name):
    from sparsify_tui.tui.app import SparsifyApp

    app = SparsifyApp(tui_project, machine=MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        if screen_name == "layers":
            await pilot.press("l")
        elif screen_name == "optimizer":
            await open_optimizer(pilot, app)
        elif screen_name == "help":
            await pilot.press("f1")
        await pilot.pause()
        shown = type(app.screen).__name__
        for size in ((40, 10), (20, 5), (40, 10), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            await pilot.pause()
            assert app.size == size and type(app.screen).__name__ == shown
        await pilot.press("down", "tab", "down")  # still takes keys
        await pilot.pause()
        assert app.is_running


def _engine_workers() -> list[int]:
    """Engine worker processes started by this test process."""
    from pathlib import Path

    me = os.getpid()
    out = []
    for kid in Path(f"/proc/{me}/task").glob("*/children"):
        for pid in kid.read_text().split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"sparsify_tui.jobs.worker" in cmd:
                out.append(int(pid))
    return out


async def test_engine_killed_during_a_tui_profile_keeps_the_app_and_finished_levels(tui_project):
    import importlib.util

    if importlib.util.find_spec("deepsparse") is None:
        pytest.skip("DeepSparse is not installed")
    from sparsify_tui.tui.app import SparsifyApp

    app = SparsifyApp(tui_project, machine=MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        job = app.start_profile("perf", {"engine": "deepsparse", "levels": [0.5, 0.9], "iterations": 3,
                                         "warmup": 1, "repeats": 1})
        assert job is not None
        # the progress label after the dense level was sent (the heartbeat before it says "dense model")
        await wait_for(pilot, lambda: "dense, repeat" in (job.label or "") or "level" in (job.label or "")
                       or not job.active, timeout=90)
        assert job.active, job.error
        workers = _engine_workers()
        assert workers, "no engine worker found"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        await wait_for(pilot, lambda: not job.active, timeout=60)
        await settle(pilot, app)
        messages = [str(n.message) for n in app._notifications]
        assert any("incomplete (finished levels kept)" in m or "failed" in m for m in messages), messages
        assert app.is_running
        tui_project.reload()
        perf = [e for e in tui_project.profiles_of("perf") if e.engine == "deepsparse"]
        assert len(perf) == 1, ("the finished dense level was not kept", messages, job.label, job.error, [(e.id, e.engine, e.name) for e in tui_project.profiles])
        doc = tui_project.load_profile(perf[0])
        assert doc["incomplete"] is True and doc["baseline_ms"] > 0
        await pilot.press("l")  # the app still works: open the layers screen
        await pilot.pause()
        assert type(app.screen).__name__ == "LayersScreen"


async def test_project_locked_by_another_writer_opens_read_only_in_the_tui(tui_project):
    from sparsify_tui.project import Project
    from sparsify_tui.tui.app import SparsifyApp

    ro = Project.open(tui_project.dir)  # tui_project (another writer) holds the lock
    assert ro.readonly and ro.notices
    before = sha(tui_project.dir / "project.toml")
    app = SparsifyApp(ro, machine=MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        assert app.start_profile("loss", {"method": "approx"}) is None
        await pilot.pause()
        messages = [str(n.message) for n in app._notifications]
        assert any("read-only" in m for m in messages), messages
        assert not app.jobs and app.is_running
    ro.close()
    assert sha(tui_project.dir / "project.toml") == before


def _odd_model(kind: str, d):
    from .helpers import T, helper, np, numpy_helper, save_model, tiny_conv, vi

    if kind == "no_prunable":
        return save_model(d / "act.onnx", [helper.make_node("Relu", ["x"], ["a"], name="r"),
                                           helper.make_node("Sigmoid", ["a"], ["y"], name="s")],
                          [vi("x", [1, 4])], [vi("y", [1, 4])])
    if kind == "integer_only":
        k = numpy_helper.from_array(np.arange(4, dtype=np.int64).reshape(1, 4), "k")
        return save_model(d / "int.onnx", [helper.make_node("Add", ["x", "k"], ["y"], name="add")],
                          [vi("x", [1, 4], T.INT64)], [vi("y", [1, 4], T.INT64)], [k])
    if kind == "unknown_domain":
        return save_model(d / "dom.onnx", [helper.make_node("FancyOp", ["x"], ["y"], domain="com.x", name="f")],
                          [vi("x", [1, 4])], [vi("y", [1, 4])], domains=["com.x"])
    return tiny_conv(d / "t.onnx")


@pytest.mark.parametrize("kind", ["no_prunable", "integer_only", "unknown_domain", "corrupt_profile"])
async def test_odd_projects_in_every_screen_at_80x24(tmp_path, monkeypatch, kind):
    from sparsify_tui.analysis import analyze
    from sparsify_tui.profiles.loss import approx_loss_profile
    from sparsify_tui.project import Project
    from sparsify_tui.tui.app import SparsifyApp
    from sparsify_tui.tui.screens.optimizer import OptimizerScreen

    monkeypatch.setenv("SPARSIFY_TUI_HOME", str(tmp_path / "home"))
    p = Project.create(_odd_model(kind, tmp_path), dir=tmp_path / "p")
    p.add_profile("loss", "approx", {"method": "approx"}, "approx", "", {}, approx_loss_profile(analyze(p.model_path)))
    if kind == "corrupt_profile":
        (tmp_path / "p" / "profiles" / "loss-1.json").write_text("{garbage")
    app = SparsifyApp(p, machine=MACHINE)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            assert type(app.screen).__name__ == "OverviewScreen"
            await pilot.press("l")
            await pilot.pause()
            assert type(app.screen).__name__ == "LayersScreen"
            await pilot.press("escape")
            await pilot.pause()
            screen = OptimizerScreen()
            app.push_screen(screen)
            await wait_for(pilot, lambda: screen.ready, timeout=30)
            await pilot.press("right_square_bracket", "down", "e")
            await pilot.pause()
            await pilot.press("escape", "escape")
            await pilot.resize_terminal(40, 10)
            await pilot.pause()
            await pilot.resize_terminal(80, 24)
            await pilot.pause(0.6)
            messages = [str(n.message) for n in app._notifications]
            if kind == "corrupt_profile":
                assert any("loss profile loss-1 cannot be used" in m for m in messages), messages
            assert app.is_running
    finally:
        p.close()
    if kind == "corrupt_profile":
        assert (tmp_path / "p" / "profiles" / "loss-1.json").read_text() == "{garbage"  # never overwritten
