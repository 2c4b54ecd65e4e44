"""Summary Type "optimized": each layer's and the model's values under the selected optimization.

Pure functions (no Textual): given the layer rows of the layer summaries
(``tui.data.LayerRow``) and an optimization's per-layer sparsities, compute

* Current Timing: the layer's time at its planned sparsity (interpolated in
  the perf profile; the baseline for layers the plan leaves dense),
* Current FLOPS: ``flops * (1 - s)`` for a pruned layer,
* Current Parameters: ``params - round(s * prunable_params)``,

next to the baseline values, and the same for the whole model (the model's
current time is its Baseline MS scaled by the ratio of the summed layer
times, as the optimizer's estimate does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from sparsify_tui.errors import UsageError
from sparsify_tui.optim.plan import Plan, Structure

if TYPE_CHECKING:
    from sparsify_tui.project import Project

OPTIMIZED = "optimized"


@dataclass
class OptimizedLayer:
    id: str
    sparsity: float
    baseline_ms: float | None
    current_ms: float | None
    baseline_flops: int | None
    current_flops: int | None
    baseline_params: int | None
    current_params: int | None


@dataclass
class OptimizedSummary:
    name: str
    layers: dict[str, OptimizedLayer] = field(default_factory=dict)
    baseline_ms: float | None = None
    current_ms: float | None = None
    baseline_flops: int = 0
    current_flops: int = 0
    baseline_params: int = 0
    current_params: int = 0
    channels: bool = False  # a channel plan: each layer of a group shown with the group's share of channels removed

    @property
    def speedup(self) -> float | None:
        if self.baseline_ms and self.current_ms:
            return self.baseline_ms / self.current_ms
        return None


def plan_sparsities(opt: dict | Any) -> dict[str, float]:
    """{layer id: sparsity} of an optimization (dict from the project or Optimization), read by its Plan.

    A stored plan that cannot be read shows as dense here (opening it says why).
    """
    plan = opt.plan if not isinstance(opt, dict) else None
    if plan is None:
        try:
            plan = Plan.from_dict(opt)
        except UsageError:
            return {}
    out = plan.sparsities()
    for e in plan.entries.values():  # a channel group: each of its layers loses that share of its channels
        if e.structure is Structure.CHANNELS and e.sparsity > 0:
            for lid in e.layers:
                out[lid] = max(out.get(lid, 0.0), float(e.sparsity))
    return out


def is_channel(opt: dict | Any) -> bool:
    try:
        plan = opt.plan if not isinstance(opt, dict) else Plan.from_dict(opt)
    except UsageError:
        return False
    return plan.has(Structure.CHANNELS)


def optimized_summary(rows: Iterable[Any], opt: dict | Any, model_baseline_ms: float | None = None) -> OptimizedSummary:
    """Current values of every row under ``opt`` (rows: ``tui.data.LayerRow``)."""
    sp = plan_sparsities(opt)
    name = opt.get("name", "?") if isinstance(opt, dict) else opt.name
    out = OptimizedSummary(name=str(name), channels=is_channel(opt))
    sum_base = 0.0
    sum_cur = 0.0
    for r in rows:
        s = sp.get(r.id, 0.0) if r.prunable else 0.0
        base_ms = r.baseline_ms
        if out.channels:  # fewer output channels: the layer's time scaled like its FLOPs (not a sparse kernel's)
            cur_ms = base_ms * (1.0 - s) if base_ms is not None else None
        else:
            cur_ms = r.ms_at(s) if s > 0 else base_ms
        if cur_ms is None:
            cur_ms = base_ms
        flops = r.flops
        cur_flops = None if flops is None else int(round(flops * (1.0 - s)))
        params = r.params
        cur_params = None if params is None else int(params - round(s * (r.prunable_params or 0)))
        out.layers[r.id] = OptimizedLayer(r.id, s, base_ms, cur_ms, flops, cur_flops, params, cur_params)
        if base_ms is not None:
            sum_base += base_ms
            sum_cur += cur_ms if cur_ms is not None else base_ms
        out.baseline_flops += flops or 0
        out.current_flops += cur_flops or 0
        out.baseline_params += params or 0
        out.current_params += cur_params or 0
    if sum_base > 0:
        base = model_baseline_ms if model_baseline_ms else sum_base
        out.baseline_ms = base
        out.current_ms = base * sum_cur / sum_base
    return out


def selected_optimization(project: "Project", name: str | None = None) -> dict | None:
    """The optimization the layer summaries use: ``name``, else the project's first one (None if none)."""
    opts = list(getattr(project, "optimizations", None) or [])
    if not opts:
        return None
    if name:
        for o in opts:
            if o.get("name") == name:
                return o
    return opts[0]


# ---------------------------------------------------------------- hooks used by the layer summaries screen
def _fmt_ms(x: float | None) -> str:
    from sparsify_tui.tui.data import fmt_ms

    return fmt_ms(x)


def refresh_optimized(screen: Any, project: "Project | None") -> None:
    """Recompute ``screen.optimized`` (when the Summary Type is "optimized") from the current data.

    ``screen``: the layer summaries' view-model (``tui.views.layers.LayerView``).
    """
    if getattr(screen, "optimized", None) is None or screen.data is None:
        return
    opt = selected_optimization(project, screen.optimized.name)
    if opt is None:
        screen.optimized = None
        return
    perf = screen.data.perf or {}
    screen.optimized = optimized_summary(screen.data.rows, opt, perf.get("baseline_ms"))


def cycle_summary(screen: Any, project: "Project | None") -> bool:
    """Key ``t`` with an optimization in the project: baseline -> levels -> optimized -> baseline.

    Returns False (nothing done) when the project has no optimization, so the
    screen keeps its own behaviour.
    """
    opt = selected_optimization(project)
    if opt is None or screen.data is None:
        if getattr(screen, "optimized", None) is not None:
            screen.optimized = None
            return True
        return False
    levels = screen.data.summary_levels
    choices: list[Any] = [None] + list(levels) + [OPTIMIZED]
    current = OPTIMIZED if getattr(screen, "optimized", None) is not None else screen.level
    i = choices.index(current) if current in choices else 0
    nxt = choices[(i + 1) % len(choices)]
    if nxt == OPTIMIZED:
        screen.level = None
        perf = screen.data.perf or {}
        screen.optimized = optimized_summary(screen.data.rows, opt, perf.get("baseline_ms"))
    else:
        screen.optimized = None
        screen.level = nxt
    return True


def column_labels(screen: Any, labels: dict[str, str]) -> dict[str, str]:
    if getattr(screen, "optimized", None) is None:
        return labels
    return {**labels, "ms": "Cur ms", "params": "Cur params", "flops": "Cur FLOPs"}


def current_values(screen: Any, row: Any, ms: float | None) -> tuple[float | None, int | None, int | None]:
    """(ms, params, flops) to show for ``row``: current ones under the optimization, else as given."""
    o = getattr(screen, "optimized", None)
    layer = o.layers.get(row.id) if o is not None else None
    if layer is None:
        return ms, row.params, row.flops
    return layer.current_ms, layer.current_params, layer.current_flops


def summary_label(screen: Any, default: str) -> str:
    """The status line's Summary Type: the model's current values beside the baseline when optimized."""
    from sparsify_tui.tui.data import fmt_count

    o = getattr(screen, "optimized", None)
    if o is None:
        return default
    parts = [f"optimized {o.name!r}" + (" (channel plan: a group's layers lose its share of their output "
                                          "channels, times scaled like FLOPs; the optimizer shows the groups)"
                                          if o.channels else "")]
    if o.current_ms is not None:
        sp = f" ({o.speedup:.2f}x)" if o.speedup else ""
        parts.append(f"Current Timing {_fmt_ms(o.current_ms)} vs {_fmt_ms(o.baseline_ms)} ms{sp}")
    parts.append(f"Current FLOPS {fmt_count(o.current_flops)} vs {fmt_count(o.baseline_flops)}")
    parts.append(f"Current Parameters {fmt_count(o.current_params)} vs {fmt_count(o.baseline_params)}")
    return ", ".join(parts)
