"""Loading a model with its external data, and saving one atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from sparsify_tui.errors import ModelError, UsageError
from sparsify_tui.onnxkit.graphs import iter_graphs

# a model whose tensors exceed this is saved with external data (protobuf's hard limit is 2 GiB)
EXTERNAL_DATA_THRESHOLD = 1_800_000_000

def has_external_data(model) -> bool:
    import onnx

    for _, graph in iter_graphs(model.graph):
        for init in graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                return True
    return False


def check_model_file(path: Path, label: str) -> None:
    """ModelError when ``path`` (named ``label`` in the message) does not exist or is a directory."""
    if not path.exists():
        raise ModelError(f"{label} does not exist")
    if path.is_dir():
        raise ModelError(f"{label} is a directory, not an ONNX file")


def load_model_copy(model_path_or_proto) -> tuple[Any, bool, Path | None]:
    """(a private ModelProto with weights loaded, whether the source used external data, source path)."""
    import onnx

    if isinstance(model_path_or_proto, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model_path_or_proto)
        return copy, has_external_data(copy), None
    path = Path(model_path_or_proto)
    check_model_file(path, str(path))
    try:
        model = onnx.load(str(path), load_external_data=False)
        external = has_external_data(model)
        if external:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # onnx raises DecodeError, OSError, ... on a bad file
        raise ModelError(f"{path} could not be read as an ONNX model: {exc}") from None
    return model, external, path


def tensor_bytes(model) -> int:
    total = 0
    for _, graph in iter_graphs(model.graph):
        for init in graph.initializer:
            total += len(init.raw_data) or 0
    return total


def save_model_atomic(model, out_path: str | os.PathLike, *, external: bool | None = None) -> None:
    """Write ``model`` to ``out_path`` atomically (temp file + rename).

    With external data (``external`` True, or tensors > ~1.8 GB) the tensors go
    to ``<out name>.data`` beside it; the data file is renamed into place first.
    """
    import onnx

    out = Path(out_path)
    if out.exists() and out.is_dir():
        raise UsageError(f"{out} is a directory; give a file name for the pruned model")
    if not out.parent.exists():
        raise UsageError(f"the directory of {out} does not exist")
    if external is None:
        external = False
    if not external and tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        external = True
    if not external:
        from sparsify_tui.fsutil import atomic_write_bytes

        atomic_write_bytes(out, model.SerializeToString())
        return
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=str(out.parent)))
    try:
        data_name = out.name + ".data"
        to_save = onnx.ModelProto()
        to_save.CopyFrom(model)
        onnx.save_model(
            to_save, str(tmpdir / out.name), save_as_external_data=True, all_tensors_to_one_file=True,
            location=data_name, size_threshold=0, convert_attribute=False,
        )
        for f in (tmpdir / data_name, tmpdir / out.name):
            if f.exists():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(f, out.parent / f.name)
    finally:
        for f in tmpdir.iterdir() if tmpdir.exists() else []:
            f.unlink()
        if tmpdir.exists():
            tmpdir.rmdir()
