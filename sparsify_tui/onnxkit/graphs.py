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
