"""``prune --structure channels``: remove whole channels of a project's model, optionally validated.

The plan is one fraction of every prunable channel group's channels (``fraction``), or the fraction
whose removal cuts the model's estimated FLOPs by ``flops_reduction`` (default 0.3); the method is
``l2`` or ``reconstruct`` (:mod:`sparsify_tui.optim.channels`), calibrated on the samples ``prune``
already splits (:func:`sparsify_tui.actions.validate.split_samples`).

``--validate`` benchmarks dense against pruned with the engine and precision asked (job kind
``ab_benchmark``, as the unstructured validation does) and reports ``output_change`` on the held-out
samples, and ``l2_output_change``: the same plan (the same channel counts per group) pruned by ``l2``,
on the same samples, as ``magnitude_output_change`` does for the unstructured methods.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sparsify_tui.errors import UsageError

if TYPE_CHECKING:
    from sparsify_tui.project import Project

DEFAULT_FLOPS_REDUCTION = 0.3
# --round-to by engine and precision (the registry's channel_round_to), measured on the ResNet-50-sized model
# with 0.3 of its channels removed at N = 1, 8, 16, 32, 64 (README, "Channel pruning"): ONNX Runtime fp32 runs
# ~10% faster per FLOP once the counts are multiples of 8 and no faster beyond; OpenVINO (fp32 and INT8) runs
# 20-35% faster per FLOP at multiples of 32 than unrounded, 8 or 16. DeepSparse and ONNX Runtime INT8 were not
# measured: 16, the width of an AVX-512 register of fp32 (and of the int8 VNNI dot products' output lanes).
def default_round_to(engine: str, precision: str | None) -> int:
    from sparsify_tui.engines.registry import engine_names, get_engine

    return get_engine(engine).round_to(precision) if engine in engine_names() else 16


def check_fraction(flag: str, value: Any, high: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be a number between 0 and {high:g}, got {value!r}") from None
    if not 0.0 < v < high:
        raise UsageError(f"{flag} must be between 0 and {high:g} (exclusive), got {value!r}")
    return v


def prune_channels_project(project: "Project", out_path: str | Path, *, method: str = "l2",
                           flops_reduction: float | None = None, fraction: float | None = None,
                           round_to: int | None = None, data: str | None = None, samples: int = 32,
                           eval_data: str | None = None, validate: bool = False, engine: str = "auto",
                           precision: str | None = None, iterations: int = 20, cores: int | None = None,
                           input_values: dict | None = None, on_progress: Callable[[dict], Any] | None = None,
                           cancel=None, save_as: str | None = None, optimization: str | None = None) -> dict:
    """Write the channel-pruned model to ``out_path``; the info (and the validation with ``validate``).

    ``optimization``: the name of a stored channel optimization (``optimize --structure channels``) whose
    per-group fractions are the plan (they are exact channel counts already: no rounding). ``save_as``: also
    store the plan (each pruned group's share of channels removed) as the project's optimization of that name
    (:func:`save_channel_optimization`), which the deployment search then measures."""
    from sparsify_tui.actions.validate import _with_values, split_samples
    from sparsify_tui.analysis import analyze
    from sparsify_tui.engines.registry import resolve_auto
    from sparsify_tui.onnxkit.modelio import load_model_copy, save_model_atomic
    from sparsify_tui.optim import channels as oc
    from sparsify_tui.progress import emit_progress

    method = oc.check_method(method)
    if fraction is not None and flops_reduction is not None:
        raise UsageError("give --channel-fraction or --flops-reduction, not both")
    chosen, engine_reason = resolve_auto(engine)
    plan = None
    if optimization is not None:
        plan = optimization_plan(project, optimization)
        if fraction is not None or flops_reduction is not None or round_to is not None:
            raise UsageError("--optimization is the plan: give it without --channel-fraction, --flops-reduction "
                             "or --round-to")
        round_to = 1
        round_reason = f"the counts of optimization {optimization!r}"
    elif round_to is None:
        round_to = default_round_to(chosen, precision)
        round_reason = f"default for {chosen} {precision or 'fp32'}"
    else:
        round_to = oc.check_round_to(round_to)
        round_reason = "--round-to"
    shapes = project.input_shapes or None
    graph = analyze(project.model_path, shapes)
    cal, ev, notes = split_samples(project, graph, "sparsegpt" if method == "reconstruct" else "magnitude", data,
                                   samples, eval_data, need_eval=validate)
    if input_values:
        cal, ev = _with_values(cal, input_values), _with_values(ev, input_values)
    model, external, _src = load_model_copy(project.model_path)
    emit_progress(on_progress, 0, 1, "finding the channel groups")
    prep = oc.prepare(model, input_shapes=oc.sample_shapes(cal or ev) or shapes)
    cmap = prep[2]
    if not any(g.prunable for g in cmap.groups):
        reasons = sorted({r for g in cmap.groups for r in g.reasons})
        raise UsageError("no channel group of this model can be pruned: " + "; ".join(reasons[:3]))
    if plan is not None:
        fraction, target = plan, None  # a {group id: fraction} plan: prune_channels and _validate take it as is
    elif fraction is None:
        target = DEFAULT_FLOPS_REDUCTION if flops_reduction is None else float(flops_reduction)
        emit_progress(on_progress, 0, 1, f"finding the plan that removes {target:.0%} of the FLOPs")
        fraction, _reached = oc.refine_for_flops(prep, graph, target, round_to, input_shapes=shapes)
    else:
        target = None
    res = oc.prune_channels(model, fraction, method=method, round_to=round_to, samples=cal, prepared=prep,
                            on_progress=on_progress, cancel=cancel)
    out = Path(out_path)
    save_model_atomic(res.model, out, external=external)
    pruned_graph = analyze(res.model, shapes)
    dense_flops = graph.flops or graph.flops_known
    pruned_flops = pruned_graph.flops or pruned_graph.flops_known
    info = {"structure": "channels", **res.info(), "round_to_reason": round_reason,
            "channel_fraction": _fraction_of(cmap, fraction), "flops_reduction_target": target,
            "flops_reduction": (1 - pruned_flops / dense_flops) if dense_flops else None,
            "dense_flops": dense_flops, "pruned_flops": pruned_flops,
            "groups": len(cmap.groups), "prunable_groups": sum(g.prunable for g in cmap.groups),
            "output": str(out), "notes": notes + res.notes}
    fr = info["flops_reduction"]
    if target is not None and fr is not None and abs(fr - target) > 0.05:
        info["notes"].append(f"the FLOPs reduction is {fr:.0%}, not {target:.0%}: with channel counts rounded to "
                             f"multiples of {round_to} that is the closest one fraction of every group reaches "
                             "(--round-to 1 gets nearer)")
    if optimization is not None:
        info["optimization"] = optimization
    if save_as is not None:
        info["saved_as"] = save_channel_optimization(project, save_as, plan_of(res, cmap, graph), info)
    if not validate:
        return info
    return _validate(project, out, info, model, prep, fraction, method, round_to, cal, ev, chosen, engine_reason,
                     shapes=shapes, precision=precision, iterations=iterations, cores=cores,
                     input_values=input_values, on_progress=on_progress, cancel=cancel)


def optimization_plan(project: "Project", name: str) -> dict[str, float]:
    """{group id: fraction removed} of the project's channel optimization ``name`` (UsageError otherwise)."""
    from sparsify_tui.actions.optimizer import load_optimization
    from sparsify_tui.optim.plan import Structure

    opt = load_optimization(project, name)
    if opt is None:
        names = ", ".join(repr(n) for n in project.optimization_names()) or "none"
        raise UsageError(f"project {project.dir} has no optimization {name!r} (it has {names})")
    if not opt.plan.has(Structure.CHANNELS):
        raise UsageError(f"optimization {name!r} plans single weights, not channels: prune it without "
                         "--structure channels")
    plan = opt.plan.sparsities(Structure.CHANNELS)
    if not plan:
        raise UsageError(f"optimization {name!r} removes no channel: nothing to prune")
    return plan


def _fraction_of(cmap, fraction) -> float:
    """The share of the prunable groups' channels a plan (one fraction, or {group: fraction}) removes."""
    from collections.abc import Mapping

    if not isinstance(fraction, Mapping):
        return round(float(fraction), 4)
    groups = [g for g in cmap.groups if g.prunable]
    total = sum(g.channels for g in groups)
    gone = sum(round(float(fraction.get(g.id, 0.0)) * g.channels) for g in groups)
    return round(gone / total, 4) if total else 0.0


def _validate(project, out: Path, info: dict, model, prep, fraction: float, method: str, round_to: int, cal: list,
              ev: list, chosen: str, engine_reason: str, *, shapes, precision, iterations, cores, input_values,
              on_progress, cancel) -> dict:
    """Dense against pruned (and l2 at the same plan) on the evaluation samples, timed with ``chosen``."""
    from sparsify_tui.actions.validate import ab_benchmark_job, save_samples
    from sparsify_tui.onnxkit.modelio import save_model_atomic
    from sparsify_tui.optim import channels as oc
    from sparsify_tui.progress import emit_progress

    with tempfile.TemporaryDirectory(prefix="sparsify-channels-", dir=str(out.parent)) as scratch:
        eval_file = Path(scratch) / "evaluation.npz"
        save_samples(eval_file, ev)
        l2_file = None
        if method != "l2":
            emit_progress(on_progress, 0, 1, "pruning by l2 at the same plan (for comparison)")
            l2 = oc.prune_channels(model, fraction, method="l2", round_to=round_to, prepared=prep)
            l2_file = Path(scratch) / "l2.onnx"
            save_model_atomic(l2.model, l2_file, external=False)
        model_a, model_b = str(project.model_path), str(out)
        if (precision or "").lower() == "int8":
            # INT8 runs a quantized file as is: the dense, pruned (and l2) files are quantized alike (QDQ, per
            # channel) on the calibration samples (the evaluation ones when there are none) before timing
            from sparsify_tui.actions.validate import quantize_file

            emit_progress(on_progress, 0, 1, "quantizing the dense and pruned models to INT8")
            qs = cal or ev
            model_a, model_b = str(Path(scratch) / "dense_int8.onnx"), str(Path(scratch) / "pruned_int8.onnx")
            quantize_file(project.model_path, model_a, qs)
            quantize_file(out, model_b, qs)
            if l2_file is not None:
                quantize_file(l2_file, Path(scratch) / "l2_int8.onnx", qs)
                l2_file = Path(scratch) / "l2_int8.onnx"
            info["notes"].append(f"INT8: the dense, pruned and l2 files were quantized (QDQ, per channel) on "
                                 f"{len(qs)} samples for the benchmark; {out} itself is fp32")
        emit_progress(on_progress, 0, 1, f"benchmarking dense against pruned ({chosen})")
        from sparsify_tui.engines.runner import run_job

        job = ab_benchmark_job(model_a, model_b, engine=chosen, batch_size=1, cores=cores, iterations=iterations,
                               warmup=5, repeats=5, input_shapes=shapes, eval_data=eval_file,
                               model_magnitude=l2_file, input_values=input_values, precision=precision)
        r = run_job(job, on_progress=on_progress, cancel=cancel, timeout_s=900, cores=cores)
    doc = dict(info)
    for k, v in r.items():
        if k.startswith("output_change") or k in ("engine", "engine_version", "precision", "dense_ms", "pruned_ms",
                                                   "measured_speedup", "median_ratio", "speedup_spread",
                                                   "cores", "iterations", "quality", "departure"):
            doc[k] = v
    doc["engine_reason"] = r.get("engine_reason") or engine_reason
    doc["l2_output_change"] = r.get("magnitude_output_change") if l2_file is not None else r.get("output_change")
    doc["calibration_samples"] = len(cal)
    doc["evaluation_samples"] = len(ev)
    if r.get("departure"):
        doc["notes"] = [r["departure"], *doc["notes"]]
    return doc


# ---------------------------------------------------------------- channel plans stored in the project
def plan_of(res, cmap, graph) -> "Any":
    """The :class:`~sparsify_tui.optim.plan.Plan` of a channel pruning: one ``structure = channels`` entry per
    pruned group (its share of channels removed, exactly the counts kept, so pruning the plan again with no
    rounding keeps the same channels' counts), listing the group's producers as layer ids."""
    from sparsify_tui.optim.plan import LayerPlan, Plan, Structure

    by_name = {lay.name: lay.id for lay in graph.layers}
    sizes = {g.id: g for g in cmap.groups}
    plan = Plan()
    for gid, kept in sorted(res.kept.items()):
        g = sizes[gid]
        layers = tuple(by_name.get(p, p) for p in g.producers)
        plan.entries[gid] = LayerPlan(sparsity=(g.channels - kept) / g.channels, structure=Structure.CHANNELS,
                                      layers=layers)
    return plan


def save_channel_optimization(project: "Project", name: str, plan, info: dict) -> dict:
    """Store ``plan`` (channel entries) as the optimization ``name`` of ``project`` (replacing one of that name);
    its estimates keep the pruning's ``flops_reduction``, ``round_to`` and ``method``."""
    from sparsify_tui.actions.optimizer import save_optimization
    from sparsify_tui.optim.optimization import Optimization, now_iso

    name = str(name or "").strip()
    if not name:
        raise UsageError("--save-as needs a name for the optimization")
    plan.estimates = {k: info[k] for k in ("flops_reduction", "round_to", "method", "channel_fraction")
                      if info.get(k) is not None}
    opt = Optimization(name=name, created=now_iso(), plan=plan,
                       notes=f"channel plan from prune --structure channels ({info.get('method')}, round to "
                             f"{info.get('round_to')})")
    save_optimization(project, opt)
    return {"name": name, "groups": len(plan.entries), "digest": plan.digest()}


def prune_channel_plan(model_path: str | Path, plan, out_path: str | Path, *, method: str = "l2",
                       samples: list | None = None, input_shapes: dict | None = None, graph=None,
                       cores: int | None = None, cancel=None) -> dict:
    """Prune a stored channel plan (its share of channels removed per group, no rounding on top: the plan's own
    counts) from ``model_path`` into ``out_path`` by ``method`` (``reconstruct`` refits on ``samples``).
    Returns ``structure``, ``method``, ``flops_reduction`` (the files' FLOPs, as the analysis counts them),
    ``pruned_groups``, ``removed_channels``, ``channel_share`` (of the plan's groups' channels) and ``notes``."""
    from sparsify_tui.analysis import analyze
    from sparsify_tui.onnxkit.modelio import load_model_copy, save_model_atomic
    from sparsify_tui.optim import channels as oc
    from sparsify_tui.optim.plan import Structure

    method = oc.check_method(method)
    fractions = plan.sparsities(Structure.CHANNELS)
    if not fractions:
        raise UsageError("this plan removes no channel group")
    if method == "reconstruct" and not samples:
        method = "l2"  # nothing to refit on
    model, external, _src = load_model_copy(model_path)
    prep = oc.prepare(model, input_shapes=oc.sample_shapes(samples) or input_shapes)
    res = oc.prune_channels(model, fractions, method=method, round_to=1, samples=samples, prepared=prep,
                            cores=cores, cancel=cancel)
    save_model_atomic(res.model, out_path, external=external)
    graph = graph if graph is not None else analyze(model_path, input_shapes)
    pruned = analyze(res.model, input_shapes)
    dense_flops = graph.flops or graph.flops_known
    pruned_flops = pruned.flops or pruned.flops_known
    sizes = {g.id: g.channels for g in prep[2].groups}
    total = sum(sizes[g] for g in fractions)
    removed = sum(len(v) for v in res.removed.values())
    return {"structure": "channels", "method": res.method,
            "flops_reduction": (1 - pruned_flops / dense_flops) if dense_flops else None,
            "pruned_groups": len(res.removed), "removed_channels": removed,
            "channel_share": removed / total if total else 0.0, "notes": list(res.notes)}


# ---------------------------------------------------------------- export of a channel optimization
def channel_recipe(opt, graph, name_map=None, warnings: list | None = None, **kw) -> tuple[str | None, str]:
    """(SparseML recipe, "") when the channel plan can be written as one, else (None, the reason in one line).

    SparseML removes whole filters with a ``!GMPruningModifier`` of ``mask_type: filter`` per weight, each
    layer choosing its own filters: that is this plan only when every pruned group is one layer (no residual
    Add, Concat or depthwise convolution ties its channels to another layer's)."""
    from sparsify_tui.optim.plan import LayerPlan, Structure
    from sparsify_tui.optim.recipe import export_recipe

    pruned = {k: e for k, e in opt.plan.entries.items() if e.structure is Structure.CHANNELS and e.sparsity > 0}
    if not pruned:
        return None, "no SparseML recipe: the plan removes no channel"
    tied = [k for k, e in pruned.items() if len(e.layers) != 1]
    if tied:
        return None, (f"no SparseML recipe: {len(tied)} of the plan's {len(pruned)} pruned channel groups tie "
                      "channels across several layers (residual adds, concatenations, depthwise convolutions), "
                      "which SparseML's per-layer filter masks cannot keep in step; the pruned ONNX is the export")
    flat = opt.copy()
    flat.plan.entries = {e.layers[0]: LayerPlan(e.sparsity, overridden=e.overridden) for e in pruned.values()}
    flat.pruning.mask_type = "filter"
    flat.pruning.overrides.clear()
    flat.pruning.exclusions.clear()
    return export_recipe(flat, graph, name_map, warnings, **kw), ""


def export_channel_optimization(project: "Project", name: str, onnx_path: str | Path, *,
                                on_progress: Callable[[dict], Any] | None = None) -> dict:
    """Write the channel optimization ``name``'s pruned model (``l2`` order, its exact channel counts) to
    ``onnx_path``, and a script next to it that runs it (the engine of the plan's channel perf profile, else
    ONNX Runtime); the prune info with ``onnx_path`` and ``code`` (the script's text)."""
    from sparsify_tui.actions.deploy import _input_shapes
    from sparsify_tui.actions.optimizer import load_optimization
    from sparsify_tui.engines.registry import get_engine, resolve_auto

    info = prune_channels_project(project, onnx_path, optimization=name, on_progress=on_progress)
    opt = load_optimization(project, name)
    engine = ""
    pid = opt.perf_profile_id if opt is not None else ""
    entry = next((e for e in project.profiles_of("perf_channels") if e.id == pid), None) if pid else None
    if entry is not None and entry.engine:
        engine = entry.engine
    engine = engine or resolve_auto("auto")[0]
    from sparsify_tui.settings import usable_cores

    code = get_engine(engine).deploy_snippet().format(
        model=Path(onnx_path).name, precision="fp32", cores=usable_cores(), batch=1,
        shapes=repr(_input_shapes(project)), sparse=f", optimization {name!r}: channels removed",
        hint="f32", int8_note="")
    return {**info, "onnx_path": str(onnx_path), "code": code, "code_engine": engine}
