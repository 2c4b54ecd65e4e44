"""Reading a prunable layer's stored weight: ``read_weight(graph, layer)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsify_tui.analysis.graph import Layer, ModelGraph
from sparsify_tui.analysis.loader import read_raw
from sparsify_tui.errors import ModelError


def _find_graph(model_graph: Any, graph_path: str, prefix: str = ""):
    """The GraphProto at ``graph_path`` ("" = main graph).

    Paths are built as the analysis builds them: ``<node name or first output>/<attribute>``
    (``[i]`` appended for GRAPHS attributes), joined with "/" for nesting. Node names may
    themselves contain "/", so paths are compared whole rather than split.
    """
    if graph_path == prefix:
        return model_graph
    for node in model_graph.node:
        for a in node.attribute:
            if a.type not in (5, 10):
                continue
            owner = node.name or (node.output[0] if node.output else "")
            base = f"{prefix + '/' if prefix else ''}{owner}/{a.name}"
            subs = [(base, a.g)] if a.type == 5 else [(f"{base}[{i}]", sg) for i, sg in enumerate(a.graphs)]
            for p, sg in subs:
                if graph_path == p or graph_path.startswith(p + "/"):
                    found = _find_graph(sg, graph_path, p)
                    if found is not None:
                        return found
    return None


def _from_graph(g, ref) -> np.ndarray | None:
    from onnx import numpy_helper

    if g is None:
        return None
    if ref.kind in ("initializer", "graph_input"):
        for t in g.initializer:
            if t.name == ref.name:
                if t.data_location == 1 or not (t.HasField("raw_data") or len(t.float_data) or len(t.int32_data)
                                                or len(t.int64_data) or len(t.double_data)):
                    return None
                return numpy_helper.to_array(t).copy()
        return None
    for n in g.node:
        if n.output and n.output[0] == ref.name:
            if ref.kind == "constant":
                for a in n.attribute:
                    if a.name == "value":
                        return numpy_helper.to_array(a.t).copy()
                    if a.name == "value_floats":
                        return np.array(list(a.floats), dtype=np.float32)
                    if a.name == "value_float":
                        return np.array(a.f, dtype=np.float32)
            if ref.kind == "constant_of_shape":
                return None
    return None


def read_weight(graph: ModelGraph, layer: Layer | str) -> np.ndarray:
    """The stored weight of a prunable layer as a new writable array.

    Works for initializers (inline or external data), Constant nodes,
    ConstantOfShape nodes (the filled array), initializers listed as graph
    inputs, and subgraph weights. For a weight reached through
    DequantizeLinear it is the stored integer tensor; through Transpose or
    Reshape it is the tensor as stored (before the transform).
    """
    if isinstance(layer, str):
        layer = graph.layer(layer)
    ref = layer.weight
    if ref is None:
        raise ModelError(f"layer {layer.id!r} of {graph.path} has no constant weight (it is not prunable)")
    if ref.kind == "constant_of_shape":
        from onnx import numpy_helper

        fill = np.zeros(1, dtype=np.float32)
        g = _find_graph((graph._skeleton_model or graph.model).graph, ref.graph_path)
        for n in (g.node if g is not None else []):
            if n.output and n.output[0] == ref.name:
                for a in n.attribute:
                    if a.name == "value":
                        fill = numpy_helper.to_array(a.t).reshape(-1)
        return np.full(layer.weight_shape or [], fill[0], dtype=fill.dtype)

    # fast path: read just this tensor's bytes from the file
    raw = graph._raw.get(ref.name) if ref.graph_path == "" and ref.kind in ("initializer", "graph_input") else None
    if raw is not None and graph._model is None and graph._skeleton_model is not None:
        t = next((t for t in graph._skeleton_model.graph.initializer if t.name == ref.name), None)
        if t is not None:
            return read_raw(raw, t.data_type, list(t.dims))
    # small tensors kept in the skeleton
    if graph._model is None and graph._skeleton_model is not None:
        arr = _from_graph(_find_graph(graph._skeleton_model.graph, ref.graph_path), ref)
        if arr is not None:
            return arr
    model = graph.model
    if model is None:
        raise ModelError(f"{graph.path}: the model's weights are not available")
    arr = _from_graph(_find_graph(model.graph, ref.graph_path), ref)
    if arr is None:
        raise ModelError(f"{graph.path}: weight {ref.name!r} of layer {layer.id!r} was not found")
    return arr
