"""Reading a prunable layer's stored weight: ``read_weight(graph, layer)``."""

from __future__ import annotations


import numpy as np

from sparsify_tui.analysis.graph import Layer, ModelGraph
from sparsify_tui.analysis.loader import read_raw
from sparsify_tui.errors import ModelError
from sparsify_tui.onnxkit.graphs import graph_at
from sparsify_tui.onnxkit.tensors import constant_node_value, fill_value


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
                value = constant_node_value(n)
                return None if value is None else np.array(value, copy=True)
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
        fill = np.zeros(1, dtype=np.float32)
        g = graph_at((graph._skeleton_model or graph.model).graph, ref.graph_path)
        for n in (g.node if g is not None else []):
            if n.output and n.output[0] == ref.name:
                fill = fill_value(n)
        return np.full(layer.weight_shape or [], fill[0], dtype=fill.dtype)

    # fast path: read just this tensor's bytes from the file
    raw = graph._raw.get(ref.name) if ref.graph_path == "" and ref.kind in ("initializer", "graph_input") else None
    if raw is not None and graph._model is None and graph._skeleton_model is not None:
        t = next((t for t in graph._skeleton_model.graph.initializer if t.name == ref.name), None)
        if t is not None:
            return read_raw(raw, t.data_type, list(t.dims))
    # small tensors kept in the skeleton
    if graph._model is None and graph._skeleton_model is not None:
        arr = _from_graph(graph_at(graph._skeleton_model.graph, ref.graph_path), ref)
        if arr is not None:
            return arr
    model = graph.model
    if model is None:
        raise ModelError(f"{graph.path}: the model's weights are not available")
    arr = _from_graph(graph_at(model.graph, ref.graph_path), ref)
    if arr is None:
        raise ModelError(f"{graph.path}: weight {ref.name!r} of layer {layer.id!r} was not found")
    return arr
