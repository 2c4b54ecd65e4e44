"""Home: recent projects (open by key), open a path, new project, the demo."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Header, Input, OptionList, Static
from textual.widgets.option_list import Option

from sparsify_tui.tui.widgets.footer import FitFooter
from sparsify_tui.tui.widgets.path_input import PathInput


def recent_projects() -> list[dict]:
    """Recent projects as dicts with ``path``, ``name`` and maybe ``modified`` (newest first)."""
    try:
        from sparsify_tui import project as project_mod

        items = project_mod.recent_projects()
    except Exception:  # noqa: BLE001 - the list is a convenience
        return []
    out = []
    for item in items or []:
        if isinstance(item, dict):
            path = item.get("path") or item.get("dir")
            d = {"path": str(path), "name": item.get("name") or Path(str(path)).name,
                 "modified": item.get("modified") or item.get("opened") or ""}
        else:
            path = getattr(item, "dir", None) or getattr(item, "path", None) or item
            d = {"path": str(path), "name": getattr(item, "name", None) or Path(str(path)).name,
                 "modified": getattr(item, "modified", "") or ""}
        if d["path"]:
            out.append(d)
    return out


class HomeScreen(Screen):
    """Recent projects and the ways to start."""

    PALETTE_GROUP = "Home"
    BINDINGS = [
        Binding("n", "app.new_project", "New project", id="new_project", tooltip="Create a project from an ONNX model"),
        Binding("d", "app.open_demo", "Demo", id="open_demo", tooltip="Open the demo project"),
        Binding("slash", "focus_path", "Open path", id="focus_path",
                tooltip="Type a project directory or an ONNX file to open"),
        Binding("r", "refresh", "Refresh", id="refresh_recent", tooltip="Read the recent projects again"),
        Binding("o", "app.show_overview", "Current project", id="current_project", show=False,
                tooltip="Back to the open project"),
        Binding("escape", "leave_path", "Leave path", id="leave_path", show=False,
                tooltip="Leave the path box (the keys work again)"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="home-body"):
            yield Static(
                "[b]sparsify-tui[/b]  profile ONNX models layer by layer and plan their sparsification",
                id="home-title",
            )
            yield Static("Recent projects  [dim](enter opens)[/dim]", classes="section-title")
            yield OptionList(id="recent")
            yield Static("", id="home-empty")
            yield Static("Open a project directory or an ONNX model  [dim](tab completes, enter opens)[/dim]",
                         classes="section-title")
            yield PathInput(placeholder="path/to/project or model.onnx", id="open-path")
            yield Static("[b]n[/b] new project   [b]d[/b] demo project   [b]/[/b] open a path   "
                         "[b]F1[/b] help   [b]ctrl+p[/b] all commands", id="home-hints")
        yield FitFooter()

    def on_mount(self) -> None:
        self.sub_title = "home"
        self.load_recent()

    def on_screen_resume(self) -> None:
        self.load_recent()

    def load_recent(self) -> None:
        opts = self.query_one("#recent", OptionList)
        opts.clear_options()
        self._recent = recent_projects()
        for item in self._recent:
            label = Text.assemble((item["name"], "bold"), "  ", (item["path"], "dim"))
            opts.add_option(Option(label, id=item["path"]))
        empty = self.query_one("#home-empty", Static)
        if self._recent:
            empty.update("")
            empty.display = False
            opts.display = True
            opts.highlighted = 0
            opts.focus()
        else:
            empty.update("No recent projects yet. Press [b]n[/b] to create one or [b]d[/b] for the demo.")
            empty.display = True
            opts.display = False

    @on(OptionList.OptionSelected, "#recent")
    def _open_recent(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.app.open_path(event.option.id)

    @on(Input.Submitted, "#open-path")
    def _open_typed(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.app.open_path(event.value)

    def action_leave_path(self) -> None:
        if isinstance(self.focused, Input):
            recent = self.query_one("#recent", OptionList)
            if recent.display:
                recent.focus()
            else:
                self.set_focus(None)

    def action_focus_path(self) -> None:
        self.query_one("#open-path", Input).focus()

    def action_refresh(self) -> None:
        self.load_recent()
