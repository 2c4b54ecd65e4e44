"""The private copy DeepSparse gets: the file's bytes when it already declares the shapes fed, else the
dims written once (no engine call here: only the copy is checked)."""

from __future__ import annotations

import filecmp

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(path, batch_dim):
    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)


def test_copy_is_the_files_bytes_when_the_shapes_are_declared_and_written_once_when_not(tmp_path):
    from sparsify_tui.engines.deepsparse_engine import compatible_model

    fixed, symbolic = tmp_path / "fixed.onnx", tmp_path / "symbolic.onnx"
    _model(fixed, 2)
    _model(symbolic, "N")
    with compatible_model(str(fixed), {"x": [2, 4]}) as (out, note):
        assert note == "" and out != str(fixed) and filecmp.cmp(out, fixed, shallow=False)
    with compatible_model(str(fixed), {"x": [5, 4]}) as (out, _note):  # another batch: the dims are written
        dims = [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
        assert dims == [5, 4]
    with compatible_model(str(symbolic), {"x": [3, 4]}) as (out, _note):
        dims = [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim]
        assert dims == [3, 4]
    assert [d.dim_param for d in onnx.load(symbolic).graph.input[0].type.tensor_type.shape.dim][0] == "N"
