"""ONNX model analysis: layers, shapes, params, FLOPs, prunable weights.

``analyze(path, input_shapes=None) -> ModelGraph`` is the entry point; see
:mod:`sparsify_tui.analysis.graph` for the definitions (layer, prunable layer,
params, FLOPs, sparsity) used everywhere in sparsify-tui.
"""

from sparsify_tui.analysis.analyzer import analyze, parse_input_shapes
from sparsify_tui.analysis.graph import Layer, ModelGraph, TensorInfo, WeightRef
from sparsify_tui.analysis.weights import read_weight

__all__ = ["analyze", "parse_input_shapes", "read_weight", "ModelGraph", "Layer", "TensorInfo", "WeightRef"]
