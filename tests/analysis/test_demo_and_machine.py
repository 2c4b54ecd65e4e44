"""The demo model runs in ONNX Runtime and is deterministic; machine_info reads this machine."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from sparsify_tui.analysis import analyze, read_weight
from sparsify_tui.analysis.demo import INPUT_SHAPE, build_demo_model
from sparsify_tui.engines import machine


def test_demo_model_runs_in_onnxruntime_and_is_deterministic(tmp_path):
    import onnxruntime as ort

    a = build_demo_model(tmp_path / "a.onnx")
    b = build_demo_model(tmp_path / "sub" / "b.onnx")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    sess = ort.InferenceSession(str(a), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(INPUT_SHAPE).astype(np.float32)
    (y,) = sess.run(None, {"input": x})
    assert y.shape == (1, 10) and np.all(np.isfinite(y)) and float(np.std(y)) > 0

    g = analyze(a)
    names = [lay.name for lay in g.prunable_layers]
    assert names[0] == "stem.conv" and "layer1.0.conv1" in names and names[-1] == "fc"
    assert len(names) == 12  # 11 convs + the fc Gemm
    assert {lay.op_type for lay in g.layers} >= {"Conv", "Relu", "Add", "GlobalAveragePool", "Gemm"}
    assert g.sparsity == 0.0 and g.flops is not None
    # read_weight gives what ORT computes with: the stem conv by hand equals ORT's intermediate output
    import onnx

    stem = g.layer("stem.conv")
    w = read_weight(g, stem)
    assert w.shape == (64, 3, 3, 3) and stem.output_shapes == [[1, 64, 32, 32]]
    m = onnx.load(str(a))
    m.graph.output.append(onnx.helper.make_tensor_value_info("stem.conv", onnx.TensorProto.FLOAT, None))
    (_, conv_out) = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})
    bias = next(onnx.numpy_helper.to_array(t) for t in m.graph.initializer if t.name == stem.bias_name)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack([xp[0, :, i:i + 64:2, j:j + 64:2] for i in range(3) for j in range(3)], axis=1)  # c,k,h,w
    ref = np.einsum("ock,ckhw->ohw", w.reshape(64, 3, 9), patches) + bias[:, None, None]
    np.testing.assert_allclose(conv_out[0], ref, rtol=1e-4, atol=1e-4)


def test_cpuinfo_parsing_x86_and_arm():
    text = (
        "processor\t: 0\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t: 0\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_vnni amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t: 0\n"
        "flags\t\t: fpu sse avx2 avx512f avx512_vnni amx_tile\n\n"
    )
    info = machine.parse_cpuinfo(text)
    assert info["cpu_model"] == "Test CPU" and info["logical_cores"] == 2 and info["physical_cores"] == 1
    assert machine.isa_from_flags(info["flags"], "x86_64") == ["avx2", "avx512", "avx512_vnni", "amx", "vnni"]
    assert machine.isa_from_flags({"fp", "asimd", "sve"}, "aarch64") == ["neon", "sve"]
    assert machine.isa_from_flags({"sse2"}, "x86_64") == []


def test_machine_info_on_this_machine():
    info = machine.machine_info()
    assert info is machine.machine_info()  # cached
    assert info["usable_cores"] == len(os.sched_getaffinity(0))
    assert 1 <= info["physical_cores"] <= info["logical_cores"]
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
    assert ("avx2" in info["isa"]) == ("avx2" in flags)
    assert ("avx512" in info["isa"]) == ("avx512f" in flags)
    assert ("amx" in info["isa"]) == ("amx_tile" in flags)
    import onnxruntime

    assert info["engines"]["onnxruntime"] == onnxruntime.__version__
    assert "onnxruntime" in machine.installed_engines()
    assert len(info["fingerprint"]) == 12
    assert info["fingerprint"] == machine.fingerprint_of(info["cpu_model"], info["isa"], info["physical_cores"],
                                                         info["logical_cores"], info["usable_cores"])


def test_machine_info_does_not_import_deepsparse():
    import subprocess
    import sys

    code = ("import sys; from sparsify_tui.engines.machine import machine_info; machine_info(); "
            "print('deepsparse' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
