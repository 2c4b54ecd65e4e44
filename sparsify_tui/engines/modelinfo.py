"""The original layers of a model, as the engines' mapping and the perf profile need them.

Uses the analysis package (``sparsify_tui.analysis.analyze``) for ids, depth,
FLOPs and prunability. If the analysis cannot run (it raises something that
is not a user error), falls back to reading the ONNX graph directly (no FLOPs:
groups are then split equally).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sparsify_tui.engines.mapping import LayerRef, constant_layers
from sparsify_tui.errors import ModelError, SparsifyError

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph


@dataclass
class LayerMeta:
    id: str
    name: str
    op_type: str
    depth: int
    inputs: list[str]
    outputs: list[str]
    flops: float | None = None
    prunable: bool = False
    bias_flops: float = 0.0  # part of ``flops`` that are bias adds (not removed by pruning)
    graph_path: str = ""
    constant: bool = False

    def ref(self) -> LayerRef:
        return LayerRef(self.id, self.name, self.op_type, self.inputs, self.outputs, self.flops, self.constant)


@dataclass
class ModelInfo:
    path: str
    layers: list[LayerMeta]
    initializers: set[str] = field(default_factory=set)
    flops: float | None = None
    source: str = "analysis"
    graph: "ModelGraph | None" = None

    def refs(self) -> list[LayerRef]:
        return [m.ref() for m in self.layers if not m.graph_path]


def _prod(shape: Any) -> int | None:
    try:
        n = 1
        for d in shape:
            if not isinstance(d, int):
                return None
            n *= d
        return n
    except TypeError:
        return None


def load_model_info(path: str, input_shapes: dict[str, list[int]] | None = None,
                    graph: "ModelGraph | None" = None) -> ModelInfo:
    """Layers of the model at ``path`` (analysed, or read directly as a fallback)."""
    import onnx

    if graph is None:
        try:
            from sparsify_tui.analysis import analyze  # type: ignore[attr-defined]

            graph = analyze(path, input_shapes=input_shapes or None)
        except SparsifyError:
            raise
        except Exception:  # analysis not available / internal bug: fall back to the raw graph
            graph = None
    if graph is not None:
        proto = getattr(graph, "model", None)
        inits = set()
        if proto is not None:
            inits = {i.name for i in proto.graph.initializer}
        else:
            try:
                inits = {i.name for i in onnx.load(str(path), load_external_data=False).graph.initializer}
            except Exception:  # noqa: BLE001
                inits = set()
        metas = []
        for layer in graph.layers:
            bias = 0.0
            if layer.prunable and layer.bias_name and layer.output_shapes:
                n = _prod(layer.output_shapes[0]) if layer.output_shapes[0] is not None else None
                bias = float(n or 0)
            metas.append(LayerMeta(
                id=layer.id, name=layer.name, op_type=layer.op_type, depth=layer.depth,
                inputs=list(layer.inputs), outputs=list(layer.outputs),
                flops=None if layer.flops is None else float(layer.flops),
                prunable=bool(layer.prunable), bias_flops=bias, graph_path=layer.graph_path or "",
            ))
        info = ModelInfo(str(path), metas, inits, graph.flops, "analysis", graph)
    else:
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
        inits = {i.name for i in proto.graph.initializer}
        metas = []
        for i, node in enumerate(proto.graph.node):
            lid = node.output[0] if node.output else f"{node.op_type}_{i}"
            prunable = node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1
            metas.append(LayerMeta(lid, node.name, node.op_type, i, list(node.input), list(node.output),
                                   None, prunable))
        info = ModelInfo(str(path), metas, inits, None, "onnx", None)
    top = [m for m in info.layers if not m.graph_path]
    const = constant_layers([m.ref() for m in top], info.initializers)
    for m in top:
        m.constant = m.id in const
    return info
