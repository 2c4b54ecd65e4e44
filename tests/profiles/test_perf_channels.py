"""The channel perf profile (``profile perf --structure channels``) and its speedup estimate.

The must-hold of issue #26: the measured speedup of a channel plan is within 20% of the estimate from the
channel perf profile on the same engine. A timing test (``TIMING_PATHS``): it runs alone.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsify_tui.cli import main
from sparsify_tui.optim.channel_estimate import estimate_channel_speedup, estimated_saving, flops_reduction


def build_residual_cnn(path, *, size: int = 28, widths=(64, 128), blocks: int = 2, seed: int = 0):
    """Stem, residual blocks of two 3x3 convolutions per stage, a stride-2 convolution between stages,
    pooling and a classifier: 6 prunable channel groups, a few ms in ONNX Runtime."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x, name, cin, cout, stride=1, relu=True):
        w = (rng.standard_normal((cout, cin, 3, 3)) * (2.0 / (cin * 9)) ** 0.5).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.w"),
                      numpy_helper.from_array((rng.standard_normal(cout) * 0.01).astype(np.float32), f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], name=name,
                                      kernel_shape=[3, 3], pads=[1] * 4, strides=[stride, stride]))
        if not relu:
            return f"{name}.y"
        nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"], name=f"{name}.relu"))
        return f"{name}.r"

    x, cin = conv("input", "stem", 3, widths[0]), widths[0]
    for s, width in enumerate(widths):
        if width != cin:
            x, cin = conv(x, f"down{s}", cin, width, stride=2), width
        for b in range(blocks):
            n = f"s{s}b{b}"
            h = conv(conv(x, f"{n}.conv1", width, width), f"{n}.conv2", width, width, relu=False)
            nodes.append(helper.make_node("Add", [x, h], [f"{n}.sum"], name=f"{n}.add"))
            nodes.append(helper.make_node("Relu", [f"{n}.sum"], [f"{n}.out"], name=f"{n}.relu"))
            x = f"{n}.out"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1))
    inits.extend([numpy_helper.from_array((rng.standard_normal((cin, 10)) * 0.05).astype(np.float32), "fc.w"),
                  numpy_helper.from_array(np.zeros(10, np.float32), "fc.b")])
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc"))
    graph = helper.make_graph(nodes, "residual_cnn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    return build_residual_cnn(tmp_path_factory.mktemp("chperf") / "cnn.onnx")


def test_the_estimate_counts_a_layer_between_two_pruned_groups_once():
    """Two groups each removing half of one layer's FLOPs remove 3/4 of it together, not all of it."""
    doc = {"dense_ms": 10.0, "layer_flops": {"conv": 100, "a_only": 50}, "total_flops": 200, "rows": [
        {"group": "a", "fraction": 0.5, "saved_ms": 3.0, "removed_flops": {"conv": 50, "a_only": 25}},
        {"group": "b", "fraction": 0.5, "saved_ms": 2.0, "removed_flops": {"conv": 50}},
    ]}
    # alone: each group's measured saving, interpolated through 0 (a at 0.25: half of 3 ms)
    assert estimated_saving(doc, {"a": 0.5})["saved_ms"] == pytest.approx(3.0)
    assert estimated_saving(doc, {"a": 0.25})["saved_ms"] == pytest.approx(1.5)
    # together: conv loses 75 FLOPs, split evenly (37.5 each): a keeps (37.5 + 25) / 75 of its saving, b 37.5/50
    est = estimated_saving(doc, {"a": 0.5, "b": 0.5})
    assert est["by_group"]["a"] == pytest.approx(3.0 * 62.5 / 75)
    assert est["by_group"]["b"] == pytest.approx(2.0 * 37.5 / 50)
    assert estimate_channel_speedup(doc, {"a": 0.5, "b": 0.5}) == pytest.approx(10.0 / (10.0 - est["saved_ms"]))
    assert flops_reduction(doc, {"a": 0.5, "b": 0.5}) == pytest.approx((75 + 25) / 200)


def test_gamma_above_one_makes_a_layer_thinned_twice_cheaper_than_its_flops():
    """With gamma 2 a layer keeping a quarter of its FLOPs keeps 1/16 of its cost: the two groups' joint saving
    grows, each alone saves what it measured."""
    doc = {"dense_ms": 10.0, "layer_flops": {"conv": 100}, "total_flops": 100, "gamma": 2.0, "rows": [
        {"group": "a", "fraction": 0.5, "saved_ms": 3.0, "removed_flops": {"conv": 50}},
        {"group": "b", "fraction": 0.5, "saved_ms": 3.0, "removed_flops": {"conv": 50}},
    ]}
    assert estimated_saving(doc, {"a": 0.5})["saved_ms"] == pytest.approx(3.0)
    # alone: 1 - 0.5**2 = 0.75 of the cost; together 1 - 0.25**2 = 0.9375, split evenly: each 3 * 0.46875/0.75
    assert estimated_saving(doc, {"a": 0.5, "b": 0.5})["saved_ms"] == pytest.approx(2 * 3.0 * 0.46875 / 0.75)
    doc["gamma"] = 1.0
    assert estimated_saving(doc, {"a": 0.5, "b": 0.5})["saved_ms"] == pytest.approx(2 * 3.0 * 0.375 / 0.5)


def test_the_fit_recovers_each_groups_saving_per_flop():
    """Savings made of known per-FLOP costs are fitted back (the pull to the pooled value is small when every
    group is seen in several combinations)."""
    from sparsify_tui.jobs.perf_channels import fit_ms_per_flop

    flops = {"l1": 100, "l2": 100, "l3": 100}
    solo = {"a": {"l1": 50}, "b": {"l2": 50}, "c": {"l3": 50}}
    truth = {"a": 0.02, "b": 0.01, "c": 0.0}
    combos = [["a", "b", "c"], ["a"], ["b"], ["a", "c"], ["b", "c"]]
    removed = [{g: solo[g] for g in c} for c in combos]
    saved = [sum(truth[g] * 50 for g in c) for c in combos]
    fit, sse = fit_ms_per_flop(removed, saved, flops, ["a", "b", "c"])
    assert fit["a"] > fit["b"] > fit["c"] >= 0
    assert fit["a"] == pytest.approx(0.02, rel=0.25) and fit["b"] == pytest.approx(0.01, rel=0.3)


def test_measured_speedup_of_a_channel_plan_is_within_20_percent_of_the_estimate(cnn, tmp_path):
    """Profile on ORT fp32, pick a plan at the profile's fractions, remove its channels physically and time
    it against the dense model (interleaved A/B): the must-hold of #26.

    On one core: on a shared 2-core machine ONNX Runtime's two intra-op threads wait for each other whenever
    one is descheduled, which stretches a long dense run more than a short pruned one (measured under load 10:
    dense 16-33 ms on two cores against 6-8 ms on one, the pruned file 1.8 ms on both)."""
    from sparsify_tui.analysis.shapes import infer
    from sparsify_tui.engines.runner import run_job
    from sparsify_tui.jobs.perf_channels import removed_count
    from sparsify_tui.onnxkit.channels import find_groups, remove_channels
    from sparsify_tui.profiles.perf_channels import run_channel_perf_profile

    doc = run_channel_perf_profile(cnn, engine="onnxruntime", cores=1, fractions=[0.25, 0.5], repeats=5,
                                   min_block_ms=150)
    groups = {g["id"]: g["channels"] for g in doc["groups"]}
    assert len(groups) == 6
    assert {(r["group"], r["fraction"]) for r in doc["rows"]} == {(g, f) for g in groups for f in (0.25, 0.5)}
    assert all(r["removed"] == removed_count(groups[r["group"]], r["fraction"]) for r in doc["rows"])
    # groups + 1 variants per fraction, the first pruning every group
    assert [len(c["groups"]) for c in doc["combinations"] if c["fraction"] == 0.5][0] == 6
    assert sum(c["fraction"] == 0.25 for c in doc["combinations"]) == 7
    assert doc["dense_ms"] > 0 and "physically removed" in doc["notes"][0]
    # half of every group at stage 0, a quarter at stage 1
    plan = {g: (0.5 if g in ("stem", "s0b0.conv1", "s0b1.conv1") else 0.25) for g in groups}
    estimate = estimate_channel_speedup(doc, plan)
    model = onnx.load(str(cnn))
    shapes = infer(model, 13)[1]
    assert {g.id for g in find_groups(model, shapes) if g.prunable} == set(groups)
    small = remove_channels(model, {g: range(removed_count(groups[g], f)) for g, f in plan.items()}, shapes)
    onnx.save(small, str(tmp_path / "small.onnx"))
    ab = run_job({"kind": "ab_benchmark", "model_a": str(cnn), "model_b": str(tmp_path / "small.onnx"),
                  "engine": "onnxruntime", "cores": 1, "repeats": 7, "warmup": 3, "iterations": 10,
                  "min_block_ms": 150, "change_samples": 1})
    measured = ab["median_ratio"]
    print(f"channel plan: estimate {estimate:.2f}x, measured {measured:.2f}x (spread {ab['speedup_spread']})")
    assert measured > 1.2, f"the plan removes {flops_reduction(doc, plan):.0%} of the FLOPs: it must run faster"
    assert abs(estimate / measured - 1) <= 0.2, (estimate, measured, ab["speedup_spread"])


def test_a_project_caches_the_channel_profile_by_its_settings(cnn, tmp_path, capsys):
    """Measured once into the project, the same settings reuse it; other fractions measure again."""
    from sparsify_tui.project import Project

    Project.create(cnn, dir=tmp_path / "proj", name="cnn").close()
    argv = ["profile", "perf", str(tmp_path / "proj"), "--structure", "channels", "--engine", "onnxruntime",
            "--fractions", "0.5", "--combinations", "3", "--repeats", "1", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    # 3 variants measured, a fitted saving for each of the 6 groups (never below 0)
    assert len(doc["combinations"]) == 3 and len(doc["rows"]) == 6
    assert all(r["saved_ms"] >= 0 for r in doc["rows"])
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["profile_id"] == doc["profile_id"] and "reused cached profile" in err
    p = Project.open(tmp_path / "proj")
    try:
        (entry,) = p.profiles_of("perf_channels")
        assert entry.name == f"channels onnxruntime b1 c{doc['cores']}"
    finally:
        p.close()


def _no_group_model(path):
    """A Gemm whose output is the graph's output: its one channel space cannot lose a channel."""
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("flags, message", [
    (["--fractions", "0.5,1"], "each fraction of channels removed must be in (0, 1)"),
    (["--fractions", "half"], "--fractions must be numbers"),
    (["--fractions", ","], "--fractions needs at least one fraction"),
    (["--combinations", "0"], "--combinations must be at least 1"),
    (["--precision", "fp16"], "must be one of fp32, int8, bf16"),
    (["--levels", "0.5"], "use --fractions"),
])
def test_bad_channel_flags_are_one_line_errors(capsys, cnn, flags, message):
    code = main(["profile", "perf", str(cnn), "--structure", "channels", *flags])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_fractions_need_channels_and_structure_is_checked(capsys, cnn):
    assert main(["profile", "perf", str(cnn), "--fractions", "0.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --fractions needs --structure channels"
    assert main(["profile", "perf", str(cnn), "--structure", "blocks"]) == 2
    assert "--structure must be unstructured or channels" in capsys.readouterr().err


def test_a_model_without_a_prunable_group_is_one_error_line(capsys, tmp_path):
    code = main(["profile", "perf", str(_no_group_model(tmp_path / "fc.onnx")), "--structure", "channels",
                 "--engine", "onnxruntime"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err[-1] == "error: the model has no prunable channel group: no channel perf profile to measure"
    assert not any("Traceback" in line for line in err)


def test_int8_variants_are_quantized_pruned_files(cnn):
    """--precision int8: the dense model and every variant are quantized (QDQ) before timing; the variant
    pruning half of every group's channels runs faster than the dense INT8 model in the same run."""
    from sparsify_tui.profiles.perf_channels import run_channel_perf_profile

    doc = run_channel_perf_profile(cnn, engine="onnxruntime", precision="int8", cores=1, fractions=[0.5],
                                   combinations=1, repeats=3, min_block_ms=60)
    (combo,) = doc["combinations"]
    assert doc["precision"] == "int8" and len(combo["groups"]) == 6
    assert combo["ratio"] < 0.8, combo
