"""Atomic file writes: temporary file in the same directory, fsync, rename, fsync of the directory.

A reader sees either the old content or the new one, never a torn file, even
when the writing process is killed at any moment (SIGKILL, power loss after the
fsyncs). On any failure (read-only directory, full disk, file size limit) the
temporary file is removed and the old file is left exactly as it was; the
``OSError`` is re-raised for the caller to turn into a user-facing error.

With ``backup=True`` the file being replaced is kept as ``<path>.bak``: it is
hard-linked (or, where hard links are not supported, copied atomically) before
the rename, so at every moment ``path`` and ``path.bak`` are each a complete
version.

Temporary files are named ``.<name>.<random>.tmp``; :func:`remove_stale_temp_files`
clears the ones a killed writer left behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

CHUNK = 1 << 20  # 1 MiB


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory so a rename or a new file in it survives a crash."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


_fsync_dir = fsync_dir  # old private name


def _unlink_quiet(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _set_mode(fd: int, path: Path) -> None:
    """Give the temporary file the mode of the file it replaces (new files: 0644 minus the umask)."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        os.fchmod(fd, mode)
    except OSError:  # pragma: no cover
        pass


_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        cur = os.umask(0o022)
        os.umask(cur)
        _UMASK = cur
    return _UMASK


def _keep_backup(path: Path) -> None:
    """Make ``<path>.bak`` a complete copy of the current ``path`` (atomic replace of the old backup)."""
    bak = path.with_name(path.name + ".bak")
    tmp_bak = path.with_name(f".{path.name}.bak.tmp")
    _unlink_quiet(tmp_bak)
    try:
        os.link(path, tmp_bak)
    except OSError:
        # no hard links here (some network / FAT filesystems): copy instead
        data = path.read_bytes()
        with open(tmp_bak, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp_bak, bak)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, backup: bool = False, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically; with ``backup`` keep the old file as ``<path>.bak``.

    ``durable=False`` skips the fsyncs (still atomic against a killed process,
    not against a power loss): for caches and lists that are cheap to lose.

    Raises ``OSError`` (old content intact, temporary file removed) when the
    write fails, e.g. ``EACCES``, ``EROFS``, ``ENOSPC`` or ``EFBIG``.
    """
    path = Path(path)
    if path.is_symlink():  # replace the file the link points to, not the link
        path = Path(os.path.realpath(path))
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(directory))
    try:
        _set_mode(fd, path)
        with os.fdopen(fd, "wb") as f:
            view = memoryview(data)
            # write in chunks so a size limit or a full disk is hit early and reported
            for start in range(0, len(view), CHUNK):
                f.write(view[start:start + CHUNK])
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if backup and path.exists():
            try:
                _keep_backup(path)
            except OSError:
                # the backup is a convenience: failing to refresh it must not block the save,
                # and the previous backup (if any) is still a complete older version
                pass
        os.replace(tmp, path)
        if durable:
            fsync_dir(directory)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, backup: bool = False, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), backup=backup, durable=durable)


def json_default(o: Any) -> Any:
    """JSON for what ``json`` cannot write itself (``default=`` of every document the package writes):
    objects with ``to_dict()``, paths, sets (sorted), dates and times (ISO), numpy scalars and arrays."""
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=repr)
    if isinstance(o, (_dt.datetime, _dt.date, _dt.time)):
        return o.isoformat()
    try:
        import numpy as np  # numpy is a dependency, but keep this module importable without it

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_user_text(path: str | os.PathLike, what: str, *, encoding: str = "utf-8",
                   unreadable: type[Exception] | None = None) -> str:
    """The text of a file the user named (``what``: "recipe", "name map"...): a UsageError when it does
    not exist, ``unreadable`` (UsageError by default) when it cannot be read or decoded."""
    from sparsify_tui.errors import UsageError

    p = Path(path)
    try:
        return p.read_text(encoding=encoding)
    except FileNotFoundError:
        raise UsageError(f"{what} {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise (unreadable or UsageError)(f"{what} {p} cannot be read: {exc}") from None


def atomic_write_json(path: str | os.PathLike, doc: Any, *, backup: bool = False, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n", backup=backup, durable=durable)


def atomic_copy_file(src: str | os.PathLike, dst: str | os.PathLike, *,
                     on_progress: Callable[[int, int], None] | None = None) -> str:
    """Copy ``src`` to ``dst`` atomically (temp file, fsync, rename) and return the sha256 of the bytes.

    The hash is computed in the same pass as the copy (1 MiB chunks), so a
    100 MB model is read once. ``on_progress(done_bytes, total_bytes)`` is
    called after every chunk.
    """
    src = Path(src)
    dst = Path(dst)
    total = src.stat().st_size
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=str(dst.parent))
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            done = 0
            while True:
                chunk = fin.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                fout.write(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
            fout.flush()
            os.fsync(fout.fileno())
        try:
            shutil.copymode(src, tmp)
        except OSError:  # pragma: no cover
            pass
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException:
        _unlink_quiet(tmp)
        raise
    return h.hexdigest()


def sha256_file(path: str | os.PathLike, *, on_progress: Callable[[int, int], None] | None = None) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    path = Path(path)
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)
    return h.hexdigest()


def remove_stale_temp_files(directory: str | os.PathLike, names: list[str] | None = None) -> int:
    """Delete ``.<name>.*.tmp`` files a killed writer left in ``directory``; return how many.

    With ``names`` only the temporary files of those target names are removed;
    otherwise every ``.*.tmp`` file. Call it only while holding the directory's
    write lock (another writer's temporary file would otherwise be removed).
    """
    directory = Path(directory)
    removed = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for p in entries:
        n = p.name
        if not (n.startswith(".") and n.endswith(".tmp")):
            continue
        if names is not None and not any(n.startswith(f".{t}.") for t in names):
            continue
        try:
            if p.is_file():
                p.unlink()
                removed += 1
        except OSError:
            pass
    return removed
