"""fsutil: atomic writes, backups, modes, symlinks, failures leave the old file and no temporary file."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import textwrap


from sparsify_tui import fsutil


def test_atomic_write_and_backup(tmp_path):
    f = tmp_path / "a.toml"
    fsutil.atomic_write_text(f, "one\n", backup=True)
    assert f.read_text() == "one\n" and not (tmp_path / "a.toml.bak").exists()
    fsutil.atomic_write_text(f, "two\n", backup=True)
    fsutil.atomic_write_text(f, "three\n", backup=True)
    assert f.read_text() == "three\n" and (tmp_path / "a.toml.bak").read_text() == "two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.toml", "a.toml.bak"]


def test_mode_is_kept_and_new_files_follow_umask(tmp_path):
    f = tmp_path / "m.json"
    fsutil.atomic_write_json(f, {"a": 1})
    cur = os.umask(0o022)
    os.umask(cur)
    assert f.stat().st_mode & 0o777 == 0o666 & ~cur
    os.chmod(f, 0o600)
    fsutil.atomic_write_json(f, {"a": 2})
    assert f.stat().st_mode & 0o777 == 0o600


def test_symlink_target_is_replaced_not_the_link(tmp_path):
    real = tmp_path / "real.toml"
    real.write_text("old")
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    fsutil.atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_failed_write_keeps_old_content_and_no_temp_file(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("old")
    code = textwrap.dedent("""
        import resource, sys
        from sparsify_tui import fsutil
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            fsutil.atomic_write_bytes(sys.argv[1], b"x" * 100000, backup=True)
        except OSError as exc:
            print(exc.errno)
    """)
    r = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == str(errno.EFBIG), r.stderr
    assert f.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_copy_and_hash(tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(3 * fsutil.CHUNK + 123)
    src.write_bytes(data)
    seen = []
    sha = fsutil.atomic_copy_file(src, tmp_path / "dst.bin", on_progress=lambda d, t: seen.append((d, t)))
    assert sha == hashlib.sha256(data).hexdigest() == fsutil.sha256_file(tmp_path / "dst.bin")
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert seen[-1] == (len(data), len(data)) and len(seen) == 4


def test_remove_stale_temp_files(tmp_path):
    (tmp_path / ".project.toml.abc.tmp").write_text("torn")
    (tmp_path / ".project.toml.bak.tmp").write_text("torn")
    (tmp_path / ".other.abc.tmp").write_text("someone else's")
    (tmp_path / "keep.tmp").write_text("not hidden")
    assert fsutil.remove_stale_temp_files(tmp_path, ["project.toml"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.abc.tmp", "keep.tmp"]
    assert fsutil.remove_stale_temp_files(tmp_path) == 1
