"""Constant tensors of a model: where each is stored, its value, and replacing it.

A constant tensor is an initializer, the output of a Constant node, or the
output of a ConstantOfShape node with a constant shape. A weight stored
quantized is read through the DequantizeLinear that consumes it
(:func:`find_dequant`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sparsify_tui.errors import ModelError
from sparsify_tui.onnxkit.graphs import graph_at, iter_graphs


def constant_node_value(node: Any) -> np.ndarray | None:
    """The value of a Constant node as an array (None when it holds no dense value)."""
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def constant_node_info(node: Any) -> tuple[list[int], int, Any] | None:
    """(dims, ONNX data type, TensorProto or None) of a Constant node's value, without decoding it."""
    for a in node.attribute:
        if a.name == "value":
            return list(a.t.dims), a.t.data_type, a.t
        if a.name == "value_float":
            return [], 1, None
        if a.name == "value_floats":
            return [len(a.floats)], 1, None
        if a.name == "value_int":
            return [], 7, None
        if a.name == "value_ints":
            return [len(a.ints)], 7, None
        if a.name == "sparse_value":
            return list(a.sparse_tensor.dims), a.sparse_tensor.values.data_type, None
    return None


def fill_value(node: Any) -> np.ndarray:
    """The fill value of a ConstantOfShape node (float32 0 when it has none), as a 1-element array."""
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t).reshape(-1)
    return np.zeros(1, dtype=np.float32)


@dataclass
class TensorSite:
    """Where a weight tensor is stored in a proto: its graph and how it is held."""

    name: str
    kind: str  # initializer | constant | constant_of_shape
    graph: Any  # GraphProto
    graph_path: str
    holder: Any  # TensorProto (initializer), or NodeProto (Constant / ConstantOfShape)


def find_tensor_site(model, name: str, graph_path: str = "") -> TensorSite | None:
    """Find the initializer / Constant / ConstantOfShape that produces ``name``.

    Looks in the graph at ``graph_path`` first, then in every graph of the model.
    """
    graphs = []
    g = graph_at(model, graph_path)
    if g is not None:
        graphs.append((graph_path, g))
    graphs += [(p, gg) for p, gg in iter_graphs(model.graph) if gg is not g]
    for path, graph in graphs:
        for init in graph.initializer:
            if init.name == name:
                return TensorSite(name, "initializer", graph, path, init)
        for node in graph.node:
            if node.output and node.output[0] == name:
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                    return TensorSite(name, "constant", graph, path, node)
                if node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
                    return TensorSite(name, "constant_of_shape", graph, path, node)
    return None


def constant_tensor(model, name: str, graph_path: str = "") -> np.ndarray | None:
    """The value of a constant tensor (initializer, Constant, ConstantOfShape of a constant shape)."""
    from onnx import numpy_helper

    site = find_tensor_site(model, name, graph_path)
    if site is None:
        return None
    if site.kind == "initializer":
        return numpy_helper.to_array(site.holder)
    if site.kind == "constant":
        value = constant_node_value(site.holder)
        if value is None:
            raise ModelError(f"Constant node {site.name!r} has no tensor value")
        return value
    node = site.holder
    shape = constant_tensor(model, node.input[0], site.graph_path) if node.input else None
    if shape is None:
        return None
    value = fill_value(node)
    return np.full(tuple(int(d) for d in np.asarray(shape).reshape(-1)), value[0], dtype=value.dtype)


def read_site(model, site: TensorSite) -> np.ndarray:
    arr = constant_tensor(model, site.name, site.graph_path)
    if arr is None:
        raise ModelError(f"the weight {site.name!r} is not a constant tensor")
    return arr


def write_site(site: TensorSite, arr: np.ndarray, ir_version: int | None = None) -> None:
    """Replace the stored value of ``site`` by ``arr`` (same name, dtype kept)."""
    from onnx import numpy_helper

    if site.kind == "initializer":
        new = numpy_helper.from_array(np.ascontiguousarray(arr), site.name)
        new.doc_string = site.holder.doc_string
        site.holder.CopyFrom(new)
        return
    if site.kind == "constant":
        node = site.holder
        for attr in list(node.attribute):
            if attr.name.startswith("value") or attr.name == "sparse_value":
                node.attribute.remove(attr)
        from onnx import helper

        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.ascontiguousarray(arr), "")))
        return
    # ConstantOfShape: replace the node by an initializer of the same name
    graph, node = site.graph, site.holder
    shape_name = node.input[0] if node.input else ""
    for i, n in enumerate(graph.node):
        if n is node or (n.output and n.output[0] == site.name and n.op_type == "ConstantOfShape"):
            del graph.node[i]
            break
    # drop the shape tensor when nothing else reads it (ONNX Runtime warns about unused initializers)
    # (an old-IR model also lists it as a graph input: that entry goes too, the model stays valid)
    if shape_name and shape_name not in {vi.name for vi in graph.output}:
        used = any(shape_name in n.input for _, g in iter_graphs(graph) for n in g.node)
        idx = next((i for i, init in enumerate(graph.initializer) if init.name == shape_name), None)
        if not used and idx is not None:
            del graph.initializer[idx]
            for i, vi in enumerate(graph.input):
                if vi.name == shape_name:
                    del graph.input[i]
                    break
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(arr), site.name))
    if ir_version is not None and ir_version < 4 and not site.graph_path:
        # before IR 4 every main-graph initializer must also be listed as a graph input
        from onnx import helper

        elem = helper.np_dtype_to_tensor_dtype(np.asarray(arr).dtype)
        graph.input.append(helper.make_tensor_value_info(site.name, elem, list(np.shape(arr))))
    site.kind = "initializer"
    site.holder = graph.initializer[len(graph.initializer) - 1]


@dataclass
class Dequant:
    """The DequantizeLinear in front of a quantized weight."""

    scale: np.ndarray
    zero_point: np.ndarray  # same dtype as the stored weight
    axis: int


def find_dequant(model, weight_name: str, graph_path: str = "") -> Dequant | None:
    """The DequantizeLinear that consumes ``weight_name`` (its scale, zero point and axis), or None."""
    for path, graph in iter_graphs(model.graph):
        for node in graph.node:
            if node.op_type == "DequantizeLinear" and node.input and node.input[0] == weight_name:
                scale = constant_tensor(model, node.input[1], path)
                zp = constant_tensor(model, node.input[2], path) if len(node.input) > 2 and node.input[2] else None
                axis = 1
                for attr in node.attribute:
                    if attr.name == "axis":
                        axis = int(attr.i)
                if scale is None:
                    return None
                if zp is None:
                    zp = np.zeros_like(scale, dtype=np.uint8)
                return Dequant(np.asarray(scale, dtype=np.float64), np.asarray(zp), axis)
    return None



def weight_dequant(model, ref: Any, name: str | None = None) -> Dequant | None:
    """The DequantizeLinear a weight (a WeightRef: ``name``, ``graph_path``, ``transform``) is read through,
    or None when it is stored plain. ``name``: the weight's name in ``model`` when it was renamed."""
    if "DequantizeLinear" not in (ref.transform or []):
        return None
    return find_dequant(model, name or ref.name, ref.graph_path or "")


def broadcast_param(p: np.ndarray, shape: tuple, axis: int) -> np.ndarray:
    p = np.asarray(p)
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    axis = axis % len(shape)
    view = [1] * len(shape)
    view[axis] = p.size
    return p.reshape(view)


def quant_magnitude_and_zero(q: np.ndarray, dq: Dequant) -> tuple[np.ndarray, np.ndarray]:
    """For a stored quantized weight: (|dequantized value|, zero-point array broadcastable to q)."""
    zp = broadcast_param(dq.zero_point, q.shape, dq.axis)
    scale = broadcast_param(dq.scale, q.shape, dq.axis)
    mag = np.abs(q.astype(np.float64) - zp.astype(np.float64)) * np.abs(scale)
    return mag, zp.astype(q.dtype)


def fills_to_initializers(model) -> int:
    """Replace, in place, every main-graph ConstantOfShape node of a constant shape (a weight stored as a fill,
    as some exported files hold them) by an initializer of its value, as :func:`write_site` does (an old-IR
    model lists it as a graph input too). Graph outputs stay nodes. Returns how many were replaced."""
    outputs = {o.name for o in model.graph.output}
    names = [n.output[0] for n in model.graph.node if n.op_type == "ConstantOfShape" and n.output
             and n.domain in ("", "ai.onnx") and n.output[0] not in outputs]
    done = 0
    for name in names:
        value = constant_tensor(model, name)
        site = find_tensor_site(model, name)
        if value is not None and site is not None and site.kind == "constant_of_shape":
            write_site(site, value, int(model.ir_version))
            done += 1
    return done
