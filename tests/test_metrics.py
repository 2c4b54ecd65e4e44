"""Output-change metrics (sparsify_tui.metrics) on hand-built arrays whose change is known in closed form."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from sparsify_tui.metrics import (
    MAX_CHANGE,
    TEMPERATURE_SPREAD,
    classify_output,
    compare_outputs,
    format_change,
    plan_outputs,
)

RNG = np.random.default_rng(20)


def _kl_closed_form(x: np.ndarray, y: np.ndarray, t: float = 1.0) -> float:
    """KL(softmax(x/t) || softmax(y/t)) = sum p (x - y)/t + log sum exp(y/t) - log sum exp(x/t), mean over rows."""
    x = x.astype(np.float64) / t
    y = y.astype(np.float64) / t
    mx, my = x.max(-1, keepdims=True), y.max(-1, keepdims=True)
    lse_x = np.log(np.exp(x - mx).sum(-1)) + mx[:, 0]
    lse_y = np.log(np.exp(y - my).sum(-1)) + my[:, 0]
    p = np.exp(x - lse_x[:, None])
    return float(np.mean(np.sum(p * (x - y), -1) + lse_y - lse_x))


def test_probabilities_kl_and_top1():
    p = np.array([[0.5, 0.25, 0.25]], np.float32)
    q = np.array([[0.25, 0.5, 0.25]], np.float32)
    assert classify_output(p) == "probabilities"
    c = compare_outputs([[p]], [[q]], names=["probs"])
    o = c.outputs[0]
    assert (o["metric"], o["unit"], o["temperature"]) == ("kl", "nats", 1.0)
    assert c.value == pytest.approx(0.25 * math.log(2), rel=1e-6)  # 0.5 ln 2 - 0.25 ln 2
    assert o["top1_changed"] == 1.0 and o["top1_agreement"] == 0.0
    assert o["reading"].startswith("top-1 changed on 1 of 1 samples")


def test_logits_kl_at_temperature_one_and_top1_over_samples():
    x = [RNG.standard_normal((1, 10)).astype(np.float32) for _ in range(8)]
    y = [a + np.float32(0.3) * RNG.standard_normal((1, 10)).astype(np.float32) for a in x]
    y[0] = x[0].copy()
    y[0][0, np.argmax(x[0])] -= 10  # the top class loses: top-1 changes on this sample
    c = compare_outputs([[a] for a in x], [[b] for b in y], names=["logits"])
    o = c.outputs[0]
    assert o["kind"] == "class_scores" and o["metric"] == "kl" and o["temperature"] == 1.0
    want = np.mean([_kl_closed_form(a, b) for a, b in zip(x, y)])
    assert c.value == pytest.approx(want, rel=1e-6)
    k = sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(x, y))
    assert k >= 1 and o["top1_changed"] == pytest.approx(k / 8)
    assert o["reading"].startswith(f"top-1 changed on {k} of 8 samples; logits moved ")
    nse = np.mean([np.sum((a - b) ** 2) / np.sum(a ** 2) for a, b in zip(x, y)])
    assert o["rel_rms_pct"] == pytest.approx(100 * math.sqrt(nse), rel=1e-5)
    # a constant shift of the logits is no change of the softmax
    assert compare_outputs([[x[1]]], [[x[1] + 5]]).value == pytest.approx(0.0, abs=1e-9)


def test_large_logits_get_a_temperature_that_keeps_kl_informative():
    """Logits spanning thousands: the plain softmax is one-hot and its KL reads 0; at T it does not."""
    x = [RNG.standard_normal((1, 1000)) * 2000 for _ in range(4)]
    y = [a * 1.02 + RNG.standard_normal((1, 1000)) * 20 for a in x]
    assert _kl_closed_form(x[0], y[0]) < 1e-30  # what the first definition reported
    plan = plan_outputs([[a] for a in x], ["logits"])
    t_want = max(1.0, float(np.median([np.std(a) for a in x])) / TEMPERATURE_SPREAD)
    assert plan[0].metric == "kl" and plan[0].temperature == pytest.approx(t_want, rel=1e-3)
    c = compare_outputs([[a] for a in x], [[b] for b in y], plan)
    t = plan[0].temperature
    assert c.value == pytest.approx(np.mean([_kl_closed_form(a, b, t) for a, b in zip(x, y)]), rel=1e-6)
    assert c.value > 1e-4
    nse = np.mean([np.sum((a - b) ** 2) / np.sum(a ** 2) for a, b in zip(x, y)])
    assert c.outputs[0]["rel_rms_pct"] == pytest.approx(100 * math.sqrt(nse), rel=1e-6)
    assert 1.5 < c.outputs[0]["rel_rms_pct"] < 3  # 2% scale + 1% noise


def test_saturated_classifier_kl_is_zero_but_the_logits_moved():
    """One class far above the others: even at T the softmax is one-hot, KL is 0 although the logits
    moved by 1%; the guard switches to the normalized squared error of the logits and says so."""
    x = np.zeros((1, 1000))
    x[0, 3] = 1e5
    y = x * 1.01  # every logit moves by 1%, the argmax stays
    plan = plan_outputs([[x]], ["logits"])
    t = plan[0].temperature
    assert t > 1 and _kl_closed_form(x, y, t) < 1e-40  # KL at T is 0 to any precision
    assert plan[0].metric == "nse" and any("saturated" in n for n in plan[0].notes)
    c = compare_outputs([[x]], [[y]], plan)
    o = c.outputs[0]
    assert c.value == pytest.approx(1e-4, rel=1e-9)  # (0.01)^2
    assert o["rel_rms_pct"] == pytest.approx(1.0, rel=1e-9)
    assert o["top1_changed"] == 0.0 and o["notes"] == plan[0].notes
    assert o["reading"] == "top-1 changed on 0 of 1 samples; logits moved 1% RMS"
    assert c.to_json()["output_change_metric"] == "nse"


def test_embedding_cosine_distance():
    theta = 0.3
    d = 16
    q, _ = np.linalg.qr(RNG.standard_normal((d, d)))  # orthonormal columns u0, u1, u2, ...
    a = np.stack([q[:, 0], q[:, 1]])  # unit rows: an L2-normalized embedding
    b = np.stack([math.cos(theta) * q[:, 0] + math.sin(theta) * q[:, 2], q[:, 1]])  # row 0 turned by theta
    b *= 3.0  # the length does not count
    assert classify_output(a) == "embedding"
    c = compare_outputs([[a]], [[b]])
    o = c.outputs[0]
    assert (o["metric"], o["unit"]) == ("cosine_distance", "cosine distance")
    assert c.value == pytest.approx((1 - math.cos(theta)) / 2, rel=1e-9)  # one of the two rows turned
    assert o["reading"].startswith("cosine distance ")
    # recognised by name, or as the pooled vector of a [N, T, D] output of the same model
    raw = RNG.standard_normal((1, 384))
    assert classify_output(raw) == "class_scores"
    assert classify_output(raw, "sentence_embedding") == "embedding"
    assert classify_output(raw, "461", [RNG.standard_normal((1, 128, 384))]) == "embedding"
    # an all-zero vector: cosine undefined -> nse, with a note
    z = np.zeros((1, 8))
    z[0, 0] = 1
    plan = plan_outputs([[np.vstack([z, np.zeros((1, 8))])]], ["embedding"])
    assert plan[0].metric == "nse" and plan[0].notes


def test_regression_nse_and_relative_rms():
    y = RNG.standard_normal((1, 4, 5, 6))
    assert classify_output(y) == "regression"
    eps = 0.03
    c = compare_outputs([[y], [2 * y]], [[y * (1 + eps)], [2 * y * (1 - eps)]])
    o = c.outputs[0]
    assert (o["metric"], o["kind"]) == ("nse", "regression")
    assert c.value == pytest.approx(eps ** 2, rel=1e-9)
    assert o["rel_rms_pct"] == pytest.approx(100 * eps, rel=1e-9)
    assert o["reading"] == "values moved 3% RMS"


def test_integer_changed_fraction():
    a = np.array([[1, 2, 3, 4]], np.int64)
    b = np.array([[1, 0, 3, 0]], np.int64)
    c = compare_outputs([[a]], [[b]])
    assert c.outputs[0]["metric"] == "changed_fraction" and c.value == pytest.approx(0.5)
    assert c.outputs[0]["reading"] == "50% of the elements changed"
    assert compare_outputs([[a]], [[a]]).outputs[0]["reading"] == "no element changed"


def test_all_zero_output_reports_the_rms_change_not_zero():
    z = np.zeros((1, 3, 4, 4), np.float32)
    c = compare_outputs([[z]], [[z + 0.5]])
    o = c.outputs[0]
    assert o["metric"] == "rms" and c.value == pytest.approx(0.5)
    assert any("all zeros" in n for n in o["notes"])


def test_combined_value_is_the_sum_over_outputs():
    p = np.array([[0.5, 0.25, 0.25]])
    q = np.array([[0.25, 0.5, 0.25]])
    y = RNG.standard_normal((1, 2, 3))
    ids = np.array([[1, 2]])
    c = compare_outputs([{"probs": p, "map": y, "ids": ids}], [{"probs": q, "map": 1.1 * y, "ids": ids}],
                        names=["probs", "map", "ids"])
    assert [o["metric"] for o in c.outputs] == ["kl", "nse", "changed_fraction"]
    assert c.value == pytest.approx(0.25 * math.log(2) + 0.01, rel=1e-9)
    j = c.to_json()
    assert j["output_change"] == c.value and j["output_change_metric"] == "sum"
    assert j["output_change_reading"].startswith("probs: top-1 changed on 1 of 1 samples")
    assert "ids: no element changed" in j["output_change_reading"]
    assert sum(o["value"] for o in j["output_change_outputs"]) == pytest.approx(c.value)
    assert format_change(j)[0] == f"{c.value:.3g} (sum over 3 outputs)"
    # an output the change cannot reach (None) did not move
    c2 = compare_outputs([{"a": y, "b": y}], [{"a": 1.1 * y}], names=["a", "b"])
    assert c2.value == pytest.approx(0.01) and c2.outputs[1]["value"] == 0.0


def test_broken_outputs_count_as_max_change():
    y = RNG.standard_normal((1, 3, 4))
    bad = y.copy()
    bad[0, 0, 0] = np.nan
    assert compare_outputs([[y]], [[bad]]).value == MAX_CHANGE
    assert compare_outputs([[y]], [[y[:, :2]]]).value == MAX_CHANGE
    assert format_change({"output_change": MAX_CHANGE})[0].startswith("broken")


def test_format_change_for_old_documents():
    assert format_change({"output_change": 6.05}) == ("6.05", "")
    assert format_change({"output_change": None}) == ("n/a", "")
    assert format_change({"output_change": 0.0019, "output_change_metric": "kl",
                          "output_change_reading": "top-1 changed on 0 of 4 samples"}) == \
        ("0.0019 nats (KL)", "top-1 changed on 0 of 4 samples")
    assert format_change({"output_change": 0.0019, "output_change_metric": "kl"}, short=True)[0] == "0.0019 nats"


def test_metrics_imports_numpy_only():
    code = ("import sys, sparsify_tui.metrics; bad = [m for m in ('onnx', 'onnxruntime', 'textual') "
            "if m in sys.modules]; assert not bad, bad")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode == 0


def test_departure_names_the_broken_metric_and_stays_silent_when_slightly_worse():
    from sparsify_tui.metrics import DEPART_DECISIONS, departure

    # 4 rows of 3 classes; the changed model swaps the top class on 3 of them: top-1 changed on 75%
    x = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [4.0, 0, 0]])
    y = x.copy()
    y[:3] = x[:3][:, [1, 2, 0]]
    doc = compare_outputs([[x]], [[y]], names=["logits"]).to_json()
    assert doc["output_change_outputs"][0]["top1_changed"] == 0.75
    assert departure(doc) == "outputs no longer follow the original: top-1 changed on 75% of samples"
    # one row of 4 changed (25%, not more than DEPART_DECISIONS) and the KL of that row averaged over 4 rows:
    y1 = x.copy()
    y1[0] = x[0][[1, 2, 0]]
    doc1 = compare_outputs([[x]], [[y1]], names=["logits"]).to_json()
    o = doc1["output_change_outputs"][0]
    assert o["top1_changed"] == DEPART_DECISIONS
    # KL of a swapped row = (p_top - p_other) * 4 = 4 (e^4 - 1)/(e^4 + 2), averaged over 4 rows: < 1 nat
    assert o["kl"] == pytest.approx((math.exp(4) - 1) / (math.exp(4) + 2), rel=1e-6)
    assert departure(doc1) is None
    # a regression output (a [1, 4, 4] map): relative RMS exactly 200% (y' = -y) departs, 50% does not
    r = RNG.standard_normal((1, 4, 4)).astype(np.float32)
    assert departure(compare_outputs([[r]], [[-r]]).to_json("d"), "d") == \
        "outputs no longer follow the original: values moved 200% RMS"
    assert departure(compare_outputs([[r]], [[1.5 * r]]).to_json()) is None
    # cosine distance of orthogonal unit vectors is 1 (> 0.5), of 60 + 5 degrees 1 - cos(65 deg) = 0.577
    e = np.array([[2.0, 0.0]])  # (not a unit row, which would read as probabilities)
    assert departure(compare_outputs([[e]], [[np.array([[0.0, 2.0]])]], names=["embedding"]).to_json()) == \
        "outputs no longer follow the original: cosine distance 1"
    a = math.radians(65)
    assert "cosine distance 0.58" in departure(
        compare_outputs([[e]], [[np.array([[math.cos(a), math.sin(a)]])]], names=["embedding"]).to_json())
    # broken (NaN) and several outputs: each departed output is named
    two = compare_outputs([[r, x]], [[r * np.nan, x]], names=["boxes", "logits"]).to_json()
    assert departure(two) == "outputs no longer follow the original: boxes: NaN/inf or a changed shape"
    # an older document with only the combined value is judged by its metric
    assert departure({"output_change": 1.2, "output_change_metric": "kl"}) == \
        "outputs no longer follow the original: KL 1.2 nats"
    assert departure({"output_change": 0.3, "output_change_metric": "kl"}) is None
    assert departure({}) is None and departure(None) is None


def test_a_map_near_zero_gets_the_mean_absolute_change_not_a_relative_blow_up():
    # a sigmoid map of ~1e-9 everywhere; the changed model moves every element by exactly 1e-5
    ref = np.full((1, 1, 8, 8), 1e-9, np.float64)
    ref[0, 0, 0, :4] = [2e-9, 3e-9, 5e-10, 1e-9]
    new = ref + 1e-5
    plan = plan_outputs([[ref]], ["maps"])
    assert (plan[0].kind, plan[0].metric) == ("map", "mean_abs")
    assert "maps is a map bounded in [0, 1] (its values stay in [0, 1] on the 1 samples)" in plan[0].notes[0]
    c = compare_outputs([[ref]], [[new]], plan)
    o = c.outputs[0]
    assert c.value == pytest.approx(1e-5) and o["mean_abs"] == pytest.approx(1e-5)
    assert o["flipped"] == 0 and o["elements"] == 64 and "nse" not in o and "rel_rms_pct" not in o
    assert o["reading"] == "map moved 1e-05 on average (mean absolute change); no decision at 0.5 flipped"
    assert c.metric == "mean_abs" and format_change(c.to_json())[0] == "1e-05 (mean absolute change)"
    # what today's relative metric would say of the same change: ||dy|| / ||y|| ~ 1e4, i.e. ~1,000,000% RMS
    assert math.sqrt(np.sum((new - ref) ** 2) / np.sum(ref ** 2)) > 5e3
    # the same model with decisions flipped: 48 of the 64 elements pushed to 0.9 -> 75% flipped
    flip = ref.copy()
    flip.reshape(-1)[:48] = 0.9
    o = compare_outputs([[ref]], [[flip]], plan).outputs[0]
    assert o["flipped"] == 0.75 and o["flipped_count"] == 48
    assert o["mean_abs"] == pytest.approx(float(np.mean(np.abs(flip - ref))))
    assert "75% of the decisions at 0.5 flipped (48 of 64)" in o["reading"]
    from sparsify_tui.metrics import departure

    assert departure(compare_outputs([[ref]], [[flip]], plan).to_json()) == \
        "outputs no longer follow the original: 75% of decisions flipped"
    assert departure(c.to_json()) is None


def test_the_graph_says_bounded_and_softmax_rows_stay_probabilities():
    y = RNG.uniform(-3, 3, (2, 5)).astype(np.float32)  # not within [0, 1]: class scores by shape
    assert plan_outputs([[y]], ["score"])[0].kind == "class_scores"
    m = plan_outputs([[y]], ["score"], bounded={"score"})[0]
    assert (m.kind, m.metric) == ("map", "mean_abs") and "a Sigmoid or Softmax output in the graph" in m.notes[0]
    p = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)  # rows sum to 1: KL and top-1, not a map
    assert plan_outputs([[p]], ["p"], bounded={"p"})[0].kind == "probabilities"
    # a multi-label sigmoid head [N, C] in [0, 1] whose rows do not sum to 1 is a map
    s = np.array([[0.9, 0.7, 0.1], [0.2, 0.3, 0.05]], np.float32)
    assert plan_outputs([[s]], ["probs"])[0].kind == "map"
    assert classify_output(s) == "map" and classify_output(s, bounded=False) == "class_scores"


def test_a_relative_metric_is_never_computed_over_a_negligible_reference():
    from sparsify_tui.metrics import NEGLIGIBLE_RMS

    # an unbounded output (negative values) of RMS 1e-8 < NEGLIGIBLE_RMS: the RMS change in output units
    ref = np.array([[[1e-8, -1e-8], [-1e-8, 1e-8]]])
    new = ref + np.array([[[3e-6, -4e-6], [3e-6, -4e-6]]])
    m = plan_outputs([[ref]], ["y"])[0]
    assert (m.kind, m.metric) == ("regression", "rms")
    assert "about zero on the samples (RMS 1e-08, below 1e-06)" in m.notes[0] and NEGLIGIBLE_RMS == 1e-6
    o = compare_outputs([[ref]], [[new]], [m]).outputs[0]
    assert o["value"] == pytest.approx(math.sqrt(12.5) * 1e-6) and "nse" not in o  # sqrt((9+16+9+16)/4) 1e-6
    # within nse, one sample of negligible energy next to an ordinary one is scaled by the samples' mean
    big = np.array([[[3.0, -4.0], [0.0, 0.0]]])  # squared norm 25
    tiny = big * 1e-6
    m = plan_outputs([[big], [tiny]], ["y"])[0]
    assert m.metric == "nse"
    o = compare_outputs([[big], [tiny]], [[big * 1.1], [tiny + 0.1]], [m]).outputs[0]
    mean_den = (25 + 25e-12) / 2
    expected = (0.01 * 25 / 25 + 4 * 0.01 / mean_den) / 2
    assert o["nse"] == pytest.approx(expected)


def test_bounded_outputs_follow_a_sigmoid_or_softmax_through_reshapes_only():
    from onnx import TensorProto, helper, numpy_helper

    from sparsify_tui.analysis.loader import bounded_output_names
    from sparsify_tui.onnxkit.graphs import bounded_outputs

    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Softmax", ["x"], ["p"], axis=1),
        helper.make_node("Transpose", ["s"], ["st"], perm=[1, 0]),
        helper.make_node("Reshape", ["st", "shape"], ["map"]),  # Sigmoid -> Transpose -> Reshape: bounded
        helper.make_node("Concat", ["s", "p"], ["both"], axis=0),  # both inputs bounded
        helper.make_node("Concat", ["s", "x"], ["mixed"], axis=0),  # one input unbounded
        helper.make_node("Mul", ["s", "two"], ["scaled"]),  # arithmetic may leave [0, 1]
        helper.make_node("Identity", ["x"], ["raw"]),
    ]
    outs = [helper.make_tensor_value_info(n, f, None) for n in ("map", "both", "mixed", "scaled", "raw", "p")]
    g = helper.make_graph(nodes, "b", [helper.make_tensor_value_info("x", f, [2, 3])], outs,
                          [numpy_helper.from_array(np.array([6], np.int64), "shape"),
                           numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    assert bounded_outputs(m) == {"map", "both", "p"}
    assert bounded_output_names(m) == {"map", "both", "p"}  # through the weight-free skeleton
    assert bounded_output_names("/nonexistent.onnx") == set()  # a hint only: unreadable -> none
