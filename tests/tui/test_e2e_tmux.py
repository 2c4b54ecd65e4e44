"""End to end: the real ``sparsify-tui --demo`` in tmux, driven by send-keys, read by capture-pane."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

DEMO_LAYERS = ("stem.conv", "layer1.0.conv1", "layer1.1.conv2", "layer2.0.conv1")
PRUNABLE_ONLY = ("layer2.0.downsample", "layer3.0.conv2", "layer3.0.downsample")


class Tmux:
    def __init__(self, socket: str, session: str) -> None:
        self.base = ["tmux", "-L", socket]
        self.session = session

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.base + list(args), capture_output=True, text=True, timeout=30)

    def capture(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session).stdout

    def send(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def alive(self) -> bool:
        return self.run("has-session", "-t", self.session).returncode == 0

    def wait_for(self, *texts: str, timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.capture()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{texts} not on screen after {timeout:g}s; screen was:\n{screen}")


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is needed for the end-to-end test")
        pytest.skip("tmux is not installed")
    t = Tmux(f"sparsify-e2e-{os.getpid()}", "demo")
    yield t
    t.run("kill-session", "-t", t.session)
    t.run("kill-server")


def test_demo_in_tmux_reaches_layer_summaries_by_keys(tmp_path, tmux):
    home = tmp_path / "home"
    env = f"SPARSIFY_TUI_HOME={shlex.quote(str(home))} NM_DISABLE_ANALYTICS=1"
    # COLUMNS/LINES may leak into the tmux server from the test runner: the app must see the pane size
    cmd = f"env -u COLUMNS -u LINES {env} {shlex.quote(sys.executable)} -m sparsify_tui --demo"
    t0 = time.monotonic()
    r = tmux.run("new-session", "-d", "-s", tmux.session, "-x", "120", "-y", "40", cmd)
    assert r.returncode == 0, r.stderr
    # the demo project is created on first use and opens on its overview
    screen = tmux.wait_for("demo — overview", "Profiles")
    assert "Layers" in screen and "Params" in screen
    assert (home / "data" / "demo" / "project.toml").exists()
    print(f"overview after {time.monotonic() - t0:.1f}s")
    # l: layer summaries, with the demo model's layer names in Layer Depth order
    tmux.send("l")
    screen = tmux.wait_for("layer summaries", *DEMO_LAYERS)
    assert screen.index("stem.conv") < screen.index("layer1.0.conv1") < screen.index("layer2.0.conv1")
    # p: prunable layers only, so the later convolutions come into view
    tmux.send("p")
    screen = tmux.wait_for(*PRUNABLE_ONLY)
    assert "layer1.0.relu" not in screen and "stem.conv.relu" not in screen
    print(f"layers checked after {time.monotonic() - t0:.1f}s")
    # q quits (and cancels the background profiles)
    tmux.send("q")
    end = time.monotonic() + 30
    asked = False
    while tmux.alive() and time.monotonic() < end:
        if not asked and "Quit while" in tmux.capture():  # the demo's profile still runs: q asks (#19)
            asked = True
            tmux.send("y")
        time.sleep(0.2)
    assert not tmux.alive(), "the app did not quit on q"
    print(f"quit after {time.monotonic() - t0:.1f}s")
