"""A project directory written by an earlier release opens unchanged with today's code.

``tests/fixtures/project_v1/project`` was made by the CLI of the release that wrote schema version 1
(``tests/fixtures/make_project_fixture.py``, see the README beside it): a tiny CNN with an ONNX Runtime
perf profile, an approximated loss profile and two optimizations. ``expected/<name>.yaml`` is the
recipe each optimization exported then. The recipe holds no timestamp of its own (its embedded
optimization carries the created/modified stamps stored in the project), so it is compared byte for byte.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sparsify_tui import cli
from sparsify_tui.project import SCHEMA_VERSION, Project

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "project_v1"


@pytest.fixture
def old_project(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPARSIFY_TUI_HOME", str(tmp_path / "home"))
    dst = tmp_path / "fixture-cnn"
    shutil.copytree(FIXTURE / "project", dst)
    return dst


def test_old_project_opens_with_its_profiles_and_optimizations(old_project):
    assert SCHEMA_VERSION >= 1
    with Project.open(old_project) as p:
        assert not p.readonly and p.notices == [] and p.problems() == {}
        assert (p.name, p.schema_version, p.model_file) == ("fixture-cnn", 1, "model.onnx")
        assert not p.model_changed and not p.model_missing
        assert [(e.id, e.kind, e.name, e.engine) for e in p.profiles] == [
            ("perf-1", "perf", "ort-baseline", "onnxruntime"), ("loss-1", "loss", "approx-loss", "none")]
        assert p.stale_profiles() == []
        perf = p.get_profile("perf-1")
        assert perf.settings["levels"] == [0.0, 0.5, 0.9] and perf.settings["iterations"] == 5
        # the stored cache key is still the key today's code computes: a re-run would hit the cache
        fp = perf.machine["fingerprint"]
        assert p.find_profile(p.profile_key("perf", perf.settings, perf.engine, perf.engine_version, fp)) is perf
        assert p.load_profile(perf)["key"] == perf.key
        assert p.load_profile("loss-1")["kind"] == "loss"
        assert [o["name"] for o in p.optimizations] == ["default", "balanced"]
        assert p.get_optimization("default")["pruning"]["target_sparsity"] == 0.8
        assert p.get_optimization("balanced")["pruning"]["balance"] == 0.8
        assert p.get_optimization("balanced")["perf_profile_id"] == "perf-1"


# Since this fixture was made, a recipe whose plan rests on no measured loss profile says so in two comment
# lines of its header (issue #24: the fixture's plans use the approximated loss profile). Everything else —
# the modifiers and the embedded optimization — must stay byte for byte what the old release exported.
LOSS_NOTE = (b"# Planned without a measured loss profile: layer sensitivities came from weight magnitudes.\n"
             b"# Measure one ('sparsify-tui profile loss --method one-shot') and validate the plan first.\n")


def test_old_project_exports_the_same_recipes(old_project, tmp_path, capsys):
    before = (old_project / "project.toml").read_bytes()
    for name in ("default", "balanced"):
        out = tmp_path / f"{name}.yaml"
        assert cli.main(["export", str(old_project), "--optimization", name, "--recipe", str(out)]) == 0
        got = out.read_bytes()
        assert got.count(LOSS_NOTE) == 1, name
        assert got.replace(LOSS_NOTE, b"") == (FIXTURE / "expected" / f"{name}.yaml").read_bytes(), name
    assert (old_project / "project.toml").read_bytes() == before  # exporting rewrote nothing


def test_old_project_saves_and_reopens_the_same(old_project):
    with Project.open(old_project) as p:
        rows = [e.to_dict() for e in p.profiles]
        opts = [dict(o) for o in p.optimizations]
        p.save()
    with Project.open(old_project) as p:
        assert [e.to_dict() for e in p.profiles] == rows and p.optimizations == opts
        assert p.problems() == {}


async def test_old_project_shows_its_profiles_in_the_app(old_project):
    from textual.widgets import DataTable

    from sparsify_tui.tui.app import SparsifyApp
    from tests.tui.conftest import FIXED_MACHINE, settle

    with Project.open(old_project) as p:
        app = SparsifyApp(p, machine=FIXED_MACHINE)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot, app)
            table = app.screen.query_one("#profiles", DataTable)
            names = {table.get_row_at(i)[1].plain for i in range(table.row_count)}
            assert {"ort-baseline", "approx-loss"} <= names


def test_project_package_parts_stay_readable():
    """Issue #25: no class of sparsify_tui/project/ over 400 lines, no function over 100."""
    import ast

    import sparsify_tui.project as pkg

    too_long = []
    for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            limit = 400 if isinstance(node, ast.ClassDef) else 100
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > limit:
                    too_long.append(f"{f.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert too_long == []
    assert {"store.py", "catalogue.py", "optimizations.py", "project.py"} <= {
        f.name for f in Path(pkg.__file__).parent.glob("*.py")}
