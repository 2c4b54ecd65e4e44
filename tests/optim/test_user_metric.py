"""``--metric module:function`` (issue #27, "accuracy as the user defines it"): the contract, its errors, and
labelled samples through the real ``prune --validate`` and ``deploy`` on a classifier whose accuracy is known
in closed form (tests/optim/classifier.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparsify_tui.errors import UsageError
from sparsify_tui.user_metric import format_metric, load_metric, over_budget, parse_max_drop
from tests.optim.classifier import DENSE_ACCURACY, HEAVY, HEAVY_ACCURACY, LIGHT, classifier, labelled_samples
from tests.reliability.helpers import assert_user_error, run_cli

METRICS = Path(__file__).resolve().parents[1] / "fixtures" / "user_metrics.py"
BROKEN = METRICS.with_name("user_metrics_broken.py")


def _probs(x: np.ndarray, heavy: bool = False) -> np.ndarray:
    """The classifier's outputs in numpy (dense, or with the "1 I" half pruned), for the contract tests."""
    from tests.optim.classifier import C

    logits = 4 * x[:, :C] + (0 if heavy else 1) * x[:, C:]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _evaluate(name: str, heavy: bool = True) -> dict:
    x, labels = labelled_samples(5)
    ref = [[p[None]] for p in _probs(x)]
    chg = [[p[None]] for p in _probs(x, heavy)]
    samples = [{"x": row[None]} for row in x]
    return load_metric(f"{METRICS}:{name}").evaluate(ref, chg, samples, [lab[None] for lab in labels],
                                                     names=["probs"])


def test_top1_of_stacked_outputs_is_the_closed_form_accuracy():
    um = _evaluate("top1")
    assert um["reference_value"] == pytest.approx(DENSE_ACCURACY, abs=1e-9)
    assert um["value"] == pytest.approx(HEAVY_ACCURACY, abs=1e-9)
    assert um["drop"] == pytest.approx(DENSE_ACCURACY - HEAVY_ACCURACY)
    assert (um["name"], um["unit"], um["higher_is_better"], um["samples"], um["labels"]) == ("top-1", "%", True, 20,
                                                                                             True)
    assert format_metric(um) == "top-1 75.0% → 50.0%"
    assert over_budget(um, 25.0) is None
    assert over_budget(um, 5.0) == "top-1 75.0% → 50.0%: a drop of 25.0 points is over --max-drop 5"
    tup = _evaluate("top1_tuple")  # a (value, higher_is_better) tuple: the function's name, no unit
    assert (tup["name"], tup["value"], tup["reference_value"]) == ("top1_tuple", 0.5, 0.75)


@pytest.mark.parametrize("name, needle", [
    ("raises", "raised ValueError on the reference outputs: the metric broke"),
    ("nan", "returned nan on the reference outputs, not a finite number"),
    ("string", "returned a value that is the string 'high' on the reference outputs, not one number"),
    ("array", "returned a value that is an array of shape [3] on the reference outputs, not one number"),
    ("bare", "without saying whether higher is better: return (value, higher_is_better)"),
    ("flips", "said higher_is_better True on the reference outputs and False on the changed ones"),
])
def test_a_metric_that_raises_or_returns_nonsense_is_one_clear_error(name, needle):
    with pytest.raises(UsageError) as exc:
        _evaluate(name)
    assert needle in exc.value.message and f"--metric {METRICS}:{name}" in exc.value.message


def test_a_metric_without_labels_says_the_samples_carry_none():
    x, _labels = labelled_samples(1)
    ref = [[p[None]] for p in _probs(x)]
    with pytest.raises(UsageError, match="KeyError.*the samples carry no labels: give a .npz with a 'labels' array"):
        load_metric(f"{METRICS}:top1").evaluate(ref, ref, [{"x": r[None]} for r in x], None, names=["probs"])


@pytest.mark.parametrize("spec, needle", [
    ("top1", "--metric must be module:function or path/to/file.py:function"),
    ("sparsify_tui_no_such_metrics:top1", "sparsify_tui_no_such_metrics does not import (ModuleNotFoundError"),
    (f"{BROKEN}:top1", "does not import (ModuleNotFoundError: No module named 'sparsify_tui_no_such_module')"),
    (f"{METRICS}:missing", "has no function 'missing'"),
    (f"{METRICS}:not_a_function", "not_a_function is the number 3, not a function"),
    ("/no/such/file.py:top1", "/no/such/file.py: no such file"),
])
def test_a_metric_that_does_not_load_is_one_clear_error(spec, needle):
    with pytest.raises(UsageError) as exc:
        load_metric(spec)
    assert needle in exc.value.message


def test_a_module_importable_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "mymetrics_for_test.py").write_text("def agree(r, c, s):\n    return 1.0, True\n")
    monkeypatch.chdir(tmp_path)
    assert load_metric("mymetrics_for_test:agree").function_name == "agree"


def test_lower_is_better_metric_drops_when_it_rises(tmp_path):
    """A metric without labels where lower is better (the mean absolute change of the probabilities): the
    reference scores 0 against itself, the pruned model more, and the drop is that rise."""
    f = tmp_path / "mae.py"
    f.write_text("import numpy as np\n\ndef mae(reference, changed, samples):\n"
                 "    return float(np.abs(changed['probs'] - reference['probs']).mean()), False\n")
    x, _labels = labelled_samples(2)
    ref, chg = [[p[None]] for p in _probs(x)], [[p[None]] for p in _probs(x, True)]
    um = load_metric(f"{f}:mae").evaluate(ref, chg, [{"x": r[None]} for r in x], None, names=["probs"])
    expected = float(np.abs(_probs(x, True) - _probs(x)).mean())
    assert um["reference_value"] == 0.0 and um["value"] == pytest.approx(expected) and expected > 0.01
    assert um["higher_is_better"] is False and um["drop"] == pytest.approx(expected) and um["labels"] is False
    assert over_budget(um, expected / 2).endswith(f"is over --max-drop {expected / 2:g}")


def test_labels_that_do_not_match_their_samples_are_one_clear_error(tmp_path):
    from sparsify_tui.engines.inputs import load_labels_for
    from sparsify_tui.errors import ProfileError

    model = classifier(tmp_path / "c.onnx")
    x, labels = labelled_samples(2)
    np.savez(tmp_path / "short.npz", x=x, labels=labels[:5])
    with pytest.raises(ProfileError, match="'labels' has 5 rows but the inputs hold 8 samples"):
        load_labels_for(model, None, data=tmp_path / "short.npz", samples=100, input_shapes={"x": [1, 20]})
    d = tmp_path / "dir"
    d.mkdir()
    np.savez(d / "a.npz", x=x[:4], labels=labels[:4])
    np.savez(d / "b.npz", x=x[4:])
    with pytest.raises(ProfileError, match="has 'labels' but .*b.npz has none: label every file or none"):
        load_labels_for(model, None, data=d, samples=100, input_shapes={"x": [1, 20]})
    np.savez(d / "b.npz", x=x[4:], labels=labels[4:])  # a directory: the files' labels in the files' order
    got = load_labels_for(model, None, data=d, samples=100, input_shapes={"x": [1, 20]})
    assert [int(v[0]) for v in got] == list(labels)


def test_max_drop_is_a_number_in_the_metric_units():
    assert parse_max_drop("0.5") == 0.5 and parse_max_drop(None) is None
    for bad in ("lots", "-1", "nan"):
        with pytest.raises(UsageError, match="--max-drop must be"):
            parse_max_drop(bad)


def test_labels_follow_their_samples_and_are_never_an_input(tmp_path):
    """``labels`` beside an input of another name: the single-input fallback ignores them, and the evaluation
    split gives each evaluation sample its own label."""
    from sparsify_tui.actions.validate import split_labelled_samples
    from sparsify_tui.analysis import analyze
    from sparsify_tui.engines.inputs import load_samples_for
    from sparsify_tui.project import Project

    model = classifier(tmp_path / "c.onnx")
    x, labels = labelled_samples(4)
    data = tmp_path / "d.npz"
    np.savez(data, features=x, labels=labels)  # the input is "x": the one non-label array is taken for it
    graph = analyze(str(model), {"x": [1, 20]})
    rows = load_samples_for(model, graph, data=data, samples=100, input_shapes={"x": [1, 20]})
    assert len(rows) == 16 and all(set(r) == {"x"} for r in rows)
    res = run_cli("new", model, "--dir", tmp_path / "p", "--input-shape", "x=1,20")
    assert res.returncode == 0, res.stderr
    project = Project.open(tmp_path / "p", readonly=True)
    try:
        _cal, ev, _notes, ev_labels = split_labelled_samples(project, graph, "magnitude", str(data), 32, None)
    finally:
        project.close()
    assert len(ev) == 4 and [int(v[0]) for v in ev_labels] == list(labels[-4:])
    assert all(np.array_equal(e["x"][0], x[12 + i]) for i, e in enumerate(ev))
    # --eval-data: its own labels, its first rows
    x2, labels2 = labelled_samples(3, seed=5)
    np.savez(tmp_path / "eval.npz", x=x2, labels=labels2)
    project = Project.open(tmp_path / "p", readonly=True)
    try:
        _cal, ev, _notes, ev_labels = split_labelled_samples(project, graph, "magnitude", str(data), 32,
                                                             str(tmp_path / "eval.npz"), max_eval=10)
    finally:
        project.close()
    assert len(ev) == 10 and [int(v[0]) for v in ev_labels] == list(labels2[:10])


# ---------------------------------------------------------------- the real CLI (a perf profile, the A/B child)
@pytest.fixture(scope="module")
def labelled_project(tmp_path_factory) -> tuple[Path, Path]:
    """(project with optimizations light and heavy, 400 labelled samples), made once for the module."""
    return _project(tmp_path_factory.mktemp("classifier"))


def _project(tmp_path: Path) -> tuple[Path, Path]:
    model = classifier(tmp_path / "classifier.onnx")
    pdir = tmp_path / "proj"
    assert run_cli("new", model, "--dir", pdir, "--input-shape", "x=1,20").returncode == 0
    for name, s in (("light", LIGHT), ("heavy", HEAVY)):
        res = run_cli("optimize", pdir, "--name", name, "--override", f"logits={s}", "--json")
        assert res.returncode == 0, res.stderr
    x, labels = labelled_samples(100)  # 400 samples: the last 100 evaluate (25 whole groups)
    data = tmp_path / "labelled.npz"
    np.savez(data, x=x, labels=labels)
    return pdir, data


def _validation(pdir: Path, name: str) -> dict | None:
    from sparsify_tui.project import Project

    project = Project.open(pdir, readonly=True)
    try:
        return (project.get_optimization(name) or {}).get("validation")
    finally:
        project.close()


# slow: a real validation and a deployment search on ONNX Runtime (~35 s on 2 cores at load average 12)
@pytest.mark.slow
def test_validate_and_deploy_report_the_closed_form_accuracy_and_hold_the_budget(tmp_path, labelled_project):
    pdir, data = labelled_project
    metric = f"{METRICS}:top1"
    flags = ("--engine", "onnxruntime", "--iterations", "3", "--data", data, "--metric", metric)
    text = run_cli("prune", pdir, "--optimization", "heavy", "-o", tmp_path / "heavy.onnx", "--validate", *flags,
                   "--max-drop", "5", timeout=600)
    assert text.returncode == 0, text.stderr[-3000:]
    doc = _validation(pdir, "heavy")  # stored with the validation (what --json prints)
    um = doc["user_metric"]
    assert abs(um["reference_value"] - DENSE_ACCURACY) <= 0.1 and abs(um["value"] - HEAVY_ACCURACY) <= 0.1, um
    assert (um["name"], um["higher_is_better"], um["samples"], um["labels"]) == ("top-1", True, 100, True)
    assert doc["max_drop"] == 5.0 and doc["within_max_drop"] is False
    assert "User metric        top-1 75.0% → 50.0%" in text.stdout
    assert "FAIL: top-1 75.0% → 50.0%: a drop of 25.0 points is over --max-drop 5" in text.stdout

    # the deployment search: the heavy plan's rows drop 25 points and are left out by --max-drop 5, named
    res = run_cli("deploy", pdir, "--engines", "onnxruntime", "--precisions", "fp32", "--repeats", "1", "--data",
                  data, "--metric", metric, "--max-drop", "5", "--max-output-change", "none", "--json", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    dep = json.loads(res.stdout)
    rows = {r["id"]: r for r in dep["rows"]}
    assert dep["samples"]["heldout"] == 256  # --metric holds out more than the default 4 (64 whole groups)
    for rid, acc in (("onnxruntime/fp32/dense", DENSE_ACCURACY), ("onnxruntime/fp32/light", DENSE_ACCURACY),
                     ("onnxruntime/fp32/heavy", HEAVY_ACCURACY)):
        assert abs(rows[rid]["user_metric"]["value"] - acc) <= 0.1, rows[rid]["user_metric"]
        assert rows[rid]["user_metric"]["reference_value"] == pytest.approx(DENSE_ACCURACY, abs=0.1)
    assert dep["budget"]["max_drop"] == 5.0 and dep["best"]["id"] != "onnxruntime/fp32/heavy"
    assert [g["id"] for g in dep["over_max_drop"]] == ["onnxruntime/fp32/heavy"]
    assert "drop of 25.0 points is over --max-drop 5" in dep["over_max_drop"][0]["reason"]
    from sparsify_tui.actions.deploy import apply_budget

    # the same stored rows under other budgets: a drop of 30 keeps the heavy row, its raw speed decides
    loose = apply_budget(dep, "none", max_drop=30)
    assert not loose["over_max_drop"] and loose["best"]["id"] == max(dep["rows"], key=lambda r: r["speedup"])["id"]
    assert apply_budget(dep, dep["budget"])["over_max_drop"] == dep["over_max_drop"]  # the stored budget keeps it


@pytest.mark.slow
def test_a_failing_metric_stores_nothing(tmp_path, labelled_project):
    """A metric that raises: one ``error:`` line, no validation stored, no pruned file left, no deploy result."""
    from tests.reliability.helpers import snapshot_dir

    pdir, data = labelled_project
    before = snapshot_dir(pdir)
    out = tmp_path / "light.onnx"
    res = run_cli("prune", pdir, "--optimization", "light", "-o", out, "--validate", "--engine", "onnxruntime",
                  "--iterations", "3", "--data", data, "--metric", f"{METRICS}:raises", timeout=600)
    assert_user_error(res, f"--metric {METRICS}:raises raised ValueError on the reference outputs: the metric broke")
    assert not out.exists() and _validation(pdir, "light") is None
    res = run_cli("deploy", pdir, "--engines", "onnxruntime", "--precisions", "fp32", "--repeats", "1", "--data",
                  data, "--metric", f"{METRICS}:nan", timeout=600)
    assert_user_error(res, "returned nan on the reference outputs, not a finite number")
    assert snapshot_dir(pdir) == before  # no profile (not the deploy, not a perf one), no optimization changed


def test_bad_metric_flags_fail_before_any_work(tmp_path):
    pdir = tmp_path / "proj"  # never opened: the flags are refused first
    out = tmp_path / "x.onnx"
    assert_user_error(run_cli("prune", pdir, "-o", out, "--validate", "--metric", f"{BROKEN}:top1"),
                      "does not import (ModuleNotFoundError")
    assert_user_error(run_cli("deploy", pdir, "--metric", f"{METRICS}:top1", "--max-drop", "x"),
                      "--max-drop must be a number >= 0")
    assert not out.exists()
    import argparse

    from sparsify_tui.commands.prune import _metric_flags

    with pytest.raises(UsageError, match="--metric is only used with --validate"):
        _metric_flags(argparse.Namespace(metric=f"{METRICS}:top1", max_drop=None, validate=False))
    with pytest.raises(UsageError, match="--max-drop is a budget on the user's metric: give --metric"):
        _metric_flags(argparse.Namespace(metric=None, max_drop="1", validate=True))
    metric, drop = _metric_flags(argparse.Namespace(metric=f"{METRICS}:top1", max_drop="0.5", validate=True))
    assert metric.function_name == "top1" and drop == 0.5
