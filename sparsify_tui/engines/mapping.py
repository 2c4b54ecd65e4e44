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


def attribute(layers: list[LayerRef], steps: list[Step]) -> Attribution:
    by_id = {layer.id: layer for layer in layers}
    order = {layer.id: i for i, layer in enumerate(layers)}
    by_name = {}
    for layer in layers:
        if layer.name:
            by_name.setdefault(layer.name, layer.id)
    producer: dict[str, str] = {}
    consumers: dict[str, list[str]] = {}
    for layer in layers:
        for t in layer.outputs:
            if t:
                producer.setdefault(t, layer.id)
        for t in layer.inputs:
            if t:
                consumers.setdefault(t, []).append(layer.id)

    # rule 1: anchors
    step_anchors: list[list[str]] = []
    owner: dict[str, int] = {}
    for si, step in enumerate(steps):
        anchors: list[str] = []
        if not step.op_type.startswith("Reorder"):
            for a in step.anchors:
                if a in by_id and a not in anchors:
                    anchors.append(a)
            names = list(step.tensors)
            if step.match_name:
                if step.name in by_name and by_name[step.name] not in anchors:
                    anchors.append(by_name[step.name])
                if step.name.endswith("_nchwc"):
                    names.append(step.name[: -len("_nchwc")])
            for t in names:
                lid = producer.get(t)
                if lid is not None and lid not in anchors:
                    anchors.append(lid)
        step_anchors.append(anchors)
        for a in anchors:
            owner.setdefault(a, si)

    # rule 0 (DeepSparse): ops it has no kernels for (recurrent, control flow, ...) that no step names ran in
    # one of its "Naive Subgraph" steps: the first such step after the steps that own the op's inputs
    fallback_steps = [si for si, step in enumerate(steps) if step.fallback]
    if fallback_steps:
        for layer in layers:
            if layer.id in owner or layer.op_type not in NAIVE_ONLY or layer.constant:
                continue
            upstream, seen_t, todo = -1, set(), [t for t in layer.inputs if t]
            while todo:
                t = todo.pop()
                if t in seen_t or t not in producer:
                    continue
                seen_t.add(t)
                pid = producer[t]
                if pid in owner:
                    upstream = max(upstream, owner[pid])
                else:
                    todo.extend(x for x in by_id[pid].inputs if x)
            after = [si for si in fallback_steps if si > upstream]
            owner[layer.id] = after[0] if after else fallback_steps[-1]

    # rules 2 and 3: fused-away layers
    resolving: set[str] = set()

    def resolve(lid: str) -> int | None:
        if lid in owner:
            return owner[lid]
        if lid in resolving:
            return None
        resolving.add(lid)
        try:
            layer = by_id[lid]
            result = None
            if layer.op_type in ELEMENTWISE and not layer.constant:
                first = next((t for t in layer.inputs if t and t in producer and not by_id[producer[t]].constant),
                             None)
                if first is not None:
                    result = resolve(producer[first])
            if result is None:
                for t in layer.outputs:
                    for c in consumers.get(t, []):
                        result = resolve(c)
                        if result is not None:
                            break
                    if result is not None:
                        break
            if result is None:
                for t in layer.inputs:
                    if t in producer:
                        result = resolve(producer[t])
                        if result is not None:
                            break
            if result is not None:
                owner[lid] = result
            return result
        finally:
            resolving.discard(lid)

    for layer in layers:
        resolve(layer.id)

    members: list[list[str]] = [list(a) for a in step_anchors]
    for lid, si in owner.items():
        if lid not in step_anchors[si]:
            members[si].append(lid)
    for m in members:
        m.sort(key=lambda x: order.get(x, 0))

    layer_ms = {layer.id: 0.0 for layer in layers}
    internal: list[tuple[str, str, float]] = []
    seen: dict[str, int] = {}
    for si, step in enumerate(steps):
        ms = max(0.0, float(step.ms))
        mem = members[si]
        if not mem:
            internal.append((internal_id(step.name, seen), step.name, ms))
            continue
        live = [m for m in mem if not by_id[m].constant] or mem
        known = [by_id[m].flops for m in live if by_id[m].flops is not None and by_id[m].flops > 0]
        fill = min(known) if known else 1.0
        weights = []
        for m in live:
            f = by_id[m].flops
            weights.append(float(f) if f is not None and f > 0 else (fill if f is None else 0.0))
        total = sum(weights)
        if total <= 0:
            weights = [1.0] * len(live)
            total = float(len(live))
        for m, w in zip(live, weights):
            layer_ms[m] += ms * w / total

    groups: dict[str, list[str]] = {}
    owner_name: dict[str, str] = {}
    names_used: dict[str, int] = {}
    step_keys = []
    for step in steps:
        names_used[step.name] = names_used.get(step.name, 0) + 1
        step_keys.append(step.name if names_used[step.name] == 1 else f"{step.name}#{names_used[step.name]}")
    for si, mem in enumerate(members):
        if mem:
            # constant-only members (folded weights) are not shown as measured layers of the group
            groups[step_keys[si]] = [m for m in mem if not by_id[m].constant] or mem
    for lid, si in owner.items():
        owner_name[lid] = step_keys[si]
    return Attribution(layer_ms=layer_ms, owner=owner_name, groups=groups, internal=internal)
