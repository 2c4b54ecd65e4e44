"""``sparsify-tui optimize PROJECT_DIR`` and ``sparsify-tui export PROJECT_DIR``.

``optimize`` creates or updates an optimization in the project (the first one,
or ``--name``; ``--copy NEW`` applies the flags to a new version instead),
allocates per-layer sparsities from the project's newest profiles (or their
approximations, labelled) and prints its estimates. ``--json`` prints one
document: the :class:`~sparsify_tui.optim.estimate.Estimates` keys (name,
target_sparsity, achieved_sparsity, balance, estimated_speedup, estimated_ms,
baseline_ms, flops_before/after, params_before/after, recovery_confidence,
approximated, layers[{id, name, sparsity, excluded_reason, est_speedup,
loss_sensitivity, perf_sensitivity, ...}]) plus ``profiles`` and ``notes``.

``export`` writes the optimization as a SparseML recipe (stdout without
``--recipe``) and a code sample (``--code``), or imports a recipe into the
project (``--import RECIPE``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import argparse
import sys
from pathlib import Path

from sparsify_tui.commands.common import emit_json, fmt_count, print_table
from sparsify_tui.settings import parse_float, parse_int, parse_sparsity
from sparsify_tui.errors import RecipeError, UsageError
from sparsify_tui.fsutil import read_user_text

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.project import Project


def _open_project(path: str, *, readonly: bool = False):
    from sparsify_tui.project import Project

    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() == ".onnx":
        raise UsageError(f"{p} is a model file: optimize and export need a project directory "
                         f"(create one with 'sparsify-tui new {p}')")
    return Project.open(p, readonly=readonly)


def _analyze(project: "Project") -> "ModelGraph":
    from sparsify_tui.analysis import analyze

    return analyze(project.model_path, project.input_shapes or None)


def _parse_override(value: str) -> tuple[str, float]:
    if "=" not in value:
        raise UsageError(f"--override must be LAYER=SPARSITY, got {value!r}")
    lid, s = value.rsplit("=", 1)
    lid = lid.strip()
    if not lid:
        raise UsageError(f"--override must be LAYER=SPARSITY, got {value!r}")
    return lid, parse_sparsity(s, f"--override {lid}")  # the editor's syntax: 0.8 or 80%


def _check_layer(graph: "ModelGraph", lid: str, flag: str) -> None:
    for lay in graph.layers:
        if lay.id == lid:
            if not lay.prunable:
                raise UsageError(f"{flag}: layer {lid!r} is not prunable (a {lay.op_type}; only Conv, Gemm and "
                                 "MatMul layers with constant weights can be pruned)")
            return
    raise UsageError(f"{flag}: layer {lid!r} is not in the model (use the ids that 'sparsify-tui info' lists)")


def _document(est, opt, ctx_notes: list[str], profile_ids: dict[str, str], warnings: list[str] | None = None) -> dict:
    d = est.to_dict()
    d["notes"] = list(dict.fromkeys(ctx_notes + d.get("notes", [])))
    d["profiles"] = profile_ids
    d["epochs"] = opt.epochs
    d["optimization"] = opt.to_dict() | {"layers": None}
    del d["optimization"]["layers"]
    if warnings is not None:
        d["warnings"] = warnings
    return d


def _print_estimates(est, opt, notes: list[str], *, file=None) -> None:
    file = file or sys.stdout
    ms = lambda v: "n/a" if v is None else f"{v:.3f} ms"  # noqa: E731
    rows = [
        ["Optimization", opt.name],
        ["Target sparsity", f"{est.target_sparsity:.3f}"],
        ["Achieved sparsity", f"{est.achieved_sparsity:.3f}" + ("" if est.reachable else "  (target not reachable)")],
        ["Balance", f"{est.balance:.2f}  (0 = performance, 1 = recovery)"],
        ["Baseline time", ms(est.baseline_ms)],
        ["Estimated time", ms(est.estimated_ms)],
        ["Estimated speedup", f"{est.estimated_speedup:.2f}x" + ("  (approximated)" if est.approximated else "")],
        ["FLOPs", f"{fmt_count(est.flops_before)} -> {fmt_count(est.flops_after)}"
                  + ("  (known part only)" if est.flops_unknown else "")],
        ["Params", f"{fmt_count(est.params_before)} -> {fmt_count(est.params_after)} non-zero "
                   f"(compression {est.compression:.2f}x)"],
        ["Recovery confidence", f"{est.recovery_confidence:.3f}  (heuristic)"],
        ["Epochs", f"{opt.epochs} (pruning {opt.pruning.start_epoch:g} to {opt.pruning.end_epoch:g})"],
    ]
    if est.quantization.get("enabled"):
        rows.append(["Quantization", f"INT8 from epoch {opt.quantization.start_epoch:g}, "
                                     f"{est.quantization.get('layers', 0)} layers"])
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k.ljust(w)}  {v}", file=file)
    print(file=file)
    layers = sorted(est.layers, key=lambda x: -(x.params or 0))
    shown = layers[:30]
    from sparsify_tui.commands.common import shorten_names

    prefix, names = shorten_names([x.id for x in shown], 36)
    if prefix:
        print(f"(layer ids below start with {prefix})", file=file)
    print_table(
        ["layer", "op", "params", "sparsity", "speedup", "loss sens.", "recovery", "note"],
        [[name, x.op_type, fmt_count(x.params), f"{x.sparsity:.3f}", f"{x.est_speedup:.2f}x",
          f"{x.loss_sensitivity:.4g}", f"{x.recovery:.2f}", x.excluded_reason or ("override" if x.overridden else "")]
         for name, x in zip(names, shown)],
        right=(2, 3, 4, 5, 6), file=file,
    )
    if len(layers) > len(shown):
        print(f"... {len(layers) - len(shown)} more prunable layers (--json lists all)", file=file)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)


def plan_next_steps(project: "Project", opt, missing: dict[str, str], then: list[str]) -> None:
    """Print the next commands after a plan: a profile command for each kind in ``missing`` the project lacks
    (``{kind: command}``), then ``then``; ``{d}`` is the project, ``{sel}`` selects the plan if not the default."""
    from sparsify_tui.actions.optimizer import default_optimization_name
    from sparsify_tui.commands.common import next_steps

    d = str(project.dir)
    sel = "" if default_optimization_name(project) == opt.name else f" --optimization {opt.name}"
    steps = [cmd.format(d=d) for kind, cmd in missing.items() if not project.profiles_of(kind)]
    next_steps(*steps, *(cmd.format(d=d, sel=sel) for cmd in then))


def _next_after_optimize(project: "Project", opt) -> None:
    plan_next_steps(project, opt, {
        "perf": "sparsify-tui profile perf {d}   (measured timings instead of FLOPs estimates)",
        "loss": "sparsify-tui profile loss {d}   (loss sensitivity per layer)",
    }, ["sparsify-tui export {d}{sel} --recipe recipe.yaml --code train.py",
        "sparsify-tui prune {d}{sel} -o pruned.onnx --validate   (measured speedup)"])


# ---------------------------------------------------------------- optimize
def run_optimize(args: argparse.Namespace) -> int:
    from sparsify_tui.optim.optimization import default_optimization, reschedule
    from sparsify_tui.actions.optimizer import (OptimizerContext, default_optimization_name, default_quant_layers,
                                                load_optimization, save_optimization)

    if getattr(args, "max_output_change", None) is not None:  # the closed-loop budget (commands/optimize_budget.py)
        from sparsify_tui.commands.optimize_budget import run_budget

        return run_budget(args)
    # flag values first: a bad flag never touches the project
    sparsity = None if args.sparsity is None else parse_float("--sparsity", args.sparsity, minimum=0.0, maximum=1.0,
                                                              max_exclusive=True)
    balance = None if args.balance is None else parse_float("--balance", args.balance, minimum=0.0, maximum=1.0)
    epochs = None if args.epochs is None else parse_int("--epochs", args.epochs, minimum=1, maximum=100000)
    min_s = None if args.min_sparsity is None else parse_float("--min-sparsity", args.min_sparsity, minimum=0.0,
                                                               maximum=1.0, max_exclusive=True)
    min_sp = None if args.min_speedup is None else parse_float("--min-speedup", args.min_speedup, minimum=0.0,
                                                               maximum=100.0)
    min_r = None if args.min_recovery is None else parse_float("--min-recovery", args.min_recovery, minimum=0.0,
                                                               maximum=1.0)
    max_s = None if args.max_sparsity is None else parse_float("--max-sparsity", args.max_sparsity, minimum=0.01,
                                                               maximum=0.99)
    tiny = getattr(args, "tiny_params", None)
    tiny = None if tiny is None else parse_int("--tiny-params", tiny, minimum=0, maximum=10**9)
    protect = getattr(args, "protect_edges", None)
    overrides = dict(_parse_override(v) for v in (args.override or []))
    excludes = [str(x).strip() for x in (args.exclude or [])]
    if getattr(args, "name", None) is not None and not str(args.name).strip():
        raise UsageError("--name must not be empty")
    if args.copy is not None and not str(args.copy).strip():
        raise UsageError("--copy needs a new optimization name")

    project = _open_project(args.project)
    try:
        for notice in project.notices:
            print(f"note: {notice}", file=sys.stderr)
        project.require_writable()  # optimize stores the plan: a locked project fails before the analysis
        graph = _analyze(project)
        name = args.name or default_optimization_name(project)
        opt = load_optimization(project, name)
        created = opt is None
        if args.copy is not None:
            if opt is None:
                raise UsageError(f"--copy: project {project.dir} has no optimization {name!r} to copy")
            if project.get_optimization(args.copy) is not None:
                raise UsageError(f"--copy: project {project.dir} already has an optimization named {args.copy!r}")
            opt = opt.copy(name=args.copy)
            created = True
        from sparsify_tui.commands.optimize_channels import run_channels, wants_channels

        if wants_channels(args, opt):
            return run_channels(args, project, graph, opt, name, created, epochs, overrides, excludes, dict(
                target_sparsity=sparsity, balance=balance, min_sparsity=min_s, min_speedup=min_sp,
                min_recovery=min_r, max_sparsity=max_s, protect_edges=protect))
        if opt is None:
            opt = default_optimization(graph, epochs or 100, name)
        elif epochs is not None and epochs != opt.epochs:
            opt = reschedule(opt, epochs)
        p = opt.pruning
        for attr, value in (("target_sparsity", sparsity), ("balance", balance), ("min_sparsity", min_s),
                            ("min_speedup", min_sp), ("min_recovery", min_r), ("max_sparsity", max_s),
                            ("protect_edges", protect), ("tiny_params", tiny)):
            if value is not None:
                setattr(p, attr, value)
        for lid, s in overrides.items():
            _check_layer(graph, lid, "--override")
            p.overrides[lid] = s
            p.exclusions.pop(lid, None)
        for lid in excludes:
            _check_layer(graph, lid, "--exclude")
            p.exclusions[lid] = "excluded by user"
            p.overrides.pop(lid, None)
        opt.validate([lay.id for lay in graph.layers])

        ctx = OptimizerContext.for_project(project, graph, opt)
        ctx.attach(opt)
        if args.quantize and not opt.quantization.enabled:
            opt.quantization.enabled = True
            opt.quantization.layers, opt.quantization.skipped = default_quant_layers(graph, ctx.evaluator.quant)
        opt = ctx.evaluator.allocate(opt)
        est = ctx.evaluator.evaluate(opt)
        save_optimization(project, opt)
        notes = list(ctx.notes)
        if created:
            notes.insert(0, f"created optimization {opt.name!r}")
        if args.json:
            emit_json(_document(est, opt, notes, ctx.profile_ids))
        else:
            _print_estimates(est, opt, notes)
            _next_after_optimize(project, opt)
        return 0
    finally:
        project.close()


# ---------------------------------------------------------------- export / import
def _write(path: str, text: str, what: str, project: "Project | None" = None) -> Path:
    from sparsify_tui.commands.common import refuse_project_file
    from sparsify_tui.fsutil import atomic_write_text

    p = Path(path).expanduser()
    if project is not None:
        refuse_project_file(project, p, f"the {what}")
    if p.is_dir():
        raise UsageError(f"{what} {p} is a directory: give a file name")
    if not p.parent.exists():
        raise UsageError(f"{what} {p}: directory {p.parent} does not exist")
    try:
        atomic_write_text(p, text)
    except OSError as exc:
        raise UsageError(f"cannot write {what} {p}: {exc.strerror or exc}") from None
    return p


def run_export(args: argparse.Namespace) -> int:
    from sparsify_tui.optim.code_samples import code_sample
    from sparsify_tui.actions.optimizer import (OptimizerContext, default_optimization_name, load_optimization,
                                                save_optimization)
    from sparsify_tui.optim.recipe import export_recipe, import_recipe, load_name_map

    framework = str(args.framework or "pytorch")
    code_type = str(args.code_type or "integration")
    code_sample(framework, code_type)  # validates both flags before any work
    importing = getattr(args, "import_recipe", None)
    project = _open_project(args.project, readonly=not importing)
    try:
        graph = _analyze(project)
        warnings: list[str] = []
        name_map = None
        if args.name_map:
            name_map, w = load_name_map(args.name_map, graph)
            warnings += w
        if importing:
            src = Path(importing).expanduser()
            text = read_user_text(src, "recipe", unreadable=RecipeError)
            opt = import_recipe(text, graph, name_map, warnings, source=f"recipe {src}")
            if args.optimization:
                opt.name = args.optimization
            elif opt.name in ("imported", "") or opt.name is None:
                opt.name = src.stem
            ctx = OptimizerContext.for_project(project, graph, opt)
            ctx.attach(opt)
            est = ctx.evaluator.evaluate(opt)
            save_optimization(project, opt)
            notes = [f"imported {src} as optimization {opt.name!r}"] + ctx.notes
            if args.json:
                emit_json(_document(est, opt, notes, ctx.profile_ids, warnings))
            else:
                _print_estimates(est, opt, notes)
                for w in warnings:
                    print(f"warning: {w}", file=sys.stderr)
            return 0

        if not project.optimizations:
            raise UsageError(f"project {project.dir} has no optimization yet: run 'sparsify-tui optimize {args.project}' first")
        name = args.optimization or default_optimization_name(project)
        opt = load_optimization(project, name)
        if opt is None:
            names = ", ".join(repr(n) for n in project.optimization_names())
            raise UsageError(f"project {project.dir} has no optimization {name!r} (it has {names})")
        from sparsify_tui.optim.channel_plan import is_channel_plan

        if is_channel_plan(opt):
            from sparsify_tui.commands.optimize_channels import run_export_channels

            return run_export_channels(args, project, graph, opt, framework, code_type, name_map, warnings)
        if getattr(args, "onnx", None) is not None:
            raise UsageError("--onnx is for channel optimizations (optimize --structure channels); prune writes "
                             "the pruned model of this one")
        if opt.pruning.enabled and not opt.layers:
            ctx = OptimizerContext.for_project(project, graph, opt)
            opt = ctx.evaluator.allocate(ctx.attach(opt))
            if not project.readonly:
                save_optimization(project, opt)
        from sparsify_tui.actions.optimizer import loss_measured, profile_labels

        recipe = export_recipe(opt, graph, name_map, warnings, profiles=profile_labels(project, opt),
                               loss_measured=loss_measured(project, opt))
        recipe_path = _write(args.recipe, recipe, "recipe", project) if args.recipe else None
        code = code_sample(framework, code_type, str(recipe_path or "recipe.yaml"), mapped=bool(name_map))
        code_path = _write(args.code, code, "code sample", project) if args.code else None
        if args.json:
            emit_json({
                "optimization": opt.name, "recipe_path": str(recipe_path) if recipe_path else None,
                "code_path": str(code_path) if code_path else None, "framework": framework, "code_type": code_type,
                "name_map": str(args.name_map) if args.name_map else None,
                "pruned_layers": len(opt.plan.sparsities()),
                "modifiers": recipe.count("\n    - !"), "warnings": warnings, "recipe": recipe, "code": code,
            })
            return 0
        if recipe_path is None:
            sys.stdout.write(recipe)
        else:
            print(f"wrote recipe {recipe_path}", file=sys.stderr)
        if code_path is not None:
            print(f"wrote {framework} {code_type} code sample {code_path}", file=sys.stderr)
        if not name_map:
            print("note: the recipe's params are ONNX weight names; pass --name-map if your framework's "
                  "parameter names differ", file=sys.stderr)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        return 0
    finally:
        project.close()
