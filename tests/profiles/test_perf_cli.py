"""``sparsify-tui profile perf``, ``compare`` and ``benchmark`` from the command line."""

from __future__ import annotations

import json

import pytest

from sparsify_tui.cli import main
from sparsify_tui.settings import level_key


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    from sparsify_tui.analysis.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("m") / "demo.onnx")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flags, message", [
    (["--levels", "0,1.0"], "--levels must be below 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--cores", "999"], "--cores must be at most"),
    (["--iterations", "x"], "--iterations must be a whole number"),
    (["--engine", "tensorrt"], "--engine must be one of auto, deepsparse, onnxruntime"),
    (["--data", "/nonexistent.npz"], "no such data file"),
    (["--input-shape", "nope=1,2"], "no input named 'nope'"),
])
def test_bad_flags_are_one_line_errors(capsys, demo_model, flags, message):
    code, out, err = _run(capsys, "profile", "perf", demo_model, *flags)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_and_non_onnx_files(capsys, tmp_path):
    code, _, err = _run(capsys, "profile", "perf", tmp_path / "missing.onnx")
    assert code == 2 and "missing.onnx" in err
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    code, _, err = _run(capsys, "profile", "perf", bad, "--engine", "onnxruntime")
    assert code == 2 and "bad.onnx" in err and "Traceback" not in err


def test_project_profile_is_stored_then_reused_and_compared(capsys, tmp_path, demo_model):
    proj = tmp_path / "proj"
    code, _, err = _run(capsys, "new", demo_model, "--dir", proj)
    assert code == 0, err
    flags = ["--engine", "onnxruntime", "--levels", "0,0.9", "--iterations", "2", "--warmup", "1", "--repeats", "2"]
    code, out, err = _run(capsys, "profile", "perf", proj, *flags, "--json")
    assert code == 0, err
    doc = json.loads(out)  # exactly one JSON document on stdout
    assert doc["engine"] == "onnxruntime" and doc["approximated"] is True
    assert set(doc["model_ms_by_level"]) == {level_key(0), level_key(0.9)}
    assert "stored profile" in err and "profile perf [" in err  # progress on stderr
    pid = doc["profile_id"]
    code, out2, err = _run(capsys, "profile", "perf", proj, *flags, "--json")
    assert code == 0 and f"reused cached profile {pid}" in err
    assert json.loads(out2)["created"] == doc["created"]
    code, out3, err = _run(capsys, "profile", "perf", proj, *flags, "--json", "--force")
    assert code == 0 and "reused" not in err
    # a different setting is a different profile
    code, out4, err = _run(capsys, "profile", "perf", proj, *flags[:-2], "--repeats", "1", "--json")
    other = json.loads(out4)["profile_id"]
    assert other != pid

    code, out, err = _run(capsys, "compare", f"{proj}:{json.loads(out3)['profile_id']}", f"{proj}:{other}", "--json")
    assert code == 0, err
    cmp = json.loads(out)
    assert cmp["layers"] and {"id", "name", "a_ms", "b_ms", "diff_ms", "ratio"} <= set(cmp["layers"][0])
    row = next(r for r in cmp["layers"] if r["a_ms"] and r["b_ms"])
    assert row["diff_ms"] == pytest.approx(row["b_ms"] - row["a_ms"])
    assert row["ratio"] == pytest.approx(row["b_ms"] / row["a_ms"])
    assert cmp["totals"]["a_ms"] > 0 and level_key(0.9) in cmp["totals"]["by_level"]

    # human output
    code, out, err = _run(capsys, "profile", "perf", proj, *flags)
    assert code == 0 and "Baseline MS" in out and "Items per Second" in out and "APPROXIMATED" in out
    code, out, err = _run(capsys, "compare", f"{proj}:{json.loads(out3)['profile_id']}", f"{proj}:{other}")
    assert code == 0 and "B/A" in out
    # --force replaced the first measurement (same settings): its id is gone
    code, out, err = _run(capsys, "compare", f"{proj}:{pid}", f"{proj}:{other}")
    if pid != json.loads(out3)["profile_id"]:
        assert code == 2 and f"no perf profile {pid!r}" in err


def test_import_a_profile_into_a_project(capsys, tmp_path, demo_model):
    proj = tmp_path / "proj"
    assert _run(capsys, "new", demo_model, "--dir", proj)[0] == 0
    code, out, err = _run(capsys, "profile", "perf", demo_model, "--engine", "onnxruntime", "--levels", "0",
                          "--iterations", "1", "--warmup", "0", "--repeats", "1", "--json")
    assert code == 0, err
    src = tmp_path / "measured_elsewhere.json"
    src.write_text(out)
    code, out, err = _run(capsys, "profile", "perf", proj, "--import", src, "--json")
    assert code == 0, err
    assert "imported" in err and json.loads(out)["profile_id"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "loss"}))
    code, out, err = _run(capsys, "profile", "perf", proj, "--import", bad)
    assert code == 2 and "not a perf profile" in err


def test_compare_errors(capsys, tmp_path):
    code, _, err = _run(capsys, "compare", tmp_path / "a.json", tmp_path / "b.json")
    assert code == 2 and "no such profile file" in err
    (tmp_path / "a.json").write_text("{not json")
    code, _, err = _run(capsys, "compare", tmp_path / "a.json", tmp_path / "a.json")
    assert code == 2 and "not a readable JSON profile" in err


def test_benchmark_side_by_side(capsys, demo_model):
    code, out, err = _run(capsys, "benchmark", demo_model, demo_model, "--engine", "onnxruntime",
                          "--batch-size", "1,2", "--cores", "1", "--iterations", "2", "--warmup", "0",
                          "--repeats", "2", "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 4
    for r in results:
        assert {"model", "engine", "batch_size", "cores", "median_ms", "min_ms", "max_ms",
                "items_per_second"} <= set(r)
        assert r["engine"] == "onnxruntime" and r["cores"] == 1
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["items_per_second"] == pytest.approx(r["batch_size"] * 1000 / r["median_ms"])
    assert [r["batch_size"] for r in results] == [1, 2, 1, 2]
    code, out, err = _run(capsys, "benchmark", demo_model, "--batch-size", "0")
    assert code == 2 and "--batch-size must be at least 1" in err


def test_deepsparse_requested_but_not_installed(capsys, monkeypatch, demo_model):
    import dataclasses

    from sparsify_tui.engines import registry

    # the registry's deepsparse looked for under a distribution name that is installed nowhere
    gone = dataclasses.replace(registry.get_engine("deepsparse"), distributions=("deepsparse-not-installed",))
    monkeypatch.setitem(registry._REGISTRY, "deepsparse", gone)
    code, out, err = _run(capsys, "profile", "perf", demo_model, "--engine", "deepsparse")
    assert code == 2 and out == ""
    assert err.strip() == "error: deepsparse is not installed; pip install 'sparsify-tui[deepsparse]'"
    code, out, err = _run(capsys, "benchmark", demo_model, "--engine", "deepsparse")
    assert code == 2 and "deepsparse is not installed" in err
