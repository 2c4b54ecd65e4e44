"""sparsify-tui: profile ONNX models layer by layer and plan their sparsification."""

__version__ = "0.1.0"
