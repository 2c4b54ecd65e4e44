"""The bundled demo model: a small ResNet-style CNN built with ``onnx.helper``.

No download: ``build_demo_model(path)`` writes it, deterministically (seeded
weights, same bytes every time). Input ``input`` 1x3x64x64 float32, output
``logits`` 1x10. 11 prunable convolutions (BatchNorm folded into their bias)
with 64 to 256 channels, two residual stages with Add shortcuts, a global
average pool and a Gemm head ``fc``: 0.54 GFLOPs and 1.3M params, heavy
enough that DeepSparse runs it measurably faster when pruned, light enough to
profile in seconds. Layer names follow PyTorch: ``stem.conv``,
``layer1.0.conv1``, ``layer2.0.downsample``, ``fc``; the id of a conv layer
(its output tensor) is its name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

INPUT_SHAPE = [1, 3, 64, 64]
NUM_CLASSES = 10
SEED = 20210


def build_demo_proto():
    """The demo model as an ``onnx.ModelProto`` (opset 13, IR 8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    nodes: list = []
    inits: list = []

    def conv(x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.01).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}.weight"))
        inits.append(numpy_helper.from_array(b, f"{name}.bias"))
        nodes.append(helper.make_node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, dilations=[1, 1], group=1,
        ))
        if not relu:
            return name
        out = f"{name}.relu"
        nodes.append(helper.make_node("Relu", [name], [out], name=out))
        return out

    def block(x: str, prefix: str, cin: int, cout: int, stride: int) -> str:
        y = conv(x, f"{prefix}.conv1", cin, cout, 3, stride)
        y = conv(y, f"{prefix}.conv2", cout, cout, 3, 1, relu=False)
        sc = conv(x, f"{prefix}.downsample", cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else x
        add = f"{prefix}.add"
        nodes.append(helper.make_node("Add", [y, sc], [add], name=add))
        out = f"{prefix}.relu"
        nodes.append(helper.make_node("Relu", [add], [out], name=out))
        return out

    x = conv("input", "stem.conv", 3, 64, 3, 2)  # 32x32
    x = block(x, "layer1.0", 64, 64, 1)
    x = block(x, "layer1.1", 64, 64, 1)
    x = block(x, "layer2.0", 64, 128, 2)  # 16x16
    x = block(x, "layer3.0", 128, 256, 2)  # 8x8
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flatten"], name="flatten", axis=1))
    w = (rng.standard_normal((NUM_CLASSES, 256)) * np.sqrt(1.0 / 256)).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "fc.weight"))
    inits.append(numpy_helper.from_array(np.zeros(NUM_CLASSES, dtype=np.float32), "fc.bias"))
    nodes.append(helper.make_node("Gemm", ["flatten", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))

    graph = helper.make_graph(
        nodes, "sparsify_demo_resnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, INPUT_SHAPE)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, NUM_CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="sparsify-tui demo", producer_version="1")
    model.ir_version = 8
    model.doc_string = "sparsify-tui demo model: small ResNet-style CNN with seeded random weights"
    onnx.checker.check_model(model)
    return model


def build_demo_model(path: str | os.PathLike) -> Path:
    """Write the demo model to ``path`` (atomically) and return the path."""
    from sparsify_tui.fsutil import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, build_demo_proto().SerializeToString())
    return path
