"""Issue #19, "the app as a daily tool": the data-safety items, each on a real project in the app."""

from __future__ import annotations

import json
import os

from sparsify_tui import paths
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.screens.home import HomeScreen
from sparsify_tui.tui.screens.overview import OverviewScreen
from tests.tui.conftest import make_demo_project, settle


def _lock_pid(project_dir) -> int | None:
    try:
        return json.loads((project_dir / "project.lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


async def test_reopening_the_demo_in_the_same_app_keeps_it_writable_and_locked(tui_home):
    demo = make_demo_project(paths.demo_project_dir())  # with its profiles: opening starts no job
    demo.close()
    app = SparsifyApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("d")
        await settle(pilot, app)
        assert isinstance(app.screen, OverviewScreen)
        first = app.project
        assert not first.readonly and _lock_pid(first.dir) == os.getpid()
        for _ in range(2):  # home and the demo again, twice
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, HomeScreen)
            await pilot.press("d")
            await settle(pilot, app)
            assert isinstance(app.screen, OverviewScreen)
            assert app.project is first and not app.project.readonly, app.project.notices
            assert _lock_pid(first.dir) == os.getpid()  # the lock never vanished
        # another process cannot take it while the app has it open
        from sparsify_tui.project import Project

        other = Project.open(first.dir)
        assert other.readonly and "this process" in other.notices[0]
        other.close()
        assert _lock_pid(first.dir) == os.getpid()  # a read-only viewer's close leaves the lock alone


async def test_a_project_is_released_once_when_the_app_opens_another_and_reopens_writable(tmp_path, tui_home):
    a = make_demo_project(tmp_path / "a")
    a.close()
    b = make_demo_project(tmp_path / "b")
    b.close()
    app = SparsifyApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        app.open_path(str(a.dir))
        await settle(pilot, app)
        pa = app.project
        assert not pa.readonly and _lock_pid(a.dir) == os.getpid()
        app.open_path(str(b.dir))
        await settle(pilot, app)
        assert not app.project.readonly and not (a.dir / "project.lock").exists()  # a released
        assert _lock_pid(b.dir) == os.getpid()
        app.open_path(str(a.dir))
        await settle(pilot, app)
        assert app.project.dir == a.dir and not app.project.readonly, app.project.notices
        assert _lock_pid(a.dir) == os.getpid() and not (b.dir / "project.lock").exists()
