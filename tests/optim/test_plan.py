"""The plan model: one reader/writer of every stored form, and what its consumers read from it."""

from __future__ import annotations

import json
import tomllib

import pytest
import tomli_w

from sparsify_tui.errors import UsageError
from sparsify_tui.optim.optimization import Optimization, default_optimization
from sparsify_tui.optim.plan import LayerPlan, Plan, Precision, Structure


def _stored(layers: dict, **top) -> dict:
    d = default_optimization(None, 10).to_dict()
    d["layers"] = layers
    d.update(top)
    return d


def test_todays_entry_forms_read_and_write_back_unchanged():
    layers = {"a": {"sparsity": 0.8}, "b": {"sparsity": 0.0, "excluded_reason": "excluded by user"},
              "c": {"sparsity": 0.5, "overridden": True}}
    d = _stored(layers, perf_profile_id="perf-1", loss_profile_id="", quant_profile_id="quant-2")
    opt = Optimization.from_dict(d)
    assert opt.plan.entries["c"] == LayerPlan(0.5, overridden=True)
    assert opt.plan.perf_profile_id == opt.perf_profile_id == "perf-1"
    out = opt.to_dict()
    assert out == d and list(out) == list(d)  # same keys, same order: the TOML file is rewritten byte for byte
    assert tomli_w.dumps(out) == tomli_w.dumps(d)


def test_bare_numbers_are_sparsities():
    plan = Plan.from_dict({"layers": {"a": 0.75, "b": 0, "c": {"sparsity": 0.25}}})
    assert plan.sparsities() == {"a": 0.75, "c": 0.25}
    assert plan.to_dict()["layers"] == {"a": {"sparsity": 0.75}, "b": {"sparsity": 0.0}, "c": {"sparsity": 0.25}}


def test_channel_groups_and_precisions_round_trip_through_toml():
    plan = Plan({"conv1": LayerPlan(0.6, precision=Precision.FP32),
                 "grp-0": LayerPlan(0.25, structure=Structure.CHANNELS, layers=("conv2", "conv3")),
                 "fc": LayerPlan(0.9)}, perf_profile_id="perf-1", default_precision=Precision.INT8,
                estimates={"speedup": 2.5})
    text = tomli_w.dumps(plan.to_dict())
    back = Plan.from_dict(tomllib.loads(text))
    assert back == plan
    assert back.sparsities() == {"conv1": 0.6, "fc": 0.9}
    assert back.sparsities(Structure.CHANNELS) == {"grp-0": 0.25}
    assert back.precision_by_layer() == {"conv1": Precision.FP32, "conv2": Precision.INT8,
                                         "conv3": Precision.INT8, "fc": Precision.INT8}
    assert back.precision_by_layer(["conv1", "head"])["head"] is Precision.INT8  # the default covers the rest
    with pytest.raises(UsageError, match="channel pruner"):
        back.unstructured()


def test_an_unstructured_plan_writes_no_new_key():
    d = Plan({"a": LayerPlan(0.5)}).to_dict()
    assert d == {"layers": {"a": {"sparsity": 0.5}}, "perf_profile_id": "", "loss_profile_id": "",
                 "quant_profile_id": ""}


@pytest.mark.parametrize("layers,match", [
    ({"a": "lots"}, r"layers\[a\] must be a table"),
    ({"a": {"sparsity": "x"}}, r"layers\[a\]\.sparsity must be a number"),
    ({"a": {"sparsity": 0.5, "structure": "blocks"}}, r"layers\[a\]\.structure must be one of unstructured"),
    ({"a": {"sparsity": 0.5, "precision": "fp8"}}, r"layers\[a\]\.precision must be one of fp32, int8"),
    ({"g": {"sparsity": 0.5, "structure": "channels"}}, r"layers\[g\]: a channel group must list its layers"),
])
def test_bad_entries_say_which_field(layers, match):
    with pytest.raises(UsageError, match=match):
        Optimization.from_dict(_stored(layers))


def test_digest_of_an_unstructured_plan_is_the_deploy_search_hash_of_before():
    import hashlib

    sp = {"b": 0.5, "a": 0.8123456789}
    old = hashlib.sha256(json.dumps({k: round(float(v), 6) for k, v in sorted(sp.items())},
                                    sort_keys=True).encode()).hexdigest()[:16]
    plan = Plan.from_sparsities(sp)
    assert plan.digest() == old
    plan.entries["a"].precision = Precision.INT8
    assert plan.digest() != old  # a precision is part of what the plan does


def test_copy_keeps_the_plan_apart():
    opt = Optimization.from_dict(_stored({"a": {"sparsity": 0.5}}, perf_profile_id="perf-1"))
    new = opt.copy("v2")
    new.layers["a"].sparsity = 0.9
    assert opt.layers["a"].sparsity == 0.5 and new.perf_profile_id == "perf-1"
    assert opt.copy(with_layers=False).plan.entries == {} and opt.copy(with_layers=False).perf_profile_id == "perf-1"


def test_the_stored_fixture_projects_plans_round_trip():
    from pathlib import Path

    d = Path(__file__).resolve().parents[1] / "fixtures" / "project_v1" / "project" / "optimizations"
    for name in ("default", "balanced"):
        stored = json.loads((d / f"{name}.json").read_text())
        plan = Optimization.from_dict(stored).plan
        assert plan.sparsities() and plan.perf_profile_id == stored["perf_profile_id"]
        assert plan.to_dict() == {k: stored[k] for k in ("layers", "perf_profile_id", "loss_profile_id",
                                                         "quant_profile_id")}
        assert plan.sparsities() == {k: v["sparsity"] for k, v in stored["layers"].items() if v["sparsity"] > 0}


def test_a_per_layer_precision_reaches_the_recipe_and_the_pruner_refuses_channel_groups(tmp_path):
    """The lever of HACKING.md: a precision set in the plan is the one the recipe's quantization follows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    from sparsify_tui.analysis import analyze
    from sparsify_tui.optim.prune import prune_model
    from sparsify_tui.optim.recipe import export_recipe, import_recipe

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), f"w{i}") for i in range(3)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}"]) for i in range(3)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("h2", TensorProto.FLOAT, [1, 64])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    graph = analyze(path)
    ids = [lay.id for lay in graph.prunable_layers]
    opt = default_optimization(graph, 10)
    opt.quantization.enabled = True
    opt.plan.entries = {lid: LayerPlan(0.5) for lid in ids}
    plain = export_recipe(opt, graph)
    assert "ignore" not in plain
    opt.plan.entries[ids[1]].precision = Precision.FP32
    text = export_recipe(opt, graph)
    assert "ignore: [w1]" in text.replace("'", "").replace('"', "")
    back = import_recipe(text, graph)  # an unedited export comes back with its precision
    assert back.plan.entries[ids[1]].precision is Precision.FP32 and back.plan.sparsities() == opt.plan.sparsities()
    pruned = prune_model(str(path), opt.plan, graph=graph)
    assert sum(int((numpy_helper.to_array(t) == 0).sum()) for t in pruned.graph.initializer) == 3 * 2048
    opt.plan.entries["grp"] = LayerPlan(0.5, structure=Structure.CHANNELS, layers=(ids[0],))
    with pytest.raises(UsageError, match="channel pruner"):
        prune_model(str(path), opt.plan, graph=graph)


def test_fp32_node_names_are_the_layers_kept_fp32_while_the_rest_is_int8():
    from types import SimpleNamespace as L

    from sparsify_tui.optim.plan import LayerPlan, Plan, Precision

    plan = Plan({"a": LayerPlan(precision=Precision.FP32), "b": LayerPlan(precision=Precision.INT8),
                 "c": LayerPlan(), "d": LayerPlan(precision=Precision.FP32)}, default_precision=Precision.INT8)
    layers = [L(id="a", name="conv_a"), L(id="b", name="conv_b"), L(id="c", name="conv_c"), L(id="d", name="")]
    assert plan.fp32_node_names(layers) == ["conv_a"]  # d has no node name a quantizer could exclude
    assert Plan().fp32_node_names(layers) == []
