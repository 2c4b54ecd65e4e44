"""``sparsify-tui new MODEL.onnx``: create a project directory from a model.

Prints the project's path (or, with ``--json``, one JSON document with
``path``, ``name``, ``model``, ``sha256``, ``input_shapes``, ``linked``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sparsify_tui.commands.common import Progress, emit_json


def run_new(args: argparse.Namespace) -> int:
    from sparsify_tui.analysis import parse_input_shapes
    from sparsify_tui.project import Project

    shapes = parse_input_shapes(getattr(args, "input_shape", None) or [])
    progress = Progress("copying model", quiet=bool(getattr(args, "json", False)) and not sys.stderr.isatty())
    last = {"stage": None}

    def on_progress(stage: str, done: float, total: float) -> None:
        if total < (8 << 20):  # small models: no progress bar
            return
        step = int(20 * done / total) if total else 20
        if stage == last["stage"] and step == last.get("step") and done < total:
            return  # redraw at every 5 %
        last["step"] = step
        if stage != last["stage"]:
            if last["stage"] is not None:
                progress.done()
            progress.title = stage
            last["stage"] = stage
        progress.update(round(done / (1 << 20), 1), round(total / (1 << 20), 1), "MiB")

    try:
        big = Path(args.model).expanduser().stat().st_size >= (8 << 20)
    except (OSError, ValueError):
        big = False
    if big:
        progress.note(f"analysing {args.model} ...")
    project = Project.create(
        args.model,
        dir=getattr(args, "dir", None),
        name=getattr(args, "name", None),
        description=getattr(args, "description", "") or "",
        link=bool(getattr(args, "link", False)),
        input_shapes=shapes,
        on_progress=on_progress,
    )
    if last["stage"] is not None:
        progress.done()
    try:
        if getattr(args, "json", False):
            emit_json({
                "path": str(project.dir),
                "name": project.name,
                "model": str(project.model_path),
                "linked": project.linked,
                "sha256": project.model_sha256,
                "input_shapes": {k: list(v) for k, v in project.input_shapes.items()},
            })
        else:
            print(project.dir)
            from sparsify_tui.commands.common import shape_hint

            hint = shape_hint(project.model_path, project.input_shapes)
            if hint:
                print(f"note: the model has dynamic input dimensions; measurements need their sizes, e.g. {hint} "
                      "(or create the project with --input-shape to store them)", file=sys.stderr)
            extra = f" {hint}" if hint else ""
            print(f"next: sparsify-tui profile perf {project.dir}{extra}   (or: sparsify-tui open {project.dir})",
                  file=sys.stderr)
    finally:
        project.close()
    return 0
