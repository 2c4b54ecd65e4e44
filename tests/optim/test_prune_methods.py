"""``prune --method`` (issue 18): CLI contract, calibration/evaluation split, and trained corpus models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

PY = sys.executable


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "sparsify_tui", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def demo_project(tmp_path):
    from sparsify_tui.analysis.demo import build_demo_model

    model = build_demo_model(tmp_path / "demo.onnx")
    d = tmp_path / "demo"
    assert cli("new", str(model), "--dir", str(d)).returncode == 0
    p = cli("optimize", str(d), "--sparsity", "0.8", "--json")
    assert p.returncode == 0, p.stderr
    return d


def _write_samples(path, n, seed, shape=(1, 3, 64, 64)):
    rng = np.random.default_rng(seed)
    base = rng.random((n, shape[1], shape[2] // 8, shape[3] // 8))
    x = np.repeat(np.repeat(base, 8, axis=2), 8, axis=3).astype(np.float32)  # smooth, image-like
    np.savez(path, input=x)
    return path


def test_validate_json_reports_the_method_and_magnitude_at_the_same_plan(demo_project, tmp_path):
    out = tmp_path / "p.onnx"
    p = cli("prune", str(demo_project), "-o", str(out), "--method", "sparsegpt", "--samples", "16", "--validate",
            "--engine", "onnxruntime", "--iterations", "3", "--json")
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    for key in ("measured_speedup", "estimated_speedup", "output_change", "achieved_sparsity"):  # today's keys
        assert key in v
    assert v["method"] == "sparsegpt"
    assert v["calibration_samples"] == 16 and v["evaluation_samples"] == 8
    assert v["output_change"] < v["magnitude_output_change"] / 3, v
    assert any("synthetic" in n for n in v["notes"])
    assert "sparsegpt" in p.stderr  # progress per layer on stderr
    from sparsify_tui.analysis import analyze
    from sparsify_tui.actions.validate import load_plan
    from sparsify_tui.onnxkit.sparsity import pruned_count
    from sparsify_tui.optim.prune import layer_sparsities
    from sparsify_tui.project import Project

    project = Project.open(demo_project, readonly=True)
    graph, opt, _ = load_plan(project)
    project.close()
    plan = opt.layer_sparsities()
    got = layer_sparsities(onnx.load(str(out)), analyze(str(out)))
    for lay in graph.prunable_layers:
        assert round(got[lay.id] * lay.prunable_params) == pruned_count(lay.prunable_params, plan.get(lay.id, 0))


def test_data_is_split_and_overlap_is_refused(demo_project, tmp_path):
    data = _write_samples(tmp_path / "calib.npz", 12, 0)
    p = cli("prune", str(demo_project), "-o", str(tmp_path / "p.onnx"), "--method", "wanda", "--data", str(data),
            "--validate", "--engine", "onnxruntime", "--iterations", "3", "--json")
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    assert v["calibration_samples"] == 9 and v["evaluation_samples"] == 3
    assert any("9 for calibration and the last 3 for evaluation" in n for n in v["notes"])
    assert v["output_change"] < v["magnitude_output_change"]
    # the same file as evaluation data: every evaluation sample is a calibration sample
    p = cli("prune", str(demo_project), "-o", str(tmp_path / "q.onnx"), "--method", "sparsegpt", "--data",
            str(data), "--eval-data", str(data), "--validate", "--engine", "onnxruntime", "--json")
    assert p.returncode == 2
    assert p.stderr.startswith("error: ") and "also calibration samples" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "q.onnx").exists()
    ev = _write_samples(tmp_path / "eval.npz", 4, 1)
    p = cli("prune", str(demo_project), "-o", str(tmp_path / "q.onnx"), "--method", "sparsegpt", "--data",
            str(data), "--samples", "5", "--eval-data", str(ev), "--validate", "--engine", "onnxruntime",
            "--iterations", "3", "--json")
    assert p.returncode == 0, p.stderr
    v = json.loads(p.stdout)
    assert v["calibration_samples"] == 5 and v["evaluation_samples"] == 4


def test_prune_without_validate_and_bad_flags(demo_project, tmp_path):
    out = tmp_path / "p.onnx"
    p = cli("prune", str(demo_project), "-o", str(out), "--method", "wanda", "--samples", "4", "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["method"] == "wanda" and info["calibration_samples"] == 4 and out.exists()
    p = cli("prune", str(demo_project), "-o", str(out), "--method", "obs")
    assert p.returncode == 2 and p.stderr.startswith("error: --method must be one of magnitude, wanda, sparsegpt")
    p = cli("prune", str(demo_project), "-o", str(out), "--sequential")
    assert p.returncode == 2 and "--sequential needs" in p.stderr


# ---------------------------------------------------------------- trained corpus models
def _corpus_case(corpus, key, n_cal=16, n_eval=8):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    from benchmarks.bench_prune_methods import make_samples

    path = str(corpus.path(key))
    samples = make_samples(path, n_cal + n_eval, seed=0)
    return path, samples[:n_cal], samples[n_cal:]


@pytest.mark.slow
@pytest.mark.parametrize("key", ["yolov8n", "minilm"])
def test_trained_models_keep_their_outputs(corpus, key):
    """Equal per-layer plans of 0.7 and 0.85 on a trained detector and the MiniLM encoder: SparseGPT's
    output change on evaluation samples (never used for calibration) is at most a third of magnitude's,
    Wanda's is below magnitude's (the benchmark prints 0.5 too; the suite keeps to the two plans where the
    third is required, to stay short). Inputs: 1/f-noise images and Zipf-distributed token ids
    (see benchmarks/bench_prune_methods.py)."""
    from benchmarks.bench_prune_methods import change, outputs

    from sparsify_tui.analysis import analyze
    from sparsify_tui.optim.calibrated import prune_model_calibrated
    from sparsify_tui.onnxkit.sparsity import pruned_count
    from sparsify_tui.optim.prune import layer_sparsities

    path, cal, ev = _corpus_case(corpus, key)
    graph = analyze(path)
    dense = outputs(path, ev)
    for s in (0.7, 0.85):
        plan = {lay.id: s for lay in graph.prunable_layers}
        res = {}
        for method in ("magnitude", "wanda", "sparsegpt"):
            model, _ = prune_model_calibrated(path, plan, graph=graph, method=method, samples=cal)
            res[method] = change(dense, outputs(model, ev))
            if method == "sparsegpt":
                got = layer_sparsities(model, graph)
                assert all(round(got[lay.id] * lay.prunable_params) == pruned_count(lay.prunable_params, s)
                           for lay in graph.prunable_layers)
        print(key, s, res)
        assert res["wanda"] < res["magnitude"], (s, res)
        if s >= 0.7:
            assert res["sparsegpt"] <= res["magnitude"] / 3, (s, res)


def test_loss_profile_measures_with_the_pruning_method(tmp_path):
    """``profile loss --method one-shot --prune-method sparsegpt``: each layer alone pruned by SparseGPT
    moves the outputs less than by magnitude, level 0 stays exactly 0, and the two are cached apart."""
    from sparsify_tui.analysis.demo import build_demo_model

    model = build_demo_model(tmp_path / "demo.onnx")
    docs = {}
    for m in ("sparsegpt", "magnitude"):
        p = cli("profile", "loss", str(model), "--method", "one-shot", "--prune-method", m, "--levels", "0.5,0.9",
                "--json")
        assert p.returncode == 0, p.stderr
        docs[m] = json.loads(p.stdout)
    s, g = docs["sparsegpt"], docs["magnitude"]
    assert s["prune_method"] == "sparsegpt" and s["calibration_samples"] == 32 and s["magnitude_layers"] == {}
    assert g["prune_method"] == "magnitude"
    better = 0
    for a, b in zip(s["layers"], g["layers"]):
        assert a["sensitivity_by_level"]["0.0"] == 0.0
        better += a["sensitivity_by_level"]["0.5"] < b["sensitivity_by_level"]["0.5"]
    assert better == len(s["layers"]), (s["layers"], g["layers"])
    p = cli("profile", "loss", str(model), "--method", "approx", "--prune-method", "wanda")
    assert p.returncode == 2 and "only used by --method one-shot" in p.stderr


def test_ctrl_c_leaves_no_partial_output(demo_project, tmp_path):
    import time

    from tests.conftest import interruptible_popen, send_sigint

    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "p.onnx"
    proc = interruptible_popen([PY, "-m", "sparsify_tui", "prune", str(demo_project), "-o", str(out), "--method",
                             "sparsegpt", "--sequential", "--samples", "8"], stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.monotonic() + 300
    first = "sparsegpt layer1.0.conv1"  # the first layer the default plan prunes (the stem is left dense)
    while first not in seen and time.monotonic() < deadline:  # the first layer is done
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert first in seen, seen
    send_sigint(proc)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    assert list(outdir.iterdir()) == []
