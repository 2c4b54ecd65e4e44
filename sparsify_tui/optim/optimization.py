"""An optimization: the training modifiers of one sparsification plan, and its per-layer results.

API (stable; the TUI optimizer editor and the CLI build on it)::

    opt = default_optimization(graph, epochs=100, name="default")
    opt.pruning.target_sparsity = 0.9; opt.pruning.balance = 0.3
    opt.validate()                       # UsageError with one sentence if a field is bad
    d = opt.to_dict()                    # JSON/TOML-able, never contains None
    opt2 = Optimization.from_dict(d)     # tolerant of missing keys (defaults)
    opt3 = opt.copy(name="v2")           # a new version

Fields
------
* ``name``, ``notes``, ``created``, ``modified`` (ISO-8601 UTC strings).
* ``epochs``: the training length the default schedule was derived from;
  ``start_epoch`` / ``end_epoch``: the global Epoch Range of the recipe
  (``!EpochRangeModifier``).
* ``pruning`` (:class:`PruningSettings`): the ``!GMPruningModifier`` schedule
  (start/end epoch, update frequency, initial sparsity, interpolation
  ``linear|cubic|inverse_cubic``, mask type ``unstructured|block4|channel|filter``,
  leave enabled) and the automatic allocation settings: ``target_sparsity``
  (share of all prunable params that are zero), ``balance`` (0 = optimize for
  performance, 1 = for recovery), ``max_sparsity`` (per-layer cap, respected
  during allocation), the filters ``min_sparsity`` / ``min_speedup`` /
  ``min_recovery`` (0 = off), ``overrides`` {layer_id: sparsity} (kept as is),
  ``exclusions`` {layer_id: reason} (left dense) and ``buckets`` (the plan is
  grouped into at most this many sparsity values, one ``!GMPruningModifier``
  each; 0 = every layer keeps its own value), and the edge filter
  ``protect_edges`` (on by default: the stem, the output heads and layers with
  fewer than ``tiny_params`` weights are left dense with their reason; a stored
  optimization without the field loads with it off, as it was planned).
* ``lr_modifiers``: list of :class:`LRModifier` (kind ``set|step|multi_step|
  exponential|cosine``, start/end epoch (-1 = until the end), ``init_lr`` and
  ``args``: ``gamma``, ``step_size``, ``milestones``, ``lr_min``, ``cycle_epochs``).
* ``quantization`` (:class:`QuantizationSettings`): enabled, start epoch, bits
  (8), ``layers`` = ``"all"`` or a list of layer ids, ``skipped`` {layer_id: reason}.
* ``plan`` (:class:`sparsify_tui.optim.plan.Plan`): per-layer results written
  by the allocation (:meth:`sparsify_tui.optim.estimate.Evaluator.allocate`),
  also reachable as ``layers`` {layer_id: ``LayerPlan`` (sparsity,
  excluded_reason, overridden, structure, precision)}, and the project
  profiles the plan was computed from, also reachable as ``perf_profile_id`` /
  ``loss_profile_id`` / ``quant_profile_id`` ("" = approximated). The plan
  reads and writes its own keys of the stored optimization.
"""

from __future__ import annotations

import copy as _copy
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from sparsify_tui.errors import UsageError
from sparsify_tui.optim.fields import get_bool as _get_bool
from sparsify_tui.optim.fields import get_dict as _get_dict
from sparsify_tui.optim.fields import get_float as _get_float
from sparsify_tui.optim.fields import get_int as _get_int
from sparsify_tui.optim.fields import get_str as _get_str
from sparsify_tui.optim.fields import num as _num
from sparsify_tui.optim.plan import LayerPlan, Plan

SCHEMA_VERSION = 1
INTERPOLATIONS = ("linear", "cubic", "inverse_cubic")
MASK_TYPES = ("unstructured", "block4", "channel", "filter")
LR_KINDS = ("set", "step", "multi_step", "exponential", "cosine")
DEFAULT_EPOCHS = 100
DEFAULT_INIT_LR = 0.01
DEFAULT_FINAL_LR = 0.0001
DEFAULT_BUCKETS = 6
DEFAULT_MAX_SPARSITY = 0.95
DEFAULT_TINY_PARAMS = 1024  # with protect_edges, a prunable layer with fewer weights is left dense

# reasons a layer is left dense (shown in the editor and the JSON output)
REASON_USER = "excluded by user"
REASON_NOT_PRUNABLE = "not prunable"
REASON_NO_PARAMS = "too few params"
REASON_MIN_SPARSITY = "filtered: below minimum sparsity {:.2f}"
REASON_MIN_SPEEDUP = "filtered: speedup below minimum {:.2f}x"
REASON_MIN_RECOVERY = "filtered: recovery below minimum {:.2f}"
REASON_DISABLED = "pruning disabled"
# the edge filter (protect_edges): layers whose pruning wrecks the whole model for next to no gain
REASON_STEM = "protected: stem (reads the model input)"
REASON_HEAD = "protected: output head (writes a model output)"
REASON_TINY = "protected: tiny ({} weights < {})"

# said by every plan whose loss sensitivities are not measured (estimates, the app's panel, the export)
NO_MEASURED_LOSS_NOTE = ("planned without a measured loss profile: loss sensitivity comes from weight magnitudes, "
                         "which do not say how the model's outputs react (measure it with "
                         "'sparsify-tui profile loss --method one-shot' before trusting the plan)")


SCHEDULE_HELP = """\
Default schedule for E training epochs (every value can be edited):
  - Epoch Range: 0 to E (the recipe covers the whole training run).
  - Stabilization: epoch 0 to 1 (none when E < 4): dense training so the
    optimizer state settles before weights are removed.
  - Pruning: from epoch 1 for 60% of the remaining epochs (E=100: 1 to 60),
    gradual magnitude pruning with cubic interpolation (fast at first, slow
    near the end), from 5% initial sparsity to each layer's final sparsity,
    40 mask updates (update frequency = pruning epochs / 40; E=100: 1.475).
  - Fine-tuning: the rest (E=100: 60 to 100): masks stay fixed, the model
    recovers.
  - Learning rate: a constant 0.01 from epoch 0 (high enough for weights to
    move while pruning), then from the start of fine-tuning a step decay
    (gamma 0.1) that reaches 0.0001 before the end (E=100: steps every 14
    epochs at 74 and 88).
  - Quantization (off by default; when enabled): INT8 quantization-aware
    training over the last 5 epochs of fine-tuning (at least 1), skipping the
    layers the quant profile finds most sensitive.
Unlike the original Sparsify (pruning E/3 and fine-tuning E/4 epochs, so the
recipe stopped at epoch 59 of 100), the schedule fills the E epochs.
"""


def _drop_none(v: Any) -> Any:
    """TOML has no null: drop None values (recursively)."""
    if isinstance(v, dict):
        return {k: _drop_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_none(x) for x in v if x is not None]
    return v


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- parts
@dataclass
class PruningSettings:
    """The ``!GMPruningModifier`` schedule plus the automatic allocation settings."""

    enabled: bool = True
    start_epoch: float = 1.0
    end_epoch: float = 60.0
    update_frequency: float = 1.475
    init_sparsity: float = 0.05
    target_sparsity: float = 0.85
    balance: float = 0.5
    interpolation: str = "cubic"
    mask_type: str = "unstructured"
    leave_enabled: bool = True
    max_sparsity: float = DEFAULT_MAX_SPARSITY
    min_sparsity: float = 0.0  # filter, 0 = off
    min_speedup: float = 0.0  # filter on a layer's speedup factor (>1 to have effect), 0 = off
    min_recovery: float = 0.0  # filter on a layer's recovery in [0,1], 0 = off
    buckets: int = DEFAULT_BUCKETS
    # edge filter: leave dense the stem, the output heads and the layers with fewer than tiny_params weights
    protect_edges: bool = True
    tiny_params: int = DEFAULT_TINY_PARAMS  # 0 = no layer counts as tiny
    overrides: dict[str, float] = field(default_factory=dict)
    exclusions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "enabled": bool(self.enabled),
            "start_epoch": _num(self.start_epoch),
            "end_epoch": _num(self.end_epoch),
            "update_frequency": _num(self.update_frequency),
            "init_sparsity": _num(self.init_sparsity),
            "target_sparsity": _num(self.target_sparsity),
            "balance": _num(self.balance),
            "interpolation": self.interpolation,
            "mask_type": self.mask_type,
            "leave_enabled": bool(self.leave_enabled),
            "max_sparsity": _num(self.max_sparsity),
            "min_sparsity": _num(self.min_sparsity),
            "min_speedup": _num(self.min_speedup),
            "min_recovery": _num(self.min_recovery),
            "buckets": int(self.buckets),
            "protect_edges": bool(self.protect_edges),
            "tiny_params": int(self.tiny_params),
            "overrides": {str(k): _num(v) for k, v in self.overrides.items()},
            "exclusions": {str(k): str(v) for k, v in self.exclusions.items()},
        }
        if not self.protect_edges and int(self.tiny_params) == DEFAULT_TINY_PARAMS:
            # what a stored plan without these keys reads back as (the filter came later): an optimization
            # saved before it writes, and exports, exactly what it did
            del d["protect_edges"], d["tiny_params"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "PruningSettings":
        d = d or {}
        c = "pruning"
        base = cls()
        overrides = {str(k): _get_float({"v": v}, "v", 0.0, f"pruning.overrides[{k}]")
                     for k, v in _get_dict(d, "overrides", c).items()}
        exclusions = {}
        for k, v in _get_dict(d, "exclusions", c).items():
            exclusions[str(k)] = str(v) if v not in (None, "", True) else REASON_USER
        return cls(
            enabled=_get_bool(d, "enabled", base.enabled, c),
            start_epoch=_get_float(d, "start_epoch", base.start_epoch, c),
            end_epoch=_get_float(d, "end_epoch", base.end_epoch, c),
            update_frequency=_get_float(d, "update_frequency", base.update_frequency, c),
            init_sparsity=_get_float(d, "init_sparsity", base.init_sparsity, c),
            target_sparsity=_get_float(d, "target_sparsity", base.target_sparsity, c),
            balance=_get_float(d, "balance", base.balance, c),
            interpolation=_get_str(d, "interpolation", base.interpolation, c),
            mask_type=_get_str(d, "mask_type", base.mask_type, c),
            leave_enabled=_get_bool(d, "leave_enabled", base.leave_enabled, c),
            max_sparsity=_get_float(d, "max_sparsity", base.max_sparsity, c),
            min_sparsity=_get_float(d, "min_sparsity", base.min_sparsity, c),
            min_speedup=_get_float(d, "min_speedup", base.min_speedup, c),
            min_recovery=_get_float(d, "min_recovery", base.min_recovery, c),
            buckets=_get_int(d, "buckets", base.buckets, c),
            # a stored optimization from before the edge filter existed was planned without it: it loads
            # with the filter off so that it re-allocates to the plan it was saved (and exported) with
            protect_edges=_get_bool(d, "protect_edges", False, c),
            tiny_params=_get_int(d, "tiny_params", base.tiny_params, c),
            overrides=overrides,
            exclusions=exclusions,
        )


@dataclass
class LRModifier:
    """A learning-rate modifier.

    ``kind``: ``set`` (constant ``init_lr`` from ``start_epoch``), ``step``
    (``args.step_size``, ``args.gamma``), ``multi_step`` (``args.milestones``
    strictly inside the epoch range, ``args.gamma``), ``exponential``
    (``args.gamma`` every epoch), ``cosine`` (warm restarts: ``args.lr_min``,
    ``args.cycle_epochs``). ``end_epoch`` -1 means until the end of training.
    """

    kind: str = "set"
    start_epoch: float = 0.0
    end_epoch: float = -1.0
    init_lr: float = DEFAULT_INIT_LR
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        for k, v in self.args.items():
            if v is None:
                continue
            if k == "milestones":
                args[k] = [_num(m) for m in v]
            elif isinstance(v, bool):
                args[k] = v
            elif isinstance(v, (int, float)):
                args[k] = _num(v)
            else:
                args[k] = v
        return {
            "kind": self.kind,
            "start_epoch": _num(self.start_epoch),
            "end_epoch": _num(self.end_epoch),
            "init_lr": _num(self.init_lr),
            "args": args,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], i: int = 0) -> "LRModifier":
        if not isinstance(d, dict):
            raise UsageError(f"optimization field lr_modifiers[{i}] must be a table, got {type(d).__name__}")
        c = f"lr_modifiers[{i}]"
        raw = _get_dict(d, "args", c)
        args: dict[str, Any] = {}
        for k, v in raw.items():
            if k == "milestones":
                if not isinstance(v, (list, tuple)):
                    raise UsageError(f"optimization field {c}.args.milestones must be a list of epochs, got {v!r}")
                args[k] = [_get_float({"m": m}, "m", 0.0, f"{c}.args.milestones") for m in v]
            elif k in ("gamma", "step_size", "lr_min", "cycle_epochs", "final_lr"):
                args[k] = _get_float(raw, k, 0.0, f"{c}.args")
            else:
                args[k] = v
        return cls(
            kind=_get_str(d, "kind", "set", c),
            start_epoch=_get_float(d, "start_epoch", 0.0, c),
            end_epoch=_get_float(d, "end_epoch", -1.0, c),
            init_lr=_get_float(d, "init_lr", DEFAULT_INIT_LR, c),
            args=args,
        )

    def lr_at(self, epoch: float) -> float | None:
        """The learning rate this modifier sets at ``epoch`` (None when inactive); for the LR chart."""
        if epoch < self.start_epoch or (self.end_epoch >= 0 and epoch >= self.end_epoch and self.kind != "set"):
            return None
        t = epoch - self.start_epoch
        g = float(self.args.get("gamma", 0.1))
        if self.kind == "set":
            return self.init_lr
        if self.kind == "step":
            step = float(self.args.get("step_size", 1.0)) or 1.0
            return self.init_lr * g ** math.floor(t / step)
        if self.kind == "multi_step":
            ms = [m for m in self.args.get("milestones", []) if m <= epoch]  # a milestone applies from its epoch on
            return self.init_lr * g ** len(ms)
        if self.kind == "exponential":
            return self.init_lr * g ** math.floor(t)
        if self.kind == "cosine":
            lr_min = float(self.args.get("lr_min", 0.0))
            cyc = float(self.args.get("cycle_epochs", 1.0)) or 1.0
            x = (t % cyc) / cyc
            return lr_min + (self.init_lr - lr_min) * (1 + math.cos(math.pi * x)) / 2
        return None


@dataclass
class QuantizationSettings:
    """INT8 quantization-aware training (``!QuantizationModifier``)."""

    enabled: bool = False
    start_epoch: float = 95.0
    bits: int = 8
    layers: Any = "all"  # "all" or a list of layer ids to quantize
    skipped: dict[str, str] = field(default_factory=dict)  # layer id -> reason it is not quantized

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": bool(self.enabled),
            "start_epoch": _num(self.start_epoch),
            "bits": int(self.bits),
            "layers": "all" if self.layers == "all" else [str(x) for x in self.layers],
            "skipped": {str(k): str(v) for k, v in self.skipped.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "QuantizationSettings":
        d = d or {}
        c = "quantization"
        layers = d.get("layers", "all")
        if layers is None:
            layers = "all"
        if layers != "all":
            if not isinstance(layers, (list, tuple)) or not all(isinstance(x, str) for x in layers):
                raise UsageError(f"optimization field quantization.layers must be \"all\" or a list of layer ids, got {layers!r}")
            layers = list(layers)
        return cls(
            enabled=_get_bool(d, "enabled", False, c),
            start_epoch=_get_float(d, "start_epoch", 95.0, c),
            bits=_get_int(d, "bits", 8, c),
            layers=layers,
            skipped={str(k): str(v) for k, v in _get_dict(d, "skipped", c).items()},
        )


# a layer's entry of the plan (the name the allocation and older code use)
LayerResult = LayerPlan


class _PlanField:
    """An attribute of :class:`Optimization` that reads and writes the same-named field of its ``plan``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else getattr(obj.plan, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.plan, self.name, value)


@dataclass
class Optimization:
    name: str = "default"
    notes: str = ""
    created: str = ""
    modified: str = ""
    epochs: int = DEFAULT_EPOCHS
    start_epoch: float = 0.0
    end_epoch: float = float(DEFAULT_EPOCHS)
    pruning: PruningSettings = field(default_factory=PruningSettings)
    lr_modifiers: list[LRModifier] = field(default_factory=list)
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    # the per-layer plan and the profiles it rests on (:mod:`sparsify_tui.optim.plan`)
    plan: Plan = field(default_factory=Plan)
    # the last measured validation (actions.validate): dense vs one-shot pruned, estimated vs measured
    validation: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "notes": self.notes,
            "created": self.created,
            "modified": self.modified,
            "epochs": int(self.epochs),
            "start_epoch": _num(self.start_epoch),
            "end_epoch": _num(self.end_epoch),
            "pruning": self.pruning.to_dict(),
            "lr_modifiers": [m.to_dict() for m in self.lr_modifiers],
            "quantization": self.quantization.to_dict(),
            **self.plan.to_dict(),  # layers, perf/loss/quant_profile_id (the keys and order of schema 1)
            **({"validation": _drop_none(self.validation)} if self.validation else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Optimization":
        """Build from a dict (a project file or hand-written): missing keys take their defaults."""
        if not isinstance(d, dict):
            raise UsageError(f"an optimization must be a table, got {type(d).__name__}")
        epochs = _get_int(d, "epochs", DEFAULT_EPOCHS, "")
        lrs = d.get("lr_modifiers", [])
        if lrs is None:
            lrs = []
        if not isinstance(lrs, list):
            raise UsageError(f"optimization field lr_modifiers must be a list, got {type(lrs).__name__}")
        return cls(
            name=_get_str(d, "name", "default", ""),
            notes=_get_str(d, "notes", "", ""),
            created=_get_str(d, "created", "", ""),
            modified=_get_str(d, "modified", "", ""),
            epochs=epochs,
            start_epoch=_get_float(d, "start_epoch", 0.0, ""),
            end_epoch=_get_float(d, "end_epoch", float(epochs), ""),
            pruning=PruningSettings.from_dict(_get_dict(d, "pruning", "")),
            lr_modifiers=[LRModifier.from_dict(m, i) for i, m in enumerate(lrs)],
            quantization=QuantizationSettings.from_dict(_get_dict(d, "quantization", "")),
            plan=Plan.from_dict(d),
            validation=dict(_get_dict(d, "validation", "")),
        )

    def copy(self, name: str | None = None, *, with_layers: bool = True) -> "Optimization":
        """A deep copy (a new version when ``name`` is given: fresh created/modified times).

        ``with_layers=False`` leaves the per-layer results out (the allocation refills them).
        """
        plan, self.plan = self.plan, Plan()
        try:
            new = _copy.deepcopy(self)
        finally:
            self.plan = plan
        new.plan = plan.copy(with_entries=with_layers)
        if name is not None:
            new.name = name
            new.created = new.modified = now_iso()
        return new

    def touch(self) -> None:
        self.modified = now_iso()
        if not self.created:
            self.created = self.modified

    # ------------------------------------------------------------ the plan's parts, by their old names
    def layer_sparsities(self) -> dict[str, float]:
        """{layer_id: sparsity} of the allocated layers with a sparsity above 0 (``plan.sparsities()``)."""
        return self.plan.sparsities()

    @property
    def layers(self) -> dict[str, LayerPlan]:
        """The plan's entries {layer id: LayerPlan}."""
        return self.plan.entries

    @layers.setter
    def layers(self, entries: dict[str, LayerPlan]) -> None:
        self.plan.entries = entries

    perf_profile_id = _PlanField()
    loss_profile_id = _PlanField()
    quant_profile_id = _PlanField()

    # ------------------------------------------------------------ validation
    def validate(self, layer_ids: Iterable[str] | None = None) -> None:
        """Raise UsageError (one sentence) on the first bad field.

        With ``layer_ids`` (the model's layer ids), overrides, exclusions and
        quantization layers must name existing layers.
        """
        bad = _Validator(self)
        bad.run(set(layer_ids) if layer_ids is not None else None)


class _Validator:
    def __init__(self, opt: Optimization) -> None:
        self.o = opt

    @staticmethod
    def fail(msg: str) -> None:
        raise UsageError(msg)

    def run(self, ids: set[str] | None) -> None:
        o = self.o
        if not o.name.strip():
            self.fail("the optimization name must not be empty")
        if "\n" in o.name or len(o.name) > 100:
            self.fail("the optimization name must be one line of at most 100 characters")
        if o.epochs <= 0 or o.epochs > 100000:
            self.fail(f"epochs must be between 1 and 100000, got {o.epochs}")
        if o.start_epoch < 0:
            self.fail(f"the epoch range must start at epoch 0 or later, got {o.start_epoch:g}")
        if not o.end_epoch > o.start_epoch:
            self.fail(f"the epoch range must end after it starts, got {o.start_epoch:g} to {o.end_epoch:g}")
        self.pruning(ids)
        for i, m in enumerate(o.lr_modifiers):
            self.lr(i, m)
        self.quant(ids)

    def _in(self, what: str, x: float) -> None:
        o = self.o
        if x < o.start_epoch or x > o.end_epoch:
            self.fail(f"{what} must lie in the epoch range {o.start_epoch:g} to {o.end_epoch:g}, got {x:g}")

    def pruning(self, ids: set[str] | None) -> None:
        p = self.o.pruning
        for key in ("target_sparsity", "init_sparsity", "min_sparsity"):
            v = getattr(p, key)
            if not (0.0 <= v < 1.0):
                self.fail(f"pruning {key.replace('_', ' ')} must be in [0, 1), got {v:g}")
        if not (0.0 < p.max_sparsity <= 0.99):
            self.fail(f"pruning max sparsity (the per-layer cap) must be in (0, 0.99], got {p.max_sparsity:g}")
        if not (0.0 <= p.balance <= 1.0):
            self.fail(f"balance must be in [0, 1] (0 = performance, 1 = recovery), got {p.balance:g}")
        if p.min_speedup < 0 or p.min_speedup > 100:
            self.fail(f"minimum speedup filter must be between 0 (off) and 100, got {p.min_speedup:g}")
        if not (0.0 <= p.min_recovery <= 1.0):
            self.fail(f"minimum recovery filter must be in [0, 1] (0 = off), got {p.min_recovery:g}")
        if p.min_sparsity > p.max_sparsity:
            self.fail(f"minimum sparsity filter {p.min_sparsity:g} is above the per-layer cap {p.max_sparsity:g}")
        if p.interpolation not in INTERPOLATIONS:
            self.fail(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {p.interpolation!r}")
        if p.mask_type not in MASK_TYPES:
            self.fail(f"mask type must be one of {', '.join(MASK_TYPES)}, got {p.mask_type!r}")
        if not p.leave_enabled:
            self.fail("leave enabled must stay true: SparseML's GMPruningModifier keeps masking the weights "
                      "after pruning ends (its base class rejects false)")
        if p.tiny_params < 0 or p.tiny_params > 10**9:
            self.fail(f"tiny layer size must be between 0 (off) and 1000000000 weights, got {p.tiny_params}")
        if p.buckets < 0 or p.buckets > 100:
            self.fail(f"sparsity buckets must be between 0 (no grouping) and 100, got {p.buckets}")
        if p.enabled:
            self._in("the pruning start epoch", p.start_epoch)
            self._in("the pruning end epoch", p.end_epoch)
            if not p.end_epoch > p.start_epoch:
                self.fail(f"pruning must end after it starts, got {p.start_epoch:g} to {p.end_epoch:g}")
            if not (0 < p.update_frequency <= p.end_epoch - p.start_epoch):
                self.fail(f"pruning update frequency must be above 0 and at most the pruning length "
                          f"{p.end_epoch - p.start_epoch:g} epochs, got {p.update_frequency:g}")
        for lid, s in p.overrides.items():
            if not (0.0 <= s < 1.0):
                self.fail(f"override for layer {lid!r} must be a sparsity in [0, 1), got {s:g}")
            if ids is not None and lid not in ids:
                self.fail(f"override names layer {lid!r}, which is not in the model")
        for lid in p.exclusions:
            if ids is not None and lid not in ids:
                self.fail(f"exclusion names layer {lid!r}, which is not in the model")
            if lid in p.overrides:
                self.fail(f"layer {lid!r} is both excluded and overridden: choose one")

    def lr(self, i: int, m: LRModifier) -> None:
        o = self.o
        what = f"learning-rate modifier {i + 1} ({m.kind})"
        if m.kind not in LR_KINDS:
            self.fail(f"{what}: kind must be one of {', '.join(LR_KINDS)}")
        if not (0.0 < m.init_lr <= 1.0):
            self.fail(f"{what}: initial learning rate must be in (0, 1], got {m.init_lr:g}")
        if m.start_epoch < 0:
            self.fail(f"{what}: start epoch must be 0 or later, got {m.start_epoch:g}")
        if m.start_epoch >= o.end_epoch:
            self.fail(f"{what}: start epoch {m.start_epoch:g} must be before the end of training {o.end_epoch:g}")
        if m.kind == "set":
            return
        if m.end_epoch != -1 and not m.end_epoch > m.start_epoch:
            self.fail(f"{what}: end epoch must be -1 (until the end) or after the start, got {m.end_epoch:g}")
        end = o.end_epoch if m.end_epoch == -1 else m.end_epoch
        a = m.args
        if m.kind in ("step", "multi_step", "exponential"):
            g = a.get("gamma")
            if g is None or not (0.0 < float(g) <= 1.0):
                self.fail(f"{what}: gamma must be in (0, 1], got {g!r}")
        if m.kind == "step":
            st = a.get("step_size")
            if st is None or not float(st) > 0:
                self.fail(f"{what}: step size must be above 0 epochs, got {st!r}")
        if m.kind == "multi_step":
            ms = list(a.get("milestones") or [])
            if not ms:
                self.fail(f"{what}: needs at least one milestone")
            if any(b <= x for x, b in zip(ms, ms[1:])):
                self.fail(f"{what}: milestones must be strictly increasing, got {ms}")
            for x in ms:
                if not (m.start_epoch < x < end):
                    self.fail(f"{what}: milestone {x:g} must be strictly between {m.start_epoch:g} and {end:g}")
        if m.kind == "cosine":
            lr_min = a.get("lr_min", 0.0)
            cyc = a.get("cycle_epochs")
            if not (0.0 <= float(lr_min) < m.init_lr):
                self.fail(f"{what}: lr_min must be in [0, initial learning rate), got {lr_min!r}")
            if cyc is None or not float(cyc) > 0:
                self.fail(f"{what}: cycle epochs must be above 0, got {cyc!r}")

    def quant(self, ids: set[str] | None) -> None:
        q = self.o.quantization
        if q.bits != 8:
            self.fail(f"quantization bits must be 8 (INT8), got {q.bits}")
        if q.enabled:
            o = self.o
            if not (o.start_epoch <= q.start_epoch < o.end_epoch):
                self.fail(f"quantization start epoch must be in [{o.start_epoch:g}, {o.end_epoch:g}), got {q.start_epoch:g}")
        if q.layers != "all" and ids is not None:
            for lid in q.layers:
                if lid not in ids:
                    self.fail(f"quantization names layer {lid!r}, which is not in the model")


# ---------------------------------------------------------------- default schedule
def default_schedule(epochs: int) -> dict[str, float]:
    """The epochs of the default schedule (see :data:`SCHEDULE_HELP`)."""
    E = int(epochs)
    if E <= 0:
        raise UsageError(f"epochs must be at least 1, got {E}")
    stab = 1 if E >= 4 else 0
    prune_len = max(1, round((E - stab) * 0.6)) if E - stab >= 2 else max(E - stab, 1) / 2
    prune_end = stab + prune_len
    if prune_end > E:
        prune_end = float(E)
    uf = round(max((prune_end - stab) / 40.0, 0.0001), 4)
    return {
        "start_epoch": 0.0,
        "end_epoch": float(E),
        "pruning_start": float(stab),
        "pruning_end": float(prune_end),
        "update_frequency": float(uf),
        "fine_tune_start": float(prune_end),
        "quant_start": float(max(prune_end, E - max(1, min(5, E - prune_end)))) if E > prune_end else float(max(0, E - 1)),
    }


def default_lr_modifiers(epochs: int, init_lr: float = DEFAULT_INIT_LR,
                         final_lr: float = DEFAULT_FINAL_LR) -> list[LRModifier]:
    """Constant ``init_lr`` (set), then a StepLR decay by 0.1 over fine-tuning reaching ``final_lr``."""
    sch = default_schedule(epochs)
    mods = [LRModifier(kind="set", start_epoch=0.0, end_epoch=-1.0, init_lr=float(init_lr))]
    ft_start, end = sch["fine_tune_start"], sch["end_epoch"]
    ft = end - ft_start
    if final_lr and final_lr < init_lr and ft >= 2:
        gamma = 0.1
        n = max(1, round(math.log(final_lr / init_lr) / math.log(gamma)))
        step = max(1.0, float(math.ceil(ft / (n + 1))))
        mods.append(LRModifier(kind="step", start_epoch=ft_start, end_epoch=end, init_lr=float(init_lr),
                               args={"gamma": gamma, "step_size": step}))
    return mods


def default_optimization(graph_or_layers: Any = None, epochs: int = DEFAULT_EPOCHS, name: str = "default",
                         *, target_sparsity: float = 0.85, balance: float = 0.5,
                         init_lr: float = DEFAULT_INIT_LR, final_lr: float = DEFAULT_FINAL_LR) -> Optimization:
    """A new optimization with the default schedule for ``epochs`` (:data:`SCHEDULE_HELP`).

    ``graph_or_layers`` (a ModelGraph or a list of its layers) is used to note
    when the model has no prunable layer (pruning is then disabled). The
    per-layer results are empty until ``Evaluator.allocate`` fills them.
    """
    sch = default_schedule(epochs)
    opt = Optimization(name=name, epochs=int(epochs), start_epoch=sch["start_epoch"], end_epoch=sch["end_epoch"])
    opt.pruning = PruningSettings(
        start_epoch=sch["pruning_start"], end_epoch=sch["pruning_end"],
        update_frequency=sch["update_frequency"], target_sparsity=float(target_sparsity), balance=float(balance),
    )
    opt.lr_modifiers = default_lr_modifiers(epochs, init_lr, final_lr)
    opt.quantization = QuantizationSettings(enabled=False, start_epoch=sch["quant_start"])
    layers = None
    if graph_or_layers is not None:
        layers = getattr(graph_or_layers, "layers", graph_or_layers)
    if layers is not None and not any(getattr(lay, "prunable", False) for lay in layers):
        opt.pruning.enabled = False
        opt.notes = "the model has no prunable layer (Conv, Gemm or MatMul with a constant weight): pruning is off"
    opt.touch()
    return opt


def reschedule(opt: Optimization, epochs: int) -> Optimization:
    """Apply the default schedule for a new number of epochs, keeping the allocation settings."""
    new = default_optimization(None, epochs, opt.name, target_sparsity=opt.pruning.target_sparsity,
                               balance=opt.pruning.balance,
                               init_lr=opt.lr_modifiers[0].init_lr if opt.lr_modifiers else DEFAULT_INIT_LR)
    out = opt.copy()
    out.epochs, out.start_epoch, out.end_epoch = new.epochs, new.start_epoch, new.end_epoch
    for k in ("start_epoch", "end_epoch", "update_frequency"):
        setattr(out.pruning, k, getattr(new.pruning, k))
    out.lr_modifiers = new.lr_modifiers
    out.quantization.start_epoch = new.quantization.start_epoch
    out.touch()
    return out
