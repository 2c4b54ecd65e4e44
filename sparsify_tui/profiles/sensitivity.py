"""Shared machinery of the measured loss and quantization profiles.

* :class:`WeightFedModel`: ONE ONNX Runtime session of the model in which every
  prunable weight is a graph input instead of a constant (initializers are
  removed, Constant / ConstantOfShape nodes are removed, weights inside
  If/Loop/Scan bodies are lifted to main-graph inputs, which the bodies see as
  outer-scope values; a clashing name is renamed inside its subgraph first).
  A measurement feeds the dense weights for every layer except the one being
  studied, which gets its pruned (or quantize-dequantized) version. Weights
  stored behind ``DequantizeLinear`` are fed as the stored integer tensor.
  Because the dense reference outputs come from the *same* session with the
  dense weights, an unchanged weight gives bit-identical outputs.
* :func:`output_change`: how far the outputs moved (the "loss proxy").
* :func:`rank_correlation`: Spearman's rho with averaged ties.
* :func:`load_samples_for`: the samples a profile runs on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from sparsify_tui.errors import CancelledError, EngineError, ModelError, ProfileError

# a pruned model whose outputs become NaN/inf where the dense ones are finite moved "infinitely":
# it is recorded as this value (JSON has no infinity)
MAX_CHANGE = 1e9

OUTPUT_CHANGE_HELP = (
    "Output change (the loss proxy): for each model output, the KL divergence KL(dense || changed) "
    "averaged over rows when the dense output is a probability distribution (non-negative, each row "
    "summing to 1 along the last axis) or classification logits (a 2-D [N, C] float output with C >= 2, "
    "softmax applied first); otherwise the normalized squared error ||y - y'||^2 / ||y||^2 "
    "(plain squared error when y is all zeros); for integer or boolean outputs the fraction of elements "
    "that changed. The value is the sum over the outputs, averaged over the samples."
)


# ---------------------------------------------------------------- output distance
def classify_output(y: np.ndarray) -> str:
    """How an output is compared: "dist", "logits", "nse" or "discrete"."""
    y = np.asarray(y)
    if y.dtype.kind not in "fc":
        return "discrete"
    if y.ndim >= 1 and y.shape[-1] >= 2 and y.size and np.all(np.isfinite(y)):
        yy = y.astype(np.float64)
        if yy.min() >= -1e-6 and np.all(np.abs(yy.sum(axis=-1) - 1.0) <= 1e-3):
            return "dist"
    if y.ndim == 2 and y.shape[1] >= 2:
        return "logits"
    return "nse"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _kl_rows(logp: np.ndarray, logq: np.ndarray) -> float:
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (logp - logq), 0.0)
    kl = np.sum(terms, axis=-1)
    return float(max(0.0, np.mean(kl))) if kl.size else 0.0


def one_output_change(dense: np.ndarray, changed: np.ndarray, kind: str) -> float:
    dense = np.asarray(dense)
    changed = np.asarray(changed)
    if dense.shape != changed.shape:
        return MAX_CHANGE
    if dense.size == 0:
        return 0.0
    if kind == "discrete":
        return float(np.count_nonzero(dense != changed)) / dense.size
    a = dense.astype(np.float64)
    b = changed.astype(np.float64)
    finite_a = np.isfinite(a)
    if not np.array_equal(finite_a, np.isfinite(b)):
        return MAX_CHANGE
    if not finite_a.all():
        # compare only where both are finite (the same places)
        a = a[finite_a]
        b = b[finite_a]
        if a.size == 0:
            return 0.0
        kind = "nse"
    if kind == "dist":
        eps = 1e-12
        logp = np.log(np.clip(a, eps, None))
        logq = np.log(np.clip(b, eps, None))
        logp = logp.reshape(-1, a.shape[-1])
        logq = logq.reshape(-1, a.shape[-1])
        return min(MAX_CHANGE, _kl_rows(logp, logq))
    if kind == "logits":
        return min(MAX_CHANGE, _kl_rows(_log_softmax(a), _log_softmax(b)))
    num = float(np.sum(np.square(a - b)))
    den = float(np.sum(np.square(a)))
    value = num / den if den > 0 else num
    return min(MAX_CHANGE, value) if math.isfinite(value) else MAX_CHANGE


def output_change(dense: list[np.ndarray], changed: list[np.ndarray], kinds: list[str]) -> float:
    """Sum over the outputs of :func:`one_output_change` (see ``OUTPUT_CHANGE_HELP``)."""
    total = 0.0
    for d, c, k in zip(dense, changed, kinds):
        total += one_output_change(d, c, k)
    return min(MAX_CHANGE, total)


# ---------------------------------------------------------------- ranks
def average_ranks(x: Iterable[float]) -> np.ndarray:
    """Ranks 1..n (ascending), ties get the average of their ranks."""
    x = np.asarray(list(x), dtype=np.float64)
    n = x.size
    order = np.argsort(x, kind="stable")
    ranks = np.empty(n, dtype=np.float64)
    sx = x[order]
    i = 0
    while i < n:
        j = i
        while j + 1 < n and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def rank_correlation(a: Iterable[float], b: Iterable[float]) -> float | None:
    """Spearman's rank correlation (ties averaged); None when undefined (< 2 values or a constant)."""
    a = np.asarray(list(a), dtype=np.float64)
    b = np.asarray(list(b), dtype=np.float64)
    if a.size != b.size or a.size < 2:
        return None
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float(np.sum(ra * ra)) * float(np.sum(rb * rb)))
    if den == 0:
        return None
    return float(np.clip(np.sum(ra * rb) / den, -1.0, 1.0))


def sensitivity_ranks(values: list[float | None]) -> list[int | None]:
    """Rank 1 = most sensitive: 1 + the number of layers with a strictly larger value (None stays None)."""
    known = sorted((v for v in values if v is not None), reverse=True)
    out: list[int | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        # count strictly greater
        lo, hi = 0, len(known)
        while lo < hi:
            mid = (lo + hi) // 2
            if known[mid] > v:
                lo = mid + 1
            else:
                hi = mid
        out.append(lo + 1)
    return out


def running_max(values: list[float]) -> list[float]:
    out, m = [], 0.0
    for v in values:
        m = max(m, float(v))
        out.append(m)
    return out


# ---------------------------------------------------------------- samples
def load_samples_for(model_path: str | os.PathLike, graph, *, data=None, samples: int = 4,
                     input_shapes: dict[str, list[int]] | None = None, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``samples`` single-item batches: random data fitting the inputs, or rows of ``data``.

    ``data``: a ``.npz`` (arrays named like the inputs; a leading batch axis of
    B rows gives B samples), a ``.npy`` (single-input models) or a directory of
    such files (each file one or more samples). The first ``samples`` rows are used.
    """
    from sparsify_tui.profiles import inputs as inp

    src = graph if graph is not None else model_path
    specs = inp.input_specs(src, input_shapes)
    if data is None:
        # one item per sample, unless the model fixes its batch dimension to another size
        firsts = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
        batch = firsts.pop() if len(firsts) == 1 else 1
        return [inp.make_inputs(src, batch, input_shapes, seed=seed + i) for i in range(samples)]
    data = Path(data).expanduser()
    if not data.exists():
        raise ProfileError(f"{data}: no such data file or directory")
    files = sorted(p for p in data.iterdir() if p.suffix in (".npz", ".npy") and p.is_file()) if data.is_dir() else [data]
    if not files:
        raise ProfileError(f"{data} contains no .npz or .npy files")
    out: list[dict[str, np.ndarray]] = []
    for f in files:
        rows = _rows_in(f, specs)
        batch = inp.load_samples(src, f, batch_size=max(1, rows), input_shapes=input_shapes, specs=specs)
        for b in batch:
            for r in range(max(1, rows)):
                out.append({k: np.ascontiguousarray(v[r:r + 1]) if v.ndim else v for k, v in b.items()})
                if len(out) >= samples:
                    return out
    return out


def _rows_in(f: Path, specs) -> int:
    """How many samples (rows of the batch axis) the file ``f`` holds."""
    try:
        if f.suffix == ".npy":
            arr = np.load(str(f), mmap_mode="r", allow_pickle=False)
            arrays = {specs[0].name: arr} if specs else {}
        else:
            with np.load(str(f), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds on a bad file
        raise ProfileError(f"{f} is not a readable .npz/.npy file ({type(exc).__name__})") from None
    for s in specs:
        a = arrays.get(s.name)
        if a is None and len(arrays) == 1 and len(specs) == 1:
            a = next(iter(arrays.values()))
        if a is not None and a.ndim == len(s.shape) and a.ndim >= 1:
            return int(a.shape[0])
    return 1


# ---------------------------------------------------------------- one session, weights as inputs
@dataclass
class FedWeight:
    """A weight fed as a graph input: its input name, dense value and how to prune it."""

    name: str  # the graph input name fed (may differ from the original when renamed)
    original: str
    dense: np.ndarray
    layer_ids: list[str] = field(default_factory=list)
    magnitude: np.ndarray | None = None  # for quantized weights: |dequantized value|
    zero: Any = 0  # value a pruned element gets (zero point for quantized weights)
    quant: Any = None  # Dequant info when behind DequantizeLinear
    order: np.ndarray | None = None  # cached magnitude order
    existing_zeros: int = 0

    def magnitude_order(self) -> np.ndarray:
        if self.order is None:
            from sparsify_tui.optim.prune import magnitude_order

            self.order = magnitude_order(self.dense if self.magnitude is None else self.magnitude)
        return self.order

    def pruned(self, s: float) -> np.ndarray | None:
        """The weight pruned to ``s``; None when that leaves it unchanged (already sparse enough)."""
        from sparsify_tui.optim.prune import prune_array, pruned_count

        k = pruned_count(self.dense.size, s)
        if k <= self.existing_zeros:
            return None
        return prune_array(self.dense, s, zero=self.zero, order=self.magnitude_order())


def _ort():
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    import onnxruntime

    return onnxruntime


def session_options(cores: int | None = None, *, spinning: bool = True):
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if cores:
        so.intra_op_num_threads = int(cores)
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _rename_in_graph(graph, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` in a (sub)graph and the subgraphs nested in it."""
    import onnx

    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for node in graph.node:
        for i, t in enumerate(node.input):
            if t == old:
                node.input[i] = new
        for i, t in enumerate(node.output):
            if t == old:
                node.output[i] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_in_graph(attr.g, old, new)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _rename_in_graph(g, old, new)


def _all_names(model) -> set[str]:
    from sparsify_tui.optim.prune import iter_graphs

    names: set[str] = set()
    for _, g in iter_graphs(model.graph):
        names.update(i.name for i in g.initializer)
        names.update(i.name for i in g.input)
        for n in g.node:
            names.update(n.output)
    return names


class WeightFedModel:
    """The model with its prunable weights turned into graph inputs, and one session over it."""

    def __init__(self, model_path: str | os.PathLike, graph, *, cores: int | None = None,
                 layer_ids: Iterable[str] | None = None, model=None) -> None:
        from onnx import helper

        from sparsify_tui.optim.prune import (
            constant_tensor, find_dequant, find_tensor_site, load_model_copy, quant_magnitude_and_zero,
        )

        self.path = Path(model_path)
        if model is None:
            model, _, _ = load_model_copy(self.path)
        self.model = model
        self.weights: dict[str, FedWeight] = {}  # by fed input name
        self.layer_weight: dict[str, str] = {}  # layer id -> fed input name
        self.skipped: dict[str, str] = {}  # layer id -> why it is not measured
        wanted = set(layer_ids) if layer_ids is not None else None
        by_original: dict[str, FedWeight] = {}
        names = _all_names(model)
        main_inputs = {i.name for i in model.graph.input}
        for layer in graph.layers:
            if not layer.prunable or layer.weight is None:
                continue
            if wanted is not None and layer.id not in wanted:
                continue
            ref = layer.weight
            if ref.name in by_original:
                fw = by_original[ref.name]
                fw.layer_ids.append(layer.id)
                self.layer_weight[layer.id] = fw.name
                continue
            site = find_tensor_site(model, ref.name, ref.graph_path or "")
            if site is None:
                self.skipped[layer.id] = f"its weight {ref.name!r} was not found"
                continue
            dense = constant_tensor(model, ref.name, site.graph_path)
            if dense is None:
                self.skipped[layer.id] = f"its weight {ref.name!r} is not a constant tensor"
                continue
            fed_name = ref.name
            if site.graph_path:
                # a subgraph weight: lift it to a main-graph input, renamed if the name is taken
                if ref.name in main_inputs or any(
                        i.name == ref.name for i in model.graph.initializer) or any(
                        ref.name in n.output for n in model.graph.node):
                    fed_name = f"{ref.name}__sparsify_fed"
                    while fed_name in names:
                        fed_name += "_"
                    _rename_in_graph(site.graph, ref.name, fed_name)
                    names.add(fed_name)
            # remove the constant producer
            g = site.graph
            if site.kind == "initializer":
                for i, init in enumerate(g.initializer):
                    if init.name in (ref.name, fed_name):
                        del g.initializer[i]
                        break
            else:
                for i, n in enumerate(g.node):
                    if n.output and n.output[0] in (ref.name, fed_name) and n.op_type in ("Constant", "ConstantOfShape"):
                        del g.node[i]
                        break
            if site.graph_path:
                for i, vi in enumerate(g.input):  # an old-IR subgraph listing its initializer as input
                    if vi.name in (ref.name, fed_name):
                        del g.input[i]
                        break
            if fed_name not in main_inputs:
                elem = helper.np_dtype_to_tensor_dtype(dense.dtype)
                model.graph.input.append(helper.make_tensor_value_info(fed_name, elem, list(dense.shape)))
                main_inputs.add(fed_name)
            fw = FedWeight(fed_name, ref.name, np.ascontiguousarray(dense), [layer.id])
            if "DequantizeLinear" in (ref.transform or []):
                dq = find_dequant(model, ref.name, ref.graph_path or "") or find_dequant(model, fed_name)
                if dq is not None:
                    mag, zp = quant_magnitude_and_zero(fw.dense, dq)
                    fw.magnitude, fw.zero, fw.quant = mag, zp, dq
            if fw.magnitude is not None:
                fw.existing_zeros = int(np.count_nonzero(fw.magnitude == 0))
            else:
                fw.existing_zeros = int(fw.dense.size - np.count_nonzero(fw.dense))
            by_original[ref.name] = fw
            self.weights[fed_name] = fw
            self.layer_weight[layer.id] = fed_name
        self.cores = cores
        self.session = None
        self.output_names: list[str] = []
        self._dense_feeds = {name: fw.dense for name, fw in self.weights.items()}

    def build_session(self):
        from sparsify_tui.profiles.downstream import session_from_model

        try:
            self.session = session_from_model(self.model, session_options(self.cores))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(
                f"ONNX Runtime could not load {self.path.name} with its weights as inputs: {str(exc).splitlines()[0][:300]}"
            ) from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        return self.session

    def run(self, sample: dict[str, np.ndarray], replace: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """Outputs for ``sample`` with dense weights, except the fed inputs in ``replace``."""
        if self.session is None:
            self.build_session()
        feeds = dict(self._dense_feeds)
        if replace:
            feeds.update(replace)
        feeds.update(sample)
        try:
            return self.session.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"ONNX Runtime failed to run {self.path.name}: {str(exc).splitlines()[0][:300]}") from None


def check_cancel(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("the profile was cancelled; finished layers are kept")


ProgressFn = Callable[[dict], Any]


def emit_progress(on_progress: ProgressFn | None, done: float, total: float, label: str = "") -> None:
    if on_progress is not None:
        on_progress({"event": "progress", "done": done, "total": total, "label": label})


def model_error_for(path, exc: Exception) -> ModelError:
    return ModelError(f"{path} could not be profiled: {exc}")
