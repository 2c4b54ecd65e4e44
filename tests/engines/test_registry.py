"""The engine registry is the one list of engines, and every engine keeps its contract.

The list rule: outside ``sparsify_tui/engines/`` no module spells out two or more
engine names together as string literals in one tuple, list, set or dict (keys),
``x in ("onnxruntime", "openvino")`` included: such a list is derived from the
registry (``engine_names()``, ``installed_engines()``, a capability such as
``sparse_speedup`` or ``precision_hint``). A single name may stay where one engine
is meant: a default (``REFERENCE`` is preferred), or one comparison for a quirk
of that engine when no capability says it.

The contract tests run over every registered engine: it resolves, reports its
installed version, refuses a precision it cannot run with the one message every
caller shows, and times (and, where instrumented, profiles) a tiny model built
here when it is installed.
"""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

from sparsify_tui.engines import registry
from sparsify_tui.errors import EngineUnavailableError, UsageError

PACKAGE = Path(registry.__file__).resolve().parent.parent
NAMES = registry.engine_names()


def engine_lists(source: str, names=NAMES) -> list[tuple[int, list[str]]]:
    """(line, names) of every tuple/list/set literal or dict whose keys hold two or more engine names."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            elts = node.elts
        elif isinstance(node, ast.Dict):
            elts = [k for k in node.keys if k is not None]
        else:
            continue
        hits = [e.value for e in elts if isinstance(e, ast.Constant) and e.value in names]
        if len(set(hits)) >= 2:
            found.append((node.lineno, hits))
    return sorted(found)


def test_no_module_outside_the_engines_layer_lists_the_engines():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "engines":
            continue
        for line, hits in engine_lists(path.read_text(encoding="utf-8")):
            bad.append(f"sparsify_tui/{rel}:{line}: {', '.join(hits)}")
    assert not bad, "engine names listed outside sparsify_tui/engines/ (derive them from the registry):\n" + \
        "\n".join(bad)


def test_the_scan_finds_engine_lists_and_lets_single_mentions_be():
    src = ('A = ("onnxruntime", "deepsparse")\n'
           'if e in ["openvino", "deepsparse", "tvm"]: pass\n'
           'T = {"deepsparse": 1, "openvino": 2}\n'
           'B = ("onnxruntime", "fp32")\n'
           'if e == "deepsparse": pass\n'
           'C = ("deepsparse", "deepsparse")\n')
    assert engine_lists(src) == [(1, ["onnxruntime", "deepsparse"]), (2, ["openvino", "deepsparse"]),
                                 (3, ["deepsparse", "openvino"])]


def test_registry_lists_and_auto():
    assert NAMES == ("deepsparse", "onnxruntime", "openvino")
    assert registry.engine_choices() == ("auto", *NAMES)
    assert registry.REFERENCE in NAMES and registry.get_engine(registry.REFERENCE).available()
    installed = registry.installed_engines()
    assert installed == [n for n in ("deepsparse", "onnxruntime", "openvino") if n in installed]
    chosen, reason = registry.resolve_auto("auto")
    if "deepsparse" in installed:
        assert (chosen, reason) == ("deepsparse", "deepsparse installed and compiled the model")
    else:
        assert (chosen, reason) == ("onnxruntime", "deepsparse not installed")
    with pytest.raises(UsageError) as e:
        registry.get_engine("tensorrt")
    assert e.value.message == ("--engine must be one of auto, deepsparse, onnxruntime, openvino, "
                               "got 'tensorrt'")
    # only DeepSparse runs sparse weights faster; only OpenVINO takes a precision hint
    assert [s.name for s in registry.engines() if s.sparse_speedup] == ["deepsparse"]
    assert [s.name for s in registry.engines() if s.precision_hint] == ["openvino"]


def test_importing_the_registry_imports_no_engine():
    import subprocess
    import sys

    code = ("import sys; from sparsify_tui.engines import registry; registry.installed_engines(); "
            "registry.engine_versions(); print(sorted(m for m in ('deepsparse', 'openvino', 'onnxruntime', "
            "'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["[]"], out.stderr


def _tiny_model(path: Path) -> Path:
    """x[1,16] -> MatMul(16x8) -> Relu -> y[1,8]: one layer, compiles in milliseconds everywhere."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["fc"], name="fc"), helper.make_node("Relu", ["fc"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("registry") / "tiny.onnx")


@pytest.mark.parametrize("name", NAMES)
def test_engine_resolves_and_reports_its_version(name):
    spec = registry.get_engine(name)
    assert spec.name == name and registry.get_engine(f" {name.upper()} ") is spec
    if not spec.available():
        with pytest.raises(EngineUnavailableError) as e:
            registry.resolve_auto(name)
        assert e.value.message == spec.install_hint
        assert spec.version() is None and name not in registry.installed_engines()
        return
    assert registry.resolve_auto(name) == (name, f"requested with --engine {name}")
    dist = next(d for d in spec.distributions if _installed(d))
    assert spec.version() == importlib.metadata.version(dist) == registry.engine_versions()[name]
    from sparsify_tui.engines.machine import machine_info

    assert machine_info()["engines"][name] == spec.version()


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.parametrize("name", NAMES)
def test_engine_refuses_a_precision_it_cannot_run_with_one_message(name):
    from sparsify_tui.jobs.deploy import precision_unsupported
    from sparsify_tui.profiles.perf import validate_precision
    from sparsify_tui.tui.screens.profile_dialog import parse_perf_settings

    spec = registry.get_engine(name)
    bare = {"bf16": False, "fp16": False}  # a CPU without bf16 or fp16 arithmetic
    refused = [p for p in registry.PRECISIONS if p not in spec.precisions(bare)]
    assert refused and "fp32" in spec.precisions(bare) and "int8" in spec.precisions(bare)
    for p in refused:
        message = registry.precision_problem(name, p, bare)
        assert message and p in message and name in message
        kind = EngineUnavailableError if p in spec.precisions_known else UsageError
        with pytest.raises(kind) as e:
            registry.check_precision(name, p, bare)
        assert e.value.message == message
        if p not in spec.precisions_known:  # the engine never runs it: the same words from every caller
            assert precision_unsupported(name, p) == message
            with pytest.raises(UsageError) as e:
                validate_precision(name, p)
            assert e.value.message == message
            with pytest.raises(UsageError) as e:
                parse_perf_settings(name, "1", "1", "10", "", 2, p)
            assert e.value.message == message
    assert registry.check_precision(name, None) == ("fp32" if spec.precision_hint else None)
    with pytest.raises(UsageError, match="--precision must be one of fp32, bf16, fp16, int8"):
        registry.check_precision(name, "int4")


@pytest.mark.parametrize("name", NAMES)
def test_engine_times_and_profiles_a_tiny_model(name, tiny):
    spec = registry.get_engine(name)
    if not spec.available():
        pytest.skip(f"{name} is not installed")
    x = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    beats: list[str] = []
    res = spec.benchmark(str(tiny), {"x": x}, batch_size=1, cores=1, iterations=4, warmup=1, repeats=2,
                         heartbeat=beats.append)
    assert len(res["repeat_ms"]) == 2 and len(res["iteration_ms"]) == 8 and beats == ["repeat 1", "repeat 2"]
    assert all(ms > 0 for ms in res["iteration_ms"]) and res["compile_s"] > 0
    assert res["precision"] == "fp32"
    for r, block in enumerate((res["iteration_ms"][:4], res["iteration_ms"][4:])):
        assert res["repeat_ms"][r] == pytest.approx(sorted(block)[1] / 2 + sorted(block)[2] / 2)
    with spec.prepared(str(tiny)) as (path, _note):  # the A/B benchmark's runner: one inference per call
        run = spec.runner(path, {"x": x}, batch_size=1, cores=1, tmp=str(tiny.parent))
        run()
        run()
    if not spec.instrumented:
        return
    from sparsify_tui.engines.modelinfo import load_model_info

    info = load_model_info(str(tiny), {"x": [1, 16]})
    prof = spec.layer_profile(str(tiny), info, {"x": x}, cores=1, iterations=3, warmup=1)
    assert {r.id for r in info.refs()} <= set(prof["layer_ms"]) and prof["layer_ms"]["fc"] >= 0
    # every timed step lands on a layer or an engine-internal row (a tiny model may run as one naive subgraph)
    assert sum(prof["layer_ms"].values()) + sum(i["ms"] for i in prof["internal"]) > 0
    assert prof["iteration_ms"] and all(ms > 0 for ms in prof["iteration_ms"])
