"""Exact one-shot magnitude pruning of ONNX models.

Definition (the same words as the help screen): pruning a weight tensor of
``n`` elements to sparsity ``s`` zeroes exactly ``k = round(s * n)`` elements
(Python's ``round``), those of smallest magnitude first. Ties are broken
deterministically by a stable sort of the flattened tensor (the earlier
element in C order goes first). Weights that are already zero have magnitude
0, so they are naturally among the first ``k``; when a tensor already holds
more than ``k`` zeros nothing else is zeroed and it keeps its zeros.

For a weight stored quantized behind ``DequantizeLinear`` the *stored integer
tensor* is pruned: the magnitude of an element is its dequantized value's
magnitude ``|q - zero_point| * scale`` and a pruned element is set to the
zero point (which dequantizes to exactly 0).

:func:`prune_model` works on a copy (the caller's proto is never modified) and
handles weights that are initializers (main graph or subgraphs), Constant
nodes (the Constant's value is rewritten), ConstantOfShape nodes (replaced by
an initializer holding the pruned values) and weights shared by several layers
(pruned once, to the largest sparsity requested for any of them). Names,
opset, metadata and external data are kept; the file is written atomically.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sparsify_tui.errors import ModelError, UsageError

# a model whose tensors exceed this is saved with external data (protobuf's hard limit is 2 GiB)
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


# ---------------------------------------------------------------- arrays
def pruned_count(n: int, sparsity: float) -> int:
    """How many elements pruning ``n`` elements to ``sparsity`` zeroes: ``round(sparsity * n)``."""
    k = int(round(float(sparsity) * int(n)))
    return max(0, min(int(n), k))


def magnitude_order(magnitude: np.ndarray) -> np.ndarray:
    """Indices of the flattened array, smallest magnitude first.

    Ties are broken by a fixed pseudo-random permutation (seeded by the size),
    not by position: a tensor of equal weights (a ConstantOfShape fill, a
    quantized weight with few levels) then loses zeros spread over all its
    channels, as trained weights do, instead of whole leading channels; the
    latter would leave the sparse kernels of an engine with a few dense
    channels and no speedup. The order is the same on every run.
    """
    mag = np.abs(np.asarray(magnitude)).ravel()
    n = mag.size
    if n < 2:
        return np.arange(n)
    perm = np.random.default_rng(n).permutation(n)
    return perm[np.argsort(mag[perm], kind="stable")]


def prune_array(
    w: np.ndarray,
    s: float,
    *,
    magnitude: np.ndarray | None = None,
    zero: Any = 0,
    order: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``w`` with exactly ``round(s * w.size)`` smallest-magnitude elements set to ``zero``.

    ``magnitude`` (same shape as ``w``) orders the elements instead of ``|w|``
    (used for quantized weights); ``zero`` is the value written (the zero
    point of a quantized weight; broadcastable to ``w``); ``order`` is a
    precomputed :func:`magnitude_order` to reuse across levels.
    """
    w = np.asarray(w)
    if not 0.0 <= float(s) <= 1.0:
        raise UsageError(f"sparsity must be between 0 and 1, got {s!r}")
    out = np.array(w, copy=True)
    k = pruned_count(w.size, s)
    if k == 0:
        return out
    if order is None:
        order = magnitude_order(w if magnitude is None else magnitude)
    idx = order[:k]
    flat = out.reshape(-1)
    if np.ndim(zero) == 0:
        flat[idx] = zero
    else:
        zfull = np.broadcast_to(np.asarray(zero, dtype=w.dtype), w.shape).reshape(-1)
        flat[idx] = zfull[idx]
    return out


def sparsity_of(w: np.ndarray, zero: Any = 0) -> float:
    """Fraction of elements equal to ``zero`` (0 for an empty tensor)."""
    w = np.asarray(w)
    if w.size == 0:
        return 0.0
    return float(np.count_nonzero(w == np.broadcast_to(np.asarray(zero, dtype=w.dtype), w.shape))) / w.size


# ---------------------------------------------------------------- locating tensors in a proto
def iter_graphs(graph, path: str = ""):
    """Yield ``(graph_path, GraphProto)`` for the graph and every subgraph at any depth."""
    import onnx

    yield path, graph
    for node in graph.node:
        for attr in node.attribute:
            key = node.name or (node.output[0] if node.output else node.op_type)
            if attr.type == onnx.AttributeProto.GRAPH:
                sub = f"{path}/{key}/{attr.name}" if path else f"{key}/{attr.name}"
                yield from iter_graphs(attr.g, sub)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for i, g in enumerate(attr.graphs):
                    sub = f"{path}/{key}/{attr.name}[{i}]" if path else f"{key}/{attr.name}[{i}]"
                    yield from iter_graphs(g, sub)


def _graph_at(model, graph_path: str):
    """The GraphProto at ``graph_path`` ("" = main graph; "Node/attr[/Node/attr...]"), or None."""
    import onnx

    graph = model.graph
    if not graph_path:
        return graph
    parts = graph_path.split("/")
    if len(parts) % 2:
        return None
    for i in range(0, len(parts), 2):
        key, attr_name = parts[i], parts[i + 1]
        index = None
        if attr_name.endswith("]") and "[" in attr_name:
            attr_name, _, idx = attr_name[:-1].partition("[")
            index = int(idx) if idx.isdigit() else None
        found = None
        for node in graph.node:
            if node.name == key or (node.output and node.output[0] == key):
                for attr in node.attribute:
                    if attr.name != attr_name:
                        continue
                    if attr.type == onnx.AttributeProto.GRAPH and index is None:
                        found = attr.g
                    elif attr.type == onnx.AttributeProto.GRAPHS and index is not None and index < len(attr.graphs):
                        found = attr.graphs[index]
        if found is None:
            return None
        graph = found
    return graph


@dataclass
class TensorSite:
    """Where a weight tensor is stored in a proto: its graph and how it is held."""

    name: str
    kind: str  # initializer | constant | constant_of_shape
    graph: Any  # GraphProto
    graph_path: str
    holder: Any  # TensorProto (initializer), or NodeProto (Constant / ConstantOfShape)


def find_tensor_site(model, name: str, graph_path: str = "") -> TensorSite | None:
    """Find the initializer / Constant / ConstantOfShape that produces ``name``.

    Looks in the graph at ``graph_path`` first, then in every graph of the model.
    """
    graphs = []
    g = _graph_at(model, graph_path)
    if g is not None:
        graphs.append((graph_path, g))
    graphs += [(p, gg) for p, gg in iter_graphs(model.graph) if gg is not g]
    for path, graph in graphs:
        for init in graph.initializer:
            if init.name == name:
                return TensorSite(name, "initializer", graph, path, init)
        for node in graph.node:
            if node.output and node.output[0] == name:
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                    return TensorSite(name, "constant", graph, path, node)
                if node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
                    return TensorSite(name, "constant_of_shape", graph, path, node)
    return None


def _constant_value(node, model=None, graph=None) -> np.ndarray:
    """The value of a Constant node as an array."""
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    raise ModelError(f"Constant node {node.output[0]!r} has no tensor value")  # pragma: no cover


def constant_tensor(model, name: str, graph_path: str = "") -> np.ndarray | None:
    """The value of a constant tensor (initializer, Constant, ConstantOfShape of a constant shape)."""
    from onnx import numpy_helper

    site = find_tensor_site(model, name, graph_path)
    if site is None:
        return None
    if site.kind == "initializer":
        return numpy_helper.to_array(site.holder)
    if site.kind == "constant":
        return _constant_value(site.holder)
    node = site.holder
    shape = constant_tensor(model, node.input[0], site.graph_path) if node.input else None
    if shape is None:
        return None
    value = np.zeros(1, dtype=np.float32)
    for attr in node.attribute:
        if attr.name == "value":
            value = numpy_helper.to_array(attr.t).reshape(-1)
    return np.full(tuple(int(d) for d in np.asarray(shape).reshape(-1)), value[0], dtype=value.dtype)


def read_site(model, site: TensorSite) -> np.ndarray:
    arr = constant_tensor(model, site.name, site.graph_path)
    if arr is None:
        raise ModelError(f"the weight {site.name!r} is not a constant tensor")
    return arr


def write_site(site: TensorSite, arr: np.ndarray, ir_version: int | None = None) -> None:
    """Replace the stored value of ``site`` by ``arr`` (same name, dtype kept)."""
    from onnx import numpy_helper

    if site.kind == "initializer":
        new = numpy_helper.from_array(np.ascontiguousarray(arr), site.name)
        new.doc_string = site.holder.doc_string
        site.holder.CopyFrom(new)
        return
    if site.kind == "constant":
        node = site.holder
        for attr in list(node.attribute):
            if attr.name.startswith("value") or attr.name == "sparse_value":
                node.attribute.remove(attr)
        from onnx import helper

        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.ascontiguousarray(arr), "")))
        return
    # ConstantOfShape: replace the node by an initializer of the same name
    graph, node = site.graph, site.holder
    shape_name = node.input[0] if node.input else ""
    for i, n in enumerate(graph.node):
        if n is node or (n.output and n.output[0] == site.name and n.op_type == "ConstantOfShape"):
            del graph.node[i]
            break
    # drop the shape tensor when nothing else reads it (ONNX Runtime warns about unused initializers)
    # (an old-IR model also lists it as a graph input: that entry goes too, the model stays valid)
    if shape_name and shape_name not in {vi.name for vi in graph.output}:
        used = any(shape_name in n.input for _, g in iter_graphs(graph) for n in g.node)
        idx = next((i for i, init in enumerate(graph.initializer) if init.name == shape_name), None)
        if not used and idx is not None:
            del graph.initializer[idx]
            for i, vi in enumerate(graph.input):
                if vi.name == shape_name:
                    del graph.input[i]
                    break
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(arr), site.name))
    if ir_version is not None and ir_version < 4 and not site.graph_path:
        # before IR 4 every main-graph initializer must also be listed as a graph input
        from onnx import helper

        elem = helper.np_dtype_to_tensor_dtype(np.asarray(arr).dtype)
        graph.input.append(helper.make_tensor_value_info(site.name, elem, list(np.shape(arr))))
    site.kind = "initializer"
    site.holder = graph.initializer[len(graph.initializer) - 1]


@dataclass
class Dequant:
    """The DequantizeLinear in front of a quantized weight."""

    scale: np.ndarray
    zero_point: np.ndarray  # same dtype as the stored weight
    axis: int


def find_dequant(model, weight_name: str, graph_path: str = "") -> Dequant | None:
    """The DequantizeLinear that consumes ``weight_name`` (its scale, zero point and axis), or None."""
    for path, graph in iter_graphs(model.graph):
        for node in graph.node:
            if node.op_type == "DequantizeLinear" and node.input and node.input[0] == weight_name:
                scale = constant_tensor(model, node.input[1], path)
                zp = constant_tensor(model, node.input[2], path) if len(node.input) > 2 and node.input[2] else None
                axis = 1
                for attr in node.attribute:
                    if attr.name == "axis":
                        axis = int(attr.i)
                if scale is None:
                    return None
                if zp is None:
                    zp = np.zeros_like(scale, dtype=np.uint8)
                return Dequant(np.asarray(scale, dtype=np.float64), np.asarray(zp), axis)
    return None


def _broadcast_param(p: np.ndarray, shape: tuple, axis: int) -> np.ndarray:
    p = np.asarray(p)
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    axis = axis % len(shape)
    view = [1] * len(shape)
    view[axis] = p.size
    return p.reshape(view)


def quant_magnitude_and_zero(q: np.ndarray, dq: Dequant) -> tuple[np.ndarray, np.ndarray]:
    """For a stored quantized weight: (|dequantized value|, zero-point array broadcastable to q)."""
    zp = _broadcast_param(dq.zero_point, q.shape, dq.axis)
    scale = _broadcast_param(dq.scale, q.shape, dq.axis)
    mag = np.abs(q.astype(np.float64) - zp.astype(np.float64)) * np.abs(scale)
    return mag, zp.astype(q.dtype)


# ---------------------------------------------------------------- model I/O
def _has_external_data(model) -> bool:
    import onnx

    for _, graph in iter_graphs(model.graph):
        for init in graph.initializer:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                return True
    return False


def load_model_copy(model_path_or_proto) -> tuple[Any, bool, Path | None]:
    """(a private ModelProto with weights loaded, whether the source used external data, source path)."""
    import onnx

    if isinstance(model_path_or_proto, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model_path_or_proto)
        return copy, _has_external_data(copy), None
    path = Path(model_path_or_proto)
    if not path.exists():
        raise ModelError(f"{path} does not exist")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not an ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
        external = _has_external_data(model)
        if external:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # onnx raises DecodeError, OSError, ... on a bad file
        raise ModelError(f"{path} could not be read as an ONNX model: {exc}") from None
    return model, external, path


def _tensor_bytes(model) -> int:
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
    if not external and _tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD:
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


# ---------------------------------------------------------------- the model
def _weight_refs(graph) -> dict[str, Any]:
    return {layer.id: layer for layer in graph.layers if layer.prunable and layer.weight is not None}


def prune_model(
    model_path_or_proto,
    sparsities: dict[str, float],
    out_path: str | os.PathLike | None = None,
    *,
    graph=None,
):
    """Prune each layer's weight to its sparsity; return the pruned copy (and write it to ``out_path``).

    ``sparsities`` maps layer ids (from :mod:`sparsify_tui.analysis`) to a
    sparsity in [0, 1]; a layer at 0 (or absent) is left bit-identical. A
    weight shared by several layers is pruned once, to the largest sparsity
    requested for any of them. ``graph`` is the :class:`ModelGraph` of the
    same model (analysed when not given).
    """
    model, external, src = load_model_copy(model_path_or_proto)
    label = str(src) if src is not None else "the model"
    if graph is None:
        graph = _analyze_for(model_path_or_proto, model)
    layers = _weight_refs(graph)
    wanted: dict[tuple[str, str], tuple[float, Any]] = {}
    for layer_id, s in sparsities.items():
        try:
            s = float(s)
        except (TypeError, ValueError):
            raise UsageError(f"the sparsity of layer {layer_id!r} must be a number, got {s!r}") from None
        if not 0.0 <= s <= 1.0 or s != s:
            raise UsageError(f"the sparsity of layer {layer_id!r} must be between 0 and 1, got {s:g}")
        if layer_id not in layers:
            raise UsageError(f"{layer_id!r} is not a prunable layer of {label}")
        ref = layers[layer_id].weight
        key = (ref.name, ref.graph_path or "")
        if key not in wanted or s > wanted[key][0]:
            wanted[key] = (s, ref)
    for (name, gpath), (s, ref) in wanted.items():
        if s <= 0.0:
            continue
        prune_weight_in_model(model, ref, s)
    if out_path is not None:
        save_model_atomic(model, out_path, external=external)
    return model


def prune_weight_in_model(model, ref, s: float) -> tuple[int, int]:
    """Prune the tensor ``ref`` (a WeightRef) in ``model`` in place; return (zeros, elements)."""
    site = find_tensor_site(model, ref.name, ref.graph_path or "")
    if site is None:
        raise ModelError(f"the weight {ref.name!r} was not found in the model")
    arr = read_site(model, site)
    dq = find_dequant(model, ref.name, ref.graph_path or "") if "DequantizeLinear" in (ref.transform or []) else None
    if dq is not None:
        mag, zp = quant_magnitude_and_zero(arr, dq)
        pruned = prune_array(arr, s, magnitude=mag, zero=zp)
        zeros = int(np.count_nonzero(pruned == np.broadcast_to(zp, arr.shape)))
    else:
        pruned = prune_array(arr, s)
        zeros = int(arr.size - np.count_nonzero(pruned))
    write_site(site, pruned.astype(arr.dtype, copy=False), ir_version=int(model.ir_version))
    return zeros, int(arr.size)


def _analyze_for(model_path_or_proto, model):
    """ModelGraph for a path, or for a proto (written to a temporary file first)."""
    from sparsify_tui.analysis import analyze

    import onnx

    if not isinstance(model_path_or_proto, onnx.ModelProto):
        return analyze(model_path_or_proto)
    with tempfile.TemporaryDirectory(prefix="sparsify-prune-") as d:
        p = Path(d) / "model.onnx"
        if _tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD:
            save_model_atomic(model, p, external=True)
        else:
            p.write_bytes(model.SerializeToString())
        return analyze(p)


def layer_sparsities(model, graph, layer_ids: Iterable[str] | None = None) -> dict[str, float]:
    """Measured sparsity of each prunable layer's stored weight in ``model`` (zero point aware)."""
    out: dict[str, float] = {}
    for layer in graph.layers:
        if not layer.prunable or layer.weight is None:
            continue
        if layer_ids is not None and layer.id not in layer_ids:
            continue
        ref = layer.weight
        site = find_tensor_site(model, ref.name, ref.graph_path or "")
        if site is None:
            continue
        arr = read_site(model, site)
        dq = find_dequant(model, ref.name, ref.graph_path or "") if "DequantizeLinear" in (ref.transform or []) else None
        zero = _broadcast_param(dq.zero_point, arr.shape, dq.axis).astype(arr.dtype) if dq is not None else 0
        out[layer.id] = sparsity_of(arr, zero)
    return out
