"""``sparsify-tui optimize`` and ``export`` on a real project made from a corpus model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from sparsify_tui.cli import main
from sparsify_tui.optim.optimization import Optimization
from sparsify_tui.optim.recipe import load_recipe_yaml
from sparsify_tui.project import Project

MODEL = "mobilenetv3"


@pytest.fixture(scope="module")
def base_project(corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("optim") / "proj"
    args = ["new", str(corpus.path(MODEL)), "--dir", str(d)] + corpus.input_shape_args(MODEL)
    assert main(args) == 0
    return d


@pytest.fixture()
def project(base_project, tmp_path):
    d = tmp_path / "proj"
    shutil.copytree(base_project, d)
    return d


def run_json(capsys, *args) -> dict:
    capsys.readouterr()
    rc = main(list(args) + ["--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def run_err(capsys, *args) -> str:
    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    assert rc == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.err
    return lines[0]


def test_optimize_creates_and_stores_an_optimization(project, capsys):
    d = run_json(capsys, "optimize", str(project))
    for key in ("name", "target_sparsity", "achieved_sparsity", "balance", "estimated_speedup", "estimated_ms",
                "baseline_ms", "flops_before", "flops_after", "params_before", "params_after",
                "recovery_confidence", "approximated", "layers"):
        assert key in d
    assert d["name"] == "default" and d["target_sparsity"] == 0.85
    assert abs(d["achieved_sparsity"] - 0.85) <= 0.005 * 0.85
    assert d["approximated"] is True and d["perf_basis"] == "approximated"
    assert d["estimated_ms"] < d["baseline_ms"] and d["estimated_speedup"] > 1
    assert d["flops_after"] < d["flops_before"] and d["params_after"] < d["params_before"]
    assert 0 <= d["recovery_confidence"] <= 1
    lay = d["layers"][0]
    for key in ("id", "name", "sparsity", "excluded_reason", "est_speedup", "loss_sensitivity", "perf_sensitivity"):
        assert key in lay
    assert all(0 <= x["sparsity"] <= 0.95 for x in d["layers"])
    with Project.open(project, readonly=True) as p:
        opt = Optimization.from_dict(p.get_optimization("default"))
    assert {k: v.sparsity for k, v in opt.layers.items()} == {x["id"]: x["sparsity"] for x in d["layers"]}


def test_optimize_flags_update_and_balance_moves_the_right_way(project, capsys):
    ids = [x["id"] for x in run_json(capsys, "optimize", str(project))["layers"]]
    perf = run_json(capsys, "optimize", str(project), "--sparsity", "0.6", "--balance", "0")
    rec = run_json(capsys, "optimize", str(project), "--balance", "1")
    assert rec["target_sparsity"] == 0.6  # kept from the previous call
    assert perf["estimated_speedup"] >= rec["estimated_speedup"]
    assert perf["loss_sensitivity"] >= rec["loss_sensitivity"]
    d = run_json(capsys, "optimize", str(project), "--override", f"{ids[1]}=0.33", "--exclude", ids[2],
                 "--min-sparsity", "0.2", "--max-sparsity", "0.9", "--epochs", "20", "--quantize")
    by = {x["id"]: x for x in d["layers"]}
    assert by[ids[1]]["sparsity"] == 0.33 and by[ids[1]]["overridden"]
    assert by[ids[2]]["sparsity"] == 0.0 and by[ids[2]]["excluded_reason"] == "excluded by user"
    assert all(x["sparsity"] == 0 or x["sparsity"] >= 0.2 or x["overridden"] for x in d["layers"])
    assert all(x["sparsity"] <= 0.9 or x["overridden"] for x in d["layers"])
    assert d["epochs"] == 20 and d["quantization"]["enabled"]


def test_copy_makes_a_new_version(project, capsys):
    run_json(capsys, "optimize", str(project), "--sparsity", "0.5")
    d = run_json(capsys, "optimize", str(project), "--copy", "v2", "--sparsity", "0.7")
    assert d["name"] == "v2" and d["target_sparsity"] == 0.7
    with Project.open(project, readonly=True) as p:
        assert [o["name"] for o in p.optimizations] == ["default", "v2"]
        assert p.get_optimization("default")["pruning"]["target_sparsity"] == 0.5
    assert "already has" in run_err(capsys, "optimize", str(project), "--copy", "v2")


@pytest.mark.parametrize("flags, message", [
    (["--sparsity", "1.5"], "--sparsity must be below 1"),
    (["--balance", "2"], "--balance must be at most 1"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--override", "nope"], "--override must be LAYER=SPARSITY"),
    (["--override", "nope=0.5"], "'nope' is not in the model"),
    (["--min-recovery", "x"], "--min-recovery must be a number"),
])
def test_bad_optimize_flags(project, capsys, flags, message):
    assert message in run_err(capsys, "optimize", str(project), *flags)


def test_optimize_needs_a_project(corpus, capsys, tmp_path):
    assert "need a project directory" in run_err(capsys, "optimize", str(corpus.path(MODEL)))
    assert "not a sparsify-tui project" in run_err(capsys, "optimize", str(tmp_path))


def test_export_recipe_code_and_import_back(project, capsys, tmp_path):
    assert "no optimization yet" in run_err(capsys, "export", str(project))
    run_json(capsys, "optimize", str(project), "--sparsity", "0.8", "--quantize")
    recipe, code = tmp_path / "recipe.yaml", tmp_path / "train.py"
    d = run_json(capsys, "export", str(project), "--recipe", str(recipe), "--code", str(code),
                 "--framework", "pytorch", "--code-type", "training")
    assert d["recipe_path"] == str(recipe) and recipe.read_text() == d["recipe"]
    compile(code.read_text(), str(code), "exec")
    assert str(recipe) in code.read_text()
    doc = load_recipe_yaml(recipe.read_text())
    tags = [m["__tag__"] for m in doc["modifiers"]]
    assert "EpochRangeModifier" in tags and "QuantizationModifier" in tags and 1 <= tags.count("GMPruningModifier") <= 6
    assert yaml.compose(recipe.read_text()) is not None
    # plain stdout export is the recipe itself
    capsys.readouterr()
    assert main(["export", str(project)]) == 0
    assert capsys.readouterr().out == recipe.read_text()
    # import it back under a new name: the same optimization
    back = run_json(capsys, "export", str(project), "--import", str(recipe), "--optimization", "imported")
    assert back["name"] == "imported"
    with Project.open(project, readonly=True) as p:
        a = p.get_optimization("default")
        b = p.get_optimization("imported")
    for k in ("pruning", "lr_modifiers", "quantization", "layers", "epochs"):
        assert a[k] == b[k]


def test_export_with_name_map(project, capsys, tmp_path):
    d = run_json(capsys, "optimize", str(project))
    from sparsify_tui.analysis import analyze

    with Project.open(project, readonly=True) as p:
        g = analyze(p.model_path, p.input_shapes)
    weights = [lay.weight_name for lay in g.prunable_layers]
    nmap = tmp_path / "map.csv"
    nmap.write_text("onnx_name,framework_name\n" + "".join(f"{w},fw.{i}.weight\n" for i, w in enumerate(weights)))
    out = run_json(capsys, "export", str(project), "--name-map", str(nmap))
    # (the first layers are the stem and a tiny depthwise conv, left dense by the edge filter)
    assert any(f"fw.{i}.weight" in out["recipe"] for i in range(len(weights)))
    assert not any(f"'{w}'" in out["recipe"] for w in weights if w)
    assert out["warnings"] == []
    assert d["layers"]


def test_bad_export_flags(project, capsys, tmp_path):
    run_json(capsys, "optimize", str(project))
    assert "--framework must be one of" in run_err(capsys, "export", str(project), "--framework", "jax")
    assert "no optimization 'zzz'" in run_err(capsys, "export", str(project), "--optimization", "zzz")
    assert "does not exist" in run_err(capsys, "export", str(project), "--name-map", str(tmp_path / "none.json"))
    assert "does not exist" in run_err(capsys, "export", str(project), "--import", str(tmp_path / "none.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage_a:\n  modifiers:\n    - !GMPruningModifier\n      final_sparsity: 0.5\n")
    assert "staged recipes are not supported" in run_err(capsys, "export", str(project), "--import", str(bad))


def test_optimize_uses_a_measured_perf_profile(project, capsys):
    """A real (ONNX Runtime, few iterations) perf profile replaces the FLOPs approximation."""
    prof = run_json(capsys, "profile", "perf", str(project), "--engine", "onnxruntime", "--iterations", "2",
                    "--warmup", "1", "--repeats", "1")
    d = run_json(capsys, "optimize", str(project))
    assert d["profiles"]["perf"] == prof["profile_id"]
    # the estimate's scale is the model's time in the engine as deployed (issue 16)
    assert d["baseline_ms"] == pytest.approx(prof["quality"]["deployed_ms"])
    assert d["estimated_ms"] < d["baseline_ms"]
    assert all("perf profile with a warning" in n for n in d["notes"] if "warning" in n)
    assert len([n for n in d["notes"] if "perf profile with a warning" in n]) == len(prof["quality"]["warnings"])


def test_cli_subprocess_prints_one_json_document(project):
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1")
    r = subprocess.run([sys.executable, "-m", "sparsify_tui", "optimize", str(project), "--json", "--sparsity", "0.5"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["target_sparsity"] == 0.5
    r = subprocess.run([sys.executable, "-m", "sparsify_tui", "optimize", str(project), "--balance", "-1"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("error: --balance")


def test_a_hand_broken_optimization_is_one_sentence(project, capsys):
    run_json(capsys, "optimize", str(project))
    f = project / "optimizations" / "default.json"
    d = json.loads(f.read_text())
    d["pruning"]["balance"] = "lots"
    f.write_text(json.dumps(d))
    msg = run_err(capsys, "optimize", str(project))
    assert "optimization 'default'" in msg and "pruning.balance must be a number" in msg
    assert "cannot be read" in run_err(capsys, "export", str(project))
