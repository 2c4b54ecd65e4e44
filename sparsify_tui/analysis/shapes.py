"""Shape inference that does not give up on shape-computing subgraphs.

ONNX shape inference can propagate the *values* of tensors computed from
``Shape`` (``data_prop``) but some ops (Slice, Expand, Range, Tile...) only
read values from initializers, so a BERT-style model whose position ids are
``Slice(const, 0, Unsqueeze(Gather(Shape(x), 1)))`` ends up with unknown
shapes everywhere downstream. :func:`infer` runs onnx's inference on the
weight-free skeleton; if some main-graph tensor stays unknown, it evaluates
the small integer tensors it can (shape arithmetic) with numpy, feeds their
values to a copy of the skeleton as initializers and infers again.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

MAX_VALUE_ELEMENTS = 4096
_SUFFIX = "__sparsify_value"


def _dims(vi) -> list[Any] | None:
    t = vi.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out: list[Any] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def shape_map(g) -> dict[str, list[Any]]:
    m: dict[str, list[Any]] = {}
    for coll in (g.input, g.value_info, g.output):
        for vi in coll:
            s = _dims(vi)
            if s is not None:
                m[vi.name] = s
    for t in g.initializer:
        m[t.name] = [int(d) for d in t.dims]
    return m


def _unknown(g, shapes: dict[str, list[Any]]) -> int:
    n = 0
    for node in g.node:
        for o in node.output:
            if o:
                s = shapes.get(o)
                if s is None or not all(isinstance(d, int) for d in s):
                    n += 1
    return n


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            if a.type == 1:
                return a.f
            if a.type == 2:
                return a.i
            if a.type == 7:
                return list(a.ints)
            if a.type == 4:
                from onnx import numpy_helper

                return numpy_helper.to_array(a.t)
            if a.type == 3:
                return a.s.decode()
    return default


def _tensor_value(t) -> np.ndarray | None:
    from onnx import numpy_helper

    if t.data_location == 1:
        return None
    if not (t.HasField("raw_data") or len(t.int64_data) or len(t.int32_data) or len(t.float_data)
            or len(t.double_data)) and prod(t.dims) != 0:
        return None
    try:
        return numpy_helper.to_array(t)
    except Exception:
        return None


def _eval(node, vals: dict[str, np.ndarray], shapes: dict[str, list[Any]], opset: int) -> list[np.ndarray] | None:
    op = node.op_type
    ins = list(node.input)

    def v(i: int) -> np.ndarray | None:
        if i >= len(ins) or not ins[i]:
            return None
        return vals.get(ins[i])

    if op == "Shape":
        s = shapes.get(ins[0])
        if s is None or not all(isinstance(d, int) for d in s):
            return None
        start = _attr(node, "start", 0)
        end = _attr(node, "end", None)
        return [np.array(s[start:end] if end is not None else s[start:], dtype=np.int64)]
    if op == "Size":
        s = shapes.get(ins[0])
        if s is None or not all(isinstance(d, int) for d in s):
            return None
        return [np.array(prod(s), dtype=np.int64)]
    if op == "Constant":
        from onnx import numpy_helper

        for a in node.attribute:
            if a.name == "value":
                return [numpy_helper.to_array(a.t)]
            if a.name == "value_int":
                return [np.array(a.i, dtype=np.int64)]
            if a.name == "value_ints":
                return [np.array(list(a.ints), dtype=np.int64)]
            if a.name == "value_float":
                return [np.array(a.f, dtype=np.float32)]
            if a.name == "value_floats":
                return [np.array(list(a.floats), dtype=np.float32)]
        return None
    x = v(0)
    if op == "ConstantOfShape":
        if x is None or prod(int(d) for d in x) > MAX_VALUE_ELEMENTS:
            return None
        fill = _attr(node, "value", np.zeros(1, dtype=np.float32))
        return [np.full([int(d) for d in x], fill.reshape(-1)[0], dtype=fill.dtype)]
    if op == "Range":
        s, lim, d = v(0), v(1), v(2)
        if s is None or lim is None or d is None:
            return None
        r = np.arange(s.item(), lim.item(), d.item()).astype(s.dtype)
        return [r] if r.size <= MAX_VALUE_ELEMENTS else None
    if x is None:
        return None
    if op in ("Identity", "Cast"):
        if op == "Cast":
            from onnx import helper

            try:
                return [x.astype(helper.tensor_dtype_to_np_dtype(_attr(node, "to")))]
            except Exception:
                return None
        return [x]
    if op == "Gather":
        idx = v(1)
        if idx is None:
            return None
        return [np.take(x, idx.astype(np.int64), axis=_attr(node, "axis", 0))]
    if op == "Unsqueeze":
        axes = _attr(node, "axes") if opset < 13 else (None if v(1) is None else list(v(1)))
        if axes is None:
            return None
        out = x
        rank = x.ndim + len(axes)
        for a in sorted(int(a) % rank for a in axes):
            out = np.expand_dims(out, a)
        return [out]
    if op == "Squeeze":
        axes = _attr(node, "axes") if opset < 13 else (None if v(1) is None else list(v(1)))
        return [np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(int(a) for a in axes))]
    if op == "Concat":
        parts = [vals.get(i) for i in ins]
        if any(p is None for p in parts):
            return None
        return [np.concatenate(parts, axis=_attr(node, "axis", 0))]
    if op == "Slice":
        if opset < 10:
            starts, ends, axes, steps = _attr(node, "starts"), _attr(node, "ends"), _attr(node, "axes"), None
        else:
            starts, ends, axes, steps = v(1), v(2), v(3), v(4)
        if starts is None or ends is None:
            return None
        axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
        steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
        sl = [slice(None)] * x.ndim
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            sl[ax] = slice(int(st), int(min(max(int(en), -(2**62)), 2**62)), sp)
        return [x[tuple(sl)]]
    if op == "Reshape":
        shp = v(1)
        if shp is None:
            return None
        shp = [int(d) for d in shp]
        if not _attr(node, "allowzero", 0):
            shp = [x.shape[i] if d == 0 else d for i, d in enumerate(shp)]
        return [x.reshape(shp)]
    if op in ("Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "And", "Or", "Max", "Min", "Mod",
              "LessOrEqual", "GreaterOrEqual"):
        y = v(1)
        if y is None:
            return None
        if op == "Add":
            return [x + y]
        if op == "Sub":
            return [x - y]
        if op == "Mul":
            return [x * y]
        if op == "Div":
            if np.issubdtype(x.dtype, np.integer):
                return [np.trunc(x / y).astype(x.dtype)]
            return [x / y]
        if op == "Max":
            return [np.maximum(*[vals[i] for i in ins])] if all(i in vals for i in ins) else None
        if op == "Min":
            return [np.minimum(*[vals[i] for i in ins])] if all(i in vals for i in ins) else None
        if op == "Mod":
            return [np.fmod(x, y) if _attr(node, "fmod", 0) else np.mod(x, y)]
        return [{"Equal": np.equal, "Less": np.less, "Greater": np.greater, "And": np.logical_and,
                 "Or": np.logical_or, "LessOrEqual": np.less_equal,
                 "GreaterOrEqual": np.greater_equal}[op](x, y)]
    if op == "Not":
        return [np.logical_not(x)]
    if op in ("Neg", "Abs", "Floor", "Ceil"):
        return [{"Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil}[op](x)]
    if op == "Where":
        a, b = v(1), v(2)
        if a is None or b is None:
            return None
        return [np.where(x, a, b)]
    if op == "Expand":
        shp = v(1)
        if shp is None:
            return None
        target = np.broadcast_shapes(x.shape, tuple(int(d) for d in shp))
        if prod(target) > MAX_VALUE_ELEMENTS:
            return None
        return [np.broadcast_to(x, target).copy()]
    if op in ("ReduceProd", "ReduceSum", "ReduceMin", "ReduceMax") and x.ndim <= 1 and len(ins) == 1:
        keep = _attr(node, "keepdims", 1)
        f = {"ReduceProd": np.prod, "ReduceSum": np.sum, "ReduceMin": np.min, "ReduceMax": np.max}[op]
        r = f(x, keepdims=bool(keep))
        return [np.asarray(r)]
    return None


def _values(g, shapes: dict[str, list[Any]], opset: int) -> dict[str, np.ndarray]:
    vals: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if prod(t.dims) <= MAX_VALUE_ELEMENTS:
            a = _tensor_value(t)
            if a is not None:
                vals[t.name] = a
    for node in g.node:
        if node.domain not in ("", "ai.onnx") or not node.output:
            continue
        try:
            out = _eval(node, vals, shapes, opset)
        except Exception:
            out = None
        if out:
            for name, a in zip(node.output, out):
                a = np.asarray(a)
                if name and a.size <= MAX_VALUE_ELEMENTS:
                    vals[name] = a
    return vals


def infer(model, opset: int):
    """``(inferred copy of model, {tensor name: shape} of its main graph)``: strict onnx inference,
    then value-driven refinement."""
    import onnx
    from onnx import numpy_helper

    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=True, data_prop=True)
    except Exception:
        # data propagation has bugs of its own in some onnx versions: a model is only
        # rejected when plain (strict) inference fails too; the value pass below then
        # recovers most shape-computed dimensions anyway
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=True, data_prop=False)
    g = inferred.graph
    shapes = shape_map(g)
    unknown = _unknown(g, shapes)
    for _ in range(4):
        if unknown == 0:
            break
        vals = _values(g, shapes, opset)
        const_names = {t.name for t in g.initializer} | {
            n.output[0] for n in g.node if n.op_type == "Constant" and n.output
        }
        work = onnx.ModelProto()
        work.CopyFrom(model)
        wg = work.graph
        added: set[str] = set()
        for node in wg.node:
            if node.op_type in ("Constant",):
                continue
            for k, name in enumerate(node.input):
                if name and name in vals and name not in const_names:
                    new = name + _SUFFIX
                    if new not in added:
                        wg.initializer.append(numpy_helper.from_array(np.array(vals[name], order="C"), new))  # keeps 0-d
                        added.add(new)
                    node.input[k] = new
        if not added:
            break
        try:
            again = onnx.shape_inference.infer_shapes(work, check_type=False, strict_mode=False, data_prop=True)
        except Exception:
            break
        new_shapes = shape_map(again.graph)
        new_unknown = _unknown(g, {**shapes, **{k: v for k, v in new_shapes.items() if not k.endswith(_SUFFIX)}})
        if new_unknown >= unknown:
            break
        # keep the structure of the first pass, take the better shapes of the second
        del g.value_info[:]
        for vi in again.graph.value_info:
            if not vi.name.endswith(_SUFFIX):
                g.value_info.append(vi)
        for vo, vo2 in zip(g.output, again.graph.output):
            if vo.name == vo2.name:
                vo.CopyFrom(vo2)
        shapes = shape_map(g)
        unknown = new_unknown
        model = work
    return inferred, shapes


# ---------------------------------------------------------------- guarding onnx's inference
_CONV_W = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3}
_RANK_SAME = {
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Softplus",
    "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Ceil", "Floor", "Round", "Sign",
    "Not", "Clip", "Softmax", "LogSoftmax", "Hardmax", "BatchNormalization", "LayerNormalization",
    "InstanceNormalization", "GroupNormalization", "LpNormalization", "LRN", "Cast", "CastLike", "Identity",
    "Dropout", "QuantizeLinear", "DequantizeLinear", "Conv", "ConvTranspose", "ConvInteger", "MaxPool",
    "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Pad", "Resize", "Upsample",
    "Slice", "Transpose", "Split", "Concat", "DepthToSpace", "SpaceToDepth", "Tile", "CumSum", "Trilu",
}
_RANK_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less",
                   "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor", "MatMul", "MatMulInteger"}


def check_conv_ranks(model, label: str) -> None:
    """Raise ModelError when a convolution's input rank differs from its weight's.

    onnx 1.14's shape inference crashes the whole process (segmentation fault)
    on a Conv, ConvTranspose or ConvInteger whose input has fewer dimensions
    than its weight (e.g. a Flatten feeding a Conv), so that mistake is caught
    here first with a cheap rank propagation over the main graph.
    """
    from sparsify_tui.errors import ModelError

    g = model.graph
    if not any(n.op_type in _CONV_W for n in g.node):
        return
    init_by_name = {t.name: t for t in g.initializer}
    rank: dict[str, int] = {}
    for vi in list(g.input):
        s = _dims(vi)
        if s is not None:
            rank[vi.name] = len(s)
    for t in g.initializer:
        rank[t.name] = len(t.dims)
    opset = 0
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            opset = int(o.version)
    for node in g.node:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            continue
        ins = list(node.input)
        outs = list(node.output)
        r_in = [rank.get(i) if i else None for i in ins]
        if op in _CONV_W and len(ins) > _CONV_W[op]:
            rx, rw = r_in[0], r_in[_CONV_W[op]]
            if rx is not None and rw is not None and rx != rw:
                raise ModelError(
                    f"{label}: {op} node {node.name or outs[0]!r} gets a {rx}-D input but its weight is {rw}-D "
                    "(input and weight need the same number of dimensions)")
        r: int | None = None
        if op == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    r = len(a.t.dims)
                elif a.name in ("value_float", "value_int"):
                    r = 0
                elif a.name in ("value_floats", "value_ints"):
                    r = 1
        elif op in _RANK_SAME:
            r = r_in[0] if r_in else None
        elif op in _RANK_BROADCAST:
            known = [x for x in r_in if x is not None]
            r = max(known) if known and len(known) == len([i for i in ins if i]) else None
        elif op in ("Flatten", "Gemm"):
            r = 2
        elif op in ("Shape", "NonZero"):
            r = 1 if op == "Shape" else 2
        elif op in ("Squeeze", "Unsqueeze") and r_in and r_in[0] is not None:
            axes = None
            if opset < 13:
                for a in node.attribute:
                    if a.name == "axes":
                        axes = len(a.ints)
            elif len(ins) > 1:
                t = init_by_name.get(ins[1])
                if t is not None and len(t.dims) == 1:
                    axes = int(t.dims[0])
            if axes is not None:
                r = r_in[0] + axes if op == "Unsqueeze" else r_in[0] - axes
        elif op == "Reshape" and len(ins) > 1:
            t = init_by_name.get(ins[1])
            if t is not None and len(t.dims) == 1:
                r = int(t.dims[0])
        if r is not None and outs and outs[0]:
            rank[outs[0]] = r
