"""Atomic file writes: temporary file in the same directory, fsync, rename, fsync of the directory.

A reader sees either the old content or the new one, never a torn file, even
when the writing process is killed at any moment.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _fsync_dir(directory: Path) -> None:
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, backup: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; with ``backup`` keep the old file as ``<path>.bak``."""
    path = Path(path)
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(directory))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if backup and path.exists():
            bak = path.with_name(path.name + ".bak")
            # hard-link the current file as the backup (atomic replace of the old backup)
            tmp_bak = path.with_name(f".{path.name}.bak.tmp")
            try:
                if tmp_bak.exists():
                    tmp_bak.unlink()
                os.link(path, tmp_bak)
                os.replace(tmp_bak, bak)
            except OSError:
                pass
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, backup: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), backup=backup)


def atomic_write_json(path: str | os.PathLike, doc: Any, *, backup: bool = False) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n", backup=backup)
