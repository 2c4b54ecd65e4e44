"""Bad flag values and a missing engine, through the real CLI."""

from __future__ import annotations

import json
import os

import pytest

from .helpers import assert_user_error, cli_env, run_cli

FAST = ("--iterations", "1", "--warmup", "0", "--repeats", "1")


@pytest.mark.parametrize("flags,words", [
    (["--batch-size", "-1"], "--batch-size must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--batch-size", "4611686018427387904"], "smaller --batch-size"),
    (["--batch-size", "two"], "--batch-size must be a whole number"),
    (["--cores", "0"], "--cores must be at least 1"),
    (["--cores", "4096"], "--cores must be at most"),
    (["--levels", "0,1.0"], "--levels must be below 1"),
    (["--levels", "0,-0.1"], "--levels must be at least 0"),
    (["--levels", "0.5,1.5"], "--levels must be below 1"),
    (["--levels", "nan"], "finite"),
    (["--levels", "0.4;0.6"], "--levels must be a number"),
    (["--engine", "tensorrt"], "--engine must be one of"),
    (["--iterations", "0"], "--iterations must be at least 1"),
    (["--timeout", "-5"], "--timeout must be at least"),
])
def test_bad_perf_flag(model, flags, words):
    assert_user_error(run_cli("profile", "perf", model, *FAST, *flags), words)


@pytest.mark.parametrize("shape,words", [
    ("x", "malformed"),
    ("x=", "expects 4 dimensions"),  # NAME= is a 0-d input: x has 4
    ("=1,3,8,8", "malformed"),
    ("x=1,3,eight,8", "malformed"),
    ("x=1,3,-8,8", "malformed"),
    ("x=1,0,8,8", "dimension of 0"),
    ("x=1,3,8", "expects 4 dimensions"),
    ("nosuch=1,3,8,8", "no input called"),
    ("x=4611686018427387904,3,8,8", "absurdly large"),
    ("x=1,3,8²,8", "malformed"),
])
def test_bad_input_shape(model, shape, words):
    assert_user_error(run_cli("info", model, "--input-shape", shape), "--input-shape", words)


def test_bad_optimize_flags(project):
    before = (project / "project.toml").read_bytes()
    for flags, words in ((["--sparsity", "1.5"], "--sparsity"), (["--epochs", "-3"], "--epochs"),
                         (["--balance", "two"], "--balance")):
        assert_user_error(run_cli("optimize", project, *flags), words)
    assert (project / "project.toml").read_bytes() == before


@pytest.fixture
def no_deepsparse_env(tmp_path):
    """An environment (parent and worker processes) where ``import deepsparse`` fails: it is not installed."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['deepsparse'] = None\n")
    return cli_env(PYTHONPATH=str(shim) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_engine_deepsparse_not_installed(model, no_deepsparse_env):
    assert_user_error(run_cli("profile", "perf", model, "--engine", "deepsparse", *FAST, env=no_deepsparse_env),
                      "deepsparse is not installed")
    assert_user_error(run_cli("benchmark", model, "--engine", "deepsparse", env=no_deepsparse_env),
                      "deepsparse is not installed")


def test_engine_auto_falls_back_when_deepsparse_is_missing(model, no_deepsparse_env):
    res = run_cli("profile", "perf", model, *FAST, "--levels", "0,0.5", "--json", env=no_deepsparse_env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["engine"] == "onnxruntime"
    assert "deepsparse" in doc["engine_reason"] and "not installed" in doc["engine_reason"]
    assert "note: using onnxruntime instead of deepsparse" in res.stderr
    assert doc["baseline_ms"] > 0 and set(doc["model_ms_by_level"]) == {"0.0", "0.5"}


@pytest.mark.parametrize("flags,words", [
    (["--batch-size", "1,0"], "--batch-size must be at least 1"),
    (["--cores", "0"], "--cores"),
    (["--cores", "1,4096"], "--cores"),
    (["--engine", "tvm"], "--engine must be one of"),
    (["--iterations", "-1"], "--iterations must be at least 1"),
])
def test_bad_benchmark_flag(model, flags, words):
    assert_user_error(run_cli("benchmark", model, *flags), words)


def test_new_with_an_absurd_input_shape_leaves_nothing(tmp_path):
    from .helpers import helper, save_model, vi

    p = save_model(tmp_path / "dyn.onnx", [helper.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", ["N", 4])],
                   [vi("y", ["N", 4])])
    assert_user_error(run_cli("new", p, "--dir", tmp_path / "proj", "--input-shape", f"x={2**62},4"),
                      "absurdly large")
    assert not (tmp_path / "proj").exists()


@pytest.mark.parametrize("args,words", [
    (["open", "{tmp}/nonexistent"], "does not exist"),
    (["open", "{tmp}"], "not a sparsify-tui project"),
    (["{tmp}/nonexistent.onnx"], "does not exist"),
    (["profile", "loss", "{proj}", "--method", "one-shot", "--samples", "0"], "--samples must be at least 1"),
    (["profile", "loss", "{proj}", "--method", "magic"], "--method must be"),
    (["profile", "loss", "{proj}", "--eval-sparsity", "1.5"], "--eval-sparsity must be below 1"),
    (["profile", "quant", "{proj}", "--samples", "-1"], "--samples must be at least 1"),
    (["optimize", "{proj}", "--override", "nosuch=0.5"], "not in the model"),
    (["optimize", "{proj}", "--override", "c=1.5"], "must be in [0, 1)"),
    (["optimize", "{proj}", "--override", "c"], "LAYER=SPARSITY"),
    (["optimize", "{proj}", "--exclude", "nosuch"], "not in the model"),
    (["optimize", "{proj}", "--min-speedup", "abc"], "must be a number"),
    (["export", "{proj}", "--framework", "cobol"], "--framework must be one of"),
])
def test_bad_flags_of_other_commands(project, tmp_path, args, words):
    before = (project / "project.toml").read_bytes()
    argv = [a.replace("{tmp}", str(tmp_path / "empty")).replace("{proj}", str(project)) for a in args]
    (tmp_path / "empty").mkdir()
    assert_user_error(run_cli(*argv, stdin=__import__("subprocess").DEVNULL), words)
    assert (project / "project.toml").read_bytes() == before
