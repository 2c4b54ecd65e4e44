"""The command line as a new user meets it: real ``sparsify-tui`` runs in a subprocess, real models.

What the human output shows,
that ``--json`` stays one complete document, and that a locked project fails
before any measurement starts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1")
    return subprocess.run([sys.executable, "-m", "sparsify_tui", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_tty(*args: str, columns: int = 80, timeout: float = 120) -> str:
    """Run the CLI with stdout on a pseudo-terminal (what a user sees); returns what it printed there."""
    import pty
    import threading

    master, slave = pty.openpty()
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1", COLUMNS=str(columns))
    chunks: list[bytes] = []

    def reader() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "sparsify_tui", *map(str, args)], stdout=slave,
                              stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
    finally:
        os.close(slave)
    t.join(timeout=10)
    os.close(master)
    assert proc.returncode == 0, proc.stderr
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def table_rows(stdout: str, title: str) -> tuple[str, list[str]]:
    """The header line and the data rows of the layer table that follows ``title``."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    header = lines[start + 1]
    assert set(lines[start + 2].replace(" ", "")) == {"-"}
    rows = []
    for line in lines[start + 3:]:
        if not re.match(r"^ *\d+  \S", line):  # a row: the right-aligned depth, two spaces, the name
            break
        rows.append(line)
    return header, rows


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory) -> Path:
    from sparsify_tui.analysis.demo import build_demo_model

    d = tmp_path_factory.mktemp("polish")
    model = d / "demo.onnx"
    build_demo_model(model)
    p = run("new", model, "--dir", d / "proj")
    assert p.returncode == 0, p.stderr
    return d / "proj"


# ---------------------------------------------------------------- info
def test_info_hides_constant_producers_and_says_how_many(corpus):
    model = corpus.path("resnet50")
    human = run("info", model)
    assert human.returncode == 0, human.stderr
    full = run("info", model, "--json")
    assert full.returncode == 0, full.stderr
    doc = json.loads(full.stdout)  # exactly one document, nothing else on stdout
    layers = doc["layers"]
    constant = [la for la in layers if la.get("constant") or la["op_type"] in ("Constant", "ConstantOfShape")]
    assert len(constant) >= 200  # the light ResNet-50 makes its weights with ConstantOfShape
    assert len(layers) == 415  # --json keeps every layer, constants included
    assert any(la["op_type"] == "ConstantOfShape" for la in layers)

    header, rows = table_rows(human.stdout, "Compute layers")
    assert header.split()[:3] == ["Depth", "Name", "Op"]
    assert not any(r.split()[2] in ("Constant", "ConstantOfShape") for r in rows)
    assert rows[0].split()[2] == "Conv"  # the first row a user sees is the stem convolution
    assert len(rows) == len(layers) - len(constant)  # 176 compute layers: all fit under the 200-row limit
    assert f"{len(constant)} constant layers (Constant, ConstantOfShape, ...) hidden" in human.stdout
    assert "--all lists them" in human.stdout
    assert human.stderr == f"next: sparsify-tui new {model}   (a project to profile it and plan its sparsification)\n"
    assert full.stderr == ""  # --json: the document and nothing else


def test_info_all_lists_constants_and_table_fits_80_columns(corpus):
    model = corpus.path("resnet50")
    everything = run("info", model, "--all")
    assert everything.returncode == 0, everything.stderr
    _, rows = table_rows(everything.stdout, "Layers")
    assert len(rows) == 415
    assert rows[0].split()[2] == "ConstantOfShape"
    assert "constant layers" not in everything.stdout

    narrow = run_tty("info", model, columns=80)
    model_part = narrow.split("\nMachine")[0]  # totals, notes and the layer table
    assert max(len(line) for line in model_part.splitlines()) <= 80
    assert "(Input, Attributes, Weight hidden at 80 columns" in narrow
    _, narrow_rows = table_rows(narrow, "Compute layers")
    assert len(narrow_rows) == 176
    for text in (run_tty("info", model, columns=220), run("info", model).stdout):  # wide terminal; a pipe
        header, rows = table_rows(text, "Compute layers")
        assert {"Input", "Weight", "Attributes"} <= set(header.split())
        assert "k=7,7 s=2,2 p=3,3,3,3" in rows[0]


def test_info_long_names_end_in_ellipsis_and_keep_their_end(corpus):
    _, rows = table_rows(run_tty("info", corpus.path("minilm"), columns=80), "Compute layers")
    names = [r.split()[1] for r in rows]
    cut = [n for n in names if "\u2026" in n]
    assert cut, "minilm's long /model/... names should be shortened"
    assert all(len(n) <= 28 for n in cut)
    assert any(n.endswith("/MatMul") for n in cut)  # the specific end of the name survives
    assert not any(r.split()[2] in ("Constant", "ConstantOfShape") for r in rows)


# ---------------------------------------------------------------- locked projects
@pytest.mark.parametrize("argv,title", [
    (["profile", "perf", "{p}", "--force", "--levels", "0,0.9", "--iterations", "2", "--warmup", "0",
      "--repeats", "1"], "profile perf ["),
    (["profile", "loss", "{p}", "--force"], "profile loss"),
    (["profile", "quant", "{p}", "--force", "--samples", "1"], "profile quant ["),
])
def test_locked_project_fails_before_measuring(demo_project, argv, title):
    from sparsify_tui.project import Project

    holder = Project.open(demo_project)
    try:
        assert not holder.readonly
        before = sorted(p.name for p in (demo_project / "profiles").glob("*.json")) \
            if (demo_project / "profiles").exists() else []
        p = run(*[a.format(p=demo_project) for a in argv])
        after = sorted(p.name for p in (demo_project / "profiles").glob("*.json")) \
            if (demo_project / "profiles").exists() else []
    finally:
        holder.close()
    assert p.returncode == 2, (p.stdout, p.stderr)
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "read-only" in errors[0] and str(demo_project) in errors[0]
    assert title not in p.stderr  # no progress bar: nothing was measured
    assert "Traceback" not in p.stderr
    assert p.stdout == ""
    assert after == before


# ---------------------------------------------------------------- human output: what next, --json stays clean
def test_perf_and_loss_say_what_to_run_next_and_json_stays_one_document(demo_project):
    perf = ["profile", "perf", demo_project, "--levels", "0,0.9", "--iterations", "2", "--warmup", "0",
            "--repeats", "1", "--engine", "onnxruntime"]
    human = run(*perf)
    assert human.returncode == 0, human.stderr
    assert f"next: sparsify-tui profile loss {demo_project}" in human.stderr
    assert f"sparsify-tui optimize {demo_project}" in human.stderr
    assert "next:" not in human.stdout  # hints are notes: stderr
    lines = human.stdout.splitlines()
    batch = next(line for line in lines if line.startswith("Batch size:"))
    assert "CPU" not in batch and len(batch) <= 80
    assert any(line.startswith("CPU:") for line in lines)
    assert "Engine:           onnxruntime" in human.stdout

    on_tty = run_tty(*perf, columns=80)  # cached: what a user sees in an 80-column terminal
    body = on_tty.split("Layer Timings")[1]
    assert max(len(line) for line in body.splitlines()) <= 80
    assert "Group column in --json" in on_tty.splitlines()[[i for i, ln in enumerate(on_tty.splitlines())
                                                             if ln.startswith("Layer Timings")][0]]

    again = run(*perf, "--json")  # cached now: the same settings are reused
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["engine"] == "onnxruntime" and doc["profile_id"]
    assert "reused cached profile" in again.stderr and "next:" not in again.stderr

    loss = run("profile", "loss", demo_project)
    assert loss.returncode == 0, loss.stderr
    assert f"next: sparsify-tui optimize {demo_project}" in loss.stderr
    table = loss.stdout[loss.stdout.index("Rank"):].splitlines()
    assert table[0].split() == ["Rank", "Layer", "Op", "Sensitivity", "@0.9"]
    assert all(line == line.rstrip() for line in table)  # no empty column, no trailing blanks
    assert len([line for line in table[2:] if line.strip()]) == 12  # the demo's 12 prunable layers


@pytest.mark.parametrize("argv", [["profile", "perf", "{m}", "--engine", "onnxruntime"], ["benchmark", "{m}"]])
def test_dynamic_input_error_names_the_model_and_the_flag_to_add(corpus, argv):
    model = corpus.path("yolov8n")  # images: [batch, 3, height, width]
    p = run(*[a.format(m=model) for a in argv])
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stdout == ""
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in p.stderr
    assert str(model) in errors[0] and "dynamic dimension 'height'" in errors[0]
    info = json.loads(run("info", model, "--json").stdout)
    shape = next(t for t in info["model"]["inputs"] if t["name"] == "images")["shape"]
    assert f"--input-shape images={','.join(map(str, shape))}" in errors[0]
    # the suggested flag works: the same command with it gets past the shape check
    fixed = run("benchmark", model, "--input-shape", f"images={','.join(map(str, shape))}", "--iterations", "1",
                "--warmup", "0", "--repeats", "1", "--engine", "onnxruntime", "--json") if argv[0] == "benchmark" \
        else None
    if fixed is not None:
        assert fixed.returncode == 0, fixed.stderr
        assert json.loads(fixed.stdout)["results"][0]["batch_size"] == 1


def test_compare_given_an_onnx_model_says_it_wants_profiles(demo_project):
    model = demo_project / "model.onnx"
    p = run("compare", model, f"{demo_project}:nosuch")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        f"error: {model} is an ONNX model, not a profile: compare takes two perf profile JSON files or "
        "PROJECT_DIR:PROFILE_ID (measure one with 'sparsify-tui profile perf')"]


def test_benchmark_of_one_model_has_no_empty_speedup_column(demo_project):
    p = run("benchmark", demo_project / "model.onnx", "--engine", "onnxruntime", "--iterations", "1",
            "--warmup", "0", "--repeats", "1")
    assert p.returncode == 0, p.stderr
    header = p.stdout.splitlines()[0]
    assert header.split()[:2] == ["Model", "Engine"] and "Speedup" not in header
    row = p.stdout.splitlines()[2].split()
    assert row[0] == "model.onnx" and row[1:3] == ["onnxruntime", __import__("onnxruntime").__version__]
    assert float(row[5]) > 0  # median ms


def test_loss_table_tells_long_ids_apart(corpus, tmp_path):
    """minilm's ids share '/model/model.0/auto_model/encoder/': cut from the front they were all alike."""
    model = corpus.path("minilm")
    shapes = [f"--input-shape={k}={','.join(map(str, v))}" for k, v in corpus.input_shapes("minilm").items()]
    p = run("profile", "loss", model, *shapes)
    assert p.returncode == 0, p.stderr
    assert "(layer ids below start with /model/model.0/auto_model/encoder/)" in p.stdout
    table = p.stdout[p.stdout.index("Rank"):].splitlines()[2:]
    names = [line.split()[1] for line in table if line.strip()]
    assert len(names) == 18 and len(set(names)) == 18  # 18 prunable MatMuls, 18 different names
    assert all(len(n) <= 40 for n in names) and any(n.startswith("layer.2/") for n in names)


def test_quant_summary_lines_fit_80_columns(demo_project):
    p = run("profile", "quant", demo_project, "--samples", "1")
    assert p.returncode == 0, p.stderr
    head = p.stdout.split("\n\n")[0].splitlines()
    assert head[1].startswith("Whole model: ONNX Runtime static quantization (QDQ), output change ")
    assert " ms -> int8 " in head[2] and head[2].rstrip().endswith("x")
    assert max(len(line) for line in head) <= 80
    assert f"next: sparsify-tui optimize {demo_project} --quantize" in p.stderr


def test_optimize_on_a_locked_project_fails_with_the_reason(demo_project):
    from sparsify_tui.project import Project

    holder = Project.open(demo_project)
    try:
        p = run("optimize", demo_project, "--sparsity", "0.7")
    finally:
        holder.close()
    assert p.returncode == 2 and p.stdout == ""
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "read-only" in errors[0] and f"process {os.getpid()}" in errors[0]
    assert p.stderr.startswith("note: opened read-only")


def test_new_on_a_dynamic_model_says_which_input_shape_to_give(corpus, tmp_path):
    model = corpus.path("yolov8n")
    p = run("new", model, "--dir", tmp_path / "y", "--link")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(tmp_path / "y")
    assert "note: the model has dynamic input dimensions" in p.stderr
    nxt = [line for line in p.stderr.splitlines() if line.startswith("next:")]
    assert nxt == [f"next: sparsify-tui profile perf {tmp_path / 'y'} --input-shape images=1,3,224,224   "
                   f"(or: sparsify-tui open {tmp_path / 'y'})"]
    # with the shape stored, no note
    q = run("new", model, "--dir", tmp_path / "y2", "--link", "--input-shape", "images=1,3,320,320")
    assert q.returncode == 0, q.stderr
    assert "dynamic input" not in q.stderr and "--input-shape" not in q.stderr
