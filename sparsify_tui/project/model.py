"""The model a project profiles: checks before ``create`` copies it in, its external data files, the
``[model]`` table of project.toml and the check on open that finds whether the model file changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sparsify_tui import fsutil
from sparsify_tui.errors import ModelError, ProjectError
from sparsify_tui.project.common import MODEL_FILE, bad_type


def stage_progress(cb: Callable[[str, float, float], None] | None, stage: str) -> Callable[[int, int], None] | None:
    if cb is None:
        return None
    return lambda done, total: cb(stage, done, total)


def check_input_shapes(shapes: Any) -> dict[str, list[int]]:
    from sparsify_tui.errors import InputShapeError

    if not shapes:
        return {}
    if not isinstance(shapes, dict):
        raise InputShapeError(f"input shapes must be a mapping of input name to dimensions, got {shapes!r}")
    out: dict[str, list[int]] = {}
    for k, v in shapes.items():
        try:
            dims = [x if x == "N" else int(x) for x in v]  # "N": the dimension that takes the batch size
        except (TypeError, ValueError):
            raise InputShapeError(f"input shape of {k!r} must be a list of whole numbers, got {v!r}") from None
        if any(d != "N" and d < 1 for d in dims):
            raise InputShapeError(f"input shape of {k!r} must have dimensions of at least 1, got {dims}")
        out[str(k)] = dims
    return out


def validate_model(path: Path, input_shapes: dict[str, list[int]]) -> Any:
    """Check that ``path`` is an analysable ONNX model; return its proto (external data not loaded)."""
    from sparsify_tui.analysis import analyze

    analyze(str(path), input_shapes or None)  # raises ModelError / InputShapeError with a clear sentence
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError...
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise ModelError(f"{path} is not an ONNX model: it has no graph")
    return proto


def external_data_files(proto: Any, model_path: Path) -> list[str]:
    """Relative paths of the external data files the model's tensors point to (checked to exist)."""
    import onnx

    tensors: list[Any] = []

    def walk_graph(g: Any) -> None:
        tensors.extend(g.initializer)
        tensors.extend(sp.values for sp in g.sparse_initializer)
        for node in g.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                tensors.extend(attr.tensors)
                if attr.HasField("g"):
                    walk_graph(attr.g)
                for sub in attr.graphs:
                    walk_graph(sub)

    walk_graph(proto.graph)
    for fn in getattr(proto, "functions", []):
        for node in fn.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
    files: list[str] = []
    for t in tensors:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), None)
        if not loc:
            raise ModelError(f"{model_path}: tensor {t.name!r} has external data without a location")
        rel = Path(loc)
        if rel.is_absolute() or ".." in rel.parts:
            raise ModelError(f"{model_path}: external data file {loc!r} must be a path relative to the model, "
                             "inside its directory")
        if not (model_path.parent / rel).is_file():
            raise ModelError(f"{model_path}: external data file {model_path.parent / rel} is missing")
        if loc not in files:
            files.append(loc)
    return files



# ---------------------------------------------------------------- the [model] table and the model file
def read_model_table(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``[model]`` table of project.toml ``path``, checked, as Project attributes
    (``model_file``, ``recorded_model_sha256``, ``model_size``, ``model_mtime_ns``, ``input_shapes``)."""
    model = doc.get("model")
    if model is None:
        raise ProjectError(f"{path} has no [model] section: the project does not say which model it profiles")
    if not isinstance(model, dict):
        raise bad_type(path, "[model]", "a table", model)
    mfile = model.get("file", MODEL_FILE)
    if not isinstance(mfile, str) or not mfile.strip() or "\0" in mfile:
        raise ProjectError(f"{path}: model.file must be the path of the model file, not {mfile!r}")
    sha = model.get("sha256", "")
    if not isinstance(sha, str):
        raise bad_type(path, "model.sha256", "a string", sha)
    for key in ("size", "mtime_ns"):
        v = model.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            raise bad_type(path, f"model.{key}", "an integer", v)
    shapes = model.get("input_shapes", {})
    if not isinstance(shapes, dict):
        raise bad_type(path, "model.input_shapes", "a table of integer arrays", shapes)
    input_shapes = {}
    for k, v in shapes.items():  # whole numbers, and "N" for the dimension that takes the batch size
        if not isinstance(v, list) or not all((isinstance(x, int) and not isinstance(x, bool)) or x == "N"
                                              for x in v):
            raise bad_type(path, f"model.input_shapes.{k}", "an array of integers (and \"N\" for the batch)", v)
        input_shapes[k] = list(v)
    return {"model_file": mfile, "recorded_model_sha256": sha, "model_size": model.get("size"),
            "model_mtime_ns": model.get("mtime_ns"), "input_shapes": input_shapes}


def model_table(raw: Any, file: str, sha256: str, size: int | None, mtime_ns: int | None,
                input_shapes: dict[str, list[int]]) -> dict[str, Any]:
    """The ``[model]`` table to save: ``raw`` (as read, unknown keys kept) updated with the current values."""
    mt = dict(raw) if isinstance(raw, dict) else {}
    mt.update({"file": file, "sha256": sha256})
    for k, v in (("size", size), ("mtime_ns", mtime_ns)):
        if v is None:
            mt.pop(k, None)
        else:
            mt[k] = v
    mt["input_shapes"] = {str(k): [x if x == "N" else int(x) for x in v] for k, v in input_shapes.items()}
    return mt


@dataclass
class ModelCheck:
    """What :func:`check_model_file` found: the current sha256, size and mtime, and whether it changed."""

    sha256: str
    size: int | None
    mtime_ns: int | None
    changed: bool = False
    missing: bool = False
    notice: str = ""  # why it is missing or unreadable


def check_model_file(path: Path, recorded_sha: str, size: int | None, mtime_ns: int | None) -> ModelCheck:
    """The model file's sha256, re-hashed only when its size or mtime differ from the recorded ones."""
    try:
        st = path.stat()
    except OSError:
        return ModelCheck(recorded_sha, size, mtime_ns, missing=True,
                          notice=f"model file {path} is missing: profiles and optimizations can be viewed, "
                                 "but nothing can be measured until it is back")
    if recorded_sha and st.st_size == size and st.st_mtime_ns == mtime_ns:
        return ModelCheck(recorded_sha, size, mtime_ns)
    try:
        sha = fsutil.sha256_file(path)
    except OSError as exc:
        return ModelCheck(recorded_sha, size, mtime_ns, missing=True,
                          notice=f"cannot read model file {path}: {exc.strerror or exc}")
    return ModelCheck(sha, st.st_size, st.st_mtime_ns, changed=bool(recorded_sha) and sha != recorded_sha)
