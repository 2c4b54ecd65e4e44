"""Projects: project.toml round trip, cache keys, corruption, staleness, locking, disk failures.

Everything runs on real files, real ONNX models and real processes (the lock
and the disk-failure tests start child Python processes).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

from sparsify_tui import fsutil
from sparsify_tui.errors import ModelError, ProfileError, ProjectError, ReadOnlyProjectError, SparsifyError
from sparsify_tui.project import (
    Project,
    ProfileEntry,
    drop_none,
    recent_projects,
    slugify,
)

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent

MACHINE = {"cpu_model": "Test CPU", "isa": ["avx2"], "physical_cores": 2, "fingerprint": "fp-test",
           "engines": {"onnxruntime": "1.18.1"}}


# ---------------------------------------------------------------- fixtures
def build_tiny_model(path: Path, *, seed: int = 0, external: str | None = None) -> Path:
    """A real two-layer CNN (Conv -> Relu -> Gemm) built with onnx.helper."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "conv.b")
    fw = numpy_helper.from_array(rng.standard_normal((10, 4 * 8 * 8)).astype(np.float32), "fc.w")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["conv_out"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
        helper.make_node("Reshape", ["relu_out", "shape"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "fc.w"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [w, b, fw, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tests")
    model.ir_version = 8
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=external, size_threshold=100)
    else:
        onnx.save_model(model, str(path))
    return path


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    return build_tiny_model(tmp_path / "tiny.onnx")


@pytest.fixture
def project(tmp_path, tiny_model):
    p = Project.create(tiny_model, dir=tmp_path / "proj", name="tiny")
    yield p
    p.close()


def add_perf(p: Project, name="base", settings=None, data=None, machine=MACHINE):
    settings = {"batch_size": 1, "cores": None, "levels": [0.0, 0.5, 0.9]} if settings is None else settings
    data = {"engine": "onnxruntime", "baseline_ms": 1.25, "layers": [{"id": "conv_out", "baseline_ms": 1.0}]} \
        if data is None else data
    return p.add_profile("perf", name, settings, "onnxruntime", "1.18.1", machine, data)


def run_py(code: str, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([PY, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


# ---------------------------------------------------------------- create / open
def test_create_copies_model_and_writes_readable_toml(tmp_path, tiny_model):
    p = Project.create(tiny_model, dir=tmp_path / "p", name="My Tiny", description="first try",
                       input_shapes={"x": [1, 3, 8, 8]})
    try:
        assert p.dir == (tmp_path / "p").absolute()
        assert (p.dir / "model.onnx").read_bytes() == tiny_model.read_bytes()
        assert p.model_path == p.dir / "model.onnx"
        assert p.model_sha256 == fsutil.sha256_file(tiny_model)
        assert not p.readonly and p.notices == []
        import tomllib

        doc = tomllib.loads((p.dir / "project.toml").read_text())
        assert doc["schema_version"] == 1
        assert doc["project"]["name"] == "My Tiny"
        assert doc["project"]["description"] == "first try"
        assert doc["model"]["file"] == "model.onnx"
        assert doc["model"]["sha256"] == p.model_sha256
        assert doc["model"]["size"] == tiny_model.stat().st_size
        assert doc["model"]["input_shapes"] == {"x": [1, 3, 8, 8]}
        assert oct((p.dir / "project.toml").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    finally:
        p.close()
    q = Project.open(tmp_path / "p")
    assert (q.name, q.description, q.input_shapes) == ("My Tiny", "first try", {"x": [1, 3, 8, 8]})
    assert q.created and q.modified and not q.model_changed
    q.close()


def _umask() -> int:
    cur = os.umask(0o022)
    os.umask(cur)
    return cur


def test_create_default_dir_is_slug_of_name(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = Project.create(tiny_model, name="Ünïcode Net: v2!")
    assert p.dir == tmp_path / "unicode-net-v2"
    assert p.name == "Ünïcode Net: v2!"
    p.close()
    q = Project.create(tiny_model)  # name defaults to the model's file name
    assert q.name == "tiny" and q.dir == tmp_path / "tiny"
    q.close()
    assert slugify("") == "project" and slugify("../..") == "project" and slugify("a/b c") == "a-b-c"


def test_create_refuses_existing_project_and_bad_models(tmp_path, tiny_model):
    p = Project.create(tiny_model, dir=tmp_path / "p")
    p.close()
    before = (tmp_path / "p" / "project.toml").read_bytes()
    with pytest.raises(ProjectError, match="already holds a project"):
        Project.create(tiny_model, dir=tmp_path / "p")
    assert (tmp_path / "p" / "project.toml").read_bytes() == before
    with pytest.raises(ModelError, match="does not exist"):
        Project.create(tmp_path / "nope.onnx", dir=tmp_path / "q")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 this is not a protobuf \xff" * 10)
    with pytest.raises(ModelError, match="junk.onnx"):
        Project.create(junk, dir=tmp_path / "q")
    assert not (tmp_path / "q").exists()  # nothing left behind after a failure
    with pytest.raises(SparsifyError, match="nosuchinput"):
        Project.create(tiny_model, dir=tmp_path / "q", input_shapes={"nosuchinput": [1, 2]})
    assert not (tmp_path / "q").exists()


def test_create_link_and_in_place(tmp_path, tiny_model):
    p = Project.create(tiny_model, dir=tmp_path / "linked", link=True)
    assert p.linked and p.model_path == tiny_model.resolve()
    assert not (p.dir / "model.onnx").exists()
    p.close()
    q = Project.open(tmp_path / "linked")
    assert q.model_path == tiny_model.resolve() and not q.model_changed
    q.close()
    # a directory that already holds the model as model.onnx becomes the project without copying
    d = tmp_path / "inplace"
    d.mkdir()
    m = build_tiny_model(d / "model.onnx")
    ino = m.stat().st_ino
    r = Project.create(m, dir=d)
    assert (d / "model.onnx").stat().st_ino == ino and not r.linked
    r.close()


def test_create_copies_external_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    m = build_tiny_model(src / "ext.onnx", external="ext.weights")
    assert (src / "ext.weights").stat().st_size > 1000
    p = Project.create(m, dir=tmp_path / "p")
    assert (p.dir / "ext.weights").read_bytes() == (src / "ext.weights").read_bytes()
    p.close()
    (src / "ext.weights").unlink()  # the project no longer depends on the source directory
    loaded = onnx.load(str(p.dir / "model.onnx"))
    w = numpy_helper.to_array(loaded.graph.initializer[0])
    assert w.shape == (4, 3, 3, 3)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(p.dir / "model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})[0]
    assert out.shape == (1, 10) and np.isfinite(out).all()


def test_open_errors(tmp_path):
    with pytest.raises(ProjectError, match="does not exist"):
        Project.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProjectError, match="no project.toml"):
        Project.open(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProjectError, match="not a directory"):
        Project.open(tmp_path / "file")


# ---------------------------------------------------------------- profiles and the cache key
def test_profile_cache_key_find_and_replace(project):
    e = add_perf(project)
    assert e.id == "perf-1" and e.file == "profiles/perf-1.json"
    assert e.machine == {"cpu_model": "Test CPU", "isa": ["avx2"], "cores": 2, "fingerprint": "fp-test"}
    assert e.model_sha256 == project.model_sha256
    on_disk = json.loads((project.dir / e.file).read_text())
    assert on_disk["key"] == e.key and on_disk["schema_version"] == 1 and on_disk["baseline_ms"] == 1.25
    # the same request (None dropped either way) finds it again
    k = project.profile_key("perf", {"batch_size": 1, "levels": [0.0, 0.5, 0.9]}, "onnxruntime", "1.18.1", "fp-test")
    assert k == e.key and project.find_profile(k) is e
    # anything that differs gives another key
    others = [
        project.profile_key("perf", {"batch_size": 2, "levels": [0.0, 0.5, 0.9]}, "onnxruntime", "1.18.1", "fp-test"),
        project.profile_key("loss", {"batch_size": 1, "levels": [0.0, 0.5, 0.9]}, "onnxruntime", "1.18.1", "fp-test"),
        project.profile_key("perf", {"batch_size": 1, "levels": [0.0, 0.5, 0.9]}, "deepsparse", "1.8.0", "fp-test"),
        project.profile_key("perf", {"batch_size": 1, "levels": [0.0, 0.5, 0.9]}, "onnxruntime", "1.18.1", "other"),
    ]
    assert len(set(others) | {k}) == 5
    # a second profile with other settings is added beside it
    e2 = add_perf(project, name="bs2", settings={"batch_size": 2})
    assert e2.id == "perf-2" and len(project.profiles_of("perf")) == 2
    # same key again (--force): replaces the entry, removes the old file
    e3 = add_perf(project, name="again", data={"baseline_ms": 2.5})
    assert [x.id for x in project.profiles] == ["perf-2", "perf-3"]
    assert not (project.dir / "profiles" / "perf-1.json").exists()
    assert project.find_profile(k) is e3 and project.load_profile(e3)["baseline_ms"] == 2.5
    project.close()
    q = Project.open(project.dir)
    assert [x.id for x in q.profiles] == ["perf-2", "perf-3"]
    assert q.find_profile(k).name == "again"
    assert q.load_profile("perf-3")["baseline_ms"] == 2.5
    with pytest.raises(ProfileError, match="no profile 'perf-1'"):
        q.load_profile("perf-1")
    q.remove_profile("perf-2")
    assert [x.id for x in q.profiles] == ["perf-3"] and not (q.dir / "profiles" / "perf-2.json").exists()
    q.close()


def test_profile_data_with_numpy_values(project):
    data = {"baseline_ms": np.float32(1.5), "counts": np.arange(3), "n": np.int64(7)}
    e = add_perf(project, data=data)
    back = project.load_profile(e)
    assert back["baseline_ms"] == 1.5 and back["counts"] == [0, 1, 2] and back["n"] == 7


def test_corrupt_profile_only_that_profile_is_unreadable(project):
    good = add_perf(project, name="good")
    bad = add_perf(project, name="bad", settings={"batch_size": 8})
    gone = add_perf(project, name="gone", settings={"batch_size": 16})
    bad_path = project.dir / bad.file
    text = bad_path.read_text()
    bad_path.write_text(text[: len(text) // 2])  # truncated
    (project.dir / gone.file).unlink()
    project.close()
    q = Project.open(project.dir)  # never fails because of a profile file
    assert not q.readonly
    assert q.load_profile(good.id)["baseline_ms"] == 1.25
    with pytest.raises(ProfileError, match=r"truncated \(line \d+, column \d+"):
        q.load_profile(bad.id)
    with pytest.raises(ProfileError, match="missing"):
        q.load_profile(gone.id)
    problems = q.profile_problems()
    assert set(problems) == {bad.id, gone.id}
    assert str(bad_path) in problems[bad.id]
    bad_path.write_text("[1, 2, 3]\n")  # valid JSON, wrong shape
    with pytest.raises(ProfileError, match="JSON object"):
        q.load_profile(bad.id)
    bad_path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ProfileError, match="corrupt"):
        q.load_profile(bad.id)
    # re-measuring (same key) repairs it
    fixed = add_perf(q, name="bad", settings={"batch_size": 8})
    assert q.load_profile(fixed)["baseline_ms"] == 1.25
    assert set(q.profile_problems()) == {gone.id}
    q.close()


# ---------------------------------------------------------------- model changes
def test_changed_model_marks_profiles_stale_and_keeps_them(project, monkeypatch):
    old = add_perf(project)
    project.close()
    # opening an unchanged project does not hash the model again
    calls = []
    real = fsutil.sha256_file
    monkeypatch.setattr(fsutil, "sha256_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    q = Project.open(project.dir)
    assert calls == [] and not q.model_changed and not q.is_stale(q.profiles[0])
    q.close()
    # rewrite the model with other weights
    build_tiny_model(project.dir / "model.onnx", seed=1)
    q = Project.open(project.dir)
    assert len(calls) == 1
    assert q.model_changed and q.model_sha256 != old.model_sha256
    assert q.is_stale(q.profiles[0]) and [e.id for e in q.stale_profiles()] == [old.id]
    assert any("stale" in n for n in q.notices)
    assert q.load_profile(old.id)["baseline_ms"] == 1.25  # shown, not deleted
    new = add_perf(q, name="remeasured")  # new key (model sha is part of it): both kept
    assert new.id != old.id and not q.is_stale(new) and len(q.profiles) == 2
    q.close()
    r = Project.open(project.dir)
    assert [r.is_stale(e) for e in r.profiles] == [True, False]
    assert not r.model_changed  # the new model was accepted by the last save...
    assert r.notices == ["1 profile(s) were measured on an earlier version of the model and are marked stale "
                         "(kept; measure them again with --force)"]  # ...the old profile stays stale
    r.close()


def test_touched_but_unchanged_model_is_not_stale(project):
    add_perf(project)
    project.close()
    st = (project.dir / "model.onnx").stat()
    os.utime(project.dir / "model.onnx", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    q = Project.open(project.dir)
    assert not q.model_changed and not q.stale_profiles() and q.notices == []
    q.close()


def test_missing_model_opens_with_notice(project):
    add_perf(project)
    project.close()
    (project.dir / "model.onnx").unlink()
    q = Project.open(project.dir)
    assert q.model_missing and not q.readonly
    assert any("missing" in n and "model.onnx" in n for n in q.notices)
    assert not q.stale_profiles()
    assert q.load_profile("perf-1")["baseline_ms"] == 1.25
    q.close()


# ---------------------------------------------------------------- corrupt / hand-edited project.toml
def test_corrupt_toml_reports_line_column_and_backup(project):
    project.description = "saved twice so a backup exists"
    project.save()
    project.close()
    toml = project.dir / "project.toml"
    lines = toml.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("description"))
    lines[i] = 'description = "unterminated'
    toml.write_text("\n".join(lines) + "\n")
    with pytest.raises(ProjectError) as ei:
        Project.open(project.dir)
    msg = str(ei.value)
    assert f"line {i + 1}, column" in msg
    assert f"cp {project.dir / 'project.toml.bak'} {toml}" in msg
    assert "\n" not in msg
    # following the advice works
    os.replace(project.dir / "project.toml.bak", toml)
    q = Project.open(project.dir)
    assert q.name == "tiny"
    q.close()


def test_empty_and_binary_toml(project):
    project.close()
    toml = project.dir / "project.toml"
    toml.write_bytes(b"")
    with pytest.raises(ProjectError, match="empty"):
        Project.open(project.dir)
    toml.write_bytes(b'schema_version = 1\n[project]\nname = "\xff\xfe"\n')
    with pytest.raises(ProjectError, match="line 3, column 9: not UTF-8"):
        Project.open(project.dir)


@pytest.mark.parametrize("edit, key", [
    ('name = "tiny"', "name = 5"),
    ("size = ", 'size = "big"\nxsize = '),
    ("[model.input_shapes]", '[model.input_shapes]\nx = [1, "a"]'),
])
def test_wrong_types_name_the_key(project, edit, key):
    project.close()
    toml = project.dir / "project.toml"
    text = toml.read_text()
    assert edit in text
    toml.write_text(text.replace(edit, key, 1))
    with pytest.raises(ProjectError) as ei:
        Project.open(project.dir)
    want = {"name = 5": "project.name must be a string, not an integer",
            'size = "big"\nxsize = ': "model.size must be an integer, not a string",
            '[model.input_shapes]\nx = [1, "a"]': "model.input_shapes.x must be an array of integers"}[key]
    assert want in str(ei.value)


def test_wrong_profile_field_type_names_the_key(project):
    add_perf(project)
    project.close()
    toml = project.dir / "project.toml"
    toml.write_text(toml.read_text().replace('engine = "onnxruntime"', "engine = [1]"))
    with pytest.raises(ProjectError, match=r"profiles\[0\]\.engine must be a string, not an array"):
        Project.open(project.dir)


def test_unknown_keys_are_preserved(project):
    add_perf(project)
    project.close()
    toml = project.dir / "project.toml"
    text = toml.read_text()
    text = text.replace('[project]\n', '[project]\ncolor = "red"\n', 1)
    text = text.replace('[model]\n', '[model]\nsource = "zoo:resnet"\n', 1)
    text = text.replace('[[profiles]]\n', '[[profiles]]\nnote = "measured on battery"\n', 1)
    text += '\n[future]\nthing = [1, 2]\n[future.deeper]\nok = true\n'
    text += '\n[[optimizations]]\nname = "o"\nfile = "optimizations/o.json"\nreviewed_by = "ana"\n'
    (project.dir / "optimizations").mkdir()
    (project.dir / "optimizations" / "o.json").write_text('{"name": "o", "sparsity": 0.5}')
    toml.write_text(text)
    q = Project.open(project.dir)
    q.description = "changed"
    q.save()
    q.close()
    import tomllib

    doc = tomllib.loads(toml.read_text())
    assert doc["project"]["color"] == "red" and doc["project"]["description"] == "changed"
    assert doc["model"]["source"] == "zoo:resnet"
    assert doc["profiles"][0]["note"] == "measured on battery"
    assert doc["future"] == {"thing": [1, 2], "deeper": {"ok": True}}
    assert doc["optimizations"] == [{"name": "o", "file": "optimizations/o.json", "reviewed_by": "ana"}]


def test_newer_schema_opens_read_only(project):
    project.close()
    toml = project.dir / "project.toml"
    toml.write_text(toml.read_text().replace("schema_version = 1", "schema_version = 7\n[brand_new]\nx = 1", 1))
    q = Project.open(project.dir)
    assert q.readonly
    assert any("schema_version 7" in n and "newer" in n for n in q.notices)
    with pytest.raises(ReadOnlyProjectError, match="schema_version 7"):
        q.save()
    with pytest.raises(ReadOnlyProjectError):
        add_perf(q)
    # it does not keep the lock: a later writer is not blocked by it (it is read-only for the same reason)
    r = Project.open(project.dir)
    assert r.readonly and not any("process" in n for n in r.notices)
    assert "schema_version = 7" in toml.read_text()


def test_hand_written_datetime_and_inline_optimization(project):
    project.close()
    toml = project.dir / "project.toml"
    text = toml.read_text()
    import re

    text = re.sub(r'created = "[^"]*"', "created = 2024-05-01T10:00:00Z", text, count=1)
    text += '\n[[optimizations]]\nname = "handmade"\nsparsity = 0.8\n'
    toml.write_text(text)
    q = Project.open(project.dir)
    assert q.created.startswith("2024-05-01T10:00:00")
    assert q.optimizations == [{"name": "handmade", "sparsity": 0.8}]
    q.save()  # written back as a JSON file
    q.close()
    r = Project.open(project.dir)
    assert r.optimizations == [{"name": "handmade", "sparsity": 0.8}]
    assert json.loads((r.dir / "optimizations" / "handmade.json").read_text())["sparsity"] == 0.8
    r.close()


# ---------------------------------------------------------------- optimizations
def test_optimizations_round_trip_with_none(project):
    opt = {"name": "default", "sparsity": 0.85, "balance": 0.5, "profile_loss": None,
           "modifiers": [{"type": "pruning", "layers": {"conv_out": 0.9, "y": None}, "end": None}]}
    project.set_optimization(opt)
    project.set_optimization({"name": "copy / v2", "sparsity": 0.9})
    opt["sparsity"] = 0.1  # the project stored a copy
    project.close()
    q = Project.open(project.dir)
    assert [o["name"] for o in q.optimizations] == ["default", "copy / v2"]
    assert q.optimizations[0]["profile_loss"] is None
    assert q.optimizations[0]["modifiers"][0]["layers"] == {"conv_out": 0.9, "y": None}
    assert q.optimizations[0]["sparsity"] == 0.85
    q.set_optimization({"name": "default", "sparsity": 0.7})  # replace, position kept
    assert [o["name"] for o in q.optimizations] == ["default", "copy / v2"]
    files = sorted(p.name for p in (q.dir / "optimizations").iterdir())
    assert files == ["copy-v2.json", "default.json"]
    q.remove_optimization("copy / v2")
    assert not (q.dir / "optimizations" / "copy-v2.json").exists()
    with pytest.raises(ProjectError, match="no optimization 'nope'"):
        q.remove_optimization("nope")
    with pytest.raises(ProjectError, match="name"):
        q.set_optimization({"sparsity": 0.5})
    q.close()
    r = Project.open(project.dir)
    assert r.optimizations == [{"name": "default", "sparsity": 0.7}]
    r.close()


def test_corrupt_optimization_file_is_reported_and_kept(project):
    project.set_optimization({"name": "a", "x": 1})
    project.set_optimization({"name": "b", "x": 2})
    project.close()
    (project.dir / "optimizations" / "a.json").write_text("{truncated")
    q = Project.open(project.dir)
    assert [o["name"] for o in q.optimizations] == ["b"]
    assert "optimization:a" in q.problems()
    q.set_optimization({"name": "b", "x": 3})
    q.close()
    import tomllib

    doc = tomllib.loads((project.dir / "project.toml").read_text())
    assert [o["name"] for o in doc["optimizations"]] == ["b", "a"]  # the unreadable entry is kept


# ---------------------------------------------------------------- round trip (property based)
toml_scalars = (st.booleans() | st.integers(min_value=-2**63, max_value=2**63 - 1)
                | st.floats() | st.text(max_size=20))
settings_values = st.recursive(
    toml_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
settings_dicts = st.dictionaries(st.text(max_size=10), settings_values, max_size=5)
json_values = st.recursive(
    st.none() | toml_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def same(a, b) -> bool:
    """Equal with the same types (1 != 1.0 != True), -0.0 == 0.0 allowed."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@pytest.fixture(scope="module")
def rt_project(tmp_path_factory):
    base = tmp_path_factory.mktemp("rt")
    m = build_tiny_model(base / "m.onnx")
    p = Project.create(m, dir=base / "proj", name="rt")
    yield p
    p.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=40), description=st.text(max_size=80), psettings=settings_dicts,
       pname=st.text(max_size=20), engine_version=st.text(max_size=10), opt_extra=json_values,
       shapes=st.dictionaries(st.text(min_size=1, max_size=8),
                              st.lists(st.integers(min_value=1, max_value=4096), max_size=4), max_size=2))
def test_round_trip_arbitrary_text_and_settings(rt_project, name, description, psettings, pname, engine_version,
                                                opt_extra, shapes):
    p = rt_project
    p.name, p.description = name, description
    p.input_shapes = shapes
    entry = p.add_profile("loss", pname, psettings, "onnxruntime", engine_version, MACHINE, {"s": psettings})
    opt = {"name": name or "unnamed", "extra": opt_extra}
    p.set_optimization(opt)
    q = Project.open(p.dir, readonly=True)
    assert same(q.name, name) and same(q.description, description)
    assert q.input_shapes == shapes
    back = q.find_profile(entry.key)
    assert back is not None and back.id == entry.id
    assert same(back.name, pname if pname else entry.id)
    assert same(back.settings, drop_none(psettings))
    assert back.engine_version == engine_version
    # the key recomputed from the stored settings is the key it was stored under
    assert q.profile_key("loss", back.settings, back.engine, back.engine_version, back.machine["fingerprint"]) \
        == entry.key
    assert same(q.load_profile(back)["s"], psettings)
    assert same(q.get_optimization(opt["name"]), opt)
    p.remove_optimization(opt["name"])
    p.remove_profile(entry)  # keep the project small across examples
    assert p.profiles == [] and p.optimizations == []


def test_drop_none():
    assert drop_none({"a": None, "b": [1, None, {"c": None}], "d": (1, 2)}) == {"b": [1, {}], "d": [1, 2]}


def test_profile_entry_from_dict_defaults():
    e = ProfileEntry.from_dict({"id": "perf-9", "kind": "perf"})
    assert e.file == "profiles/perf-9.json" and e.name == "perf-9" and e.settings == {}
    with pytest.raises(ProjectError, match="has no 'id'"):
        ProfileEntry.from_dict({"kind": "perf"})


# ---------------------------------------------------------------- locking across processes
HOLDER = """
import sys, time
from sparsify_tui.project import Project
p = Project.open(sys.argv[1])
print("readonly" if p.readonly else "locked", flush=True)
sys.stdin.readline()
p.description = "written by the holder"
p.save()
print("saved", flush=True)
sys.stdin.readline()
"""


def _start_holder(d: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([PY, "-c", HOLDER, str(d)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline().strip()
    assert line == "locked", (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()


def test_second_writer_opens_read_only_and_lock_is_released(project):
    project.close()
    holder = _start_holder(project.dir)
    try:
        info = json.loads((project.dir / "project.lock").read_text())
        assert info["pid"] == holder.pid
        q = Project.open(project.dir)
        assert q.readonly
        assert q.notices == [f"opened read-only: project is open in process {holder.pid} on host "
                             f"{info['host']} (since {info['started']})"]
        with pytest.raises(ReadOnlyProjectError, match=f"process {holder.pid}"):
            q.save()
        with pytest.raises(ReadOnlyProjectError, match=f"process {holder.pid}"):
            q.require_writable()
        with pytest.raises(ReadOnlyProjectError):
            q.set_optimization({"name": "x"})
        # the holder can still write
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "saved"
        assert q.changed_on_disk()  # the read-only viewer can tell, and reload
        q.reload()
        assert q.description == "written by the holder" and q.readonly and not q.changed_on_disk()
        # waiting for the lock: times out while held
        t = time.monotonic()
        r = Project.open(project.dir, wait=0.3)
        assert r.readonly and time.monotonic() - t >= 0.3
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=20)
        s = Project.open(project.dir)
        assert not s.readonly and s.description == "written by the holder"
        s.close()
        assert not (project.dir / "project.lock").exists()  # removed on close
    finally:
        _stop(holder)


def test_lock_of_a_killed_process_is_taken_over(project):
    project.close()
    holder = _start_holder(project.dir)
    assert Project.open(project.dir).readonly
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=20)
    _stop(holder)
    assert json.loads((project.dir / "project.lock").read_text())["pid"] == holder.pid  # stale file left behind
    q = Project.open(project.dir)
    assert not q.readonly and q.notices == []
    assert json.loads((project.dir / "project.lock").read_text())["pid"] == os.getpid()
    q.description = "after takeover"
    q.save()
    q.close()


def test_lock_file_naming_a_dead_pid_does_not_block(project):
    project.close()
    (project.dir / "project.lock").write_text(json.dumps({"pid": 999999, "host": "elsewhere"}))
    q = Project.open(project.dir)
    assert not q.readonly
    q.close()


def test_same_process_second_open_is_read_only(project):
    q = Project.open(project.dir)
    assert q.readonly and f"process {os.getpid()}" in q.notices[0]
    q2 = Project.open(project.dir, readonly=True)
    assert q2.readonly and q2.notices == []  # asked for read-only: no lock, no notice


# ---------------------------------------------------------------- disk failures (child processes)
FAIL_SAVE = """
import os, sys, resource, fcntl, json, tomli_w  # all imported before privileges are dropped
import sparsify_tui.paths
from sparsify_tui.project import Project
from sparsify_tui.errors import ProjectError
d, mode = sys.argv[1], sys.argv[2]
p = Project.open(d)
assert not p.readonly, p.notices
if mode == "fsize":
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
elif mode == "readonly-dir":
    if os.geteuid() == 0:
        os.setgid(65534); os.setuid(65534)   # root ignores permissions: become nobody
    else:
        os.chmod(d, 0o555)
p.description = "x" * 5000
try:
    p.save()
except ProjectError as exc:
    print("ProjectError:", exc)
    sys.exit(0)
print("saved?!")
sys.exit(3)
"""


@pytest.mark.parametrize("mode, reason", [("fsize", "file size limit"), ("readonly-dir", "ermission denied")])
def test_save_failure_keeps_old_content(tmp_path, tiny_model, mode, reason):
    base = Path(tempfile.mkdtemp(prefix="sparsify-ro-"))  # world-traversable, unlike pytest's tmp
    try:
        os.chmod(base, 0o755)
        p = Project.create(tiny_model, dir=base / "p", description="old")
        add_perf(p)
        p.close()
        os.chmod(base / "p", 0o755)
        before = (base / "p" / "project.toml").read_bytes()
        r = run_py(FAIL_SAVE, str(base / "p"), mode)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("ProjectError: could not save") and reason in r.stdout
        assert "previous version is kept" in r.stdout
        os.chmod(base / "p", 0o755)
        assert (base / "p" / "project.toml").read_bytes() == before
        assert not [f for f in os.listdir(base / "p") if f.endswith(".tmp")]
        q = Project.open(base / "p")
        assert q.description == "old" and len(q.profiles) == 1
        q.close()
    finally:
        os.chmod(base, 0o755)
        for root, dirs, _ in os.walk(base):
            for x in dirs:
                os.chmod(os.path.join(root, x), 0o755)
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def test_read_only_directory_opens_read_only(tmp_path, tiny_model):
    base = Path(tempfile.mkdtemp(prefix="sparsify-ro-"))
    try:
        os.chmod(base, 0o755)
        p = Project.create(tiny_model, dir=base / "p", name="ro")
        p.close()
        code = """
import os, sys, json, fcntl
import sparsify_tui.paths
from sparsify_tui.project import Project   # import before dropping privileges (stdlib may be under /root)
if os.geteuid() == 0:
    os.setgid(65534); os.setuid(65534)
else:
    os.chmod(sys.argv[1], 0o555)
p = Project.open(sys.argv[1])
print(json.dumps({"readonly": p.readonly, "notices": p.notices, "name": p.name}))
"""
        r = run_py(code, str(base / "p"))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["readonly"] and out["name"] == "ro"
        assert out["notices"][0].startswith(f"opened read-only: cannot write in {base / 'p'}")
    finally:
        os.chmod(base / "p", 0o755)
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- recent projects and the CLI
def test_recent_projects(tmp_path, tiny_model):
    a = Project.create(tiny_model, dir=tmp_path / "a", name="A")
    b = Project.create(tiny_model, dir=tmp_path / "b", name="B")
    a.close()
    b.close()
    assert [r["name"] for r in recent_projects()[:2]] == ["B", "A"]
    Project.open(tmp_path / "a", readonly=True)
    rec = recent_projects()
    assert rec[0]["path"] == str(tmp_path / "a") and rec[0]["exists"]
    assert len({r["path"] for r in rec}) == len(rec)
    import shutil

    shutil.rmtree(tmp_path / "b")
    assert [r["exists"] for r in recent_projects() if r["name"] == "B"] == [False]


def test_cli_new_json_and_errors(tmp_path, corpus, capsys):
    from sparsify_tui.cli import main

    model = corpus.path("resnet50")
    rc = main(["new", str(model), "--dir", str(tmp_path / "r50"), "--name", "light resnet", "--json",
               *corpus.input_shape_args("resnet50")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    doc = json.loads(out.out)
    assert doc["path"] == str(tmp_path / "r50") and doc["name"] == "light resnet"
    assert doc["model"] == str(tmp_path / "r50" / "model.onnx")
    assert doc["sha256"] == fsutil.sha256_file(tmp_path / "r50" / "model.onnx")  # the corpus file may be re-fetched
    assert doc["input_shapes"] == corpus.input_shapes("resnet50")
    q = Project.open(tmp_path / "r50")
    assert q.input_shapes == corpus.input_shapes("resnet50") and not q.readonly
    q.close()
    # again: refused, one error line, exit 2
    rc = main(["new", str(model), "--dir", str(tmp_path / "r50")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "already holds a project" in err and err.count("\n") == 1
    rc = main(["new", str(tmp_path / "none.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "none.onnx" in err and "Traceback" not in err


def test_cli_new_subprocess_prints_path(tmp_path, corpus):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([PY, "-m", "sparsify_tui", "new", str(corpus.path("mobilenetv3")), "--link"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path == tmp_path / "rapidocr-1.4.4_ppocr-cls-mobilenetv3"
    q = Project.open(path)
    assert q.linked and q.model_path == corpus.path("mobilenetv3").resolve()
    q.close()


def test_edit_outside_while_open_is_kept_aside(project):
    toml = project.dir / "project.toml"
    time.sleep(0.01)
    edited = toml.read_text().replace('name = "tiny"', 'name = "renamed by hand"')
    toml.write_text(edited)
    project.description = "saved by the program"
    project.save()
    aside = project.dir / "project.toml.outside-edit"
    assert aside.read_text() == edited
    assert any("changed outside" in n for n in project.notices)
    project.reload()
    assert project.name == "tiny" and project.description == "saved by the program"
    project.save()  # no new outside edit: nothing more kept aside, no new notice
    assert sum("changed outside" in n for n in project.notices) == 0


def test_threads_sharing_a_project_do_not_lose_profiles(project):
    import threading

    def worker(k):
        for i in range(5):
            add_perf(project, name=f"t{k}-{i}", settings={"batch_size": 1, "k": k, "i": i})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    project.close()
    q = Project.open(project.dir)
    assert sorted(e.name for e in q.profiles) == sorted(f"t{k}-{i}" for k in range(3) for i in range(5))
    assert len({e.id for e in q.profiles}) == 15 and q.profile_problems() == {}
    q.close()


def test_corrupt_toml_with_damaged_backup_says_so(project):
    project.save()
    project.close()
    (project.dir / "project.toml").write_text("schema_version = 1\n[project\n")
    (project.dir / "project.toml.bak").write_text("[[[\n")
    with pytest.raises(ProjectError, match=r"line 2, column 9: .*backup .* is damaged too"):
        Project.open(project.dir)


def test_create_into_empty_dir_and_interrupted_create_leaves_nothing(tmp_path, tiny_model):
    (tmp_path / "empty").mkdir()
    p = Project.create(tiny_model, dir=tmp_path / "empty")
    assert (tmp_path / "empty" / "project.toml").exists() and p.dir == tmp_path / "empty"
    p.description = "after the rename the lock still works"
    p.save()
    assert Project.open(tmp_path / "empty").readonly  # still locked by p
    p.close()
    assert not [x for x in os.listdir(tmp_path) if ".creating-" in x]
    # a create killed half-way leaves only a hidden staging directory, never a half-made project
    code = """
import os, signal, sys
from sparsify_tui import fsutil
from sparsify_tui.project import Project
real = fsutil.atomic_copy_file
def copy_then_die(*a, **k):
    real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
fsutil.atomic_copy_file = copy_then_die
Project.create(sys.argv[1], dir=sys.argv[2])
"""
    r = run_py(code, str(tiny_model), str(tmp_path / "killed"))
    assert r.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed").exists()
    q = Project.create(tiny_model, dir=tmp_path / "killed")  # so it can simply be created again
    q.close()


def test_save_after_close_is_refused(project):
    project.close()
    with pytest.raises(ReadOnlyProjectError, match="the project was closed"):
        project.save()


def test_forked_child_exit_does_not_remove_the_parents_lock(project):
    pid = os.fork()
    if pid == 0:  # child: drops its copy of the project as a Python exit would
        try:
            project._lock.release()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert (project.dir / "project.lock").exists()
    assert Project.open(project.dir).readonly  # the parent still holds the lock


# ---------------------------------------------------------------- fuzzing hand edits: ProjectError or a project, never a crash
@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    p = Project.create(build_tiny_model(base / "m.onnx"), dir=base / "proj", name="fuzz",
                       input_shapes={"x": [1, 3, 8, 8]})
    add_perf(p)
    p.set_optimization({"name": "o", "sparsity": 0.5})
    p.close()
    return p.dir, (p.dir / "project.toml").read_text()


TOML_VALUES = ["5", "-0", "1.5", "nan", "inf", "true", '"s"', '""', "[]", "[1, 2]", '["a", 1]', "[[1]]", "{}",
               "{ a = 1 }", "1979-05-27", "1979-05-27T07:32:00Z", "07:32:00", '"""multi\nline"""', "[{ x = 1 }]"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hand_edited_project_toml_never_crashes(fuzz_project, data):
    d, original = fuzz_project
    lines = original.splitlines()
    how = data.draw(st.sampled_from(["value", "bytes", "truncate", "dup"]))
    if how == "value":
        i = data.draw(st.sampled_from([n for n, line in enumerate(lines) if " = " in line]))
        lines[i] = lines[i].split(" = ")[0] + " = " + data.draw(st.sampled_from(TOML_VALUES))
        text = "\n".join(lines) + "\n"
    elif how == "bytes":
        b = bytearray(original.encode())
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(b) - 1))
            b[pos] = data.draw(st.integers(0, 255))
        text = bytes(b).decode("utf-8", "surrogateescape")
    elif how == "truncate":
        text = original[: data.draw(st.integers(0, len(original)))]
    else:
        i = data.draw(st.integers(0, len(lines) - 1))
        text = "\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1:]) + "\n"
    (d / "project.toml").write_bytes(text.encode("utf-8", "surrogateescape"))
    try:
        q = Project.open(d, readonly=True)
    except ProjectError as exc:
        msg = str(exc)
        assert str(d / "project.toml") in msg or "project" in msg
        assert "\n" not in msg
        return
    # it opened: everything a viewer touches works or fails with a SparsifyError
    q.to_dict()
    q.problems()
    for e in q.profiles:
        q.is_stale(e)
        try:
            q.load_profile(e)
        except ProfileError:
            pass


@pytest.mark.parametrize("edit, want", [
    (('file = "model.onnx"', 'file = "mo\\u0000del.onnx"'), "model.file must be the path of the model file"),
    (('file = "model.onnx"', "file = 3"), "model.file must be the path of the model file, not 3"),
    (('file = "profiles/perf-1.json"', 'file = "profiles/\\u0000.json"'), r"profiles\[0\]\.file must be a file path"),
])
def test_bad_file_paths_in_toml(project, edit, want):
    add_perf(project)
    project.close()
    toml = project.dir / "project.toml"
    text = toml.read_text()
    assert edit[0] in text
    toml.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ProjectError, match=want):
        Project.open(project.dir)


def test_never_fills_an_existing_non_empty_directory(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "notes.txt").write_text("mine")
    with pytest.raises(ProjectError, match="already exists and is not empty: give the project a new directory"):
        Project.create(tiny_model)
    for d in (tmp_path / "tiny", "", ".", tmp_path):  # explicit, including the current directory by mistake
        with pytest.raises(ProjectError, match="already exists and is not empty: choose a new or empty --dir"):
            Project.create(tiny_model, dir=d)
    assert sorted(os.listdir(tmp_path / "tiny")) == ["notes.txt"]
    assert not (tmp_path / "project.toml").exists() and not (tmp_path / "model.onnx").exists()


def test_exclusive_file_lock_mode(project, monkeypatch):
    """Where flock is unavailable the lock file itself is the lock; a dead holder is taken over."""
    project.close()
    monkeypatch.setenv("SPARSIFY_TUI_LOCK", "file")
    holder = _start_holder(project.dir)
    try:
        info = json.loads((project.dir / "project.lock").read_text())
        assert info["pid"] == holder.pid and info["mode"] == "file"
        q = Project.open(project.dir)
        assert q.readonly and f"process {holder.pid}" in q.notices[0]
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=20)
        assert (project.dir / "project.lock").exists()  # left behind by the killed holder
        r = Project.open(project.dir)  # its pid is gone on this host: taken over
        assert not r.readonly and json.loads((project.dir / "project.lock").read_text())["pid"] == os.getpid()
        assert Project.open(project.dir).readonly  # and it excludes the next writer
        r.close()
        assert not (project.dir / "project.lock").exists()
        # a lock file of another host is respected (it cannot be checked from here)
        (project.dir / "project.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
        s = Project.open(project.dir)
        assert s.readonly and "on host elsewhere" in s.notices[0]
    finally:
        _stop(holder)


def test_non_utf8_names_and_paths_from_the_command_line(tmp_path, tiny_model):
    """Linux argv and file names may hold bytes that are not UTF-8 (lone surrogates in Python)."""
    from sparsify_tui.cli import main

    bad_model = Path(os.fsdecode(bytes(tmp_path) + b"/m\xfe.onnx"))
    bad_model.write_bytes(tiny_model.read_bytes())
    p = Project.create(bad_model, dir=tmp_path / "a", name="bad\udcff name", description="d\udcfe")
    assert p.name == "bad\ufffd name" and p.description == "d\ufffd"
    e = add_perf(p, name="\udcff", settings={"k\udcff": "v\udcfe"})
    p.set_optimization({"name": "o\udcff", "x": "\udcfe"})
    p.close()
    q = Project.open(tmp_path / "a")
    assert q.name == "bad\ufffd name" and q.get_profile(e.id).name == "\ufffd"
    assert q.load_profile(e.id)["baseline_ms"] == 1.25
    assert q.optimizations[0]["x"] == "\udcfe"  # JSON keeps it (escaped)
    q.close()
    with pytest.raises(ProjectError, match="not valid UTF-8"):
        Project.create(bad_model, dir=tmp_path / "b", link=True)
    rc = main(["new", str(bad_model), "--dir", os.fsdecode(bytes(tmp_path) + b"/c\xfd")])
    assert rc == 0
    assert Project.open(os.fsdecode(bytes(tmp_path) + b"/c\xfd"), readonly=True).name == "m\ufffd"


def test_cli_on_a_project_locked_by_another_process(project):
    """End to end: a second writer (here `profile loss`) gets one clear error line naming the holder."""
    add_perf(project)
    project.close()
    holder = _start_holder(project.dir)
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        r = subprocess.run([PY, "-m", "sparsify_tui", "profile", "loss", str(project.dir)], capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 2, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and f"process {holder.pid}" in last and "Traceback" not in r.stderr
        # reading is fine meanwhile
        r = subprocess.run([PY, "-m", "sparsify_tui", "info", str(project.dir), "--json"], capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)
    finally:
        _stop(holder)
    assert len(Project.open(project.dir, readonly=True).profiles) == 1  # nothing was half-written


def test_project_toml_layout_is_hand_editable(project):
    add_perf(project)
    project.set_optimization({"name": "default", "sparsity": 0.85})
    text = (project.dir / "project.toml").read_text()
    assert text.startswith("schema_version = 1\n\n[project]\n")
    assert "\n[[profiles]]\nid = \"perf-1\"\n" in text and "\n[profiles.settings]\n" in text
    assert text.endswith('\n[[optimizations]]\nname = "default"\nfile = "optimizations/default.json"\n')
    from sparsify_tui.project import dump_toml
    import tomllib

    doc = {"profiles": [{"settings": {"a": {"b": 1}}}, {}], "optimizations": [{"name": "x"}], "k": 1}
    assert tomllib.loads(dump_toml(doc)) == doc


ENOSPC_SCRIPT = """
import json, os, subprocess, sys, tempfile
from sparsify_tui.project import Project
from sparsify_tui.errors import SparsifyError
model, mnt = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", mnt], check=True)
p = Project.create(model, dir=os.path.join(mnt, "p"), description="old")
p.add_profile("perf", "a", {"x": 1}, "onnxruntime", "1.18.1", {"fingerprint": "f"}, {"v": 1})
before = open(os.path.join(mnt, "p", "project.toml"), "rb").read()
with open(os.path.join(mnt, "filler"), "wb", buffering=0) as f:  # fill the disk
    try:
        while True:
            f.write(b"x" * 1024)
    except OSError:
        pass
out = {}
p.description = "new " * 20000
try:
    p.save()
    out["save"] = "saved?!"
except SparsifyError as exc:
    out["save"] = str(exc)
try:
    p.add_profile("perf", "b", {"x": 2}, "onnxruntime", "1.18.1", {"fingerprint": "f"}, {"v": "y" * 200000})
    out["add"] = "added?!"
except SparsifyError as exc:
    out["add"] = str(exc)
out["intact"] = open(os.path.join(mnt, "p", "project.toml"), "rb").read() == before
out["tmp_files"] = [f for f in os.listdir(os.path.join(mnt, "p")) + os.listdir(os.path.join(mnt, "p", "profiles"))
                    if f.endswith(".tmp")]
p.close()
q = Project.open(os.path.join(mnt, "p"), readonly=True)
out["reopened"] = [q.description, [e.name for e in q.profiles], q.profile_problems()]
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/unshare").exists(),
                    reason="needs root and unshare to mount a tiny private tmpfs")
def test_full_disk_keeps_old_content(tmp_path, tiny_model):
    """A real ENOSPC: a 128 KiB tmpfs mounted in a private mount namespace (gone when the child exits)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", PY, "-c", ENOSPC_SCRIPT,
                        str(tiny_model), str(mnt)], capture_output=True, text=True, timeout=120, env=env)
    if r.returncode != 0 and ("mount" in r.stderr or "unshare" in r.stderr):
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["save"].startswith("could not save") and "the disk is full" in out["save"]
    assert "previous version is kept" in out["save"]
    assert "the disk is full" in out["add"]
    assert out["intact"] and out["tmp_files"] == []
    assert out["reopened"] == ["old", ["a"], {}]
    assert os.listdir(mnt) == []  # the mount never leaked out of the child's namespace


def _dynamic_batch_model(path: Path) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")], "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 32, 32])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


@pytest.mark.deepsparse
def test_deepsparse_profile_does_not_make_the_project_stale(tmp_path, capsys):
    from conftest import deepsparse_available
    from sparsify_tui.cli import main

    if not deepsparse_available():
        pytest.skip("DeepSparse is not installed")
    p = Project.create(_dynamic_batch_model(tmp_path / "dyn.onnx"), dir=tmp_path / "p", input_shapes={"x": [1, 3, 32, 32]})
    p.close()
    before = fsutil.sha256_file(tmp_path / "p" / "model.onnx")
    rc = main(["profile", "perf", str(tmp_path / "p"), "--engine", "deepsparse", "--iterations", "2", "--warmup", "1",
               "--repeats", "1", "--levels", "0,0.9"])
    assert rc == 0, capsys.readouterr().err
    q = Project.open(tmp_path / "p", readonly=True)
    assert fsutil.sha256_file(tmp_path / "p" / "model.onnx") == before, "the engine rewrote the project's model"
    assert not q.model_changed and [q.is_stale(e) for e in q.profiles] == [False]
