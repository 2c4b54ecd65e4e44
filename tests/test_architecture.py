"""The package's layers (pyproject.toml's import contract) and its lint rules hold.

The contract is checked on the real tree, and shown to fail on a temporary
copy of the package into which an upward import has been written, so a
contract that could never fail would be caught too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    exe = BIN / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: install the test extra (pip install -e '.[test]')")
    return found


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([_tool("lint-imports"), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_import_contract_is_kept():
    res = _lint_imports(REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arch")
    shutil.copytree(REPO / "sparsify_tui", root / "sparsify_tui",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize("module, line, contract", [
    # a low layer reaching up into the command line
    ("engines/machine.py", "from sparsify_tui.commands import common as _c  # noqa", "Layers"),
    # the core importing the app's toolkit
    ("profiles/perf.py", "import textual as _t  # noqa", "Only the app imports Textual"),
    # two siblings of one layer importing each other (profiles | optim are independent)
    ("optim/prune.py", "import sparsify_tui.profiles.loss as _l  # noqa", "Layers"),
    # the app reaching into the command line's internals
    ("tui/data.py", "from sparsify_tui.commands import info as _i  # noqa", "Layers"),
    # a screen's view-model needing the toolkit
    ("tui/views/layers.py", "from textual.widgets import Static as _S  # noqa", "view-models, jobs and loaders"),
])
def test_import_contract_fails_on_a_violating_import(package_copy, module, line, contract):
    target = package_copy / "sparsify_tui" / module
    original = target.read_text()
    try:
        target.write_text(original + "\n" + line + "\n")
        res = _lint_imports(package_copy)
    finally:
        target.write_text(original)
    assert res.returncode != 0, res.stdout[-2000:]
    broken = res.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, res.stdout[-3000:]
    assert module.replace("/", ".").removesuffix(".py") in broken


def test_ruff_finds_nothing_in_the_package():
    res = subprocess.run([_tool("ruff"), "check", "--no-cache", "sparsify_tui"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]


def test_the_app_and_the_layer_screen_stay_readable():
    """Issue #25: the App, the layer summaries and their helpers have no class over 400 lines, no function over 100."""
    import ast

    tui = REPO / "sparsify_tui" / "tui"
    files = [tui / "app.py", tui / "jobs.py", tui / "launch.py", tui / "data.py", tui / "screens" / "layers.py",
             *sorted((tui / "views").glob("*.py"))]
    too_long = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                limit = 400 if isinstance(node, ast.ClassDef) else 100
                if node.end_lineno - node.lineno + 1 > limit:
                    too_long.append(f"{f.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert too_long == []
