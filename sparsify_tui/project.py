"""A sparsify-tui project: one directory the user comes back to for weeks.

Layout::

    PROJECT_DIR/
      project.toml          the project (hand-editable TOML, see below)
      project.toml.bak      the previous version of project.toml (kept by every save)
      project.lock          write lock: pid, host and start time of the process holding it
      model.onnx            the model, copied in (absent with --link)
      profiles/<id>.json    each profile's full results (JSON, written atomically)
      optimizations/<slug>.json   each optimization (JSON, written atomically)

``project.toml``::

    schema_version = 1

    [project]
    name = "resnet"
    description = ""
    created = "2026-11-28T16:15:00+00:00"     # ISO 8601, UTC
    modified = "2026-11-28T16:20:00+00:00"

    [model]
    file = "model.onnx"        # relative to the project, or an absolute path (--link)
    sha256 = "..."
    size = 102400              # bytes; with mtime_ns a cache key for the sha256:
    mtime_ns = 1764346500000000000   # the model is re-hashed only when one of them changes

    [model.input_shapes]
    input = [1, 3, 224, 224]

    [[profiles]]
    id = "perf-1"              # unique in the project; the file is profiles/<id>.json
    kind = "perf"              # perf | loss | quant
    name = "baseline"
    engine = "deepsparse"
    engine_version = "1.8.0"
    created = "..."
    file = "profiles/perf-1.json"
    key = "..."                # see profile_key()
    model_sha256 = "..."       # the model the profile was measured on (stale when it differs)
    [profiles.settings]        # the settings that produced it (batch_size, levels, ...)
    [profiles.machine]         # cpu_model, isa, cores, fingerprint

    [[optimizations]]
    name = "default"
    file = "optimizations/default.json"

Keys and sections this module does not know are kept as they are on save, so
a newer program's (or a user's) additions survive an older program's save.

**None values.** TOML cannot hold ``None``. Profile ``settings`` and
``machine`` tables are stored with ``None`` values removed recursively (a
``None`` dict value is dropped, a ``None`` list item is dropped) and
:meth:`Project.profile_key` applies the same rule before hashing, so a key
computed from the original settings equals the key of the stored ones.

**Optimizations** are stored as JSON files (``optimizations/<slug>.json``)
referenced from ``[[optimizations]]`` by ``name`` and ``file``: JSON keeps
``None``, nested lists and the exact content the optimizer wrote, with no
lossy conversion. ``Project.optimizations`` is the list of those dicts, in
order; :meth:`Project.set_optimization` adds or replaces one by
``opt["name"]`` and saves; :meth:`Project.remove_optimization` removes one.
A hand-written ``[[optimizations]]`` table without ``file`` is read as the
optimization itself (inline form); it is written back as a JSON file on the
next save. An optimization file that cannot be read is reported in
:meth:`Project.problems` and its ``[[optimizations]]`` entry is preserved.

**Saving** is atomic (``fsutil``: temporary file, fsync, rename, fsync of the
directory) and keeps the previous ``project.toml`` as ``project.toml.bak``. A
profile is written to its JSON file first, then ``project.toml`` is saved: a
crash in between leaves an unreferenced file, never a reference to a missing or
torn one.

Since the optimization file is written before the ``project.toml`` that lists
it, a crash between the two can leave the *file* one save newer than
``project.toml``; its ``[[optimizations]]`` row only holds name and file, so
the project is still consistent.

``project.toml`` changed behind the program's back while it was open (a
hand edit) is not silently overwritten: the next save keeps that version as
``project.toml.outside-edit`` and adds a notice. :meth:`Project.changed_on_disk`
tells a read-only viewer that another process saved; :meth:`Project.reload`
reads it again.

:meth:`Project.create` builds a new project under a hidden staging directory
next to the target and renames it into place at the end, so an interrupted
``sparsify-tui new`` leaves no half-made project.

**Errors.** A corrupt ``project.toml`` raises :class:`ProjectError` naming the
line and column and the command that restores the backup (or saying the
backup is damaged too); a wrong value type raises :class:`ProjectError`
naming the key. A corrupt or missing profile file never stops
:meth:`Project.open`: :meth:`Project.load_profile` raises :class:`ProfileError`
for that profile only, and :meth:`Project.profile_problems` lists them. A
failed write (read-only directory, full disk, file size limit) raises
:class:`ProjectError` and leaves the previous content intact.

**Locking.** :meth:`Project.open` takes an exclusive ``fcntl.flock`` on
``project.lock`` (and writes the pid, host and time into it for messages). The
kernel releases a flock when its process dies, so a lock left by a dead (even
SIGKILLed) process is taken over at once. A second writer gets
``readonly=True`` and a notice naming the holder; ``save()`` on a read-only
project raises :class:`ReadOnlyProjectError`.

**Staleness.** Every profile records the sha256 of the model it was measured
on. When the model file changes on disk the project notices on open
(``model_changed``; the model is re-hashed only when its size or mtime
changed), and :meth:`Project.is_stale` is True for the profiles measured on the
old model. Stale profiles are shown, never deleted. A missing model file
opens the project with a notice (``model_missing``); a ``schema_version``
newer than :data:`SCHEMA_VERSION` opens it read-only with a notice.

**Recent projects.** :func:`recent_projects` / :func:`remember_project` keep
the newest 30 project directories in ``paths.recent_projects_file()`` (JSON,
atomic); ``create`` and ``open`` remember the project.
"""

from __future__ import annotations

import copy
import datetime as _dt
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import functools
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sparsify_tui import fsutil
from sparsify_tui.errors import ModelError, ProfileError, ProjectError, ReadOnlyProjectError

try:  # Python 3.11+
    import tomllib as _toml_reader
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as _toml_reader  # type: ignore[no-redef]

SCHEMA_VERSION = 1
PROFILE_SCHEMA_VERSION = 1
KINDS = ("perf", "loss", "quant", "deploy")
PROJECT_FILE = "project.toml"
BACKUP_FILE = "project.toml.bak"
LOCK_FILE = "project.lock"
MODEL_FILE = "model.onnx"
PROFILES_DIR = "profiles"
OPTIMIZATIONS_DIR = "optimizations"
RECENT_MAX = 30

_KNOWN_TOP = ("schema_version", "project", "model", "profiles", "optimizations")
_ENTRY_KEYS = ("id", "kind", "name", "settings", "engine", "engine_version", "machine",
               "created", "file", "key", "model_sha256")
_MACHINE_SUMMARY = ("cpu_model", "isa", "cores", "fingerprint")


# ---------------------------------------------------------------- helpers
def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-11-28T16:15:00+00:00``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def slugify(name: str, default: str = "project") -> str:
    """A file-system friendly version of ``name``: ``"My ResNet 50!"`` -> ``"my-resnet-50"``."""
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._").lower()
    text = re.sub(r"-{2,}", "-", text)
    return text[:64].strip("-._") or default


def drop_none(value: Any) -> Any:
    """``value`` with ``None`` removed recursively (dict values and list items); tuples become lists."""
    if isinstance(value, dict):
        return {str(k): drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [drop_none(v) for v in value if v is not None]
    return value


def clean_text(text: str) -> str:
    """``text`` made encodable as UTF-8: undecodable bytes (from a non-UTF-8 command line or file
    name, kept by Python as lone surrogates) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:  # surrogates standing for undecodable bytes: one U+FFFD per byte run
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # other lone surrogates
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _clean_strings(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_strings(v) for v in value]
    return value


def dumps_json(doc: Any) -> str:
    """JSON for our files: readable UTF-8 when possible, ASCII escapes when the text holds lone surrogates."""
    try:
        text = json.dumps(doc, indent=1, default=fsutil.json_default, ensure_ascii=False) + "\n"
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return json.dumps(doc, indent=1, default=fsutil.json_default, ensure_ascii=True) + "\n"


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for cache keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=fsutil.json_default)


def _to_toml_value(value: Any, where: str) -> Any:
    """Make ``value`` writable by tomli_w: drop None, tuples -> lists, numpy -> Python, str keys."""
    if value is None:
        return None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if v is None:
                continue
            out[str(k)] = _to_toml_value(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = value if not isinstance(value, (set, frozenset)) else sorted(value, key=repr)
        return [_to_toml_value(v, where) for v in items if v is not None]
    if isinstance(value, (bool, int, float, str, _dt.datetime, _dt.date, _dt.time)):
        return value
    if isinstance(value, Path):
        return str(value)
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return _to_toml_value(value.tolist(), where)
    except ImportError:  # pragma: no cover
        pass
    raise ProjectError(f"cannot store {where} in project.toml: a {type(value).__name__} is not a TOML value")


def dump_toml(doc: dict[str, Any], aot_keys: tuple[str, ...] = ("profiles", "optimizations")) -> str:
    """TOML text of ``doc`` with the top-level arrays ``aot_keys`` always written as ``[[key]]`` sections
    at the end (tomli_w writes short arrays of tables inline, which is harder to edit by hand)."""
    import tomli_w

    doc = dict(doc)
    aots = {}
    for k in aot_keys:
        v = doc.get(k)
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            aots[k] = doc.pop(k)
    text = tomli_w.dumps(doc)
    for k, rows in aots.items():
        header = f"[{tomli_w.dumps({k: 0}).split(' = ')[0]}]"  # the key as TOML writes it
        for row in rows:
            chunk = tomli_w.dumps({k: row})
            if chunk.startswith(header + "\n"):
                chunk = "[" + header + "]" + chunk[len(header):]
            else:  # a row with only sub-tables gets no header line of its own
                chunk = "[" + header + "]\n" + chunk
            text += ("\n" if text else "") + chunk
    return text


def _timestr(value: Any) -> Any:
    """A hand-written TOML datetime becomes its ISO string; strings stay as they are."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    return value


_TYPE_NAMES = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (list, "an array"),
               (dict, "a table"))  # bool before int: a bool is an int


def _type_name(value: Any) -> str:
    return next((name for t, name in _TYPE_NAMES if isinstance(value, t)), f"a {type(value).__name__}")


# ---------------------------------------------------------------- profile entries
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


# ---------------------------------------------------------------- lock
class ProjectLock:
    """An exclusive ``flock`` on ``project.lock``; the file also names the holder for messages.

    The kernel drops a flock when the process holding it dies, so a lock left
    by a dead process is free at once (the stale pid inside is overwritten).
    The lock file is removed on release; an acquirer re-checks that the path
    still names the inode it locked, so removal never lets two writers in.

    On a filesystem without ``flock`` (``ENOLCK``/``EOPNOTSUPP``: some network
    and FUSE mounts), or with ``SPARSIFY_TUI_LOCK=file``, the lock is the
    lock file itself, created with ``O_CREAT|O_EXCL``; a lock file naming a
    process of this host that no longer exists (or an empty one older than
    30 s) is taken over. A holder on another host cannot be checked: the notice
    names it, and removing ``project.lock`` by hand frees the project.
    """

    STALE_EMPTY_S = 30.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.owner_pid: int | None = None
        self.mode = "file" if os.environ.get("SPARSIFY_TUI_LOCK") == "file" else "flock"

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lock; wait up to ``wait`` seconds for it. False if another live process holds it.

        Raises OSError when the lock file cannot be created (read-only directory...).
        """
        deadline = time.monotonic() + max(0.0, float(wait))
        while True:
            got = self._try_flock() if self.mode == "flock" else self._try_exclusive_file()
            if got is None:  # flock not supported here: use the lock file itself
                self.mode = "file"
                continue
            if got:
                self.owner_pid = os.getpid()
                self._write_info()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _try_flock(self) -> bool | None:
        import fcntl

        while True:
            fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    return False
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(str(self.path)).st_ino
            except OSError:
                same = False
            if same:
                self.fd = fd
                return True
            os.close(fd)  # released and removed between our open and flock: retry on the new file

    def _try_exclusive_file(self) -> bool:
        try:
            self.fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            return True
        except FileExistsError:
            pass
        if self._holder_is_gone():
            try:
                os.unlink(str(self.path))
            except FileNotFoundError:
                pass
            try:
                self.fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                return True
            except FileExistsError:  # someone else took it over first
                return False
        return False

    def _holder_is_gone(self) -> bool:
        info = self.holder()
        if not info.get("pid"):
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return True
            return age > self.STALE_EMPTY_S  # a creator killed before writing its note
        if info.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, TypeError, OverflowError):
            return False
        return False

    def _write_info(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso(), "mode": self.mode}
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, (json.dumps(info) + "\n").encode(), 0)
            if self.mode == "file":
                os.fsync(self.fd)
        except OSError:  # the lock holds even when the note cannot be written (full disk)
            pass

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        if self.owner_pid == os.getpid():  # a forked child must not remove its parent's lock file
            try:
                os.unlink(str(self.path))
            except OSError:
                pass
        os.close(fd)  # closing drops the flock (the parent's descriptor keeps it after a fork)

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its holder.

        The holder writes it right after taking the lock: when it is still
        empty, wait a moment (at most 0.5 s) for it to appear.
        """
        import time as _time

        deadline = _time.monotonic() + 0.5
        while True:
            try:
                text = self.path.read_text(encoding="utf-8", errors="replace")
                info = json.loads(text)
                if isinstance(info, dict) and info.get("pid"):
                    return info
            except (OSError, ValueError):
                pass
            if _time.monotonic() >= deadline:
                return {}
            _time.sleep(0.02)


def _holder_sentence(info: dict[str, Any]) -> str:
    if info.get("pid"):
        me = info.get("pid") == os.getpid() and info.get("host") == socket.gethostname()
        s = f"project is open in process {info.get('pid')}{' (this process)' if me else ''} on host {info.get('host', '?')}"
        if info.get("started"):
            s += f" (since {info['started']})"
        return s
    return "project is open in another process"


# ---------------------------------------------------------------- the project
def _serialized(method: Callable) -> Callable:
    """Run a mutating method under the project's thread lock (TUI workers share one Project)."""

    @functools.wraps(method)
    def wrapper(self: "Project", *args: Any, **kwargs: Any) -> Any:
        with self._mutex:
            return method(self, *args, **kwargs)

    return wrapper


class Project:
    """A project directory: ``project.toml``, the model, ``profiles/*.json``, ``optimizations/*.json``.

    Open with :meth:`open` or make one with :meth:`create`; both take the write
    lock unless read-only. Use as a context manager (or call :meth:`close`) to
    release the lock.
    """

    def __init__(self, dir: Path) -> None:  # use open() / create()
        self.dir = Path(dir)
        self.name = ""
        self.description = ""
        self.created = ""
        self.modified = ""
        self.schema_version = SCHEMA_VERSION
        self.model_file = MODEL_FILE
        self.model_sha256 = ""  # the current model's sha256 (what new profiles are keyed by)
        self.recorded_model_sha256 = ""  # what project.toml says
        self.model_size: int | None = None
        self.model_mtime_ns: int | None = None
        self.input_shapes: dict[str, list[int]] = {}
        self.profiles: list[ProfileEntry] = []
        self.optimizations: list[dict[str, Any]] = []
        self.readonly = False
        self.notices: list[str] = []
        self.model_changed = False
        self.model_missing = False
        self._raw: dict[str, Any] = {}
        self._lock = ProjectLock(self.dir / LOCK_FILE)
        self._opt_files: dict[str, str] = {}  # optimization name -> file (relative)
        self._opt_written: dict[str, str] = {}  # file -> JSON text last written/read
        self._bad_opt_entries: list[dict[str, Any]] = []  # unreadable [[optimizations]] rows, kept
        self._opt_row_extra: dict[str, dict[str, Any]] = {}  # unknown keys of [[optimizations]] rows, kept
        self._problems: dict[str, str] = {}
        self._mutex = threading.RLock()  # one save at a time when threads share the project
        self._stamp: tuple[int, int, int] | None = None  # project.toml as last read/written by us
        self._profile_check_cache: dict[str, tuple[Any, str | None]] = {}
        self._closed = False

    # ------------------------------------------------------------ paths
    @property
    def toml_path(self) -> Path:
        return self.dir / PROJECT_FILE

    @property
    def backup_path(self) -> Path:
        return self.dir / BACKUP_FILE

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
            self._lock.release()
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

    # ------------------------------------------------------------ create
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
        ``on_progress(stage, done, total)`` reports the copy.
        """
        src = Path(model).expanduser()
        if not src.exists():
            raise ModelError(f"model file {src} does not exist")
        if not src.is_file():
            raise ModelError(f"{src} is not a file: give the path of an ONNX model")
        shapes = _check_input_shapes(input_shapes)
        proto = _validate_model(src, shapes)
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
        if in_place and link:
            link = False

        # A new (or empty) directory is built under a hidden staging name and renamed into place at the
        # end, so an interrupted create never leaves a half-made project behind. An existing non-empty
        # directory (the model already in it, or other files of the user's) is filled in place.
        staged = not target.exists() or (target.is_dir() and not any(target.iterdir()))
        if staged:
            work = target.parent / f".{target.name}.creating-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        else:
            work = target
        made: list[Path] = []
        proj = cls(work)
        try:
            try:
                work.mkdir(parents=True, exist_ok=not staged)
            except OSError as exc:
                raise ProjectError(f"cannot create the project directory {target}: {exc.strerror or exc}") from None
            try:
                got = proj._lock.acquire()
            except OSError as exc:
                raise ProjectError(f"cannot write in {target}: {exc.strerror or exc}") from None
            if not got:
                raise ProjectError(f"{target}: {_holder_sentence(proj._lock.holder())}")
            model_dst = work / MODEL_FILE
            try:
                if link:
                    proj.model_file = str(src_abs)
                    if clean_text(proj.model_file) != proj.model_file:
                        raise ProjectError(f"the model path {src_abs} is not valid UTF-8 and cannot be written in "
                                           "project.toml: copy the model into the project (without --link) or "
                                           "rename it")
                    sha = fsutil.sha256_file(src_abs, on_progress=_stage(on_progress, "hashing model"))
                elif in_place:
                    proj.model_file = MODEL_FILE
                    sha = fsutil.sha256_file(model_dst, on_progress=_stage(on_progress, "hashing model"))
                else:
                    proj.model_file = MODEL_FILE
                    made.append(model_dst)
                    sha = fsutil.atomic_copy_file(src_abs, model_dst, on_progress=_stage(on_progress, "copying model"))
                    for rel in externals:
                        dst = work / rel
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        made.append(dst)
                        fsutil.atomic_copy_file(src_abs.parent / rel, dst,
                                                on_progress=_stage(on_progress, f"copying {rel}"))
            except OSError as exc:
                raise ProjectError(f"cannot copy the model into {target}: {exc.strerror or exc}") from None
            st = proj.model_path.stat()
            proj.name = name
            proj.description = str(description or "")
            proj.created = proj.modified = now_iso()
            proj.model_sha256 = proj.recorded_model_sha256 = sha
            proj.model_size, proj.model_mtime_ns = st.st_size, st.st_mtime_ns
            proj.input_shapes = shapes
            proj._raw = {}
            proj.save(_touch=False)
            if staged:
                try:
                    os.rename(work, target)  # replaces an empty directory atomically
                except OSError as exc:
                    raise ProjectError(f"cannot create the project directory {target}: "
                                       f"{exc.strerror or exc}") from None
                fsutil.fsync_dir(target.parent)
                proj.dir = target  # the locked lock file moved with the directory
                proj._lock.path = target / LOCK_FILE
        except BaseException:
            proj._lock.release()
            if staged:
                shutil.rmtree(work, ignore_errors=True)
            else:
                for p in reversed(made):
                    try:
                        p.unlink()
                    except OSError:
                        pass
            raise
        remember_project(proj.dir, proj.name)
        return proj

    # ------------------------------------------------------------ open
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
        d = Path(dir).expanduser().resolve()
        if not d.exists():
            raise ProjectError(f"project directory {d} does not exist")
        if not d.is_dir():
            raise ProjectError(f"{d} is not a directory: give a project directory (made by 'sparsify-tui new')")
        toml_path = d / PROJECT_FILE
        if not toml_path.exists():
            hint = ""
            if (d / BACKUP_FILE).exists():
                hint = f"; restore the backup with: cp {d / BACKUP_FILE} {toml_path}"
            raise ProjectError(f"{d} has no project.toml: not a sparsify-tui project{hint}")
        proj = cls(d)
        if readonly:
            proj.readonly = True
        else:
            wait_s = 10.0 if wait is True else float(wait or 0.0)
            try:
                got = proj._lock.acquire(wait_s)
            except OSError as exc:
                got = None
                proj.readonly = True
                proj.notices.append(f"opened read-only: cannot write in {d} (taking the lock {d / LOCK_FILE}: "
                                    f"{exc.strerror or exc})")
            if got is False:
                proj.readonly = True
                proj.notices.append(f"opened read-only: {_holder_sentence(proj._lock.holder())}")
        try:
            proj._load()
        except BaseException:
            proj._lock.release()
            raise
        if proj._lock.held:
            fsutil.remove_stale_temp_files(d, [PROJECT_FILE, f"{PROJECT_FILE}.bak", MODEL_FILE])
            for sub in (PROFILES_DIR, OPTIMIZATIONS_DIR):
                if (d / sub).is_dir():
                    fsutil.remove_stale_temp_files(d / sub)
        remember_project(proj.dir, proj.name)
        return proj

    def _restore_advice(self) -> str:
        bak = self.backup_path
        if not bak.exists():
            return "no backup exists: fix it by hand"
        try:
            _toml_reader.loads(bak.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, _toml_reader.TOMLDecodeError):
            return f"the backup {bak} is damaged too: fix it by hand"
        return f"restore the backup with: cp {bak} {self.toml_path}"

    def _read_doc(self) -> dict[str, Any]:
        path = self.toml_path
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except OSError as exc:
            raise ProjectError(f"cannot read {path}: {exc.strerror or exc}") from None
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise ProjectError(f"{path} is corrupt at line {line}, column {col}: not UTF-8 text; "
                               f"{self._restore_advice()}") from None
        if not text.strip():
            raise ProjectError(f"{path} is empty; {self._restore_advice()}")
        try:
            doc = _toml_reader.loads(text)
        except _toml_reader.TOMLDecodeError as exc:
            msg = str(exc)
            m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
            if m:
                where = f"line {m.group(1)}, column {m.group(2)}"
                msg = msg[: m.start()].strip()
            elif getattr(exc, "lineno", None):  # pragma: no cover - Python 3.14 attributes
                where = f"line {exc.lineno}, column {exc.colno}"
                msg = getattr(exc, "msg", msg)
            else:
                m = re.search(r"\(at end of document\)", msg)
                lines = text.count("\n") + 1
                where = f"line {lines}, column {len(text) - text.rfind(chr(10))}"
                if m:
                    msg = msg[: m.start()].strip()
            raise ProjectError(f"{path} is corrupt at {where}: {msg[:1].lower() + msg[1:]}; "
                               f"{self._restore_advice()}") from None
        return doc

    def _load(self) -> None:
        doc = self._read_doc()
        path = self.toml_path

        def bad(key: str, want: str, value: Any) -> ProjectError:
            return ProjectError(f"{path}: {key} must be {want}, not {_type_name(value)}")

        sv = doc.get("schema_version", SCHEMA_VERSION)
        if not isinstance(sv, int) or isinstance(sv, bool):
            raise bad("schema_version", "an integer", sv)
        self.schema_version = sv
        if sv > SCHEMA_VERSION:
            if self._lock.held:
                self._lock.release()
            self.readonly = True
            self.notices.append(
                f"opened read-only: {path} has schema_version {sv}, newer than this sparsify-tui "
                f"understands ({SCHEMA_VERSION}); upgrade sparsify-tui to change it")

        proj = doc.get("project", {})
        if not isinstance(proj, dict):
            raise bad("[project]", "a table", proj)
        for key in ("name", "description", "created", "modified"):
            v = _timestr(proj.get(key, ""))
            if not isinstance(v, str):
                raise bad(f"project.{key}", "a string", v)
            setattr(self, key, v)

        model = doc.get("model")
        if model is None:
            raise ProjectError(f"{path} has no [model] section: the project does not say which model it profiles")
        if not isinstance(model, dict):
            raise bad("[model]", "a table", model)
        mfile = model.get("file", MODEL_FILE)
        if not isinstance(mfile, str) or not mfile.strip() or "\0" in mfile:
            raise ProjectError(f"{path}: model.file must be the path of the model file, not {mfile!r}")
        self.model_file = mfile
        sha = model.get("sha256", "")
        if not isinstance(sha, str):
            raise bad("model.sha256", "a string", sha)
        self.recorded_model_sha256 = sha
        for key in ("size", "mtime_ns"):
            v = model.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise bad(f"model.{key}", "an integer", v)
        self.model_size = model.get("size")
        self.model_mtime_ns = model.get("mtime_ns")
        shapes = model.get("input_shapes", {})
        if not isinstance(shapes, dict):
            raise bad("model.input_shapes", "a table of integer arrays", shapes)
        self.input_shapes = {}
        for k, v in shapes.items():  # whole numbers, and "N" for the dimension that takes the batch size
            if not isinstance(v, list) or not all((isinstance(x, int) and not isinstance(x, bool)) or x == "N"
                                                  for x in v):
                raise bad(f"model.input_shapes.{k}", "an array of integers (and \"N\" for the batch)", v)
            self.input_shapes[k] = list(v)

        rows = doc.get("profiles", [])
        if not isinstance(rows, list):
            raise bad("profiles", "an array of tables ([[profiles]])", rows)
        self.profiles = []
        seen: set[str] = set()
        for i, row in enumerate(rows):
            entry = ProfileEntry.from_dict(row, where=f"{path}: profiles[{i}]")
            if entry.id in seen:
                raise ProjectError(f"{path}: profiles[{i}].id {entry.id!r} is used twice; give each profile its own id")
            seen.add(entry.id)
            self.profiles.append(entry)

        opts = doc.get("optimizations", [])
        if not isinstance(opts, list):
            raise bad("optimizations", "an array of tables ([[optimizations]])", opts)
        self.optimizations = []
        self._opt_files = {}
        self._opt_written = {}
        self._bad_opt_entries = []
        self._opt_row_extra = {}
        self._problems = {}
        for i, row in enumerate(opts):
            if not isinstance(row, dict):
                raise bad(f"optimizations[{i}]", "a table", row)
            if "file" not in row:  # inline form: the table is the optimization
                self.optimizations.append(copy.deepcopy(row))
                continue
            f = row["file"]
            oname = row.get("name", "")
            if not isinstance(f, str) or not isinstance(oname, str) or "\0" in f:
                raise ProjectError(f"{path}: optimizations[{i}] must have a string name and a file path "
                                   f"(got name {oname!r}, file {f!r})")
            fpath = self.dir / f
            try:
                text = fpath.read_text(encoding="utf-8")
                opt = json.loads(text)
                if not isinstance(opt, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self._problems[f"optimization:{oname}"] = f"optimization {oname!r}: cannot read {fpath}: {reason}"
                self._bad_opt_entries.append(dict(row))
                continue
            if oname and opt.get("name") != oname:
                opt.setdefault("name", oname)
            self.optimizations.append(opt)
            self._opt_files[str(opt.get("name", oname))] = f
            self._opt_written[f] = text
            extra = {k: v for k, v in row.items() if k not in ("name", "file")}
            if extra:
                self._opt_row_extra[str(opt.get("name", oname))] = extra

        self._raw = doc
        self._check_model()
        if self._problems:
            self.notices.extend(self._problems.values())

    def _check_model(self) -> None:
        """Find the model's current sha256 (re-hashing only when its size or mtime changed) and say what changed."""
        mp = self.model_path
        self.model_changed = False
        self.model_missing = False
        try:
            st = mp.stat()
        except OSError:
            self.model_missing = True
            self.model_sha256 = self.recorded_model_sha256
            self.notices.append(f"model file {mp} is missing: profiles and optimizations can be viewed, "
                                "but nothing can be measured until it is back")
            return
        if (self.recorded_model_sha256 and st.st_size == self.model_size
                and st.st_mtime_ns == self.model_mtime_ns):
            self.model_sha256 = self.recorded_model_sha256
        else:
            try:
                sha = fsutil.sha256_file(mp)
            except OSError as exc:
                self.model_missing = True
                self.model_sha256 = self.recorded_model_sha256
                self.notices.append(f"cannot read model file {mp}: {exc.strerror or exc}")
                return
            self.model_sha256 = sha
            self.model_size, self.model_mtime_ns = st.st_size, st.st_mtime_ns
            self.model_changed = bool(self.recorded_model_sha256) and sha != self.recorded_model_sha256
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
        mt = dict(raw.get("model", {})) if isinstance(raw.get("model"), dict) else {}
        mt.update({"file": self.model_file, "sha256": self.model_sha256})
        for k, v in (("size", self.model_size), ("mtime_ns", self.model_mtime_ns)):
            if v is None:
                mt.pop(k, None)
            else:
                mt[k] = v
        mt["input_shapes"] = {str(k): [x if x == "N" else int(x) for x in v] for k, v in self.input_shapes.items()}
        doc["model"] = mt
        doc["profiles"] = [_to_toml_value(e.to_dict(), f"profile {e.id}") for e in self.profiles]
        opt_rows = []
        for opt in self.optimizations:
            oname = str(opt.get("name", ""))
            row = {"name": oname, "file": self._opt_files[oname]}
            for k, v in self._opt_row_extra.get(oname, {}).items():
                row.setdefault(k, v)
            opt_rows.append(row)
        opt_rows.extend(self._bad_opt_entries)
        doc["optimizations"] = opt_rows
        for k, v in raw.items():
            if k not in _KNOWN_TOP:
                doc[k] = v
        if not doc["profiles"]:
            del doc["profiles"]
        if not doc["optimizations"]:
            del doc["optimizations"]
        return _clean_strings(doc)

    def _assign_opt_files(self) -> None:
        used = set(self._opt_files.values())
        names = set()
        for opt in self.optimizations:
            oname = opt.get("name")
            if not isinstance(oname, str) or not oname:
                raise ProjectError(f"an optimization in {self.dir} has no name: every optimization needs a 'name'")
            if oname in names:
                raise ProjectError(f"two optimizations in {self.dir} are named {oname!r}: names must be unique")
            names.add(oname)
            if oname in self._opt_files:
                continue
            base = slugify(oname, "optimization")
            f = f"{OPTIMIZATIONS_DIR}/{base}.json"
            if f in used or (self.dir / f).exists():
                digest = hashlib.sha256(oname.encode("utf-8", "surrogatepass")).hexdigest()[:8]
                f = f"{OPTIMIZATIONS_DIR}/{base}-{digest}.json"
            n = 2
            while f in used:
                f = f"{OPTIMIZATIONS_DIR}/{base}-{n}.json"
                n += 1
            self._opt_files[oname] = f
            used.add(f)
        for oname in list(self._opt_files):
            if oname not in names:
                del self._opt_files[oname]

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
            self._assign_opt_files()
            doc = self._doc()
            try:
                text = dump_toml(doc)
            except (TypeError, ValueError) as exc:
                raise ProjectError(f"cannot write {self.toml_path}: {exc}") from None
            # optimization files first: a crash before the rename of project.toml leaves the old
            # project.toml pointing at complete files
            for opt in self.optimizations:
                f = self._opt_files[str(opt["name"])]
                try:
                    otext = dumps_json(opt)
                except (TypeError, ValueError) as exc:
                    raise ProjectError(f"cannot store optimization {opt['name']!r}: {exc}") from None
                if self._opt_written.get(f) != otext:
                    self._write(self.dir / f, otext)
                    self._opt_written[f] = otext
            self._keep_outside_edit()
            self._write(self.toml_path, text, backup=True)
            try:
                st = self.toml_path.stat()
                self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError:  # pragma: no cover
                self._stamp = None
        except BaseException:
            self.modified = old_modified
            raise
        self.recorded_model_sha256 = self.model_sha256
        # optimization files no longer referenced
        keep = set(self._opt_files.values()) | {str(r.get("file")) for r in self._bad_opt_entries}
        for f in list(self._opt_written):
            if f not in keep:
                self._opt_written.pop(f, None)
                self._remove_owned(f, OPTIMIZATIONS_DIR)

    def _keep_outside_edit(self) -> None:
        """If project.toml was changed by someone else since we read it, keep that version aside."""
        try:
            st = self.toml_path.stat()
        except OSError:
            return
        if self._stamp is None or (st.st_ino, st.st_size, st.st_mtime_ns) == self._stamp:
            return
        aside = self.dir / f"{PROJECT_FILE}.outside-edit"
        try:
            fsutil.atomic_write_bytes(aside, self.toml_path.read_bytes())
        except OSError:
            return
        self.notices.append(f"{self.toml_path} was changed outside this program while it was open; "
                            f"that version is kept as {aside}")

    def changed_on_disk(self) -> bool:
        """True when project.toml on disk is not the version this object read or wrote last
        (another process saved it, or it was edited by hand): call :meth:`reload` to see it."""
        try:
            st = self.toml_path.stat()
        except OSError:
            return True
        return self._stamp != (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self) -> None:
        """Read project.toml again (e.g. after another process saved it); the lock is kept."""
        with self._mutex:
            keep = [n for n in self.notices if n.startswith("opened read-only")]
            self.notices = keep
            self._load()

    def _write(self, path: Path, text: str, *, backup: bool = False) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write_text(path, text, backup=backup)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                reason = "the disk is full"
            elif exc.errno == errno.EFBIG:
                reason = "the file size limit was reached"
            raise ProjectError(f"could not save {path}: {reason}; the previous version is kept") from None

    def _remove_owned(self, rel: str, subdir: str) -> None:
        """Delete a file of ours (only inside ``subdir`` of the project)."""
        p = (self.dir / rel)
        try:
            if p.resolve().parent == (self.dir / subdir).resolve():
                p.unlink()
        except OSError:
            pass

    # ------------------------------------------------------------ profiles
    def profile_key(self, kind: str, settings: dict[str, Any], engine: str, engine_version: str,
                    machine_fingerprint: str) -> str:
        """The cache key of a profile: sha256 over the model's sha256 and the canonical JSON of the rest.

        ``settings`` are normalised like their stored form (``None`` removed),
        so the key is the same before and after a round trip through project.toml.
        """
        body = canonical_json({
            "kind": kind,
            "settings": drop_none(dict(settings or {})),
            "engine": engine or "",
            "engine_version": engine_version or "",
            "machine": machine_fingerprint or "",
        })
        return hashlib.sha256(f"{self.model_sha256}\n{body}".encode("utf-8", "surrogatepass")).hexdigest()

    def find_profile(self, key: str) -> ProfileEntry | None:
        """The profile with this cache key, or None (the newest if several)."""
        for e in reversed(self.profiles):
            if e.key == key:
                return e
        return None

    def get_profile(self, id: str) -> ProfileEntry:
        """The entry with this id (ProfileError when there is none)."""
        for e in self.profiles:
            if e.id == id:
                return e
        ids = ", ".join(e.id for e in self.profiles) or "none"
        raise ProfileError(f"project {self.dir} has no profile {id!r} (profiles: {ids})")

    def profiles_of(self, kind: str) -> list[ProfileEntry]:
        return [e for e in self.profiles if e.kind == kind]

    def _new_profile_id(self, kind: str) -> str:
        taken = {e.id for e in self.profiles}
        prefix = slugify(kind, "profile")
        n = 1
        for e in self.profiles:
            m = re.fullmatch(re.escape(prefix) + r"-(\d+)", e.id)
            if m:
                n = max(n, int(m.group(1)) + 1)
        while f"{prefix}-{n}" in taken or (self.profiles_dir / f"{prefix}-{n}.json").exists():
            n += 1
        return f"{prefix}-{n}"

    @_serialized
    def add_profile(self, kind: str, name: str | None, settings: dict[str, Any], engine: str, engine_version: str,
                    machine: dict[str, Any] | None, data: dict[str, Any]) -> ProfileEntry:
        """Store a profile: ``profiles/<id>.json`` (atomic), then project.toml.

        ``data`` gets ``schema_version`` (if absent) and ``key``. A profile with
        the same key replaces the old entry (its file is removed after the save).
        ``machine`` is ``machine_info()`` (or its summary); its ``fingerprint`` enters the key.
        """
        self._check_writable()
        if not isinstance(kind, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
            raise ProfileError(f"profile kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not isinstance(data, dict):
            raise ProfileError(f"profile data must be a JSON object (dict), got {type(data).__name__}")
        settings = drop_none(dict(settings or {}))
        summary = machine_summary(machine)
        key = self.profile_key(kind, settings, engine, engine_version, summary.get("fingerprint", ""))
        pid = self._new_profile_id(kind)
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
        self._write(self.dir / rel, text)
        old = list(self.profiles)
        replaced = [e for e in self.profiles if e.key == key]
        self.profiles = [e for e in self.profiles if e.key != key] + [entry]
        try:
            self.save()
        except BaseException:
            self.profiles = old
            self._remove_owned(rel, PROFILES_DIR)
            raise
        for e in replaced:
            if e.file != rel:
                self._remove_owned(e.file, PROFILES_DIR)
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
        self._remove_owned(entry.file, PROFILES_DIR)

    def load_profile(self, entry_or_id: ProfileEntry | str) -> dict[str, Any]:
        """The profile's full results (a fresh dict). ProfileError if the file is missing or corrupt."""
        entry = entry_or_id if isinstance(entry_or_id, ProfileEntry) else self.get_profile(entry_or_id)
        path = self.dir / entry.file
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

    def profile_problem(self, entry: ProfileEntry) -> str | None:
        """Why this profile cannot be loaded, or None (cached by the file's size and mtime)."""
        path = self.dir / entry.file
        try:
            st = path.stat()
            stamp: Any = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        cached = self._profile_check_cache.get(entry.id)
        if cached is not None and cached[0] == stamp and stamp is not None:
            return cached[1]
        try:
            self.load_profile(entry)
            problem = None
        except ProfileError as exc:
            problem = str(exc)
        self._profile_check_cache[entry.id] = (stamp, problem)
        return problem

    def profile_problems(self) -> dict[str, str]:
        """``{profile id: why it cannot be loaded}`` for every unreadable profile file (reads them all)."""
        out = {}
        for e in self.profiles:
            p = self.profile_problem(e)
            if p:
                out[e.id] = p
        return out

    def problems(self) -> dict[str, str]:
        """Everything unreadable: profiles (by id) and optimizations (``optimization:<name>``)."""
        out = dict(self._problems)
        out.update(self.profile_problems())
        return out

    def is_stale(self, entry: ProfileEntry) -> bool:
        """True when the profile was measured on a model other than the current model file."""
        return bool(entry.model_sha256) and bool(self.model_sha256) and entry.model_sha256 != self.model_sha256

    def stale_profiles(self) -> list[ProfileEntry]:
        return [e for e in self.profiles if self.is_stale(e)]

    # ------------------------------------------------------------ optimizations
    def get_optimization(self, name: str) -> dict[str, Any] | None:
        for opt in self.optimizations:
            if opt.get("name") == name:
                return opt
        return None

    @_serialized
    def set_optimization(self, opt: dict[str, Any]) -> None:
        """Add or replace the optimization named ``opt["name"]`` (position kept on replace), then save()."""
        self._check_writable()
        if not isinstance(opt, dict):
            raise ProjectError(f"an optimization must be a dict, got {type(opt).__name__}")
        name = opt.get("name")
        if not isinstance(name, str) or not name:
            raise ProjectError("an optimization needs a non-empty 'name' to be stored in the project")
        old = list(self.optimizations)
        new = copy.deepcopy(opt)
        for i, o in enumerate(self.optimizations):
            if o.get("name") == name:
                self.optimizations[i] = new
                break
        else:
            self.optimizations.append(new)
        try:
            self.save()
        except BaseException:
            self.optimizations = old
            raise

    @_serialized
    def remove_optimization(self, name: str) -> None:
        """Remove the optimization named ``name`` (ProjectError if there is none), then save()."""
        self._check_writable()
        if self.get_optimization(name) is None:
            raise ProjectError(f"project {self.dir} has no optimization {name!r}")
        old = list(self.optimizations)
        self.optimizations = [o for o in self.optimizations if o.get("name") != name]
        try:
            self.save()
        except BaseException:
            self.optimizations = old
            raise

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
            "optimizations": [str(o.get("name", "")) for o in self.optimizations],
        }


# ---------------------------------------------------------------- create helpers
def _stage(cb: Callable[[str, float, float], None] | None, stage: str) -> Callable[[int, int], None] | None:
    if cb is None:
        return None
    return lambda done, total: cb(stage, done, total)


def _check_input_shapes(shapes: Any) -> dict[str, list[int]]:
    from sparsify_tui.errors import InputShapeError

    if not shapes:
        return {}
    if not isinstance(shapes, dict):
        raise InputShapeError(f"input shapes must be a mapping of input name to dimensions, got {shapes!r}")
    out: dict[str, list[int]] = {}
    for k, v in shapes.items():
        try:
            dims = [x if x == "N" else int(x) for x in v]  # "N": the dimension that takes the batch size
        except (TypeError, ValueError):
            raise InputShapeError(f"input shape of {k!r} must be a list of whole numbers, got {v!r}") from None
        if any(d != "N" and d < 1 for d in dims):
            raise InputShapeError(f"input shape of {k!r} must have dimensions of at least 1, got {dims}")
        out[str(k)] = dims
    return out


def _validate_model(path: Path, input_shapes: dict[str, list[int]]) -> Any:
    """Check that ``path`` is an analysable ONNX model; return its proto (external data not loaded)."""
    from sparsify_tui.analysis import analyze

    analyze(str(path), input_shapes or None)  # raises ModelError / InputShapeError with a clear sentence
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError...
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise ModelError(f"{path} is not an ONNX model: it has no graph")
    return proto


def external_data_files(proto: Any, model_path: Path) -> list[str]:
    """Relative paths of the external data files the model's tensors point to (checked to exist)."""
    import onnx

    tensors: list[Any] = []

    def walk_graph(g: Any) -> None:
        tensors.extend(g.initializer)
        tensors.extend(sp.values for sp in g.sparse_initializer)
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                tensors.extend(attr.tensors)
                if attr.HasField("g"):
                    walk_graph(attr.g)
                for sub in attr.graphs:
                    walk_graph(sub)

    walk_graph(proto.graph)
    for fn in getattr(proto, "functions", []):
        for node in fn.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
    files: list[str] = []
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), None)
        if not loc:
            raise ModelError(f"{model_path}: tensor {t.name!r} has external data without a location")
        rel = Path(loc)
        if rel.is_absolute() or ".." in rel.parts:
            raise ModelError(f"{model_path}: external data file {loc!r} must be a path relative to the model, "
                             "inside its directory")
        if not (model_path.parent / rel).is_file():
            raise ModelError(f"{model_path}: external data file {model_path.parent / rel} is missing")
        if loc not in files:
            files.append(loc)
    return files


# ---------------------------------------------------------------- recent projects
def _recent_file() -> Path:
    from sparsify_tui import paths

    return paths.recent_projects_file()


def recent_projects() -> list[dict[str, Any]]:
    """Recently opened projects, newest first: ``[{"path", "name", "opened", "exists"}]``."""
    try:
        doc = json.loads(_recent_file().read_text(encoding="utf-8"))
    except (OSError, ValueError, ImportError):
        return []
    items = doc.get("projects", []) if isinstance(doc, dict) else []
    out = []
    for it in items:
        if not isinstance(it, dict) or not isinstance(it.get("path"), str):
            continue
        out.append({
            "path": it["path"],
            "name": str(it.get("name", "")),
            "opened": str(it.get("opened", "")),
            "exists": (Path(it["path"]) / PROJECT_FILE).exists(),
        })
    return out


def _write_recent(items: list[dict[str, Any]]) -> None:
    try:
        path = _recent_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write_json(path, {"schema_version": 1, "projects": items[:RECENT_MAX]}, durable=False)
    except (OSError, ValueError, ImportError):
        pass  # the list of recent projects is a convenience: never fail a command because of it


def remember_project(dir: str | os.PathLike, name: str | None = None) -> None:
    """Put ``dir`` first in the recent projects list (kept to the newest 30)."""
    d = str(Path(dir).expanduser().absolute())
    items = [{"path": i["path"], "name": i["name"], "opened": i["opened"]}
             for i in recent_projects() if i["path"] != d]
    items.insert(0, {"path": d, "name": name or Path(d).name, "opened": now_iso()})
    _write_recent(items)


def forget_project(dir: str | os.PathLike) -> None:
    """Remove ``dir`` from the recent projects list."""
    d = str(Path(dir).expanduser().absolute())
    items = [{"path": i["path"], "name": i["name"], "opened": i["opened"]}
             for i in recent_projects() if i["path"] != d]
    _write_recent(items)


def is_project_dir(path: str | os.PathLike) -> bool:
    p = Path(path).expanduser()
    return p.is_dir() and (p / PROJECT_FILE).is_file()


__all__ = [
    "Project", "ProfileEntry", "ProjectLock", "SCHEMA_VERSION", "KINDS", "slugify", "drop_none",
    "machine_summary", "recent_projects", "remember_project", "forget_project", "is_project_dir", "now_iso",
]
