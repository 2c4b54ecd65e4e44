"""Pruning on calibration data: Wanda and SparseGPT applied to an ONNX model, layer by layer.

:func:`prune_model_calibrated` prunes every layer of a plan with ``method``
(``magnitude``, ``wanda`` or ``sparsegpt``, the math in
:mod:`sparsify_tui.optim.reconstruct`):

1. each layer's *input* tensor is captured on the calibration samples: the model
   is run in ONNX Runtime with that tensor added as a graph output, one sample at
   a time, and each sample's columns (im2col for Conv) are folded into the layer's
   ``H = X X^T`` at once, so only the H matrices are kept. Layers are captured in
   passes whose H matrices fit in ``memory_budget`` bytes (one run of the samples
   per pass);
2. ``sequential``: each layer is captured on the model with the layers before it
   already pruned (one pass per layer), so it corrects the error they introduced;
   otherwise all inputs come from the dense model;
3. the weight is read in the layout the layer consumes (through Transpose /
   Reshape / DequantizeLinear, :mod:`sparsify_tui.onnxkit.weightview`),
   reconstructed in float64, and written back in the file's layout and dtype;
   a weight behind DequantizeLinear is quantized back with the file's scales and
   zero points.

Exactly ``round(s * n)`` weights of each layer are zero afterwards (zero point
for quantized weights). Layers the methods cannot handle (weights shared by
several layers, inside subgraphs, of 3-D convolutions, ConvTranspose, integer
ops, a weight that is the first MatMul operand, ...) are pruned by magnitude
and listed in ``info["magnitude_layers"]`` with the reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from sparsify_tui.errors import CancelledError, EngineError, UsageError
from sparsify_tui.optim import reconstruct as rc
from sparsify_tui.optim.plan import Plan, pruned_sparsities

METHODS = ("magnitude", "wanda", "sparsegpt")
MEMORY_BUDGET = 768 * 2**20  # bytes of H matrices captured in one pass
_CONV_OPS = {"Conv", "FusedConv"}
_MATMUL_OPS = {"Gemm", "MatMul", "FusedGemm", "FusedMatMul"}


def check_method(method: str) -> str:
    m = str(method or "magnitude").strip().lower()
    if m not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    return m


@dataclass
class LayerJob:
    layer: Any
    sparsity: float
    node: Any
    activation: str
    rows_index: np.ndarray  # (rows, d) flat indices into the stored tensor
    groups: int
    conv: dict | None = None  # kernel, strides, pads, dilations, group, auto_pad
    transposed_input: bool = False  # Gemm transA
    dequantize: Any = None
    h: Any = None  # HessianAccumulator
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def hessian_bytes(self) -> int:
        d = self.rows_index.shape[1]
        return self.groups * d * d * 8


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def plan_layer(model, layer, sparsity: float, node_of: dict) -> LayerJob | str:
    """How ``layer`` is reconstructed (a :class:`LayerJob`), or why it is pruned by magnitude instead."""
    from sparsify_tui.onnxkit.weightview import weight_view

    if layer.graph_path:
        return "it is inside a subgraph"
    node = node_of.get(layer.outputs[0] if layer.outputs else None)
    op = layer.op_type
    if node is None or (op not in _CONV_OPS and op not in _MATMUL_OPS):
        return f"{op} layers are pruned by magnitude"
    ref = layer.weight
    view, why = weight_view(model, node, ref.name, layer.weight_shape, candidates=(1,))
    if view is None:
        return why if why else "its weight is not the second input"
    idx = view.index
    if op in _CONV_OPS:
        if idx.ndim not in (3, 4):
            return "only 1-D and 2-D convolutions are reconstructed"
        group = int(_attr(node, "group", 1))
        m = idx.shape[0]
        kernel = list(idx.shape[2:])
        conv = {"kernel": kernel, "strides": _attr(node, "strides"), "pads": _attr(node, "pads"),
                "dilations": _attr(node, "dilations"), "group": group,
                "auto_pad": (_attr(node, "auto_pad", b"NOTSET") or b"NOTSET")}
        if isinstance(conv["auto_pad"], bytes):
            conv["auto_pad"] = conv["auto_pad"].decode()
        if m % group:
            return "its filters do not divide into the groups"
        return LayerJob(layer, sparsity, node, node.input[0], idx.reshape(m, -1), group, conv=conv,
                        dequantize=view.dequantize)
    if idx.ndim != 2:
        return "its weight is not a matrix"
    trans_a = False
    if op in ("Gemm", "FusedGemm"):
        rows = idx if int(_attr(node, "transB", 0)) else idx.T
        trans_a = bool(int(_attr(node, "transA", 0)))
    else:
        rows = idx.T
    return LayerJob(layer, sparsity, node, node.input[0], np.ascontiguousarray(rows), 1,
                    transposed_input=trans_a, dequantize=view.dequantize)


def _columns(job: LayerJob, x: np.ndarray) -> np.ndarray:
    d = job.rows_index.shape[1]
    if job.conv is not None:
        c = job.conv
        return rc.conv_columns(x, c["kernel"], strides=c["strides"], pads=c["pads"], dilations=c["dilations"],
                               group=c["group"], auto_pad=c["auto_pad"])
    return rc.matmul_columns(x, d, transposed=job.transposed_input)


def _session(model_bytes: bytes, cores: int | None):
    from sparsify_tui.engines.ort import bytes_session

    return bytes_session(model_bytes, cores, purpose="capture layer inputs")


def capture(model, jobs: list[LayerJob], samples: list[dict], *, diagonal_only: bool, cores: int | None,
            cancel=None) -> None:
    """Fill ``job.h`` of each job from its input tensor on ``samples`` (one sample at a time)."""
    from sparsify_tui.onnxkit.weightview import with_outputs

    names = sorted({j.activation for j in jobs})
    sess = _session(with_outputs(model, names), cores)
    wanted = {i.name for i in sess.get_inputs()}
    for j in jobs:
        j.h = rc.HessianAccumulator(j.groups, j.rows_index.shape[1], diagonal_only=diagonal_only)
    for sample in samples:
        _check(cancel)
        feed = {k: v for k, v in sample.items() if k in wanted}
        try:
            outs = dict(zip(names, sess.run(names, feed)))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise EngineError(f"ONNX Runtime failed while capturing layer inputs: "
                              f"{str(exc).splitlines()[0][:300]}") from None
        for j in jobs:
            j.h.add(_columns(j, np.asarray(outs[j.activation], dtype=np.float32)))
        del outs


def _check(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("pruning was cancelled; no file was written")


def damping(d: int, columns: int) -> float:
    """SparseGPT's dampening (a share of mean diag H): the paper's 1%, more when there are few input columns.

    A layer that sees fewer input columns than it has inputs (a classifier head after global pooling: one
    column per sample) has a rank-deficient H, and the least-squares fit would follow the calibration
    samples too closely; the dampening grows as 0.3 * d / columns, between 1% and 30%.
    """
    return float(min(0.3, max(rc.PERCDAMP, 0.3 * d / max(1, columns))))


def reconstruct_layer(model, job: LayerJob, method: str) -> tuple[int, int]:
    """Prune ``job``'s weight in ``model`` with ``method`` from its captured H; (zeros, elements)."""
    from sparsify_tui.onnxkit.tensors import find_tensor_site, read_site, write_site

    ref = job.layer.weight
    site = find_tensor_site(model, ref.name, ref.graph_path or "")
    stored = read_site(model, site)
    out, zeros = reconstructed_weight(stored, job, method, job.sparsity)
    if out is not stored:
        write_site(site, out, ir_version=int(model.ir_version))
    return zeros, stored.size


def reconstructed_weight(stored: np.ndarray, job: LayerJob, method: str, sparsity: float) -> tuple[np.ndarray, int]:
    """The stored weight pruned to ``sparsity`` by ``method`` from ``job``'s captured H: (array, zeros).

    Returns ``stored`` itself when it already holds enough zeros (as magnitude pruning leaves it).
    """
    from sparsify_tui.onnxkit.sparsity import pruned_count
    from sparsify_tui.onnxkit.tensors import broadcast_param as _broadcast_param

    n = stored.size
    k = pruned_count(n, sparsity)
    if job.dequantize is not None:
        scale, zp, axis = job.dequantize
        if zp is None:
            zp = np.zeros((), dtype=stored.dtype)
        sc_b = _broadcast_param(scale, stored.shape, axis)
        zp_b = _broadcast_param(zp, stored.shape, axis)
        dense = (stored.astype(np.float64) - zp_b.astype(np.float64)) * sc_b
        existing = int(np.count_nonzero(stored == zp_b.astype(stored.dtype)))
    else:
        if stored.dtype.kind != "f":
            raise UsageError(f"the weight of {job.layer.id} is {stored.dtype} without a DequantizeLinear: "
                             "it cannot be reconstructed; use --method magnitude")
        dense = stored.astype(np.float64)
        existing = int(n - np.count_nonzero(stored))
    if k <= existing:  # already as sparse as asked: left as it is (as magnitude pruning does)
        return stored, existing
    rows = dense.reshape(-1)[job.rows_index]  # (rows, d)
    g = job.groups
    per = rows.shape[0] // g
    quotas = rc.split_count(k, [per * rows.shape[1]] * g)
    new_rows = np.empty_like(rows)
    mask_rows = np.zeros(rows.shape, dtype=bool)
    diag = job.h.diagonal() / max(1, job.h.columns)
    percdamp = damping(rows.shape[1], job.h.columns)
    for gi in range(g):
        sl = slice(gi * per, (gi + 1) * per)
        wg = rows[sl]
        if method == "wanda":
            m = rc.wanda_mask(wg, diag[gi], quotas[gi])
            new_rows[sl] = np.where(m, 0.0, wg)
        else:
            new_rows[sl], m = rc.sparsegpt(wg, job.h.h[gi] / max(1, job.h.columns), quotas[gi], percdamp=percdamp)
        mask_rows[sl] = m
    flat_mask = np.zeros(n, dtype=bool)
    flat_mask[job.rows_index.reshape(-1)] = mask_rows.reshape(-1)
    flat_new = np.empty(n, dtype=np.float64)
    flat_new[job.rows_index.reshape(-1)] = new_rows.reshape(-1)
    mask = flat_mask.reshape(stored.shape)
    new = flat_new.reshape(stored.shape)
    if job.dequantize is not None:
        out = rc.quantize_back(new, mask, sc_b, zp_b, stored.dtype)
        return out, int(np.count_nonzero(out == zp_b.astype(stored.dtype)))
    out = rc.finish(new, mask, stored.dtype)
    return out, int(n - np.count_nonzero(out))


def _plan_jobs(model, graph, sparsities: dict[str, float]) -> tuple[list, list[LayerJob], dict[str, str]]:
    """(layers in graph order, the jobs of those reconstructed, {layer id: why magnitude} for the others)."""
    layers = {lay.id: lay for lay in graph.layers if lay.prunable and lay.weight is not None}
    for lid, s in sparsities.items():
        if lid not in layers:
            raise UsageError(f"{lid!r} is not a prunable layer of the model")
        if not 0.0 <= float(s) <= 1.0:
            raise UsageError(f"the sparsity of layer {lid!r} must be between 0 and 1, got {s}")
    users: dict[str, int] = {}
    for lay in layers.values():
        users[lay.weight.name] = users.get(lay.weight.name, 0) + 1
    node_of = {n.output[0]: n for n in model.graph.node if n.output}
    jobs: list[LayerJob] = []
    fallback: dict[str, str] = {}
    order = [lay for lay in graph.layers if lay.id in sparsities and float(sparsities[lay.id]) > 0]
    for lay in order:
        if users.get(lay.weight.name, 0) > 1:
            fallback[lay.id] = "its weight is shared with another layer"
            continue
        job = plan_layer(model, lay, float(sparsities[lay.id]), node_of)
        if isinstance(job, str):
            fallback[lay.id] = job
        else:
            jobs.append(job)
    return order, jobs, fallback


def _passes(jobs: list[LayerJob], method: str, sequential: bool, memory_budget: int) -> list[list[LayerJob]]:
    """Layers captured together: one each (sequential), or as many as their H matrices fit in the budget."""
    passes: list[list[LayerJob]] = []
    for job in jobs:
        if sequential or not passes:
            passes.append([job])
            continue
        size = sum(j.hessian_bytes for j in passes[-1]) if method == "sparsegpt" else 0
        if size + (job.hessian_bytes if method == "sparsegpt" else 0) > memory_budget:
            passes.append([job])
        else:
            passes[-1].append(job)
    return passes


class CalibratedPruner:
    """Per-layer pruned weights by Wanda or SparseGPT for the loss profile (one layer pruned at a time).

    The dense model's layer inputs are captured on ``samples`` pass by pass, as the
    layers are asked for in graph order, so only one pass of H matrices is held.
    :meth:`weights` gives a layer's stored weight pruned at each level, or None when the
    layer is not reconstructed (the caller prunes it by magnitude).
    """

    def __init__(self, model_path, graph, samples: list[dict], method: str, *, layer_ids=None,
                 cores: int | None = None, memory_budget: int = MEMORY_BUDGET, cancel=None) -> None:
        from sparsify_tui.onnxkit.modelio import load_model_copy

        self.method = check_method(method)
        if self.method == "magnitude":
            raise UsageError("the magnitude method needs no calibrated pruner")
        if not samples:
            raise UsageError(f"the {self.method} method needs calibration samples")
        self.model = load_model_copy(model_path)[0]
        ids = [lay.id for lay in graph.prunable_layers if layer_ids is None or lay.id in layer_ids]
        _order, jobs, self.magnitude_layers = _plan_jobs(self.model, graph, {i: 1.0 for i in ids})
        self.passes = _passes(jobs, self.method, False, memory_budget)
        self.pass_of = {j.layer.id: i for i, p in enumerate(self.passes) for j in p}
        self.samples, self.cores, self.cancel = samples, cores, cancel
        self._current = -1

    def weights(self, layer_id: str, stored: np.ndarray, levels) -> list[np.ndarray] | None:
        i = self.pass_of.get(layer_id)
        if i is None:
            return None
        if i != self._current:
            for j in self.passes[self._current] if self._current >= 0 else []:
                j.h = None
            capture(self.model, self.passes[i], self.samples, diagonal_only=(self.method == "wanda"),
                    cores=self.cores, cancel=self.cancel)
            self._current = i
        job = next(j for j in self.passes[i] if j.layer.id == layer_id)
        return [reconstructed_weight(stored, job, self.method, float(s))[0] for s in levels]


def prune_model_calibrated(model_path, sparsities: "Plan | dict[str, float]", out_path=None, *, graph, method: str,
                           samples: list[dict] | None = None, sequential: bool = False,
                           cores: int | None = None, memory_budget: int = MEMORY_BUDGET,
                           on_progress: Callable[[dict], Any] | None = None, cancel=None):
    """Prune each layer of the plan (a :class:`~sparsify_tui.optim.plan.Plan` or {layer id: sparsity}) with
    ``method`` on the calibration ``samples``; (model, info).

    ``out_path`` (optional) is written atomically once every layer is done.
    """
    from sparsify_tui.onnxkit.modelio import load_model_copy, save_model_atomic
    from sparsify_tui.optim.prune import prune_model, prune_weight_in_model

    sparsities = pruned_sparsities(sparsities)
    method = check_method(method)
    t0 = time.perf_counter()
    if method == "magnitude":
        model = prune_model(model_path, sparsities, out_path, graph=graph)
        return model, {"method": method, "magnitude_layers": {}, "seconds": time.perf_counter() - t0}
    if not samples:
        raise UsageError(f"--method {method} needs calibration samples")
    model, external, _src = load_model_copy(model_path)
    dense = None if sequential else load_model_copy(model_path)[0]
    order, jobs, fallback = _plan_jobs(model, graph, sparsities)
    total = len(order)
    done = 0

    def note(label: str) -> None:
        if on_progress:
            on_progress({"event": "progress", "done": done, "total": total, "label": label})

    for lay in order:
        if lay.id in fallback:
            prune_weight_in_model(model, lay.weight, float(sparsities[lay.id]))
            done += 1
    passes = _passes(jobs, method, sequential, memory_budget)
    for batch in passes:
        _check(cancel)
        note(f"capturing the inputs of {batch[0].layer.id}" if len(batch) == 1 else
             f"capturing the inputs of {len(batch)} layers on {len(samples)} samples")
        capture(model if sequential else dense, batch, samples, diagonal_only=(method == "wanda"), cores=cores,
                cancel=cancel)
        for job in batch:
            _check(cancel)
            t = time.perf_counter()
            zeros, n = reconstruct_layer(model, job, method)
            job.seconds = time.perf_counter() - t
            job.h = None
            done += 1
            note(f"{method} {job.layer.id}: {zeros}/{n} zero ({job.seconds:.1f} s)")
    _check(cancel)
    if out_path is not None:
        save_model_atomic(model, out_path, external=external)
    info = {"method": method, "sequential": bool(sequential), "calibration_samples": len(samples),
            "magnitude_layers": fallback, "seconds": time.perf_counter() - t0,
            "passes": len(passes)}
    if math.isfinite(info["seconds"]):
        info["seconds"] = round(info["seconds"], 3)
    return model, info
