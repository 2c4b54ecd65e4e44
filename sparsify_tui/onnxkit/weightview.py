"""How a layer sees its stored weight: the chain of constant ops between them, as an index map.

A weight can reach its layer through ``Transpose``, ``Reshape``, ``Flatten``,
``Squeeze``, ``Unsqueeze``, ``Identity``, ``Cast`` and (first, on the stored
tensor) ``DequantizeLinear``. :func:`weight_view` replays that chain on the
flat indices of the stored tensor: the result has the shape the layer
consumes, and holds for each consumed element the index of the stored element
it comes from. Writing ``stored.flat[view] = consumed`` puts a changed weight
back in the file's layout. A chain that duplicates elements (Expand, Tile...)
or is not understood gives ``None`` (with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_INDEX_OPS = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast", "DequantizeLinear"}


@dataclass
class WeightView:
    index: np.ndarray  # consumed shape, int64 flat indices into the stored tensor
    input_index: int  # which input of the layer's node is the weight
    dequantize: Any = None  # (scale, zero_point, axis) of a DequantizeLinear on the stored tensor, or None


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _producers(graph) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output if o}


def _trace(graph, producers, tensor: str, stored: str) -> list | None:
    """The transform nodes from ``stored`` to ``tensor`` (in order), or None when it does not lead there."""
    chain = []
    t = tensor
    for _ in range(64):
        if t == stored:
            return list(reversed(chain))
        node = producers.get(t)
        if node is None or node.op_type not in _INDEX_OPS or not node.input:
            return None
        chain.append(node)
        t = node.input[0]
    return None


def weight_view(model, node, stored_name: str, stored_shape, candidates=(1, 0)) -> tuple[WeightView | None, str]:
    """The :class:`WeightView` of ``stored_name`` as ``node`` (main graph) consumes it, or (None, why)."""
    from sparsify_tui.onnxkit.tensors import constant_tensor

    graph = model.graph
    producers = _producers(graph)
    for k in candidates:
        if k >= len(node.input) or not node.input[k]:
            continue
        chain = _trace(graph, producers, node.input[k], stored_name)
        if chain is None:
            continue
        idx = np.arange(int(np.prod(stored_shape)), dtype=np.int64).reshape([int(d) for d in stored_shape])
        dq = None
        for pos, n in enumerate(chain):
            op = n.op_type
            if op == "DequantizeLinear":
                if pos != 0:
                    return None, "its DequantizeLinear is not applied to the stored tensor"
                scale = constant_tensor(model, n.input[1])
                zp = constant_tensor(model, n.input[2]) if len(n.input) > 2 and n.input[2] else None
                if scale is None:
                    return None, "its DequantizeLinear scale is not a constant"
                dq = (np.asarray(scale, dtype=np.float64), None if zp is None else np.asarray(zp),
                      int(_attr(n, "axis", 1)))
            elif op in ("Identity", "Cast"):
                pass
            elif op == "Transpose":
                perm = _attr(n, "perm")
                idx = np.transpose(idx, perm if perm else None)
            elif op == "Reshape":
                shape = constant_tensor(model, n.input[1]) if len(n.input) > 1 else None
                if shape is None:
                    return None, "its Reshape has no constant shape"
                shape = [int(v) for v in np.asarray(shape).reshape(-1)]
                shape = [idx.shape[i] if v == 0 and not _attr(n, "allowzero", 0) else v for i, v in enumerate(shape)]
                idx = idx.reshape(shape)
            elif op == "Flatten":
                axis = int(_attr(n, "axis", 1)) % max(1, idx.ndim) if idx.ndim else 0
                idx = idx.reshape(int(np.prod(idx.shape[:axis])), -1)
            elif op in ("Squeeze", "Unsqueeze"):
                axes = _attr(n, "axes")
                if axes is None and len(n.input) > 1 and n.input[1]:
                    v = constant_tensor(model, n.input[1])
                    axes = None if v is None else [int(a) for a in np.asarray(v).reshape(-1)]
                if op == "Squeeze":
                    idx = np.squeeze(idx, axis=tuple(a % idx.ndim for a in axes) if axes else None)
                else:
                    if axes is None:
                        return None, "its Unsqueeze has no constant axes"
                    nd = idx.ndim + len(axes)
                    for a in sorted(a % nd for a in axes):
                        idx = np.expand_dims(idx, a)
            else:  # pragma: no cover - _trace only returns _INDEX_OPS
                return None, f"its weight goes through {op}"
        return WeightView(np.ascontiguousarray(idx), k, dq), ""
    return None, "its weight does not reach it through Transpose/Reshape/DequantizeLinear-like ops only"


def with_outputs(model, names: list[str]):
    """Serialize ``model`` with the tensors ``names`` added as graph outputs (the proto is left as it was)."""
    from onnx import helper

    have = {o.name for o in model.graph.output}
    added = 0
    for n in names:
        if n not in have:
            model.graph.output.append(helper.make_empty_tensor_value_info(n))
            have.add(n)
            added += 1
    try:
        return model.SerializeToString()
    finally:
        for _ in range(added):
            del model.graph.output[len(model.graph.output) - 1]
