"""``prune --validate``: the engine reason says how the engine was chosen (issue #19 item 6)."""

from __future__ import annotations

import json
import subprocess
import sys

PY = sys.executable


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "sparsify_tui", *args], capture_output=True, text=True, timeout=timeout)


def test_validate_without_engine_does_not_claim_one_was_requested(tmp_path):
    from sparsify_tui.analysis.demo import build_demo_model

    model = build_demo_model(tmp_path / "demo.onnx")
    d = tmp_path / "demo"
    assert cli("new", str(model), "--dir", str(d)).returncode == 0
    assert cli("optimize", str(d), "--sparsity", "0.8", "--json").returncode == 0
    p = cli("prune", str(d), "-o", str(tmp_path / "p.onnx"), "--validate", "--iterations", "5", "--json")
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    assert "requested with --engine" not in v["engine_reason"], v["engine_reason"]
    assert v["engine_reason"].startswith("no engine given (auto)"), v["engine_reason"]
    p = cli("prune", str(d), "-o", str(tmp_path / "p.onnx"), "--validate", "--engine", "onnxruntime",
            "--iterations", "5", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["engine_reason"] == "requested with --engine onnxruntime"
