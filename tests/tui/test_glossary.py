"""Glossary (core data + search) and the glossary screen with help for the focused area."""

from __future__ import annotations

import subprocess
import sys

from textual.widgets import Input, Static

from sparsify_tui import glossary
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.screens.glossary import GlossaryScreen
from sparsify_tui.actions.optimizer_settings import SETTINGS
from sparsify_tui.tui.optimizer_view import LAYER_COLUMNS
from sparsify_tui.actions.undo import UndoHistory
from tests.tui.conftest import FIXED_MACHINE, settle, widget_text

# every term the optimizer, compare and export screens show in labels and panels must have an entry
SHOWN_TERMS = [
    "Baseline MS", "Items per Second", "Layer Depth", "Performance Sensitivity", "Loss Sensitivity",
    "Recovery Confidence", "Estimated Speedup", "FLOPs", "Params", "Sparsity", "Balance", "Epoch Range",
    "Stabilization range", "Pruning range", "Fine-tuning range", "Update frequency", "Mask type",
    "Interpolation", "Learning-rate modifiers", "Approximated Profile", "Engine-internal rows",
    "Estimated Time vs Baseline", "FLOPs Reduction", "Params Reduction", "Training Summary", "Name map",
    "Recipe", "Code sample", "Validation", "Override", "Excluded layer", "Filters", "Buckets", "Epochs",
    "Target sparsity", "Initial sparsity", "Max sparsity", "Summary Type", "Sensitivity rank",
    "Output change", "INT8 output change", "KL divergence", "Top-1 agreement", "Cosine distance",
    "Relative RMS change",
]


def test_every_shown_term_has_an_entry():
    missing = [t for t in SHOWN_TERMS if glossary.lookup(t) is None]
    assert not missing
    # the optimizer's setting labels and layer columns resolve through terms or aliases
    words = {"target sparsity", "balance", "epochs", "pruning start", "pruning end", "update frequency",
             "initial sparsity", "interpolation", "mask type", "min sparsity", "min speedup", "min recovery",
             "buckets"}
    for s in SETTINGS:
        label = s.label.lower().split(" (")[0]
        if label in words:
            assert glossary.lookup(label) is not None, label
    assert {k for k, _ in LAYER_COLUMNS} >= {"sparsity", "speedup", "time", "loss", "perf", "note"}
    for area, terms in glossary.AREA_TERMS.items():
        assert glossary.area_entries(area), area
        assert len(glossary.area_entries(area)) == len(terms)


def test_search_ranks_terms_first_and_needs_every_word():
    hits = glossary.search("speedup")
    assert hits[0].term in ("Speedup factor", "Estimated Speedup")
    assert all("speedup" in (e.term + " ".join(e.aliases) + e.text).lower() for e in hits)
    assert [e.term for e in glossary.search("fine tuning range")][0] == "Fine-tuning range"
    assert glossary.search("no-such-word-xyz") == []
    assert len(glossary.search("")) == len(glossary.ENTRIES)


def test_glossary_core_does_not_import_textual():
    code = "import sys, sparsify_tui.glossary; assert 'textual' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_undo_history():
    h = UndoHistory(limit=3)
    assert h.undo({"v": 0}) is None
    for v in range(5):
        h.push({"v": v}, f"set {v + 1}")
    assert len(h) == 3  # bounded
    label, state = h.undo({"v": 5})
    assert (label, state) == ("set 5", {"v": 4})
    assert h.redo({"v": 4}) == ("set 5", {"v": 5})
    h.undo({"v": 5})
    h.push({"v": 4}, "other")  # a new edit clears redo
    assert not h.can_redo


async def test_glossary_screen_search_and_area_help(demo_project):
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot, app)
        await pilot.press("f5")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, GlossaryScreen)
        assert isinstance(screen.focused, Input)
        assert len(screen.shown) == len(glossary.ENTRIES)
        await pilot.press(*"recovery")
        await pilot.pause()
        assert screen.shown[0].term == "Recovery Confidence"
        text = widget_text(screen.query_one("#glossary-list", Static), 100)
        assert "Recovery Confidence" in text and "Baseline MS" not in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, GlossaryScreen)
        app.push_screen(GlossaryScreen(area="opt-estimates"))
        await pilot.pause()
        area = widget_text(app.screen.query_one("#glossary-area", Static), 100)
        assert "Optimizer: estimates" in area and "Approximated Profile" in area
