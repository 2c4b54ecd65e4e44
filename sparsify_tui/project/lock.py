"""The project's write lock: an exclusive ``flock`` on ``project.lock`` naming its holder."""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from sparsify_tui.project.common import now_iso


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

