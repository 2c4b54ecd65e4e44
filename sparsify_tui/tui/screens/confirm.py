"""Yes/no questions: quitting while a profile runs."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmQuit(ModalScreen[bool]):
    """A profile is running or queued: quit anyway (y), or stay (n / escape)."""

    BINDINGS = [
        Binding("y", "choose(True)", "Quit and cancel"),
        Binding("n,escape", "choose(False)", "Stay"),
    ]

    def __init__(self, running: list[str]) -> None:
        super().__init__()
        self.running = running

    def compose(self) -> ComposeResult:
        jobs = ", ".join(self.running[:3]) + (f" and {len(self.running) - 3} more" if len(self.running) > 3 else "")
        with Vertical(id="quit-box"):
            yield Static(f"[b]Quit while {len(self.running)} profile(s) run?[/b]\n{jobs}\n"
                         "Quitting cancels them: a cancelled profile is not saved (finished ones are kept).\n\n"
                         "[b]y[/b] quit and cancel   [b]n[/b] / [b]escape[/b] stay", id="quit-text")

    def action_choose(self, quit_: bool) -> None:
        self.dismiss(quit_)
