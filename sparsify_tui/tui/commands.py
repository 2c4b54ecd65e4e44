"""Command palette (ctrl+p): every action of the app and of the current screen.

Entries are built from the key bindings of the active screen and of the App
(so a new binding is in the palette automatically) plus actions that have no
key of their own.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Iterator

from textual.command import DiscoveryHit, Hit, Hits, Provider

# actions without a key binding: (name, help, action on the App)
EXTRA_COMMANDS: list[tuple[str, str, str]] = [
    ("Go home", "Recent projects, new project, demo", "home"),
    ("New project", "Create a project from an ONNX model", "new_project"),
    ("Open the demo project", "A small CNN built by the app, profiled in the background", "open_demo"),
    ("Project overview", "Model totals and the project's profiles", "show_overview"),
    ("Layer summaries", "Per-layer table, charts and attributes", "show_layers"),
    ("Start a performance profile", "Measure per-layer timings with the default settings", "start_perf"),
    ("Start an approximated loss profile", "Weight-magnitude loss sensitivity (no data needed)", "start_loss"),
    ("Cancel running profiles", "Stop the running and queued profile jobs", "cancel_jobs"),
    ("Help", "Keys and definitions", "help"),
    ("Optimizer", "Edit the optimization: sparsity, schedule, per-layer plan, estimates", "show_optimizer"),
    ("Compare profiles", "Two performance profiles layer by layer, or dense vs pruned", "show_compare"),
    ("Export recipe", "Recipe YAML, code sample, name map, validation", "show_export"),
    ("Glossary", "Searchable definitions of every term the app shows", "show_glossary"),
    ("Deployment search", "Engines x precisions x sparsity on this server: speed against output change",
     "show_deploy"),
]


def _screen_label(screen: Any) -> str:
    return getattr(screen, "PALETTE_GROUP", "") or type(screen).__name__.replace("Screen", "")


class SparsifyCommands(Provider):
    """Palette entries for the current screen's bindings, the App's bindings and the extras."""

    def _commands(self) -> Iterator[tuple[str, str, Any]]:
        seen: set[str] = set()
        screen = self.screen
        label = _screen_label(screen)
        for binding in getattr(screen, "BINDINGS", []):
            b = binding if not isinstance(binding, tuple) else None
            if b is None or not b.description:
                continue
            name = f"{label}: {b.description}"
            if name in seen:
                continue
            seen.add(name)
            help_text = (b.tooltip or "") + f"  [key {b.key_display or b.key.split(',')[0]}]"
            yield name, help_text.strip(), partial(screen.run_action, b.action)
        app = self.app
        for cmd_name, help_text, action in EXTRA_COMMANDS:
            if cmd_name in seen:
                continue
            seen.add(cmd_name)
            yield cmd_name, help_text, partial(app.run_action, action)

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
