"""Ctrl+C during the deployment search: the finished rounds are stored, no temporary file is left."""

from __future__ import annotations

import json

from tests.conftest import interrupt_cli_when
from tests.deploy.test_deploy_cli import _identity_model, _project
from tests.reliability.helpers import cli_env


def test_ctrl_c_keeps_finished_rounds_and_leaves_no_files(tmp_path):
    model = _identity_model(tmp_path / "ident.onnx")
    pdir = _project(tmp_path, model, "--input-shape", "x=1,2,2")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    returncode, err = interrupt_cli_when(["deploy", str(pdir), "--repeats", "50", "--engines", "onnxruntime,openvino"],
                                         "round 2/50", env=cli_env(TMPDIR=str(scratch)))
    assert returncode == 130, err[-2000:]
    assert "error: interrupted" in err and "Traceback" not in err
    toml = (pdir / "project.toml").read_text()
    assert 'kind = "deploy"' in toml
    doc = json.loads(next((pdir / "profiles").glob("deploy-*.json")).read_text())
    assert doc["complete"] is False and doc["error"] == "interrupted"
    assert doc["rounds"] >= 2 and doc["rows"] and doc["reference"]["speedup"] == 1.0
    assert all(len(r["block_ms"]) == doc["rounds"] for r in doc["rows"])
    assert list(scratch.iterdir()) == []  # the pruned/quantized files and inputs went with the search
    assert not [p for p in pdir.rglob("*") if p.name.startswith((".sparsify", "sparsify-deploy"))]
