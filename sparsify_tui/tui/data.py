"""What the screens show, computed without Textual: layer rows, sensitivities, totals.

This module joins the analysed model (``analysis.ModelGraph``) with a perf
profile and a loss profile (plain JSON documents, see ``profiles``) into
:class:`LayerRow` objects, and holds the pure functions that the layer
summaries and the charts need (interpolation over sparsity levels, Value
Display transforms, summaries by op type, number formatting). Keeping it free
of Textual makes it fast to test and cheap to import.

Definitions used on screen (also in the help screen):

* **Baseline MS**: time of the dense model (or layer) per batch, in ms.
* **Performance Sensitivity** of a layer at sparsity s: its baseline time minus
  its time at s (ms saved). Between measured levels we interpolate linearly.
* **Loss Sensitivity** at s: the loss profile's value for that layer at s (for
  the approximated profile a weight-magnitude proxy; for one-shot the measured
  change of the outputs when that layer alone is pruned to s).
* **Share of total**: the layer's time as a percentage of the sum over layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from sparsify_tui.textfmt import fmt_count

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph

VALUE_DISPLAYS = ("measured", "percent", "log")
VALUE_DISPLAY_LABELS = {"measured": "measured", "percent": "% of total", "log": "log (ln)"}
DEFAULT_EVAL_SPARSITY = 0.9


def level_key(level: float) -> str:
    """Same format as ``profiles.level_key`` (0.9 -> "0.9"), without importing the core."""
    return repr(round(float(level), 6))


def parse_levels(d: dict[str, Any] | None) -> list[tuple[float, float]]:
    """``{"0.0": 1.0, "0.9": 0.3}`` -> sorted ``[(0.0, 1.0), (0.9, 0.3)]``; bad entries skipped."""
    out: list[tuple[float, float]] = []
    for k, v in (d or {}).items():
        try:
            x, y = float(k), float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x) and math.isfinite(y):
            out.append((x, y))
    out.sort()
    return out


def interpolate(points: list[tuple[float, float]], s: float) -> float | None:
    """Linear interpolation over sorted (level, value) points; clamps at the ends; None if empty."""
    if not points:
        return None
    if s <= points[0][0]:
        return points[0][1]
    if s >= points[-1][0]:
        return points[-1][1]
    lo = 0
    hi = len(points) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if points[mid][0] <= s:
            lo = mid
        else:
            hi = mid
    (x0, y0), (x1, y1) = points[lo], points[hi]
    if x1 == x0:
        return y0
    return y0 + (y1 - y0) * (s - x0) / (x1 - x0)


@dataclass
class LayerRow:
    """One row of the layer summaries: a layer of the model or an engine-internal step."""

    id: str
    name: str
    op_type: str
    depth: int | None
    params: int | None = None
    flops: int | None = None
    prunable: bool = False
    prunable_params: int = 0
    baseline_ms: float | None = None
    ms_points: list[tuple[float, float]] = field(default_factory=list)
    loss_points: list[tuple[float, float]] = field(default_factory=list)
    loss_eval: float | None = None  # the loss profile's value at its evaluation sparsity
    quant_sens: float | None = None  # the quant profile's INT8 sensitivity of this layer
    group: list[str] = field(default_factory=list)
    engine_internal: bool = False
    layer: Any = None  # analysis.graph.Layer when the model was analysed
    kernel: str = ""  # OpenVINO: the kernel (exec_type) that computed it, with its runtime precision

    def ms_at(self, s: float | None) -> float | None:
        """Time at sparsity s (None = baseline)."""
        if s is None or s == 0:
            return self.baseline_ms
        if self.ms_points:
            return interpolate(self.ms_points, s)
        return None if not self.prunable else self.baseline_ms

    def perf_sensitivity(self, s: float) -> float | None:
        """Baseline ms minus ms at s (time saved); None without a perf profile."""
        if self.baseline_ms is None or not self.ms_points:
            return None
        t = interpolate(self.ms_points, s)
        return None if t is None else self.baseline_ms - t

    def loss_sensitivity(self, s: float) -> float | None:
        if not self.loss_points:
            return None
        return interpolate(self.loss_points, s)


@dataclass
class ModelData:
    """Everything the project screens show, rebuilt when a profile lands."""

    rows: list[LayerRow]
    perf: dict | None = None
    loss: dict | None = None
    graph: "ModelGraph | None" = None
    quant: dict | None = None
    perf_levels: list[float] = field(default_factory=list)
    loss_levels: list[float] = field(default_factory=list)
    eval_sparsity: float = DEFAULT_EVAL_SPARSITY

    @property
    def op_types(self) -> list[str]:
        return sorted({r.op_type for r in self.rows})

    @property
    def summary_levels(self) -> list[float]:
        """The levels the Summary Type cycles through (baseline = None first)."""
        levels = [x for x in self.perf_levels if x > 0]
        if not levels:
            levels = [x for x in self.loss_levels if x > 0 and round(x * 20) == x * 20]
            levels = levels or [x for x in self.loss_levels if x > 0]
        return levels

    def total_ms(self, s: float | None = None) -> float | None:
        vals = [r.ms_at(s) for r in self.rows]
        known = [v for v in vals if v is not None]
        return sum(known) if known else None

    def row(self, layer_id: str) -> LayerRow | None:
        for r in self.rows:
            if r.id == layer_id:
                return r
        return None


def build_model_data(graph: "ModelGraph | None" = None, perf: dict | None = None, loss: dict | None = None,
                     quant: dict | None = None) -> ModelData:
    """Join the analysed model and the profiles into rows, in Layer Depth order.

    Layers come from the graph when it is there (all of them, with params and
    FLOPs); perf rows whose id matches no layer (engine-internal steps such as
    DeepSparse's Shuffle) are added after the layer they follow in the profile.
    """
    perf_layers = {str(e.get("id")): e for e in (perf or {}).get("layers") or []}
    rows = _graph_rows(graph)
    by_id = {r.id: r for r in rows}
    rows = _with_profile_only_rows(rows, by_id, perf_layers, graph)
    _apply_perf(by_id, perf_layers)
    _apply_loss(by_id, loss)
    for entry in (quant or {}).get("layers") or []:
        row = by_id.get(str(entry.get("id")))
        if row is not None:
            row.quant_sens = _float_or_none(entry.get("sensitivity"))
    eval_s = _float_or_none((loss or {}).get("eval_sparsity"))
    return ModelData(rows=rows, perf=perf, loss=loss, graph=graph, quant=quant,
                     perf_levels=sorted(float(x) for x in (perf or {}).get("levels") or []),
                     loss_levels=sorted(float(x) for x in (loss or {}).get("levels") or []),
                     eval_sparsity=DEFAULT_EVAL_SPARSITY if eval_s is None else eval_s)


def _float_or_none(x: Any) -> float | None:
    try:
        return float(x) if x is not None else None
    except (TypeError, ValueError):
        return None


def _graph_rows(graph: "ModelGraph | None") -> list[LayerRow]:
    """One row per layer of the analysed model (none without a model)."""
    if graph is None:
        return []
    return [LayerRow(id=layer.id, name=layer.name or layer.id, op_type=layer.op_type, depth=layer.depth,
                     params=layer.params, flops=layer.flops, prunable=bool(layer.prunable),
                     prunable_params=layer.prunable_params, layer=layer)
            for layer in graph.layers]


def _with_profile_only_rows(rows: list[LayerRow], by_id: dict[str, LayerRow], perf_layers: dict[str, dict],
                            graph: "ModelGraph | None") -> list[LayerRow]:
    """``rows`` with the perf rows the graph lacks (all of them without a graph), each after the one it follows."""
    previous: LayerRow | None = None
    inserts: list[tuple[LayerRow | None, LayerRow]] = []
    for lid, entry in perf_layers.items():
        row = by_id.get(lid)
        if row is None:
            row = LayerRow(
                id=lid,
                name=str(entry.get("name") or lid),
                op_type=str(entry.get("op_type") or "?"),
                depth=None if graph is not None else len(by_id),
                engine_internal=bool(entry.get("engine_internal")) or graph is not None,
            )
            by_id[lid] = row
            inserts.append((previous, row))
        previous = row
    if not inserts:
        return rows
    if graph is None:
        return [r for _, r in inserts]
    after: dict[int, list[LayerRow]] = {}
    for prev, row in inserts:
        after.setdefault(id(prev), []).append(row)
    merged = list(after.get(id(None), []))
    for r in rows:
        merged.append(r)
        merged.extend(after.get(id(r), []))
    return merged


def _apply_perf(by_id: dict[str, LayerRow], perf_layers: dict[str, dict]) -> None:
    """Each row's times from the perf profile: baseline, by level, its fused group, its kernel."""
    for lid, entry in perf_layers.items():
        row = by_id[lid]
        row.baseline_ms = _float_or_none(entry.get("baseline_ms"))
        row.ms_points = parse_levels(entry.get("ms_by_level"))
        grp = entry.get("group") or []
        row.group = [str(g) for g in grp] if isinstance(grp, (list, tuple)) else [str(grp)]
        if entry.get("kernel"):
            prec = entry.get("runtime_precision")
            row.kernel = f"{entry['kernel']} ({prec})" if prec else str(entry["kernel"])


def _apply_loss(by_id: dict[str, LayerRow], loss: dict | None) -> None:
    """Each row's loss sensitivities by level and at the evaluation sparsity."""
    for entry in (loss or {}).get("layers") or []:
        row = by_id.get(str(entry.get("id")))
        if row is None:
            continue
        row.loss_points = parse_levels(entry.get("sensitivity_by_level"))
        row.loss_eval = _float_or_none(entry.get("sensitivity"))


# ---------------------------------------------------------------- value display
def transform(value: float | None, display: str, total: float | None) -> float | None:
    """Value Display: measured (as is), percent of total, or natural log (None when <= 0)."""
    if value is None:
        return None
    if display == "percent":
        if not total:
            return None
        return 100.0 * value / total
    if display == "log":
        return math.log(value) if value > 0 else None
    return value


def ellipsize_middle(text: str, width: int) -> str:
    """A long layer name cut in the middle so both ends stay: ``layer1.0.conv1`` in 12 cells ->
    ``layer1…conv1`` (the first and last parts of a dotted or slashed name, then as much of the end as fits)."""
    import re

    text = "" if text is None else str(text)
    if width < 2 or len(text) <= width:
        return text
    parts = re.split(r"([./:])", text)
    head, last = parts[0], parts[-1]
    if len(parts) >= 3 and 0 < len(head) and len(head) + 1 + len(last) <= width:
        keep_tail = width - 1 - len(head)
        return head + "\u2026" + text[len(text) - keep_tail:]
    tail = max(1, (2 * (width - 1) + 2) // 3)  # otherwise keep more of the end: the most specific part
    head_n = width - 1 - tail
    return text[:head_n] + "\u2026" + text[len(text) - tail:]


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    if ax == 0:
        return "0"
    return plain_sig(x, 3)  # 0.000082, never 8.2e-05 next to 0.018 in one column


def fmt_sens(x: float | None) -> str:
    if x is None:
        return "-"
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 0.01:
        return f"{x:.3f}"
    return plain_sig(x, 3)  # 0.00467 next to 0.036: one notation per column


def plain_sig(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits in plain decimal notation (no exponent) down to 1e-9."""
    import math

    ax = abs(x)
    if ax == 0 or not math.isfinite(x):
        return f"{x:g}"
    if ax < 1e-9:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(ax)))
    return f"{x:.{decimals}f}"


def fmt_value(x: float | None, display: str, kind: str) -> str:
    """Format a cell according to the Value Display and the column kind (count, ms, sens)."""
    if x is None:
        return "-"
    if display == "percent":
        return f"{x:.2f}%"
    if display == "log":
        return f"{x:.2f}"
    if kind == "count":
        return fmt_count(x)
    if kind == "ms":
        return fmt_ms(x)
    return fmt_sens(x)


def fmt_level(s: float | None) -> str:
    if s is None:
        return "baseline"
    return f"{s * 100:g}%"


# ---------------------------------------------------------------- summaries
@dataclass
class OpSummary:
    op_type: str
    count: int
    prunable: int
    params: int
    flops: int | None
    ms: float | None
    perf_sens: float | None
    loss_sens: float | None


def op_summaries(rows: Iterable[LayerRow], level: float | None, sens_level: float) -> list[OpSummary]:
    """Layer Summaries by op type: counts and sums, sorted by time (then FLOPs) descending."""
    acc: dict[str, OpSummary] = {}
    for r in rows:
        s = acc.get(r.op_type)
        if s is None:
            s = acc[r.op_type] = OpSummary(r.op_type, 0, 0, 0, 0, None, None, None)
        s.count += 1
        s.prunable += 1 if r.prunable else 0
        s.params += r.params or 0
        if r.flops is None or s.flops is None:
            s.flops = None if r.flops is None and not r.engine_internal else s.flops
        if r.flops is not None and s.flops is not None:
            s.flops += r.flops
        ms = r.ms_at(level)
        if ms is not None:
            s.ms = (s.ms or 0.0) + ms
        ps = r.perf_sensitivity(sens_level)
        if ps is not None:
            s.perf_sens = (s.perf_sens or 0.0) + ps
        ls = r.loss_sensitivity(sens_level)
        if ls is not None:
            s.loss_sens = (s.loss_sens or 0.0) + ls
    return sorted(acc.values(), key=lambda o: (-(o.ms or 0.0), -(o.flops or 0), o.op_type))


# ---------------------------------------------------------------- totals
@dataclass
class Totals:
    layers: int = 0
    prunable_layers: int = 0
    params: int | None = None
    prunable_params: int | None = None
    flops: int | None = None
    flops_known: int | None = None
    sparsity: float | None = None
    baseline_ms: float | None = None
    items_per_second: float | None = None
    spread_ms: tuple[float, float] | None = None
    engine: str | None = None
    engine_version: str | None = None
    engine_reason: str | None = None
    approximated: bool = False
    batch_size: int | None = None
    cores: int | None = None
    isa: list[str] = field(default_factory=list)
    bf16: bool | None = None
    average_loss_sensitivity: float | None = None
    loss_method: str | None = None
    quant_output_change: float | None = None
    quant_output_change_text: str = ""  # the value with its unit (sparsify_tui.metrics.format_change)
    quant_output_change_reading: str = ""
    fp32_ms: float | None = None
    int8_ms: float | None = None


def totals(graph: "ModelGraph | None" = None, perf: dict | None = None, loss: dict | None = None,
           machine: dict | None = None, quant: dict | None = None) -> Totals:
    t = Totals()
    if graph is not None:
        t.layers = len(graph.layers)
        t.prunable_layers = len(graph.prunable_layers)
        t.params = graph.params
        t.prunable_params = graph.prunable_params
        t.flops = graph.flops
        t.flops_known = graph.flops_known
        t.sparsity = graph.sparsity
    if perf:
        t.baseline_ms = _num(perf.get("baseline_ms"))
        t.items_per_second = _num(perf.get("items_per_second"))
        spread = perf.get("spread_ms")
        if isinstance(spread, (list, tuple)) and len(spread) == 2:
            a, b = _num(spread[0]), _num(spread[1])
            if a is not None and b is not None:
                t.spread_ms = (a, b)
        elif isinstance(spread, dict):
            a, b = _num(spread.get("min")), _num(spread.get("max"))
            if a is not None and b is not None:
                t.spread_ms = (a, b)
        t.engine = perf.get("engine")
        t.engine_version = perf.get("engine_version")
        t.engine_reason = perf.get("engine_reason")
        t.approximated = bool(perf.get("approximated"))
        t.batch_size = perf.get("batch_size")
        t.cores = perf.get("cores")
        m = perf.get("machine") or {}
        if isinstance(m, dict) and m.get("isa"):
            t.isa = list(m.get("isa") or [])
            t.bf16 = m.get("bf16")
    if not t.isa and machine:
        t.isa = list(machine.get("isa") or [])
        t.bf16 = machine.get("bf16")
    if loss:
        t.average_loss_sensitivity = _num(loss.get("average_sensitivity"))
        t.loss_method = loss.get("method")
    if quant and isinstance(quant.get("model"), dict):
        t.quant_output_change = _num(quant["model"].get("output_change"))
        from sparsify_tui.metrics import format_change

        t.quant_output_change_text, t.quant_output_change_reading = format_change(quant["model"])
        t.fp32_ms = _num(quant["model"].get("fp32_ms"))
        t.int8_ms = _num(quant["model"].get("int8_ms"))
    return t


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def quality_warnings(perf: dict | None) -> list[str]:
    """The warnings a perf profile carries (issue 16: a busy machine, instrumentation far from the
    deployed engine, a level slower than the one before); [] for older profiles without ``quality``."""
    q = (perf or {}).get("quality")
    if not isinstance(q, dict):
        return []
    return [str(w) for w in q.get("warnings") or [] if isinstance(w, str)]


def warning_groups(warnings: list[str]) -> list[tuple[str, list[str]]]:
    """The warnings by kind (``profiles.perf.warning_kind``), kinds in order of first appearance."""
    from sparsify_tui.profiles.perf import warning_kind

    groups: dict[str, list[str]] = {}
    for w in warnings:
        groups.setdefault(warning_kind(w), []).append(w)
    return list(groups.items())


QUALITY_MARK = "⚠"
