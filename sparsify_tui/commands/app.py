"""``sparsify-tui [--demo | MODEL.onnx]`` and ``sparsify-tui open PROJECT_DIR``: open the app.

Paths are checked before Textual starts, so a missing file or a directory that
is not a project ends in ``error: ...`` (exit 2) on the terminal, not inside
the app. Textual is imported only here, and only once the app is about to run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def prepare(args: argparse.Namespace) -> tuple[Any, list[tuple[str, dict]], str]:
    """Resolve the command line into (project or None, jobs to start, first screen).

    Raises SparsifyError for bad paths (the CLI prints it and exits 2).
    """
    from sparsify_tui.errors import ModelError, ProjectError

    if getattr(args, "command", None) == "open":
        d = Path(args.project).expanduser()
        if not d.exists():
            raise ProjectError(f"project directory {d} does not exist")
        if not d.is_dir():
            raise ProjectError(f"{d} is not a directory: give a project directory (made by 'sparsify-tui new')")
        if not (d / "project.toml").exists():
            raise ProjectError(f"{d} has no project.toml: not a sparsify-tui project")
        from sparsify_tui.project import Project

        return Project.open(d), [], "overview"
    model = getattr(args, "model", None)
    if getattr(args, "demo", False):
        if model:
            from sparsify_tui.errors import UsageError

            raise UsageError("give either --demo or a model, not both")
        from sparsify_tui.tui.launch import prepare_demo

        project, jobs = prepare_demo()
        return project, jobs, "overview"
    if model:
        p = Path(model).expanduser()
        if not p.exists():
            raise ModelError(f"model file {p} does not exist")
        if p.is_dir():
            if (p / "project.toml").exists():
                from sparsify_tui.project import Project

                return Project.open(p), [], "overview"
            raise ModelError(f"{p} is a directory: give an ONNX file (or 'open PROJECT_DIR')")
        from sparsify_tui.tui.launch import quick_look_project

        project, jobs = quick_look_project(p)
        return project, jobs, "layers"
    return None, [], "home"


def run(args: argparse.Namespace) -> int:
    project, jobs, screen = prepare(args)
    try:
        from sparsify_tui.tui.app import SparsifyApp

        app = SparsifyApp(project, initial=screen, start_jobs=jobs)
        app.run()
    finally:
        if project is not None:
            try:
                project.close()
            except Exception:  # noqa: BLE001
                pass
    return 0
