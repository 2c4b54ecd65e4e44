"""The optimizer's editor without the app: stepping, typed values, overrides, undo, versions and saving.

Real allocations and estimates on the demo model (27 layers, 12 prunable), with the approximated
profiles the optimizer falls back to; each test takes a copy of one project made for the module.
"""

from __future__ import annotations

import shutil

import pytest

from sparsify_tui.actions.optimizer import OptimizerContext, default_optimization_name
from sparsify_tui.actions.optimizer_editor import OptimizationEditor
from sparsify_tui.cli import main
from sparsify_tui.errors import UsageError
from sparsify_tui.optim.optimization import INTERPOLATIONS, REASON_USER
from sparsify_tui.project import Project
from sparsify_tui.settings import parse_sparsity

LAYER = "layer1.0.conv1"  # a prunable layer in the middle of the demo model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from sparsify_tui.analysis.demo import build_demo_model

    d = tmp_path_factory.mktemp("editor")
    model = build_demo_model(d / "demo.onnx")
    project = Project.create(model, dir=d / "proj", name="demo")
    ctx = OptimizerContext.for_project(project)
    project.close()
    return d / "proj", ctx


@pytest.fixture
def project(base, tmp_path):
    shutil.copytree(base[0], tmp_path / "proj")
    p = Project.open(tmp_path / "proj")
    yield p
    p.close()


@pytest.fixture
def ed(project, base):
    editor = OptimizationEditor(project, base[1])
    assert editor.open() is True  # nothing stored yet: a new default optimization, not saved
    assert editor.dirty and editor.opt.name == "default"
    assert editor.save() and not editor.dirty
    return editor


def layer(ed, lid=LAYER):
    return next(le for le in ed.est.layers if le.id == lid)


def test_steps_move_by_the_settings_step_and_stop_at_its_limits(ed):
    before = ed.est.estimated_speedup
    ed.set("target_sparsity", "0.5")
    assert ed.opt.pruning.target_sparsity == 0.5
    assert ed.step("target_sparsity", 5) == "Target sparsity 0.5 -> 0.55"
    assert ed.opt.pruning.target_sparsity == 0.55 and ed.est.target_sparsity == 0.55
    assert ed.est.estimated_speedup < before  # re-allocated and re-estimated: 0.85 -> 0.55 is less sparse
    ed.set("target_sparsity", "0.98")
    ed.step("target_sparsity", 5)  # clamped to the limit
    assert ed.opt.pruning.target_sparsity == 0.99
    with pytest.raises(UsageError, match=r"^Target sparsity is already at its limit 0\.99$"):
        ed.step("target_sparsity", 1)
    assert ed.opt.pruning.target_sparsity == 0.99
    ed.set("balance", "0.02")
    ed.step("balance", -1)
    assert ed.opt.pruning.balance == 0.0
    with pytest.raises(UsageError, match="Balance .* is already at its limit 0"):
        ed.step("balance", -1)
    epochs = ed.opt.epochs
    ed.step("epochs", 1)  # whole numbers; the schedule is rescaled
    assert ed.opt.epochs == epochs + 1 and isinstance(ed.opt.epochs, int)
    # a layer's sparsity steps by 1 % and stays in [0, 0.99]
    start = layer(ed).sparsity
    ed.step_layer(LAYER, 1)
    assert ed.opt.pruning.overrides[LAYER] == round(start + 0.01, 4)
    ed.step_layer(LAYER, 500)
    assert ed.opt.pruning.overrides[LAYER] == 0.99 and layer(ed).sparsity == 0.99
    ed.step_layer(LAYER, -500)
    assert ed.opt.pruning.overrides[LAYER] == 0.0 and layer(ed).sparsity == 0.0


def test_choices_cycle_both_ways_and_switches_flip(ed):
    first = ed.opt.pruning.interpolation
    i = INTERPOLATIONS.index(first)
    ed.step("interpolation", 1)
    assert ed.opt.pruning.interpolation == INTERPOLATIONS[(i + 1) % len(INTERPOLATIONS)]
    for _ in range(len(INTERPOLATIONS) - 1):
        ed.step("interpolation", 5)  # any positive step is one choice on
    assert ed.opt.pruning.interpolation == first
    ed.step("interpolation", -1)
    assert ed.opt.pruning.interpolation == INTERPOLATIONS[i - 1]
    assert ed.opt.pruning.protect_edges is True
    stem = layer(ed, "stem.conv")
    assert stem.sparsity == 0.0 and stem.excluded_reason  # the stem is left dense by default
    ed.step("protect_edges", 1)
    assert ed.opt.pruning.protect_edges is False and layer(ed, "stem.conv").sparsity > 0
    ed.step("protect_edges", -1)
    assert ed.opt.pruning.protect_edges is True
    assert not ed.opt.quantization.enabled
    ed.set("quantization", "on")
    assert ed.opt.quantization.enabled


@pytest.mark.parametrize("key,text,message", [
    ("epochs", "abc", "Epochs must be a whole number, got 'abc'"),
    ("epochs", "0", "Epochs must be at least 1, got 0"),
    ("target_sparsity", "1.5", "Target sparsity must be at most 0.99, got 1.5"),
    ("target_sparsity", "nan", "Target sparsity must be a finite number, got 'nan'"),
    ("interpolation", "wavy", f"Interpolation must be one of {', '.join(INTERPOLATIONS)}, got 'wavy'"),
    ("quantization", "maybe", "INT8 QAT must be on or off, got 'maybe'"),
])
def test_a_bad_typed_setting_is_one_sentence_and_changes_nothing(ed, key, text, message):
    before = ed.opt.to_dict()
    with pytest.raises(UsageError) as exc:
        ed.set(key, text)
    assert str(exc.value) == message and "\n" not in str(exc.value)
    assert ed.opt.to_dict() == before and not ed.dirty and ed.undo() is None


def test_typed_values_accept_what_is_shown(ed):
    assert ed.edit_field("setting", "min_sparsity") == ("Min sparsity:", "0")  # shown "off", typed as 0
    assert ed.edit_field("setting", "protect_edges") == ("Protect edges:", "on")
    ed.set("min_sparsity", "off")
    assert ed.opt.pruning.min_sparsity == 0.0
    ed.set("target_sparsity", "70%")
    assert ed.opt.pruning.target_sparsity == pytest.approx(0.7)
    assert ed.edit("lr", None, "step start=60 end=-1 lr=0.05 gamma=0.5 step_size=10") == "LR modifier step"
    m = ed.opt.lr_modifiers[-1]
    assert (m.kind, m.start_epoch, m.init_lr, m.args["gamma"], m.args["step_size"]) == ("step", 60, 0.05, 0.5, 10)
    with pytest.raises(UsageError, match="^learning-rate modifier kind must be one of"):
        ed.set_lr(0, "warp start=1")
    n = len(ed.opt.lr_modifiers)
    assert ed.delete_lr(n - 1) == f"remove LR modifier {n} (step)" and len(ed.opt.lr_modifiers) == n - 1
    # the default new modifier starts where pruning ends
    assert ed.edit_field("lr", None)[1].startswith(f"step start={ed.opt.pruning.end_epoch:g} end=-1")


def test_override_exclude_and_reset_a_layer(ed):
    assert ed.edit_field("layer", LAYER) == (f"sparsity of {LAYER} (0-0.99 or %):", f"{layer(ed).sparsity:g}")
    with pytest.raises(UsageError, match=rf"^layer {LAYER} has no override to reset$"):
        ed.reset(LAYER)
    with pytest.raises(UsageError, match=r"^a layer sparsity must be in \[0, 1\), got '1.5'$"):
        ed.set_layer(LAYER, "1.5")
    assert ed.set_layer(LAYER, "80%") == f"override {LAYER} = 0.8"
    assert ed.opt.pruning.overrides == {LAYER: 0.8}
    assert layer(ed).sparsity == pytest.approx(0.8) and layer(ed).overridden
    assert ed.toggle_exclude(LAYER) == f"exclude {LAYER}"
    assert LAYER not in ed.opt.pruning.overrides and ed.opt.pruning.exclusions[LAYER] == REASON_USER
    assert layer(ed).sparsity == 0.0 and layer(ed).excluded_reason
    assert ed.toggle_exclude(LAYER) == f"include {LAYER}"
    assert LAYER not in ed.opt.pruning.exclusions and layer(ed).sparsity > 0
    ed.set_layer(LAYER, "0.3")
    assert ed.reset(LAYER) == f"reset {LAYER}"
    assert not ed.opt.pruning.overrides and not layer(ed).overridden
    with pytest.raises(UsageError, match="not in the model"):  # validated before anything changes
        ed.override("no.such.layer", 0.5)


def test_undo_and_redo_walk_the_edits_of_each_version(ed):
    assert ed.undo() is None and ed.redo() is None
    t0 = ed.opt.pruning.target_sparsity
    ed.step("target_sparsity", 1)
    ed.set_layer(LAYER, "0.4")
    assert ed.save() and not ed.dirty
    assert ed.undo() == f"override {LAYER} = 0.4"
    assert ed.dirty and LAYER not in ed.opt.pruning.overrides
    assert ed.undo() == f"Target sparsity {t0} -> {round(t0 + 0.01, 6)}"
    assert ed.opt.pruning.target_sparsity == t0 and ed.est.target_sparsity == t0
    assert ed.undo() is None
    assert ed.redo() == f"Target sparsity {t0} -> {round(t0 + 0.01, 6)}"
    assert ed.opt.pruning.target_sparsity == round(t0 + 0.01, 6)
    ed.set("balance", "0.2")  # a new edit drops what could be redone
    assert ed.redo() is None
    # another version has its own history; coming back finds this one's
    name = ed.copy_version()
    assert ed.undo() is None
    assert ed.save() and ed.switch("default")
    assert ed.undo() == "Balance (0=perf) = 0.2" and ed.opt.name == "default"
    assert name == "default-v2"


def test_copy_and_next_version(ed, project):
    assert ed.next_version() is None  # only one
    assert ed.copy_version() == "default-v2"
    assert ed.dirty and ed.opt.name == "default-v2" and project.get_optimization("default-v2") is None
    assert ed.save() and project.get_optimization("default-v2") is not None
    assert ed.copy_version() == "default-v3"  # from default-v2: the base name, the next free number
    ed.save()
    assert ed.version_names() == ["default", "default-v2", "default-v3"]
    assert ed.next_version() == "default"  # wraps around
    assert ed.switch("default-v2") and ed.opt.name == "default-v2"
    assert ed.next_version() == "default-v3"
    assert not ed.switch("nope") and ed.opt.name == "default-v2"


def test_save_keeps_what_other_tools_stored_and_a_failed_save_stays_dirty(ed, project, base):
    d = project.get_optimization("default")
    d["validation"] = {"measured_speedup": 1.7}
    project.set_optimization(d)
    again = OptimizationEditor(project, base[1])
    assert again.open("default") is False and not again.dirty  # the stored one
    again.set("target_sparsity", "0.6")
    assert again.save() and not again.dirty and not again.save_error
    stored = project.get_optimization("default")
    assert stored["validation"] == {"measured_speedup": 1.7}
    assert stored["pruning"]["target_sparsity"] == 0.6 and stored["modified"] == again.opt.modified
    readonly = Project.open(project.dir, readonly=True)
    try:
        viewer = OptimizationEditor(readonly, base[1])
        viewer.open()
        viewer.set("target_sparsity", "0.7")
        assert viewer.save() is False and viewer.dirty and viewer.save_error
        assert project.get_optimization("default")["pruning"]["target_sparsity"] == 0.6
    finally:
        readonly.close()


def test_the_command_line_takes_the_editors_layer_sparsity_and_default_name(project, base, capsys):
    """`optimize --override L=80%` is what the editor accepts; both open the same default optimization."""
    assert parse_sparsity("80%") == pytest.approx(0.8) and parse_sparsity(" 0.25 ") == 0.25
    with pytest.raises(UsageError, match=r"^--override x must be a number in \[0, 1\) such as 0.8 or 80%"):
        parse_sparsity("eighty", "--override x")
    project.close()
    capsys.readouterr()
    assert main(["optimize", str(project.dir), "--name", "cli", "--override", f"{LAYER}=80%"]) == 0
    assert main(["optimize", str(project.dir), "--override", f"{LAYER}=1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: --override {LAYER} must be in [0, 1), got '1.5'"
    p = Project.open(project.dir)
    try:
        assert p.get_optimization("cli")["pruning"]["overrides"] == {LAYER: 0.8}
        assert default_optimization_name(p) == "cli"  # the first stored one, for both faces
        ed = OptimizationEditor(p, base[1])
        assert ed.open() is False and ed.opt.name == "cli" and layer(ed).sparsity == pytest.approx(0.8)
    finally:
        p.close()
