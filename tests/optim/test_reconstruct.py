"""Wanda and SparseGPT one-shot pruning (issue 18): the math, the ONNX weight forms, exact counts."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsify_tui.analysis import analyze
from sparsify_tui.optim import reconstruct as rc
from sparsify_tui.optim.calibrated import prune_model_calibrated
from sparsify_tui.onnxkit.sparsity import prune_array, pruned_count
from sparsify_tui.optim.prune import layer_sparsities


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sum((a - b) ** 2) / np.sum(a ** 2))


# ---------------------------------------------------------------- the math
def test_split_count_adds_up_and_fits():
    for k, sizes in [(7, [3, 3, 3]), (0, [5]), (10, [1, 9]), (1434, [64] * 32), (9, [9])]:
        q = rc.split_count(k, sizes)
        assert sum(q) == k and all(0 <= a <= n for a, n in zip(q, sizes))


@pytest.mark.parametrize("rows,d,s", [(32, 64, 0.5), (17, 300, 0.7), (5, 129, 0.85), (64, 256, 0.33), (1, 9, 0.5)])
def test_sparsegpt_and_wanda_zero_exactly_round_s_n(rows, d, s):
    rng = np.random.default_rng(rows * d)
    w = rng.standard_normal((rows, d))
    w[rng.random(w.shape) < 0.05] = 0.0  # some weights already zero
    x = rng.standard_normal((d, 3 * d))
    h = x @ x.T
    k = pruned_count(w.size, s)
    new, mask = rc.sparsegpt(w, h, k)
    assert mask.sum() == k
    out = rc.finish(new, mask, np.float32)
    assert np.count_nonzero(out == 0) == k
    assert np.array_equal(out == 0, mask)
    wm = rc.wanda_mask(w, np.diag(h), k)
    assert wm.sum() == k
    # each row loses its share (+-1)
    assert wm.sum(axis=1).max() - wm.sum(axis=1).min() <= 1


def test_finish_keeps_the_count_when_an_unpruned_weight_becomes_zero():
    w = np.array([[0.0, 1e-60, 2.0, -3.0]])
    mask = np.array([[False, False, True, False]])
    out = rc.finish(w, mask, np.float32)  # 0.0 and 1e-60 (-> 0 in float32) were not chosen
    assert np.count_nonzero(out == 0) == 1 and out[0, 2] == 0 and out[0, 3] == -3.0


def test_quantize_back_keeps_the_count_of_zero_points():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 16)) * 0.01
    mask = rng.random(w.shape) < 0.5
    q = rc.quantize_back(w, mask, np.full((8, 1), 0.02), np.full((8, 1), 3), np.int8)
    assert np.count_nonzero(q == 3) == mask.sum()
    assert np.all(q[mask] == 3)


def test_sparsegpt_reproduces_low_rank_outputs_and_magnitude_cannot():
    """Inputs of rank 16 in 256 dims: each row keeps 128 weights, far more than the 16 constraints that
    fix W X, so an (almost) exact sparse solution exists; SparseGPT finds one, magnitude does not."""
    rng = np.random.default_rng(0)
    d, r, rows, p = 256, 16, 64, 4000
    x = rng.standard_normal((d, r)) @ rng.standard_normal((r, p))
    w = rng.standard_normal((rows, d))
    y = w @ x
    k = pruned_count(w.size, 0.5)
    new, mask = rc.sparsegpt(w, x @ x.T / p, k)
    assert mask.sum() == k
    sgpt = _rel(y, new @ x)
    mag = _rel(y, prune_array(w, 0.5) @ x)
    assert sgpt < 0.005, sgpt
    assert mag > 0.05, mag
    assert sgpt < mag / 20


def test_conv_columns_reproduce_the_convolution():
    """The im2col of Conv inputs times the filters as rows gives ONNX Runtime's Conv output exactly."""
    rng = np.random.default_rng(2)
    cases = [  # (C, M, group, kernel, strides, pads, dilations)
        (6, 4, 1, (3, 3), (2, 1), (1, 0, 1, 2), (1, 2)),
        (6, 4, 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        (8, 8, 8, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # depthwise
        (5, 3, 1, (3,), (2,), (1, 1), (1,)),  # 1-D
    ]
    for c, m, g, k, s, pads, dil in cases:
        spatial = (9, 11)[: len(k)]
        x = rng.standard_normal((2, c, *spatial)).astype(np.float32)
        w = rng.standard_normal((m, c // g, *k)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"], group=g, strides=list(s), pads=list(pads),
                                dilations=list(dil))
        graph = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(w, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        cols = rc.conv_columns(x, k, strides=s, pads=pads, dilations=dil, group=g)
        rows = w.reshape(m, -1).astype(np.float64)
        per = m // g
        got = np.concatenate([rows[i * per:(i + 1) * per] @ cols[i] for i in range(g)])  # (M, N*P)
        want = y.reshape(2, m, -1).transpose(1, 0, 2).reshape(m, -1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- ONNX weight forms
def _forms_model(path):
    """Conv, grouped Conv, depthwise Conv, Gemm (transB), MatMul with a Transpose-d weight, and an int8
    Conv weight behind DequantizeLinear; the inputs of each layer are correlated (low-rank-ish)."""
    rng = np.random.default_rng(3)
    inits, nodes = [], []

    def w(name, shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name))
        return name

    nodes.append(helper.make_node("Conv", ["x", w("c1.w", (8, 4, 3, 3))], ["c1"], pads=[1, 1, 1, 1], name="c1"))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    nodes.append(helper.make_node("Conv", ["r1", w("c2.w", (8, 4, 3, 3))], ["c2"], pads=[1, 1, 1, 1], group=2,
                                  name="c2"))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    nodes.append(helper.make_node("Conv", ["r2", w("dw.w", (8, 1, 3, 3))], ["dw"], pads=[1, 1, 1, 1], group=8,
                                  strides=[2, 2], name="dw"))
    q = rng.integers(-100, 100, size=(8, 8, 1, 1)).astype(np.int8)
    inits += [numpy_helper.from_array(q, "pw.q"), numpy_helper.from_array(np.full(8, 0.004, np.float32), "pw.s"),
              numpy_helper.from_array(np.zeros(8, np.int8), "pw.z")]
    nodes.append(helper.make_node("DequantizeLinear", ["pw.q", "pw.s", "pw.z"], ["pw.w"], axis=0))
    nodes.append(helper.make_node("Conv", ["dw", "pw.w"], ["pw"], name="pw"))
    nodes.append(helper.make_node("Flatten", ["pw"], ["f"], axis=1))  # 8*4*4 = 128
    nodes.append(helper.make_node("Gemm", ["f", w("fc.w", (32, 128))], ["fc"], transB=1, name="fc"))
    nodes.append(helper.make_node("Relu", ["fc"], ["r3"]))
    nodes.append(helper.make_node("Transpose", [w("mm.wt", (10, 32))], ["mm.w"], perm=[1, 0]))
    nodes.append(helper.make_node("MatMul", ["r3", "mm.w"], ["y"], name="mm"))
    graph = helper.make_graph(nodes, "forms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _smooth_inputs(n, seed):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 4, 3, 3))
    # upsampled: strongly correlated neighbouring pixels, like images
    x = np.repeat(np.repeat(base, 3, axis=2), 3, axis=3)[:, :, :8, :8]
    return [{"x": x[i:i + 1].astype(np.float32)} for i in range(n)]


def _outputs(model, samples):
    sess = ort.InferenceSession(model if isinstance(model, str) else model.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return [sess.run(None, s)[0] for s in samples]


def test_every_weight_form_is_reconstructed_with_exact_counts(tmp_path):
    path = str(_forms_model(tmp_path / "forms.onnx"))
    graph = analyze(path)
    ids = {lay.name: lay.id for lay in graph.prunable_layers}
    assert set(ids) == {"c1", "c2", "dw", "pw", "fc", "mm"}
    cal, ev = _smooth_inputs(24, 0), _smooth_inputs(8, 1)
    dense = _outputs(path, ev)
    for s in (0.5, 0.7):
        plan = {lid: s for lid in ids.values()}
        for method in ("wanda", "sparsegpt"):
            model, info = prune_model_calibrated(path, plan, graph=graph, method=method, samples=cal)
            assert info["magnitude_layers"] == {}, info
            got = layer_sparsities(model, graph)
            for lay in graph.prunable_layers:  # to the element, zero points counted for the int8 weight
                assert round(got[lay.id] * lay.prunable_params) == pruned_count(lay.prunable_params, s)
            onnx.checker.check_model(model)
    # each form alone: the reconstruction keeps the outputs closer than magnitude pruning does
    for name, lid in ids.items():
        changes = {}
        for method in ("magnitude", "sparsegpt"):
            model, _ = prune_model_calibrated(path, {lid: 0.5}, graph=graph, method=method, samples=cal)
            changes[method] = np.mean([_rel(d, p) for d, p in zip(dense, _outputs(model, ev))])
        assert changes["sparsegpt"] < changes["magnitude"], (name, changes)


def test_one_layer_alone_matches_its_own_optimum_better(tmp_path):
    """Pruning only the MatMul behind a Transpose, with many more calibration rows than its 32 inputs:
    SparseGPT's error is well below magnitude's (about half: these inputs are full rank, the optimum is not 0)."""
    path = str(_forms_model(tmp_path / "forms.onnx"))
    graph = analyze(path)
    mm = next(lay.id for lay in graph.prunable_layers if lay.name == "mm")
    cal, ev = _smooth_inputs(256, 0), _smooth_inputs(8, 1)
    dense = _outputs(path, ev)
    res = {}
    for method in ("magnitude", "sparsegpt"):
        model, _ = prune_model_calibrated(path, {mm: 0.6}, graph=graph, method=method, samples=cal)
        res[method] = np.mean([_rel(d, p) for d, p in zip(dense, _outputs(model, ev))])
        stored = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "mm.wt"))
        assert stored.shape == (10, 32) and np.count_nonzero(stored == 0) == pruned_count(320, 0.6)
    assert res["sparsegpt"] < 0.6 * res["magnitude"], res


def test_sequential_mode_and_output_file(tmp_path):
    path = str(_forms_model(tmp_path / "forms.onnx"))
    graph = analyze(path)
    plan = {lay.id: 0.7 for lay in graph.prunable_layers}
    out = tmp_path / "seq.onnx"
    events = []
    model, info = prune_model_calibrated(path, plan, out, graph=graph, method="sparsegpt",
                                         samples=_smooth_inputs(16, 0), sequential=True, on_progress=events.append)
    assert info["passes"] == 6 and info["sequential"] is True
    assert out.exists() and not list(tmp_path.glob(".seq.onnx*"))
    assert [e["done"] for e in events if "sparsegpt" in e["label"]] == [1, 2, 3, 4, 5, 6]
    got = layer_sparsities(onnx.load(str(out)), graph)
    assert all(round(got[lay.id] * lay.prunable_params) == pruned_count(lay.prunable_params, 0.7)
               for lay in graph.prunable_layers)


def test_cancel_leaves_no_file(tmp_path):
    import threading

    from sparsify_tui.errors import CancelledError

    path = str(_forms_model(tmp_path / "forms.onnx"))
    graph = analyze(path)
    cancel = threading.Event()

    def on_progress(ev):
        if ev["done"] >= 2:
            cancel.set()

    out = tmp_path / "never.onnx"
    with pytest.raises(CancelledError):
        prune_model_calibrated(path, {lay.id: 0.5 for lay in graph.prunable_layers}, out, graph=graph,
                               method="sparsegpt", samples=_smooth_inputs(4, 0), on_progress=on_progress,
                               cancel=cancel)
    assert list(tmp_path.iterdir()) == [tmp_path / "forms.onnx"]
