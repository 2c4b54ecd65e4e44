"""Opening the app from the command line: paths are checked before Textual starts."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from sparsify_tui.commands import app as app_cmd
from sparsify_tui.errors import ModelError, ProjectError, UsageError


def _cli(*args: str, home) -> subprocess.CompletedProcess:
    env = dict(os.environ, SPARSIFY_TUI_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "sparsify_tui", *args], capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("case", ["open-missing", "open-not-project", "model-missing", "model-dir", "model-junk"])
def test_bad_paths_end_in_one_error_line_before_the_app(tmp_path, tui_home, case):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(256))
    (tmp_path / "plain").mkdir()
    args = {
        "open-missing": ["open", str(tmp_path / "nope")],
        "open-not-project": ["open", str(tmp_path / "plain")],
        "model-missing": [str(tmp_path / "nope.onnx")],
        "model-dir": [str(tmp_path / "plain")],
        "model-junk": [str(junk)],
    }[case]
    r = _cli(*args, home=tui_home)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""  # the app never started (it would have drawn on the terminal)
    name = {"open-missing": "nope", "open-not-project": "plain", "model-missing": "nope.onnx",
            "model-dir": "plain", "model-junk": "junk.onnx"}[case]
    assert name in lines[0]


def test_prepare_demo_creates_it_once_with_its_profiles_to_start(tui_home):
    args = argparse.Namespace(command=None, demo=True, model=None)
    project, jobs, screen = app_cmd.prepare(args)
    try:
        assert screen == "overview"
        assert project.dir == tui_home / "data" / "demo"
        assert project.name == "demo" and project.model_path.exists()
        assert [k for k, _ in jobs] == ["perf", "loss"]
        assert dict(jobs)["loss"] == {"method": "approx"}
        # its layers are the demo model's
        from sparsify_tui.analysis import analyze

        assert analyze(project.model_path).layers[0].name == "stem.conv"
    finally:
        project.close()
    # the second time it opens the existing demo
    project2, _, _ = app_cmd.prepare(args)
    assert project2.dir == project.dir and project2.created == project.created
    project2.close()
    with pytest.raises(UsageError):
        app_cmd.prepare(argparse.Namespace(command=None, demo=True, model="x.onnx"))


@pytest.mark.corpus
def test_quick_look_uses_a_scratch_project_per_model(tui_home, corpus):
    args = argparse.Namespace(command=None, demo=False, model=str(corpus.path("mobilenetv3")))
    project, jobs, screen = app_cmd.prepare(args)
    try:
        assert screen == "layers"
        assert project.dir.parent == tui_home / "cache" / "scratch"
        assert project.model_path.resolve() == corpus.path("mobilenetv3").resolve()  # linked, not copied
        assert jobs == [("perf", {})]
        # its dynamic input dimensions get the values the analysis assumed, so the profile can run
        from sparsify_tui.analysis import analyze

        graph = analyze(corpus.path("mobilenetv3"))
        assert project.input_shapes == {t.name: graph.input_shapes()[t.name] for t in graph.inputs if t.assumed}
    finally:
        project.close()
    again, _, _ = app_cmd.prepare(args)
    assert again.dir == project.dir
    again.close()


def test_open_validates_project_directory(tmp_path, tui_home):
    with pytest.raises(ProjectError, match="does not exist"):
        app_cmd.prepare(argparse.Namespace(command="open", project=str(tmp_path / "x"), demo=False, model=None))
    with pytest.raises(ModelError, match="does not exist"):
        app_cmd.prepare(argparse.Namespace(command=None, demo=False, model=str(tmp_path / "m.onnx")))
    project, jobs, screen = app_cmd.prepare(argparse.Namespace(command=None, demo=False, model=None))
    assert project is None and jobs == [] and screen == "home"


def test_core_helpers_of_the_tui_do_not_import_textual():
    code = ("import sys; import sparsify_tui.tui.data, sparsify_tui.tui.jobs, sparsify_tui.tui.launch, "
            "sparsify_tui.commands.app; assert 'textual' not in sys.modules, 'textual imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
