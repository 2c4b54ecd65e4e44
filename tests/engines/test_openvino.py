"""OpenVINO backend on real models: counters mapped to every layer, precisions applied, CLI paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsify_tui.engines.modelinfo import load_model_info
from sparsify_tui.engines.inputs import make_inputs

pytestmark = pytest.mark.openvino
REPO = Path(__file__).resolve().parents[2]
COMPUTE = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def _require_openvino():
    from sparsify_tui.engines import openvino_engine as ove

    if not ove.available():
        if os.environ.get("CI") or os.environ.get("SPARSIFY_REQUIRE_OPENVINO") == "1":
            pytest.fail("openvino must be installed here (pip install -e '.[openvino]')")
        pytest.skip("openvino is not installed")
    return ove


@pytest.fixture(scope="module")
def ove():
    return _require_openvino()


def _cli(*args: str, env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", NM_DISABLE_ANALYTICS="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "sparsify_tui", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


def _profile(ove, corpus, key: str, **kw):
    path = str(corpus.path(key))
    shapes = corpus.input_shapes(key)
    info = load_model_info(path, shapes)
    return info, ove.profile(path, info, make_inputs(path, 1, shapes), **kw)


def _small_cnn(path: Path) -> Path:
    """Conv+Relu x2 -> GlobalAveragePool -> Flatten -> Gemm, real initializers (quantizable)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n) for n, s in
             [("w1", (16, 3, 3, 3)), ("b1", (16,)), ("w2", (32, 16, 3, 3)), ("b2", (32,)),
              ("fc_w", (10, 32)), ("fc_b", (10,))]]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _unreadable(path: Path) -> Path:
    """A model ONNX Runtime runs and OpenVINO cannot read (its ONNX frontend has no Det)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Det", ["c"], ["y"], name="det")]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- per-layer profile
@pytest.fixture(scope="module")
def yolo_profile(ove, corpus):
    return _profile(ove, corpus, "yolov8n", cores=2, iterations=5, warmup=2, repeats=3)


def test_layer_times_add_up_to_the_model_time(yolo_profile):
    info, res = yolo_profile
    # the counters account for the wall time of the same runs (the rest is waiting between nodes)
    assert 0.9 <= res["counted_share"] <= 1.1, res["counted_share"]
    assert len(res["repeats"]) == 3 and len(res["iteration_ms"]) == 15
    rep = sorted(res["repeats"], key=lambda r: r["model_ms"])[1]
    assert rep["layer_ms"] == res["layer_ms"]
    # layers + engine rows (Reorder/Convert + run overhead) = the repeat's median model time
    total = sum(res["layer_ms"].values()) + sum(r["ms"] for r in res["internal"])
    assert total >= rep["model_ms"] * (1 - 1e-9)
    over = sum(r["ms"] for r in res["internal"] if r["id"] == "engine:run overhead")
    assert over == 0 or total == pytest.approx(rep["model_ms"], rel=1e-9)


def test_every_compute_layer_is_mapped_to_a_timed_node_with_its_kernel(yolo_profile):
    info, res = yolo_profile
    live = [m for m in info.layers if not m.constant and not m.graph_path]
    assert all(m.id in res["owner"] for m in live)
    compute = [m for m in live if m.op_type in COMPUTE]
    assert len(compute) == 64
    steps = {s["name"]: s for s in res["step_info"]}
    for m in compute:
        assert res["layer_ms"][m.id] > 0, m.id
        kernel = res["kernels"][m.id]
        assert kernel and "conv" in kernel.lower(), (m.id, kernel)  # e.g. brgconv_avx512_f32
        assert res["layer_precision"][m.id] == "f32"
        group = res["groups"][res["owner"][m.id]]
        assert m.id in group
    # most convs keep their own node (ONNX name + /WithoutBiases): anchored directly, not by the rules
    anchored = {lid for s in steps.values() for lid in s["layers"]}
    assert sum(m.id in anchored for m in compute) >= 60
    # OpenVINO's re-layouts are engine-internal rows named as such, with their kernel
    reorders = [r for r in res["internal"] if r["id"].startswith("engine:Reorder")]
    assert reorders and all(res["kernels"].get(r["id"]) for r in reorders)
    assert not any(r["id"] in res["owner"] for r in res["internal"])


def test_fused_nodes_become_groups(ove, corpus):
    # mobilenetv3: Conv+BatchNorm+HardSwish run as one Convolution node named after the BN's Multiply
    info, res = _profile(ove, corpus, "mobilenetv3", cores=2, iterations=3, warmup=1)
    by_id = {m.id: m for m in info.layers}
    convs = [m for m in info.layers if m.op_type == "Conv"]
    assert len(convs) == 53 and all(m.id in res["owner"] and res["layer_ms"][m.id] > 0 for m in convs)
    fused = [g for g in res["groups"].values() if len(g) > 1 and any(by_id[i].op_type == "Conv" for i in g)]
    assert len(fused) >= 30
    assert all(sum(by_id[i].op_type == "Conv" for i in g) == 1 for g in fused)  # one conv per node
    first = convs[0]
    group = res["groups"][res["owner"][first.id]]
    assert [by_id[i].op_type for i in group][:2] == ["Conv", "BatchNormalization"]


# ---------------------------------------------------------------- precisions
def test_fp32_and_bf16_are_applied(ove, corpus):
    path = str(corpus.path("mobilenetv3"))
    shapes = corpus.input_shapes("mobilenetv3")
    info = load_model_info(path, shapes)
    inputs = make_inputs(path, 1, shapes)
    convs = [m.id for m in info.layers if m.op_type == "Conv"]
    fp32 = ove.profile(path, info, inputs, precision="fp32", cores=2, iterations=2, warmup=1)
    assert fp32["inference_precision"] == "f32"
    assert {fp32["layer_precision"][c] for c in convs} == {"f32"}
    assert all(fp32["kernels"][c].endswith("f32") for c in convs)
    if "BF16" not in ove.capabilities():
        from sparsify_tui.errors import EngineUnavailableError

        with pytest.raises(EngineUnavailableError, match="cannot run bf16"):
            ove.profile(path, info, inputs, precision="bf16", cores=2, iterations=1, warmup=0)
        return
    bf16 = ove.profile(path, info, inputs, precision="bf16", cores=2, iterations=2, warmup=1)
    assert bf16["inference_precision"] == "bf16" and bf16["precision"] == "bf16"
    assert {bf16["layer_precision"][c] for c in convs} == {"bf16"}
    assert all(bf16["kernels"][c].endswith("bf16") for c in convs)  # e.g. brgconv_avx512_1x1_bf16
    # bf16 changes the outputs a little, fp32 matches ONNX Runtime
    import onnxruntime as ort

    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    y32 = ove.make_runner(path, precision="fp32", cores=2, inputs=inputs)()[0]
    y16 = ove.make_runner(path, precision="bf16", cores=2, inputs=inputs)()[0]
    assert np.abs(y32 - ref).max() < 1e-4
    assert np.abs(y16 - ref).max() > np.abs(y32 - ref).max()


def test_precisions_the_cpu_lacks_are_refused(ove, corpus):
    from sparsify_tui.errors import EngineUnavailableError, UsageError

    path = str(corpus.path("mobilenetv3"))
    inputs = make_inputs(path, 1, corpus.input_shapes("mobilenetv3"))
    caps = ove.capabilities()
    if "FP16" not in caps:  # asked for f16 without it, OpenVINO would silently run bf16
        with pytest.raises(EngineUnavailableError, match="cannot run fp16 with openvino"):
            ove.make_runner(path, precision="fp16", inputs=inputs)
    with pytest.raises(UsageError, match="no QuantizeLinear/DequantizeLinear"):
        ove.make_runner(path, precision="int8", inputs=inputs)
    with pytest.raises(UsageError, match="--precision must be one of"):
        ove.make_runner(path, precision="int4", inputs=inputs)


def test_int8_runs_the_qdq_file_with_int8_kernels(ove, tmp_path):
    from sparsify_tui.actions.validate import quantize_file

    src = _small_cnn(tmp_path / "cnn.onnx")
    rng = np.random.default_rng(1)
    samples = [{"input": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)]
    assert quantize_file(src, tmp_path / "cnn_int8.onnx", samples)["format"] == "QDQ"
    for path, want in ((src, "f32"), (tmp_path / "cnn_int8.onnx", "I8")):
        info = load_model_info(str(path), {"input": [1, 3, 32, 32]})
        res = ove.profile(str(path), info, samples[0], precision="int8" if want == "I8" else "fp32", cores=1,
                          iterations=2, warmup=1)
        compute = [m.id for m in info.layers if m.op_type in COMPUTE]
        assert len(compute) == 3
        assert all(res["kernels"][c].endswith(want) for c in compute), res["kernels"]
        if want == "I8":
            assert all(res["layer_precision"][c] in ("u8", "i8") for c in compute)
            assert res["precision"] == "int8"


def test_runner_api(ove, corpus):
    from sparsify_tui.errors import EngineError

    path = str(corpus.path("minilm"))
    shapes = corpus.input_shapes("minilm")
    inputs = make_inputs(path, 1, shapes)
    run = ove.make_runner(path, precision="fp32", cores=1, batch_size=2, inputs=inputs)
    assert run.engine == "openvino" and run.engine_version == ove.version()
    assert run.batch_size == 2 and run.cores == 1 and run.inference_precision == "f32"
    assert sorted(run.input_names) == ["attention_mask", "input_ids"]
    outs = run()
    assert len(outs) == len(run.output_names) == 4 and all(o.shape[0] == 2 for o in outs)
    import onnxruntime as ort

    feed = {k: np.concatenate([v, v]) for k, v in inputs.items()}
    feed["input_ids"] = feed["input_ids"].copy()
    feed["input_ids"][1, :5] = 2000
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)
    got = run(feed)
    for a, b in zip(got, ref):  # same outputs, same order as ONNX Runtime's
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-4)
    assert not np.allclose(got[3][0], got[3][1])  # the second item's own data ran
    with pytest.raises(EngineError, match="compiled model takes"):
        run({k: v[:1] for k, v in feed.items()})


# ---------------------------------------------------------------- the commands
def test_profile_perf_cli_with_openvino(ove, corpus):
    path = corpus.path("mobilenetv3")
    args = ["profile", "perf", str(path), *corpus.input_shape_args("mobilenetv3"), "--engine", "openvino",
            "--iterations", "2", "--repeats", "1", "--warmup", "1", "--levels", "0,0.9"]
    r = _cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["engine"] == "openvino" and doc["precision"] == "fp32" and doc["inference_precision"] == "f32"
    assert doc["approximated"] is True and "0.9" in json.dumps(doc["model_ms_by_level"])
    rows = {x["id"]: x for x in doc["layers"]}
    convs = [x for x in doc["layers"] if x["op_type"] == "Conv"]
    assert convs and all(x["kernel"].startswith("brgconv") and x["runtime_precision"] == "f32" for x in convs)
    assert any(x["engine_internal"] and x["id"].startswith("engine:Reorder") and x.get("kernel")
               for x in rows.values())
    table = _cli(*args)
    assert table.returncode == 0, table.stderr
    kernel = convs[0]["kernel"]  # brgconv_avx512_f32, brgconv_avx2_f32...: whatever this CPU's ISA runs
    assert "Kernel" in table.stdout and kernel in table.stdout


def test_a_model_openvino_cannot_read_is_one_error_line(ove, tmp_path):
    model = _unreadable(tmp_path / "det.onnx")
    r = _cli("profile", "perf", str(model), "--engine", "openvino", "--iterations", "1", "--repeats", "1",
             "--levels", "0")
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: openvino could not read {model}: FrontEnd API failed with OpConversionFailure: "
                      "Model wasn't fully converted. No conversion rule found for operations: Det-17"]
    assert "Traceback" not in r.stderr
    # auto never picks openvino: the same model profiles with the engine auto chooses
    r = _cli("profile", "perf", str(model), "--iterations", "1", "--repeats", "1", "--levels", "0", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["engine"] in ("deepsparse", "onnxruntime")


def test_benchmark_cli_with_openvino(ove, tmp_path):
    model = _small_cnn(tmp_path / "cnn.onnx")
    precision = "bf16" if "BF16" in ove.capabilities() else "fp32"
    r = _cli("benchmark", str(model), "--engine", "openvino", "--precision", precision, "--iterations", "5",
             "--repeats", "2", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)["results"][0]
    assert res["engine"] == "openvino" and res["engine_version"] == ove.version()
    assert res["precision"] == precision and res["inference_precision"] == {"bf16": "bf16", "fp32": "f32"}[precision]
    assert res["median_ms"] > 0 and len(res["repeat_ms"]) == 2
    r = _cli("benchmark", str(model), "--engine", "openvino", "--iterations", "3", "--repeats", "1")
    assert r.returncode == 0 and "openvino " in r.stdout and " fp32" in r.stdout
    r = _cli("benchmark", str(model), "--engine", "onnxruntime", "--precision", "bf16")
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: --precision bf16 needs --engine openvino (onnxruntime runs fp32 on the CPU here)")


def test_ab_benchmark_job_with_openvino(ove, tmp_path):
    from sparsify_tui.engines.runner import run_job

    model = _small_cnn(tmp_path / "cnn.onnx")
    res = run_job({"kind": "ab_benchmark", "model_a": str(model), "model_b": str(model), "engine": "openvino",
                   "batch_size": 1, "iterations": 5, "warmup": 1, "repeats": 2, "min_block_ms": 0},
                  cores=1, timeout_s=300)
    assert res["engine"] == "openvino" and res["precision"] == "fp32"
    assert len(res["dense_repeat_ms"]) == len(res["pruned_repeat_ms"]) == 2
    assert res["output_change"] == 0.0  # the same file


# ---------------------------------------------------------------- machine and settings
def test_machine_reports_bf16_like_the_cpu_and_openvino(ove, tmp_path):
    from sparsify_tui.engines.machine import capability_line, has_bf16, machine_info, parse_cpuinfo

    m = machine_info()
    flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())["flags"] if Path("/proc/cpuinfo").exists() else set()
    assert m["bf16"] == ("avx512_bf16" in flags or "amx_bf16" in flags or "bf16" in flags)
    assert m["engines"]["openvino"] == ove.version()
    if m["arch"] in ("x86_64", "AMD64"):
        assert m["bf16"] == ("BF16" in ove.capabilities())  # what the CPU says = what OpenVINO offers
    line = capability_line(m)
    assert line == f"AMX: {'yes' if 'amx' in m['isa'] else 'no'}, bf16: {'yes' if m['bf16'] else 'no'}"
    assert has_bf16({"avx512f", "amx_bf16"}) and not has_bf16({"avx512f", "avx512_vnni"})
    assert capability_line({"isa": ["avx2"]}) == "AMX: no, bf16: no"
    r = _cli("info", str(_small_cnn(tmp_path / "cnn.onnx")))
    assert r.returncode == 0 and f"({line})" in r.stdout


def test_precision_settings_are_checked_everywhere():
    from sparsify_tui.commands.cluster import build_spec
    from sparsify_tui.errors import UsageError
    from sparsify_tui.profiles.perf import validate_precision
    from sparsify_tui.tui.screens.profile_dialog import parse_perf_settings

    assert validate_precision("onnxruntime", None) is None and validate_precision("openvino", None) == "fp32"
    assert validate_precision("deepsparse", "fp32") is None and validate_precision("auto", "int8") == "int8"
    with pytest.raises(UsageError, match="needs --engine openvino"):
        validate_precision("deepsparse", "bf16")
    s = parse_perf_settings("openvino", "1", "2", "10", "", 2, "int8")
    assert s["precision"] == "int8" and s["engine"] == "openvino"
    assert "precision" not in parse_perf_settings("onnxruntime", "1", "2", "10", "", 2)
    with pytest.raises(UsageError, match="needs --engine openvino"):
        parse_perf_settings("onnxruntime", "1", "2", "10", "", 2, "bf16")

    import argparse

    args = argparse.Namespace(kind="perf", engines="onnxruntime,openvino", batch_sizes="1", cores=None,
                              servers="all", levels=None, iterations=None, warmup=None, repeats=None,
                              precision="BF16")
    spec = build_spec(args)
    assert spec.precision == "bf16" and spec.engines == ["onnxruntime", "openvino"]
    from sparsify_tui.cluster.sweep import Job

    ov_job, ort_job = Job("perf", "a", 1, 2, "openvino"), Job("perf", "a", 1, 2, "onnxruntime")
    assert ov_job.settings(spec)["precision"] == "bf16" and ov_job.payload(spec, {})["precision"] == "bf16"
    assert "precision" not in ort_job.settings(spec) and "precision" not in ort_job.payload(spec, {})
    args.engines = "onnxruntime"
    with pytest.raises(UsageError, match="add openvino to --engines"):
        build_spec(args)
