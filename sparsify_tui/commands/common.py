"""Helpers shared by the subcommands: flag parsing, targets, JSON and progress output."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from sparsify_tui.errors import ProjectError, UsageError
from sparsify_tui import textfmt
from sparsify_tui.fsutil import json_default

if TYPE_CHECKING:
    from sparsify_tui.project import Project


# ---------------------------------------------------------------- flag values


# ---------------------------------------------------------------- targets
@dataclass
class Target:
    """What a TARGET argument names: a project directory or a bare ONNX file."""

    model_path: Path
    input_shapes: dict[str, list[int]]
    project: "Project | None" = None  # when the target is a project


def resolve_target(target: str, input_shape_args: list[str] | None = None, *, readonly: bool = False) -> Target:
    """A project directory (results are stored in it) or an ONNX file (results are printed)."""
    from sparsify_tui.analysis import parse_input_shapes

    shapes = parse_input_shapes(input_shape_args or [])
    path = Path(target).expanduser()
    if path.is_dir():
        if not (path / "project.toml").exists():
            raise ProjectError(f"{path} is a directory without a project.toml: not a sparsify-tui project")
        from sparsify_tui.project import Project

        project = Project.open(path, readonly=readonly)
        for notice in getattr(project, "notices", []) or []:
            print(f"note: {notice}", file=sys.stderr)
        merged = dict(project.input_shapes)
        merged.update(shapes)
        return Target(model_path=project.model_path, input_shapes=merged, project=project)
    return Target(model_path=path, input_shapes=shapes)


def refuse_project_file(project: "Project", out: Path, flag: str) -> None:
    """UsageError when writing ``out`` would overwrite the project's model or one of its own files."""
    target = Path(out).expanduser().resolve()
    pdir = Path(project.dir).resolve()
    own = {Path(project.model_path).resolve(), pdir / "project.toml", pdir / "project.toml.bak",
           pdir / "project.lock"}
    if target in own or (pdir / "profiles") in target.parents or (pdir / "optimizations") in target.parents:
        raise UsageError(f"{flag} {out} would overwrite the project's own {target.name}; write it elsewhere")


# ---------------------------------------------------------------- output
def emit_json(doc: Any) -> None:
    """The one JSON document a ``--json`` command prints on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, default=json_default, allow_nan=False) + "\n")
    sys.stdout.flush()


def fmt_count(n: int | float | None) -> str:
    """1234567 -> '1.23M'; None -> 'unknown'."""
    return textfmt.fmt_count(n, "unknown")


def print_table(headers: list[str], rows: list[list[Any]], *, right: Iterable[int] = (), file=None) -> None:
    """A plain aligned text table."""
    file = file or sys.stdout
    right = set(right)
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, row in enumerate(cells):
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        print("  ".join(parts).rstrip(), file=file)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=file)


class Progress:
    """A progress bar on stderr: ``label [#####.....] 3/10  elapsed 4s  left 9s``.

    Call ``update(done, total, label)``; it redraws in place on a terminal and
    prints one line per step otherwise (logs, CI).
    """

    def __init__(self, title: str, *, quiet: bool = False) -> None:
        self.title = title
        self.quiet = quiet
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last = ""

    def update(self, done: float, total: float, label: str = "") -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.start
        frac = 0.0 if total <= 0 else max(0.0, min(1.0, done / total))
        left = (elapsed / frac - elapsed) if frac > 0 else float("nan")
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        left_s = f"{left:.0f}s" if math.isfinite(left) else "?"
        line = f"{self.title} [{bar}] {done:g}/{total:g}  elapsed {elapsed:.0f}s  left {left_s}"
        if label:
            line += f"  {label}"
        if self.tty:
            sys.stderr.write("\r" + line[:200].ljust(len(self._last)))
            sys.stderr.flush()
        elif line != self._last:
            sys.stderr.write(line + "\n")
        self._last = line

    def note(self, message: str) -> None:
        if self.quiet:
            return
        if self.tty and self._last:
            sys.stderr.write("\n")
            self._last = ""
        sys.stderr.write(message + "\n")

    def done(self) -> None:
        if self.quiet:
            return
        if self.tty and self._last:
            sys.stderr.write("\n")
        self._last = ""


def ellipsize(text: Any, width: int) -> str:
    """``text`` cut to ``width`` characters; an ellipsis replaces part of the middle (keeps more of the end,
    the most specific part of a long layer name)."""
    text = "" if text is None else str(text)
    if width < 2 or len(text) <= width:
        return text
    head = (width - 1) // 3
    tail = width - 1 - head
    return text[:head] + "\u2026" + text[len(text) - tail:]


def next_steps(*commands: str) -> None:
    """Tell a user what to run next (stderr, after the human output; never with --json)."""
    for i, c in enumerate(commands):
        print(("next: " if i == 0 else "      ") + c, file=sys.stderr)


def shape_hint(model_path: Any, input_shapes: dict | None = None) -> str:
    """``--input-shape`` flags for the dynamic inputs of a model, with the values ``info`` assumes; "" if none."""
    try:
        from sparsify_tui.analysis import analyze

        graph = analyze(Path(model_path), input_shapes or None)
    except Exception:  # noqa: BLE001 - only a hint; the caller's error stands on its own
        return ""
    flags = [f"--input-shape {t.name}={','.join(str(d) for d in t.shape)}"
             for t in graph.inputs if t.assumed and t.shape and all(isinstance(d, int) for d in t.shape)]
    return " ".join(flags)


class dynamic_shape_hint:
    """Context manager: a missing dynamic dimension becomes one error naming the model and the flags to add."""

    def __init__(self, model_path: Any, input_shapes: dict | None = None) -> None:
        self.model_path = model_path
        self.input_shapes = input_shapes

    def __enter__(self) -> "dynamic_shape_hint":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        from sparsify_tui.errors import InputShapeError

        if exc is None or not isinstance(exc, InputShapeError) or "dynamic dimension" not in str(exc):
            return False
        if str(self.model_path) in str(exc):
            return False
        hint = shape_hint(self.model_path, self.input_shapes)
        msg = f"{self.model_path}: {str(exc).split('; give its shape')[0]}"
        msg += f"; add {hint} (the shape 'sparsify-tui info' assumes) or your own" if hint else \
            "; give its shape with --input-shape NAME=D1,D2,..."
        raise InputShapeError(msg) from None


def shorten_names(names: list[str], width: int) -> tuple[str, list[str]]:
    """Long layer names for a table column: a path prefix shared by all of them is taken out (returned, to be
    said once above the table), then each is cut to ``width`` with an ellipsis."""
    names = [str(n) for n in names]
    prefix = ""
    if len(names) > 1 and any(len(n) > width for n in names):
        import os.path

        common = os.path.commonprefix(names)
        cut = common.rfind("/") + 1
        if cut >= 8 and all(len(n) > cut for n in names):
            prefix = common[:cut]
    return prefix, [ellipsize(n[len(prefix):], width) for n in names]
