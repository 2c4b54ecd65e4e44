"""ONNX file -> :class:`ModelGraph`.

Steps: read a weight-free skeleton of the file (:mod:`.loader`), fix every
dynamic input dimension (the user's ``--input-shape`` or a documented
default), run ONNX shape inference on the skeleton (cheap: no weight bytes),
then walk every node -- subgraphs of If/Loop/Scan included -- to find
constants, prunable layers and their weights, params and FLOPs. Zeros of the
prunable weights are counted with numpy directly on the memory-mapped file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from sparsify_tui.analysis.flops import NodeShapes, node_flops
from sparsify_tui.analysis.graph import Layer, ModelGraph, TensorInfo, WeightRef
from sparsify_tui.analysis.loader import FLOAT_TYPES, ONNX_DTYPES, Skeleton, count_zeros, load_skeleton, raw_view
from sparsify_tui.analysis.shapes import check_conv_ranks, shape_map
from sparsify_tui.analysis.shapes import infer as infer_shapes
from sparsify_tui.errors import InputShapeError, ModelError
from sparsify_tui.onnxkit.tensors import constant_node_info, constant_node_value

# ops whose output is still "a constant" when all their inputs are constants
TRANSFORM_OPS = {
    "Transpose", "Reshape", "Cast", "CastLike", "DequantizeLinear", "Identity", "Squeeze",
    "Unsqueeze", "Flatten", "Expand", "Tile",
}
PRUNABLE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv",
                "QLinearMatMul",
                # ONNX Runtime's fused forms (com.microsoft), found in models saved after ORT optimization
                "FusedConv", "FusedGemm", "FusedMatMul"}
QUANT_WEIGHT_TYPES = {2, 3, 6}  # uint8, int8, int32 (quantized weights / biases)

# which inputs of an op are weights/biases/normalization params (counted as params)
PARAM_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "ConvInteger": (1,), "QLinearConv": (3, 8),
    "BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2), "GroupNormalization": (1, 2), "SimplifiedLayerNormalization": (1,),
    "SkipLayerNormalization": (2, 3, 4), "RMSNormalization": (1,),
    "LSTM": (1, 2, 3), "GRU": (1, 2, 3), "RNN": (1, 2, 3),
    "PRelu": (1,),
}
# elementwise ops whose constant float operand with more than one element is a bias/scale param
BIAS_OPS = {"Add", "Sub", "Mul", "Div"}

DEFAULT_SPATIAL = 224
DEFAULT_SEQUENCE = 128


@dataclass
class Const:
    """A tensor known without running the model."""

    kind: str  # initializer | graph_input | constant | constant_of_shape | derived
    name: str  # the source tensor's name (for derived: the root's name)
    graph_path: str
    dims: list[int] | None  # the source's stored dims
    data_type: int
    proto: Any = None  # TensorProto holding the data (when in the skeleton), or the Constant/COS node
    transform: list[str] = field(default_factory=list)
    root: "Const | None" = None  # derived: the source constant
    zero_point: Any = None  # (Const, axis) of the DequantizeLinear zero point on the way, if any

    @property
    def source(self) -> "Const":
        return self.root if self.root is not None else self

    @property
    def key(self) -> tuple[str, str, str]:
        s = self.source
        return (s.graph_path, s.kind, s.name)


# ---------------------------------------------------------------- input shapes
_SHAPE_RE = re.compile(r"^\s*(.+?)\s*=\s*([0-9,\sx]+)\s*$")


MAX_INPUT_DIM = 2**31 - 1  # larger dimensions overflow the engines' int32/int64 arithmetic
MAX_INPUT_ELEMENTS = 2**40  # 4 TB of float32: no machine can feed that


BATCH_DIM = "N"  # in a stated shape: the dimension that takes the batch size (--input-shape state=2,N,128)
_BATCH_WORDS = ("n", "b", "batch")


def is_batch_dim(d: Any) -> bool:
    return isinstance(d, str) and d == BATCH_DIM


def format_shape(dims: list[Any] | None) -> str:
    """``[2, "N", 128]`` -> ``"2,N,128"`` (as written after ``--input-shape NAME=``)."""
    return ",".join(str(d) for d in dims or [])


def one_item(dims: list[Any]) -> list[int]:
    """A stated shape with its batch mark ``N`` at 1 (one item: what the analysis counts)."""
    return [1 if is_batch_dim(d) else int(d) for d in dims]


def parse_input_shapes(args: list[str] | None) -> dict[str, list[Any]]:
    """``["x=1,3,224,224", "state=2,N,128", "sr="]`` -> ``{"x": [1, 3, 224, 224], "state": [2, "N", 128],
    "sr": []}``; InputShapeError if malformed.

    A number is fed as stated. ``N`` (or ``B``, ``batch``; any case) marks the one dimension that takes
    the batch size; ``NAME=`` is a 0-d (scalar) input.
    """
    shapes: dict[str, list[Any]] = {}
    for arg in args or []:
        text = str(arg)
        if "=" not in text:
            raise InputShapeError(
                f"--input-shape {text!r} is malformed: expected NAME=D1,D2,... such as input=1,3,224,224"
            )
        name, _, dims_s = text.rpartition("=")
        name = name.strip()
        if name and not dims_s.strip():  # NAME= : a 0-d (scalar) input
            if name in shapes and shapes[name] != []:
                raise InputShapeError(f"--input-shape gives two different shapes for {name!r}")
            shapes[name] = []
            continue
        parts = [p.strip() for p in re.split(r"[,x]", dims_s)]
        marks = [p.isascii() and p.lower() in _BATCH_WORDS for p in parts]
        if not name or not parts or any(not m and not (p.isascii() and p.isdigit()) for p, m in zip(parts, marks)):
            raise InputShapeError(
                f"--input-shape {text!r} is malformed: expected NAME=D1,D2,... with whole numbers (N for the "
                f"batch dimension), such as input=1,3,224,224 or state=2,N,128"
            )
        if sum(marks) > 1:
            raise InputShapeError(f"--input-shape {text!r} marks {sum(marks)} batch dimensions (N); mark one at most")
        dims: list[Any] = [BATCH_DIM if m else int(p) for p, m in zip(parts, marks)]
        nums = [d for d in dims if isinstance(d, int)]
        if any(d <= 0 for d in nums):
            raise InputShapeError(f"--input-shape {text!r} has a dimension of 0; every dimension must be at least 1")
        if any(d > MAX_INPUT_DIM for d in nums) or prod(nums) > MAX_INPUT_ELEMENTS:
            raise InputShapeError(
                f"--input-shape {text!r} is absurdly large: each dimension must be at most {MAX_INPUT_DIM} "
                f"and the whole tensor at most {MAX_INPUT_ELEMENTS} elements"
            )
        if name in shapes and shapes[name] != dims:
            raise InputShapeError(f"--input-shape gives two different shapes for {name!r}")
        shapes[name] = dims
    return shapes


def _dim_of(d) -> Any:
    if d.HasField("dim_value") and d.dim_value > 0:
        return int(d.dim_value)
    if d.HasField("dim_param") and d.dim_param:
        return d.dim_param
    return "?"


def _tensor_shape(vi) -> list[Any] | None:
    t = vi.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return [_dim_of(d) for d in t.tensor_type.shape.dim]


def _conv_channels(g, name: str, rank: int) -> int | None:
    """Input channels (NCHW axis 1) required by a Conv that reads graph input ``name`` directly."""
    if rank < 3:
        return None
    inits = None
    for node in g.node:
        if node.op_type in ("Conv", "ConvInteger") and node.input and node.input[0] == name and len(node.input) > 1:
            if inits is None:
                inits = {t.name: t for t in g.initializer}
            w = inits.get(node.input[1])
            if w is not None and len(w.dims) == rank:
                group = next((a.i for a in node.attribute if a.name == "group"), 1) or 1
                return int(w.dims[1]) * int(group)
    return None


def _default_dims(shape: list[Any], dtype: int, memo: dict[str, int]) -> tuple[list[int], dict[int, int], list[str]]:
    """Fill unknown dims: batch -> 1, image H/W -> 224, sequence -> 128, other -> 1."""
    rank = len(shape)
    out: list[int] = []
    assumed: dict[int, int] = {}
    why: list[str] = []
    # layout guess for rank-4 images: NCHW when dim 1 is a small channel count, NHWC when dim 3 is
    spatial: set[int] = set()
    if rank == 4:
        if isinstance(shape[3], int) and shape[3] <= 4 and not (isinstance(shape[1], int) and shape[1] <= 4):
            spatial = {1, 2}
        else:
            spatial = {2, 3}
    elif rank == 5:
        spatial = {2, 3, 4}
    for i, d in enumerate(shape):
        if isinstance(d, int):
            out.append(d)
            continue
        lname = d.lower() if isinstance(d, str) and d != "?" else ""
        if lname and lname in memo:
            v, reason = memo[lname], "same symbol as another input"
        elif i == 0 or "batch" in lname or lname in ("n", "b", "bs"):
            v, reason = 1, "batch"
        elif any(k in lname for k in ("seq", "len", "token", "time", "step")):
            v, reason = DEFAULT_SEQUENCE, "sequence length"
        elif any(k in lname for k in ("height", "width")) or lname in ("h", "w") or i in spatial:
            v, reason = DEFAULT_SPATIAL, "image size"
        elif rank in (2, 3) and i == 1 and dtype in (6, 7):  # token ids: [batch, seq]
            v, reason = DEFAULT_SEQUENCE, "sequence length"
        elif rank == 3 and i == 1:
            v, reason = DEFAULT_SEQUENCE, "sequence length"
        else:
            v, reason = 1, "unknown dimension"
        if lname:
            memo[lname] = v
        out.append(v)
        assumed[i] = v
        why.append(f"{d if lname else 'axis ' + str(i)}={v} ({reason})")
    return out, assumed, why


# ---------------------------------------------------------------- attributes
def _text(x: Any) -> str:
    """A protobuf string field as text (protobuf hands out bytes when it is not valid UTF-8)."""
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def _finite(x: float) -> Any:
    """A float attribute as JSON can hold it: inf/nan become the strings "inf", "-inf", "nan"."""
    x = float(x)
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return x


def _attr_value(a) -> Any:
    t = a.type  # AttributeProto.AttributeType: FLOAT 1, INT 2, STRING 3, TENSOR 4, GRAPH 5, FLOATS 6,
    #             INTS 7, STRINGS 8, GRAPHS 10
    if t == 2:
        return int(a.i)
    if t == 1:
        return _finite(a.f)
    if t == 3:
        return a.s.decode("utf-8", "replace")
    if t == 7:
        return [int(x) for x in a.ints]
    if t == 6:
        return [_finite(x) for x in a.floats]
    if t == 8:
        return [s.decode("utf-8", "replace") for s in a.strings]
    if t == 4:
        return {"tensor": {"dims": list(a.t.dims), "dtype": ONNX_DTYPES.get(a.t.data_type, str(a.t.data_type))}}
    if t in (5, 10):
        return "<subgraph>"
    return None


def _const_value(c: Const) -> np.ndarray | None:
    """Small constant's data from the skeleton (shape tensors, zero points, fill values)."""
    from onnx import numpy_helper

    src = c.source
    try:
        if src.kind in ("initializer", "graph_input") and src.proto is not None:
            if src.proto.HasField("raw_data") or len(src.proto.float_data) or len(src.proto.int64_data) \
                    or len(src.proto.int32_data) or len(src.proto.double_data):
                return numpy_helper.to_array(src.proto)
            if src.dims is not None and prod(src.dims) == 0:
                return numpy_helper.to_array(src.proto)
            return None
        if src.kind == "constant" and src.proto is not None:
            return constant_node_value(src.proto)
    except Exception:
        return None
    return None


# ---------------------------------------------------------------- missing shapes
_SAME_SHAPE = {
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Ceil",
    "Floor", "Round", "Sign", "Not", "Clip", "Softmax", "LogSoftmax", "Hardmax", "BatchNormalization",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization", "LRN", "Cast",
    "CastLike", "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear", "Shrink", "ThresholdedRelu",
    "IsNaN", "IsInf", "CumSum", "Trilu",
    # com.microsoft (ONNX Runtime contrib ops) that keep their first input's shape
    "FastGelu", "BiasGelu", "QuickGelu", "SkipLayerNormalization", "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization", "BiasDropout", "BiasSoftmax",
}
_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
              "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "BitShift"}


def _concrete(s: Any) -> bool:
    return isinstance(s, list) and all(isinstance(d, int) for d in s)


def _conv_out_shape(node, x: Any, w: Any) -> list[int] | None:
    """Output shape of a convolution from its attributes (explicit pads or auto_pad)."""
    if not (_concrete(x) and _concrete(w)) or len(x) < 3 or len(w) != len(x):
        return None
    a: dict[str, Any] = {}
    for at in node.attribute:
        a[at.name] = list(at.ints) if at.type == 7 else (at.s.decode() if at.type == 3 else at.i)
    k = a.get("kernel_shape") or w[2:]
    nsp = len(x) - 2
    strides = a.get("strides") or [1] * nsp
    dil = a.get("dilations") or [1] * nsp
    pads = a.get("pads") or [0] * (2 * nsp)
    auto = a.get("auto_pad", "NOTSET")
    out = [x[0], w[0]]
    for i in range(nsp):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-x[2 + i] // strides[i]))
        else:
            pad = 0 if auto == "VALID" else pads[i] + pads[i + nsp]
            eff = (k[i] - 1) * dil[i] + 1
            out.append((x[2 + i] + pad - eff) // strides[i] + 1)
    return out if all(d > 0 for d in out) else None


def _fill_missing(node, in_shapes: list[Any], out_shapes: list[Any], shapes: dict[str, Any]) -> list[Any]:
    """Shapes onnx's inference left unknown, for ops whose rule is obvious (and Loop-carried state)."""
    op = node.op_type
    out = list(out_shapes)
    guess: list[Any] = [None] * len(out)
    if op in _SAME_SHAPE and in_shapes and _concrete(in_shapes[0]):
        guess[0] = list(in_shapes[0])
    elif op in _BROADCAST and in_shapes and all(_concrete(s) for s in in_shapes if s is not None) \
            and all(s is not None for s in in_shapes):
        try:
            guess[0] = [int(d) for d in np.broadcast_shapes(*[tuple(s) for s in in_shapes])]
        except ValueError:
            pass
    elif op in ("Conv", "FusedConv", "ConvInteger", "QLinearConv"):
        x = in_shapes[0] if in_shapes else None
        w = in_shapes[3 if op == "QLinearConv" else 1] if len(in_shapes) > 1 else None
        guess[0] = _conv_out_shape(node, x, w)
    elif op in ("MatMul", "FusedMatMul") and len(in_shapes) >= 2 and all(_concrete(s) and len(s) >= 2
                                                                           for s in in_shapes[:2]):
        a, b = in_shapes[0], in_shapes[1]
        attrs = {at.name: at.i for at in node.attribute if at.type == 2}
        if attrs.get("transA"):
            a = a[:-2] + [a[-1], a[-2]]
        if attrs.get("transB"):
            b = b[:-2] + [b[-1], b[-2]]
        try:
            batch = [int(d) for d in np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))]
            guess[0] = batch + [a[-2], b[-1]]
        except ValueError:
            pass
    elif op == "Einsum":
        eq = next((at.s.decode("utf-8", "replace") for at in node.attribute if at.name == "equation"), "")
        eq = eq.replace(" ", "")
        lhs, arrow, rhs = eq.partition("->")
        terms = lhs.split(",")
        if eq and "..." not in eq and len(terms) == len(in_shapes) and all(
                _concrete(sh) and len(sh) == len(t) for sh, t in zip(in_shapes, terms)):
            sizes: dict[str, int] = {}
            for t, sh in zip(terms, in_shapes):
                for c, d in zip(t, sh):
                    sizes[c] = max(sizes.get(c, 1), d)
            if not arrow:
                letters = "".join(terms)
                rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
            if all(c in sizes for c in rhs):
                guess[0] = [sizes[c] for c in rhs]
    elif op == "Loop":
        # outputs: final values of the loop-carried state (inputs 2...), then scan outputs
        carried = in_shapes[2:]
        for k, s in enumerate(carried[: len(out)]):
            if _concrete(s):
                guess[k] = list(s)
    for k, o in enumerate(node.output):
        if o and not _concrete(out[k]) and guess[k] is not None:
            out[k] = guess[k]
            shapes[o] = guess[k]
    return out


# ---------------------------------------------------------------- the walk
def _topological(g, available: set[str]) -> list:
    """The graph's nodes in execution order (ONNX requires it; a few exporters don't comply)."""
    nodes = list(g.node)
    seen = set(available)
    ok = True
    for n in nodes:
        if any(i and i not in seen for i in n.input):
            ok = False
            break
        seen.update(n.output)
    if ok:
        return nodes
    produced = {o for n in nodes for o in n.output if o}
    ready = set(available) | {i for n in nodes for i in n.input if i and i not in produced}
    order: list = []
    pending = nodes
    while pending:
        rest = []
        for n in pending:
            if all((not i) or i in ready for i in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle or a dangling input: keep file order for the rest
            order.extend(rest)
            break
        pending = rest
    return order


class _Walker:
    def __init__(self, skel: Skeleton, label: str):
        self.skel = skel
        self.label = label
        self.layers: list[Layer] = []
        self.ids: set[str] = set()
        self.counted: set[tuple[str, str, str]] = set()
        self.params = 0
        self.prunable_keys: dict[tuple[str, str, str], tuple[int, int]] = {}  # key -> (elements, zeros)
        self.depth = 0
        self.notes: list[str] = []
        self.has_loop_body = False
        self.has_if = False
        self.main_shapes: dict[str, Any] = {}

    # shapes of everything visible in a graph (outer scopes included)
    def graph_shapes(self, g, outer: dict[str, Any]) -> dict[str, Any]:
        return {**outer, **shape_map(g, _tensor_shape)}

    def walk(self, g, path: str, outer_consts: dict[str, Const], outer_shapes: dict[str, Any], main: bool,
             known_shapes: dict[str, Any] | None = None) -> None:
        consts = dict(outer_consts)
        shapes = dict(known_shapes) if known_shapes is not None else self.graph_shapes(g, outer_shapes)
        if main:
            self.main_shapes = shapes
        input_names = {i.name for i in g.input}
        for t in g.initializer:
            kind = "graph_input" if (main and t.name in input_names) else "initializer"
            consts[t.name] = Const(kind, t.name, path, [int(d) for d in t.dims], t.data_type, proto=t)
        nodes = list(g.node) if main else _topological(g, set(consts) | set(shapes) | input_names)
        for node in nodes:  # (the main graph was put in execution order before shape inference)
            self.visit(node, path, consts, shapes)

    def _fold(self, node, ins: list[str], outs: list[str], consts: dict[str, Const], shapes: dict[str, Any],
              path: str) -> None:
        """Record the constants a node produces (Constant, ConstantOfShape, transforms of constants)."""
        op = node.op_type
        if not outs:
            return
        out = outs[0]
        if op == "Constant" and node.domain in ("", "ai.onnx"):
            info = constant_node_info(node)
            if info is not None:
                dims, dt, _ = info
                consts[out] = Const("constant", out, path, dims, dt, proto=node)
                shapes.setdefault(out, dims)
            return
        if op == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
            dims = None
            s = shapes.get(out)
            if s is not None and all(isinstance(d, int) for d in s):
                dims = list(s)
            elif ins and ins[0] in consts:
                v = _const_value(consts[ins[0]])
                if v is not None:
                    dims = [int(x) for x in np.asarray(v).reshape(-1)]
            if dims is not None:
                dt = 1
                for a in node.attribute:
                    if a.name == "value":
                        dt = a.t.data_type
                consts[out] = Const("constant_of_shape", out, path, dims, dt, proto=node)
                shapes.setdefault(out, dims)
            return
        if op in TRANSFORM_OPS and ins and ins[0] in consts:
            if all((not i) or i in consts for i in ins):
                src = consts[ins[0]]
                root = src.source
                zp = src.zero_point
                if op == "DequantizeLinear" and len(ins) > 2 and ins[2]:
                    axis = 1
                    for a in node.attribute:
                        if a.name == "axis":
                            axis = int(a.i)
                    zp = (consts[ins[2]], axis)
                consts[out] = Const("derived", root.name, root.graph_path, root.dims, root.data_type,
                                    transform=list(src.transform) + [op], root=root, zero_point=zp)

    def _count_param(self, c: Const, layer: Layer) -> None:
        key = c.key
        if key in self.counted:
            return
        self.counted.add(key)
        n = prod(c.source.dims) if c.source.dims is not None else 0
        layer.params += n
        self.params += n

    def _zeros(self, c: Const, zero_point: Any = None) -> tuple[int, int]:
        """(elements, zeros) of a weight; for quantized weights a zero is a stored zero point."""
        src = c.source
        n = prod(src.dims) if src.dims is not None else 0
        if src.kind == "constant_of_shape":
            fill = 0.0
            for a in src.proto.attribute:
                if a.name == "value":
                    from onnx import numpy_helper

                    try:
                        fill = float(numpy_helper.to_array(a.t).reshape(-1)[0])
                    except Exception:
                        fill = 1.0
            return n, (n if fill == 0 else 0)
        arr = None
        if src.kind in ("initializer", "graph_input") and src.graph_path == "" and src.name in self.skel.raw:
            arr = raw_view(self.skel, src.name, src.data_type)
        if arr is None:
            arr = _const_value(src)
        if arr is None:
            return n, 0
        zp = zero_point if zero_point is not None else c.zero_point
        if zp is not None:
            zc, axis = zp
            zv = _const_value(zc)
            if zv is not None and np.any(zv != 0):
                try:
                    full = arr.reshape(src.dims)
                    if zv.size > 1:
                        shape = [1] * full.ndim
                        shape[axis % full.ndim] = zv.size
                        zv = zv.reshape(shape)
                    return n, int(np.count_nonzero(full == zv.astype(full.dtype)))
                except (ValueError, TypeError):
                    return n, count_zeros(arr)
        return n, count_zeros(arr)

    def visit(self, node, path: str, consts: dict[str, Const], shapes: dict[str, Any]) -> None:
        op = node.op_type
        domain = node.domain if node.domain != "ai.onnx" else ""
        ins = list(node.input)  # (each access to a protobuf repeated field builds a new wrapper)
        outs = list(node.output)
        attr_protos = list(node.attribute)
        self._check_text(node, op, domain, ins, outs, attr_protos)
        depth = self.depth
        self.depth += 1
        lid = outs[0] if outs and outs[0] else ""
        if not lid or lid in self.ids:
            base = lid or node.name or op
            lid = f"{base}#{depth}"
        self.ids.add(lid)
        attrs = {a.name: _attr_value(a) for a in attr_protos}

        self._fold(node, ins, outs, consts, shapes, path)

        in_shapes_all = [(shapes.get(i) if i else None) for i in ins]
        out_shapes = [(shapes.get(o) if o else None) for o in outs]
        if any(o and not _concrete(s) for o, s in zip(outs, out_shapes)):
            out_shapes = _fill_missing(node, in_shapes_all, out_shapes, shapes)
        act_shapes = [s for i, s in zip(ins, in_shapes_all) if i and i not in consts]
        layer = Layer(
            id=lid, name=node.name or lid, op_type=op, depth=depth, domain=domain, graph_path=path,
            inputs=ins, outputs=outs, input_shapes=act_shapes,
            output_shapes=out_shapes, attributes=attrs,
        )
        widx = self._prunable_weight(layer, ins, consts, shapes, attrs)
        self._other_params(layer, ins, outs, consts, widx)
        if outs and all(o in consts for o in outs if o):
            layer.flops = 0  # folded at load time by every engine
            layer.constant = True
        else:
            layer.flops = node_flops(op, domain, NodeShapes(in_shapes_all, out_shapes, attrs))
        self.layers.append(layer)
        self._walk_subgraphs(op, attr_protos, path, node.name or lid, consts, shapes)

    def _check_text(self, node, op: str, domain: str, ins: list, outs: list, attr_protos: list) -> None:
        try:  # protobuf hands out bytes for strings that are not valid UTF-8 ("".join rejects them, fast)
            "".join(ins), "".join(outs), "".join([op, domain, node.name]), "".join([a.name for a in attr_protos])
        except TypeError:
            raise ModelError(f"{self.label} is corrupt: node {self.depth} has a name or op type that is not "
                             "valid UTF-8 text") from None

    def _prunable_weight(self, layer: Layer, ins: list, consts: dict[str, Const], shapes: dict[str, Any],
                         attrs: dict) -> int | None:
        """Mark ``layer`` prunable when it holds a constant float (or quantized) weight: its weight, params,
        sparsity and bias; returns the weight's input index (None: not prunable)."""
        op, domain = layer.op_type, layer.domain
        widx = None
        if op in PRUNABLE_OPS and domain in ("", "com.microsoft"):
            if op in ("Conv", "ConvTranspose", "ConvInteger", "FusedConv"):
                cand = [1]
            elif op == "QLinearConv":
                cand = [3]
            elif op == "QLinearMatMul":
                cand = [3, 0]
            else:  # Gemm, MatMul, MatMulInteger
                cand = [1, 0]
            for k in cand:
                if k < len(ins) and ins[k] in consts:
                    c = consts[ins[k]]
                    if c.source.dims is not None and (c.data_type in FLOAT_TYPES or c.data_type in QUANT_WEIGHT_TYPES):
                        widx = k
                        break
        if widx is None:
            if op in ("Gemm",) and len(ins) > 2 and ins[2] in consts:
                self._count_param(consts[ins[2]], layer)
            return None
        c = consts[ins[widx]]
        src = c.source
        layer.prunable = True
        layer.weight_name = src.name
        layer.weight_shape = list(src.dims)
        layer.prunable_params = prod(src.dims)
        layer.weight = WeightRef(name=src.name, kind=src.kind, graph_path=src.graph_path,
                                 transform=list(c.transform))
        self._count_param(c, layer)
        key = c.key
        if key not in self.prunable_keys:
            # integer ops carry the weight's zero point as an input
            zk = {"ConvInteger": 3, "QLinearConv": 5, "QLinearMatMul": 5 if widx == 3 else 2,
                  "MatMulInteger": 3 if widx == 1 else 2}.get(op)
            zp = None
            if zk is not None and zk < len(ins) and ins[zk] in consts:
                zp = (consts[ins[zk]], 0)
            self.prunable_keys[key] = self._zeros(c, zp)
        n, z = self.prunable_keys[key]
        layer.sparsity = (z / n) if n else 0.0
        bidx = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2, "QLinearConv": 8, "FusedConv": 2, "FusedGemm": 2}.get(op)
        if bidx is not None and bidx < len(ins) and ins[bidx] in consts:
            b = consts[ins[bidx]]
            layer.bias_name = b.source.name
            layer.bias_shape = list(b.source.dims) if b.source.dims is not None else None
            self._count_param(b, layer)
        if op in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv") and "kernel_shape" not in attrs:
            dims = shapes.get(ins[widx]) or src.dims
            if dims and len(dims) > 2:
                attrs["kernel_shape"] = list(dims[2:])
        return widx

    def _other_params(self, layer: Layer, ins: list, outs: list, consts: dict[str, Const], widx: int | None) -> None:
        """The layer's params besides its prunable weight: per-op parameter inputs, embedding tables,
        weights of any op and domain, learned biases."""
        op, domain = layer.op_type, layer.domain
        for k in PARAM_INPUTS.get(op, ()):
            if k < len(ins) and ins[k] in consts and not (layer.prunable and k in (widx,)):
                c = consts[ins[k]]
                if c.source.dims is not None:
                    self._count_param(c, layer)
        if op == "Gather" and ins and ins[0] in consts:
            c = consts[ins[0]]
            dequantized = "DequantizeLinear" in c.transform or "Cast" in c.transform
            if (c.data_type in FLOAT_TYPES or dequantized) and c.source.dims and len(c.source.dims) >= 2:
                self._count_param(c, layer)  # embedding table
        if not (outs and all(o in consts for o in outs if o)):  # (a folded node's consumer counts it)
            for k, i in enumerate(ins):
                c = consts.get(i) if i else None
                if c is not None and _is_weight_or_table(c, op, domain, k):
                    self._count_param(c, layer)  # any op, any domain (contrib LSTMs, quantized tables ...)
        if op in BIAS_OPS and not layer.prunable:
            for i in ins:
                c = consts.get(i)
                if c is not None and c.data_type in FLOAT_TYPES and c.source.dims and prod(c.source.dims) > 1 \
                        and c.source.kind != "constant_of_shape":  # a filled tensor is not a learned bias
                    self._count_param(c, layer)

    def _walk_subgraphs(self, op: str, attr_protos: list, path: str, name: str, consts: dict[str, Const],
                        shapes: dict[str, Any]) -> None:
        if op == "If":
            self.has_if = True
        if op in ("Loop", "Scan"):
            self.has_loop_body = True
        subgraphs = [a for a in attr_protos if a.type in (5, 10)]
        for a in sorted(subgraphs, key=lambda a: a.name != "then_branch"):  # then before else
            if a.type == 5:  # GRAPH
                self.walk(a.g, f"{path + '/' if path else ''}{name}/{a.name}", consts, shapes, False)
            elif a.type == 10:  # GRAPHS
                for gi, sg in enumerate(a.graphs):
                    self.walk(sg, f"{path + '/' if path else ''}{name}/{a.name}[{gi}]",
                              consts, shapes, False)


# ---------------------------------------------------------------- params of every operator domain
INT_TYPES = {2, 3, 4, 5, 6, 7, 12, 13, 21, 22}  # (u)int8/16/32/64, (u)int4
# formal input names that are never weights: quantization parameters, indices, shapes, masks
_NOT_WEIGHT = ("scale", "zero_point", "indices", "shape", "mask", "axes", "sequence_lens", "pads", "roi",
               "sizes", "repeats", "starts", "ends", "steps", "condition")
_INDEX_MOVERS = TRANSFORM_OPS | {"Slice", "Concat", "Split", "Where", "Range", "Equal", "Less", "Greater", "Add",
                                  "Sub", "Mul", "Min", "Max", "ScatterND", "ScatterElements"}
_schema_cache: dict[tuple[str, str], list[tuple[str, bool]] | None] = {}


def _formal_inputs(op: str, domain: str) -> list[tuple[str, bool]] | None:
    """[(formal input name, variadic)] of an op from onnx's schemas, or ONNX Runtime's for contrib ops."""
    key = (op, domain)
    if key in _schema_cache:
        return _schema_cache[key]
    out = None
    try:
        import onnx.defs

        sch = onnx.defs.get_schema(op, domain)
        out = [(f.name, f.option == f.option.Variadic) for f in sch.inputs]
    except Exception:  # noqa: BLE001 - not an onnx op: ask ONNX Runtime (com.microsoft ...)
        try:
            from onnxruntime.capi import onnxruntime_pybind11_state as C

            if not _schema_cache.get(("__ort__", "")):
                for sch in C.get_all_operator_schema():
                    _schema_cache.setdefault((sch.name, sch.domain), [(f.name, False) for f in sch.inputs])
                _schema_cache[("__ort__", "")] = []
            out = _schema_cache.get(key)
        except Exception:  # noqa: BLE001 - no onnxruntime
            out = None
    _schema_cache[key] = out
    return out


def _is_weight_or_table(c: Const, op: str, domain: str, k: int) -> bool:
    """A constant of >= 2 dims, float or integer, consumed as input ``k`` of ``op``, that is not a
    scale, zero point, index, shape or mask (by the op's formal input name, else by the tensor's name)."""
    src = c.source
    if src.dims is None or len(src.dims) < 2 or src.kind == "constant_of_shape" or prod(src.dims) <= 1:
        return False  # (a [1,1,1,1] clip value is no weight)
    if src.data_type not in FLOAT_TYPES and src.data_type not in INT_TYPES:
        return False
    if src.data_type in (6, 7) and op in _INDEX_MOVERS:
        return False  # an int32/int64 buffer sliced or reshaped (position ids) is an index, not a learned table
    formal = _formal_inputs(op, domain)
    if formal:
        name = formal[k][0] if k < len(formal) else (formal[-1][0] if formal[-1][1] else "")
    else:
        name = src.name
    low = name.lower()
    return not any(w in low for w in _NOT_WEIGHT) and not low.endswith(("_zp", "zeropoint"))


# ---------------------------------------------------------------- entry point
def analyze(path: Any, input_shapes: dict[str, list[int]] | None = None) -> ModelGraph:
    """Analyse an ONNX model (a path; a ModelProto or bytes also work) into a :class:`ModelGraph`.

    Raises :class:`ModelError` (or :class:`InputShapeError`) with one sentence
    naming the file for anything wrong with the user's input.
    """
    import onnx

    label = str(path) if not isinstance(path, (bytes, bytearray, onnx.ModelProto)) else "<in-memory model>"
    skel = load_skeleton(path)
    try:
        return _analyze(skel, label, input_shapes or {}, path)
    finally:
        skel.close()


def _check_wiring(g, label: str) -> None:
    """ModelError when the main graph reads a tensor nothing produces (a dangling input) or has a cycle."""
    available = {vi.name for vi in g.input} | {t.name for t in g.initializer} | {""}
    available |= {t.values.name for t in g.sparse_initializer}
    produced = {o for node in g.node for o in node.output if o}
    consumers: dict[str, list[int]] = {}
    indeg: list[int] = []
    for idx, node in enumerate(g.node):
        deps = list(dict.fromkeys(i for i in node.input if i not in available))
        for i in deps:
            if i not in produced:
                raise ModelError(f"{label} is not a valid graph: node {_text(node.name or node.op_type)!r} reads "
                                 f"{_text(i)!r}, "
                                 "which no graph input, initializer or node produces (a dangling input)")
            consumers.setdefault(i, []).append(idx)
        indeg.append(len(deps))
    queue = [i for i, d in enumerate(indeg) if d == 0]
    done = 0
    while queue:
        idx = queue.pop()
        done += 1
        for o in g.node[idx].output:
            for c in consumers.pop(o, ()) if o else ():
                indeg[c] -= 1
                if indeg[c] == 0:
                    queue.append(c)
    if done < len(g.node):
        stuck = next(n for i, n in enumerate(g.node) if indeg[i] > 0)
        raise ModelError(f"{label} is not a valid graph: it has a cycle through node "
                         f"{_text(stuck.name or stuck.op_type)!r}")


def _opset(model, label: str) -> int:
    """The model's default-domain opset; a ModelError when it is missing or newer than onnx knows."""
    import onnx

    opset = 0
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            opset = int(o.version)
    if len(model.opset_import) == 0:
        if model.ir_version >= 3:
            raise ModelError(f"{label} has no opset version (opset_import is missing): truncated or not a valid "
                             "ONNX model")
        opset = 1  # IR 1-2 models predate opset_import and mean opset 1
    known = onnx.defs.onnx_opset_version()
    if opset > known:
        raise ModelError(
            f"{label} uses ONNX opset {opset}, newer than the installed onnx {onnx.__version__} "
            f"supports (up to opset {known}); upgrade onnx to analyse it"
        )
    return opset


def _check_given_shape(name: str, shape: list[Any] | None, given: list[Any], label: str) -> None:
    """InputShapeError when ``--input-shape`` contradicts the rank or a fixed dimension of the input
    (naming the shape stated, which would be fed, and the one the model declares)."""
    if shape is None:
        return
    both = f"--input-shape {name}={format_shape(given)} would feed [{format_shape(given)}]"
    declared = f"{label} declares {name} as [{format_shape(shape)}]"
    if len(shape) != len(given):
        raise InputShapeError(f"{both}, but {declared}: it expects {len(shape)} dimensions, got {len(given)}")
    for i, (d, v) in enumerate(zip(shape, given)):
        if is_batch_dim(v):
            if isinstance(d, int) and d != 1:
                raise InputShapeError(f"{both}, but {declared}, which fixes axis {i} to {d}: it cannot take "
                                      "the batch size (N)")
        elif isinstance(d, int) and d != v:
            raise InputShapeError(f"{both}, but {declared}, which fixes axis {i} to {d}, got {v}")


def _inputs(g, init_names: set[str], input_shapes: dict[str, list[int]], label: str,
            notes: list[str]) -> list[TensorInfo]:
    """The real inputs (graph inputs without an initializer) with concrete shapes: given, else assumed for
    dynamic dimensions (noted); the skeleton's inputs get those shapes for the shape inference."""
    inputs: list[TensorInfo] = []
    unknown_inputs = set(input_shapes)
    memo: dict[str, int] = {}
    assumed_notes: list[str] = []
    for vi in g.input:
        if vi.name in init_names:
            continue
        unknown_inputs.discard(vi.name)
        shape = _tensor_shape(vi)
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        dt = tt.elem_type if tt is not None else 0
        dtype = ONNX_DTYPES.get(dt, "unknown")
        if vi.name in input_shapes:
            given = list(input_shapes[vi.name])
            _check_given_shape(vi.name, shape, given, label)
            concrete, assumed = one_item(given), {}
        elif shape is None:
            concrete, assumed = None, {}
            notes.append(f"Input {vi.name!r} has no shape in the model; give one with --input-shape.")
        else:
            channels = _conv_channels(g, vi.name, len(shape))
            assumed_channel = channels is not None and not isinstance(shape[1], int)
            if assumed_channel:
                shape = list(shape)
                shape[1] = channels  # what the first convolution's weight requires
            concrete, assumed, why = _default_dims(shape, dt, memo)
            if assumed_channel:
                assumed[1] = channels
                why.insert(0, f"axis 1={channels} (channels the first convolution expects)")
            if why:
                assumed_notes.append(f"{vi.name}: {', '.join(why)}")
        inputs.append(TensorInfo(vi.name, concrete if concrete is not None else (shape or []), dtype, assumed))
        if concrete is not None and tt is not None:
            tt.shape.Clear()
            for d in concrete:
                tt.shape.dim.add().dim_value = int(d)
    if unknown_inputs:
        names = ", ".join(sorted(unknown_inputs))
        valid = ", ".join(t.name for t in inputs) or "none"
        raise InputShapeError(f"--input-shape names {names}, which {label} has no input called (its inputs: {valid})")
    if assumed_notes:
        notes.append(
            "Assumed for dynamic input dimensions (override with --input-shape NAME=D1,D2,...): "
            + "; ".join(assumed_notes) + "."
        )
    return inputs


def _in_execution_order(g, available: set[str], notes: list[str]) -> None:
    """Reorder the graph's nodes into execution order when the file's order is not (onnx's inference needs it)."""
    import onnx

    ordered = _topological(g, available)
    if [id(n) for n in ordered] != [id(n) for n in g.node]:
        copies = []
        for n in ordered:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            copies.append(c)
        del g.node[:]
        g.node.extend(copies)
        notes.append("The file's nodes were not in execution order; they are analysed in that order.")


def _infer(model, opset: int, label: str, notes: list[str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(inferred model, main-graph shapes, the outputs' declared shapes) from onnx's shape inference on the
    weight-free skeleton; a ModelError with onnx's first message line when it fails."""
    g = model.graph
    out_elem = {}
    for vo in g.output:
        if vo.type.HasField("tensor_type"):
            out_elem[vo.name] = _tensor_shape(vo)
            vo.type.tensor_type.ClearField("shape")  # re-inferred for the chosen input sizes
    del g.value_info[:]
    check_conv_ranks(model, label)  # onnx 1.14 segfaults on these instead of reporting them
    try:
        try:
            inferred, main_shapes = infer_shapes(model, opset)
        except Exception as exc:  # noqa: BLE001 - retried without the ops onnx cannot type
            inferred, main_shapes, skipped = _infer_without_untyped(model, opset, exc)
            notes.append(f"ONNX shape inference cannot type the outputs of {', '.join(skipped)} "
                         "(not tensors, e.g. a sequence of maps): their shapes are unknown.")
    except Exception as exc:  # onnx.shape_inference.InferenceError, ValidationError, RuntimeError
        msg = str(exc).strip().splitlines()
        first = next((m for m in msg if m.strip()), type(exc).__name__)
        first = re.sub(r"\[[A-Za-z]*Error\]\s*", "", first)
        first = re.sub(r"^Shape inference error\(s\):\s*", "", first).strip()
        if len(first) > 220:
            first = first[:217] + "..."
        raise ModelError(f"{label} failed ONNX shape inference: {first}") from None
    return inferred, main_shapes, out_elem


def _walk(skel: Skeleton, label: str, inferred, main_shapes: dict[str, Any], inputs: list[TensorInfo],
          notes: list[str]) -> "_Walker":
    """The layers of the inferred graph; main-graph shapes onnx could not infer are measured once with ONNX
    Runtime when the model is a file (noted)."""
    walker = _Walker(skel, label)
    walker.walk(inferred.graph, "", {}, {}, True, main_shapes)
    unknown_out = [o for layer in walker.layers if not layer.graph_path
                   for o, s in zip(layer.outputs, layer.output_shapes) if o and not _concrete(s)]
    if unknown_out and skel.path:
        extra = _shapes_from_onnxruntime(skel.path, inputs, unknown_out, skel.file_size)
        if extra:
            walker = _Walker(skel, label)
            walker.walk(inferred.graph, "", {}, {}, True, {**main_shapes, **extra})
            notes.append(f"Shapes of {len(extra)} tensors that ONNX shape inference could not infer were taken "
                         "from one run of ONNX Runtime with random inputs.")
    return walker


def _outputs(ig, shapes_main: dict[str, Any], out_elem: dict[str, Any]) -> list[TensorInfo]:
    outputs: list[TensorInfo] = []
    for vo in ig.output:
        s = shapes_main.get(vo.name)
        if s is None:
            s = out_elem.get(vo.name) or []
        if vo.type.HasField("tensor_type"):
            dtype = ONNX_DTYPES.get(vo.type.tensor_type.elem_type, "unknown")
        else:  # sequence / map / optional outputs (ai.onnx.ml ZipMap): no shape to give
            dtype, s = _type_text(vo.type), []
        outputs.append(TensorInfo(vo.name, list(s), dtype))
    return outputs


def _layer_notes(walker: "_Walker", unknown: list[Layer], notes: list[str]) -> None:
    if not any(layer.prunable for layer in walker.layers):
        notes.append("No prunable layer: no Conv, Gemm or MatMul here has a constant weight, so there is nothing to prune.")
    if unknown:
        ops = sorted({layer.op_type for layer in unknown})
        notes.append(
            f"FLOPs unknown for {len(unknown)} layer(s) ({', '.join(ops[:8])}{'...' if len(ops) > 8 else ''}): "
            "unsupported op or shape not inferred; totals count the known layers only."
        )
    if walker.has_if:
        notes.append("Both branches of If nodes are listed and counted in the FLOPs total.")
    if walker.has_loop_body:
        notes.append("Layers inside Loop/Scan bodies are counted for one iteration.")


def _attach_model(mg: ModelGraph, skel: Skeleton, label: str, source: Any) -> None:
    """Give the graph its weight-free proto and the way to load the full model on demand."""
    import onnx

    mg._skeleton_model = skel.model  # the weight-free proto (small constants and subgraphs keep their data)
    mg._raw = dict(skel.raw) if skel.path else {}  # byte offsets into a file (none for in-memory models)
    if isinstance(source, onnx.ModelProto):
        mg.model = source
    elif isinstance(source, (bytes, bytearray)):
        mg._loader = lambda: onnx.load_from_string(bytes(source))
    else:
        p = skel.path
        stamp = skel.stamp
        mg._loader = lambda: _load_full(p, label, stamp)


def _analyze(skel: Skeleton, label: str, input_shapes: dict[str, list[int]], source: Any) -> ModelGraph:
    model = skel.model
    g = model.graph
    notes: list[str] = []
    opset = _opset(model, label)
    _check_wiring(g, label)
    custom = sorted({_text(o.domain) for o in model.opset_import if o.domain not in ("", "ai.onnx", "ai.onnx.ml")})
    if custom:
        notes.append(f"Custom operator domains {', '.join(custom)}: their ops' shapes and FLOPs may be unknown.")
    for vi in list(g.input) + list(g.output) + list(g.initializer):
        if not isinstance(vi.name, str):
            raise ModelError(f"{label} is corrupt: a graph input, output or initializer name is not valid UTF-8 text")
    init_names = {t.name for t in g.initializer}
    declared = {vi.name: _tensor_shape(vi) for vi in g.input if vi.name not in init_names}
    inputs = _inputs(g, init_names, input_shapes, label, notes)
    _in_execution_order(g, {vi.name for vi in g.input} | init_names, notes)
    try:
        inferred, main_shapes, out_elem = _infer(model, opset, label, notes)
    except ModelError as exc:
        if not input_shapes:
            raise
        # the stated shapes do not go together in the model: say which were stated and what it declares
        def dims(shape):
            return "[" + ", ".join(str(d) for d in shape) + "]" if shape is not None else "(no shape)"
        fed = ", ".join(f"{t.name} {dims(t.shape)}" for t in inputs)
        decl = ", ".join(f"{t.name} {dims(declared.get(t.name))}" for t in inputs)
        raise InputShapeError(f"{exc.message} (with --input-shape: fed {fed}; the model declares {decl})") from None
    walker = _walk(skel, label, inferred, main_shapes, inputs, notes)
    outputs = _outputs(inferred.graph, walker.main_shapes, out_elem)

    layers = walker.layers
    unknown = [layer for layer in layers if layer.flops is None]
    flops_known = int(sum(layer.flops for layer in layers if layer.flops is not None))
    total_n = sum(n for n, _ in walker.prunable_keys.values())
    total_z = sum(z for _, z in walker.prunable_keys.values())
    hist: dict[str, int] = {}
    for layer in layers:
        hist[layer.op_type] = hist.get(layer.op_type, 0) + 1
    hist = dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))
    _layer_notes(walker, unknown, notes)

    producer = _text(model.producer_name) + (f" {_text(model.producer_version)}" if model.producer_version else "")
    mg = ModelGraph(
        path=str(skel.path or label),
        opset=opset,
        ir_version=int(model.ir_version),
        producer=producer.strip(),
        inputs=inputs,
        outputs=outputs,
        layers=layers,
        params=int(walker.params),
        prunable_params=int(total_n),
        flops=None if unknown else flops_known,
        flops_known=flops_known,
        unknown_flops_layers=len(unknown),
        sparsity=(total_z / total_n) if total_n else 0.0,
        op_histogram=hist,
        notes=notes,
        file_size=int(skel.file_size),
    )
    _attach_model(mg, skel, label, source)
    return mg


ORT_FALLBACK_MAX_BYTES = 300 << 20  # bigger models would make `info` slow; their unknown shapes stay unknown


_ORT_SHAPES_CHILD = r"""
import json, sys
import numpy as np
import onnx, onnxruntime as ort
path, feed_shapes, names = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
model = onnx.load(path)
existing = {o.name for o in model.graph.output}
for n in names:
    if n not in existing:
        model.graph.output.append(onnx.ValueInfoProto(name=n))
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
so.log_severity_level = 4
sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
del model
rng = np.random.default_rng(0)
feed = {}
for name, (shape, dtype) in feed_shapes.items():
    if dtype.startswith("float"):
        feed[name] = rng.standard_normal(shape).astype(dtype)
    else:
        feed[name] = np.zeros(shape, dtype=dtype if dtype != "unknown" else "float32")
outs = sess.run(names, feed)
print(json.dumps({n: list(v.shape) for n, v in zip(names, outs) if isinstance(v, np.ndarray)}))
"""


def _type_text(t) -> str:
    """``sequence(map(int64,float32))`` for a non-tensor TypeProto."""
    which = t.WhichOneof("value")
    if which == "tensor_type":
        return ONNX_DTYPES.get(t.tensor_type.elem_type, "unknown")
    if which == "sequence_type":
        return f"sequence({_type_text(t.sequence_type.elem_type)})"
    if which == "map_type":
        return f"map({ONNX_DTYPES.get(t.map_type.key_type, 'unknown')},{_type_text(t.map_type.value_type)})"
    if which == "optional_type":
        return f"optional({_type_text(t.optional_type.elem_type)})"
    return "unknown"


_FAILED_OP_RE = re.compile(r"\(op_type:([A-Za-z0-9_]+)")


def _infer_without_untyped(model, opset: int, exc: BaseException):
    """Shape inference when onnx rejects some op's output type (ai.onnx.ml ZipMap's sequence of maps):
    infer a copy without the main-graph nodes of the op(s) it names, then put the shapes found back on
    the whole model. Returns ``(inferred, shapes, [op types left untyped])``; re-raises ``exc`` when the
    failure names no op, or removing it does not help (up to 4 different ops)."""
    import onnx

    skipped: list[str] = []
    err: BaseException = exc
    for _ in range(4):
        m = _FAILED_OP_RE.search(str(err))
        if m is None or m.group(1) in skipped:
            raise exc
        op = m.group(1)
        declared = {vi.name: vi for vi in list(model.graph.output) + list(model.graph.value_info)}
        untyped = any(o in declared and not declared[o].type.HasField("tensor_type")
                      for n in model.graph.node if n.op_type == op for o in n.output)
        if not (untyped or "type case unsupported" in str(err)):
            raise exc  # a real inconsistency (shapes that do not fit) stays an error
        skipped.append(op)
        work = onnx.ModelProto()
        work.CopyFrom(model)
        g = work.graph
        removed = [n for n in g.node if n.op_type in skipped]
        gone = {o for n in removed for o in n.output}
        keep = [n for n in g.node if n.op_type not in skipped]
        del g.node[:]
        g.node.extend(keep)
        outs = [vo for vo in g.output if vo.name not in gone]
        del g.output[:]
        g.output.extend(outs)
        try:
            part, shapes = infer_shapes(work, opset)
        except Exception as again:  # noqa: BLE001
            err = again
            continue
        inferred = onnx.ModelProto()
        inferred.CopyFrom(model)
        del inferred.graph.value_info[:]
        inferred.graph.value_info.extend(vi for vi in part.graph.value_info if vi.name not in gone)
        by_name = {vo.name: vo for vo in part.graph.output}
        for vo in inferred.graph.output:
            if vo.name in by_name:
                vo.CopyFrom(by_name[vo.name])
        return inferred, {k: v for k, v in shapes.items() if k not in gone}, skipped
    raise exc


def _shapes_from_onnxruntime(path: str, inputs: list[TensorInfo], names: list[str],
                             file_size: int) -> dict[str, list[int]]:
    """Shapes of ``names`` measured by running the model once in ONNX Runtime (contrib ops included).

    Only used when onnx's inference left main-graph shapes unknown (e.g. com.microsoft
    ops). It runs in a child process, because ONNX Runtime can crash the process on a
    malformed model; returns {} when ONNX Runtime is missing, the model is large or it
    cannot run.
    """
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    if file_size > ORT_FALLBACK_MAX_BYTES or importlib.util.find_spec("onnxruntime") is None:
        return {}
    feed_shapes = {}
    for t in inputs:
        if not t.shape or not all(isinstance(d, int) for d in t.shape):
            return {}
        feed_shapes[t.name] = (list(t.shape), t.dtype)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _ORT_SHAPES_CHILD, path, json.dumps(feed_shapes), json.dumps(names)],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if proc.returncode != 0:
            return {}
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {}
    return {str(n): [int(d) for d in shape] for n, shape in got.items() if isinstance(shape, list)}


def _load_full(path: str, label: str, stamp: tuple = ()):
    import os

    import onnx

    from sparsify_tui.analysis.loader import file_stamp

    try:
        if stamp and file_stamp(os.stat(path)) != stamp:
            raise ModelError(f"{label} changed since it was analysed; analyse it again")
    except OSError:
        raise ModelError(f"{label} is gone since it was analysed") from None
    try:
        return onnx.load(path)
    except Exception as exc:  # pragma: no cover - the skeleton already parsed
        raise ModelError(f"{label} could not be loaded: {exc}") from None
