"""Shared machinery of the measured loss and quantization profiles.

* :class:`WeightFedModel`: ONE ONNX Runtime session of the model in which every
  prunable weight is a graph input instead of a constant (initializers are
  removed, Constant / ConstantOfShape nodes are removed, weights inside
  If/Loop/Scan bodies are lifted to main-graph inputs, which the bodies see as
  outer-scope values; a clashing name is renamed inside its subgraph first).
  A measurement feeds the dense weights for every layer except the one being
  studied, which gets its pruned (or quantize-dequantized) version. Weights
  stored behind ``DequantizeLinear`` are fed as the stored integer tensor.
  Because the dense reference outputs come from the *same* session with the
  dense weights, an unchanged weight gives bit-identical outputs.
  The output change of a measurement is :func:`sparsify_tui.metrics.compare_outputs`.
* :class:`FedWeight`: one weight fed that way, and how to prune it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from sparsify_tui.engines.ort import session_options
from sparsify_tui.errors import EngineError, ModelError

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph


@dataclass
class FedWeight:
    """A weight fed as a graph input: its input name, dense value and how to prune it."""

    name: str  # the graph input name fed (may differ from the original when renamed)
    original: str
    dense: np.ndarray
    layer_ids: list[str] = field(default_factory=list)
    magnitude: np.ndarray | None = None  # for quantized weights: |dequantized value|
    zero: Any = 0  # value a pruned element gets (zero point for quantized weights)
    quant: Any = None  # Dequant info when behind DequantizeLinear
    order: np.ndarray | None = None  # cached magnitude order
    existing_zeros: int = 0

    @classmethod
    def of(cls, name: str, original: str, dense: np.ndarray, layer_id: str, dq: Any = None) -> "FedWeight":
        """The fed weight of ``layer_id`` with dense value ``dense``; ``dq``: its Dequant when stored quantized
        (it is then pruned by dequantized magnitude, to its zero point)."""
        from sparsify_tui.onnxkit.tensors import quant_magnitude_and_zero

        fw = cls(name, original, np.ascontiguousarray(dense), [layer_id])
        if dq is not None:
            fw.magnitude, fw.zero = quant_magnitude_and_zero(fw.dense, dq)
            fw.quant = dq
            fw.existing_zeros = int(np.count_nonzero(fw.magnitude == 0))
        else:
            fw.existing_zeros = int(fw.dense.size - np.count_nonzero(fw.dense))
        return fw

    def magnitude_order(self) -> np.ndarray:
        if self.order is None:
            from sparsify_tui.onnxkit.sparsity import magnitude_order

            self.order = magnitude_order(self.dense if self.magnitude is None else self.magnitude)
        return self.order

    def pruned(self, s: float) -> np.ndarray | None:
        """The weight pruned to ``s``; None when that leaves it unchanged (already sparse enough)."""
        from sparsify_tui.onnxkit.sparsity import prune_array, pruned_count

        k = pruned_count(self.dense.size, s)
        if k <= self.existing_zeros:
            return None
        return prune_array(self.dense, s, zero=self.zero, order=self.magnitude_order())


def _rename_in_graph(graph, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` in a (sub)graph and the subgraphs nested in it."""
    import onnx

    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for node in graph.node:
        for i, t in enumerate(node.input):
            if t == old:
                node.input[i] = new
        for i, t in enumerate(node.output):
            if t == old:
                node.output[i] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_in_graph(attr.g, old, new)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _rename_in_graph(g, old, new)


def _all_names(model) -> set[str]:
    from sparsify_tui.onnxkit.graphs import iter_graphs

    names: set[str] = set()
    for _, g in iter_graphs(model.graph):
        names.update(i.name for i in g.initializer)
        names.update(i.name for i in g.input)
        for n in g.node:
            names.update(n.output)
    return names


class WeightFedModel:
    """The model with its prunable weights turned into graph inputs, and one session over it."""

    def __init__(self, model_path: str | os.PathLike, graph: "ModelGraph", *, cores: int | None = None,
                 layer_ids: Iterable[str] | None = None, model=None) -> None:
        from sparsify_tui.onnxkit.tensors import constant_tensor, find_tensor_site, weight_dequant
        from sparsify_tui.onnxkit.modelio import load_model_copy

        self.path = Path(model_path)
        if model is None:
            model, _, _ = load_model_copy(self.path)
        self.model = model
        self.weights: dict[str, FedWeight] = {}  # by fed input name
        self.layer_weight: dict[str, str] = {}  # layer id -> fed input name
        self.skipped: dict[str, str] = {}  # layer id -> why it is not measured
        by_original: dict[str, FedWeight] = {}
        self._names = _all_names(model)
        self._main_inputs = {i.name for i in model.graph.input}
        for layer in graph.weighted_layers(layer_ids):
            ref = layer.weight
            if ref.name in by_original:
                fw = by_original[ref.name]
                fw.layer_ids.append(layer.id)
                self.layer_weight[layer.id] = fw.name
                continue
            site = find_tensor_site(model, ref.name, ref.graph_path or "")
            if site is None:
                self.skipped[layer.id] = f"its weight {ref.name!r} was not found"
                continue
            dense = constant_tensor(model, ref.name, site.graph_path)
            if dense is None:
                self.skipped[layer.id] = f"its weight {ref.name!r} is not a constant tensor"
                continue
            fed_name = self._feed(site, dense)
            dq = weight_dequant(model, ref) or weight_dequant(model, ref, fed_name)
            fw = FedWeight.of(fed_name, ref.name, dense, layer.id, dq)
            by_original[ref.name] = fw
            self.weights[fed_name] = fw
            self.layer_weight[layer.id] = fed_name
        self.cores = cores
        self.session = None
        self.output_names: list[str] = []
        self._dense_feeds = {name: fw.dense for name, fw in self.weights.items()}

    def _feed(self, site: Any, dense: np.ndarray) -> str:
        """Turn the weight stored at ``site`` into a main-graph input; return the input's name."""
        from onnx import helper

        model, name = self.model, site.name
        fed_name = name
        if site.graph_path:
            # a subgraph weight: lift it to a main-graph input, renamed if the name is taken
            if name in self._main_inputs or any(i.name == name for i in model.graph.initializer) or any(
                    name in n.output for n in model.graph.node):
                fed_name = f"{name}__sparsify_fed"
                while fed_name in self._names:
                    fed_name += "_"
                _rename_in_graph(site.graph, name, fed_name)
                self._names.add(fed_name)
        # remove the constant producer
        g = site.graph
        if site.kind == "initializer":
            for i, init in enumerate(g.initializer):
                if init.name in (name, fed_name):
                    del g.initializer[i]
                    break
        else:
            for i, n in enumerate(g.node):
                if n.output and n.output[0] in (name, fed_name) and n.op_type in ("Constant", "ConstantOfShape"):
                    del g.node[i]
                    break
        if site.graph_path:
            for i, vi in enumerate(g.input):  # an old-IR subgraph listing its initializer as input
                if vi.name in (name, fed_name):
                    del g.input[i]
                    break
        if fed_name not in self._main_inputs:
            elem = helper.np_dtype_to_tensor_dtype(dense.dtype)
            model.graph.input.append(helper.make_tensor_value_info(fed_name, elem, list(dense.shape)))
            self._main_inputs.add(fed_name)
        return fed_name

    def build_session(self):
        from sparsify_tui.engines.ort import session_from_model

        try:
            self.session = session_from_model(self.model, session_options(self.cores))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(
                f"ONNX Runtime could not load {self.path.name} with its weights as inputs: {str(exc).splitlines()[0][:300]}"
            ) from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        return self.session

    def run(self, sample: dict[str, np.ndarray], replace: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """Outputs for ``sample`` with dense weights, except the fed inputs in ``replace``."""
        if self.session is None:
            self.build_session()
        feeds = dict(self._dense_feeds)
        if replace:
            feeds.update(replace)
        feeds.update(sample)
        try:
            return self.session.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"ONNX Runtime failed to run {self.path.name}: {str(exc).splitlines()[0][:300]}") from None


def model_error_for(path, exc: Exception) -> ModelError:
    return ModelError(f"{path} could not be profiled: {exc}")
