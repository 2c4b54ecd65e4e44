"""Grouping of sweep profiles for the TUI (pure functions; no Ray needed for the synthetic case)."""

from __future__ import annotations

import sys

import pytest

from sparsify_tui.actions.sweeps import group_sweep_profiles, scaling_series, sweep_rows


def test_groups_and_scaling_series_of_a_real_sweep(swept):
    project, report, _ = swept
    groups = group_sweep_profiles(project)
    assert list(groups) == ["alpha", "beta"]
    for server in ("alpha", "beta"):
        assert list(groups[server]) == [1, 4]
        for batch in (1, 4):
            assert list(groups[server][batch]) == [1, 2]
            for cores in (1, 2):
                (row,) = groups[server][batch][cores]
                assert row["engine"] == "onnxruntime" and row["problem"] is None
                assert row["items_per_second"] > 0
    measured = {(r["server"], r["batch_size"], r["cores"]): r["items_per_second"] for r in report.measured}
    series = scaling_series(project)
    assert list(series) == ["alpha", "beta"]
    for server, points in series.items():
        assert [(c, b) for c, b, _ in points] == [(1, 1), (2, 1), (1, 4), (2, 4)]
        for cores, batch, ips in points:
            assert ips == pytest.approx(measured[(server, batch, cores)])
    assert scaling_series(project, engine="deepsparse") == {}


def _doc(ips):
    return {"kind": "perf", "items_per_second": ips, "baseline_ms": 1000.0 / ips, "layers": []}


def test_several_engines_stale_and_unreadable_profiles(tmp_path):
    """Hand-made entries (the grouping logic only reads settings and two numbers)."""
    from sparsify_tui.project import Project

    from .conftest import build_tiny_model

    model = build_tiny_model(tmp_path / "m.onnx")
    p = Project.create(model, dir=tmp_path / "p", name="p")
    machine = {"fingerprint": "abc", "isa": ["avx2"], "cpu_model": "x"}

    def add(server, engine, batch, cores, ips, **extra):
        settings = {"sweep": True, "server": server, "engine": engine, "batch_size": batch, "cores": cores, **extra}
        return p.add_profile("perf", None, settings, engine, "1.0", machine, _doc(ips))

    add("s1", "onnxruntime", 1, 1, 100.0)
    add("s1", "onnxruntime", 16, 1, 300.0)
    add("s1", "deepsparse", 1, 2, 250.0)
    add("s2", "onnxruntime", 1, 4, 400.0, measured_on="s1")
    broken = add("s2", "onnxruntime", 1, 8, 800.0)
    p.add_profile("perf", "local", {"engine": "onnxruntime", "batch_size": 1, "cores": 1}, "onnxruntime", "1.0",
                  machine, _doc(50.0))  # not a sweep profile: ignored
    (p.dir / broken.file).write_text("{ truncated")

    rows = sweep_rows(p)
    assert len(rows) == 5
    bad = [r for r in rows if r["problem"]]
    assert [r["id"] for r in bad] == [broken.id]
    moved = next(r for r in rows if r["cores"] == 4)
    assert (moved["server"], moved["measured_on"]) == ("s2", "s1")

    series = scaling_series(p)
    assert series == {
        "s1 · deepsparse": [(2, 1, 250.0)],
        "s1 · onnxruntime": [(1, 1, 100.0), (1, 16, 300.0)],
        "s2 · onnxruntime": [(4, 1, 400.0)],  # the unreadable profile is left out
    }
    assert scaling_series(p, engine="onnxruntime") == {"s1": [(1, 1, 100.0), (1, 16, 300.0)],
                                                       "s2": [(4, 1, 400.0)]}
    groups = group_sweep_profiles(p)
    assert list(groups["s1"]) == [1, 16] and list(groups["s1"][1]) == [1, 2]
    assert [r["engine"] for r in groups["s1"][1][1]] == ["onnxruntime"]
    # a changed model makes every profile stale: left out unless asked for
    p.model_sha256 = "0" * 64
    assert sweep_rows(p) == [] and scaling_series(p) == {}
    assert len(sweep_rows(p, include_stale=True)) == 5
    p.close()


def test_results_module_does_not_import_ray_or_textual():
    import subprocess

    code = ("import sys, sparsify_tui.actions.sweeps, sparsify_tui.cluster\n"
            "print('ray' in sys.modules, 'textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
