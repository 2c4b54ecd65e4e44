"""Code samples: valid Python for every framework and kind, mentioning the recipe path."""

from __future__ import annotations

import ast

import pytest

from sparsify_tui.errors import UsageError
from sparsify_tui.optim.code_samples import FRAMEWORKS, KINDS, code_sample

IMPORTS = {"pytorch": "sparseml.pytorch.optim", "keras": "sparseml.keras.optim", "tensorflow": "sparseml.tensorflow_v1.optim"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("kind", KINDS)
def test_samples_compile_and_use_the_recipe(framework, kind):
    src = code_sample(framework, kind, "out/it's recipe.yaml")
    compile(src, f"{framework}_{kind}.py", "exec")
    tree = ast.parse(src)
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert IMPORTS[framework] in mods
    consts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert "out/it's recipe.yaml" in consts
    assert "ScheduledModifierManager.from_yaml(RECIPE_PATH)" in src
    assert "--name-map" in src
    assert "--name-map" not in code_sample(framework, kind, "r.yaml", mapped=True)


def test_pytorch_integration_wraps_the_optimizer_with_steps_per_epoch():
    src = code_sample("pytorch", "integration")
    assert "manager.modify(model, optimizer, steps_per_epoch=len(train_loader))" in src
    assert "manager.finalize(model)" in src


def test_tensorflow_loops_over_steps_not_batch_size():
    src = code_sample("tensorflow", "integration")
    assert "for step in range(steps_per_epoch)" in src and "TRAIN_BATCH_SIZE" not in src


@pytest.mark.parametrize("fw, kind, msg", [("jax", "integration", "--framework"), ("pytorch", "notebook", "--code-type")])
def test_bad_choices(fw, kind, msg):
    with pytest.raises(UsageError, match=msg):
        code_sample(fw, kind)
