"""Reading a prunable layer's stored weight: ``read_weight(graph, layer)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsify_tui.analysis.graph import Layer, ModelGraph
from sparsify_tui.analysis.loader import read_raw
from sparsify_tui.errors import ModelError


def _find_graph(model_graph: Any, graph_path: str):
    """The GraphProto at ``graph_path`` ("" = main; "Node/attr/Node2/attr[1]" nested)."""
    g = model_graph
    if not graph_path:
        return g
    parts = graph_path.split("/")
    for node_name, attr in zip(parts[0::2], parts[1::2]):
        idx = None
        if attr.endswith("]") and "[" in attr:
            attr, _, i = attr[:-1].partition("[")
            idx = int(i)
        node = next((n for n in g.node if (n.name or (n.output[0] if n.output else "")) == node_name), None)
        if node is None:
            node = next((n for n in g.node if n.output and n.output[0] == node_name), None)
        if node is None:
            return None
        a = next((a for a in node.attribute if a.name == attr), None)
        if a is None:
            return None
        g = a.graphs[idx] if idx is not None else a.g
    return g


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
