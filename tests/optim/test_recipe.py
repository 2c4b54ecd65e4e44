"""Recipe export / import: valid YAML with tags, SparseML constraints, exact round trip, name maps."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsify_tui.errors import RecipeError, UsageError
from sparsify_tui.optim.estimate import Evaluator
from sparsify_tui.optim.optimization import LRModifier, default_optimization
from sparsify_tui.optim.recipe import export_recipe, import_recipe, load_name_map, load_recipe_yaml
from sparsify_tui.optim.synthetic import synthetic_model

HSET = settings(max_examples=int(os.environ.get("OPTIM_EXAMPLES", "40")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
MODEL = synthetic_model(25, seed=7)


@st.composite
def optimizations(draw):
    graph, perf, loss = MODEL
    epochs = draw(st.integers(1, 300))
    opt = default_optimization(graph, epochs, draw(st.text(min_size=1, max_size=20).filter(
        lambda s: s.strip() and "\n" not in s)))
    p = opt.pruning
    p.target_sparsity = draw(st.floats(0.0, 0.95))
    p.balance = draw(st.floats(0.0, 1.0))
    p.buckets = draw(st.sampled_from([0, 1, 3, 6]))
    p.interpolation = draw(st.sampled_from(["linear", "cubic", "inverse_cubic"]))
    p.mask_type = draw(st.sampled_from(["unstructured", "block4", "channel", "filter"]))
    p.init_sparsity = draw(st.floats(0.0, 0.5))
    ids = [lay.id for lay in graph.prunable_layers]
    p.overrides = {i: draw(st.floats(0.0, 0.99)) for i in draw(st.lists(st.sampled_from(ids[:8]), unique=True, max_size=3))}
    p.exclusions = {i: draw(st.sampled_from(["excluded by user", "first layer: keep it dense"]))
                    for i in draw(st.lists(st.sampled_from(ids[10:]), unique=True, max_size=3))}
    p.min_sparsity = draw(st.sampled_from([0.0, 0.3]))
    p.enabled = draw(st.booleans()) or True
    if epochs >= 10 and draw(st.booleans()):
        a, b = opt.pruning.end_epoch, float(epochs)
        if b - a > 2:
            opt.lr_modifiers.append(LRModifier("multi_step", a, b, draw(st.floats(1e-6, 1.0)),
                                               {"gamma": draw(st.floats(0.01, 1.0)), "milestones": [a + 1.0, b - 0.5]}))
            opt.lr_modifiers.append(LRModifier("exponential", a, -1.0, 1e-3, {"gamma": 0.95}))
            opt.lr_modifiers.append(LRModifier("cosine", a, b, 0.05, {"lr_min": 1e-7, "cycle_epochs": 2.5}))
    if draw(st.booleans()):
        opt.quantization.enabled = True
        opt.quantization.layers = "all" if draw(st.booleans()) else draw(st.lists(st.sampled_from(ids), unique=True))
    opt.notes = draw(st.text(max_size=30))
    ev = Evaluator(graph, perf, loss)
    return ev.allocate(opt)


def _check_constraints(text: str) -> None:
    # any YAML loader that accepts unknown tags reads it: compose() needs no constructors
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    assert node is not None
    doc = load_recipe_yaml(text)
    assert doc["version"] == "1.1.0"
    assert text.count("\nversion: 1.1.0\n\nmodifiers:\n") == 1
    ends = []
    for m in doc["modifiers"]:
        tag = m["__tag__"]
        keys = [k for k in m if k != "__tag__"]
        assert keys == sorted(keys)
        ends.append(m.get("end_epoch", -1.0))
        if tag == "GMPruningModifier":
            assert 0 < m["final_sparsity"] < 1
            assert 0 <= m["init_sparsity"] <= m["final_sparsity"]
            assert m["start_epoch"] < m["end_epoch"] and m["update_frequency"] > 0
            assert m["inter_func"] in ("linear", "cubic", "inverse_cubic")
            assert isinstance(m["params"], list) and m["params"]
        if tag == "LearningRateModifier":
            assert 0 < m["init_lr"] <= 1
            if m["lr_class"] == "MultiStepLR":
                end = m["end_epoch"] if m["end_epoch"] != -1 else doc["modifiers"][0].get("end_epoch", 1e9)
                assert all(m["start_epoch"] < x < end for x in m["lr_kwargs"]["milestones"])
        if tag == "SetLearningRateModifier":
            assert 0 < m["learning_rate"] <= 1
        if tag == "QuantizationModifier":
            assert "end_epoch" not in m
    # SparseML's order: end epoch ascending, -1 last
    key = [(e == -1, e) for e in ends]
    assert key == sorted(key)
    assert "eval(" not in text
    assert all(len(line) - len(line.lstrip()) in (0, 4, 8) for line in text.splitlines() if line.strip())


@HSET
@given(optimizations())
def test_export_then_import_gives_back_the_same_optimization(opt):
    graph = MODEL[0]
    text = export_recipe(opt, graph)
    _check_constraints(text)
    back = import_recipe(text, graph)
    assert back.to_dict() == opt.to_dict()
    assert export_recipe(back, graph) == text


@HSET
@given(optimizations())
def test_import_without_metadata_keeps_what_the_recipe_says(opt):
    graph = MODEL[0]
    text = "\n".join(line for line in export_recipe(opt, graph).splitlines() if not line.startswith("# sparsify-tui"))
    warns: list[str] = []
    back = import_recipe(text, graph, warnings=warns)
    assert warns == []
    assert {k: v.sparsity for k, v in back.layers.items()} == {
        k: v.sparsity for k, v in opt.layers.items() if k in back.layers}
    if any(r.sparsity > 0 for r in opt.layers.values()):  # else the recipe has no pruning modifier
        for k in ("start_epoch", "end_epoch", "update_frequency", "interpolation", "mask_type", "leave_enabled"):
            assert getattr(back.pruning, k) == getattr(opt.pruning, k)
    assert (back.start_epoch, back.end_epoch) == (opt.start_epoch, opt.end_epoch)
    assert [m.to_dict() for m in back.lr_modifiers] == [m.to_dict() for m in sorted(
        opt.lr_modifiers, key=lambda m: [x.to_dict() for x in back.lr_modifiers].index(m.to_dict()))]
    assert back.quantization.enabled == opt.quantization.enabled
    # re-allocating the imported plan reproduces it: the recipe's values are overrides
    ev = Evaluator(graph, MODEL[1], MODEL[2])
    again = ev.allocate(back)
    assert {k: v.sparsity for k, v in again.layers.items()} == {k: v.sparsity for k, v in back.layers.items()}


def test_edited_recipe_modifiers_win_over_metadata():
    graph, perf, loss = MODEL
    opt = Evaluator(graph, perf, loss).allocate(default_optimization(graph, 50, "base"))
    text = export_recipe(opt, graph)
    first = re.search(r"final_sparsity: ([0-9.]+)", text).group(1)
    edited = text.replace(f"final_sparsity: {first}", "final_sparsity: 0.123", 1)
    warns: list[str] = []
    back = import_recipe(edited, graph, warnings=warns)
    assert any("edited after export" in w for w in warns)
    assert back.name == "base"
    assert 0.123 in {r.sparsity for r in back.layers.values()}


SPARSEML_STYLE = """
num_epochs: 10.0
pruning_end: eval(num_epochs * 0.5)
lr: 0.05
training_modifiers:
  - !EpochRangeModifier
    start_epoch: 0.0
    end_epoch: eval(num_epochs)
  - !pytorch.SetLearningRateModifier
    start_epoch: 0.0
    learning_rate: eval(lr)
pruning_modifiers:
  - !GMPruningModifier
    params: ["re:layer1[0-9].weight"]
    init_sparsity: 0.05
    final_sparsity: 0.8
    start_epoch: 1.0
    end_epoch: eval(pruning_end)
    update_frequency: 0.5
  - !GMPruningModifier
    params: ["layer3.weight", "does.not.exist"]
    init_sparsity: 0.05
    final_sparsity: 0.5
    start_epoch: 1.0
    end_epoch: eval(pruning_end)
    update_frequency: 0.5
  - !ConstantPruningModifier
    params: __ALL__
"""


def test_import_sparseml_style_recipe_with_variables_regex_and_unknown_names():
    graph = MODEL[0]
    warns: list[str] = []
    opt = import_recipe(SPARSEML_STYLE, graph, warnings=warns)
    assert opt.end_epoch == 10.0 and opt.pruning.end_epoch == 5.0
    assert opt.lr_modifiers[0].init_lr == 0.05
    assert opt.layers["conv10"].sparsity == 0.8 and opt.layers["conv19"].sparsity == 0.8
    assert opt.layers["conv3"].sparsity == 0.5 and opt.layers["conv0"].sparsity == 0.0
    assert any("does.not.exist" in w for w in warns)
    assert any("ConstantPruningModifier" in w for w in warns)


def test_import_markdown_front_matter():
    graph = MODEL[0]
    md = "---\n" + SPARSEML_STYLE.strip() + "\n---\n\n# My recipe\n\nSome text with: colons\n"
    assert import_recipe(md, graph).pruning.end_epoch == 5.0


def test_all_prunable_keyword():
    graph = MODEL[0]
    text = "modifiers:\n  - !GMPruningModifier\n    params: __ALL_PRUNABLE__\n    final_sparsity: 0.7\n" \
           "    start_epoch: 0.0\n    end_epoch: 5.0\n    update_frequency: 1.0\n"
    opt = import_recipe(text, graph)
    assert all(r.sparsity == 0.7 for r in opt.layers.values())
    assert opt.pruning.target_sparsity == pytest.approx(0.7)


@pytest.mark.parametrize("text, message", [
    ("stage_0:\n  pruning_modifiers:\n    - !GMPruningModifier\n      final_sparsity: 0.5\n", "staged recipes are not supported"),
    ("version: 1.1.0\n", "no 'modifiers' list"),
    ("modifiers: [\n", "not valid YAML"),
    ("x: eval(y)\ny: eval(x)\nmodifiers:\n  - !EpochRangeModifier\n    start_epoch: 0.0\n    end_epoch: eval(x)\n",
     "cannot be resolved"),
    ("a: eval(__import__('os'))\nmodifiers: []\n", "other than numbers"),
    ("modifiers:\n  - !GMPruningModifier\n    params: ['layer1.weight']\n    final_sparsity: 1.0\n"
     "    start_epoch: 0.0\n    end_epoch: 2.0\n", "strictly between 0 and 1"),
    ("modifiers:\n  - !SetLearningRateModifier\n    learning_rate: 2.0\n", "initial learning rate must be in"),
])
def test_bad_recipes_are_one_sentence(text, message):
    with pytest.raises(RecipeError, match=message) as ei:
        import_recipe(text, MODEL[0])
    assert "\n" not in str(ei.value)


def test_name_map_json_and_csv(tmp_path):
    graph, perf, loss = MODEL
    opt = Evaluator(graph, perf, loss).allocate(default_optimization(graph))
    mapping = {f"layer{i}.weight": f"model.block{i}.conv.weight" for i in range(25)}
    js = tmp_path / "map.json"
    js.write_text(json.dumps(mapping | {"ghost.weight": "model.ghost"}))
    nm, warns = load_name_map(js, graph)
    assert nm["layer3.weight"] == "model.block3.conv.weight"
    assert any("ghost.weight" in w for w in warns)
    text = export_recipe(opt, graph, nm)
    assert "model.block3.conv.weight" in text and "'layer3.weight'" not in text
    assert "framework parameter names" in text.splitlines()[1]
    back = import_recipe(text, graph, nm)
    assert back.to_dict() == opt.to_dict()
    with pytest.raises(RecipeError, match="import it with the same --name-map"):
        import_recipe(text, graph)
    csvp = tmp_path / "map.csv"
    csvp.write_text("onnx_name,framework_name\n" + "".join(f"{k},{v}\n" for k, v in list(mapping.items())[:5]))
    nm2, warns2 = load_name_map(csvp, graph)
    assert len(nm2) == 5 and any("keep their ONNX names" in w for w in warns2)
    stripped = "\n".join(x for x in text.splitlines() if not x.startswith("# sparsify-tui"))
    assert {k: v.sparsity for k, v in import_recipe(stripped, graph, nm).layers.items()} == {
        k: v.sparsity for k, v in opt.layers.items()}


@pytest.mark.parametrize("content, suffix, message", [
    ("[1, 2]", ".json", "must be a JSON object"),
    ("{bad json", ".json", "not valid JSON"),
    ("a,b,c\n", ".csv", "must have 2 columns"),
    ("", ".csv", "is empty"),
])
def test_bad_name_maps(tmp_path, content, suffix, message):
    p = tmp_path / f"map{suffix}"
    p.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_name_map(p)


def test_header_warns_about_onnx_names_and_quotes_odd_names():
    graph, perf, loss = MODEL
    graph.layers[0].weight_name = "it's: a [weird] name"
    try:
        opt = Evaluator(graph, perf, loss).allocate(default_optimization(graph))
        opt.pruning.overrides = {"conv0": 0.5}
        opt = Evaluator(graph, perf, loss).allocate(opt)
        text = export_recipe(opt, graph)
        assert "ONNX weight (initializer) names" in text
        assert "--name-map" in text
        doc = load_recipe_yaml(text)
        names = [n for m in doc["modifiers"] for n in m.get("params", [])]
        assert "it's: a [weird] name" in names
        assert import_recipe(text, graph).layers["conv0"].sparsity == 0.5
    finally:
        graph.layers[0].weight_name = "layer0.weight"


def test_small_floats_stay_floats():
    graph, perf, loss = MODEL
    opt = Evaluator(graph, perf, loss).allocate(default_optimization(graph))
    opt.lr_modifiers[0].init_lr = 1e-5
    text = export_recipe(opt, graph)
    assert "learning_rate: 1.0e-05" in text
    assert import_recipe(text, graph).lr_modifiers[0].init_lr == 1e-5


@pytest.mark.skipif(not os.environ.get("SPARSEML_PYTHON"),
                    reason="set SPARSEML_PYTHON to a Python with sparseml 1.8 to load recipes with SparseML itself")
@HSET
@given(optimizations())
def test_recipes_load_in_sparseml(tmp_path_factory, opt):
    """SparseML's own parser and modifier classes accept every exported recipe (validating every value)."""
    import subprocess
    from pathlib import Path

    path = tmp_path_factory.mktemp("sparseml") / "recipe.yaml"
    path.write_text(export_recipe(opt, MODEL[0]))
    checker = Path(__file__).with_name("sparseml_check.py")
    r = subprocess.run([os.environ["SPARSEML_PYTHON"], str(checker), str(path)], capture_output=True, text=True,
                       timeout=120)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ok"], out.get("error")
    n_pruned = sum(1 for v in opt.layers.values() if v.sparsity > 0)
    assert out.get("params", 0) == n_pruned


_TAGS = ["GMPruningModifier", "EpochRangeModifier", "SetLearningRateModifier", "LearningRateModifier",
         "QuantizationModifier", "pytorch.GMPruningModifier", "Unknown"]
_KEYS = ["params", "final_sparsity", "init_sparsity", "start_epoch", "end_epoch", "update_frequency", "inter_func",
         "mask_type", "leave_enabled", "learning_rate", "lr_class", "lr_kwargs", "init_lr", "ignore"]
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 200), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["abc", "eval(1+)", "eval(x)", "eval(x * 2)", "__ALL__", "re:(", "re:layer1.*", "StepLR",
                     "MultiStepLR", "CosineAnnealingWarmRestarts", "cubic", "block4", "layer1.weight"]),
    st.lists(st.sampled_from(["layer1.weight", "nope", 1, 2.5]), max_size=3),
    st.dictionaries(st.sampled_from(["gamma", "milestones", "step_size", "lr_min", "cycle_epochs", "0.5"]),
                    st.one_of(st.floats(-1, 2), st.text(max_size=3), st.lists(st.floats(0, 100), max_size=3)),
                    max_size=3),
)


@HSET
@given(st.lists(st.tuples(st.sampled_from(_TAGS), st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=7)),
                max_size=5),
       st.sampled_from(["modifiers", "training_modifiers", "x: eval(2)\nmodifiers"]))
def test_any_recipe_text_imports_or_fails_with_one_sentence(mods, top):
    parts = []
    for tag, props in mods:
        body = "".join(f"    {k}: {json.dumps(v, allow_nan=True).replace('NaN', '.nan').replace('-Infinity', '-.inf').replace('Infinity', '.inf')}\n"
                       for k, v in props.items())
        parts.append(f"  - !{tag}\n{body}" if body else f"  - !{tag}\n")
    text = f"{top}:\n" + "".join(parts) if parts else f"{top}: []\n"
    try:
        opt = import_recipe(text, MODEL[0])
    except (RecipeError, UsageError) as exc:
        assert "\n" not in str(exc)
    else:
        opt.validate()


def test_final_sparsity_mapping_form_and_framework_prefixed_tags():
    text = """
modifiers:
  - !pytorch.EpochRangeModifier
    start_epoch: 0.0
    end_epoch: 20.0
  - !pytorch.GMPruningModifier
    params: []
    final_sparsity: {0.6: ['layer1.weight', 'layer2.weight'], 0.9: ['layer5.weight']}
    init_sparsity: 0.05
    start_epoch: 2.0
    end_epoch: 12.0
    update_frequency: 0.5
    mask_type: [1, 4]
"""
    warns: list[str] = []
    opt = import_recipe(text, MODEL[0], warnings=warns)
    s = {k: v.sparsity for k, v in opt.layers.items() if v.sparsity}
    assert s == {"conv1": 0.6, "conv2": 0.6, "conv5": 0.9}
    assert (opt.pruning.start_epoch, opt.pruning.end_epoch, opt.end_epoch) == (2.0, 12.0, 20.0)
    assert any("block shape" in w for w in warns)
