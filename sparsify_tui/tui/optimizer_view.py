"""What the optimizer screen shows, computed without Textual: table columns, cells, the estimates panel.

The screen (``tui/screens/optimizer.py``) puts these in its widgets; the
cells are Rich ``Text`` objects and the estimates panel a Rich ``Group``.
"""

from __future__ import annotations

import functools
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sparsify_tui.optim.optimization import NO_MEASURED_LOSS_NOTE
from sparsify_tui.tui.data import fmt_count, fmt_ms, fmt_sens

LAYER_COLUMNS = [
    ("name", "Layer"),
    ("sparsity", "Sparsity"),
    ("speedup", "Speedup"),
    ("time", "Est ms vs base"),
    ("loss", "Loss sens"),
    ("perf", "Perf sens"),
    ("note", "Excluded / note"),
    ("recovery", "Recovery"),
    ("params", "Params"),
    ("op", "Op"),
]
LAYER_WIDTHS = {"name": 20, "op": 8, "params": 8, "sparsity": 8, "speedup": 7, "time": 14,
                "loss": 13, "perf": 13, "recovery": 8, "note": 24}
LR_COLUMNS = [("n", "#"), ("kind", "Kind"), ("start", "Start"), ("end", "End"), ("lr", "Init LR"), ("args", "Args")]


def cell(text: str, style: str = "", justify: str = "left") -> Text:
    return Text(text, style=style, justify=justify, no_wrap=True, overflow="ellipsis", end="")


# The layer table's changing cells repeat the same few thousand values ("85.3%", "1.42x"):
# one shared Text per value (never mutated: the tables copy before padding) saves most of
# the ~1000 Text constructions an edit on a 500-layer plan would need.
shared_cell = functools.lru_cache(maxsize=8192)(cell)


RANK_STYLE = {"top 5%": "bold red", "high": "yellow", "medium": "", "low": "dim"}


def layer_specs(le: Any) -> dict[str, tuple[str, str, str]]:
    """(text, style, justify) of the cells of one LayerEstimate that change with the plan."""
    # * = your override; ✗ = left dense (excluded by you, filtered, not prunable: the Note column says why)
    sp = f"{le.sparsity * 100:.1f}%" + (" *" if le.overridden else " ✗" if le.excluded_reason else "")
    if le.est_ms is not None and le.baseline_ms is not None:
        tm = f"{fmt_ms(le.est_ms)} {100 * le.est_ms / le.baseline_ms:.0f}%" if le.baseline_ms > 0 else fmt_ms(le.est_ms)
    elif le.flops_before is not None:
        tm = f"{fmt_count(le.flops_after)}/{fmt_count(le.flops_before)} fl"
    else:
        tm = "-"
    perf = "-" if le.perf_sensitivity is None else fmt_sens(le.perf_sensitivity)
    return {
        "sparsity": (sp, "bold" if le.overridden else "italic yellow" if le.excluded_reason else "", "right"),
        "speedup": (f"{le.est_speedup:.2f}x", "", "right"),
        "time": (tm, "", "right"),
        "loss": (f"{fmt_sens(le.loss_sensitivity)} {le.loss_rank}", RANK_STYLE.get(le.loss_rank, ""), "left"),
        "perf": (f"{perf} {le.perf_rank}", RANK_STYLE.get(le.perf_rank, ""), "left"),
        "recovery": (f"{le.recovery:.2f}", "", "right"),
        "note": (le.excluded_reason or "", "italic yellow" if le.excluded_reason else "", "left"),
    }


def layer_sig(le: Any) -> tuple:
    """Everything a layer row shows that an edit can change (equal: the row needs no formatting)."""
    return (le.sparsity, le.overridden, le.est_speedup, le.est_ms, le.baseline_ms, le.flops_after,
            le.loss_sensitivity, le.perf_sensitivity, le.recovery, le.excluded_reason, le.loss_rank,
            le.perf_rank)


def title_text(name: str, names: list[str], dirty: bool, save_error: str, readonly: bool) -> Text:
    """The title line: the optimization, which version of how many, saved or not (and why not)."""
    idx = names.index(name) + 1 if name in names else len(names) + 1
    state = "unsaved" if dirty else "saved"
    if save_error:
        state = f"not saved: {save_error}"
    t = Text()
    t.append(f"Optimization {name!r}", style="bold")
    t.append(f"  version {idx} of {max(len(names), idx)}  ({state})", style="dim")
    if readonly:
        t.append("  read-only project: viewing only, edits are off", style="bold red")
    return t


def estimates_text(est: Any, width: int = 120, profile: str = "") -> Group:
    """The estimates panel: speedup, time vs baseline, FLOPs and params reduction, recovery confidence.

    Three columns, two lines, and a third line for notes (approximated, target not reachable, INT8).
    """
    def pair(label: str, value: str, style: str = "", extra: str = "") -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(label + " ", style="bold")
        t.append(value, style=style)
        if extra:
            t.append(" " + extra, style="dim")
        return t

    narrow = width < 100
    grid = Table.grid(expand=True, padding=(0, 1 if narrow else 2))
    for r in ((1, 1) if narrow else (10, 13, 10)):
        grid.add_column(ratio=r, no_wrap=True)
    if est.estimated_ms is not None and est.baseline_ms is not None:
        tvb = pair("Est. Time" if narrow else "Est. Time vs Baseline",
                   f"{fmt_ms(est.estimated_ms)}/{fmt_ms(est.baseline_ms)} ms",
                   extra=f"{100 * est.estimated_ms / est.baseline_ms:.0f}%" if est.baseline_ms else "")
    else:
        tvb = pair("Est. Time vs Baseline", "- (FLOPs only)")
    cells = [
        pair("Estimated Speedup", f"{est.estimated_speedup:.2f}x", "bold green"), tvb,
        pair("Recovery Confidence", f"{est.recovery_confidence:.2f}", "bold"),
        pair("FLOPs Reduction", f"{est.flops_reduction:.2f}x" if est.flops_reduction else "-",
             extra="" if narrow else f"{fmt_count(est.flops_after)}/{fmt_count(est.flops_before)}"),
        pair("Params Reduction", f"{est.compression:.2f}x",
             extra="" if narrow else f"{fmt_count(est.params_after)}/{fmt_count(est.params_before)}"),
        pair("Sparsity", f"{est.achieved_sparsity * 100:.1f}%", extra=f"target {est.target_sparsity * 100:.0f}%"),
    ]
    if getattr(est, "structure", "") == "channels":  # a channel plan: its FLOPs reduction is a share removed
        cells[3] = pair("FLOPs Removed", f"{100 * (est.flops_reduction or 0):.1f}%",
                        extra="" if narrow else f"{fmt_count(est.flops_after)}/{fmt_count(est.flops_before)}")
        cells[5] = pair("Channels Removed", f"{est.achieved_sparsity * 100:.1f}%",
                        extra=f"target {est.target_sparsity * 100:.0f}%, {est.prunable_groups} groups")
    if narrow:  # speedup, time / recovery, flops / params, sparsity
        cells = [cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]]
        for i in range(0, 6, 2):
            grid.add_row(cells[i], cells[i + 1])
    else:
        grid.add_row(*cells[:3])
        grid.add_row(*cells[3:])
    notes = Text(no_wrap=True, overflow="ellipsis")
    drop = next((n for n in est.notes if "fell" in n and "as the target rose" in n), "")
    if drop:  # first: it explains the number the user just saw change
        notes.append(drop + "  ", style="bold yellow")
    if getattr(est, "structure", "") == "channels":  # first: what the rows and the speedup are
        notes.append(f"Channel plan: rows are channel groups, speedup from {est.speedup_basis}  ", style="bold")
    no_loss = NO_MEASURED_LOSS_NOTE in est.notes  # the plan rests on weight magnitudes, not on the outputs
    if est.approximated:
        named = f" {profile!r}" if profile else ""
        notes.append(f"Approximated Profile{named}: {est.perf_basis} times, {est.loss_basis} loss sensitivity"
                     + (" (no measured loss profile)" if no_loss else "") + "  ", style="bold yellow")
        profile = ""  # named already
    elif no_loss:
        notes.append(f"No measured loss profile: {est.loss_basis} loss sensitivity  ", style="bold yellow")
    if not est.reachable:
        notes.append(next((n for n in est.notes if "not reachable" in n), "target not reachable") + "  ",
                     style="yellow")
    if profile:  # the one named profile this plan's estimates come from (validation and export name it too)
        notes.append(f"from perf profile {profile!r}  ", style="bold")
    if est.quantization.get("estimated_speedup_with_quant"):
        notes.append(f"with INT8 {est.quantization['estimated_speedup_with_quant']:.2f}x (rough)", style="dim")
    return Group(grid, notes)
