"""Map an engine's execution steps back to the original ONNX layers.

Engines rewrite graphs: ONNX Runtime fuses Conv+Relu into ``FusedConv``,
converts to NCHWc (``<tensor>_nchwc`` nodes plus ``ReorderInput/Output``),
folds constants; DeepSparse runs fused groups whose ``canonical_name`` lists
several ONNX output tensors. A *step* is one thing the engine timed.

Rules (applied to every engine):

1. A step **anchors** an original layer when it has the same node name, it
   outputs one of the layer's output tensors, its name minus ``_nchwc`` is
   one of the layer's output tensors, or (DeepSparse) its canonical name lists
   one of them. ``Reorder*`` steps anchor nothing.
2. A layer no step anchors was fused away. An elementwise layer (Add, Relu,
   BatchNormalization, ...) belongs to the owner of the producer of its first
   non-constant input.
3. Any other un-anchored layer belongs to the owner of its (first owned)
   consumer; failing that, to its producer's owner.

A step's time is shared among its members (anchored + absorbed layers) in
proportion to their FLOPs; constant-only layers (weights computed from
constants, folded by every engine) get 0; members with unknown FLOPs weigh as
much as the lightest member with known FLOPs (an equal share when none is known). So every
layer gets a time, the times sum to the steps' total, and each layer records
its ``group``: the ids of the layers measured together with it. Steps that
anchor no layer (re-layouts, engine subgraph glue) become **engine-internal**
rows ``engine:<name>`` that count in the total.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Softplus", "Softsign", "Erf", "Gelu", "FastGelu", "Mish", "BatchNormalization",
    "InstanceNormalization", "LayerNormalization", "Dropout", "Identity", "Cast", "Not", "Where",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "QuantizeLinear", "DequantizeLinear", "Swish",
}


@dataclass
class LayerRef:
    """What the mapping needs to know about one original layer."""

    id: str
    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    flops: float | None = None
    constant: bool = False  # computed from constants only (folded by engines)


@dataclass
class Step:
    """One timed unit of the engine."""

    name: str
    ms: float
    anchors: list[str] = field(default_factory=list)  # layer ids (already resolved) ...
    tensors: list[str] = field(default_factory=list)  # ...or tensor names to resolve
    op_type: str = ""
    match_name: bool = False  # ONNX Runtime: the step's node name may be an original node's name / <tensor>_nchwc
    fallback: bool = False  # DeepSparse "Naive Subgraph": ops its own kernels do not run (see NAIVE_ONLY)


@dataclass
class Attribution:
    layer_ms: dict[str, float]
    owner: dict[str, str]  # layer id -> step name of its primary owner (absent: unowned)
    groups: dict[str, list[str]]  # step name -> member layer ids (execution order)
    internal: list[tuple[str, str, float]]  # (row id, step name, ms) for steps anchoring nothing

    @property
    def total_ms(self) -> float:
        return sum(self.layer_ms.values()) + sum(ms for _, _, ms in self.internal)


def constant_layers(layers: list[LayerRef], initializers: Iterable[str]) -> set[str]:
    """Ids of layers whose inputs are all constants (initializers or other constant layers)."""
    const_tensors = set(initializers)
    out: set[str] = set()
    for layer in layers:  # execution order
        ins = [t for t in layer.inputs if t]
        if layer.op_type in ("Constant", "ConstantOfShape") and all(t in const_tensors for t in ins) or (
            ins and all(t in const_tensors for t in ins)
        ):
            out.add(layer.id)
            const_tensors.update(layer.outputs)
    return out


# ops DeepSparse runs only in its fallback ("Naive Subgraph") steps when no step names them
NAIVE_ONLY = {
    "LSTM", "GRU", "RNN", "Loop", "Scan", "If", "TopK", "NonMaxSuppression", "NonZero", "Unique", "CumSum",
    "RoiAlign", "Resize", "Upsample", "ScatterND", "ScatterElements", "GatherND", "Einsum", "ReverseSequence",
}

_SUFFIX = re.compile(r"_\d+$")


def internal_id(name: str, seen: dict[str, int]) -> str:
    """A row id for an engine-internal step that is stable across runs: kind + occurrence."""
    kind = _SUFFIX.sub("", name.strip()) or "step"
    kind = re.sub(r"\s+\d+$", "", kind)
    seen[kind] = seen.get(kind, 0) + 1
    n = seen[kind]
    return f"engine:{kind}" if n == 1 else f"engine:{kind}#{n}"


class _Index:
    """The layers by id, name, position, and the producer and consumers of every tensor."""

    def __init__(self, layers: list[LayerRef]) -> None:
        self.by_id = {layer.id: layer for layer in layers}
        self.order = {layer.id: i for i, layer in enumerate(layers)}
        self.by_name: dict[str, str] = {}
        self.producer: dict[str, str] = {}
        self.consumers: dict[str, list[str]] = {}
        for layer in layers:
            if layer.name:
                self.by_name.setdefault(layer.name, layer.id)
            for t in layer.outputs:
                if t:
                    self.producer.setdefault(t, layer.id)
            for t in layer.inputs:
                if t:
                    self.consumers.setdefault(t, []).append(layer.id)


def _anchors(ix: _Index, steps: list[Step]) -> tuple[list[list[str]], dict[str, int]]:
    """Rule 1: each step's anchor layers (named by the step, or producing a tensor it names), and the
    first step anchoring each layer."""
    step_anchors: list[list[str]] = []
    owner: dict[str, int] = {}
    for si, step in enumerate(steps):
        anchors: list[str] = []
        if not step.op_type.startswith("Reorder"):
            for a in step.anchors:
                if a in ix.by_id and a not in anchors:
                    anchors.append(a)
            names = list(step.tensors)
            if step.match_name:
                if step.name in ix.by_name and ix.by_name[step.name] not in anchors:
                    anchors.append(ix.by_name[step.name])
                if step.name.endswith("_nchwc"):
                    names.append(step.name[: -len("_nchwc")])
            for t in names:
                lid = ix.producer.get(t)
                if lid is not None and lid not in anchors:
                    anchors.append(lid)
        step_anchors.append(anchors)
        for a in anchors:
            owner.setdefault(a, si)
    return step_anchors, owner


def _own_fallback_ops(ix: _Index, layers: list[LayerRef], steps: list[Step], owner: dict[str, int]) -> None:
    """Rule 0 (DeepSparse): ops it has no kernels for (recurrent, control flow, ...) that no step names ran
    in one of its "Naive Subgraph" steps: the first such step after the steps that own the op's inputs."""
    fallback_steps = [si for si, step in enumerate(steps) if step.fallback]
    if not fallback_steps:
        return
    for layer in layers:
        if layer.id in owner or layer.op_type not in NAIVE_ONLY or layer.constant:
            continue
        upstream, seen_t, todo = -1, set(), [t for t in layer.inputs if t]
        while todo:
            t = todo.pop()
            if t in seen_t or t not in ix.producer:
                continue
            seen_t.add(t)
            pid = ix.producer[t]
            if pid in owner:
                upstream = max(upstream, owner[pid])
            else:
                todo.extend(x for x in ix.by_id[pid].inputs if x)
        after = [si for si in fallback_steps if si > upstream]
        owner[layer.id] = after[0] if after else fallback_steps[-1]


def _own_fused(ix: _Index, layers: list[LayerRef], owner: dict[str, int]) -> None:
    """Rules 2 and 3: a layer no step names was fused away: an element-wise op goes with the producer of
    its first live input, anything else with its first owned consumer, else with its first owned producer."""
    resolving: set[str] = set()

    def resolve(lid: str) -> int | None:
        if lid in owner:
            return owner[lid]
        if lid in resolving:
            return None
        resolving.add(lid)
        try:
            layer = ix.by_id[lid]
            result = None
            if layer.op_type in ELEMENTWISE and not layer.constant:
                first = next((t for t in layer.inputs
                              if t and t in ix.producer and not ix.by_id[ix.producer[t]].constant), None)
                if first is not None:
                    result = resolve(ix.producer[first])
            if result is None:
                result = next((r for t in layer.outputs for c in ix.consumers.get(t, [])
                               if (r := resolve(c)) is not None), None)
            if result is None:
                result = next((r for t in layer.inputs if t in ix.producer
                               if (r := resolve(ix.producer[t])) is not None), None)
            if result is not None:
                owner[lid] = result
            return result
        finally:
            resolving.discard(lid)

    for layer in layers:
        resolve(layer.id)


def _split_times(ix: _Index, layers: list[LayerRef], steps: list[Step],
                 members: list[list[str]]) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
    """Each step's time shared among its live member layers by FLOPs; steps without members are internal."""
    layer_ms = {layer.id: 0.0 for layer in layers}
    internal: list[tuple[str, str, float]] = []
    seen: dict[str, int] = {}
    for si, step in enumerate(steps):
        ms = max(0.0, float(step.ms))
        mem = members[si]
        if not mem:
            internal.append((internal_id(step.name, seen), step.name, ms))
            continue
        live = [m for m in mem if not ix.by_id[m].constant] or mem
        known = [ix.by_id[m].flops for m in live if ix.by_id[m].flops is not None and ix.by_id[m].flops > 0]
        fill = min(known) if known else 1.0
        weights = []
        for m in live:
            f = ix.by_id[m].flops
            weights.append(float(f) if f is not None and f > 0 else (fill if f is None else 0.0))
        total = sum(weights)
        if total <= 0:
            weights = [1.0] * len(live)
            total = float(len(live))
        for m, w in zip(live, weights):
            layer_ms[m] += ms * w / total
    return layer_ms, internal


def attribute(layers: list[LayerRef], steps: list[Step]) -> Attribution:
    ix = _Index(layers)
    step_anchors, owner = _anchors(ix, steps)
    _own_fallback_ops(ix, layers, steps, owner)
    _own_fused(ix, layers, owner)

    members: list[list[str]] = [list(a) for a in step_anchors]
    for lid, si in owner.items():
        if lid not in step_anchors[si]:
            members[si].append(lid)
    for m in members:
        m.sort(key=lambda x: ix.order.get(x, 0))
    layer_ms, internal = _split_times(ix, layers, steps, members)

    names_used: dict[str, int] = {}
    step_keys = []
    for step in steps:
        names_used[step.name] = names_used.get(step.name, 0) + 1
        step_keys.append(step.name if names_used[step.name] == 1 else f"{step.name}#{names_used[step.name]}")
    # constant-only members (folded weights) are not shown as measured layers of the group
    groups = {step_keys[si]: [m for m in mem if not ix.by_id[m].constant] or mem
              for si, mem in enumerate(members) if mem}
    owner_name = {lid: step_keys[si] for lid, si in owner.items()}
    return Attribution(layer_ms=layer_ms, owner=owner_name, groups=groups, internal=internal)
