"""The project directory on disk: ``project.toml`` read and written safely, the lock, our own files.

:class:`ProjectStore` knows nothing of what ``project.toml`` means. It reads it (a corrupt file raises
:class:`ProjectError` naming the line, the column and how to restore the backup), writes every file
atomically (``fsutil``: temporary file, fsync, rename, fsync of the directory) keeping the previous
``project.toml`` as ``project.toml.bak``, remembers the version it read or wrote last (``stamp``) to
notice another writer, and holds the :class:`ProjectLock`.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

from sparsify_tui import fsutil
from sparsify_tui.errors import ProjectError
from sparsify_tui.project.common import (
    BACKUP_FILE, LOCK_FILE, MODEL_FILE, OPTIMIZATIONS_DIR, PROFILES_DIR, PROJECT_FILE,
)
from sparsify_tui.project.lock import ProjectLock, _holder_sentence

try:  # Python 3.11+
    import tomllib as _toml_reader
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    import tomli as _toml_reader  # type: ignore[no-redef]


class ProjectStore:
    """One project directory: its ``project.toml``, backup, lock and the files the project owns."""

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir)
        self.lock = ProjectLock(self.dir / LOCK_FILE)
        self.stamp: tuple[int, int, int] | None = None  # project.toml as last read/written by us

    @property
    def toml_path(self) -> Path:
        return self.dir / PROJECT_FILE

    @property
    def backup_path(self) -> Path:
        return self.dir / BACKUP_FILE

    @staticmethod
    def existing(dir: str | os.PathLike) -> Path:
        """``dir`` resolved; ProjectError unless it is a directory holding a project.toml."""
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
        return d

    def move_to(self, target: Path) -> None:
        """The directory was renamed to ``target`` (the locked lock file moved with it)."""
        self.dir = target
        self.lock.path = target / LOCK_FILE

    # ------------------------------------------------------------ lock
    def take_lock(self, wait_s: float) -> str | None:
        """Take the write lock (waiting up to ``wait_s``); None, or the notice saying why it opens read-only."""
        try:
            got = self.lock.acquire(wait_s)
        except OSError as exc:
            return (f"opened read-only: cannot write in {self.dir} (taking the lock {self.dir / LOCK_FILE}: "
                    f"{exc.strerror or exc})")
        if not got:
            return f"opened read-only: {_holder_sentence(self.lock.holder())}"
        return None

    def holder_sentence(self) -> str:
        return _holder_sentence(self.lock.holder())

    def remove_stale_temps(self) -> None:
        """Delete temporary files left by a writer that died mid-write (call with the lock held)."""
        fsutil.remove_stale_temp_files(self.dir, [PROJECT_FILE, f"{PROJECT_FILE}.bak", MODEL_FILE])
        for sub in (PROFILES_DIR, OPTIMIZATIONS_DIR):
            if (self.dir / sub).is_dir():
                fsutil.remove_stale_temp_files(self.dir / sub)

    # ------------------------------------------------------------ read
    def restore_advice(self) -> str:
        bak = self.backup_path
        if not bak.exists():
            return "no backup exists: fix it by hand"
        try:
            _toml_reader.loads(bak.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, _toml_reader.TOMLDecodeError):
            return f"the backup {bak} is damaged too: fix it by hand"
        return f"restore the backup with: cp {bak} {self.toml_path}"

    def read_doc(self) -> dict[str, Any]:
        """``project.toml`` parsed; ProjectError naming line and column (and the backup) when it is corrupt."""
        path = self.toml_path
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except OSError as exc:
            raise ProjectError(f"cannot read {path}: {exc.strerror or exc}") from None
        self.stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise ProjectError(f"{path} is corrupt at line {line}, column {col}: not UTF-8 text; "
                               f"{self.restore_advice()}") from None
        if not text.strip():
            raise ProjectError(f"{path} is empty; {self.restore_advice()}")
        try:
            doc = _toml_reader.loads(text)
        except _toml_reader.TOMLDecodeError as exc:
            where, msg = _where(exc, text)
            raise ProjectError(f"{path} is corrupt at {where}: {msg[:1].lower() + msg[1:]}; "
                               f"{self.restore_advice()}") from None
        return doc

    def changed_on_disk(self) -> bool:
        """True when project.toml on disk is not the version last read or written here."""
        try:
            st = self.toml_path.stat()
        except OSError:
            return True
        return self.stamp != (st.st_ino, st.st_size, st.st_mtime_ns)

    # ------------------------------------------------------------ write
    def write(self, path: Path, text: str, *, backup: bool = False) -> None:
        """Write ``path`` atomically; ProjectError (the previous version kept) when the disk refuses."""
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

    def keep_outside_edit(self) -> str | None:
        """If project.toml was changed by someone else since we read it, keep that version aside.

        Returns the notice to show, or None."""
        try:
            st = self.toml_path.stat()
        except OSError:
            return None
        if self.stamp is None or (st.st_ino, st.st_size, st.st_mtime_ns) == self.stamp:
            return None
        aside = self.dir / f"{PROJECT_FILE}.outside-edit"
        try:
            fsutil.atomic_write_bytes(aside, self.toml_path.read_bytes())
        except OSError:
            return None
        return (f"{self.toml_path} was changed outside this program while it was open; "
                f"that version is kept as {aside}")

    def write_toml(self, text: str) -> None:
        """Write project.toml (the old one becomes project.toml.bak) and remember its version."""
        self.write(self.toml_path, text, backup=True)
        try:
            st = self.toml_path.stat()
            self.stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:  # pragma: no cover
            self.stamp = None

    def remove_owned(self, rel: str, subdir: str) -> None:
        """Delete a file of ours (only inside ``subdir`` of the project)."""
        p = (self.dir / rel)
        try:
            if p.resolve().parent == (self.dir / subdir).resolve():
                p.unlink()
        except OSError:
            pass


def _where(exc: Exception, text: str) -> tuple[str, str]:
    """(``line L, column C``, message) of a TOML decode error, across Python versions."""
    msg = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if m:
        return f"line {m.group(1)}, column {m.group(2)}", msg[: m.start()].strip()
    if getattr(exc, "lineno", None):  # pragma: no cover - Python 3.14 attributes
        return f"line {exc.lineno}, column {exc.colno}", getattr(exc, "msg", msg)
    m = re.search(r"\(at end of document\)", msg)
    lines = text.count("\n") + 1
    where = f"line {lines}, column {len(text) - text.rfind(chr(10))}"
    if m:
        msg = msg[: m.start()].strip()
    return where, msg
