"""Our Conv FLOPs equal DeepSparse's ``required_flops`` for every unfused conv layer.

``model_debug_analysis`` at optimization_level=0 keeps one engine layer per
ONNX Conv (canonical_name = the conv's output id). DeepSparse counts
2 * MACs and leaves the bias out; we add one bias add per output element
(DESIGN.md), so for a conv with a bias ours = theirs + N*Cout*Hout*Wout.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from sparsify_tui.analysis import analyze
from sparsify_tui.analysis.demo import build_demo_model

pytestmark = [pytest.mark.deepsparse,
              pytest.mark.skipif(importlib.util.find_spec("deepsparse") is None, reason="DeepSparse is not installed")]


def _debug_layers(path, shape):
    from deepsparse import model_debug_analysis

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    r = model_debug_analysis(str(path), [x], batch_size=shape[0], num_iterations=1, num_warmup_iterations=0,
                             optimization_level=0)
    return [layer for layer in r["layer_info"] if layer["name"].startswith(("convolution", "winograd"))]


def test_demo_conv_flops_equal_deepsparse_required_flops(tmp_path):
    p = build_demo_model(tmp_path / "demo.onnx")
    g = analyze(p)
    convs = {lay.id: lay for lay in g.layers if lay.op_type == "Conv"}
    engine = _debug_layers(p, [1, 3, 64, 64])
    matched = 0
    for el in engine:
        ids = el["canonical_name"].split(",")
        assert len(ids) == 1 and ids[0] in convs, el["canonical_name"]
        lay = convs[ids[0]]
        bias_adds = int(np.prod(lay.output_shapes[0])) if lay.bias_name else 0
        assert lay.flops - bias_adds == el["required_flops"], lay.id
        matched += 1
    assert matched == len(convs) == 11


def test_light_resnet50_conv_flops_equal_deepsparse(corpus):
    """No conv biases here (BN follows each conv), so the numbers are equal as they are.

    DeepSparse renames this model's tensors (canonical names r1, r5, ...), so convs
    are matched in execution order, which both sides keep."""
    path = corpus.path("resnet50")
    g = analyze(path, {"gpu_0/data_0": [1, 3, 224, 224]})
    ours = [lay.flops for lay in g.layers if lay.op_type == "Conv"]
    engine = [el["required_flops"] for el in _debug_layers(path, [1, 3, 224, 224])]
    assert len(engine) == len(ours) == 53
    assert ours == engine
