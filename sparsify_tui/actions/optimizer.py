"""Optimizations in a project: which profiles to use, load and save (shared by the CLI and the TUI).

API (stable)::

    ctx = OptimizerContext.for_project(project, graph=None, opt=None)  # analyses the model if graph is None
    ctx.evaluator            # Evaluator bound to the project's profiles (or their approximations)
    ctx.profile_ids          # {"perf": id or "", "loss": ..., "quant": ...}
    ctx.notes                # what was approximated, stale profiles used, ...
    ctx = OptimizerContext.for_editor(project, graph, name)   # with the profiles optimization name recorded
    name = default_optimization_name(project)      # the first stored one, else "default"
    opt = load_optimization(project, name)          # Optimization or None
    save_optimization(project, opt)                 # project.set_optimization(opt.to_dict())

Profile choice: the optimization's own profile ids when they still exist and
load, else the newest readable profile of each kind, preferring ones measured
on the current model (a stale one is used with a note). With no perf profile
the FLOPs-based approximation (``profiles.perf.approx_perf_profile``, labelled
approximated) is used; with no loss profile the weight-magnitude
approximation (``profiles.loss.approx_loss_profile``); with no quant profile
none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sparsify_tui.errors import ProfileError, ProjectError, UsageError
from sparsify_tui.optim.estimate import Evaluator
from sparsify_tui.optim.optimization import Optimization

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.project import Project


def _created(entry: Any) -> str:
    return str(getattr(entry, "created", "") or "")


def pick_profile(project: "Project", kind: str, prefer_id: str = "") -> tuple[Any, dict | None, list[str]]:
    """(entry, document, notes) of the profile of ``kind`` to use, or (None, None, notes)."""
    notes: list[str] = []
    # tried in this order: the preferred id, then fresh profiles newest first, then stale ones
    ordered = sorted(project.profiles_of(kind), key=lambda e: (e.id == prefer_id and bool(prefer_id),
                                                               not project.is_stale(e), _created(e)))
    for e in reversed(ordered):
        try:
            doc = project.load_profile(e)
        except ProfileError as exc:
            notes.append(f"{kind} profile {e.id} cannot be used: {exc}")
            continue
        if project.is_stale(e):
            notes.append(f"{kind} profile {e.id} was measured on an earlier version of the model")
        return e, doc, notes
    return None, None, notes


@dataclass
class OptimizerContext:
    graph: "ModelGraph"
    evaluator: Evaluator
    profile_ids: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def for_project(cls, project: "Project", graph: "ModelGraph | None" = None, opt: Optimization | None = None, *,
                    approximate_loss: bool = True, structure: str | None = None,
                    round_to: int | None = None) -> "OptimizerContext":
        """``structure`` "channels" (or None for an optimization whose plan removes channel groups): the channel
        optimizer's context (:func:`channel_context`)."""
        if graph is None:
            from sparsify_tui.analysis import analyze

            graph = analyze(project.model_path, project.input_shapes or None)
        from sparsify_tui.optim.channel_plan import is_channel_plan

        if structure == "channels" or (structure is None and is_channel_plan(opt)):
            return channel_context(cls, project, graph, opt, round_to)
        notes: list[str] = []
        ids: dict[str, str] = {}
        docs: dict[str, dict | None] = {}
        for kind in ("perf", "loss", "quant"):
            prefer = getattr(opt, f"{kind}_profile_id", "") if opt is not None else ""
            entry, doc, n = pick_profile(project, kind, prefer)
            notes += n
            ids[kind] = entry.id if entry is not None else ""
            if prefer and (entry is None or entry.id != prefer):  # deleted, replaced or unreadable: say so
                now = f"now from {kind} profile {entry.name!r}" if entry is not None else "now approximated"
                notes.append(f"the {kind} profile this optimization was planned with ({prefer}) no longer "
                             f"exists or cannot be read: its estimates are {now}")
            docs[kind] = doc
        if docs["perf"] is None:
            try:
                from sparsify_tui.profiles.perf import approx_perf_profile

                docs["perf"] = approx_perf_profile(graph)
                notes.append("no perf profile in the project: times approximated from FLOPs")
            except Exception as exc:  # noqa: BLE001 - fall back to the FLOPs ratio inside the Evaluator
                notes.append(f"no perf profile and no approximation ({exc}): speedup is a FLOPs ratio")
        if docs["loss"] is None and approximate_loss:
            try:
                from sparsify_tui.profiles.loss import approx_loss_profile

                docs["loss"] = approx_loss_profile(graph)
                notes.append("no loss profile in the project: loss sensitivity approximated from weight magnitudes")
            except Exception as exc:  # noqa: BLE001
                notes.append(f"no loss profile and no weight-magnitude approximation ({exc}): Gaussian proxy used")
        ev = Evaluator(graph, docs["perf"], docs["loss"], docs["quant"])
        return cls(graph=graph, evaluator=ev, profile_ids=ids, notes=notes)

    @classmethod
    def for_editor(cls, project: "Project", graph: "ModelGraph | None" = None, name: str | None = None, *,
                   newest: bool = False) -> "OptimizerContext":
        """The context to edit optimization ``name`` (the default one if None) with: its recorded profiles,
        or the newest ones (``newest``, or when it is not stored yet)."""
        stored = project.get_optimization(name or default_optimization_name(project))
        opt = Optimization.from_dict(stored) if stored and not newest else None
        return cls.for_project(project, graph, opt)

    @property
    def structure(self) -> str:
        """"channels" for the channel optimizer's context, else "unstructured"."""
        return str(getattr(getattr(self.evaluator, "structure", None), "value", "unstructured"))

    def attach(self, opt: Optimization) -> Optimization:
        """Record the profile ids in the optimization."""
        opt.perf_profile_id = self.profile_ids.get("perf", "")
        opt.loss_profile_id = self.profile_ids.get("loss", "")
        opt.quant_profile_id = self.profile_ids.get("quant", "")
        return opt


def channel_context(cls: type, project: "Project", graph: "ModelGraph", opt: Optimization | None,
                    round_to: int | None = None) -> OptimizerContext:
    """The channel optimizer's context: the project's channel perf and loss profiles (``perf_channels``,
    ``loss_channels``; their ids recorded as the plan's perf/loss profile ids), the model's channel groups,
    and ``round_to`` (given, else the default of the perf profile's engine and precision)."""
    from sparsify_tui.actions.channels import default_round_to
    from sparsify_tui.optim.channel_plan import ChannelEvaluator, ChannelSetup

    notes: list[str] = []
    ids: dict[str, str] = {}
    docs: dict[str, dict | None] = {}
    for kind, key in (("perf_channels", "perf"), ("loss_channels", "loss"), ("quant", "quant")):
        prefer = getattr(opt, f"{key}_profile_id", "") if opt is not None else ""
        entry, doc, n = pick_profile(project, kind, prefer)
        notes += n
        ids[key] = entry.id if entry is not None else ""
        docs[key] = doc
    setup = ChannelSetup.for_model(project.model_path, graph, project.input_shapes or None)
    if not setup.prunable:
        reasons = sorted({r for g in setup.groups for r in g.reasons})
        raise UsageError("no channel group of this model can be pruned: " + "; ".join(reasons[:3]))
    perf = docs["perf"]
    if round_to is not None:
        reason = "--round-to"
    else:
        from sparsify_tui.engines.registry import resolve_auto

        engine = str((perf or {}).get("engine") or resolve_auto("auto")[0])
        precision = (perf or {}).get("precision") or "fp32"
        round_to = default_round_to(engine, precision)
        reason = f"default for {engine} {precision}"
    ev = ChannelEvaluator(setup, perf, docs["loss"], docs["quant"], round_to=round_to, round_reason=reason)
    return cls(graph=graph, evaluator=ev, profile_ids=ids, notes=notes)


def default_quant_layers(graph: "ModelGraph", quant: dict | None,
                         skip_share: float = 0.05) -> tuple[Any, dict[str, str]]:
    """("all" or list of layer ids, {skipped id: reason}): skip the most INT8-sensitive share of layers."""
    if not quant or not isinstance(quant.get("layers"), list):
        return "all", {}
    rows = [(str(r.get("id")), float(r["sensitivity"])) for r in quant["layers"]
            if isinstance(r, dict) and isinstance(r.get("sensitivity"), (int, float))]
    if not rows:
        return "all", {}
    rows.sort(key=lambda x: -x[1])
    k = max(1, int(round(skip_share * len(rows)))) if len(rows) >= 4 else 0
    skipped = {lid: f"most sensitive to INT8 (top {skip_share:.0%}: {s:.3g})" for lid, s in rows[:k] if s > 0}
    return "all", skipped


def default_optimization_name(project: "Project | None") -> str:
    """The optimization a command or the editor opens when none is named: the project's first, else "default"."""
    names = project.optimization_names() if project is not None else []
    return names[0] if names else "default"


def load_optimization(project: "Project", name: str) -> Optimization | None:
    """The project's optimization ``name`` (None if there is none); ProjectError if its stored form is bad."""
    d = project.get_optimization(name) if hasattr(project, "get_optimization") else next(
        (o for o in project.optimizations if o.get("name") == name), None)
    if d is None:
        return None
    try:
        return Optimization.from_dict(d)
    except UsageError as exc:
        raise ProjectError(f"optimization {name!r} in project {getattr(project, 'dir', '')} cannot be read: "
                           f"{exc.message}") from None


def save_optimization(project: "Project", opt: Optimization) -> None:
    opt.touch()
    project.set_optimization(opt.to_dict())


def loss_measured(project: Any, opt: Optimization) -> bool:
    """True when the optimization was planned from a measured (one-shot) loss profile of the project;
    False when it had none or a weight-magnitude (approx) one."""
    pid = opt.loss_profile_id or ""
    if not pid or project is None:
        return False
    if any(e.id == pid for e in project.profiles_of("loss_channels")):
        return True  # a channel loss profile is measured (one-shot) by construction
    entry = next((e for e in project.profiles_of("loss") if e.id == pid), None)
    if entry is None:
        return False
    return not str((entry.settings or {}).get("method", "")).startswith("approx")


def profile_labels(project: Any, opt: Optimization) -> dict[str, str]:
    """``{"perf": "'deepsparse b1 c2' (perf-1)", ...}``: the profiles an optimization's estimates came from,
    by name; a recorded id the project no longer has is labelled missing."""
    out: dict[str, str] = {}
    for kind in ("perf", "loss", "quant"):
        pid = getattr(opt, f"{kind}_profile_id", "") or ""
        if not pid:
            if kind != "quant":
                out[kind] = "approximated (no stored profile)"
            continue
        entry = next((e for e in project.profiles_of(kind) + project.profiles_of(f"{kind}_channels")
                      if e.id == pid), None)
        out[kind] = f"{entry.name!r} ({pid})" if entry is not None else f"{pid} (missing: deleted or replaced)"
    return out
