"""Model inputs for measurements: random data that fits, and the user's .npz samples."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparsify_tui.errors import InputShapeError, ProfileError, UsageError
from sparsify_tui.engines.inputs import input_specs, load_samples, make_inputs


def test_bert_style_ids_stay_below_the_vocabulary(corpus):
    path = corpus.path("minilm")
    x = make_inputs(path, batch_size=2, input_shapes=corpus.input_shapes("minilm"), seed=3)
    specs = {s.name: s for s in input_specs(path)}
    vocab = specs["input_ids"].vocab
    assert vocab == 30522  # rows of the word-embedding table the ids are gathered from
    assert x["input_ids"].dtype == np.int64 and x["input_ids"].shape == (2, 128)
    assert x["input_ids"].min() >= 0 and x["input_ids"].max() < vocab
    assert len(np.unique(x["input_ids"])) > 100  # random, not constant
    assert (x["attention_mask"] == 1).all()


def test_image_inputs_take_the_batch_size(corpus):
    x = make_inputs(corpus.path("resnet50nhwc"), batch_size=3, input_shapes=corpus.input_shapes("resnet50nhwc"))
    (arr,) = x.values()
    assert arr.shape == (3, 224, 224, 3) and arr.dtype == np.float32
    assert 0 <= arr.min() and arr.max() < 1


def _dyn_model(tmp_path):
    table = numpy_helper.from_array(np.zeros((50, 4), np.float32), "table")
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "ids64"], ["emb"]),
        helper.make_node("Cast", ["flag"], ["flagf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["emb", "img"], ["y"]),
    ]
    g = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", 6]),
        helper.make_tensor_value_info("flag", TensorProto.BOOL, ["batch", 1]),
        helper.make_tensor_value_info("img", TensorProto.FLOAT, ["batch", "seq", 4]),
    ], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [table])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_dynamic_dims_need_shapes_and_ids_follow_casts(tmp_path):
    path = _dyn_model(tmp_path)
    with pytest.raises(InputShapeError, match="img.*dynamic dimension 'seq'.*--input-shape img="):
        make_inputs(path, 1)
    x = make_inputs(path, 4, {"img": [1, 6, 4]})
    assert x["ids"].dtype == np.int32 and x["ids"].max() < 50 and x["ids"].shape == (4, 6)
    assert x["flag"].dtype == np.bool_ and x["img"].shape == (4, 6, 4)
    with pytest.raises(InputShapeError, match="no input named 'imgs'"):
        make_inputs(path, 1, {"imgs": [1, 6, 4]})


def test_npz_data_is_validated_and_fitted_to_the_batch(tmp_path):
    path = _dyn_model(tmp_path)
    shapes = {"img": [1, 6, 4]}
    good = tmp_path / "good.npz"
    np.savez(good, ids=np.arange(12, dtype=np.int64).reshape(2, 6), flag=np.ones((2, 1), bool),
             img=np.full((2, 6, 4), 0.5))
    x = make_inputs(path, 3, shapes, data=good)
    assert x["ids"].dtype == np.int32 and x["ids"].shape == (3, 6)  # int64 -> int32, tiled to batch 3
    assert x["img"].dtype == np.float32 and (x["img"] == 0.5).all()
    missing = tmp_path / "missing.npz"
    np.savez(missing, ids=np.zeros((1, 6), np.int32), img=np.zeros((1, 6, 4), np.float32))
    with pytest.raises(ProfileError, match="missing.npz has no array named 'flag'"):
        make_inputs(path, 1, shapes, data=missing)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, ids=np.zeros((1, 7), np.int32), flag=np.ones((1, 1), bool), img=np.zeros((1, 6, 4), np.float32))
    with pytest.raises(ProfileError, match=r"wrong.npz: array 'ids' has shape \[1, 7\]"):
        make_inputs(path, 1, shapes, data=wrong)
    kind = tmp_path / "kind.npz"
    np.savez(kind, ids=np.zeros((1, 6), np.float32), flag=np.ones((1, 1), bool), img=np.zeros((1, 6, 4)))
    with pytest.raises(ProfileError, match="dtype float32, but the model's input needs int32"):
        make_inputs(path, 1, shapes, data=kind)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ProfileError, match="junk.npz is not a readable"):
        make_inputs(path, 1, shapes, data=junk)
    with pytest.raises(UsageError, match="no such data file"):
        make_inputs(path, 1, shapes, data=tmp_path / "nope.npz")


def test_a_directory_of_samples(tmp_path, corpus):
    path = corpus.path("wakeword")
    d = tmp_path / "samples"
    d.mkdir()
    for i in range(3):
        np.save(d / f"s{i}.npy", np.full((76, 32, 1), i, np.float32))  # no batch axis: added
    samples = load_samples(path, d, batch_size=1)
    assert len(samples) == 3
    assert [float(s["input_1"].mean()) for s in samples] == [0.0, 1.0, 2.0]
    assert samples[0]["input_1"].shape == (1, 76, 32, 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProfileError, match="contains no .npz or .npy files"):
        load_samples(path, empty)
