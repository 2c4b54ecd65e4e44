"""The Optimization model: (de)serialization without None, TOML, validation, default schedule."""

from __future__ import annotations

import sys

import pytest
import tomli_w

from sparsify_tui.errors import UsageError
from sparsify_tui.optim.optimization import (
    SCHEDULE_HELP,
    LayerResult,
    LRModifier,
    Optimization,
    default_optimization,
    default_schedule,
    reschedule,
)
from sparsify_tui.optim.synthetic import synthetic_graph

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _walk(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from _walk(v)
    yield x


def _full():
    opt = default_optimization(synthetic_graph([100, 200]), 100, "full")
    opt.pruning.overrides = {"conv0": 0.5}
    opt.pruning.exclusions = {"conv1": "excluded by user"}
    opt.lr_modifiers.append(LRModifier("multi_step", 60, 90, 0.001, {"gamma": 0.5, "milestones": [70.0, 80.0]}))
    opt.lr_modifiers.append(LRModifier("cosine", 90, -1, 0.001, {"lr_min": 0.0, "cycle_epochs": 5.0}))
    opt.quantization.enabled = True
    opt.quantization.layers = ["conv0"]
    opt.layers = {"conv0": LayerResult(0.5, "", True), "conv1": LayerResult(0.0, "excluded by user")}
    return opt


def test_to_dict_has_no_none_and_survives_toml():
    d = _full().to_dict()
    assert all(v is not None for v in _walk(d))
    back = tomllib.loads(tomli_w.dumps(d))
    assert Optimization.from_dict(back).to_dict() == d


def test_from_dict_is_tolerant_of_missing_keys():
    opt = Optimization.from_dict({"name": "x", "pruning": {"target_sparsity": 0.7}})
    assert opt.name == "x" and opt.pruning.target_sparsity == 0.7
    assert opt.pruning.max_sparsity == 0.95 and opt.pruning.balance == 0.5
    assert opt.end_epoch == 100.0 and opt.lr_modifiers == []
    assert Optimization.from_dict({}).name == "default"


def test_from_dict_bad_type_is_one_sentence():
    with pytest.raises(UsageError, match="pruning.balance must be a number"):
        Optimization.from_dict({"pruning": {"balance": "lots"}})
    with pytest.raises(UsageError, match="lr_modifiers must be a list"):
        Optimization.from_dict({"lr_modifiers": {"a": 1}})


@pytest.mark.parametrize("mutate, message", [
    (lambda o: setattr(o.pruning, "target_sparsity", 1.0), "target sparsity must be in \\[0, 1\\)"),
    (lambda o: setattr(o.pruning, "balance", -0.1), "balance must be in \\[0, 1\\]"),
    (lambda o: setattr(o, "epochs", 0), "epochs must be between 1"),
    (lambda o: setattr(o, "end_epoch", 0.0), "epoch range must end after it starts"),
    (lambda o: setattr(o.pruning, "end_epoch", 0.5), "pruning must end after it starts"),
    (lambda o: setattr(o.pruning, "end_epoch", 200.0), "must lie in the epoch range"),
    (lambda o: setattr(o.pruning, "update_frequency", 0.0), "update frequency must be above 0"),
    (lambda o: setattr(o.pruning, "interpolation", "quadratic"), "interpolation must be one of"),
    (lambda o: setattr(o.pruning, "mask_type", "block2"), "mask type must be one of"),
    (lambda o: setattr(o.pruning, "max_sparsity", 1.0), "per-layer cap"),
    (lambda o: setattr(o.lr_modifiers[0], "init_lr", 0.0), "initial learning rate must be in \\(0, 1\\]"),
    (lambda o: setattr(o.lr_modifiers[0], "init_lr", 1.5), "initial learning rate must be in \\(0, 1\\]"),
    (lambda o: o.lr_modifiers.append(LRModifier("multi_step", 10, 20, 0.1, {"gamma": 0.1, "milestones": [20.0]})),
     "milestone 20 must be strictly between 10 and 20"),
    (lambda o: o.lr_modifiers.append(LRModifier("multi_step", 10, 20, 0.1, {"gamma": 0.1, "milestones": [15.0, 12.0]})),
     "strictly increasing"),
    (lambda o: o.lr_modifiers.append(LRModifier("step", 10, 20, 0.1, {"gamma": 0.1, "step_size": 0})), "step size"),
    (lambda o: o.lr_modifiers.append(LRModifier("exponential", 10, 5, 0.1, {"gamma": 0.9})), "end epoch must be -1"),
    (lambda o: o.lr_modifiers.append(LRModifier("warmup", 10, 20, 0.1, {})), "kind must be one of"),
    (lambda o: setattr(o.quantization, "bits", 4), "bits must be 8"),
    (lambda o: setattr(o.pruning, "leave_enabled", False), "leave enabled must stay true"),
    (lambda o: o.pruning.overrides.update(conv0=1.0), "override for layer 'conv0'"),
])
def test_validate_rejects_bad_fields(mutate, message):
    opt = default_optimization(synthetic_graph([100]), 100)
    opt.validate()
    mutate(opt)
    with pytest.raises(UsageError, match=message) as ei:
        opt.validate()
    assert "\n" not in str(ei.value)


def test_validate_checks_layer_ids():
    opt = default_optimization(synthetic_graph([100]), 100)
    opt.pruning.overrides = {"nope": 0.5}
    with pytest.raises(UsageError, match="not in the model"):
        opt.validate(["conv0", "relu0"])


def test_default_schedule_e100():
    sch = default_schedule(100)
    assert (sch["pruning_start"], sch["pruning_end"], sch["update_frequency"]) == (1.0, 60.0, 1.475)
    assert sch["end_epoch"] == 100.0
    opt = default_optimization(None, 100)
    opt.validate()
    kinds = [m.kind for m in opt.lr_modifiers]
    assert kinds == ["set", "step"]
    step = opt.lr_modifiers[1]
    assert step.start_epoch == 60 and step.args == {"gamma": 0.1, "step_size": 14.0}
    # the LR reaches the documented final 1e-4 before the end of training
    assert step.lr_at(99) == pytest.approx(1e-4)
    assert "E=100: 1 to 60" in SCHEDULE_HELP


@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 7, 10, 55, 100, 1000])
def test_default_schedule_is_valid_for_any_length(epochs):
    opt = default_optimization(synthetic_graph([10]), epochs)
    opt.quantization.enabled = True
    opt.validate()
    assert opt.end_epoch == epochs
    assert opt.pruning.start_epoch < opt.pruning.end_epoch <= epochs


def test_reschedule_keeps_allocation_settings():
    opt = _full()
    new = reschedule(opt, 30)
    assert new.epochs == 30 and new.end_epoch == 30.0 and new.pruning.end_epoch == 18.0
    assert new.pruning.overrides == opt.pruning.overrides
    new.validate()


def test_model_without_prunable_layers_disables_pruning():
    g = synthetic_graph([10])
    for lay in g.layers:
        lay.prunable = False
    opt = default_optimization(g)
    assert not opt.pruning.enabled and "no prunable layer" in opt.notes


def test_copy_is_a_new_version():
    opt = _full()
    c = opt.copy(name="v2")
    c.pruning.overrides["conv0"] = 0.1
    assert opt.pruning.overrides["conv0"] == 0.5 and c.name == "v2"


def test_multi_step_lr_counts_milestones_reached():
    m = LRModifier("multi_step", 0, 30, 0.1, {"gamma": 0.1, "milestones": [10.0, 20.0]})
    assert m.lr_at(9.9) == pytest.approx(0.1)
    assert m.lr_at(10) == pytest.approx(0.01)  # the original's preview counted milestones >= epoch
    assert m.lr_at(25) == pytest.approx(0.001)
