"""The ``cluster status`` and ``sweep`` commands, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import free_port, import_ray_or_skip

INSTALL = "error: the cluster commands need Ray: pip install 'sparsify-tui[cluster]'"

# run the CLI with Ray made unimportable, whatever this interpreter has installed
NO_RAY = (
    "import sys\n"
    "class NoRay:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'ray' or name.startswith('ray.'):\n"
    "            raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n"
    "        return None\n"
    "sys.meta_path.insert(0, NoRay())\n"
    "from sparsify_tui.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def cli(*args, python=sys.executable, no_ray=False, timeout=300, env=None):
    cmd = [python, "-c", NO_RAY, *args] if no_ray else [python, "-m", "sparsify_tui", *args]
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.mark.parametrize("args", [["sweep", "some-project"], ["cluster", "status"],
                                  ["sweep", "p", "--address", "10.0.0.1:6379", "--json"]])
def test_without_ray_the_commands_say_how_to_install_it(args):
    out = cli(*args, no_ray=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == INSTALL
    assert out.stdout == ""


@pytest.mark.parametrize("flags, message", [
    (["--engines", "tensorrt"], "--engines: unknown engine 'tensorrt'"),
    (["--kind", "speed"], "--kind must be one of perf, loss, quant"),
    (["--batch-sizes", "1,zero"], "--batch-sizes must be a whole number"),
    (["--cores", "0"], "--cores must be at least 1"),
])
def test_bad_flag_values_are_one_line_errors(flags, message):
    out = cli("sweep", "p", *flags, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_head_fails_fast(tmp_path):
    import_ray_or_skip()
    port = free_port()
    out = cli("cluster", "status", "--address", f"127.0.0.1:{port}", timeout=60)
    assert out.returncode == 2
    assert f"nothing answers at the Ray head 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_sweep_needs_a_project(ray_cluster, tiny_model):
    out = cli("sweep", str(tiny_model), "--address", ray_cluster.address, timeout=60)
    assert out.returncode == 2 and "not a project directory" in out.stderr


def test_cluster_status_lists_the_servers(ray_cluster):
    import onnxruntime

    out = cli("cluster", "status", "--address", ray_cluster.address, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["kind"] == "cluster_status"
    servers = {s["name"]: s for s in doc["servers"]}
    assert {"alpha", "beta"} <= set(servers)
    for name in ("alpha", "beta"):
        s = servers[name]
        assert s["node_id"] == ray_cluster.node_id(name)
        assert s["address"] == "127.0.0.1"
        assert s["usable"] and s["error"] is None
        assert s["engines"]["onnxruntime"] == onnxruntime.__version__
        assert s["cores"] >= 1 and isinstance(s["isa"], list) and s["fingerprint"]

    text = cli("cluster", "status", "--address", ray_cluster.address)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[1].split()[:4] == ["SERVER", "NODE", "ADDRESS", "CORES"]
    assert any(ln.startswith("alpha ") and "onnxruntime" in ln and ln.rstrip().endswith("ok") for ln in lines)


def test_sweep_command_stores_profiles_and_prints_json(ray_cluster, make_project):
    project = make_project("cli-sweep")
    project.close()  # the command takes the project's write lock itself
    out = cli("sweep", str(project.dir), "--address", ray_cluster.address, "--servers", "beta",
              "--cores", "1", "--batch-sizes", "1", "--engines", "onnxruntime", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["kind"] == "sweep" and doc["counts"] == {"measured": 1, "cached": 0, "skipped": 0, "failed": 0}
    row = doc["measured"][0]
    assert (row["server"], row["cores"], row["batch_size"], row["engine"]) == ("beta", 1, 1, "onnxruntime")
    assert row["node_id"] == ray_cluster.node_id("beta")
    # progress per server went to stderr
    assert "beta: measuring batch 1, 1 core, onnxruntime" in out.stderr
    assert "beta: done batch 1, 1 core, onnxruntime" in out.stderr

    from sparsify_tui.project import Project

    reopened = Project.open(project.dir, readonly=True)
    (entry,) = reopened.profiles_of("perf")
    assert entry.id == row["profile_id"] and entry.settings["server"] == "beta"
    # the same command again measures nothing
    again = cli("sweep", str(project.dir), "--address", ray_cluster.address, "--servers", "beta",
                "--cores", "1", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"]["cached"] == 1


@pytest.mark.slow
def test_sweep_without_address_uses_a_local_ray_instance(tmp_path, tiny_model):
    """~15-25 s: starts (and stops) a whole local Ray instance in the subprocess."""
    import_ray_or_skip()
    from sparsify_tui.cluster.session import local_server_name
    from sparsify_tui.project import Project

    p = Project.create(tiny_model, dir=tmp_path / "local", name="local")
    p.close()
    out = cli("sweep", str(p.dir), "--cores", "1", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["address"] == "local"
    assert [s["name"] for s in doc["servers"]] == [local_server_name()]
    assert doc["counts"]["measured"] == 1


def test_ctrl_c_stops_the_sweep_and_keeps_finished_profiles(ray_cluster, make_project):
    import time

    from tests.conftest import interruptible_popen, send_sigint

    project = make_project("ctrl-c")
    project.close()
    proc = interruptible_popen(
        [sys.executable, "-m", "sparsify_tui", "sweep", str(project.dir), "--address", ray_cluster.address,
         "--servers", "beta", "--cores", "1,2", "--batch-sizes", "1,2,3", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    lines = []
    deadline = time.monotonic() + 240
    try:
        for line in proc.stderr:
            lines.append(line)
            if ": done batch" in line:
                send_sigint(proc)
                break
            assert time.monotonic() < deadline, "".join(lines)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines) + err
    assert proc.returncode == 130, err
    assert "error: interrupted; saved work is kept" in err
    assert "Traceback" not in err
    from sparsify_tui.project import Project

    kept = Project.open(project.dir, readonly=True).profiles_of("perf")
    assert 1 <= len(kept) < 6
