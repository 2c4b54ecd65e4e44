#!/usr/bin/env python
"""Regenerate ``screenshots/*.svg`` (and ``*.png`` when ``rsvg-convert`` is installed).

Every screen of the app is captured on the demo project with approximated
profiles (deterministic data: fixed machine description and times), in a
temporary SPARSIFY_TUI_HOME so nothing of the user's is shown or touched.

The exception is the scaling view of a profile sweep (``compare-scaling*``):
it shows a real sweep of the demo model (``sparsify-tui sweep``, ONNX Runtime)
on a two-server Ray cluster started on 127.0.0.1 (servers ``alpha`` and
``beta``, two Ray nodes of this machine, swept one after the other so they do
not share the CPU). It needs Ray (the ``[cluster]`` extra) and is skipped
without it; its numbers change from run to run.

    python scripts/screenshots.py [--out screenshots] [--no-png] [--only NAME,NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXED_MACHINE = {
    "cpu_model": "Example CPU @ 2.0GHz", "arch": "x86_64", "physical_cores": 8, "logical_cores": 16,
    "usable_cores": 8, "isa": ["avx2", "avx512", "avx512_vnni"],
    "engines": {"onnxruntime": "1.18.1", "deepsparse": "1.8.0"}, "fingerprint": "000000000000",
}
FIXED_TIME = "2026-01-01T12:00:00Z"
ONLY: set[str] = set()  # --only: the screenshots to write (empty: all)


def build_demo(directory: Path):
    """The demo project with approximated perf (from FLOPs, 8 cores) and loss profiles."""
    from sparsify_tui.analysis import analyze
    from sparsify_tui.analysis.demo import build_demo_model
    from sparsify_tui.profiles.loss import approx_loss_profile
    from sparsify_tui.profiles.perf import approx_perf_profile
    from sparsify_tui.project import Project
    from sparsify_tui.tui.launch import DEMO_DESCRIPTION

    model = build_demo_model(directory.parent / "demo-src.onnx")
    project = Project.create(model, dir=directory, name="demo", description=DEMO_DESCRIPTION)
    graph = analyze(project.model_path)
    perf = approx_perf_profile(graph, cores=8)
    perf.update(machine=dict(FIXED_MACHINE), created=FIXED_TIME, model_path="model.onnx")
    project.add_profile("perf", "approximated b1", {"approximate": True, "batch_size": 1}, perf["engine"], "",
                        dict(FIXED_MACHINE), perf)
    loss = approx_loss_profile(graph)
    project.add_profile("loss", "approx", {"method": "approx"}, "approx", "", dict(FIXED_MACHINE), loss)
    for entry in project.profiles:
        entry.created = FIXED_TIME
    project.save()
    return project


async def capture(out: Path) -> list[Path]:
    from sparsify_tui.tui.app import SparsifyApp

    written: list[Path] = []
    projects = Path(os.environ["SPARSIFY_TUI_HOME"]) / "projects"
    scaling_only = bool(ONLY) and all(n.startswith("compare-scaling") for n in ONLY)
    project = None if scaling_only else build_demo(projects / "demo")

    async def settle(app, pilot):
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()

    def save(app, name: str) -> None:
        if ONLY and name not in ONLY:
            return
        app.save_screenshot(f"{name}.svg", path=str(out))
        written.append(out / f"{name}.svg")

    if scaling_only:
        await capture_scaling(projects, save)
        return written

    # home (the demo project is in the recent list)
    app = SparsifyApp(machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        save(app, "home")
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#model-path").value = str(project.model_path)
        await pilot.press("enter")
        await settle(app, pilot)
        app.screen.query_one("#name").value = "my model"
        app.screen.query_one("#directory").value = "~/sparsify/projects/my-model"
        await pilot.pause()
        save(app, "setup")

    app = SparsifyApp(project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        save(app, "overview")
        await pilot.press("p")  # the new performance profile dialog
        await pilot.pause(0.3)
        save(app, "new-profile-dialog")
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("l")
        await settle(app, pilot)
        await pilot.press("down", "down")
        await pilot.pause(0.3)
        save(app, "layers")
        await pilot.press("t", "t", "t", "t", "t", "t", "b", "b")  # 90 % sparsity, perf sensitivity bars
        await pilot.press("s", "s", "s", "s", "s", "s", "s")  # sort by perf sensitivity, descending
        await pilot.pause(0.3)
        save(app, "layers-sparsity")
        await pilot.press("g")
        await pilot.pause()
        save(app, "layers-by-op-type")
        await pilot.press("g", "f1")
        await pilot.pause()
        save(app, "help")
        await pilot.press("escape", "ctrl+p")
        await pilot.pause(0.3)
        save(app, "command-palette")

    app = SparsifyApp(project, machine=FIXED_MACHINE, initial="layers")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        save(app, "layers-80x24")
    project.close()
    written += await capture_plan_screens(project.dir, save)
    if not ONLY or any(n.startswith("compare-scaling") for n in ONLY):
        await capture_scaling(projects, save)
    return written


def sweep_demo(directory: Path) -> bool:
    """A demo project swept on servers alpha and beta of a local two-node Ray cluster (False without Ray)."""
    import importlib.util

    from sparsify_tui.analysis.demo import build_demo_model
    from sparsify_tui.cluster.local import local_cluster
    from sparsify_tui.project import Project

    if importlib.util.find_spec("ray") is None:
        print("Ray is not installed (pip install 'sparsify-tui[cluster]'): no compare-scaling screenshots",
              file=sys.stderr)
        return False
    directory.parent.mkdir(parents=True, exist_ok=True)
    model = build_demo_model(directory.parent / "sweep-src.onnx")
    Project.create(model, dir=directory, name="demo").close()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    with local_cluster(directory.parent, ("alpha", "beta"), env=env, timeout_s=180) as address:
        for server in ("alpha", "beta"):  # one server after the other: they share this machine's cores
            subprocess.run([sys.executable, "-m", "sparsify_tui", "sweep", str(directory), "--address", address,
                            "--servers", server, "--batch-sizes", "1,2,4,8", "--cores", "1,2",
                            "--engines", "onnxruntime", "--levels", "0", "--iterations", "20", "--warmup", "5",
                            "--repeats", "3", "--json"], check=True, stdout=subprocess.DEVNULL, env=env)
    return True


async def capture_scaling(projects: Path, save) -> None:
    """The compare screen's scaling view of a real sweep, at 120x36 and 80x24, batch size on the x axis."""
    from sparsify_tui.project import Project
    from sparsify_tui.tui.app import SparsifyApp

    directory = projects / "sweep-demo"
    if not sweep_demo(directory):
        return
    for size, suffix, keys in (((120, 36), "", ("c",)), ((80, 24), "-80x24", ("c",))):
        app = SparsifyApp(Project.open(directory), machine=FIXED_MACHINE)
        async with app.run_test(size=size) as pilot:
            for _ in range(3):
                await app.workers.wait_for_complete()
                await pilot.pause()
            await pilot.press("f3")
            for _ in range(400):
                if type(app.screen).__name__ == "CompareScreen":
                    break
                await pilot.pause(0.05)
            await pilot.press("g", *keys)
            await pilot.pause(0.3)
            save(app, "compare-scaling" + suffix)


async def capture_plan_screens(project_dir: Path, save) -> list[Path]:
    """The plan screens (optimizer, training summary, learning rate, compare, export, glossary)."""
    from sparsify_tui.analysis import analyze
    from sparsify_tui.profiles.perf import approx_perf_profile
    from sparsify_tui.project import Project
    from sparsify_tui.tui.app import SparsifyApp

    project = Project.open(project_dir)
    perf = approx_perf_profile(analyze(project.model_path), cores=4)
    perf.update(machine=dict(FIXED_MACHINE), created=FIXED_TIME, model_path="model.onnx")
    entry = project.add_profile("perf", "approximated 4 cores", {"approximate": True, "cores": 4},
                                perf["engine"], "", dict(FIXED_MACHINE), perf)
    entry.created = "2026-01-02T12:00:00Z"
    project.save()

    async def wait(app, pilot, ready):
        for _ in range(400):
            if ready(app.screen):
                break
            await pilot.pause(0.05)
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()

    if not ONLY or any(n.startswith("deploy") for n in ONLY):
        # a real deployment search of the demo model on this machine (a few rounds), for the Deploy screen
        from sparsify_tui.actions.deploy import run_deploy

        run_deploy(project, repeats=3)
    project.close()
    for size, suffix in (((120, 36), ""), ((80, 24), "-80x24")):
        project = Project.open(project_dir)  # the App closes its project when it exits
        app = SparsifyApp(project, machine=FIXED_MACHINE)
        async with app.run_test(size=size) as pilot:
            await wait(app, pilot, lambda s: True)
            await pilot.press("f2")
            await wait(app, pilot, lambda s: getattr(s, "ready", False))
            if suffix:
                save(app, "optimizer" + suffix)
                await pilot.press("f6")
                await wait(app, pilot, lambda s: type(s).__name__ == "DeployScreen")
                save(app, "deploy" + suffix)
                continue
            await pilot.press("right_square_bracket", "tab", "down", "down")
            await pilot.pause(0.8)
            save(app, "optimizer")
            await pilot.press("2")
            await pilot.pause(0.3)
            save(app, "optimizer-learning-rate")
            await pilot.press("3")
            await pilot.pause(0.3)
            save(app, "optimizer-training-summary")
            await pilot.press("f4")
            await wait(app, pilot, lambda s: bool(getattr(s, "recipe_text", "")))
            app.screen.query_one("#export-path").value = "recipe.yaml"
            await pilot.pause(0.3)
            save(app, "export")
            await pilot.press("f3")
            await wait(app, pilot, lambda s: type(s).__name__ == "CompareScreen")
            save(app, "compare")
            await pilot.press("f5", *"speedup")
            await pilot.pause(0.3)
            save(app, "glossary")
            await pilot.press("escape", "f6")
            await wait(app, pilot, lambda s: type(s).__name__ == "DeployScreen")
            save(app, "deploy")
    project.close()
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "screenshots"))
    parser.add_argument("--no-png", action="store_true")
    parser.add_argument("--only", default="", help="write only these screenshots (names without .svg, commas)")
    args = parser.parse_args(argv)
    ONLY.update(n.strip() for n in args.only.split(",") if n.strip())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # a fixed scratch directory, so the paths shown in the screenshots do not change between runs
    tmp = Path(tempfile.gettempdir()) / "sparsify-screenshots"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        os.environ["SPARSIFY_TUI_HOME"] = str(tmp)
        os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
        svgs = asyncio.run(capture(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rsvg = shutil.which("rsvg-convert")
    for svg in svgs:
        print(svg.relative_to(out.parent) if out.parent in svg.parents else svg)
        if rsvg and not args.no_png:
            png = svg.with_suffix(".png")
            subprocess.run([rsvg, str(svg), "-o", str(png)], check=True)
            print(png.relative_to(out.parent) if out.parent in png.parents else png)
    if not rsvg and not args.no_png:
        print("rsvg-convert not found (apt-get install librsvg2-bin): SVG only", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
