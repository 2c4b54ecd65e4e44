"""Issue 16: ``--engine auto`` falls back to ONNX Runtime when DeepSparse crashes, in every command that
measures, and says why. The crash is real: DeepSparse 1.8 segfaults on the pruned CRNN of the corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import deepsparse_available

pytestmark = [pytest.mark.corpus, pytest.mark.skipif(not deepsparse_available(), reason="needs DeepSparse")]


def cli(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparsify_tui", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, NM_DISABLE_ANALYTICS="1"))


def test_perf_profile_and_benchmark_fall_back_when_deepsparse_crashes(tmp_path, corpus):
    shape = ",".join(str(x) for x in corpus.input_shapes("crnn")["input1"])
    d = tmp_path / "crnn"
    assert cli("new", corpus.path("crnn"), "--dir", d, "--input-shape", f"input1={shape}").returncode == 0
    assert cli("optimize", d, "--sparsity", "0.85", "--json").returncode == 0
    pruned = tmp_path / "pruned.onnx"
    assert cli("prune", d, "-o", pruned).returncode == 0
    fast = ("--input-shape", f"input1={shape}", "--iterations", "3", "--repeats", "1", "--json")
    perf = cli("profile", "perf", pruned, "--levels", "0", *fast)
    assert perf.returncode == 0, perf.stderr
    assert "Traceback" not in perf.stderr
    doc = json.loads(perf.stdout)
    assert doc["engine"] == "onnxruntime" and doc["baseline_ms"] > 0
    assert "deepsparse crashed" in doc["engine_reason"] and "Segmentation fault" in doc["engine_reason"]
    assert doc["quality"]["deployed_ms"] > 0  # the ORT profile is complete, quality included
    assert any("deepsparse crashed" in ln for ln in perf.stderr.splitlines() if ln.startswith("note:"))
    bench = cli("benchmark", pruned, *fast)
    assert bench.returncode == 0, bench.stderr
    res = json.loads(bench.stdout)["results"][0]
    assert res["engine"] == "onnxruntime" and res["median_ms"] > 0
    assert "deepsparse crashed" in res["engine_reason"] and "Segmentation fault" in res["engine_reason"]
    # asked for by name, DeepSparse's crash stays an error: one line, no traceback
    named = cli("benchmark", pruned, "--engine", "deepsparse", *fast)
    assert named.returncode == 2 and "Traceback" not in named.stderr
    assert named.stderr.strip().splitlines()[-1].startswith("error: ")
