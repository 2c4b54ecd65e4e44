"""Damaged projects, read-only directories, a full disk and two writers: a clear error, nothing lost."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .helpers import PY, assert_user_error, cli_env, run_cli, sha, snapshot_dir


def _main(*args) -> int:
    """The CLI in-process (fast setup steps)."""
    from sparsify_tui.cli import main

    return main([str(a) for a in args])


@pytest.fixture
def profiled(project):
    """The tiny project with an approximated loss profile and one optimization (so project.toml.bak exists)."""
    assert _main("profile", "loss", project) == 0
    assert _main("optimize", project, "--sparsity", "0.5") == 0
    assert (project / "project.toml.bak").exists()
    return project


def test_corrupt_toml_is_reported_and_backup_left_intact(profiled):
    toml = profiled / "project.toml"
    toml.write_text(toml.read_text()[:40] + "\n[project\nname = ")
    before = snapshot_dir(profiled)
    line = assert_user_error(run_cli("optimize", profiled), "project.toml", "corrupt")
    assert "project.toml.bak" in line  # tells the user how to get the last good version back
    assert snapshot_dir(profiled) == before


def test_corrupt_toml_without_backup(project):
    (project / "project.toml").write_bytes(b"\x00\xff garbage = = =")
    before = snapshot_dir(project)
    assert_user_error(run_cli("info", project), "project.toml")
    assert snapshot_dir(project) == before


def test_wrong_value_types(profiled):
    toml = profiled / "project.toml"
    toml.write_text(toml.read_text().replace('name = "tiny"', "name = 5", 1))
    before = snapshot_dir(profiled)
    assert_user_error(run_cli("optimize", profiled), "project.name must be a string")
    assert snapshot_dir(profiled) == before


def test_unknown_schema_version_opens_read_only_and_is_never_rewritten(profiled):
    toml = profiled / "project.toml"
    toml.write_text(toml.read_text().replace("schema_version = 1", "schema_version = 99", 1))
    before = snapshot_dir(profiled)
    assert_user_error(run_cli("optimize", profiled, "--sparsity", "0.6"), "schema_version 99", "upgrade")
    assert snapshot_dir(profiled) == before
    res = run_cli("info", profiled)  # reading is fine
    assert res.returncode == 0, res.stderr


def test_missing_profile_file_is_noted_not_fatal(profiled):
    (profiled / "profiles" / "loss-1.json").unlink()
    res = run_cli("optimize", profiled, "--sparsity", "0.6", "--json")
    assert res.returncode == 0, res.stderr
    assert "loss profile loss-1 cannot be used" in res.stderr + res.stdout
    assert "loss-1" in (profiled / "project.toml").read_text()  # the entry is kept: the file may come back
    assert_user_error(run_cli("compare", f"{profiled}:loss-1", f"{profiled}:loss-1"), "loss-1")


def test_corrupt_profile_file_is_kept_and_noted(profiled):
    f = profiled / "profiles" / "loss-1.json"
    f.write_text('{"kind": "loss", "layers": [')
    digest = sha(f)
    res = run_cli("optimize", profiled, "--sparsity", "0.6", "--json")
    assert res.returncode == 0, res.stderr
    assert "loss profile loss-1 cannot be used" in res.stderr + res.stdout
    assert sha(f) == digest  # never deleted or overwritten behind the user's back
    res = run_cli("profile", "loss", profiled, "--json")  # measuring again (same settings) replaces it
    assert res.returncode == 0, res.stderr
    from sparsify_tui.project import Project

    p = Project.open(profiled, readonly=True)
    assert [p.load_profile(e)["kind"] for e in p.profiles_of("loss")] == ["loss"]


def test_model_changed_on_disk_marks_profiles_stale(profiled, tmp_path):
    from .helpers import tiny_conv

    tiny_conv(tmp_path / "other.onnx")  # same graph, new random weights
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(profiled / "model.onnx"))
    w = numpy_helper.to_array(m.graph.initializer[0]) * 2.0
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w.astype(np.float32), "w"))
    onnx.save(m, str(profiled / "model.onnx"))
    res = run_cli("optimize", profiled, "--json")
    assert res.returncode == 0, res.stderr
    assert "measured on an earlier version of the model" in res.stderr + res.stdout
    assert (profiled / "profiles" / "loss-1.json").exists()


def test_model_file_missing(profiled):
    (profiled / "model.onnx").unlink()
    before = snapshot_dir(profiled)
    assert_user_error(run_cli("profile", "perf", profiled, "--engine", "onnxruntime"), "model.onnx", "no such file")
    assert snapshot_dir(profiled) == before


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (root ignores file permissions)")
def test_read_only_directory(profiled):
    before = snapshot_dir(profiled)
    r = subprocess.run(["chattr", "+i", str(profiled)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {r.stderr.strip()}")
    try:
        assert_user_error(run_cli("optimize", profiled, "--sparsity", "0.7"), "cannot save", str(profiled))
        assert_user_error(run_cli("profile", "loss", profiled, "--force"), "cannot save")
        res = run_cli("info", profiled)  # reading still works
        assert res.returncode == 0, res.stderr
    finally:
        subprocess.run(["chattr", "-i", str(profiled)], check=True)
    assert snapshot_dir(profiled) == before


FULL_DISK = r"""
set -e
mount -t tmpfs -o size=256k tmpfs "$D"
cp "$MODEL" "$D/m.onnx"
"$PY" -m sparsify_tui new "$D/m.onnx" --dir "$D/p" >/dev/null 2>&1
sha256sum "$D/p/project.toml"
dd if=/dev/zero of="$D/fill" bs=1k count=100000 2>/dev/null || true
set +e
"$PY" -m sparsify_tui profile loss "$D/p"; echo "rc=$?"
"$PY" -m sparsify_tui optimize "$D/p"; echo "rc=$?"
sha256sum "$D/p/project.toml"
ls -A "$D/p" "$D/p/profiles"
"$PY" -m sparsify_tui info "$D/p" >/dev/null; echo "rc=$?"
"""


def test_full_disk_keeps_the_project(tmp_path, model):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to mount a private tmpfs")
    d = tmp_path / "mnt"
    d.mkdir()
    env = cli_env(D=str(d), MODEL=str(model), PY=PY)
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", FULL_DISK],
                       capture_output=True, text=True, env=env, timeout=120)
    if "rc=" not in r.stdout:
        pytest.skip(f"cannot mount a private tmpfs here (needs root): {r.stderr.strip()}")
    out = r.stdout
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in r.stderr, r.stderr
    assert out.count("rc=2") == 2 and out.count("rc=0") == 1, out + r.stderr
    assert len(errors) == 2 and all("disk is full" in e for e in errors), errors
    sums = [ln.split()[0] for ln in out.splitlines() if ln.endswith("/p/project.toml") and len(ln.split()[0]) == 64]
    assert len(sums) == 2 and sums[0] == sums[1]  # project.toml untouched
    assert ".tmp" not in out  # no temporary file left behind
    assert list(d.iterdir()) == []  # the mount stayed private to the child


def test_lock_held_by_another_writer(profiled):
    from sparsify_tui.project import Project

    holder = Project.open(profiled)
    try:
        assert not holder.readonly
        before = snapshot_dir(profiled)
        line = assert_user_error(run_cli("optimize", profiled, "--sparsity", "0.7"), "open in process")
        assert str(__import__("os").getpid()) in line
        assert snapshot_dir(profiled) == before
    finally:
        holder.close()
    res = run_cli("optimize", profiled, "--sparsity", "0.7")  # free again
    assert res.returncode == 0, res.stderr


def test_two_writers_at_once(profiled):
    env = cli_env()
    procs = [subprocess.Popen([PY, "-m", "sparsify_tui", "optimize", str(profiled), "--name", n, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for n in ("first", "second")]
    results = [(n, *p.communicate(timeout=120), p.returncode) for n, p in zip(("first", "second"), procs)]
    from sparsify_tui.project import Project

    p = Project.open(profiled, readonly=True)
    names = {o["name"] for o in p.optimizations}
    ok = 0
    for name, out, err, rc in results:
        assert "Traceback" not in err, err
        if rc == 0:
            ok += 1
            assert name in names and json.loads(out)
        else:
            res = subprocess.CompletedProcess([], rc, out, err)
            assert_user_error(res, "open in process")
            assert name not in names
    assert ok >= 1
    assert "default" in names  # the earlier optimization survived both writers
    for e in p.profiles:
        p.load_profile(e)


def test_file_size_limit_keeps_the_project(demo_project):
    """RLIMIT_FSIZE (a quota-like limit): the profile cannot be written, nothing else changes."""
    import resource

    from sparsify_tui.project import Project

    assert _main("optimize", demo_project, "--sparsity", "0.6") == 0
    before = snapshot_dir(demo_project)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    res = subprocess.run([PY, "-m", "sparsify_tui", "profile", "loss", str(demo_project)], capture_output=True,
                         text=True, env=cli_env(), preexec_fn=limit, timeout=120)
    assert_user_error(res, "file size limit", "previous version is kept")
    assert snapshot_dir(demo_project) == before
    p = Project.open(demo_project)
    assert not p.readonly and [o["name"] for o in p.optimizations] == ["default"]
    p.close()
