"""Output paths that would destroy the user's work, and garbage side files (profiles, data, recipes)."""

from __future__ import annotations

import json

import pytest

from .helpers import assert_user_error, run_cli, snapshot_dir


def _main(*args) -> int:
    from sparsify_tui.cli import main

    return main([str(a) for a in args])


@pytest.fixture
def optimized(project):
    assert _main("optimize", project, "--sparsity", "0.5") == 0
    return project


@pytest.mark.parametrize("target", ["model.onnx", "project.toml", "project.toml.bak", "profiles/x.onnx", "."])
def test_prune_output_never_overwrites_the_project(optimized, target):
    before = snapshot_dir(optimized)
    assert_user_error(run_cli("prune", optimized, "-o", optimized / target), "-o")
    assert snapshot_dir(optimized) == before
    from sparsify_tui.project import Project

    Project.open(optimized, readonly=True)


def test_prune_output_never_overwrites_a_linked_original(tmp_path, model):
    assert _main("new", model, "--dir", tmp_path / "linked", "--link") == 0
    assert _main("optimize", tmp_path / "linked") == 0
    data = model.read_bytes()
    assert_user_error(run_cli("prune", tmp_path / "linked", "-o", model), "would overwrite", model.name)
    assert model.read_bytes() == data


def test_prune_into_a_missing_directory(optimized, tmp_path):
    assert_user_error(run_cli("prune", optimized, "-o", tmp_path / "no" / "such" / "dir" / "p.onnx"),
                      "does not exist")


@pytest.mark.parametrize("flag,target", [("--recipe", "project.toml"), ("--code", "model.onnx"),
                                         ("--recipe", "optimizations/default.json")])
def test_export_never_overwrites_the_project(optimized, flag, target):
    before = snapshot_dir(optimized)
    assert_user_error(run_cli("export", optimized, flag, optimized / target), "would overwrite")
    assert snapshot_dir(optimized) == before


def test_new_never_overwrites_an_existing_project(optimized, demo_model):
    before = snapshot_dir(optimized)
    assert_user_error(run_cli("new", demo_model, "--dir", optimized), "already holds a project")
    assert snapshot_dir(optimized) == before


def test_recipe_bomb_is_rejected_and_the_optimization_kept(optimized, tmp_path):
    (tmp_path / "bomb.yaml").write_text("x: eval(9**9**9)\nmodifiers:\n  - !GMPruningModifier\n    final_sparsity: eval(x)\n")
    before = snapshot_dir(optimized)
    assert_user_error(run_cli("export", optimized, "--import", tmp_path / "bomb.yaml", timeout=60), "too large")
    (tmp_path / "deep.yaml").write_text("modifiers: " + "[" * 3000 + "]" * 3000)
    assert_user_error(run_cli("export", optimized, "--import", tmp_path / "deep.yaml"), "nested too deeply")
    assert snapshot_dir(optimized) == before


def test_garbage_profile_json_for_compare_and_import(optimized, tmp_path):
    (tmp_path / "bad.json").write_text('{"kind": "perf", "layers": [')
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    assert_user_error(run_cli("compare", tmp_path / "bad.json", tmp_path / "bad.json"), "bad.json")
    before = snapshot_dir(optimized)
    for f in ("bad.json", "list.json"):
        assert_user_error(run_cli("profile", "perf", optimized, "--import", tmp_path / f), f)
    assert snapshot_dir(optimized) == before


def test_garbage_data_file(optimized, tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not numpy at all")
    before = snapshot_dir(optimized)
    assert_user_error(run_cli("profile", "perf", optimized, "--engine", "onnxruntime", "--data", tmp_path / "bad.npz"),
                      "bad.npz")
    assert_user_error(run_cli("profile", "perf", optimized, "--data", tmp_path / "none.npz"), "none.npz")
    assert snapshot_dir(optimized) == before


def test_benchmark_with_one_bad_model_among_good_ones(model, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00" * 64)
    res = run_cli("benchmark", model, tmp_path / "junk.onnx", "--engine", "onnxruntime", "--iterations", "1",
                  "--warmup", "0", "--repeats", "1", "--json")
    assert_user_error(res, "junk.onnx")
    assert res.stdout.strip() == "" or json.loads(res.stdout)
