"""Channel groups of an ONNX graph, and removing channels from them (structured pruning).

A *space* is the output channels of one weighted producer (Conv, ConvTranspose,
Gemm, MatMul with a constant weight). Every tensor computed from a producer's
output by ops that act channel by channel (BatchNormalization, activations,
arithmetic with a scalar or per-channel constant, pooling, Resize, depthwise
convolution, Concat and Split on the channel axis) carries a *layout*: which
channel of which space sits at each of its channel positions. Where two tensors
meet element-wise (a residual Add, the gate of a squeeze-excitation block),
their spaces must lose the same channels: they are joined into one *group*
(union-find). A group is what the user prunes: removing channel ``i`` of a
group removes it from every space of the group, and from every tensor whose
layout holds it.

Whatever reads a channel tensor in a way this module does not understand (a
graph output, a Reshape or Transpose that mixes channels, a reduction over the
channel axis, Shape, an op with subgraphs, an unknown op) makes the groups of
that tensor unprunable, with the reason: a group is either removed exactly or
refused, never turned into a wrong model.

Removal (:func:`remove_channels`) slices every weight along the right axis:
the producers' output channels and biases, per-channel constants on the way,
depthwise kernels (and their ``group``), the consumers' input channels (Conv,
ConvTranspose, Gemm, MatMul; through Flatten, or a Reshape of NCHW to
[N, C*H*W] whose target shape follows, one block of features per channel),
Split sizes. :func:`mask_channels` gives the same model with the
removed channels' inputs zeroed in every consumer instead, so a test can check
removal against masking.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from sparsify_tui.onnxkit.tensors import find_tensor_site, read_site, write_site

# element-wise ops of one input that act channel by channel (extra inputs, where any, are scalars)
UNARY = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Gelu", "Erf", "Mish", "Identity", "Dropout", "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal",
    "Cast", "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu", "Sin", "Cos",
})
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu", "Sum", "Mean"})
POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "LpPool", "GlobalLpPool",
                   "Resize", "Upsample"})
PRODUCERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class Seg:
    """Channels ``start..stop-1`` of space ``space``, in order."""

    space: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class Space:
    """The output channels of one producer node."""

    id: int
    node: str  # the producer's node name (or its first output when it has no name)
    op_type: str
    channels: int
    weight: str  # the weight tensor's name
    weight_axis: int  # the weight's output-channel axis
    bias: str | None = None


@dataclass
class ChannelGroup:
    """Channels that must be removed together: the same indices from each of its spaces."""

    id: str
    channels: int
    producers: list[str]  # node names of the spaces' producers
    prunable: bool = True
    reasons: list[str] = field(default_factory=list)
    params: int = 0  # weights that depend on one channel of the group, times the channel count

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "channels": self.channels, "producers": list(self.producers),
                "prunable": self.prunable, "reasons": list(self.reasons), "params": self.params}


@dataclass
class _Edit:
    """A constant to slice along ``axis`` by the channel positions of ``layout`` (``block`` values a channel)."""

    name: str
    axis: int
    layout: tuple[Seg, ...]
    block: int = 1
    role: str = "param"  # producer | param | consumer


@dataclass
class _Tensor:
    layout: tuple[Seg, ...]
    axis: int  # the channel axis (non-negative)
    rank: int


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _width(layout: Iterable[Seg]) -> int:
    return sum(s.size for s in layout)


def _sub_layout(layout: tuple[Seg, ...], start: int, stop: int) -> tuple[Seg, ...]:
    """Positions ``start..stop-1`` of a layout."""
    out, pos = [], 0
    for s in layout:
        lo, hi = max(start, pos), min(stop, pos + s.size)
        if lo < hi:
            out.append(Seg(s.space, s.start + lo - pos, s.start + hi - pos))
        pos += s.size
    return tuple(out)


class _Analysis:
    """One pass over the graph in topological order: spaces, layouts, unions, edits and refusals."""

    def __init__(self, model: Any, shapes: Mapping[str, Any] | None = None) -> None:
        self.model = model
        g = model.graph
        self.shapes: dict[str, list[Any]] = dict(shapes) if shapes is not None else _onnx_shapes(model)
        self.consts: set[str] = {i.name for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" or (n.op_type == "ConstantOfShape" and n.input and n.input[0] in self.consts):
                self.consts.update(n.output)
        self.spaces: list[Space] = []
        self.parent: list[int] = []
        self.reasons: dict[int, list[str]] = {}
        self.edits: list[_Edit] = []
        self.tensors: dict[str, _Tensor] = {}
        self.splits: list[tuple[Any, tuple[tuple[Seg, ...], ...]]] = []  # (Split node, output layouts)
        self.depthwise: list[tuple[Any, tuple[Seg, ...]]] = []
        self.reshapes: list[tuple[Any, tuple[Seg, ...], int]] = []  # (Reshape to [N, features], layout, block)
        self.const_uses: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                self.const_uses[i] = self.const_uses.get(i, 0) + 1
        self.outputs = {o.name for o in g.output}

    # ---------------------------------------------------------------- union-find
    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def refuse(self, layout: Iterable[Seg], reason: str) -> None:
        for s in layout:
            self.reasons.setdefault(s.space, [])
            if reason not in self.reasons[s.space]:
                self.reasons[s.space].append(reason)

    def refuse_all(self, tensors: Iterable["_Tensor | None"], reason: str) -> None:
        """Refuse the channels of every tensor given (None: no channels there)."""
        for t in tensors:
            if t is not None:
                self.refuse(t.layout, reason)

    # ---------------------------------------------------------------- helpers
    def value(self, name: str) -> np.ndarray | None:
        if name not in self.consts:
            return None
        site = find_tensor_site(self.model, name)
        return None if site is None else read_site(self.model, site)

    def shape(self, name: str) -> list[Any] | None:
        return self.shapes.get(name)

    def new_space(self, node: Any, channels: int, weight: str, axis: int, bias: str | None) -> _Tensor:
        sid = len(self.spaces)
        self.spaces.append(Space(sid, node.name or node.output[0], node.op_type, channels, weight, axis, bias))
        self.parent.append(sid)
        layout = (Seg(sid, 0, channels),)
        self.edits.append(_Edit(weight, axis, layout, role="producer"))
        if bias:
            b = self.value(bias)
            self.edits.append(_Edit(bias, 0 if b is None else b.ndim - 1, layout, role="producer"))
        return _Tensor(layout, 1 if node.op_type in ("Conv", "ConvTranspose") else -1, 0)

    def slice_param(self, name: str, t: _Tensor, rank_out: int, what: str) -> bool:
        """Record slicing a constant broadcast against tensor ``t``; False (and a refusal) when it cannot be."""
        arr = self.value(name)
        if arr is None:
            return False
        if arr.ndim == 0 or arr.size == 1:
            return True
        # right-aligned broadcast: the constant's axis facing the channel axis
        ax = arr.ndim - (rank_out - t.axis)
        if ax < 0:
            return True  # the constant has no channel axis: it broadcasts over it
        if any(arr.shape[i] != 1 for i in range(arr.ndim) if i != ax) and arr.shape[ax] == 1:
            self.refuse(t.layout, f"{what}: a constant varies along another axis")
            return False
        if arr.shape[ax] == 1:
            return True
        if arr.shape[ax] != _width(t.layout):
            self.refuse(t.layout, f"{what}: a constant of shape {list(arr.shape)} does not match the channels")
            return False
        if self.const_uses.get(name, 0) > 1:
            self.refuse(t.layout, f"{what}: its per-channel constant {name!r} is shared with other nodes")
            return False
        self.edits.append(_Edit(name, ax, t.layout))
        return True


def _onnx_shapes(model: Any) -> dict[str, list[Any]]:
    """{tensor: shape} from ONNX's own inference (callers with better shapes pass theirs)."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shapes stay unknown, every op needing one refuses
        inferred = model
    out: dict[str, list[Any]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return out


_FOLDABLE = {"Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast", "Flatten"}


def nodes_to_initializers(model: Any, value_of: Any) -> int:
    """Replace, in place, each main-graph node (in order) for which ``value_of(node)`` gives an array by an
    initializer of its first output's name holding that value (0-d kept); graph outputs stay nodes.
    Returns how many nodes were replaced."""
    from onnx import numpy_helper

    g = model.graph
    outputs = {o.name for o in g.output}
    keep, replaced = [], 0
    for n in g.node:
        value = value_of(n) if n.output and n.output[0] not in outputs else None
        if value is not None:
            g.initializer.append(numpy_helper.from_array(np.array(value, order="C"), n.output[0]))  # keeps 0-d
            replaced += 1
            continue
        keep.append(n)
    if replaced:
        del g.node[:]
        g.node.extend(keep)
    return replaced


def fold_constants(model: Any) -> int:
    """Replace, in place, the main graph's Reshape/Unsqueeze/Squeeze/Identity/Cast/Flatten nodes of constant
    inputs by initializers of their value (a per-channel bias stored as a Reshape of a vector becomes a
    constant the analysis can slice). Returns how many nodes were folded."""
    from sparsify_tui.onnxkit.tensors import constant_tensor

    g = model.graph
    known = {i.name for i in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant" and n.output}

    read_by_folded: set[str] = set()

    def folded(n: Any) -> np.ndarray | None:
        ins = [i for i in n.input if i]
        if n.op_type not in _FOLDABLE or not ins or not all(i in known for i in ins):
            return None
        vals = [constant_tensor(model, i) for i in ins]
        value = _fold_one(n, vals) if all(v is not None for v in vals) else None
        if value is not None:
            known.add(n.output[0])
            read_by_folded.update(ins)
        return value

    n = nodes_to_initializers(model, folded)
    if n:
        _drop_unread(model, read_by_folded)
    return n


def _drop_unread(model: Any, names: set[str]) -> None:
    """Remove those of ``names`` (the inputs of folded nodes) that are main-graph initializers or Constant
    nodes nothing reads any more (ONNX Runtime would warn about each, and the file would carry them)."""
    from sparsify_tui.onnxkit.graphs import iter_graphs

    g = model.graph
    used = {i for _, sub in iter_graphs(g) for node in sub.node for i in node.input}
    used |= {o.name for o in g.output}
    removed = {t.name for t in g.initializer if t.name in names and t.name not in used}
    if removed:
        keep = [t for t in g.initializer if t.name not in removed]
        del g.initializer[:]
        g.initializer.extend(keep)
        # an old-IR model lists its initializers as graph inputs too: their entries go with them
        inputs = [vi for vi in g.input if vi.name not in removed]
        del g.input[:]
        g.input.extend(inputs)
    dead = [n for n in g.node if n.op_type == "Constant" and n.output and n.output[0] in names
            and n.output[0] not in used]
    for n in dead:  # a Constant node that only fed folded nodes
        g.node.remove(n)


def _fold_one(n: Any, vals: list[np.ndarray]) -> np.ndarray | None:
    from onnx import helper

    x = vals[0]
    op = n.op_type
    if op == "Identity":
        return x
    if op == "Cast":
        return x.astype(helper.tensor_dtype_to_np_dtype(int(_attr(n, "to"))))
    if op == "Reshape" and len(vals) == 2:
        shape = [int(d) for d in vals[1].reshape(-1)]
        if not int(_attr(n, "allowzero", 0)):
            shape = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(shape)]
        return x.reshape(shape)
    if op in ("Unsqueeze", "Squeeze"):
        axes = _attr(n, "axes") if len(vals) == 1 else [int(i) for i in vals[1].reshape(-1)]
        if op == "Squeeze":
            return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(axes))
        out = x
        for ax in sorted(int(a) % (x.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, ax)
        return out
    if op == "Flatten":
        axis = int(_attr(n, "axis", 1)) % max(x.ndim, 1)
        return x.reshape(int(np.prod(x.shape[:axis])), -1)
    return None


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _rank(a: _Analysis, name: str) -> int | None:
    s = a.shape(name)
    return None if s is None else len(s)


def _visit(a: _Analysis, node: Any) -> None:  # noqa: C901 - one case per op kind, each short
    op = node.op_type
    ins = [i for i in node.input]
    chan = [a.tensors.get(i) for i in ins]
    if op in PRODUCERS and _producer(a, node, chan):
        return
    live = [(k, t) for k, t in enumerate(chan) if t is not None]
    if not live:
        return
    if node.domain not in ("", "ai.onnx") or any(attr.type in (5, 10) for attr in node.attribute):
        for _, t in live:
            a.refuse(t.layout, f"read by {op} {node.name!r} (an op this analysis does not understand)")
        return
    handler = _HANDLERS.get(op)
    if handler is None:
        for _, t in live:
            a.refuse(t.layout, f"read by {op} {node.name!r}, which mixes or reshapes channels")
        return
    handler(a, node, chan)


def _producer(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> bool:
    """Record a weighted layer: its input channels (a consumer) and its output channels (a new space).
    False when the node is not a weighted layer this analysis handles (the caller treats it as an op)."""
    op, ins = node.op_type, list(node.input)
    w_name = ins[1] if len(ins) > 1 else ""
    w = a.value(w_name)
    if w is None:
        return False
    x = chan[0]
    out = node.output[0]
    if op in ("Conv", "ConvTranspose"):
        group = int(_attr(node, "group", 1))
        if w.ndim < 3:
            return False
        if group != 1:
            return _grouped(a, node, x, w, group)
        in_axis, out_axis = (1, 0) if op == "Conv" else (0, 1)
        channels = w.shape[out_axis]
        rank_ok = True
    else:  # Gemm, MatMul
        if w.ndim != 2:
            return False
        if op == "Gemm":
            if int(_attr(node, "transA", 0)):
                if x is not None:
                    a.refuse(x.layout, f"read by Gemm {node.name!r} with transA")
                return True
            trans_b = int(_attr(node, "transB", 0))
            in_axis, out_axis = (1, 0) if trans_b else (0, 1)
        else:
            in_axis, out_axis = 0, 1
        channels = w.shape[out_axis]
        rank_ok = x is None or x.axis == (_rank(a, ins[0]) or 0) - 1
    if x is not None:
        if not rank_ok:
            a.refuse(x.layout, f"read by {op} {node.name!r} on an axis other than its channels")
        elif _width(x.layout) != w.shape[in_axis]:
            a.refuse(x.layout, f"read by {op} {node.name!r} whose weight does not match its channels")
        elif a.const_uses.get(w_name, 0) > 1:
            a.refuse(x.layout, f"read by {op} {node.name!r} whose weight is shared")
        else:
            a.edits.append(_Edit(w_name, in_axis, x.layout, role="consumer"))
    if a.const_uses.get(w_name, 0) > 1:
        return True  # a shared weight: its outputs are not a space of their own
    bias = ins[2] if len(ins) > 2 and ins[2] else None
    if bias is not None:
        b = a.value(bias)
        if b is None or b.size not in (1, channels) or a.const_uses.get(bias, 0) > 1:
            return True
        if b.size == 1:
            bias = None  # a scalar bias broadcasts over the channels
    t = a.new_space(node, int(channels), w_name, out_axis, bias)
    rank = _rank(a, out)
    if rank is None:
        a.refuse(t.layout, f"the output of {op} {node.name!r} has no known shape")
        rank = 2
    t.axis = _norm_axis(t.axis, rank)
    t.rank = rank
    a.tensors[out] = t
    if out in a.outputs:
        a.refuse(t.layout, f"{out!r} is a graph output")
    return True


def _grouped(a: _Analysis, node: Any, x: _Tensor | None, w: np.ndarray, group: int) -> bool:
    """A depthwise convolution passes channels through; other grouped convolutions tie them in blocks."""
    cin = w.shape[1] * group if node.op_type == "Conv" else w.shape[0]
    cout = w.shape[0] if node.op_type == "Conv" else w.shape[1] * group
    if node.op_type == "Conv" and group == cin == cout and w.shape[1] == 1 and x is not None:
        a.depthwise.append((node, x.layout))
        a.edits.append(_Edit(node.input[1], 0, x.layout))
        if len(node.input) > 2 and node.input[2]:
            a.slice_param(node.input[2], _Tensor(x.layout, 0, 1), 1, f"depthwise {node.name!r} bias")
        if a.const_uses.get(node.input[1], 0) > 1:
            a.refuse(x.layout, f"depthwise {node.name!r} shares its weight")
        _pass(a, node, x)
        return True
    if x is not None:
        a.refuse(x.layout, f"read by {node.op_type} {node.name!r} with {group} groups")
    return True


def _pass(a: _Analysis, node: Any, t: _Tensor, out: str | None = None) -> None:
    out = out or node.output[0]
    rank = _rank(a, out) or t.rank
    a.tensors[out] = _Tensor(t.layout, t.axis, rank)
    if out in a.outputs:
        a.refuse(t.layout, f"{out!r} is a graph output")


def _unary(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> None:
    x = chan[0]
    if x is None or any(c is not None for c in chan[1:]):
        a.refuse_all(chan, f"{node.op_type} {node.name!r} reads channels as a parameter")
        return
    for extra in node.input[1:]:
        v = a.value(extra) if extra else None
        if extra and (v is None or v.size != 1):
            if node.op_type == "Dropout" and v is None:
                continue
            a.refuse(x.layout, f"{node.op_type} {node.name!r} has a non-scalar parameter")
            return
    _pass(a, node, x)


def _output_and_live(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> tuple[str, int | None, list[_Tensor]]:
    """(the node's first output, its rank if known, the channel tensors among its inputs)."""
    out = node.output[0]
    return out, _rank(a, out), [c for c in chan if c is not None]


def _binary(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> None:
    out, rank_out, live = _output_and_live(a, node, chan)
    if rank_out is None:
        a.refuse_all(live, f"the output of {node.op_type} {node.name!r} has no known shape")
        return
    first = live[0]
    ref_axis = first.axis + (rank_out - first.rank)
    for c in live[1:]:
        if c.axis + (rank_out - c.rank) != ref_axis or [s.size for s in c.layout] != [s.size for s in first.layout]:
            a.refuse_all(live, f"{node.op_type} {node.name!r} meets channels laid out differently")
            return
        for s, r in zip(c.layout, first.layout):
            if s.start != r.start or s.stop != r.stop:
                a.refuse_all(live, f"{node.op_type} {node.name!r} meets channels laid out differently")
                return
        for s, r in zip(c.layout, first.layout):
            a.union(s.space, r.space)
    t = _Tensor(first.layout, ref_axis, rank_out)
    for name, c in zip(node.input, chan):
        if c is not None or not name:
            continue
        if name in a.consts:
            if not a.slice_param(name, t, rank_out, f"{node.op_type} {node.name!r}"):
                return
            continue
        shp = a.shape(name)
        if shp is None:
            a.refuse(first.layout, f"{node.op_type} {node.name!r} has an input of unknown shape")
            return
        ax = len(shp) - (rank_out - ref_axis)
        if ax >= 0 and shp[ax] != 1:
            a.refuse(first.layout, f"{node.op_type} {node.name!r} adds values that are not in the channel groups")
            return
    _pass(a, node, t, out)


def _batchnorm(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> None:
    x = chan[0]
    if x is None or x.axis != 1 or any(c is not None for c in chan[1:]):
        a.refuse_all(chan, f"BatchNormalization {node.name!r} on another axis")
        return
    t1 = _Tensor(x.layout, 0, 1)
    for p in node.input[1:5]:
        if not a.slice_param(p, t1, 1, f"BatchNormalization {node.name!r}"):
            a.refuse(x.layout, f"BatchNormalization {node.name!r} has parameters that are not constant")
            return
    _pass(a, node, x)


def _pool(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> None:
    x = chan[0]
    if x is None or x.axis != 1 or any(c is not None for c in chan[1:]):
        a.refuse_all(chan, f"{node.op_type} {node.name!r} does not keep channels on axis 1")
        return
    if node.op_type in ("Resize", "Upsample") and not _keeps_channels(a, node, _width(x.layout)):
        a.refuse(x.layout, f"{node.op_type} {node.name!r} may change the channel axis")
        return
    _pass(a, node, x)


def _keeps_channels(a: _Analysis, node: Any, width: int) -> bool:
    """Resize/Upsample: its constant scales keep axis 1 at 1.0 (constant sizes are refused)."""
    if node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
        return False  # constant sizes would have to follow the new channel count
    scales_at = 2 if node.op_type == "Resize" else 1
    name = node.input[scales_at] if len(node.input) > scales_at else ""
    if not name:
        scales = _attr(node, "scales")
        return scales is not None and len(scales) >= 2 and float(scales[1]) == 1.0
    v = a.value(name)
    return v is not None and v.size >= 2 and float(v.reshape(-1)[1]) == 1.0


def _reduce(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> None:
    x = chan[0]
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        v = a.value(node.input[1])
        axes = None if v is None else [int(i) for i in v.reshape(-1)]
    keep = int(_attr(node, "keepdims", 1))
    if x is None or axes is None or not keep or x.axis in [_norm_axis(int(i), x.rank) for i in axes]:
        if x is not None:
            a.refuse(x.layout, f"{node.op_type} {node.name!r} reduces over the channels")
        return
    _pass(a, node, x)


def _concat(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> None:
    out, rank, live = _output_and_live(a, node, chan)
    axis = None if rank is None else _norm_axis(int(_attr(node, "axis", 0)), rank)
    if axis is None or any(c.axis != axis for c in live):
        a.refuse_all(live, f"Concat {node.name!r} joins on another axis")
        return
    layout: list[Seg] = []
    for c in chan:
        if c is None:
            a.refuse([s for d in live for s in d.layout], f"Concat {node.name!r} joins channels of no group")
            return
        layout.extend(c.layout)
    seen: set[Seg] = set()
    for s in layout:  # the same channels twice (cat([x, x])): removal would be right, but keep it simple
        if s in seen:
            a.refuse(layout, f"Concat {node.name!r} holds the same channels twice")
            return
        seen.add(s)
    _pass(a, node, _Tensor(tuple(layout), axis, rank), out)


def _split(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> None:
    x = chan[0]
    if x is None:
        return
    axis = _norm_axis(int(_attr(node, "axis", 0)), x.rank)
    sizes = _attr(node, "split")
    if sizes is None and len(node.input) > 1 and node.input[1]:
        v = a.value(node.input[1])
        sizes = None if v is None else [int(i) for i in v.reshape(-1)]
    if axis != x.axis or sizes is None or any(c is not None for c in chan[1:]):
        a.refuse(x.layout, f"Split {node.name!r} on the channels without constant sizes")
        return
    pos, layouts = 0, []
    for out, size in zip(node.output, sizes):
        sub = _sub_layout(x.layout, pos, pos + int(size))
        layouts.append(sub)
        pos += int(size)
        _pass(a, node, _Tensor(sub, x.axis, x.rank), out)
    a.splits.append((node, tuple(layouts)))


def _flatten(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> None:
    """Flatten(axis=1) of an NCHW tensor: each channel becomes a block of H*W features (for a Gemm)."""
    x = chan[0]
    shp = a.shape(node.input[0])
    axis = int(_attr(node, "axis", 1))
    if x is None or x.axis != 1 or axis != 1 or shp is None or any(d is None for d in shp[2:]):
        if x is not None:
            a.refuse(x.layout, f"Flatten {node.name!r} mixes channels")
        return
    block = int(np.prod(shp[2:])) if len(shp) > 2 else 1
    _features_to_weighted(a, node, x, block)


def _features_to_weighted(a: _Analysis, node: Any, x: _Tensor, block: int) -> bool:
    """The output of ``node`` (NCHW flattened to [N, C*H*W]) read only by Gemm/MatMul weights: each reads one
    block of ``block`` features per channel (an edit of its weight); else the channels are refused."""
    out = node.output[0]
    consumers = [n for n in a.model.graph.node if out in n.input]
    for c in consumers:
        w = a.value(c.input[1]) if c.op_type in ("Gemm", "MatMul") and len(c.input) > 1 else None
        if c.input[0] != out or w is None or w.ndim != 2 or a.const_uses.get(c.input[1], 0) > 1 or \
                (c.op_type == "Gemm" and int(_attr(c, "transA", 0))):
            a.refuse(x.layout, f"{node.op_type} {node.name!r} feeds {c.op_type} {c.name!r}, not a weighted layer")
            return False
    if out in a.outputs:
        a.refuse(x.layout, f"{out!r} is a graph output")
        return False
    for c in consumers:
        in_axis = 1 if c.op_type == "Gemm" and int(_attr(c, "transB", 0)) else 0
        a.edits.append(_Edit(c.input[1], in_axis, x.layout, block=block, role="consumer"))
    return True


def _reshape(a: _Analysis, node: Any, chan: list[_Tensor | None]) -> None:
    """Reshape of NCHW to [N, C*H*W] before a Gemm/MatMul (a Flatten written as a Reshape, as ResNet exports
    do): each channel becomes a block of H*W features; on removal the constant target shape follows. Any other
    Reshape of channels mixes them and refuses."""
    x = chan[0]
    if x is None or any(c is not None for c in chan[1:]):
        a.refuse_all(chan, f"read by Reshape {node.name!r}, which mixes or reshapes channels")
        return
    shp = a.shape(node.input[0])
    v = a.value(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    target = [int(t) for t in v.reshape(-1)] if v is not None and v.ndim == 1 else []
    ok = x.axis == 1 and shp is not None and len(shp) >= 2 and all(isinstance(d, int) for d in shp[1:]) \
        and len(target) == 2 and not int(_attr(node, "allowzero", 0))
    if ok:
        block = int(np.prod(shp[2:])) if len(shp) > 2 else 1
        width = int(shp[1]) * block
        first_ok = target[0] == 0 or (shp[0] is not None and target[0] == shp[0]) or \
            (target[0] == -1 and target[1] == width)
        ok = first_ok and target[1] in (width, -1) and target != [-1, -1]
    if not ok:
        a.refuse(x.layout, f"read by Reshape {node.name!r}, which mixes or reshapes channels")
        return
    if _features_to_weighted(a, node, x, block) and target[1] != -1:
        a.reshapes.append((node, x.layout, block))


_HANDLERS = {
    **{op: _unary for op in UNARY},
    **{op: _binary for op in BINARY},
    **{op: _pool for op in POOLS},
    "BatchNormalization": _batchnorm,
    "ReduceMean": _reduce, "ReduceSum": _reduce, "ReduceMax": _reduce, "ReduceMin": _reduce,
    "Concat": _concat,
    "Split": _split,
    "Flatten": _flatten,
    "Reshape": _reshape,
}


# ---------------------------------------------------------------- the public functions
def _analyze(model: Any, shapes: Mapping[str, Any] | None = None) -> _Analysis:
    from sparsify_tui.onnxkit.graphs import iter_graphs, subgraphs

    a = _Analysis(model, shapes)
    for node in model.graph.node:
        inner = [n for sg in subgraphs(node) for _, g in iter_graphs(sg) for n in g.node]
        for name in {i for n in inner for i in n.input}:  # outer-scope values a subgraph reads by name
            t = a.tensors.get(name)
            if t is not None:
                a.refuse(t.layout, f"read inside the subgraph of {node.op_type} {node.name!r}")
        _visit(a, node)
    return a


def _group_of(a: _Analysis) -> dict[int, str]:
    """Space id -> group id (the node name of the group's first producer)."""
    first: dict[int, str] = {}
    for sp in a.spaces:
        first.setdefault(a.find(sp.id), sp.node)
    return {sp.id: first[a.find(sp.id)] for sp in a.spaces}


def _groups(a: _Analysis) -> list[ChannelGroup]:
    gid = _group_of(a)
    groups: dict[str, ChannelGroup] = {}
    for sp in a.spaces:
        g = groups.get(gid[sp.id])
        if g is None:
            g = groups[gid[sp.id]] = ChannelGroup(gid[sp.id], sp.channels, [])
        g.producers.append(sp.node)
        if sp.channels != g.channels:
            g.reasons.append("its producers have different channel counts")
        for r in a.reasons.get(sp.id, []):
            if r not in g.reasons:
                g.reasons.append(r)
    shapes: dict[str, tuple[int, ...]] = {}
    for e in a.edits:
        if e.name not in shapes:
            v = a.value(e.name)
            shapes[e.name] = () if v is None else tuple(v.shape)
        shp = shapes[e.name]
        per = int(np.prod(shp)) // max(shp[e.axis], 1) if shp else 0
        for seg in e.layout:
            groups[gid[seg.space]].params += per * seg.size * e.block
    for g in groups.values():
        g.prunable = not g.reasons and g.channels > 1
        if g.channels <= 1 and not g.reasons:
            g.reasons.append("a single channel")
    return list(groups.values())


def _prepared(model: Any) -> Any:
    out = type(model)()
    out.CopyFrom(model)
    fold_constants(out)
    return out


def find_groups(model: Any, shapes: Mapping[str, Any] | None = None) -> list[ChannelGroup]:
    """The channel groups of ``model`` (an ONNX ModelProto, not changed).

    ``shapes``: {tensor name: shape} of the main graph where the caller knows them better than ONNX's own
    inference (the analysis layer's); without them, fixed input shapes give the most groups."""
    return _groups(_analyze(_prepared(model), shapes))


def _removed_by_space(a: _Analysis, removed: Mapping[str, Iterable[int]],
                      cached: tuple[dict, dict] | None = None) -> dict[int, set[int]]:
    """{space id: removed channel indices}; ``cached``: ({group id: group}, {space: group id}) computed once."""
    from sparsify_tui.errors import UsageError

    groups, gid = cached if cached is not None else ({g.id: g for g in _groups(a)}, _group_of(a))
    out: dict[int, set[int]] = {}
    for name, idx in removed.items():
        g = groups.get(name)
        if g is None:
            raise UsageError(f"no channel group {name!r} in this model")
        idx = {int(i) for i in idx}
        if not idx:
            continue
        if not g.prunable:
            raise UsageError(f"channel group {name!r} cannot be pruned: {'; '.join(g.reasons)}")
        if min(idx) < 0 or max(idx) >= g.channels:
            raise UsageError(f"channel group {name!r} has {g.channels} channels; got index {max(idx)}")
        if len(idx) >= g.channels:
            raise UsageError(f"channel group {name!r}: at least one of its {g.channels} channels must stay")
        for sp in a.spaces:
            if gid[sp.id] == name:
                out[sp.id] = idx
    return out


def _kept_positions(layout: tuple[Seg, ...], removed: dict[int, set[int]], block: int) -> np.ndarray:
    keep = [pos for pos, (space, ch) in enumerate((s.space, c) for s in layout for c in range(s.start, s.stop))
            if ch not in removed.get(space, ())]
    return (np.asarray(keep, dtype=np.int64)[:, None] * block + np.arange(block)).reshape(-1)


def _apply(model: Any, removed: Mapping[str, Iterable[int]], *, mask: bool,
           shapes: Mapping[str, Any] | None) -> Any:
    from onnx import helper

    out = _prepared(model)
    a = _analyze(out, shapes)
    by_space = _removed_by_space(a, removed)
    if not by_space:
        return out
    for e in a.edits:
        if not any(seg.space in by_space for seg in e.layout):
            continue
        if mask and e.role != "consumer":
            continue
        site = find_tensor_site(out, e.name)
        arr = read_site(out, site)
        kept = _kept_positions(e.layout, by_space, e.block)
        if mask:
            arr = arr.copy()
            gone = np.setdiff1d(np.arange(arr.shape[e.axis]), kept)
            idx = [slice(None)] * arr.ndim
            idx[e.axis] = gone
            arr[tuple(idx)] = 0
        else:
            arr = np.take(arr, kept, axis=e.axis)
        write_site(site, arr, int(out.ir_version))
    if mask:
        return out
    for node, layout in a.depthwise:
        width = len(_kept_positions(layout, by_space, 1))
        for attr in node.attribute:
            if attr.name == "group":
                attr.i = width
    for node, layout, block in a.reshapes:
        target = [int(t) for t in a.value(node.input[1]).reshape(-1)]
        target[1] = len(_kept_positions(layout, by_space, block))
        if target[0] == -1:
            target = [-1, target[1]]
        name = f"{node.input[1]}__channels_{node.name or node.output[0]}"
        out.graph.initializer.append(helper.make_tensor(name, 7, [2], target))
        if int(out.ir_version) < 4:  # before IR 4 every initializer is a graph input too
            out.graph.input.append(helper.make_tensor_value_info(name, 7, [2]))
        old, node.input[1] = node.input[1], name
        if not any(old in n.input for n in out.graph.node):  # ONNX Runtime warns about unread initializers
            _drop_initializer(out, old)
    for node, layouts in a.splits:
        sizes = [len(_kept_positions(lay, by_space, 1)) for lay in layouts]
        if len(node.input) > 1 and node.input[1]:
            name = f"{node.input[1]}__channels_{node.name or node.output[0]}"
            out.graph.initializer.append(helper.make_tensor(name, 7, [len(sizes)], sizes))
            node.input[1] = name
        else:
            for attr in node.attribute:
                if attr.name == "split":
                    del attr.ints[:]
                    attr.ints.extend(sizes)
    _sync_input_shapes(out)
    del out.graph.value_info[:]  # shapes inside the graph changed: let the next inference redo them
    return out


def _drop_initializer(model: Any, name: str) -> None:
    """Remove the main graph's initializer ``name`` (and its graph input, on an old-IR model) if there is one."""
    g = model.graph
    for i, init in enumerate(g.initializer):
        if init.name == name:
            del g.initializer[i]
            for j, vi in enumerate(g.input):
                if vi.name == name:
                    del g.input[j]
                    break
            return


def _sync_input_shapes(model: Any) -> None:
    """An old-IR model lists its initializers as graph inputs too: their declared shapes follow the new sizes."""
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in dims and vi.type.tensor_type.HasField("shape"):
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in dims[vi.name]:
                shape.dim.add().dim_value = d


def remove_channels(model: Any, removed: Mapping[str, Iterable[int]],
                    shapes: Mapping[str, Any] | None = None) -> Any:
    """A copy of ``model`` without the channels ``removed`` ({group id: channel indices}): smaller weights.
    Constant expressions of the weights (a bias stored as a Reshape of a vector) come out folded."""
    return _apply(model, removed, mask=False, shapes=shapes)


def mask_channels(model: Any, removed: Mapping[str, Iterable[int]],
                  shapes: Mapping[str, Any] | None = None) -> Any:
    """A copy of ``model`` where every consumer of the ``removed`` channels reads zeros for them instead
    (same size): what :func:`remove_channels` must compute, for tests and for measuring a plan's effect."""
    return _apply(model, removed, mask=True, shapes=shapes)


# ---------------------------------------------------------------- the groups as the weighted layers see them
@dataclass
class ChannelMap:
    """Which group channels each weighted node produces and reads (for ranking channels and refitting layers).

    Nodes are keyed by their first output. ``outputs``: {producer: group id} (its output channel ``i`` is the
    group's channel ``i``). ``inputs``: {consumer: (weight name, weight axis, block, [(group id, channel) per
    input channel position])} for every Conv/ConvTranspose/Gemm/MatMul reading group channels (through Flatten,
    each position stands for ``block`` consecutive features). ``depthwise``: {node: [(group id, channel)]}.
    ``spaces``: {producer: its :class:`Space`}."""

    groups: list[ChannelGroup]
    outputs: dict[str, str]
    inputs: dict[str, tuple[str, int, int, list[tuple[str, int]]]]
    depthwise: dict[str, list[tuple[str, int]]]
    spaces: dict[str, Space]


def _positions(layout: Iterable[Seg], gid: Mapping[int, str]) -> list[tuple[str, int]]:
    return [(gid[s.space], c) for s in layout for c in range(s.start, s.stop)]


def channel_map(model: Any, shapes: Mapping[str, Any] | None = None) -> ChannelMap:
    """The :class:`ChannelMap` of ``model`` (constants folded first, as :func:`remove_channels` does)."""
    prepared = _prepared(model)
    a = _analyze(prepared, shapes)
    gid = _group_of(a)
    by_key = {(n.name or n.output[0]): n for n in prepared.graph.node if n.output}
    weight_user: dict[str, str] = {}
    for n in prepared.graph.node:
        if n.op_type in PRODUCERS and len(n.input) > 1:
            weight_user.setdefault(n.input[1], n.output[0])
    outputs, spaces = {}, {}
    for sp in a.spaces:
        node = by_key.get(sp.node)
        if node is not None:
            outputs[node.output[0]] = gid[sp.id]
            spaces[node.output[0]] = sp
    inputs = {}
    for e in a.edits:
        if e.role == "consumer" and e.name in weight_user:
            inputs[weight_user[e.name]] = (e.name, e.axis, e.block, _positions(e.layout, gid))
    depthwise = {node.output[0]: _positions(layout, gid) for node, layout in a.depthwise}
    return ChannelMap(_groups(a), outputs, inputs, depthwise, spaces)


def group_layers(cmap: Any) -> dict[str, list[str]]:
    """{group id: the layer ids (first outputs) of its producers and of the depthwise convolutions inside it}."""
    out: dict[str, list[str]] = {g.id: [] for g in cmap.groups}
    for lid, gid in cmap.outputs.items():
        out.setdefault(gid, []).append(lid)
    for lid, positions in cmap.depthwise.items():
        gids = {g for g, _ in positions}
        if len(gids) == 1:
            gid = gids.pop()
            if lid not in out.setdefault(gid, []):
                out[gid].append(lid)
    for g in cmap.groups:
        if not out.get(g.id):
            out[g.id] = list(g.producers)
    return out


class FedMask:
    """The weights :func:`mask_channels` changes, fed to one session: measuring many removals without a model
    (and a session) per removal.

    ``model``: the prepared copy (constants folded) with every consumer weight an input instead of an
    initializer; ``dense``: {input name: its stored array}; ``weights(removed)``: the fed arrays of a removal
    ({group id: channel indices}): what :func:`mask_channels` would store, so the outputs are the masked
    model's, equal to :func:`remove_channels`'s. ``ok`` is False (and ``reason`` says why) when a consumer
    weight is not a plain initializer of the main graph (a Constant, a subgraph's): measure by removal then.
    """

    def __init__(self, model: Any, shapes: Mapping[str, Any] | None = None) -> None:
        from onnx import helper, numpy_helper

        from sparsify_tui.onnxkit.tensors import constant_node_value

        self.model = _prepared(model)
        names_in = set()
        for n in self.model.graph.node:
            if n.op_type in PRODUCERS and len(n.input) > 1:
                names_in.add(n.input[1])
        # a weight held in a Constant (or ConstantOfShape) node becomes an initializer of that name, to be fed
        def value_of(n: Any) -> np.ndarray | None:
            if n.output[0] not in names_in or n.domain not in ("", "ai.onnx"):
                return None
            if n.op_type == "Constant":
                return constant_node_value(n)
            if n.op_type == "ConstantOfShape":
                site = find_tensor_site(self.model, n.output[0])
                return None if site is None else read_site(self.model, site)
            return None

        nodes_to_initializers(self.model, value_of)
        self._a = _analyze(self.model, shapes)
        self._cached: tuple[dict, dict] | None = None
        self.edits = [e for e in self._a.edits if e.role == "consumer"]
        names = sorted({e.name for e in self.edits})
        inits = {i.name: i for i in self.model.graph.initializer}
        missing = [n for n in names if n not in inits]
        self.ok = not missing
        self.reason = "" if self.ok else f"{len(missing)} consumer weight(s) are not initializers (e.g. {missing[0]!r})"
        self.dense: dict[str, np.ndarray] = {}
        if not self.ok:
            return
        declared = {i.name for i in self.model.graph.input}
        keep = [i for i in self.model.graph.initializer if i.name not in names]
        for n in names:
            arr = numpy_helper.to_array(inits[n])
            self.dense[n] = arr
            if n not in declared:
                self.model.graph.input.append(helper.make_tensor_value_info(
                    n, inits[n].data_type, list(arr.shape)))
        del self.model.graph.initializer[:]
        self.model.graph.initializer.extend(keep)

    def weights(self, removed: Mapping[str, Iterable[int]]) -> dict[str, np.ndarray]:
        """{fed name: array} of a removal: the dense arrays with the removed input channels zeroed."""
        if self._cached is None:
            self._cached = ({g.id: g for g in _groups(self._a)}, _group_of(self._a))
        by_space = _removed_by_space(self._a, removed, self._cached)
        out: dict[str, np.ndarray] = {}
        for e in self.edits:
            if not any(seg.space in by_space for seg in e.layout):
                continue
            arr = out.get(e.name)
            if arr is None:
                arr = out[e.name] = self.dense[e.name].copy()
            kept = _kept_positions(e.layout, by_space, e.block)
            gone = np.setdiff1d(np.arange(arr.shape[e.axis]), kept)
            idx: list[Any] = [slice(None)] * arr.ndim
            idx[e.axis] = gone
            arr[tuple(idx)] = 0
        return {n: out.get(n, a) for n, a in self.dense.items()}
