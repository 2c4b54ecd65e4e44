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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from sparsify_tui.errors import ModelError, UsageError
from sparsify_tui.onnxkit.modelio import EXTERNAL_DATA_THRESHOLD, load_model_copy, save_model_atomic, tensor_bytes
from sparsify_tui.onnxkit.sparsity import prune_array, sparsity_of
from sparsify_tui.onnxkit.tensors import (
    broadcast_param,
    find_tensor_site,
    quant_magnitude_and_zero,
    read_site,
    weight_dequant,
    write_site,
)
from sparsify_tui.optim.plan import Plan, pruned_sparsities

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import Layer, ModelGraph

def _weight_refs(graph: "ModelGraph") -> dict[str, "Layer"]:
    return {layer.id: layer for layer in graph.weighted_layers()}


def prune_model(
    model_path_or_proto,
    sparsities: "Plan | dict[str, float]",
    out_path: str | os.PathLike | None = None,
    *,
    graph: "ModelGraph | None" = None,
):
    """Prune each layer's weight to its sparsity; return the pruned copy (and write it to ``out_path``).

    ``sparsities`` is a :class:`~sparsify_tui.optim.plan.Plan` (its
    unstructured entries) or a map of layer ids (from :mod:`sparsify_tui.analysis`)
    to a sparsity in [0, 1]; a layer at 0 (or absent) is left bit-identical. A
    weight shared by several layers is pruned once, to the largest sparsity
    requested for any of them. ``graph`` is the :class:`ModelGraph` of the
    same model (analysed when not given).
    """
    sparsities = pruned_sparsities(sparsities)
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
    for s, ref in wanted.values():
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
    dq = weight_dequant(model, ref)
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
        if tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD:
            save_model_atomic(model, p, external=True)
        else:
            p.write_bytes(model.SerializeToString())
        return analyze(p)


def layer_sparsities(model, graph: "ModelGraph", layer_ids: Iterable[str] | None = None) -> dict[str, float]:
    """Measured sparsity of each prunable layer's stored weight in ``model`` (zero point aware)."""
    out: dict[str, float] = {}
    for layer in graph.weighted_layers(layer_ids):
        ref = layer.weight
        site = find_tensor_site(model, ref.name, ref.graph_path or "")
        if site is None:
            continue
        arr = read_site(model, site)
        dq = weight_dequant(model, ref)
        zero = broadcast_param(dq.zero_point, arr.shape, dq.axis).astype(arr.dtype) if dq is not None else 0
        out[layer.id] = sparsity_of(arr, zero)
    return out
