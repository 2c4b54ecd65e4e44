"""Helpers and fixtures for the reliability suite: the real CLI in a subprocess, small handcrafted models, projects.

Every case asserts what the user sees: ``error: <one sentence>`` on stderr,
exit status 2 and no traceback (or an in-app message), and that no data was
lost (project.toml / its .bak / finished profiles unchanged).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["NM_DISABLE_ANALYTICS"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def run_cli(*args, env: dict | None = None, timeout: float = 120, cwd=None, pre: str | None = None,
            **popen) -> subprocess.CompletedProcess:
    """Run ``sparsify-tui ARGS`` in a fresh interpreter (``pre``: Python run before main, e.g. to hide a module)."""
    code = (pre or "") + "\nimport sys\nfrom sparsify_tui.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([PY, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env(), cwd=cwd, **popen)


def assert_user_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, exactly one ``error: ...`` line on stderr, no traceback; returns that line."""
    err = res.stderr
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2, f"exit {res.returncode}\nstdout: {res.stdout[-2000:]}\nstderr: {err[-3000:]}"
    assert len(lines) == 1, err
    line = lines[0]
    assert len(line) > len("error: ") + 10
    for n in needles:
        assert n.lower() in line.lower(), f"{n!r} not in {line!r}"
    return line


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot_dir(d: Path) -> dict[str, str]:
    """Every file under d (relative path -> sha256): proves nothing was lost or changed."""
    return {str(p.relative_to(d)): sha(p) for p in sorted(Path(d).rglob("*")) if p.is_file()
            and not p.name.endswith(".lock") and p.name != ".lock"}


# ---------------------------------------------------------------- small models
RNG = np.random.default_rng(0)


def vi(name, shape, dtype=T.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def save_model(path: Path, nodes, inputs, outputs, inits=(), opset=13, ir=8, domains=(), check=False) -> Path:
    g = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(inits))
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    m = helper.make_model(g, opset_imports=ops)
    m.ir_version = ir
    if check:
        onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return Path(path)


def tiny_conv(path: Path) -> Path:
    """x[1,3,8,8] -> Conv(4x3x3x3) -> Relu -> y."""
    w = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    return save_model(path, [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                             helper.make_node("Relu", ["c"], ["y"], name="relu")],
                      [vi("x", [1, 3, 8, 8])], [vi("y", [1, 4, 8, 8])], [w], check=True)


@pytest.fixture
def model(tmp_path) -> Path:
    return tiny_conv(tmp_path / "tiny.onnx")


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    from sparsify_tui.analysis.demo import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo") / "demo.onnx")


@pytest.fixture
def project(tmp_path, model) -> Path:
    """A fresh project on the tiny model, created through the real CLI code (in-process: fast)."""
    from sparsify_tui.project import Project

    p = Project.create(model, dir=tmp_path / "proj")
    p.close()
    return tmp_path / "proj"


@pytest.fixture
def demo_project(tmp_path, demo_model) -> Path:
    from sparsify_tui.project import Project

    p = Project.create(demo_model, dir=tmp_path / "demoproj")
    p.close()
    return tmp_path / "demoproj"
