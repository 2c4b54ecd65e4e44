"""Adding an engine is one module plus one registration (issue #25).

``tests/engines/noopt_engine.py`` is such a module: ONNX Runtime with its graph
optimizations turned off, a ``Timed`` class and one ``register(...)`` call. Imported
here (and in the CLI and its worker processes through ``SPARSIFY_TUI_ENGINE_MODULES``),
it appears in the ``--engine`` choices and the machine summary, and the benchmark, the
perf profile and the deployment search run it, with nothing else changed.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsify_tui.engines import registry
from tests.reliability.helpers import assert_user_error, cli_env, run_cli

MODULE = "tests.engines.noopt_engine"
NAME = "ort-noopt"


def _chain_model(path: Path) -> Path:
    """y = Relu(x @ (w * 2) + b): the Mul of two constants is folded away and MatMul+Add+Relu fused by
    ONNX Runtime's optimizations, while the engine without them runs all four nodes."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b"),
             numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")]
    g = helper.make_graph([helper.make_node("Mul", ["w", "two"], ["w2"], name="scale"),
                           helper.make_node("MatMul", ["x", "w2"], ["mm"], name="fc"),
                           helper.make_node("Add", ["mm", "b"], ["fcb"], name="bias"),
                           helper.make_node("Relu", ["fcb"], ["y"], name="relu")], "chain",
                          [helper.make_tensor_value_info("x", T.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("y", T.FLOAT, ["N", 32])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def added():
    """The engine registered in this process, as its module's import registers it; removed afterwards."""
    assert NAME not in registry.engine_names()
    module = importlib.import_module(MODULE)
    yield module
    registry.unregister(NAME)
    sys.modules.pop(MODULE, None)
    assert NAME not in registry.engine_names()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _chain_model(tmp_path_factory.mktemp("added") / "chain.onnx")


def _env() -> dict:
    return cli_env(**{registry.ENGINE_MODULES_ENV: MODULE})


def test_the_registration_adds_the_engine_to_every_list(added):
    spec = registry.get_engine(NAME)
    assert spec.module == MODULE and spec.available()
    assert registry.engine_choices()[-1] == NAME and NAME in registry.installed_engines()
    assert registry.engine_versions()[NAME] == registry.get_engine("onnxruntime").version()
    assert spec.precisions({"bf16": True, "fp16": True}) == ("fp32", "int8")
    assert registry.resolve_auto(NAME) == (NAME, f"requested with --engine {NAME}")
    assert registry.resolve_auto("auto")[0] != NAME  # no auto_rank: auto never picks it
    with pytest.raises(ValueError):
        registry.register(spec)
    with pytest.raises(ValueError):
        registry.unregister("onnxruntime")


def test_it_is_another_engine_than_onnx_runtime(added, model):
    """Its profile runs the four nodes as written; ONNX Runtime folds and fuses them (real runs of both)."""
    from sparsify_tui.engines.modelinfo import load_model_info

    info = load_model_info(str(model), {"x": [1, 64]})
    x = {"x": np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)}
    plain = registry.get_engine(NAME).layer_profile(str(model), info, x, cores=1, iterations=3, warmup=1, repeats=2)
    fused = registry.get_engine("onnxruntime").layer_profile(str(model), info, x, cores=1, iterations=3, warmup=1,
                                                             repeats=2)
    assert plain["steps"] == 4 and fused["steps"] < 4
    assert plain["layer_ms"]["w2"] > 0 and fused["layer_ms"]["w2"] == 0  # the constant Mul runs on every call
    assert len(plain["repeats"]) == 2 and all(rep["model_ms"] > 0 for rep in plain["repeats"])
    assert [end > start for start, end in plain["windows"]] == [True, True]
    with registry.get_engine(NAME).timed_model(str(model), x, cores=1) as tm:
        run = tm.runner()
        ref = registry.get_engine("onnxruntime").runner(str(model), x, cores=1)
        np.testing.assert_allclose(run()[0], ref()[0], rtol=1e-5, atol=1e-6)
        res = tm.benchmark(iterations=3, warmup=1, repeats=2)  # the default loop over the runner
    assert len(res["iteration_ms"]) == 6 and all(ms > 0 for ms in res["iteration_ms"]) and res["compile_s"] > 0


def test_a_bad_engine_module_is_one_warning_not_a_crash(added, capsys):
    problems = registry.load_engine_modules("tests/engines/x.py, tests.engines.no_such_engine")
    assert len(problems) == 2 and "not a module name" in problems[0] and "no_such_engine" in problems[1]
    assert capsys.readouterr().err.count("warning: ") == 2
    assert NAME in registry.engine_names()  # what was registered stays


def test_the_cli_lists_benchmarks_and_profiles_it(model, tmp_path):
    env = _env()
    info = run_cli("info", model, "--input-shape", "x=1,64", env=env)
    assert info.returncode == 0, info.stderr
    engines_line = next(ln for ln in info.stdout.splitlines() if ln.startswith("Engines"))
    assert f"{NAME} {registry.get_engine('onnxruntime').version()}" in engines_line
    assert_user_error(run_cli("benchmark", model, "--engine", "tensorrt", env=env),
                      f"must be one of auto, deepsparse, onnxruntime, openvino, {NAME}")

    res = run_cli("benchmark", model, "--engine", NAME, "--input-shape", "x=1,64", "--cores", "1",
                  "--iterations", "5", "--warmup", "2", "--repeats", "2", "--json", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    bench = json.loads(res.stdout)["results"][0]
    assert bench["engine"] == NAME and bench["engine_reason"] == f"requested with --engine {NAME}"
    assert bench["median_ms"] > 0 and len(bench["repeat_ms"]) == 2 and bench["compile_s"] > 0

    res = run_cli("profile", "perf", model, "--engine", NAME, "--input-shape", "x=1,64", "--cores", "1",
                  "--levels", "0,0.5", "--iterations", "3", "--warmup", "1", "--repeats", "2", "--json", env=env,
                  timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    assert doc["engine"] == NAME and doc["approximated"] is True and doc["baseline_ms"] > 0
    assert doc["notes"][0].startswith(f"{NAME} does not run sparse weights faster")
    layers = {layer["id"]: layer for layer in doc["layers"]}
    assert layers["w2"]["baseline_ms"] > 0  # the unfolded Mul, timed by this engine's own profile
    assert doc["quality"]["deployed_ms"] > 0 and len(doc["quality"]["deployed_repeat_ms"]) == 3


def test_the_deployment_search_has_its_rows(model, tmp_path):
    env = _env()
    pdir = tmp_path / "proj"
    assert run_cli("new", model, "--dir", pdir, "--input-shape", "x=1,64", env=env).returncode == 0
    res = run_cli("deploy", pdir, "--engines", f"onnxruntime,{NAME}", "--precisions", "fp32", "--dense-only",
                  "--repeats", "1", "--json", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    rows = {r["id"]: r for r in doc["rows"]}
    assert set(rows) == {"onnxruntime/fp32/dense", f"{NAME}/fp32/dense"} and doc["skipped"] == []
    row = rows[f"{NAME}/fp32/dense"]
    assert row["engine_version"] == registry.get_engine("onnxruntime").version()
    assert row["output_change"] < 1e-9 and row["speedup"] > 0 and row["iterations"] >= 3
    assert doc["engine_versions"][NAME] == row["engine_version"]
