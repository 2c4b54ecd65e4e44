"""Low-level ONNX proto work shared by every layer above it.

- :mod:`~sparsify_tui.onnxkit.graphs`: walking a model's graphs and subgraphs, graph paths.
- :mod:`~sparsify_tui.onnxkit.tensors`: finding, decoding and replacing constant tensors
  (initializers, Constant and ConstantOfShape nodes, weights behind DequantizeLinear).
- :mod:`~sparsify_tui.onnxkit.modelio`: loading with external data, atomic saving.
- :mod:`~sparsify_tui.onnxkit.sparsity`: exact magnitude pruning of arrays.
- :mod:`~sparsify_tui.onnxkit.weightview`: a weight as its layer consumes it (index map), extra outputs.

Nothing here knows about profiles, projects or engines; it imports only onnx,
numpy and :mod:`sparsify_tui.errors` / :mod:`sparsify_tui.fsutil`.
"""
