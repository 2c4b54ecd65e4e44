"""The core never imports Textual: each headless module is imported in a fresh interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import sparsify_tui

CORE = sorted(
    m.name
    for m in pkgutil.walk_packages(sparsify_tui.__path__, "sparsify_tui.")
    if not m.name.startswith("sparsify_tui.tui") and m.name != "sparsify_tui.commands.app"
    and not m.name.startswith("sparsify_tui.cluster")
)


def test_core_modules_exist():
    for name in ("sparsify_tui.cli", "sparsify_tui.errors", "sparsify_tui.analysis"):
        assert name in CORE


def test_core_does_not_import_textual():
    code = (
        "import importlib, sys\n"
        f"mods = {CORE!r}\n"
        "bad = []\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "    if 'textual' in sys.modules:\n"
        "        bad.append(m); break\n"
        "print('BAD' if bad else 'OK', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK"), out.stdout


def test_cli_help_does_not_import_textual():
    code = (
        "import sys\n"
        "from sparsify_tui import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('textual' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr
