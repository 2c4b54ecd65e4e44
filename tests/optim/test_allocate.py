"""Automatic allocation: property tests over random profiles, and known cases."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsify_tui.optim.allocate import Curves, allocate
from sparsify_tui.optim.estimate import Evaluator, evaluate
from sparsify_tui.optim.optimization import REASON_HEAD, REASON_STEM, default_optimization
from sparsify_tui.optim.synthetic import loss_profile, perf_profile, synthetic_graph, synthetic_model
from sparsify_tui.settings import LOSS_ONE_SHOT_LEVELS, PERF_LEVELS, level_key

HSET = settings(max_examples=int(os.environ.get("OPTIM_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- random models and profiles
@st.composite
def models(draw, min_layers=1, max_layers=10):
    m = draw(st.integers(min_layers, max_layers))
    params = draw(st.lists(st.integers(1, 200_000), min_size=m, max_size=m))
    flops = draw(st.lists(st.one_of(st.none(), st.integers(0, 10**9)), min_size=m, max_size=m))
    graph = synthetic_graph(params, flops)
    perf = None
    if draw(st.booleans()):
        rows = []
        for lay in graph.layers:
            t0 = draw(st.floats(0.0, 5.0))
            # arbitrary (noisy, non-monotone) per-level times
            by = {level_key(lv): draw(st.floats(0.0, max(t0 * 1.2, 0.001))) for lv in PERF_LEVELS}
            by["0.0"] = t0
            rows.append({"id": lay.id, "name": lay.name, "baseline_ms": t0, "ms_by_level": by,
                         "engine_internal": False})
        if draw(st.booleans()):
            rows.append({"id": "__internal", "baseline_ms": 1.0, "ms_by_level": {"0.0": 1.0, "0.9": 1.0},
                         "engine_internal": True})
        base = sum(r["baseline_ms"] for r in rows) * draw(st.floats(0.8, 1.2))
        perf = {"kind": "perf", "approximated": False, "baseline_ms": base, "layers": rows}
    loss = None
    if draw(st.booleans()):
        rows = []
        for lay in graph.layers:
            if lay.prunable:
                by = {level_key(lv): draw(st.floats(0.0, 10.0)) for lv in LOSS_ONE_SHOT_LEVELS}
                rows.append({"id": lay.id, "sensitivity_by_level": by})
        loss = {"kind": "loss", "method": "one-shot", "layers": rows}
    return graph, perf, loss


def _unprotected(graph):
    """The default optimization without the edge filter: the allocator's own properties are checked on every
    layer (the filter, which leaves the stem, the heads and tiny layers dense, has its own tests)."""
    opt = default_optimization(graph)
    opt.pruning.protect_edges = False
    return opt


def _s(opt, lid):
    return opt.layers[lid].sparsity


def _achieved(graph, opt):
    n = {lay.id: lay.prunable_params for lay in graph.prunable_layers}
    return sum(n[k] * opt.layers[k].sparsity for k in n) / sum(n.values())


# ---------------------------------------------------------------- must hold
@HSET
@given(models(), st.floats(0.0, 0.98), st.floats(0.05, 0.99), st.floats(0.0, 1.0), st.sampled_from([0, 3, 6]))
def test_target_met_and_cap_respected(model, target, cap, balance, buckets):
    graph, perf, loss = model
    opt = _unprotected(graph)
    p = opt.pruning
    p.target_sparsity, p.max_sparsity, p.balance, p.buckets = target, cap, balance, buckets
    new = allocate(graph, opt, perf, loss)
    for lay in graph.prunable_layers:
        s = _s(new, lay.id)
        assert 0.0 <= s <= cap + 1e-12
    ach = _achieved(graph, new)
    if target <= cap:
        assert abs(ach - target) <= max(0.005 * target, 1e-6)
    else:  # unreachable: every layer at the cap, never above
        assert ach == pytest.approx(cap, abs=1e-6)
    est = evaluate(graph, new, perf, loss)
    assert est.achieved_sparsity == pytest.approx(ach, abs=1e-12)
    assert est.reachable == (target <= cap + 0.005)


@HSET
@given(models(min_layers=2), st.floats(0.05, 0.95), st.floats(0.0, 1.0), st.floats(0.0, 1.0),
       st.sampled_from([0.0, 0.3]), st.sampled_from([0.0, 1.2]), st.sampled_from([0.0, 0.2]), st.sampled_from([0, 6]))
def test_balance_is_monotone(model, target, b1, b2, min_s, min_speedup, min_rec, buckets):
    graph, perf, loss = model
    b1, b2 = sorted((b1, b2))
    ev = Evaluator(graph, perf, loss)
    opt = _unprotected(graph)
    opt.pruning.target_sparsity = target
    opt.pruning.min_sparsity, opt.pruning.min_speedup, opt.pruning.min_recovery = min_s, min_speedup, min_rec
    opt.pruning.buckets = buckets
    opt.pruning.balance = b1
    e1 = ev.evaluate(ev.allocate(opt))
    opt.pruning.balance = b2
    e2 = ev.evaluate(ev.allocate(opt))
    # toward performance (b1) never lowers the speedup; toward recovery (b2) never raises the loss
    assert e1.estimated_speedup >= e2.estimated_speedup * (1 - 1e-9)
    assert e2.loss_sensitivity <= e1.loss_sensitivity * (1 + 1e-9) + 1e-12
    assert e2.recovery_confidence >= e1.recovery_confidence - 1e-9


@HSET
@given(models(min_layers=3), st.floats(0.05, 0.9), st.floats(0.0, 1.0), st.data())
def test_overrides_and_exclusions_respected(model, target, balance, data):
    graph, perf, loss = model
    ids = [lay.id for lay in graph.prunable_layers]
    ov_ids = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids) // 2))
    rest = [i for i in ids if i not in ov_ids]
    ex_ids = data.draw(st.lists(st.sampled_from(rest), unique=True, max_size=len(rest) // 2)) if rest else []
    opt = _unprotected(graph)
    p = opt.pruning
    p.target_sparsity, p.balance = target, balance
    p.overrides = {i: data.draw(st.floats(0.0, 0.99)) for i in ov_ids}
    p.exclusions = {i: "excluded by user" for i in ex_ids}
    opt.validate([lay.id for lay in graph.layers])
    new = allocate(graph, opt, perf, loss)
    for i, s in p.overrides.items():
        assert _s(new, i) == s and new.layers[i].overridden
    for i in ex_ids:
        assert _s(new, i) == 0.0 and new.layers[i].excluded_reason == "excluded by user"
    n = {lay.id: lay.prunable_params for lay in graph.prunable_layers}
    N = sum(n.values())
    fixed = sum(n[i] * s for i, s in p.overrides.items())
    free_cap = sum(n[i] for i in ids if i not in p.overrides and i not in ex_ids) * p.max_sparsity
    need = target * N - fixed
    ach = _achieved(graph, new)
    if 0 <= need <= free_cap:
        assert abs(ach - target) <= max(0.005 * target, 1e-6)
    elif need < 0:
        assert ach == pytest.approx(fixed / N, abs=1e-9)  # free layers all 0
    else:
        assert ach == pytest.approx((fixed + free_cap) / N, abs=1e-6)  # free layers all at the cap


@HSET
@given(models(min_layers=2), st.floats(0.05, 0.9), st.floats(0.0, 1.0), st.floats(0.05, 0.9),
       st.floats(1.0, 3.0), st.floats(0.0, 0.9))
def test_filters_hold(model, target, balance, min_s, min_speedup, min_rec):
    graph, perf, loss = model
    ev = Evaluator(graph, perf, loss)
    opt = _unprotected(graph)
    p = opt.pruning
    p.target_sparsity, p.balance = target, balance
    p.min_sparsity = min(min_s, p.max_sparsity)
    p.min_speedup, p.min_recovery = min_speedup, min_rec
    new = ev.allocate(opt)
    est = ev.evaluate(new)
    for lay in est.layers:
        if lay.excluded_reason.startswith("filtered"):
            assert lay.sparsity == 0.0
        elif lay.sparsity > 0:
            assert lay.sparsity >= p.min_sparsity - 1e-9
            if p.min_speedup > 1:
                assert lay.est_speedup >= p.min_speedup * (1 - 1e-9)
            assert lay.recovery >= p.min_recovery - 1e-9
    # after filtering, what is left is re-allocated: the target is met if the unfiltered layers can hold it
    n = {lay.id: lay.params for lay in est.layers}
    left = sum(n[x.id] for x in est.layers if not x.excluded_reason) * p.max_sparsity
    if target * sum(n.values()) <= left * (1 - 1e-9):
        assert abs(est.achieved_sparsity - target) <= max(0.005 * target, 1e-6)


# ---------------------------------------------------------------- known cases
def _two_layer(ms_a=10.0, ms_b=0.01, loss_a=0.01, loss_b=0.01, params=(1000, 1000)):
    graph = synthetic_graph(list(params))
    perf = perf_profile(graph, {"conv0": ms_a, "conv1": ms_b}, {"conv0": 0.9, "conv1": 0.9}, {"conv0": 0.0, "conv1": 0.0})
    loss = loss_profile(graph, {"conv0": loss_a, "conv1": loss_b}, {"conv0": 2.0, "conv1": 2.0})
    return graph, perf, loss


def test_huge_time_saving_low_loss_is_pruned_first_under_performance():
    graph, perf, loss = _two_layer(ms_a=10.0, ms_b=0.01, loss_a=0.01, loss_b=0.01)
    opt = _unprotected(graph)
    opt.pruning.target_sparsity, opt.pruning.balance, opt.pruning.buckets = 0.45, 0.0, 0
    new = allocate(graph, opt, perf, loss)
    assert _s(new, "conv0") == pytest.approx(0.9)
    assert _s(new, "conv1") == pytest.approx(0.0)


def test_recovery_prunes_the_least_sensitive_first():
    graph, perf, loss = _two_layer(ms_a=10.0, ms_b=0.01, loss_a=5.0, loss_b=0.01)
    opt = _unprotected(graph)
    opt.pruning.target_sparsity, opt.pruning.balance, opt.pruning.buckets = 0.4, 1.0, 0
    new = allocate(graph, opt, perf, loss)
    assert _s(new, "conv1") > _s(new, "conv0")
    assert _s(new, "conv1") == pytest.approx(0.8, abs=0.011)
    opt.pruning.balance = 0.0  # and the other way round for performance
    new = allocate(graph, opt, perf, loss)
    assert _s(new, "conv0") > _s(new, "conv1")


def test_flops_fallback_performance_side_is_not_inverted():
    # the original's bug: moving to Performance lowered the 1e9-FLOP layer from 0.95 to 0.56
    graph = synthetic_graph([100_000, 100_000], [10**9, 10**6])
    opt = _unprotected(graph)
    opt.pruning.target_sparsity = 0.6
    ests = []
    for b in (1.0, 0.5, 0.0):
        opt.pruning.balance = b
        new = allocate(graph, opt)
        ests.append((new, evaluate(graph, new)))
    assert ests[-1][0].layers["conv0"].sparsity == pytest.approx(0.95)
    speedups = [e.estimated_speedup for _, e in ests]
    assert speedups == sorted(speedups)
    assert ests[-1][1].approximated and ests[-1][1].perf_basis == "flops"
    assert ests[-1][1].estimated_ms is None


def test_cap_is_respected_during_allocation_so_target_is_met():
    graph, perf, loss = _two_layer(ms_a=1.0, ms_b=1.0, loss_a=0.1, loss_b=1.0)
    opt = _unprotected(graph)
    opt.pruning.target_sparsity, opt.pruning.balance, opt.pruning.max_sparsity, opt.pruning.buckets = 0.9, 1.0, 0.95, 0
    new = allocate(graph, opt, perf, loss)
    # the original allocated 0.99 then clipped to 0.95 (achieved < target); ours spreads it
    assert _s(new, "conv0") == pytest.approx(0.95)
    assert _s(new, "conv1") == pytest.approx(0.85)
    assert _achieved(graph, new) == pytest.approx(0.9)


def test_first_layer_and_grouped_convs_are_not_silently_excluded():
    graph, perf, loss = synthetic_model(20, seed=3)
    graph.layers[2].attributes["group"] = 4
    opt = default_optimization(graph)
    opt.pruning.balance = 0.5
    new = allocate(graph, opt, perf, loss)
    # by default the stem (reads the input) and the head (writes the output) stay dense, saying why
    assert new.layers["conv0"].sparsity == 0 and new.layers["conv0"].excluded_reason == REASON_STEM
    assert new.layers["conv19"].sparsity == 0 and new.layers["conv19"].excluded_reason == REASON_HEAD
    assert new.layers["conv1"].sparsity > 0  # the grouped conv is allocated like the others
    assert all(not r.excluded_reason for k, r in new.layers.items() if k not in ("conv0", "conv19"))
    opt.pruning.protect_edges = False
    new = allocate(graph, opt, perf, loss)
    assert all(not r.excluded_reason for r in new.layers.values())
    assert new.layers["conv0"].sparsity > 0


def test_min_sparsity_filter_changes_the_result():
    graph = synthetic_graph([1000, 1000, 100_000])
    ms = {"conv0": 1.0, "conv1": 1.0, "conv2": 1.0}
    perf = perf_profile(graph, ms, {k: 0.9 for k in ms}, {k: 0.0 for k in ms})
    loss = loss_profile(graph, {"conv0": 0.01, "conv1": 0.01, "conv2": 5.0}, {k: 2.0 for k in ms})
    opt = _unprotected(graph)
    opt.pruning.target_sparsity, opt.pruning.balance, opt.pruning.buckets = 0.3, 1.0, 0
    plain = allocate(graph, opt, perf, loss)
    assert 0 < plain.layers["conv2"].sparsity < 0.4
    opt.pruning.min_sparsity = 0.4
    filt = allocate(graph, opt, perf, loss)
    assert filt.layers["conv2"].sparsity == 0.0
    assert filt.layers["conv2"].excluded_reason == "filtered: below minimum sparsity 0.40"
    # the two small layers cannot hold 30% of the params: target not reachable, reported
    est = evaluate(graph, filt, perf, loss)
    assert not est.reachable and any("not reachable" in n for n in est.notes)


def test_min_speedup_filter_drops_layers_that_do_not_speed_up():
    graph = synthetic_graph([1000, 1000])
    perf = perf_profile(graph, {"conv0": 1.0, "conv1": 1.0}, {"conv0": 0.9, "conv1": 0.01}, {"conv0": 0.0, "conv1": 0.0})
    opt = _unprotected(graph)
    opt.pruning.target_sparsity, opt.pruning.balance = 0.4, 1.0
    assert allocate(graph, opt, perf).layers["conv1"].sparsity > 0
    opt.pruning.min_speedup = 1.1
    new = allocate(graph, opt, perf)
    assert new.layers["conv1"].sparsity == 0.0
    assert new.layers["conv1"].excluded_reason.startswith("filtered: speedup below minimum")
    assert _achieved(graph, new) == pytest.approx(0.4, abs=1e-6)


def test_engine_internal_counts_in_baseline_and_never_speeds_up():
    graph = synthetic_graph([1000])
    perf = perf_profile(graph, {"conv0": 1.0}, {"conv0": 0.5}, {"conv0": 0.0}, internal_ms=1.0, other_ms=0.0)
    opt = _unprotected(graph)
    opt.pruning.target_sparsity = 0.95
    est = evaluate(graph, allocate(graph, opt, perf), perf)
    assert est.baseline_ms == pytest.approx(2.0)
    # the layer loses 0.5 * (0.95-0)/(0.99) of its 1 ms; the internal 1 ms stays
    assert est.estimated_ms == pytest.approx(2.0 - 0.5 * 0.95 / 0.99, rel=1e-6)


def test_excluding_a_non_prunable_layer_reports_it():
    graph = synthetic_graph([1000, 1000])
    opt = _unprotected(graph)
    opt.pruning.exclusions = {"relu0": "excluded by user"}
    new = allocate(graph, opt)
    assert new.layers["relu0"].excluded_reason == "not prunable"


def test_pruning_disabled_gives_a_dense_plan():
    graph, perf, loss = synthetic_model(10, seed=1)
    opt = _unprotected(graph)
    opt.pruning.enabled = False
    est = evaluate(graph, allocate(graph, opt, perf, loss), perf, loss)
    assert est.achieved_sparsity == 0.0 and est.estimated_speedup == pytest.approx(1.0)


def test_buckets_limit_distinct_values_and_keep_target():
    graph, perf, loss = synthetic_model(120, seed=5)
    opt = _unprotected(graph)
    opt.pruning.target_sparsity = 0.8
    new = allocate(graph, opt, perf, loss)
    vals = {r.sparsity for r in new.layers.values() if r.sparsity > 0}
    assert 1 <= len(vals) <= 6
    assert _achieved(graph, new) == pytest.approx(0.8, abs=1e-5)


def test_curves_smoothing():
    graph = synthetic_graph([100])
    perf = {"baseline_ms": 1.0, "layers": [{"id": "conv0", "baseline_ms": 1.0,
                                             "ms_by_level": {"0.0": 1.0, "0.5": 0.5, "0.6": 0.8, "0.9": 0.2}}]}
    loss = {"layers": [{"id": "conv0", "sensitivity_by_level": {"0.0": 0.1, "0.5": 0.6, "0.6": 0.3, "0.9": 1.1}}]}
    c = Curves.build(graph, perf, loss)
    assert np.all(np.diff(c.save[0]) >= 0) and np.all(np.diff(c.loss[0]) >= 0)
    assert c.loss[0, 0] == 0.0 and c.save[0, 0] == 0.0
    assert c.save[0, 60] == pytest.approx(0.5)  # running minimum: 0.8 at 0.6 is noise
    assert c.loss[0, 60] == pytest.approx(0.5)  # running maximum, minus the value at 0
    assert math.isclose(c.loss[0, 90], 1.0)


def test_hull_is_the_greatest_convex_minorant():
    from sparsify_tui.optim.allocate import GRID, _lower_hull_on_grid

    rng = np.random.default_rng(0)
    x = GRID
    i, j = np.meshgrid(np.arange(len(x)), np.arange(len(x)), indexing="ij")
    for _ in range(20):
        y = np.cumsum(rng.random(len(x)) * (rng.random(len(x)) < 0.3))
        y = y if rng.random() < 0.5 else -y
        h = _lower_hull_on_grid(y)
        # brute force: the lowest chord over each point
        brute = np.empty(len(x))
        for k in range(len(x)):
            ok = (i <= k) & (j >= k) & (i < j)
            with np.errstate(divide="ignore", invalid="ignore"):
                v = y[i] + (y[j] - y[i]) * (x[k] - x[i]) / (x[j] - x[i])
            brute[k] = min(y[k], v[ok].min() if ok.any() else y[k])
        assert np.allclose(h, brute, atol=1e-9)


def test_balance_sweep_on_a_large_model_is_monotone():
    # above 200 prunable layers the candidate set is coarser (11 balances): still monotone
    graph, perf, loss = synthetic_model(260, seed=9)
    ev = Evaluator(graph, perf, loss)
    opt = _unprotected(graph)
    opt.pruning.target_sparsity = 0.8
    speed, lossv = [], []
    for k in range(21):
        opt.pruning.balance = k / 20
        est = ev.evaluate(ev.allocate(opt))
        assert abs(est.achieved_sparsity - 0.8) <= 0.004
        speed.append(est.estimated_speedup)
        lossv.append(est.loss_sensitivity)
    assert all(a >= b for a, b in zip(speed, speed[1:]))
    assert all(a >= b for a, b in zip(lossv, lossv[1:]))
    assert speed[0] > speed[-1] and lossv[0] > lossv[-1]  # the balance does something


def test_a_measured_validation_is_dropped_when_the_plan_changes():
    graph, perf, loss = synthetic_model(20, seed=1)
    ev = Evaluator(graph, perf, loss)
    opt = ev.allocate(_unprotected(graph))
    opt.validation = {"measured_speedup": 2.0, "estimated_speedup": 2.1}
    assert ev.allocate(opt).validation == opt.validation  # same plan: kept
    opt.pruning.target_sparsity = 0.5
    assert ev.allocate(opt).validation == {}
