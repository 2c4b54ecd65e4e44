"""The optimizer screen on a channel optimization (optimize --structure channels): one row per group with its
layers, a group's fraction typed and undone like a layer's, the estimates panel in shares of FLOPs and channels."""

from __future__ import annotations

from textual.widgets import DataTable, Input, Static

from sparsify_tui.optim.optimization import Optimization
from sparsify_tui.optim.plan import Structure
from sparsify_tui.tui.app import SparsifyApp
from sparsify_tui.tui.screens.optimizer import OptimizerScreen
from tests.tui.conftest import FIXED_MACHINE, settle, wait_for, widget_text


async def test_channel_optimization_rows_are_groups_and_edits_undo(demo_project):
    from sparsify_tui.actions.optimizer import OptimizerContext, save_optimization
    from sparsify_tui.optim.optimization import default_optimization

    ctx = OptimizerContext.for_project(demo_project, structure="channels")
    opt = default_optimization(ctx.graph, name="default")
    opt.pruning.target_sparsity = 0.3
    save_optimization(demo_project, ctx.evaluator.allocate(ctx.attach(opt)))
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot, app)
        screen = OptimizerScreen()
        app.push_screen(screen)
        await wait_for(pilot, lambda: screen.ready)
        await pilot.pause()
        assert screen.editor.ctx.structure == "channels"
        lt = screen.query_one("#opt-layers", DataTable)
        setup = screen.editor.ctx.evaluator.setup
        assert lt.row_count == len(setup.prunable)  # a group is one row
        res = next(g for g in setup.prunable if len(setup.layers_of[g.id]) > 1)
        name = next(x.name for x in screen.est.layers if x.id == res.id)
        assert all(lid in name for lid in setup.layers_of[res.id])  # its layers listed in its row's name
        from sparsify_tui.tui.data import ellipsize_middle
        from sparsify_tui.tui.optimizer_view import LAYER_WIDTHS

        assert lt.get_row(res.id)[0].plain == ellipsize_middle(name, LAYER_WIDTHS["name"])
        assert lt.get_row(res.id)[9].plain == "channels"
        text = widget_text(screen.query_one("#opt-estimates", Static), 200)
        assert "Channels Removed" in text and "FLOPs Removed" in text and "channel groups" in text
        lt.focus()
        gid = next(x.id for x in screen.est.layers if not x.excluded_reason)
        lt.move_cursor(row=lt.get_row_index(gid))
        await pilot.pause()
        assert screen.current_layer() == gid
        before = screen.opt.layers[gid].sparsity
        await pilot.press("e")
        screen.query_one("#opt-edit", Input).value = "50%"
        await pilot.press("enter")
        await pilot.pause()
        assert screen.opt.layers[gid].sparsity == 0.5 and screen.opt.layers[gid].overridden
        assert lt.get_row(gid)[1].plain == "50.0% *"
        await wait_for(pilot, lambda: not screen.dirty, timeout=5)
        saved = Optimization.from_dict(demo_project.get_optimization("default"))
        assert saved.plan.entries[gid].structure is Structure.CHANNELS and saved.plan.entries[gid].sparsity == 0.5
        await pilot.press("u")
        await pilot.pause()
        assert screen.opt.layers[gid].sparsity == before and gid not in screen.opt.pruning.overrides


async def test_export_screen_of_a_channel_optimization_says_why_there_is_no_recipe(demo_project):
    from sparsify_tui.actions.optimizer import OptimizerContext, save_optimization
    from sparsify_tui.optim.optimization import default_optimization
    from tests.tui.test_export import open_export

    ctx = OptimizerContext.for_project(demo_project, structure="channels")
    opt = default_optimization(ctx.graph, name="default")
    opt.pruning.protect_edges = False  # the stem's residual group is pruned too: no recipe can express it
    opt.pruning.target_sparsity = 0.5
    opt = ctx.evaluator.allocate(ctx.attach(opt))
    tied = [k for k, e in opt.plan.entries.items() if e.sparsity > 0 and len(e.layers) > 1]
    assert tied
    save_optimization(demo_project, opt)
    app = SparsifyApp(demo_project, machine=FIXED_MACHINE)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_export(pilot, app)
        first = screen.recipe_text.splitlines()[0]
        assert first.startswith("# no SparseML recipe") and "--onnx" in screen.recipe_text
        assert "GMPruningModifier" not in screen.recipe_text
