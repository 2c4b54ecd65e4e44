"""SIGKILL a process while it saves a project, hundreds of times: the project always opens, old or new.

Run as a script this file is the *saver server* the test drives::

    python tests/test_project_kill.py serve PROJECT_DIR

For every ``go`` line on stdin the server forks a child that opens the project
(taking the write lock over from the previous, killed child), prints
``ready <pid>``, then saves in a loop -- description, input shapes and a
profile (``add_profile``: profile JSON file, then project.toml with its
``.bak``) and an optimization (``set_optimization``: JSON file, then
project.toml) all carry the save number ``n`` -- printing ``saved <n>`` after each
completed save. The test kills the child with SIGKILL after a random delay,
sends ``reap``, reads everything the child printed, and checks the project:

* it opens (and takes over the dead child's lock: it is writable);
* its save number is the last one the child reported or the one after it
  (the save in progress when the kill came), and every part of project.toml
  agrees on that number;
* every profile it lists loads (no missing or torn profile file), with the
  save number it was written with; ``project.toml.bak`` parses too;
* no temporary file survives a writable open.

The fork server keeps each iteration cheap (no interpreter start-up), so the
test can afford 200+ real kills in a few seconds; ``benchmarks/bench_project.py``
runs the same loop with a larger count.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
PAD = "ünïcode \"quoted\" text\n" * 40  # makes each file a few KB so kills land inside writes too


# ---------------------------------------------------------------- the saver (child side)
def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one unbuffered write: safe across fork, atomic on a pipe


def _save_loop(d: str) -> None:  # pragma: no cover - runs in the forked child until SIGKILL
    from sparsify_tui.project import Project

    p = Project.open(d)
    if p.readonly:
        _say("error readonly " + "; ".join(p.notices))
        os._exit(1)
    n = int(p.description.split()[1])
    _say(f"ready {os.getpid()}")
    machine = {"cpu_model": "kill-test", "isa": ["avx2"], "cores": 2, "fingerprint": "kill"}
    while True:
        n += 1
        p.description = f"save {n}"
        p.input_shapes = {"x": [n + 1, 3, 8, 8]}
        if n % 2 == 0:  # even saves: optimizations/plan.json, then project.toml
            p.set_optimization({"name": "plan", "n": n, "none": None, "pad": PAD})
        else:  # odd saves: profiles/<id>.json, then project.toml (the profile of the same slot replaced)
            p.add_profile("perf", f"n{n}", {"slot": n % 3, "pad": PAD}, "onnxruntime", "1.18.1", machine,
                          {"n": n, "pad": PAD * 4})
        _say(f"saved {n}")


def serve(d: str) -> None:  # pragma: no cover - exercised through the test
    import fcntl  # noqa: F401  everything the child needs is imported once, before forking
    import json  # noqa: F401

    import tomli_w  # noqa: F401

    import sparsify_tui.paths  # noqa: F401
    import sparsify_tui.project  # noqa: F401

    child = None
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "go":
            child = os.fork()
            if child == 0:
                try:
                    _save_loop(d)
                except BaseException as exc:  # report, never fall back into the server loop
                    _say(f"error {type(exc).__name__}: {exc}".replace("\n", " "))
                os._exit(1)
        elif cmd == "reap":
            _, status = os.waitpid(child, 0)
            _say(f"reaped {status}")
        elif cmd == "quit":
            break


# ---------------------------------------------------------------- the driver (test side)
def _tiny_model(path: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(4 * 3 * 9, dtype=np.float32).reshape(4, 3, 3, 3) / 100, "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")], "kill",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def make_kill_project(base: Path) -> Path:
    from sparsify_tui.project import Project

    base.mkdir(parents=True, exist_ok=True)
    m = _tiny_model(base / "m.onnx")
    p = Project.create(m, dir=base / "proj", name="kill", description="save 0", input_shapes={"x": [1, 3, 8, 8]})
    p.close()
    return p.dir


def check_project(d: Path, n_done: int) -> dict:
    """Open the project after a kill and check it is one complete version; return facts about it."""
    import tomllib

    from sparsify_tui.project import Project

    torn = any(f.name.endswith(".tmp") for sub in (d, d / "profiles", d / "optimizations") if sub.is_dir()
               for f in sub.iterdir())
    p = Project.open(d)
    try:
        assert not p.readonly, p.notices  # the dead child's lock was taken over
        n = int(p.description.split()[1])
        assert n in (n_done, n_done + 1), (n, n_done)
        assert p.input_shapes == {"x": [n + 1, 3, 8, 8]}
        assert p.profile_problems() == {}
        ns = []
        for e in p.profiles:
            data = p.load_profile(e)
            assert data["n"] == int(e.name[1:]) and data["pad"] == PAD * 4
            assert e.settings == {"slot": data["n"] % 3, "pad": PAD}
            ns.append(data["n"])
        # profiles come from odd saves; none from the future; the one of save n is there when n is odd
        assert all(x % 2 == 1 and x <= n for x in ns), (ns, n)
        if n % 2 == 1:
            assert n in ns
        opt = p.get_optimization("plan")
        if n >= 2:
            assert opt is not None and opt["none"] is None and opt["pad"] == PAD
            # written just before the project.toml of its save: equal to n when n is even; when n is odd,
            # the previous even save's, or the next one's if the kill came between its two writes
            assert opt["n"] == n if n % 2 == 0 else opt["n"] in (n - 1, n + 1), (opt["n"], n)
        assert len(ns) <= 3 and len({x % 3 for x in ns}) == len(ns)
        bak = d / "project.toml.bak"
        n_bak = None
        if bak.exists():
            n_bak = int(tomllib.loads(bak.read_text())["project"]["description"].split()[1])
            assert n_bak <= n
        leftovers = [f.name for sub in (d, d / "profiles", d / "optimizations") if sub.is_dir()
                     for f in sub.iterdir() if f.name.endswith(".tmp")]
        assert leftovers == [], leftovers
        return {"n": n, "in_flight": n == n_done + 1, "bak": n_bak, "torn": torn}
    finally:
        p.close()


def run_kill_loop(d: Path, iterations: int, *, seed: int = 0) -> dict:
    """Kill a saving child ``iterations`` times; check the project after each kill. Returns counts.

    The kill moment adapts to the machine's speed (a loaded CI box saves slower): let the child
    complete 0 or 1 save (chosen at random), then wait a random fraction (0..1.2) of the
    duration of one save -- so kills land before, inside and just after saves alike.
    """
    rng = random.Random(seed)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve", str(d)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
    stats = {"kills": 0, "in_flight": 0, "torn": 0, "saves": 0, "final_n": 0}
    save_s = [0.02]  # recent durations of one save

    def read() -> list[str]:
        words = server.stdout.readline().split()
        assert words, "saver server died"
        if words[0] == "error":
            raise AssertionError(" ".join(words))
        return words

    try:
        from sparsify_tui.project import Project

        with Project.open(d, readonly=True) as p0:
            n_done = int(p0.description.split()[1])
        for _ in range(iterations):
            server.stdin.write("go\n")
            server.stdin.flush()
            words = read()
            assert words[0] == "ready", words
            pid = int(words[1])
            t_last = time.monotonic()
            for _ in range(rng.randint(0, 1)):
                words = read()
                assert words[0] == "saved", words
                n_done = int(words[1])
                stats["saves"] += 1
                now = time.monotonic()
                save_s = (save_s + [now - t_last])[-15:]
                t_last = now
            time.sleep(rng.uniform(0.0, 1.2 * sorted(save_s)[len(save_s) // 2]))
            os.kill(pid, signal.SIGKILL)
            server.stdin.write("reap\n")
            server.stdin.flush()
            while True:
                words = read()
                if words[0] == "saved":
                    n_done = int(words[1])
                    stats["saves"] += 1
                elif words[0] == "reaped":
                    assert os.WIFSIGNALED(int(words[1])) and os.WTERMSIG(int(words[1])) == signal.SIGKILL
                    break
                else:
                    raise AssertionError(" ".join(words))
            facts = check_project(d, n_done)
            n_done = facts["n"]
            stats["kills"] += 1
            stats["in_flight"] += facts["in_flight"]
            stats["torn"] += facts["torn"]
        stats["final_n"] = n_done
        stats["median_save_ms"] = round(1000 * sorted(save_s)[len(save_s) // 2], 2)
        server.stdin.write("quit\n")
        server.stdin.flush()
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdin.close()
        server.stdout.close()
    return stats


def test_sigkill_while_saving_never_loses_the_project(tmp_path):
    d = make_kill_project(tmp_path)
    stats = run_kill_loop(d, 200, seed=1234)
    print(stats)
    assert stats["kills"] == 200
    # the kills really interrupted saves: some left a half-written temporary file behind (cleaned up
    # by the next open), some came after a save reached the disk but before the child reported it
    assert stats["torn"] >= 5 and stats["in_flight"] >= 5
    assert stats["final_n"] >= 100


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        sys.path.insert(0, str(REPO))
        serve(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} serve PROJECT_DIR")
