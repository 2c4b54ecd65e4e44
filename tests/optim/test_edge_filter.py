"""The edge filter: the stem, the output heads and tiny layers are left dense by default, saying why.

A hand-built compact detector (normalised 3-channel input, a 432-weight stem, a depthwise conv, a
96-weight ConvTranspose output head) planned through the CLI: ``optimize --sparsity 0.3`` without
a loss profile must leave the stem and the head dense with their reasons, say that no measured loss
profile backs the plan, and ``--prune-edges`` must plan them again.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper as nh

from sparsify_tui.analysis import analyze
from sparsify_tui.cli import main
from sparsify_tui.optim.allocate import edge_roles
from sparsify_tui.optim.optimization import (
    NO_MEASURED_LOSS_NOTE,
    REASON_HEAD,
    REASON_STEM,
    Optimization,
    PruningSettings,
)


def detector(path, seed=0):
    """image -> Sub/Div (normalisation) -> stem 3x3 (432 w) -> depthwise (144) -> pointwise (1024) ->
    two 3x3 (36864 each) -> 1x1 (384) -> ConvTranspose head (96) -> Sigmoid -> prob."""
    rng = np.random.default_rng(seed)
    inits = [nh.from_array(np.array([0.5], np.float32), "mean"), nh.from_array(np.array([0.25], np.float32), "std")]
    nodes = [h.make_node("Sub", ["image", "mean"], ["x0"], name="norm_sub"),
             h.make_node("Div", ["x0", "std"], ["x1"], name="norm_div")]

    def w(name, shape):
        fan = int(np.prod(shape[1:]))
        inits.append(nh.from_array((rng.standard_normal(shape) * (2.0 / fan) ** 0.5).astype(np.float32), name))
        return name

    def conv(name, x, shape, group=1, stride=1):
        k = shape[-1]
        nodes.append(h.make_node("Conv", [x, w(name + ".w", shape)], [name], name=name, group=group,
                                 kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        nodes.append(h.make_node("Relu", [name], [name + "_r"], name=name + "_relu"))
        return name + "_r"

    x = conv("stem", "x1", [16, 3, 3, 3], stride=2)
    x = conv("dw1", x, [16, 1, 3, 3], group=16)
    x = conv("pw1", x, [64, 16, 1, 1])
    x = conv("body1", x, [64, 64, 3, 3], stride=2)
    x = conv("body2", x, [64, 64, 3, 3])
    x = conv("neck", x, [6, 64, 1, 1])
    nodes.append(h.make_node("ConvTranspose", [x, w("head.w", [6, 1, 4, 4])], ["head"], name="head",
                             kernel_shape=[4, 4], strides=[4, 4]))
    nodes.append(h.make_node("Sigmoid", ["head"], ["prob"], name="prob_sigmoid"))
    g = h.make_graph(nodes, "detector", [h.make_tensor_value_info("image", TP.FLOAT, [1, 3, 64, 64])],
                     [h.make_tensor_value_info("prob", TP.FLOAT, [1, 1, 64, 64])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return detector(tmp_path_factory.mktemp("edge") / "detector.onnx")


def _run(capsys, *args):
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out


def _layers(doc):
    by = {}
    for x in doc["layers"]:
        by[x["name"]] = x
    return by


def test_default_plan_leaves_stem_and_head_dense_and_prune_edges_plans_them(model, tmp_path, capsys):
    proj = tmp_path / "proj"
    _run(capsys, "new", model, "--dir", proj)
    doc = json.loads(_run(capsys, "optimize", proj, "--sparsity", "0.3", "--json").out)
    lay = _layers(doc)
    assert lay["stem"]["sparsity"] == 0 and lay["stem"]["excluded_reason"] == REASON_STEM
    assert lay["head"]["sparsity"] == 0 and lay["head"]["excluded_reason"] == REASON_HEAD
    # tiny layers (under 1024 weights) too; the rest carries the target
    assert lay["dw1"]["sparsity"] == 0 and lay["dw1"]["excluded_reason"] == "protected: tiny (144 weights < 1024)"
    assert lay["neck"]["excluded_reason"] == "protected: tiny (384 weights < 1024)"
    assert lay["body1"]["sparsity"] > 0.25 and lay["pw1"]["sparsity"] > 0 and not lay["pw1"]["excluded_reason"]
    assert abs(doc["achieved_sparsity"] - 0.3) < 0.005
    assert NO_MEASURED_LOSS_NOTE in doc["notes"] and doc["loss_basis"] != "measured"
    assert doc["optimization"]["pruning"]["protect_edges"] is True

    # the recipe says it too, and leaves the protected layers out
    rec = _run(capsys, "export", proj).out
    assert "# Planned without a measured loss profile" in rec
    assert "stem.w" not in rec.split("modifiers:", 1)[1] and "head.w" not in rec.split("modifiers:", 1)[1]

    off = json.loads(_run(capsys, "optimize", proj, "--prune-edges", "--json").out)
    lay = _layers(off)
    # off at the default tiny size is stored as plans were before the filter: without the two keys
    assert "protect_edges" not in off["optimization"]["pruning"]
    assert Optimization.from_dict(off["optimization"]).pruning.protect_edges is False
    for name in ("stem", "head", "dw1", "neck"):
        assert lay[name]["sparsity"] > 0 and not lay[name]["excluded_reason"], name
    assert abs(off["achieved_sparsity"] - 0.3) < 0.005

    # back on, with a smaller tiny size: the depthwise and 1x1 layers are planned, stem and head are not
    on = json.loads(_run(capsys, "optimize", proj, "--protect-edges", "--tiny-params", "100", "--json").out)
    lay = _layers(on)
    assert lay["stem"]["excluded_reason"] == REASON_STEM and lay["head"]["excluded_reason"] == REASON_HEAD
    assert lay["dw1"]["sparsity"] > 0 and lay["neck"]["sparsity"] > 0


def test_bad_tiny_params_is_one_error_line(model, tmp_path, capsys):
    proj = tmp_path / "proj"
    _run(capsys, "new", model, "--dir", proj)
    capsys.readouterr()
    assert main(["optimize", str(proj), "--tiny-params", "-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --tiny-params must be at least 0, got -3"]


def test_edge_roles_follow_the_data_not_shapes_or_skips(tmp_path):
    """Through Transpose and Cast the first conv is the stem; the conv after an Add of two activations and a
    Reshape is no stem; a layer whose output reaches the output only through another prunable layer is no head."""
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w1", [8, 3, 3, 3]), ("w2", [8, 8, 3, 3]), ("w3", [8, 8, 1, 1]), ("w4", [4, 8, 1, 1]))]
    nodes = [
        h.make_node("Transpose", ["img"], ["t"], perm=[0, 3, 1, 2], name="nhwc"),
        h.make_node("Cast", ["t"], ["tc"], to=TP.FLOAT, name="cast"),
        h.make_node("Conv", ["tc", "w1"], ["c1"], pads=[1] * 4, name="c1"),
        h.make_node("Conv", ["c1", "w2"], ["c2"], pads=[1] * 4, name="c2"),
        h.make_node("Add", ["c2", "c1"], ["a"], name="skip"),
        h.make_node("Shape", ["img"], ["shp"], name="shape"),
        h.make_node("Reshape", ["a", "shp8"], ["r"], name="reshape"),
        h.make_node("Conv", ["r", "w3"], ["c3"], name="c3"),
        h.make_node("Conv", ["c3", "w4"], ["out"], name="c4"),
    ]
    inits.append(nh.from_array(np.array([1, 8, 8, 8], np.int64), "shp8"))
    g = h.make_graph(nodes, "roles", [h.make_tensor_value_info("img", TP.FLOAT, [1, 8, 8, 3])],
                     [h.make_tensor_value_info("out", TP.FLOAT, [1, 4, 8, 8])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "roles.onnx"))
    graph = analyze(str(tmp_path / "roles.onnx"))
    roles = {next(lay.name for lay in graph.layers if lay.id == k): v for k, v in edge_roles(graph).items()}
    assert roles == {"c1": "stem", "c4": "head"}


def test_a_stored_optimization_without_the_field_loads_with_the_filter_off():
    """Saved before the filter existed: it re-plans to the plan it was saved and exported with."""
    d = Optimization().to_dict()
    assert d["pruning"]["protect_edges"] is True and d["pruning"]["tiny_params"] == 1024
    del d["pruning"]["protect_edges"], d["pruning"]["tiny_params"]
    old = Optimization.from_dict(d)
    assert old.pruning.protect_edges is False and old.pruning.tiny_params == 1024
    assert PruningSettings().protect_edges is True  # a new plan has it on
    assert Optimization.from_dict(Optimization().to_dict()).pruning.protect_edges is True


def test_a_model_of_small_layers_and_a_dominant_head_stay_plannable():
    """Protecting every layer of a model made of small layers, or a head holding most of the weights, would
    leave the target to too few weights: the first keeps only stem and head dense, the second plans the head."""
    from sparsify_tui.optim.allocate import allocate
    from sparsify_tui.optim.optimization import default_optimization
    from sparsify_tui.optim.synthetic import synthetic_graph

    graph = synthetic_graph([64] * 20)  # conv0 reads the input, conv19 writes the output
    opt = default_optimization(graph, target_sparsity=0.5)
    new = allocate(graph, opt)
    reasons = {k: r.excluded_reason for k, r in new.layers.items() if r.excluded_reason}
    assert reasons == {"conv0": REASON_STEM, "conv19": REASON_HEAD}
    assert all(new.layers[f"conv{i}"].sparsity > 0 for i in range(1, 19))

    graph = synthetic_graph([5000] * 5 + [100_000])  # the head holds 80% of the prunable weights
    new = allocate(graph, default_optimization(graph, target_sparsity=0.5))
    assert new.layers["conv0"].excluded_reason == REASON_STEM
    assert not new.layers["conv5"].excluded_reason and new.layers["conv5"].sparsity > 0.4
