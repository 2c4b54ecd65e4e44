"""Graphs and subgraphs of a model, and the paths that name them.

A graph path names a subgraph the way the analysis does:
``<node name or first output>/<attribute name>`` (``[i]`` appended for a
GRAPHS attribute), joined with ``/`` for nesting; ``""`` is the main graph.
Node names may themselves contain ``/``, so paths are built and compared
whole, never split.
"""

from __future__ import annotations

from typing import Any, Iterator

_GRAPH, _GRAPHS = 5, 10  # onnx.AttributeProto.GRAPH / GRAPHS


def node_key(node: Any) -> str:
    """The name a node contributes to a graph path: its name, else its first output."""
    return node.name or (node.output[0] if node.output else node.op_type)


def subgraph_attrs(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(graph_path, GraphProto)`` of each subgraph attribute of ``node`` (one level)."""
    for attr in node.attribute:
        if attr.type not in (_GRAPH, _GRAPHS):
            continue
        base = f"{path + '/' if path else ''}{node_key(node)}/{attr.name}"
        if attr.type == _GRAPH:
            yield base, attr.g
        else:
            for i, g in enumerate(attr.graphs):
                yield f"{base}[{i}]", g


def subgraphs(node: Any) -> Iterator[Any]:
    """The GraphProtos held by ``node``'s attributes (one level)."""
    for _, g in subgraph_attrs(node):
        yield g


def iter_graphs(graph: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(graph_path, GraphProto)`` for ``graph`` and every subgraph at any depth."""
    yield path, graph
    for node in graph.node:
        for sub_path, sub in subgraph_attrs(node, path):
            yield from iter_graphs(sub, sub_path)


def graph_at(root: Any, graph_path: str, prefix: str = "") -> Any:
    """The GraphProto at ``graph_path`` below ``root`` (a ModelProto or GraphProto), or None."""
    graph = root.graph if hasattr(root, "graph") and hasattr(root, "opset_import") else root
    if graph_path == prefix:
        return graph
    for node in graph.node:
        for sub_path, sub in subgraph_attrs(node, prefix):
            if graph_path == sub_path or graph_path.startswith(sub_path + "/"):
                found = graph_at(sub, graph_path, sub_path)
                if found is not None:
                    return found
    return None


# ops whose outputs hold only values of their (first / every) data input: a [0, 1] map stays one through them
_VALUE_PRESERVING = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather",
                     "GatherElements", "GatherND", "Expand", "Tile", "Resize", "Upsample", "MaxPool", "Split",
                     "Cast", "Concat", "ReduceMax", "ReduceMin", "ReduceMean", "AveragePool", "GlobalAveragePool",
                     "GlobalMaxPool", "DepthToSpace", "SpaceToDepth"}
_BOUNDED_OPS = {"Sigmoid", "Softmax", "HardSigmoid"}


def bounded_outputs(model: Any) -> set[str]:
    """Names of the main graph's outputs whose values lie in [0, 1] by construction: produced by a Sigmoid,
    Softmax or HardSigmoid, possibly through ops that only move, select or average values (Reshape,
    Transpose, Concat of bounded inputs, Resize...). ``model``: a ModelProto or GraphProto."""
    graph = getattr(model, "graph", model)
    producer = {o: n for n in graph.node for o in n.output if o}
    const = {t.name for t in graph.initializer}
    memo: dict[str, bool] = {}

    def bounded(name: str, depth: int = 0) -> bool:
        if name in memo:
            return memo[name]
        memo[name] = False  # cycles and unknown producers: not bounded
        node = producer.get(name)
        if node is None or depth > 200:
            return False
        if node.op_type in _BOUNDED_OPS:
            ok = True
        elif node.op_type in _VALUE_PRESERVING:
            if node.op_type == "Cast":
                ok = bounded(node.input[0], depth + 1) and _float_cast(node)
            elif node.op_type == "Concat":
                ok = all(bounded(i, depth + 1) for i in node.input if i)
            elif node.op_type == "Resize":  # a cubic resize overshoots
                ok = bounded(node.input[0], depth + 1) and _attr(node, "mode", b"nearest") in (b"nearest",
                                                                                              b"linear")
            else:
                ok = bool(node.input) and node.input[0] not in const and bounded(node.input[0], depth + 1)
        else:
            ok = False
        memo[name] = ok
        return ok

    return {o.name for o in graph.output if bounded(o.name)}


def _attr(node: Any, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return a.s if a.type == 3 else a.i  # STRING, else INT
    return default


def _float_cast(node: Any) -> bool:
    return _attr(node, "to", 1) in (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
