"""Opening things, without Textual: the demo project, a quick look at a model, a typed path.

``commands.app`` calls these before the app starts (so bad paths end in
``error: ...`` on the terminal) and the app calls them when the user opens
something from the home screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparsify_tui.project import Project


def close_quietly(project: "Project") -> None:
    try:
        project.close()
    except Exception:  # noqa: BLE001
        pass


def machine_info() -> dict:
    """This machine's cores, ISA and engines (``engines.machine.machine_info``); a minimal one if that fails."""
    try:
        from sparsify_tui.engines.machine import machine_info as info

        return info()
    except Exception:  # noqa: BLE001 - the machine panel is informative only
        import os

        return {"physical_cores": os.cpu_count() or 1, "logical_cores": os.cpu_count() or 1,
                "isa": [], "engines": {}, "cpu_model": "unknown"}


def remember(project: "Project") -> None:
    """Put the project on the home screen's recent list (a convenience: never fails)."""
    try:
        from sparsify_tui.project import remember_project

        remember_project(project.dir, getattr(project, "display_name", None))
    except Exception:  # noqa: BLE001 - recent list is a convenience
        pass


def held_project(directory: Any, projects: list[Any]) -> Any:
    """The writable one of ``projects`` open in ``directory``, or None."""
    try:
        target = Path(directory).expanduser().resolve()
    except OSError:
        return None
    for p in projects:
        try:
            if not p.readonly and Path(p.dir).resolve() == target:
                return p
        except (OSError, AttributeError):
            continue
    return None


def load_model_data(project: "Project", entry_ids: dict[str, str | None],
                    cancelled: Any = lambda: False) -> tuple[Any, list[str]] | None:
    """(``tui.data.ModelData``, errors): the analysed model and its selected profiles (blocking).

    None when ``cancelled()`` says so once the files are read (a newer load replaced this one).
    """
    from sparsify_tui.tui.data import build_model_data

    errors: list[str] = []
    graph = None
    try:
        from sparsify_tui.analysis import analyze

        graph = analyze(project.model_path, dict(project.input_shapes or {}) or None)
    except Exception as exc:  # noqa: BLE001 - shown on the overview
        errors.append(f"the model could not be analysed: {exc}")
    docs = {kind: load_selected(project, kind, entry_ids.get(kind), errors) for kind in ("perf", "loss", "quant")}
    if cancelled():
        return None
    return build_model_data(graph, docs["perf"], docs["loss"], docs["quant"]), errors


def load_selected(project: "Project", kind: str, entry_id: str | None, errors: list[str]) -> dict | None:
    """The chosen profile of a kind, or the newest readable one."""
    try:
        entries = list(project.profiles_of(kind))
    except Exception:  # noqa: BLE001
        return None
    if entry_id is not None:
        entries.sort(key=lambda e: e.id != entry_id)
    else:
        entries = list(reversed(entries))
    for entry in entries:
        try:
            doc = project.load_profile(entry)
        except Exception as exc:  # noqa: BLE001 - a corrupt profile only hides itself
            errors.append(f"profile {entry.name!r} could not be read: {exc}")
            continue
        if isinstance(doc, dict):
            doc = dict(doc)
            doc["_entry_id"] = entry.id
            return doc
    return None


def _open(d: Path, reuse: Any = None) -> Any:
    """``reuse(d)`` (the project this app already holds open there) or ``Project.open(d)``.

    A second ``Project.open`` of a directory the same process holds would be
    read-only, and closing the first one would then drop the lock of both.
    """
    held = reuse(d) if reuse is not None else None
    if held is not None:
        return held
    from sparsify_tui.project import Project

    return Project.open(d)


def resolve_open_target(path: Path, reuse: Any = None) -> tuple[Any, list[tuple[str, dict]]]:
    """A project directory -> (opened project, []); an ONNX file -> (scratch project, jobs to start).

    ``reuse(dir)``: the project already open in this process at ``dir``, or None.
    """
    from sparsify_tui.errors import ModelError, ProjectError

    if path.is_dir():
        if not (path / "project.toml").exists():
            raise ProjectError(f"{path} is not a sparsify-tui project (it has no project.toml)")
        return _open(path, reuse), []
    if not path.exists():
        raise ModelError(f"{path} does not exist")
    return quick_look_project(path, reuse)


def quick_look_project(model: Path, reuse: Any = None) -> tuple[Any, list[tuple[str, dict]]]:
    """A scratch project for a bare ONNX file, in ``cache_dir()/scratch/<sha>``; jobs to start.

    The perf profile starts at once unless this exact model was already profiled.
    """
    import hashlib

    from sparsify_tui import paths
    from sparsify_tui.errors import ModelError
    from sparsify_tui.project import Project

    if not model.is_file():
        raise ModelError(f"{model} is not a file")
    h = hashlib.sha256()
    try:
        with open(model, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise ModelError(f"{model} cannot be read: {exc.strerror or exc}") from None
    sha = h.hexdigest()[:16]
    d = paths.cache_dir() / "scratch" / sha
    if (d / "project.toml").exists():
        project = _open(d, reuse)
    else:
        from sparsify_tui.analysis import analyze

        graph = analyze(model)  # a clear ModelError now rather than inside the app
        # dynamic dimensions: the values the analysis assumed (shown in its notes), so the
        # perf profile can run at once; a real project sets them in the setup screen
        concrete = graph.input_shapes()
        shapes = {t.name: concrete[t.name] for t in graph.inputs if t.assumed and t.name in concrete}
        d.parent.mkdir(parents=True, exist_ok=True)
        project = Project.create(model.resolve(), dir=d, name=model.stem,
                                 description=f"quick look at {model.name}", link=True,
                                 input_shapes=shapes or None)
    jobs: list[tuple[str, dict]] = []
    if not getattr(project, "readonly", False) and not project.profiles_of("perf"):
        jobs.append(("perf", {}))
    return project, jobs


DEMO_DESCRIPTION = "Sample project: a small ResNet-style CNN built by sparsify-tui (no download)."


def prepare_demo(*, start_measured_perf: bool = True, reuse: Any = None) -> tuple[Any, list[tuple[str, dict]]]:
    """The demo project (created on first use in ``paths.demo_project_dir()``) and the jobs to start.

    On first use it gets an approximated loss profile and, when
    ``start_measured_perf``, a real performance profile; both run in the
    background once the app shows the project.
    """
    import shutil
    import tempfile

    from sparsify_tui import paths
    from sparsify_tui.project import Project

    d = paths.demo_project_dir()
    if (d / "project.toml").exists():
        project = _open(d, reuse)
    else:
        from sparsify_tui.analysis.demo import build_demo_model

        if d.exists() and not any(d.iterdir()):
            d.rmdir()
        elif d.exists():
            # a half-created demo from an interrupted first run: only our own files live there
            shutil.rmtree(d)
        d.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=d.parent) as tmp:
            model = Path(tmp) / "demo.onnx"
            build_demo_model(model)
            project = Project.create(model, dir=d, name="demo", description=DEMO_DESCRIPTION)
    jobs: list[tuple[str, dict]] = []
    if not getattr(project, "readonly", False):
        if start_measured_perf and not project.profiles_of("perf"):
            jobs.append(("perf", {}))
        if not project.profiles_of("loss"):
            jobs.append(("loss", {"method": "approx"}))
    return project, jobs
