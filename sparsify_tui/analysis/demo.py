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


# ---------------------------------------------------------------- a ResNet-50-sized model
RESNET50_INPUT_SHAPE = [1, 3, 224, 224]
RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))  # (bottleneck blocks, width) per stage


def build_resnet50_proto(seed: int = 0):
    """A ResNet-50-shaped CNN (BatchNorm folded into the conv biases), seeded He-initialised weights.

    Input ``input`` 1x3x224x224, output ``logits`` 1x1000; 53 convolutions and a
    Gemm head (25.5M params, about 8.2 GFLOPs). It has the shape and the cost of
    the model CPU inference engines are usually compared on, with untrained
    weights: its logits are large (no BatchNorm scales them), which makes it a
    hard case for output metrics too. Used by the benchmarks and the tests that
    need a model of that size.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []

    def conv(x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}.weight"))
        inits.append(numpy_helper.from_array((rng.standard_normal(cout) * 0.01).astype(np.float32), f"{name}.bias"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    x = conv("input", "stem.conv", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["stem.pool"], name="stem.pool", kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "stem.pool", 64
    for stage, (blocks, width) in enumerate(RESNET50_STAGES, start=1):
        for i in range(blocks):
            prefix, stride, cout = f"layer{stage}.{i}", (2 if i == 0 and stage > 1 else 1), width * 4
            y = conv(x, f"{prefix}.conv1", cin, width, 1)
            y = conv(y, f"{prefix}.conv2", width, width, 3, stride)
            y = conv(y, f"{prefix}.conv3", width, cout, 1, relu=False)
            shortcut = conv(x, f"{prefix}.downsample", cin, cout, 1, stride, relu=False) if i == 0 else x
            nodes.append(helper.make_node("Add", [y, shortcut], [f"{prefix}.add"], name=f"{prefix}.add"))
            nodes.append(helper.make_node("Relu", [f"{prefix}.add"], [f"{prefix}.relu"], name=f"{prefix}.relu"))
            x, cin = f"{prefix}.relu", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flatten"], name="flatten", axis=1))
    inits.append(numpy_helper.from_array(
        (rng.standard_normal((1000, cin)) * np.sqrt(2.0 / cin)).astype(np.float32), "fc.weight"))
    inits.append(numpy_helper.from_array((rng.standard_normal(1000) * 0.01).astype(np.float32), "fc.bias"))
    nodes.append(helper.make_node("Gemm", ["flatten", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "sparsify_resnet50_sized",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, RESNET50_INPUT_SHAPE)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="sparsify-tui", producer_version="1")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_resnet50_model(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the ResNet-50-sized model to ``path`` (atomically, about 100 MB) and return the path."""
    from sparsify_tui.fsutil import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, build_resnet50_proto(seed).SerializeToString())
    return path
