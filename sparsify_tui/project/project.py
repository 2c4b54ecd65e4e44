"""``Project``: one project directory, composed of its store, profile catalogue and optimizations.

:class:`Project` holds what ``project.toml`` says about the project and its model, reads and writes it
through a :class:`~.store.ProjectStore` (directory, lock, atomic writes, backup), keeps its profiles in a
:class:`~.catalogue.ProfileCatalogue` (keys, files, staleness) and its optimizations in an
:class:`~.optimizations.OptimizationSet`. Methods that change the project run under one re-entrant
mutex (``_serialized``): the app's workers share one Project.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Any, Callable

from sparsify_tui.errors import ProjectError, ReadOnlyProjectError
from sparsify_tui.project import create as _create
from sparsify_tui.project.catalogue import ProfileCatalogue, ProfileEntry
from sparsify_tui.project.common import (
    _KNOWN_TOP, MODEL_FILE, PROFILES_DIR, SCHEMA_VERSION, _clean_strings, _timestr,
    bad_type, dump_toml, now_iso,
)
from sparsify_tui.project.model import check_model_file, model_table, read_model_table
from sparsify_tui.project.optimizations import OptimizationSet
from sparsify_tui.project.recent import remember_project
from sparsify_tui.project.store import ProjectStore


def _serialized(method: Callable) -> Callable:
    """Run a mutating method under the project's thread lock (TUI workers share one Project)."""

    @functools.wraps(method)
    def wrapper(self: "Project", *args: Any, **kwargs: Any) -> Any:
        with self._mutex:
            return method(self, *args, **kwargs)

    return wrapper


def _part(part: str, attr: str, doc: str = "") -> property:
    """A Project attribute that lives in one of its parts (``self.<part>.<attr>``)."""
    return property(lambda self: getattr(getattr(self, part), attr),
                    lambda self, value: setattr(getattr(self, part), attr, value), doc=doc)


class Project:
    """A project directory: ``project.toml``, the model, ``profiles/*.json``, ``optimizations/*.json``.

    Open with :meth:`open` or make one with :meth:`create`; both take the write
    lock unless read-only. Use as a context manager (or call :meth:`close`) to
    release the lock.
    """

    def __init__(self, dir: Path) -> None:  # use open() / create()
        self.store = ProjectStore(Path(dir))
        self.catalogue = ProfileCatalogue(self.store)
        self.opts = OptimizationSet(self.store)
        self.name = ""
        self.description = ""
        self.created = ""
        self.modified = ""
        self.schema_version = SCHEMA_VERSION
        self.model_file = MODEL_FILE
        self.recorded_model_sha256 = ""  # what project.toml says (model_sha256: the current model's)
        self.model_size: int | None = None
        self.model_mtime_ns: int | None = None
        self.input_shapes: dict[str, list[int]] = {}
        self.readonly = False
        self.notices: list[str] = []
        self.model_changed = False
        self.model_missing = False
        self._raw: dict[str, Any] = {}  # project.toml as read: unknown keys are written back as they are
        self._mutex = threading.RLock()  # one save at a time when threads share the project
        self._closed = False

    # ------------------------------------------------------------ the parts' state, as attributes
    dir = _part("store", "dir", "The project directory.")
    _lock = _part("store", "lock")
    toml_path = _part("store", "toml_path")
    backup_path = _part("store", "backup_path")
    profiles = _part("catalogue", "entries", "The profile entries, in ``[[profiles]]`` order.")
    model_sha256 = _part("catalogue", "model_sha256", "The current model's sha256 (what new profiles are keyed by).")
    _profile_check_cache = _part("catalogue", "check_cache")
    optimizations = _part("opts", "items", "The optimization dicts, in order (see :meth:`set_optimization`).")

    # ------------------------------------------------------------ paths
    @property
    def model_path(self) -> Path:
        p = Path(self.model_file).expanduser()
        return p if p.is_absolute() else self.dir / p

    @property
    def display_name(self) -> str:
        """The name, or the directory's name when the name is empty."""
        return self.name if self.name.strip() else self.dir.name

    @property
    def linked(self) -> bool:
        """True when the model is referenced (``--link``) rather than copied into the project."""
        return Path(self.model_file).expanduser().is_absolute()

    @property
    def profiles_dir(self) -> Path:
        return self.dir / PROFILES_DIR

    # ------------------------------------------------------------ context manager
    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.store.lock.release()
        except Exception:
            pass

    def __repr__(self) -> str:
        ro = ", readonly" if self.readonly else ""
        return f"Project({str(self.dir)!r}, name={self.name!r}{ro})"

    def close(self) -> None:
        """Release the write lock (the project stays readable in memory, now read-only)."""
        if self._lock.held:
            self._lock.release()
            self.readonly = True
            self._closed = True

    # ------------------------------------------------------------ create, open, load
    @classmethod
    def create(cls, model: str | os.PathLike, dir: str | os.PathLike | None = None, name: str | None = None,
               description: str = "", link: bool = False, input_shapes: dict[str, list[int]] | None = None,
               *, on_progress: Callable[[str, float, float], None] | None = None) -> "Project":
        """Make a new project from an ONNX model and return it opened for writing.

        The model must be analysable (``sparsify_tui.analysis.analyze``). It is
        copied into the project as ``model.onnx`` with its external data files,
        or referenced by its absolute path with ``link=True``. ``dir`` defaults
        to ``./<slug(name)>`` and must be new or empty (an existing project or
        other files are never overwritten), except a directory that already
        holds this very model as ``model.onnx``: it becomes the project.
        ``on_progress(stage, done, total)`` reports the copy. See :mod:`.create`.
        """
        plan = _create.plan(model, dir, name, description, link, input_shapes)
        return _create.create(cls, plan, on_progress)

    @classmethod
    def open(cls, dir: str | os.PathLike, readonly: bool = False, wait: bool | float = False) -> "Project":
        """Open a project; takes the write lock unless ``readonly``.

        When another live process holds the lock the project opens read-only
        and ``notices`` says who holds it (``wait``: seconds to wait for the
        lock first, True = 10 s). A newer ``schema_version`` also opens
        read-only. A corrupt ``project.toml`` raises ProjectError with the
        line, the column and how to restore the backup. Profile files are not
        read here: a bad one never prevents opening (see :meth:`problems`).
        """
        d = ProjectStore.existing(dir)
        proj = cls(d)
        if readonly:
            proj.readonly = True
        else:
            notice = proj.store.take_lock(10.0 if wait is True else float(wait or 0.0))
            if notice:
                proj.readonly = True
                proj.notices.append(notice)
        try:
            proj._load()
        except BaseException:
            proj._lock.release()
            raise
        if proj._lock.held:
            proj.store.remove_stale_temps()
        remember_project(proj.dir, proj.name)
        return proj

    def _load(self) -> None:
        doc = self.store.read_doc()
        path = self.toml_path
        self._read_schema_version(doc, path)
        proj = doc.get("project", {})
        if not isinstance(proj, dict):
            raise bad_type(path, "[project]", "a table", proj)
        for key in ("name", "description", "created", "modified"):
            v = _timestr(proj.get(key, ""))
            if not isinstance(v, str):
                raise bad_type(path, f"project.{key}", "a string", v)
            setattr(self, key, v)
        for attr, value in read_model_table(doc, path).items():
            setattr(self, attr, value)
        self.catalogue.read_rows(doc.get("profiles", []), path)
        self.opts.read_rows(doc.get("optimizations", []), path)
        self._raw = doc
        self._check_model()
        if self.opts.problems:
            self.notices.extend(self.opts.problems.values())

    def _read_schema_version(self, doc: dict[str, Any], path: Path) -> None:
        sv = doc.get("schema_version", SCHEMA_VERSION)
        if not isinstance(sv, int) or isinstance(sv, bool):
            raise bad_type(path, "schema_version", "an integer", sv)
        self.schema_version = sv
        if sv > SCHEMA_VERSION:
            if self._lock.held:
                self._lock.release()
            self.readonly = True
            self.notices.append(
                f"opened read-only: {path} has schema_version {sv}, newer than this sparsify-tui "
                f"understands ({SCHEMA_VERSION}); upgrade sparsify-tui to change it")

    def _check_model(self) -> None:
        """Find the model's current sha256 (re-hashing only when its size or mtime changed) and say what changed."""
        mp = self.model_path
        c = check_model_file(mp, self.recorded_model_sha256, self.model_size, self.model_mtime_ns)
        self.model_sha256, self.model_size, self.model_mtime_ns = c.sha256, c.size, c.mtime_ns
        self.model_changed, self.model_missing = c.changed, c.missing
        if c.missing:
            self.notices.append(c.notice)
            return
        n = len(self.stale_profiles())
        if self.model_changed:
            self.notices.append(
                f"model file {mp} changed since the project was last saved: {n} profile(s) measured on the "
                "old model are marked stale (kept; measure them again with --force)")
        elif n:
            self.notices.append(f"{n} profile(s) were measured on an earlier version of the model and are "
                                "marked stale (kept; measure them again with --force)")

    # ------------------------------------------------------------ save
    def _doc(self) -> dict[str, Any]:
        raw = self._raw if isinstance(self._raw, dict) else {}
        doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        pt = dict(raw.get("project", {})) if isinstance(raw.get("project"), dict) else {}
        pt.update({"name": self.name, "description": self.description, "created": self.created,
                   "modified": self.modified})
        doc["project"] = pt
        doc["model"] = model_table(raw.get("model"), self.model_file, self.model_sha256, self.model_size,
                                   self.model_mtime_ns, self.input_shapes)
        doc["profiles"] = self.catalogue.rows()
        doc["optimizations"] = self.opts.rows()
        for k, v in raw.items():
            if k not in _KNOWN_TOP:
                doc[k] = v
        if not doc["profiles"]:
            del doc["profiles"]
        if not doc["optimizations"]:
            del doc["optimizations"]
        return _clean_strings(doc)

    def require_writable(self) -> None:
        """Raise ReadOnlyProjectError (saying why: lock holder, newer schema, closed) unless saves are possible.

        Commands that will store a result should call it *before* a long measurement.
        """
        self._check_writable()

    def _check_writable(self) -> None:
        if self.readonly or not self._lock.held:
            why = next((n for n in self.notices if n.startswith("opened read-only")),
                       "the project was closed" if self._closed else "the project is open read-only")
            raise ReadOnlyProjectError(f"cannot save {self.toml_path}: {why}")

    @_serialized
    def save(self, *, _touch: bool = True) -> None:
        """Write project.toml atomically (and changed optimization files); the old one becomes project.toml.bak.

        Raises ReadOnlyProjectError on a read-only project and ProjectError
        when the disk refuses the write (the previous content stays intact).
        """
        self._check_writable()
        old_modified = self.modified
        if _touch:
            self.modified = now_iso()
        try:
            self.opts.assign_files()
            doc = self._doc()
            try:
                text = dump_toml(doc)
            except (TypeError, ValueError) as exc:
                raise ProjectError(f"cannot write {self.toml_path}: {exc}") from None
            # optimization files first: a crash before the rename of project.toml leaves the old
            # project.toml pointing at complete files
            self.opts.write_files()
            notice = self.store.keep_outside_edit()
            if notice:
                self.notices.append(notice)
            self.store.write_toml(text)
        except BaseException:
            self.modified = old_modified
            raise
        self.recorded_model_sha256 = self.model_sha256
        self.opts.remove_unreferenced()

    def changed_on_disk(self) -> bool:
        """True when project.toml on disk is not the version this object read or wrote last
        (another process saved it, or it was edited by hand): call :meth:`reload` to see it."""
        return self.store.changed_on_disk()

    def reload(self) -> None:
        """Read project.toml again (e.g. after another process saved it); the lock is kept."""
        with self._mutex:
            keep = [n for n in self.notices if n.startswith("opened read-only")]
            self.notices = keep
            self._load()

    # ------------------------------------------------------------ profiles (see ProfileCatalogue)
    def profile_key(self, kind: str, settings: dict[str, Any], engine: str, engine_version: str,
                    machine_fingerprint: str) -> str:
        """The cache key of a profile (see :meth:`ProfileCatalogue.key`): the same before and after a round
        trip through project.toml."""
        return self.catalogue.key(kind, settings, engine, engine_version, machine_fingerprint)

    def find_profile(self, key: str) -> ProfileEntry | None:
        """The profile with this cache key, or None (the newest if several)."""
        return self.catalogue.find(key)

    def get_profile(self, id: str) -> ProfileEntry:
        """The entry with this id (ProfileError when there is none)."""
        return self.catalogue.get(id)

    def profiles_of(self, kind: str) -> list[ProfileEntry]:
        return self.catalogue.of_kind(kind)

    @_serialized
    def add_profile(self, kind: str, name: str | None, settings: dict[str, Any], engine: str, engine_version: str,
                    machine: dict[str, Any] | None, data: dict[str, Any]) -> ProfileEntry:
        """Store a profile: ``profiles/<id>.json`` (atomic), then project.toml.

        ``data`` gets ``schema_version`` (if absent) and ``key``. A profile with
        the same key replaces the old entry (its file is removed after the save).
        ``machine`` is ``machine_info()`` (or its summary); its ``fingerprint`` enters the key.
        """
        self._check_writable()
        entry, text = self.catalogue.new_entry(kind, name, settings, engine, engine_version, machine, data)
        rel, key = entry.file, entry.key
        self.store.write(self.dir / rel, text)
        old = list(self.profiles)
        replaced = [e for e in self.profiles if e.key == key]
        self.profiles = [e for e in self.profiles if e.key != key] + [entry]
        try:
            self.save()
        except BaseException:
            self.profiles = old
            self.store.remove_owned(rel, PROFILES_DIR)
            raise
        for e in replaced:
            if e.file != rel:
                self.store.remove_owned(e.file, PROFILES_DIR)
        return entry

    @_serialized
    def remove_profile(self, entry_or_id: ProfileEntry | str) -> None:
        """Remove a profile from project.toml and delete its file."""
        self._check_writable()
        entry = entry_or_id if isinstance(entry_or_id, ProfileEntry) else self.get_profile(entry_or_id)
        old = list(self.profiles)
        self.profiles = [e for e in self.profiles if e.id != entry.id]
        try:
            self.save()
        except BaseException:
            self.profiles = old
            raise
        self.store.remove_owned(entry.file, PROFILES_DIR)

    def load_profile(self, entry_or_id: ProfileEntry | str) -> dict[str, Any]:
        """The profile's full results (a fresh dict). ProfileError if the file is missing or corrupt."""
        return self.catalogue.load(entry_or_id)

    def profile_problem(self, entry: ProfileEntry) -> str | None:
        """Why this profile cannot be loaded, or None (cached by the file's size and mtime)."""
        return self.catalogue.problem(entry)

    def profile_problems(self) -> dict[str, str]:
        """``{profile id: why it cannot be loaded}`` for every unreadable profile file (reads them all)."""
        return self.catalogue.problems()

    def problems(self) -> dict[str, str]:
        """Everything unreadable: profiles (by id) and optimizations (``optimization:<name>``)."""
        out = dict(self.opts.problems)
        out.update(self.profile_problems())
        return out

    def is_stale(self, entry: ProfileEntry) -> bool:
        """True when the profile was measured on a model other than the current model file."""
        return self.catalogue.is_stale(entry)

    def stale_profiles(self) -> list[ProfileEntry]:
        return self.catalogue.stale()

    # ------------------------------------------------------------ optimizations (see OptimizationSet)
    def optimization_names(self) -> list[str]:
        """The optimizations' names, in order (read their plans with ``actions.optimizer.load_optimization``)."""
        return self.opts.names()

    def get_optimization(self, name: str) -> dict[str, Any] | None:
        return self.opts.get(name)

    def _save_optimizations(self, old) -> None:
        """save() after a change of the optimizations; when it fails they are put back to ``old``."""
        try:
            self.save()
        except BaseException:
            self.optimizations = old
            raise

    @_serialized
    def set_optimization(self, opt: dict[str, Any]) -> None:
        """Add or replace the optimization named ``opt["name"]`` (position kept on replace), then save()."""
        self._check_writable()
        self._save_optimizations(self.opts.put(opt))

    @_serialized
    def remove_optimization(self, name: str) -> None:
        """Remove the optimization named ``name`` (ProjectError if there is none), then save()."""
        self._check_writable()
        self._save_optimizations(self.opts.remove(name))

    # ------------------------------------------------------------ summary
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (for ``--json`` output and the TUI)."""
        return {
            "path": str(self.dir),
            "name": self.name,
            "description": self.description,
            "created": self.created,
            "modified": self.modified,
            "schema_version": self.schema_version,
            "model": str(self.model_path),
            "linked": self.linked,
            "sha256": self.model_sha256,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "model_changed": self.model_changed,
            "model_missing": self.model_missing,
            "readonly": self.readonly,
            "notices": list(self.notices),
            "profiles": [dict(e.to_dict(), stale=self.is_stale(e)) for e in self.profiles],
            "optimizations": self.optimization_names(),
        }
