"""``benchmark`` of a project's model uses the input shape stored in the project (issue #19)."""

from __future__ import annotations

import json
import subprocess
import sys


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparsify_tui", *args], capture_output=True, text=True, timeout=600)


def test_benchmark_of_a_project_model_uses_its_stored_input_shape(tmp_path, corpus):
    d = tmp_path / "mnv3"
    p = cli("new", str(corpus.path("mobilenetv3")), "--dir", str(d), *corpus.input_shape_args("mobilenetv3"))
    assert p.returncode == 0, p.stderr
    fast = ("--engine", "onnxruntime", "--iterations", "2", "--warmup", "1", "--repeats", "1", "--json")
    bare = cli("benchmark", str(corpus.path("mobilenetv3")), *fast)  # the bare file has a dynamic input
    assert bare.returncode == 2 and "--input-shape" in bare.stderr
    for target in (d / "model.onnx", d):
        p = cli("benchmark", str(target), *fast)
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        rows = doc["results"] if isinstance(doc, dict) else doc
        assert rows[0]["median_ms"] > 0
