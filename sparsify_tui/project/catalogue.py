"""The profile catalogue: the ``[[profiles]]`` rows of a project, their cache keys, files and staleness.

A profile's cache key is the sha256 over the model's sha256 and the canonical JSON of kind, settings
(``None`` removed, like their stored form), engine, engine version and machine fingerprint: the same
measurement asked for again finds the stored one. A profile is *stale* when it was measured on a model
other than the current model file. A profile file that cannot be read is reported for that profile
only (:meth:`ProfileCatalogue.problem`), never stops the project from opening.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsify_tui.errors import ProfileError, ProjectError
from sparsify_tui.project.common import (
    KINDS, PROFILE_SCHEMA_VERSION, PROFILES_DIR, _timestr, _to_toml_value, _type_name, bad_type, canonical_json,
    drop_none, dumps_json, now_iso, slugify,
)
from sparsify_tui.project.store import ProjectStore

_ENTRY_KEYS = ("id", "kind", "name", "settings", "engine", "engine_version", "machine",
               "created", "file", "key", "model_sha256")
_MACHINE_SUMMARY = ("cpu_model", "isa", "cores", "fingerprint")


@dataclass
class ProfileEntry:
    """One ``[[profiles]]`` row: where a profile's results live and what produced them."""

    id: str
    kind: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    engine: str = ""
    engine_version: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    file: str = ""
    key: str = ""
    model_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept on save

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "created": self.created,
            "file": self.file,
            "key": self.key,
            "model_sha256": self.model_sha256,
            "settings": drop_none(self.settings),
            "machine": drop_none(self.machine),
        }
        for k, v in self.extra.items():
            if k not in d:
                d[k] = v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "profile") -> "ProfileEntry":
        """Read a ``[[profiles]]`` table; a wrong type raises ProjectError naming the key."""
        if not isinstance(d, dict):
            raise ProjectError(f"{where} must be a table, not {_type_name(d)}")

        def get_str(key: str, default: str | None = None) -> str:
            if key not in d:
                if default is None:
                    raise ProjectError(f"{where} has no {key!r}")
                return default
            v = _timestr(d[key])
            if not isinstance(v, str):
                raise ProjectError(f"{where}.{key} must be a string, not {_type_name(v)}")
            return v

        def get_table(key: str) -> dict[str, Any]:
            v = d.get(key, {})
            if not isinstance(v, dict):
                raise ProjectError(f"{where}.{key} must be a table, not {_type_name(v)}")
            return v

        pid = get_str("id")
        if not pid.strip():
            raise ProjectError(f"{where}.id must not be empty")
        if "\0" in str(d.get("file", "")):
            raise ProjectError(f"{where}.file must be a file path (it contains a NUL character)")
        kind = get_str("kind")
        return cls(
            id=pid,
            kind=kind,
            name=get_str("name", pid),
            settings=get_table("settings"),
            engine=get_str("engine", ""),
            engine_version=get_str("engine_version", ""),
            machine=get_table("machine"),
            created=get_str("created", ""),
            file=get_str("file", f"{PROFILES_DIR}/{pid}.json"),
            key=get_str("key", ""),
            model_sha256=get_str("model_sha256", ""),
            extra={k: v for k, v in d.items() if k not in _ENTRY_KEYS},
        )


def machine_summary(machine: dict[str, Any] | None) -> dict[str, Any]:
    """The part of ``engines.machine.machine_info()`` kept in project.toml: cpu_model, isa, cores, fingerprint."""
    machine = dict(machine or {})
    out: dict[str, Any] = {}
    if machine.get("cpu_model") is not None:
        out["cpu_model"] = str(machine["cpu_model"])
    if machine.get("isa") is not None:
        isa = machine["isa"]
        out["isa"] = list(isa) if isinstance(isa, (list, tuple)) else [str(isa)]
    cores = machine.get("cores", machine.get("physical_cores"))
    if cores is not None:
        out["cores"] = cores
    if machine.get("fingerprint") is not None:
        out["fingerprint"] = str(machine["fingerprint"])
    return out



class ProfileCatalogue:
    """The project's profiles (``entries``, in ``[[profiles]]`` order) and what is known about each.

    ``model_sha256`` is the current model's sha256: what new profiles are keyed by and what a stale one
    differs from. Writing is the project's job (it saves project.toml); this class builds, finds, keys
    and reads entries, and the files in ``store``'s directory.
    """

    def __init__(self, store: ProjectStore) -> None:
        self._store = store
        self.model_sha256 = ""
        self.entries: list[ProfileEntry] = []
        self.check_cache: dict[str, tuple[Any, str | None]] = {}  # id -> (file stamp, problem)

    # ------------------------------------------------------------ project.toml rows
    def read_rows(self, rows: Any, path: Path) -> None:
        """Take the ``[[profiles]]`` tables of project.toml ``path``; ProjectError naming a bad key."""
        if not isinstance(rows, list):
            raise bad_type(path, "profiles", "an array of tables ([[profiles]])", rows)
        self.entries = []
        seen: set[str] = set()
        for i, row in enumerate(rows):
            entry = ProfileEntry.from_dict(row, where=f"{path}: profiles[{i}]")
            if entry.id in seen:
                raise ProjectError(f"{path}: profiles[{i}].id {entry.id!r} is used twice; give each profile its own id")
            seen.add(entry.id)
            self.entries.append(entry)

    def rows(self) -> list[dict[str, Any]]:
        return [_to_toml_value(e.to_dict(), f"profile {e.id}") for e in self.entries]

    # ------------------------------------------------------------ keys and look-ups
    def key(self, kind: str, settings: dict[str, Any], engine: str, engine_version: str,
            machine_fingerprint: str) -> str:
        """The cache key of a profile: sha256 over the model's sha256 and the canonical JSON of the rest."""
        body = canonical_json({
            "kind": kind,
            "settings": drop_none(dict(settings or {})),
            "engine": engine or "",
            "engine_version": engine_version or "",
            "machine": machine_fingerprint or "",
        })
        return hashlib.sha256(f"{self.model_sha256}\n{body}".encode("utf-8", "surrogatepass")).hexdigest()

    def find(self, key: str) -> ProfileEntry | None:
        """The profile with this cache key, or None (the newest if several)."""
        for e in reversed(self.entries):
            if e.key == key:
                return e
        return None

    def get(self, id: str) -> ProfileEntry:
        """The entry with this id (ProfileError when there is none)."""
        for e in self.entries:
            if e.id == id:
                return e
        ids = ", ".join(e.id for e in self.entries) or "none"
        raise ProfileError(f"project {self._store.dir} has no profile {id!r} (profiles: {ids})")

    def of_kind(self, kind: str) -> list[ProfileEntry]:
        return [e for e in self.entries if e.kind == kind]

    def new_id(self, kind: str) -> str:
        taken = {e.id for e in self.entries}
        prefix = slugify(kind, "profile")
        n = 1
        for e in self.entries:
            m = re.fullmatch(re.escape(prefix) + r"-(\d+)", e.id)
            if m:
                n = max(n, int(m.group(1)) + 1)
        while f"{prefix}-{n}" in taken or (self._store.dir / PROFILES_DIR / f"{prefix}-{n}.json").exists():
            n += 1
        return f"{prefix}-{n}"

    def new_entry(self, kind: str, name: str | None, settings: dict[str, Any], engine: str, engine_version: str,
                  machine: dict[str, Any] | None, data: dict[str, Any]) -> tuple[ProfileEntry, str]:
        """A new entry for these results and the JSON text of its file (nothing written yet).

        ``data`` gets ``schema_version`` (if absent), ``kind`` and ``key``. ProfileError for a bad kind
        or data; ProjectError when the entry cannot be written as TOML.
        """
        if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
            raise ProfileError(f"profile kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not isinstance(data, dict):
            raise ProfileError(f"profile data must be a JSON object (dict), got {type(data).__name__}")
        settings = drop_none(dict(settings or {}))
        summary = machine_summary(machine)
        key = self.key(kind, settings, engine, engine_version, summary.get("fingerprint", ""))
        pid = self.new_id(kind)
        rel = f"{PROFILES_DIR}/{pid}.json"
        doc = dict(data)
        doc.setdefault("schema_version", PROFILE_SCHEMA_VERSION)
        doc.setdefault("kind", kind)
        doc["key"] = key
        try:
            text = dumps_json(doc)
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"cannot store the {kind} profile: {exc}") from None
        entry = ProfileEntry(
            id=pid, kind=kind, name=str(name) if name else pid, settings=settings, engine=str(engine or ""),
            engine_version=str(engine_version or ""), machine=summary, created=now_iso(), file=rel, key=key,
            model_sha256=self.model_sha256,
        )
        # validate that the entry can be written as TOML before touching the disk
        _to_toml_value(entry.to_dict(), f"profile {pid}")
        return entry, text

    # ------------------------------------------------------------ files
    def load(self, entry_or_id: ProfileEntry | str) -> dict[str, Any]:
        """The profile's full results (a fresh dict). ProfileError if the file is missing or corrupt."""
        entry = entry_or_id if isinstance(entry_or_id, ProfileEntry) else self.get(entry_or_id)
        path = self._store.dir / entry.file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ProfileError(f"profile {entry.id!r}: its file {path} is missing; measure it again") from None
        except OSError as exc:
            raise ProfileError(f"profile {entry.id!r}: cannot read {path}: {exc.strerror or exc}") from None
        try:
            doc = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProfileError(f"profile {entry.id!r}: {path} is corrupt (not UTF-8 text); measure it again "
                               "with --force") from None
        except json.JSONDecodeError as exc:
            what = "truncated" if exc.pos >= len(data.rstrip()) else "corrupt"
            raise ProfileError(f"profile {entry.id!r}: {path} is {what} (line {exc.lineno}, column {exc.colno}: "
                               f"{exc.msg}); measure it again with --force") from None
        if not isinstance(doc, dict):
            raise ProfileError(f"profile {entry.id!r}: {path} does not hold a JSON object; measure it again")
        return doc

    def problem(self, entry: ProfileEntry) -> str | None:
        """Why this profile cannot be loaded, or None (cached by the file's size and mtime)."""
        path = self._store.dir / entry.file
        try:
            st = path.stat()
            stamp: Any = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        cached = self.check_cache.get(entry.id)
        if cached is not None and cached[0] == stamp and stamp is not None:
            return cached[1]
        try:
            self.load(entry)
            problem = None
        except ProfileError as exc:
            problem = str(exc)
        self.check_cache[entry.id] = (stamp, problem)
        return problem

    def problems(self) -> dict[str, str]:
        """``{profile id: why it cannot be loaded}`` for every unreadable profile file (reads them all)."""
        out = {}
        for e in self.entries:
            p = self.problem(e)
            if p:
                out[e.id] = p
        return out

    # ------------------------------------------------------------ staleness
    def is_stale(self, entry: ProfileEntry) -> bool:
        """True when the profile was measured on a model other than the current model file."""
        sha = self.model_sha256
        return bool(entry.model_sha256) and bool(sha) and entry.model_sha256 != sha

    def stale(self) -> list[ProfileEntry]:
        return [e for e in self.entries if self.is_stale(e)]
