"""FLOPs of one ONNX node, as DESIGN.md defines them.

A multiply-add counts 2 (DeepSparse's ``required_flops`` convention). For one
inference at the analysed batch size:

* Conv / ConvInteger / QLinearConv: ``2 * N * Cout * prod(out_spatial) * (Cin/group) * prod(kernel)``
  plus ``N * Cout * prod(out_spatial)`` bias adds when there is a bias.
* ConvTranspose: ``2 * N * Cin * prod(in_spatial) * (Cout/group) * prod(kernel)`` (+ bias adds).
* Gemm: ``2 * M * N * K`` (+ ``M * N`` when C is given). MatMul / MatMulInteger /
  QLinearMatMul (weights or two activations, batched or not): ``2 * M * N * K`` per batch
  item, i.e. ``2 * prod(output) * K``.
* Elementwise ops, activations (Softmax included), normalizations, Resize,
  (De)QuantizeLinear: one per output element.
* MaxPool / AveragePool / LpPool: one per output element per kernel element;
  GlobalAveragePool / GlobalMaxPool and the Reduce* ops: one per input element.
* LSTM / GRU / RNN, per time step, direction and batch item:
  ``2 * gates * H * (I + H)`` for the two matrix products, ``2 * gates * H`` bias adds
  when B is given, and the gate arithmetic (LSTM 9H, GRU 8H, RNN H), with gates = 4, 3, 1.
* Einsum: ``2 * prod(size of every index)`` when an index is summed over (a
  multiply-add per combination), else one per output element.
* Data movement (Reshape, Transpose, Concat, Slice, Gather, Cast, Shape, ...): 0.
* Anything else, or any needed shape unknown: ``None`` ("unknown"), never 0.
"""

from __future__ import annotations

from math import prod
from typing import Any, Callable

ELEMENTWISE = {
    # arithmetic
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Neg", "Abs", "Reciprocal", "Sqrt", "Exp", "Log",
    "Ceil", "Floor", "Round", "Sign", "Max", "Min", "Sum", "Mean", "Erf", "BitShift",
    "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
    "Clip", "Where", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or",
    "Xor", "IsNaN", "IsInf",
    # activations
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "ThresholdedRelu", "Gelu", "Mish", "Swish", "FastGelu", "BiasGelu",
    "QuickGelu", "Shrink",
    "Softmax", "LogSoftmax", "Hardmax",
    # normalizations
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "LpNormalization", "LRN", "MeanVarianceNormalization", "SimplifiedLayerNormalization",
    "SkipLayerNormalization", "RMSNormalization",
    # resampling / quantization
    "Resize", "Upsample", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
    "Dropout", "CumSum", "Trilu",
}
# ops that move or index data, or compute shapes: no floating-point work
ZERO = {
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
    "GatherElements", "GatherND", "ScatterElements", "ScatterND", "Scatter", "Shape", "Size", "Cast",
    "CastLike", "Identity", "Constant", "ConstantOfShape", "Expand", "Tile", "Pad", "Range",
    "NonZero", "Compress", "DepthToSpace", "SpaceToDepth", "OneHot", "EyeLike", "If", "Loop",
    "Scan", "SequenceConstruct", "SequenceAt", "SequenceInsert", "SequenceEmpty", "SplitToSequence",
    "ConcatFromSequence", "SequenceLength", "ReverseSequence", "Optional", "OptionalGetElement",
    "OptionalHasElement", "ArgMax", "ArgMin", "TopK", "Unique", "NonMaxSuppression",
}
POOL = {"MaxPool", "AveragePool", "LpPool", "MaxRoiPool", "QLinearAveragePool"}
GLOBAL_POOL = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "QLinearGlobalAveragePool"}
REDUCE = {
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
}


def _known(shape: Any) -> bool:
    return isinstance(shape, (list, tuple)) and all(isinstance(d, int) and d >= 0 for d in shape)


def _n(shape: Any) -> int | None:
    return prod(shape) if _known(shape) else None


class NodeShapes:
    """The shapes a FLOPs formula may look at (None = unknown)."""

    def __init__(self, inputs: list[Any], outputs: list[Any], attrs: dict[str, Any]):
        self.inputs = inputs  # one per node input (constants included), None when unknown/absent
        self.outputs = outputs
        self.attrs = attrs

    def i(self, k: int):
        return self.inputs[k] if k < len(self.inputs) else None

    def o(self, k: int = 0):
        return self.outputs[k] if k < len(self.outputs) else None

    def has(self, k: int) -> bool:
        return k < len(self.inputs) and self.inputs[k] is not None


def _conv(s: NodeShapes, w: int = 1, b: int | None = 2) -> int | None:
    out, wt = s.o(), s.i(w)
    if not (_known(out) and _known(wt)) or len(wt) < 2:
        return None
    macs = prod(out) * wt[1] * prod(wt[2:])
    bias = prod(out) if (b is not None and s.has(b)) else 0
    return 2 * macs + bias


def _conv_transpose(s: NodeShapes) -> int | None:
    x, wt, out = s.i(0), s.i(1), s.o()
    if not (_known(x) and _known(wt) and _known(out)) or len(wt) < 2:
        return None
    macs = prod(x) * wt[1] * prod(wt[2:])  # every input element meets Cout/group * kernel weights
    return 2 * macs + (prod(out) if s.has(2) else 0)


def _gemm(s: NodeShapes) -> int | None:
    a, out = s.i(0), s.o()
    if not (_known(a) and _known(out)) or len(a) != 2:
        return None
    k = a[0] if s.attrs.get("transA") else a[1]
    return 2 * prod(out) * k + (prod(out) if s.has(2) else 0)


def _matmul(s: NodeShapes, a_idx: int = 0) -> int | None:
    a, out = s.i(a_idx), s.o()
    if not (_known(a) and _known(out)) or not a:
        return None
    return 2 * prod(out) * a[-1]


def _elementwise(s: NodeShapes) -> int | None:
    return _n(s.o())


def _pool(s: NodeShapes) -> int | None:
    out = s.o()
    k = s.attrs.get("kernel_shape")
    if not _known(out) or not k:
        return None
    return prod(out) * prod(k)


def _global_pool(s: NodeShapes) -> int | None:
    return _n(s.i(0))


def _rnn(s: NodeShapes, gates: int, elementwise: int) -> int | None:
    x, w = s.i(0), s.i(1)
    if not (_known(x) and _known(w)) or len(x) != 3 or len(w) != 3:
        return None
    layout = int(s.attrs.get("layout", 0) or 0)
    seq, batch = (x[1], x[0]) if layout == 1 else (x[0], x[1])
    dirs, gh, inp = w
    h = gh // gates
    per = 2 * gh * (inp + h) + elementwise * h
    if s.has(3):
        per += 2 * gh
    return seq * batch * dirs * per


def _einsum(s: NodeShapes) -> int | None:
    """2 * (product of every index's size) when something is summed over, else one per output element."""
    eq = str(s.attrs.get("equation", "")).replace(" ", "")
    if not eq or "..." in eq:
        return None
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for k, term in enumerate(terms):
        shape = s.i(k)
        if not _known(shape) or len(shape) != len(term):
            return None
        for letter, d in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), d)
    if not rhs and "->" not in eq:  # implicit output: letters that appear once, sorted
        letters = "".join(terms)
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    summed = set(sizes) - set(rhs)
    total = prod(sizes.values())
    return 2 * total if summed or len(terms) > 1 else total


def _zero(s: NodeShapes) -> int:
    return 0


FORMULAS: dict[str, Callable[[NodeShapes], int | None]] = {
    "Conv": _conv,
    "FusedConv": _conv,
    "FusedGemm": lambda s: _gemm(s),
    "FusedMatMul": _matmul,
    "ConvInteger": lambda s: _conv(s, 1, None),
    "QLinearConv": lambda s: _conv(s, 3, 8),
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "MatMulInteger": _matmul,
    "QLinearMatMul": _matmul,
    "Einsum": _einsum,
    "LSTM": lambda s: _rnn(s, 4, 9),
    "GRU": lambda s: _rnn(s, 3, 8),
    "RNN": lambda s: _rnn(s, 1, 1),
}
for _op in ELEMENTWISE:
    FORMULAS.setdefault(_op, _elementwise)
for _op in POOL:
    FORMULAS.setdefault(_op, _pool)
for _op in GLOBAL_POOL | REDUCE:
    FORMULAS.setdefault(_op, _global_pool)
for _op in ZERO:
    FORMULAS.setdefault(_op, _zero)


def node_flops(op_type: str, domain: str, shapes: NodeShapes) -> int | None:
    """FLOPs of one node, or None when the op or a needed shape is unknown."""
    if domain not in ("", "ai.onnx", "com.microsoft"):
        return None
    f = FORMULAS.get(op_type)
    if f is None:
        return None
    try:
        v = f(shapes)
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None
    return None if v is None else int(v)
