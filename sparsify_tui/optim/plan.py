"""The plan: what an optimization does to each layer, the one typed form every consumer reads.

API (the optimizer writes it, recipe export/import, prune, validation, the
deployment search and the app read it)::

    plan = opt.plan                              # an Optimization owns its Plan
    plan.entries["conv1"] = LayerPlan(0.8)       # per layer (or per channel group)
    plan.sparsities()                            # {layer id: sparsity > 0} of the unstructured entries
    plan.sparsities(Structure.CHANNELS)          # {group id: share of channels removed}
    plan.precision_by_layer()                    # {layer id: Precision} where one is set
    plan.fp32_node_names(graph.layers)           # nodes an INT8 quantizer leaves fp32 (mixed precision)
    plan.digest()                                # 16 hex digits: the plan's identity (deploy search)
    d = plan.to_dict()                           # the plan's keys of the stored optimization
    Plan.from_dict(d)                            # every form a project file holds

Stored form (the keys of an optimization in the project's TOML, unchanged
since schema version 1 for unstructured plans)::

    layers = {<layer id> = {sparsity = 0.8, excluded_reason = "...", overridden = true}, ...}
    perf_profile_id = "..."  loss_profile_id = "..."  quant_profile_id = "..."

A layer entry may also be a bare number (its sparsity). Written only when
used: ``precision = "int8"|"fp32"`` on an entry (absent = the plan's
``default_precision``, itself absent = no opinion: the deployment's precision),
``structure = "channels"`` with ``layers = [...]`` on a channel-group entry
keyed by the group id, and the tables ``estimates`` / the key
``default_precision`` on the optimization.

A new lever is a field here and a planner that fills it; consumers read it
through :class:`Plan` (HACKING.md, "The plan model").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Mapping

from sparsify_tui.errors import UsageError
from sparsify_tui.optim.fields import get_bool, get_dict, get_float, get_str, num


class Structure(str, Enum):
    """What a sparsity removes: single weights (``unstructured``) or whole output channels (``channels``)."""

    UNSTRUCTURED = "unstructured"
    CHANNELS = "channels"  # reserved for channel pruning (optim/channels.py): an entry per channel group


class Precision(str, Enum):
    FP32 = "fp32"
    INT8 = "int8"


def _enum(cls: type, v: Any, where: str) -> Any:
    try:
        return cls(str(v).strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise UsageError(f"optimization field {where} must be one of {choices}, got {v!r}") from None


@dataclass
class LayerPlan:
    """One entry: a layer (or, for ``structure=CHANNELS``, a channel group whose ``layers`` are listed).

    ``excluded_reason`` is "" unless the layer is left dense on purpose;
    ``overridden`` marks a sparsity set by hand; ``precision`` None = the
    plan's default.
    """

    sparsity: float = 0.0
    excluded_reason: str = ""
    overridden: bool = False
    structure: Structure = Structure.UNSTRUCTURED
    precision: Precision | None = None
    layers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"sparsity": num(self.sparsity)}
        if self.excluded_reason:
            d["excluded_reason"] = self.excluded_reason
        if self.overridden:
            d["overridden"] = True
        if self.structure is not Structure.UNSTRUCTURED:
            d["structure"] = self.structure.value
            d["layers"] = [str(x) for x in self.layers]
        if self.precision is not None:
            d["precision"] = self.precision.value
        return d

    @classmethod
    def from_dict(cls, d: Any, lid: str = "") -> "LayerPlan":
        if isinstance(d, (int, float)) and not isinstance(d, bool):
            return cls(sparsity=get_float({"v": d}, "v", 0.0, f"layers[{lid}]"))
        if not isinstance(d, dict):
            raise UsageError(f"optimization field layers[{lid}] must be a table, got {type(d).__name__}")
        c = f"layers[{lid}]"
        structure = _enum(Structure, d.get("structure", "unstructured"), f"{c}.structure")
        layers = d.get("layers", [])
        if not isinstance(layers, (list, tuple)) or not all(isinstance(x, str) for x in layers):
            raise UsageError(f"optimization field {c}.layers must be a list of layer ids, got {layers!r}")
        if structure is Structure.CHANNELS and not layers:
            raise UsageError(f"optimization field {c}: a channel group must list its layers")
        prec = d.get("precision")
        return cls(
            sparsity=get_float(d, "sparsity", 0.0, c),
            excluded_reason=get_str(d, "excluded_reason", "", c),
            overridden=get_bool(d, "overridden", False, c),
            structure=structure,
            precision=None if prec is None else _enum(Precision, prec, f"{c}.precision"),
            layers=tuple(layers),
        )

    def copy(self) -> "LayerPlan":
        return LayerPlan(self.sparsity, self.excluded_reason, self.overridden, self.structure, self.precision,
                         tuple(self.layers))


_PROFILE_KEYS = ("perf_profile_id", "loss_profile_id", "quant_profile_id")


@dataclass
class Plan:
    """Per-layer (or per-group) entries, the profiles its estimates rest on ("" = approximated), its estimates."""

    entries: dict[str, LayerPlan] = field(default_factory=dict)
    perf_profile_id: str = ""
    loss_profile_id: str = ""
    quant_profile_id: str = ""
    estimates: dict[str, Any] = field(default_factory=dict)  # summary figures of the last evaluation, if kept
    default_precision: Precision | None = None

    # ------------------------------------------------------------ reading
    def sparsities(self, structure: Structure = Structure.UNSTRUCTURED) -> dict[str, float]:
        """{entry id: sparsity} of the entries of ``structure`` with a sparsity above 0 (what prune reads)."""
        return {k: float(v.sparsity) for k, v in self.entries.items()
                if v.structure is structure and v.sparsity > 0}

    def sparsity_of(self, layer_id: str) -> float:
        """The unstructured sparsity planned for ``layer_id`` (0 when it has none)."""
        e = self.entries.get(layer_id)
        return float(e.sparsity) if e is not None and e.structure is Structure.UNSTRUCTURED else 0.0

    def overall_sparsity(self, layers: Iterable[Any]) -> float:
        """Share of the prunable weights of ``layers`` (graph layers: ``id``, ``prunable_params``) the plan zeroes."""
        layers = list(layers)
        n = sum(lay.prunable_params for lay in layers)
        zeros = sum(round(self.sparsity_of(lay.id) * lay.prunable_params) for lay in layers)
        return zeros / n if n else 0.0

    def precision_by_layer(self, layer_ids: Iterable[str] | None = None) -> dict[str, Precision]:
        """{layer id: Precision} where the plan says one: the entry's, else the plan's default.

        A channel group's precision applies to each of its layers; ``layer_ids``
        (the model's layers) lets the default cover layers without an entry.
        """
        out: dict[str, Precision] = {}
        if self.default_precision is not None:
            for lid in layer_ids or ():
                out[str(lid)] = self.default_precision
        for k, e in self.entries.items():
            prec = e.precision or self.default_precision
            if prec is None:
                continue
            for lid in (e.layers if e.structure is Structure.CHANNELS else (k,)):
                out[lid] = prec
        return out

    def fp32_node_names(self, layers: Iterable[Any]) -> list[str]:
        """The node names of the ``layers`` (graph layers: ``id``, ``name``) the plan keeps fp32 while the rest
        is quantized: the ``nodes_to_exclude`` of an INT8 quantizer (mixed precision). Unnamed nodes are
        left out (the quantizer cannot name them)."""
        prec = self.precision_by_layer()
        return [lay.name for lay in layers if lay.name and prec.get(lay.id) is Precision.FP32]

    def has(self, structure: Structure) -> bool:
        return any(e.structure is structure for e in self.entries.values())

    def unstructured(self) -> dict[str, float]:
        """The unstructured sparsities for a pruner that knows no other structure (UsageError otherwise)."""
        if self.has(Structure.CHANNELS):
            raise UsageError("this plan removes channel groups: it needs the channel pruner, not magnitude pruning "
                             "of single weights")
        return self.sparsities()

    def digest(self) -> str:
        """16 hex digits that change when what the plan prunes (or its precisions) change."""
        body: dict[str, Any] = {k: round(float(v), 6) for k, v in sorted(self.sparsities().items())}
        extra = {f"{k}@channels": [round(float(e.sparsity), 6), list(e.layers)]
                 for k, e in sorted(self.entries.items()) if e.structure is Structure.CHANNELS and e.sparsity > 0}
        prec = {k: p.value for k, p in sorted(self.precision_by_layer().items())}
        if extra or prec:  # an unstructured plan without precisions hashes as it always did
            body = {"sparsity": body, "channels": extra, "precision": prec}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def annotations(self) -> dict[str, dict[str, Any]]:
        """The stored entries without their sparsity, for the entries that say more than one (an exported
        recipe keeps these; its modifiers hold the sparsities)."""
        out = {}
        for k, e in self.entries.items():
            d = {kk: vv for kk, vv in e.to_dict().items() if kk != "sparsity"}
            if d:
                out[str(k)] = d
        return out

    # ------------------------------------------------------------ building
    def with_sparsities(self, sparsities: Mapping[str, float], layer_ids: Iterable[str]) -> "Plan":
        """A copy whose entries are ``layer_ids`` at ``sparsities`` (0 when absent), each keeping what this plan
        says of it besides the sparsity; entries of other ids are kept at sparsity 0 (an imported recipe)."""
        new = self.copy(with_entries=False)
        for lid in layer_ids:
            e = self.entries[lid].copy() if lid in self.entries else LayerPlan()
            e.sparsity = float(sparsities.get(lid, 0.0))
            new.entries[lid] = e
        for lid, old in self.entries.items():
            if lid not in new.entries:
                e = old.copy()
                e.sparsity = 0.0
                new.entries[lid] = e
        return new

    @classmethod
    def from_sparsities(cls, sparsities: Mapping[str, float], *, overridden: bool = False) -> "Plan":
        """A plan of unstructured entries (a recipe's or a measured model's sparsities)."""
        return cls({str(k): LayerPlan(float(v), overridden=overridden) for k, v in sparsities.items()})

    def copy(self, *, with_entries: bool = True) -> "Plan":
        return Plan({k: v.copy() for k, v in self.entries.items()} if with_entries else {},
                    self.perf_profile_id, self.loss_profile_id, self.quant_profile_id,
                    json.loads(json.dumps(self.estimates)), self.default_precision)

    # ------------------------------------------------------------ the stored form
    def to_dict(self) -> dict[str, Any]:
        """The plan's keys of a stored optimization (``layers`` and the profile ids; the rest when used)."""
        d: dict[str, Any] = {"layers": {str(k): v.to_dict() for k, v in self.entries.items()}}
        for key in _PROFILE_KEYS:
            d[key] = getattr(self, key)
        if self.estimates:
            d["estimates"] = dict(self.estimates)
        if self.default_precision is not None:
            d["default_precision"] = self.default_precision.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "Plan":
        """From a stored optimization (or a dict with only its plan keys); missing keys take their defaults."""
        d = dict(d or {})
        prec = d.get("default_precision")
        return cls(
            entries={str(k): LayerPlan.from_dict(v, str(k)) for k, v in get_dict(d, "layers", "").items()},
            **{key: get_str(d, key, "", "") for key in _PROFILE_KEYS},
            estimates=dict(get_dict(d, "estimates", "")),
            default_precision=None if prec is None else _enum(Precision, prec, "default_precision"),
        )


def pruned_sparsities(plan: "Plan | Mapping[str, float]") -> dict[str, float]:
    """What a weight pruner applies: a Plan's unstructured sparsities, or a {layer id: sparsity} map as given.

    The one accessor the pruners (:func:`~sparsify_tui.optim.prune.prune_model`,
    :func:`~sparsify_tui.optim.calibrated.prune_model_calibrated`) read a plan through.
    """
    if isinstance(plan, Plan):
        return plan.unstructured()
    return dict(plan)
