"""Fixtures for the TUI tests: real projects built from the demo model and corpus models.

Profiles are real but cheap: the approximated perf profile (from FLOPs) and
the approximated loss profile (weight magnitude) are computed by the core
functions; tests that need a measured profile run ONNX Runtime with very few
iterations. ``fixed_demo`` pins everything that would change between runs
(times of creation, machine description) so snapshots are deterministic.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

FIXED_MACHINE = {
    "cpu_model": "Example CPU @ 2.0GHz",
    "arch": "x86_64",
    "physical_cores": 2,
    "logical_cores": 2,
    "usable_cores": 2,
    "isa": ["avx2", "avx512", "avx512_vnni"],
    "engines": {"onnxruntime": "1.18.1", "deepsparse": "1.8.0"},
    "fingerprint": "000000000000",
}
FIXED_TIME = "2026-01-01T12:00:00Z"


@pytest.fixture(autouse=True)
def _steady_cursor(monkeypatch):
    """Text inputs show a steady cursor in tests: a blinking one makes a snapshot depend on the clock."""
    from textual.widgets import Input

    mounted = Input._on_mount

    def on_mount(self, event):  # noqa: ANN001
        mounted(self, event)
        self.cursor_blink = False

    monkeypatch.setattr(Input, "_on_mount", on_mount)


@pytest.fixture
def tui_home(tmp_path, monkeypatch) -> Path:
    """A private SPARSIFY_TUI_HOME (recent projects, demo, scratch projects)."""
    home = tmp_path / "home"
    monkeypatch.setenv("SPARSIFY_TUI_HOME", str(home))
    return home


def add_approx_profiles(project, *, fixed: bool = False, perf: bool = True, loss: bool = True):
    """Compute and store the approximated perf and loss profiles of ``project`` (real core calls)."""
    from sparsify_tui.analysis import analyze
    from sparsify_tui.profiles.loss import approx_loss_profile
    from sparsify_tui.profiles.perf import approx_perf_profile

    graph = analyze(project.model_path, dict(project.input_shapes or {}) or None)
    if perf:
        doc = approx_perf_profile(graph, cores=2)
        if fixed:
            doc["machine"] = dict(FIXED_MACHINE)
            doc["created"] = FIXED_TIME
            doc["model_path"] = "model.onnx"
        project.add_profile("perf", "approximated b1", {"approximate": True, "batch_size": 1},
                            doc["engine"], "", dict(FIXED_MACHINE if fixed else doc.get("machine") or {}), doc)
    if loss:
        doc = approx_loss_profile(graph)
        project.add_profile("loss", "approx", {"method": "approx"}, "approx", "",
                            dict(FIXED_MACHINE) if fixed else {}, doc)
    if fixed:
        for entry in project.profiles:
            entry.created = FIXED_TIME
        project.save()
    return graph


def make_demo_project(directory: Path, *, fixed: bool = True, profiles: bool = True):
    from sparsify_tui.analysis.demo import build_demo_model
    from sparsify_tui.project import Project
    from sparsify_tui.tui.launch import DEMO_DESCRIPTION

    model = build_demo_model(directory.parent / "demo-src.onnx")
    project = Project.create(model, dir=directory, name="demo", description=DEMO_DESCRIPTION)
    if profiles:
        add_approx_profiles(project, fixed=fixed)
    return project


@pytest.fixture
def demo_project(tmp_path, tui_home):
    """The demo model as a project with approximated perf and loss profiles and fixed metadata."""
    project = make_demo_project(tmp_path / "demo")
    yield project
    project.close()


@pytest.fixture
def mnv3_project(tmp_path, tui_home, corpus):
    """The corpus MobileNetV3 (weights in Constant nodes) with approximated profiles."""
    from sparsify_tui.project import Project

    project = Project.create(corpus.path("mobilenetv3"), dir=tmp_path / "mnv3", name="mnv3",
                             input_shapes=corpus.input_shapes("mobilenetv3"))
    add_approx_profiles(project)
    yield project
    project.close()


async def settle(pilot, app) -> None:
    """Wait until the app's workers (project loading, jobs) are done and the screen is drawn."""
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()
    await asyncio.sleep(0)
    await pilot.pause()


async def wait_for(pilot, predicate, timeout: float = 60.0) -> None:
    """Let the app run until ``predicate()`` holds (fails after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)


def widget_text(widget, width: int | None = None) -> str:
    """The plain text a Static shows (Rich tables and Text included)."""
    import io

    from rich.console import Console
    from rich.text import Text

    content = widget.content
    if isinstance(content, str):
        content = Text.from_markup(content)
    console = Console(width=width or max(widget.size.width, 40), file=io.StringIO(), record=True,
                      color_system=None, legacy_windows=False)
    console.print(content)
    return console.export_text()
