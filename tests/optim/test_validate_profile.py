"""``prune --validate`` uses the optimizer's perf profile and its cores, or says which one and why
(issue #19 item 4); ``--cores`` chooses the cores and the result reports them."""

from __future__ import annotations

import json
import subprocess
import sys

PY = sys.executable


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "sparsify_tui", *args], capture_output=True, text=True, timeout=timeout)


def test_validation_uses_the_optimizers_profile_and_reports_cores(tmp_path):
    from sparsify_tui.analysis.demo import build_demo_model

    model = build_demo_model(tmp_path / "demo.onnx")
    d = tmp_path / "demo"
    assert cli("new", str(model), "--dir", str(d)).returncode == 0
    p = cli("profile", "perf", str(d), "--engine", "onnxruntime", "--cores", "1", "--iterations", "5",
            "--levels", "0,0.8,0.9", "--json")
    assert p.returncode == 0, p.stderr
    prof = json.loads(p.stdout)
    assert cli("optimize", str(d), "--sparsity", "0.8", "--json").returncode == 0
    p = cli("prune", str(d), "-o", str(tmp_path / "p.onnx"), "--validate", "--engine", "onnxruntime",
            "--iterations", "5", "--json")
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    from sparsify_tui.project import Project

    project = Project.open(d, readonly=True)
    used = project.get_optimization(v["optimization"])
    entry = next(e for e in project.profiles_of("perf") if e.id == v["estimate_profile"])
    project.close()
    assert v["optimizer_profile"] == v["estimate_profile"] == used.get("perf_profile_id", v["estimate_profile"])
    assert v["cores"] == 1 and "optimizer" in v["cores_reason"]  # the profile's cores, not all cores
    assert v["estimate_profile_name"] == entry.name
    assert not any("not the optimizer's" in n for n in v["notes"])
    # --cores 2 on this 2-core machine: another profile is measured, and the notes say why
    p = cli("prune", str(d), "-o", str(tmp_path / "p.onnx"), "--validate", "--engine", "onnxruntime",
            "--iterations", "5", "--cores", "2", "--json")
    assert p.returncode == 0, p.stderr
    w = json.loads(p.stdout)
    assert w["cores"] == 2 and w["cores_reason"] == "requested with --cores"
    assert w["estimate_profile"] != v["estimate_profile"]
    assert any("not the optimizer's" in n and "1 cores there, 2 here" in n for n in w["notes"]), w["notes"]
    del prof
