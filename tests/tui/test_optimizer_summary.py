"""Summary Type "optimized" in the layer summaries: current timing, FLOPs and params under the plan."""

from __future__ import annotations

from textual.widgets import DataTable, Static

from sparsify_tui.optim.estimate import Evaluator
from sparsify_tui.optim.optimization import default_optimization
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.data import build_model_data, fmt_count, fmt_ms
from sparsify_tui.tui.widgets.optim_summary import optimized_summary
from tests.tui.conftest import FIXED_MACHINE, settle, widget_text


def test_optimized_summary_matches_the_evaluator(demo_project):
    from sparsify_tui.analysis import analyze

    graph = analyze(demo_project.model_path)
    perf = demo_project.load_profile(demo_project.profiles_of("perf")[0])
    loss = demo_project.load_profile(demo_project.profiles_of("loss")[0])
    opt, est = Evaluator(graph, perf, loss).run(default_optimization(graph, target_sparsity=0.8))
    s = optimized_summary(build_model_data(graph, perf, loss).rows, opt.to_dict(), perf["baseline_ms"])
    assert abs(s.speedup - est.estimated_speedup) < 1e-6 * est.estimated_speedup
    assert s.current_params == est.params_after
    assert abs(s.current_flops - est.flops_after) <= len(graph.layers)  # per-layer rounding
    pruned = [lid for lid, r in opt.layers.items() if r.sparsity > 0]
    assert pruned and all(s.layers[lid].current_flops < s.layers[lid].baseline_flops for lid in pruned)
    dense = [lay.id for lay in graph.layers if not lay.prunable]
    assert all(s.layers[lid].current_ms == s.layers[lid].baseline_ms for lid in dense)


async def test_layers_summary_type_optimized(demo_project):
    from sparsify_tui.analysis import analyze

    graph = analyze(demo_project.model_path)
    perf = demo_project.load_profile(demo_project.profiles_of("perf")[0])
    opt, _ = Evaluator(graph, perf, None).run(default_optimization(graph, name="plan"))
    demo_project.set_optimization(opt.to_dict())
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE, initial="layers")
    async with app.run_test(size=(150, 40)) as pilot:
        await settle(pilot, app)
        screen = app.screen
        levels = app.model_data.summary_levels
        await pilot.press(*["t"] * (len(levels) + 1))
        await pilot.pause()
        assert screen.view.optimized is not None and screen.view.level is None
        status = widget_text(screen.query_one("#layers-status", Static), 400)
        o = screen.view.optimized
        assert "optimized 'plan'" in status and f"Current Timing {fmt_ms(o.current_ms)}" in status
        assert f"Current Parameters {fmt_count(o.current_params)} vs {fmt_count(o.baseline_params)}" in status
        table = screen.query_one("#layer-table", DataTable)
        labels = [str(c.label) for c in table.columns.values()]
        assert "Cur ms" in labels and "Cur params" in labels and "Cur FLOPs" in labels
        lid = max(opt.layers, key=lambda k: opt.layers[k].sparsity)
        row = table.get_row(lid)
        assert row[labels.index("Cur params")].plain == fmt_count(o.layers[lid].current_params)
        assert row[labels.index("Cur ms")].plain == fmt_ms(o.layers[lid].current_ms)
        # t again: back to baseline
        await pilot.press("t")
        await pilot.pause()
        assert screen.view.optimized is None
        labels = [str(c.label) for c in table.columns.values()]
        assert "Base ms" in labels
