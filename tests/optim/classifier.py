"""A hand-built classifier whose top-1 accuracy is known in closed form, dense and one-shot pruned.

``probs = Softmax(x @ W)`` with ``x = [a, b]`` (``a``, ``b``: C features each) and ``W = [[4 I], [1 I]]`` plus
tiny off-diagonal weights (|w| < 1e-3, too small to move any decision here). Magnitude pruning removes the tiny
weights first (at ``LIGHT`` sparsity only those: every decision stays), then, at ``HEAVY``, the ``1 I`` half too,
which leaves ``probs = Softmax(4 a)``.

Labelled samples come in groups of four, each sample with its label ``c`` and a wrong class ``w``:

1. and 2. ``a = e_c``: right, dense and pruned;
3. ``a = e_w + 0.75 e_c``, ``b = 2 e_c``: dense ``c`` scores 3 + 2 = 5 against ``w``'s 4 (right); pruned without
   ``b``'s weights, 3 against 4 (wrong);
4. ``a = e_w``: wrong, dense and pruned.

So on any whole number of groups the dense model's top-1 accuracy is exactly 75% and the heavily pruned one's 50%.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper, numpy_helper

C = 10  # classes; the input has 2 C features and the weight 2 C x C = 200 elements
LIGHT = 0.5  # prunes 100 of the 180 tiny weights
HEAVY = 0.95  # prunes 190: the 180 tiny weights and the 10 weights of the "1 I" half
DENSE_ACCURACY = 75.0
HEAVY_ACCURACY = 50.0


def classifier(path: Path) -> Path:
    rng = np.random.default_rng(7)
    w = rng.uniform(-1e-3, 1e-3, (2 * C, C)).astype(np.float32)
    w[np.arange(C), np.arange(C)] = 4.0
    w[C + np.arange(C), np.arange(C)] = 1.0
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["logits"], name="fc"),
                           helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1)],
                          "classifier", [helper.make_tensor_value_info("x", T.FLOAT, ["N", 2 * C])],
                          [helper.make_tensor_value_info("probs", T.FLOAT, ["N", C])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def labelled_samples(groups: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x [4 groups, 2 C], labels [4 groups]): ``groups`` groups of the four kinds above, in order."""
    rng = np.random.default_rng(seed)
    xs, labels = [], []
    for _ in range(groups):
        for kind in range(4):
            c, w = rng.choice(C, size=2, replace=False)
            x = np.zeros(2 * C, np.float32)
            if kind < 2:
                x[c] = 1.0
            elif kind == 2:
                x[w], x[c], x[C + c] = 1.0, 0.75, 2.0
            else:
                x[w] = 1.0
            xs.append(x)
            labels.append(c)
    return np.stack(xs), np.asarray(labels, np.int64)
