"""Every layer output shape we infer on the real models (all 7) is the shape ONNX Runtime produces.

Each model runs once in ONNX Runtime with every node output exposed as a graph
output, at the corpus input shapes; then every float/int tensor ORT returns is
compared with the analysis' ``output_shapes``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from sparsify_tui.analysis import analyze

KEYS = ["resnet50", "mobilenetv3", "yolov8n", "crnn", "minilm", "wakeword", "resnet50nhwc"]


def _inputs(corpus, key, sess):
    hints = corpus.hint(key)
    rng = np.random.default_rng(0)
    feed = {}
    for i in sess.get_inputs():
        h = hints[i.name]
        shape = h["shape"]
        if "fill" in h:
            feed[i.name] = np.full(shape, h["fill"], dtype=h["dtype"])
        elif h["dtype"].startswith("int"):
            feed[i.name] = rng.integers(h.get("low", 0), h.get("high", 2), size=shape).astype(h["dtype"])
        else:
            feed[i.name] = rng.standard_normal(shape).astype(h["dtype"])
    return feed


@pytest.mark.parametrize("key", KEYS)
def test_inferred_shapes_equal_onnxruntime_shapes(corpus, key):
    import onnxruntime as ort

    path = corpus.path(key)
    graph = analyze(path, corpus.input_shapes(key))
    m = onnx.load(str(path))
    existing = {o.name for o in m.graph.output}
    produced = [o for n in m.graph.node for o in n.output if o and o not in existing]
    for name in produced:
        m.graph.output.append(onnx.ValueInfoProto(name=name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, _inputs(corpus, key, sess))))
    ours = {o: s for layer in graph.layers for o, s in zip(layer.outputs, layer.output_shapes)}
    compared = 0
    for name, v in values.items():
        if name in ours and isinstance(v, np.ndarray):
            assert ours[name] == list(v.shape), name
            compared += 1
    assert compared >= 0.9 * len(values)
