"""``sparsify-tui info`` as a real process: bad input exits 2 with one ``error:`` line, --json works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from sparsify_tui.analysis.demo import build_demo_model


def run_info(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1")
    return subprocess.run([sys.executable, "-m", "sparsify_tui", "info", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def small_model(opset: int = 13, extra_nodes=(), inputs=None, outputs=None) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])] + list(extra_nodes)
    g = helper.make_graph(nodes, "g", inputs or [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 4, 4])],
                          outputs or [helper.make_tensor_value_info("y", T.FLOAT, None)], initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, a word the error sentence must contain)."""
    cases: dict[str, tuple[Path, str]] = {}
    cases["missing"] = (tmp_path / "nope.onnx", "does not exist")
    d = tmp_path / "adir.onnx"
    d.mkdir()
    cases["directory"] = (d, "directory")
    e = tmp_path / "empty.onnx"
    e.write_bytes(b"")
    cases["empty"] = (e, "empty")
    good = small_model().SerializeToString()
    t = tmp_path / "truncated.onnx"
    t.write_bytes(good[: len(good) * 2 // 3])
    cases["truncated"] = (t, "truncated")
    r = tmp_path / "random.onnx"
    r.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    cases["random bytes"] = (r, "not an ONNX model")
    img = tmp_path / "photo.onnx"
    img.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    cases["image"] = (img, "PNG image")
    # external data file missing
    m = small_model()
    ext = tmp_path / "ext.onnx"
    onnx.save(m, str(ext), save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    cases["external data missing"] = (ext, "weights.bin")
    # shape inference fails: Add of [1,4,4,4] and [1,3]
    bad = small_model(extra_nodes=[helper.make_node("Add", ["y", "z"], ["s"])],
                      inputs=[helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 4, 4]),
                              helper.make_tensor_value_info("z", T.FLOAT, [1, 3])],
                      outputs=[helper.make_tensor_value_info("s", T.FLOAT, None)])
    si = tmp_path / "inconsistent.onnx"
    si.write_bytes(bad.SerializeToString())
    cases["shape inference"] = (si, "shape inference")
    # an opset newer than the installed onnx knows
    newer = onnx.defs.onnx_opset_version() + 1
    no = tmp_path / "future.onnx"
    no.write_bytes(small_model(opset=newer).SerializeToString())
    cases["opset too new"] = (no, f"opset {newer}")
    return cases


def test_bad_inputs_exit_2_with_one_error_line(tmp_path):
    cases = _bad_inputs(tmp_path)
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1")
    procs = {label: subprocess.Popen([sys.executable, "-m", "sparsify_tui", "info", str(path)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for label, (path, _) in cases.items()}
    for label, (path, word) in cases.items():
        out, err = procs[label].communicate(timeout=120)
        proc = subprocess.CompletedProcess([], procs[label].returncode, out, err)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (label, proc.returncode, proc.stderr)
        assert len(lines) == 1, (label, proc.stderr)
        assert lines[0].startswith("error: "), (label, lines)
        assert str(path) in lines[0], (label, lines[0])
        assert word in lines[0], (label, lines[0])
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""


def test_malformed_input_shape_flag(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(small_model().SerializeToString())
    for arg in ("x=1,3,a,4", "x"):
        proc = run_info(str(p), "--input-shape", arg)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: --input-shape")
        assert arg in lines[0] and "Traceback" not in proc.stderr
    proc = run_info(str(p), "--input-shape", "nope=1,3,4,4")
    assert proc.returncode == 2 and "nope" in proc.stderr and str(p) in proc.stderr


def test_info_json_on_demo_and_human_output(tmp_path):
    p = build_demo_model(tmp_path / "demo.onnx")
    proc = run_info(str(p), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"model", "layers", "machine"}
    model = doc["model"]
    assert model["prunable_layers"] == 12 and model["params"] > 1_000_000
    assert model["flops"] == sum(layer["flops"] for layer in doc["layers"])
    conv = next(layer for layer in doc["layers"] if layer["id"] == "layer1.0.conv1")
    for key in ("id", "name", "op_type", "depth", "params", "prunable", "flops", "weight_shape", "input_shapes",
                "output_shapes", "attributes", "sparsity"):
        assert key in conv
    assert conv["weight_shape"] == [64, 64, 3, 3] and conv["attributes"]["kernel_shape"] == [3, 3]
    assert conv["flops"] == 2 * 64 * 32 * 32 * 64 * 9 + 64 * 32 * 32
    assert doc["machine"]["logical_cores"] >= 1 and "onnxruntime" in doc["machine"]["engines"]

    proc = run_info(str(p))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("Params", "FLOPs", "opset 13", "layer2.0.downsample", "k=3,3", "Machine", "Cores", "Engines"):
        assert word in out, word


def test_info_on_project_directory(tmp_path):
    pytest.importorskip("sparsify_tui.project")
    from sparsify_tui.project import Project

    p = build_demo_model(tmp_path / "demo.onnx")
    proj = Project.create(p, dir=tmp_path / "proj", name="demo")
    proj.close()
    proc = run_info(str(tmp_path / "proj"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"]["prunable_layers"] == 12


def test_human_table_lists_200_layers_unless_all(tmp_path):
    import io

    from sparsify_tui.analysis import analyze
    from sparsify_tui.commands.info import print_human
    from sparsify_tui.engines.machine import machine_info

    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"relu{i}") for i in range(250)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("t0", T.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("t250", T.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    p = tmp_path / "chain.onnx"
    onnx.save(m, str(p))
    graph = analyze(p)
    out = io.StringIO()
    print_human(graph, machine_info(), show_all=False, out=out)
    text = out.getvalue()
    assert "relu199" in text and "relu200" not in text and "50 more layers (use --all" in text
    assert "No prunable layer" in text
    out = io.StringIO()
    print_human(graph, machine_info(), show_all=True, out=out)
    assert "relu249" in out.getvalue() and "more layers" not in out.getvalue()


def test_info_does_not_import_engines(tmp_path):
    """Start-up budget of `info --json` (0.6 s): onnxruntime, deepsparse and textual stay unimported."""
    p = build_demo_model(tmp_path / "demo.onnx")
    code = (
        "import io, sys, contextlib\n"
        "from sparsify_tui.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main(['info', '--json', {str(p)!r}])\n"
        "print(rc, sorted(m for m in ('onnxruntime', 'deepsparse', 'textual', 'sparsify_tui.project') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, NM_DISABLE_ANALYTICS="1"))
    assert out.stdout.strip() == "0 []", out.stderr
