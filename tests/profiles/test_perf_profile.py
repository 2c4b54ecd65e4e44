"""Perf profiles on real engines and real models (few iterations; ratios, never absolute times)."""

from __future__ import annotations

import importlib.util
import os
import signal

import pytest

from sparsify_tui.engines.modelinfo import load_model_info
from sparsify_tui.settings import level_key
from sparsify_tui.profiles.perf import approx_perf_profile, run_perf_profile

HAS_DEEPSPARSE = importlib.util.find_spec("deepsparse") is not None
needs_deepsparse = pytest.mark.skipif(not HAS_DEEPSPARSE, reason="deepsparse not installed")
K0, K9 = level_key(0.0), level_key(0.9)


def _rows_sum(doc, key=None):
    return sum((r["baseline_ms"] if key is None else r["ms_by_level"][key]) for r in doc["layers"])


@needs_deepsparse
@pytest.mark.deepsparse
@pytest.mark.slow  # two DeepSparse compiles of ResNet-50 (dense + sparse kernels): 5-10 s on an idle machine
def test_deepsparse_resnet50_layers_sum_to_the_model_and_sparsity_pays(corpus):
    # one core: DeepSparse's threads synchronise at every layer, so on a shared machine two threads
    # suffer much more from other processes than one (measured: 3.5 ms vs 19-200 ms under load)
    doc = run_perf_profile(corpus.path("resnet50"), engine="deepsparse", levels=[0, 0.9], iterations=4, warmup=1,
                           repeats=1, cores=1, input_shapes=corpus.input_shapes("resnet50"))
    assert doc["engine"] == "deepsparse" and doc["approximated"] is False
    assert doc["engine_reason"] == "requested with --engine deepsparse"
    assert not doc.get("incomplete")
    # every ONNX layer (ids as `info` gives them) has a row, plus engine-internal rows
    info = load_model_info(str(corpus.path("resnet50")), corpus.input_shapes("resnet50"))
    ids = [r["id"] for r in doc["layers"] if not r["engine_internal"]]
    assert ids == [m.id for m in info.layers]
    internal = [r for r in doc["layers"] if r["engine_internal"]]
    assert internal and all(r["id"].startswith("engine:") for r in internal)
    # the layers sum to the measured total (within 10%) at both levels
    assert _rows_sum(doc) == pytest.approx(doc["baseline_ms"], rel=0.10)
    assert _rows_sum(doc, K9) == pytest.approx(doc["model_ms_by_level"][K9], rel=0.10)
    # DeepSparse runs fused groups: kept visible, and every conv got a share of its group's time
    grouped = [r for r in doc["layers"] if len(r["group"]) > 1]
    assert grouped
    assert all(r["baseline_ms"] > 0 for r in doc["layers"] if r["op_type"] == "Conv")
    # 90% imposed kernel sparsity makes the model faster (about 2.8x on the Xeon this was first measured on,
    # 1.4x on the AMD EPYC without AMX of this wave: ratios 0.72-0.73). Both levels
    # come from the same run; other processes on this shared 2-core machine can slow one level's compile+run
    # more than the other's, so as the engines' reference says: repeat and keep the best of up to 3 runs.
    ratios = [doc["model_ms_by_level"][K9] / doc["model_ms_by_level"][K0]]
    while min(ratios) >= 0.8 and len(ratios) < 3:
        again = run_perf_profile(corpus.path("resnet50"), engine="deepsparse", levels=[0, 0.9], iterations=4,
                                 warmup=1, repeats=1, cores=1, input_shapes=corpus.input_shapes("resnet50"))
        ratios.append(again["model_ms_by_level"][K9] / again["model_ms_by_level"][K0])
    assert min(ratios) < 0.8, ratios
    assert doc["items_per_second"] == pytest.approx(1000.0 / doc["baseline_ms"])


@pytest.mark.slow  # per model: worker start, analysis, two DeepSparse compiles: 3-10 s each on an idle machine
@pytest.mark.parametrize("key", ["resnet50", "mobilenetv3", "yolov8n", "crnn", "resnet50nhwc", "minilm", "wakeword"])
def test_every_corpus_model_gets_an_auto_profile(corpus, key):
    doc = run_perf_profile(corpus.path(key), engine="auto", levels=[0, 0.9], iterations=2, warmup=1, repeats=1,
                           input_shapes=corpus.input_shapes(key))
    assert not doc.get("incomplete"), doc.get("error")
    assert doc["engine"] in ("deepsparse", "onnxruntime")
    if not HAS_DEEPSPARSE:
        assert doc["engine"] == "onnxruntime" and doc["engine_reason"] == "deepsparse not installed"
    elif doc["engine"] == "deepsparse":
        assert doc["engine_reason"].startswith("deepsparse installed and compiled the model")
    else:
        assert doc["engine_reason"].startswith("deepsparse could not compile the model: ")
    if key == "yolov8n" and HAS_DEEPSPARSE:  # IR version 10 is beyond DeepSparse 1.8's bundled runtime
        assert doc["engine"] == "deepsparse"
        assert doc["engine_reason"].endswith("(its IR version was lowered from 10 to 9 in a temporary copy)")
    assert doc["approximated"] == (doc["engine"] == "onnxruntime")
    assert set(doc["model_ms_by_level"]) == {K0, K9}
    assert doc["baseline_ms"] > 0 and doc["spread_ms"][0] <= doc["baseline_ms"] <= doc["spread_ms"][1]
    rows = doc["layers"]
    assert all(set(r["ms_by_level"]) == {K0, K9} for r in rows)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert _rows_sum(doc) == pytest.approx(doc["baseline_ms"], rel=0.10)
    for r in rows:
        assert r["id"] in r["group"] or r.get("constant_folded")


def test_killed_worker_keeps_the_finished_levels(tmp_path):
    from sparsify_tui.analysis.demo import build_demo_model

    model = build_demo_model(tmp_path / "demo.onnx")
    seen = []

    def on_progress(ev):
        if ev["event"] == "started":
            seen.append(ev["pid"])
        if ev["event"] == "partial" and ev["data"].get("type") == "level":
            os.kill(seen[0], signal.SIGKILL)  # dies after the first sparse level

    doc = run_perf_profile(model, engine="auto", levels=[0, 0.5, 0.8, 0.9], iterations=2, warmup=0, repeats=1,
                           on_progress=on_progress)
    if doc["engine"] == "onnxruntime":  # ORT measures level 0 only: nothing left to kill
        pytest.skip("the sparse levels are approximated without deepsparse")
    assert doc["incomplete"] is True and "SIGKILL" in doc["error"]
    assert doc["levels_measured"] == [0.0, 0.5]
    assert set(doc["model_ms_by_level"]) == {K0, level_key(0.5)}
    assert doc["levels"] == [0.0, 0.5, 0.8, 0.9]


def test_onnxruntime_profile_is_labelled_approximated(tmp_path):
    from sparsify_tui.analysis.demo import build_demo_model

    model = build_demo_model(tmp_path / "demo.onnx")
    doc = run_perf_profile(model, engine="onnxruntime", levels=[0, 0.5, 0.9], iterations=2, warmup=1, repeats=2,
                           cores=1)
    assert doc["engine"] == "onnxruntime" and doc["approximated"] is True and doc["cores"] == 1
    assert doc["engine_reason"] == "requested with --engine onnxruntime"
    assert len(doc["repeat_ms"]) == 2
    m = doc["model_ms_by_level"]
    assert m[K0] > m[level_key(0.5)] > m[K9] > 0
    convs = [r for r in doc["layers"] if r["op_type"] == "Conv"]
    assert convs and all(r["ms_by_level"][K9] < r["baseline_ms"] for r in convs)
    relus = [r for r in doc["layers"] if r["op_type"] == "Relu"]
    assert all(r["ms_by_level"][K9] == r["baseline_ms"] for r in relus)


def test_flops_estimate_profile(tmp_path):
    from sparsify_tui.analysis import analyze
    from sparsify_tui.analysis.demo import build_demo_model

    graph = analyze(build_demo_model(tmp_path / "demo.onnx"))
    doc = approx_perf_profile(graph, batch_size=2, levels=[0, 0.9], cores=2)
    assert doc["engine"] == "flops-estimate" and doc["approximated"] is True
    assert [r["id"] for r in doc["layers"]] == [layer.id for layer in graph.layers]
    biggest = max(doc["layers"], key=lambda r: r["flops"] or 0)
    assert biggest["share"] == max(r["share"] for r in doc["layers"])
    assert doc["model_ms_by_level"][K9] < doc["baseline_ms"]
    assert doc["batch_size"] == 2
