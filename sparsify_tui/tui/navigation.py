"""Moving between the project's screens (called by the App's actions and key bindings)."""

from __future__ import annotations

from typing import Any

from sparsify_tui.tui.screens.optimizer import OptimizerScreen


def show_project_screen(app: Any, which: str) -> None:
    """Push the optimizer, compare, export or glossary screen on top of the current one.

    From one of these screens to another the top screen is replaced (the optimizer
    saves first); each screen reads the project afresh when it opens.
    """
    if which == "glossary":
        from sparsify_tui.tui.screens.glossary import GlossaryScreen

        if isinstance(app.screen, GlossaryScreen):
            app.pop_screen()
            return
        app.push_screen(GlossaryScreen())
        return
    if app.project is None:
        app.notify("open a project first", severity="warning")
        return
    current = app.screen
    if which == "optimizer":
        if isinstance(current, OptimizerScreen):
            return
        screen = OptimizerScreen(app.project, getattr(app.model_data, "graph", None))
    elif which == "compare":
        from sparsify_tui.tui.screens.compare import CompareScreen

        if isinstance(current, CompareScreen):
            return
        screen = CompareScreen(app.project)
    elif which == "export":
        from sparsify_tui.tui.screens.export import ExportScreen

        if isinstance(current, ExportScreen):
            return
        opt_name = current.opt_name if isinstance(current, OptimizerScreen) else None
        if isinstance(current, OptimizerScreen):
            current._save_now()
        screen = ExportScreen(app.project, getattr(app.model_data, "graph", None), opt_name=opt_name)
    else:
        raise ValueError(which)
    label = {"optimizer": "optimizer", "compare": "compare profiles", "export": "export"}[which]
    name = getattr(app.project, "display_name", None) or getattr(app.project, "name", "")
    screen.sub_title = f"{name} — {label}" + ("  (read-only)" if getattr(app.project, "readonly", False) else "")
    from sparsify_tui.tui.screens.compare import CompareScreen
    from sparsify_tui.tui.screens.export import ExportScreen

    if isinstance(current, (OptimizerScreen, CompareScreen, ExportScreen)):
        app.switch_screen(screen)
    else:
        app.push_screen(screen)
