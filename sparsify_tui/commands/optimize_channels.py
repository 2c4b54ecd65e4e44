"""``sparsify-tui optimize PROJECT_DIR --structure channels [--sparsity S | --flops-reduction F]``.

The channel optimizer (:mod:`sparsify_tui.optim.channel_plan`) with the unstructured command's flags:
``--sparsity`` is the share of the prunable groups' channels removed (default 0.3 for a new channel
optimization), ``--override GROUP=F`` / ``--exclude GROUP`` name channel groups. An optimization whose plan
removes channel groups stays a channel optimization without the flag; a stored plan of the other structure
is never replaced (one ``error:`` line asks for a new ``--name``). ``--json`` prints the :class:`~sparsify_tui.optim.channel_plan.ChannelEstimates`
keys (``structure``, ``flops_reduction`` as the share of FLOPs removed, ``estimated_speedup``,
``speedup_basis``, ``unprunable_groups``...) plus ``profiles`` and ``notes``, as ``optimize --json`` does.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from sparsify_tui.commands.common import emit_json, fmt_count, print_table
from sparsify_tui.errors import UsageError
from sparsify_tui.settings import parse_float

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.optim.optimization import Optimization
    from sparsify_tui.project import Project

STRUCTURES = ("unstructured", "channels")


def wants_channels(args: argparse.Namespace, opt: "Optimization | None") -> bool:
    """True when this ``optimize`` plans channels (the flag, or a stored channel plan without the flag); a
    UsageError when the flag asks for the other structure than the stored plan's."""
    from sparsify_tui.optim.channel_plan import is_channel_plan

    raw = getattr(args, "structure", None)
    structure = str(raw).strip().lower() if raw is not None else None
    if structure is not None and structure not in STRUCTURES:
        raise UsageError(f"--structure must be unstructured or channels, got {raw!r}")
    channels = structure == "channels" or (structure is None and is_channel_plan(opt))
    if not channels:
        for flag, attr in (("--flops-reduction", "flops_reduction"), ("--round-to", "round_to")):
            if getattr(args, attr, None) is not None:
                raise UsageError(f"{flag} is only used with --structure channels (add it)")
    if opt is not None and opt.layers and channels != is_channel_plan(opt) and getattr(args, "copy", None) is None:
        what = "removes channel groups" if is_channel_plan(opt) else "plans single weights"
        raise UsageError(f"optimization {opt.name!r} {what}: plan the other structure under a new name "
                         f"(--name NEW or --copy NEW, with --structure {structure}), so this plan is kept")
    if opt is not None and not channels and is_channel_plan(opt):  # a --copy of a channel plan, per layer now
        opt.layers = {}
        opt.pruning.overrides.clear()
        opt.pruning.exclusions.clear()
    return channels


def _settings(args: argparse.Namespace) -> tuple[float | None, int | None]:
    fr = getattr(args, "flops_reduction", None)
    fr = None if fr is None else parse_float("--flops-reduction", fr, minimum=0.0, maximum=1.0, max_exclusive=True)
    if fr is not None and fr <= 0:
        raise UsageError("--flops-reduction must be above 0")
    if fr is not None and getattr(args, "sparsity", None) is not None:
        raise UsageError("give --sparsity (share of channels removed) or --flops-reduction, not both")
    rt = getattr(args, "round_to", None)
    if rt is not None:
        from sparsify_tui.optim.channels import check_round_to

        rt = check_round_to(rt)
    return fr, rt


def run_channels(args: argparse.Namespace, project: "Project", graph: "ModelGraph", opt: "Optimization | None",
                 name: str, created: bool, epochs: int | None, overrides: dict[str, float], excludes: list[str],
                 values: dict[str, Any]) -> int:
    """The rest of ``optimize`` for a channel plan (the project is open and writable)."""
    from sparsify_tui.actions.optimizer import OptimizerContext, save_optimization
    from sparsify_tui.commands.optimize import _document
    from sparsify_tui.optim.channel_plan import DEFAULT_CHANNEL_TARGET, is_channel_plan
    from sparsify_tui.optim.optimization import default_optimization, reschedule

    flops_target, round_to = _settings(args)
    if getattr(args, "tiny_params", None) is not None:
        raise UsageError("--tiny-params is for unstructured plans (a channel group's size is in channels)")
    if opt is None or not is_channel_plan(opt):
        base = opt if opt is not None else default_optimization(graph, epochs or 100, name)
        opt = base.copy(with_layers=False)
        opt.pruning.target_sparsity = DEFAULT_CHANNEL_TARGET
        opt.pruning.overrides.clear()
        opt.pruning.exclusions.clear()
    if epochs is not None and epochs != opt.epochs:
        opt = reschedule(opt, epochs)
    p = opt.pruning
    for attr, value in values.items():
        if value is not None:
            setattr(p, attr, value)
    ctx = OptimizerContext.for_project(project, graph, opt, structure="channels", round_to=round_to)
    ev = ctx.evaluator
    ev.check_ids(overrides, "--override")
    ev.check_ids(excludes, "--exclude")
    for gid, s in overrides.items():
        p.overrides[gid] = s
        p.exclusions.pop(gid, None)
    for gid in excludes:
        p.exclusions[gid] = "excluded by user"
        p.overrides.pop(gid, None)
    opt.validate([g.id for g in ev.setup.groups] + [lay.id for lay in graph.layers])
    ctx.attach(opt)
    if getattr(args, "quantize", False) and not opt.quantization.enabled:
        opt.quantization.enabled = True
    opt = ev.for_flops_reduction(opt, flops_target) if flops_target is not None else ev.allocate(opt)
    est = ev.evaluate(opt)
    save_optimization(project, opt)
    notes = list(ctx.notes)
    if created:
        notes.insert(0, f"created optimization {opt.name!r} (channels)")
    if flops_target is not None:
        notes.append(f"--flops-reduction {flops_target:g}: {opt.pruning.target_sparsity:.3f} of the channels planned, "
                     f"{est.flops_reduction:.1%} of the FLOPs removed")
    if args.json:
        emit_json(_document(est, opt, notes, ctx.profile_ids))
    else:
        print_channel_estimates(est, opt, notes)
        _next_steps(project, opt)
    return 0


def print_channel_estimates(est: Any, opt: "Optimization", notes: list[str], *, file=None) -> None:
    file = file or sys.stdout
    ms = lambda v: "n/a" if v is None else f"{v:.3f} ms"  # noqa: E731
    rows = [
        ["Optimization", f"{opt.name} (channels)"],
        ["Target channels removed", f"{est.target_sparsity:.3f}"],
        ["Achieved channels removed", f"{est.achieved_sparsity:.3f}" + ("" if est.reachable else "  (target not reachable)")],
        ["Balance", f"{est.balance:.2f}  (0 = performance, 1 = recovery)"],
        ["Baseline time", ms(est.baseline_ms)],
        ["Estimated time", ms(est.estimated_ms)],
        ["Estimated speedup", f"{est.estimated_speedup:.2f}x  ({est.speedup_basis})"],
        ["FLOPs", f"{fmt_count(est.flops_before)} -> {fmt_count(est.flops_after)}  "
                  f"(reduction {est.flops_reduction:.1%})"],
        ["Params", f"{fmt_count(est.params_before)} -> {fmt_count(est.params_after)}"],
        ["Recovery confidence", f"{est.recovery_confidence:.3f}  (heuristic)"],
        ["Groups", f"{est.prunable_groups} prunable of {est.groups}; channels kept at multiples of {est.round_to}"],
    ]
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}", file=file)
    print(file=file)
    shown = sorted(est.layers, key=lambda x: -(x.channels or 0))[:30]
    print_table(
        ["group", "layers", "channels", "removed", "speedup", "loss sens.", "recovery", "note"],
        [[x.id[:28], ", ".join(x.layers)[:36], str(x.channels), f"{x.removed} ({x.sparsity:.2f})",
          f"{x.est_speedup:.2f}x", f"{x.loss_sensitivity:.4g}", f"{x.recovery:.2f}",
          x.excluded_reason or ("override" if x.overridden else "")] for x in shown],
        right=(2, 4, 5, 6), file=file)
    if len(est.layers) > len(shown):
        print(f"... {len(est.layers) - len(shown)} more groups (--json lists all)", file=file)
    if est.unprunable_groups:
        print(f"\n{len(est.unprunable_groups)} group(s) cannot be pruned:", file=file)
        for g in est.unprunable_groups[:10]:
            print(f"  {g['id']} ({', '.join(g['layers'])[:40]}): {g['reason']}", file=file)
        if len(est.unprunable_groups) > 10:
            print(f"  ... {len(est.unprunable_groups) - 10} more (--json lists all)", file=file)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)


def _next_steps(project: "Project", opt: "Optimization") -> None:
    from sparsify_tui.commands.optimize import plan_next_steps

    plan_next_steps(project, opt, {
        "perf_channels": "sparsify-tui profile perf {d} --structure channels   (measured group savings)",
        "loss_channels": "sparsify-tui profile loss {d} --structure channels   (measured output change per group)",
    }, ["sparsify-tui prune {d}{sel} -o pruned.onnx   (the channel-pruned model)"])


# ---------------------------------------------------------------- export
def run_export_channels(args: argparse.Namespace, project: "Project", graph: "ModelGraph", opt: "Optimization",
                        framework: str, code_type: str, name_map: Any, warnings: list[str]) -> int:
    """``export PROJECT --optimization NAME --onnx PRUNED.onnx [--code RUN.py] [--recipe R.yaml]`` of a channel
    optimization: the pruned model, a script that runs it, and a SparseML recipe only where one expresses the
    plan (else one line says why)."""
    from sparsify_tui.actions.channels import channel_recipe, export_channel_optimization
    from sparsify_tui.actions.optimizer import loss_measured, profile_labels
    from sparsify_tui.commands.common import Progress
    from sparsify_tui.commands.optimize import _write

    if getattr(args, "onnx", None) is None:
        raise UsageError(f"optimization {opt.name!r} removes channels: its export is the pruned model, give "
                         "--onnx PATH (and --code PATH for a script that runs it)")
    from pathlib import Path

    from sparsify_tui.commands.common import refuse_project_file

    out = Path(args.onnx).expanduser()
    refuse_project_file(project, out, "the pruned model")
    if not out.parent.exists():
        raise UsageError(f"--onnx {out}: directory {out.parent} does not exist")
    recipe, why = channel_recipe(opt, graph, name_map, warnings, profiles=profile_labels(project, opt),
                                 loss_measured=loss_measured(project, opt))
    progress = Progress("export channels")

    def on_progress(ev: dict) -> None:
        if ev.get("event") == "progress":
            progress.update(ev.get("done", 0), ev.get("total", 1) or 1, str(ev.get("label", "")))

    info = export_channel_optimization(project, opt.name, out, on_progress=on_progress)
    progress.done()
    recipe_path = _write(args.recipe, recipe, "recipe", project) if args.recipe and recipe else None
    code_path = _write(args.code, info["code"], "code sample", project) if args.code else None
    if args.json:
        emit_json({"optimization": opt.name, "structure": "channels", "onnx_path": str(out),
                   "code_path": str(code_path) if code_path else None, "code_engine": info["code_engine"],
                   "recipe_path": str(recipe_path) if recipe_path else None, "recipe": recipe,
                   "recipe_note": why or None, "flops_reduction": info.get("flops_reduction"),
                   "removed_channels": info.get("removed_channels"), "pruned_groups": info.get("pruned_groups"),
                   "warnings": warnings, "code": info["code"]})
        return 0
    fr = info.get("flops_reduction")
    print(f"wrote {out}: {info['removed_channels']} channels removed from {info['pruned_groups']} groups; FLOPs "
          f"{'n/a' if fr is None else f'-{fr:.1%}'}", file=sys.stderr)
    if code_path is not None:
        print(f"wrote {info['code_engine']} code sample {code_path}", file=sys.stderr)
    if recipe_path is not None:
        print(f"wrote recipe {recipe_path} (filter masks, one per pruned layer)", file=sys.stderr)
    elif why:
        print(f"note: {why}", file=sys.stderr)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0
