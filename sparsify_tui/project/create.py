"""``Project.create`` in named steps: check the model and the target, build under a staging name, move in.

A new (or empty) directory is built under a hidden staging name next to the target and renamed into
place at the end, so an interrupted ``sparsify-tui new`` never leaves a half-made project behind. An
existing non-empty directory (the model already in it as ``model.onnx``) is filled in place, and what
was copied is removed again on failure.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sparsify_tui import fsutil
from sparsify_tui.errors import ModelError, ProjectError
from sparsify_tui.project.common import MODEL_FILE, PROJECT_FILE, clean_text, now_iso, slugify
from sparsify_tui.project.model import check_input_shapes, external_data_files, stage_progress, validate_model
from sparsify_tui.project.recent import remember_project

if TYPE_CHECKING:
    from sparsify_tui.project.project import Project

Progress = Callable[[str, float, float], None]


@dataclass
class _Plan:
    """What create will do, decided before anything is written."""

    src: Path  # the model, resolved
    target: Path  # the project directory, resolved
    name: str
    description: str
    shapes: dict[str, list[int]]
    externals: list[str]  # the model's external data files, relative
    link: bool
    in_place: bool  # the target already holds this model as model.onnx
    staged: bool  # built under a hidden name and renamed into place
    work: Path = field(init=False)

    def __post_init__(self) -> None:
        if self.staged:
            tag = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"
            self.work = self.target.parent / f".{self.target.name}.creating-{tag}"
        else:
            self.work = self.target


def plan(model: str | os.PathLike, dir: str | os.PathLike | None, name: str | None, description: str,
         link: bool, input_shapes: dict[str, list[int]] | None) -> _Plan:
    """Check the model (analysable) and the target (new, empty, or holding this very model)."""
    src = Path(model).expanduser()
    if not src.exists():
        raise ModelError(f"model file {src} does not exist")
    if not src.is_file():
        raise ModelError(f"{src} is not a file: give the path of an ONNX model")
    shapes = check_input_shapes(input_shapes)
    proto = validate_model(src, shapes)
    if name is None or not str(name).strip():
        name = src.stem
    name = clean_text(str(name))
    description = clean_text(str(description or ""))
    target = Path(dir).expanduser() if dir is not None else Path.cwd() / slugify(name)
    target = target.resolve()
    if target.exists() and not target.is_dir():
        raise ProjectError(f"{target} exists and is not a directory: choose another --dir")
    if (target / PROJECT_FILE).exists():
        raise ProjectError(f"{target} already holds a project (project.toml): choose another --dir or open it")
    externals = external_data_files(proto, src)
    src_abs = src.resolve()
    in_place = (target / MODEL_FILE).exists() and (target / MODEL_FILE).resolve() == src_abs
    # a project goes into a new or empty directory; the one exception is a directory that already
    # holds this very model as model.onnx (it becomes the project, nothing is copied)
    if target.is_dir() and not in_place and any(target.iterdir()):
        how = "give the project a new directory with --dir" if dir is None else "choose a new or empty --dir"
        raise ProjectError(f"{target} already exists and is not empty: {how}")
    staged = not target.exists() or (target.is_dir() and not any(target.iterdir()))
    return _Plan(src=src_abs, target=target, name=name, description=description, shapes=shapes,
                 externals=externals, link=link and not in_place, in_place=in_place, staged=staged)


def create(cls: type["Project"], p: _Plan, on_progress: Progress | None) -> "Project":
    """Carry out the plan: the directory, the lock, the model, project.toml, the rename into place."""
    made: list[Path] = []
    proj = cls(p.work)
    try:
        _make_dir_and_lock(proj, p)
        sha = _bring_model(proj, p, made, on_progress)
        st = proj.model_path.stat()
        proj.name = p.name
        proj.description = str(p.description or "")
        proj.created = proj.modified = now_iso()
        proj.model_sha256 = proj.recorded_model_sha256 = sha
        proj.model_size, proj.model_mtime_ns = st.st_size, st.st_mtime_ns
        proj.input_shapes = p.shapes
        proj._raw = {}
        proj.save(_touch=False)
        if p.staged:
            _move_into_place(proj, p)
    except BaseException:
        proj.store.lock.release()
        if p.staged:
            shutil.rmtree(p.work, ignore_errors=True)
        else:
            for f in reversed(made):
                try:
                    f.unlink()
                except OSError:
                    pass
        raise
    remember_project(proj.dir, proj.name)
    return proj


def _make_dir_and_lock(proj: "Project", p: _Plan) -> None:
    try:
        p.work.mkdir(parents=True, exist_ok=not p.staged)
    except OSError as exc:
        raise ProjectError(f"cannot create the project directory {p.target}: {exc.strerror or exc}") from None
    try:
        got = proj.store.lock.acquire()
    except OSError as exc:
        raise ProjectError(f"cannot write in {p.target}: {exc.strerror or exc}") from None
    if not got:
        raise ProjectError(f"{p.target}: {proj.store.holder_sentence()}")


def _bring_model(proj: "Project", p: _Plan, made: list[Path], on_progress: Progress | None) -> str:
    """Reference, adopt or copy the model (with its external data); its sha256."""
    model_dst = p.work / MODEL_FILE
    try:
        if p.link:
            proj.model_file = str(p.src)
            if clean_text(proj.model_file) != proj.model_file:
                raise ProjectError(f"the model path {p.src} is not valid UTF-8 and cannot be written in "
                                   "project.toml: copy the model into the project (without --link) or rename it")
            return fsutil.sha256_file(p.src, on_progress=stage_progress(on_progress, "hashing model"))
        proj.model_file = MODEL_FILE
        if p.in_place:
            return fsutil.sha256_file(model_dst, on_progress=stage_progress(on_progress, "hashing model"))
        made.append(model_dst)
        sha = fsutil.atomic_copy_file(p.src, model_dst, on_progress=stage_progress(on_progress, "copying model"))
        for rel in p.externals:
            dst = p.work / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            made.append(dst)
            fsutil.atomic_copy_file(p.src.parent / rel, dst, on_progress=stage_progress(on_progress, f"copying {rel}"))
        return sha
    except OSError as exc:
        raise ProjectError(f"cannot copy the model into {p.target}: {exc.strerror or exc}") from None


def _move_into_place(proj: "Project", p: _Plan) -> None:
    try:
        os.rename(p.work, p.target)  # replaces an empty directory atomically
    except OSError as exc:
        raise ProjectError(f"cannot create the project directory {p.target}: {exc.strerror or exc}") from None
    fsutil.fsync_dir(p.target.parent)
    proj.store.move_to(p.target)  # the locked lock file moved with the directory


__all__ = ["plan", "create"]
