"""Channel pruning of an ONNX model: a plan, which channels go, and the repair of the layers that read them.

The groups come from :mod:`sparsify_tui.onnxkit.channels` (channels that must go together, e.g. both
sides of a residual Add); this module decides how many channels of each group stay and which:

* **plan**: a fraction removed per group id, or one fraction for every prunable group
  (:func:`plan_for_flops` finds the fraction that removes a share of the model's FLOPs). With
  ``round_to`` N, the channels kept in a group are a multiple of N (nearest, at least N): INT8 and
  bf16 kernels run fastest on such counts. A whole group is never removed, and a group of N
  channels or fewer stays dense (:attr:`ChannelResult.notes` says which).
* ``l2`` (the baseline, as onnxsim and torch-pruning's magnitude pruners do): per group, the channels
  whose filters have the smallest L2 norm, summed in squares over the group's producers; where a
  BatchNormalization reads a producer directly, each filter's norm is scaled by that channel's
  ``|gamma| / sqrt(var + eps)`` (the scale the channel leaves the BN with). Nothing is repaired.
* ``reconstruct``: the dense model runs on calibration samples; a channel's importance is what it
  contributes to the layers that read it, ``sum over consumers of ||W[:, c]||^2 * E[x_c^2]`` (the
  squared norm of the consumer's weights on that input channel times the channel's mean square).
  The least important go; then every *consumer* (a Conv, Gemm or MatMul reading a pruned group; a
  depthwise convolution is part of its group, the dense layer after it is the consumer) is refit by
  ridge least squares to reproduce the **dense** model's outputs of that layer from the channels it
  still reads: ``[W b] = Y X^T (X X^T + lambda I)^-1`` over im2col columns (Conv) or rows (Gemm,
  MatMul; through Flatten, blocks of features), ``X`` the pruned model's inputs of the layer with a
  row of ones (so the bias moves too: a Conv or Gemm without one gets one; a MatMul's bias is the
  constant Add after it, when there is one), ``Y`` the dense layer's outputs. The refits run
  *sequentially* in graph order: the pruned model is cut into segments, one per consumer, and run
  segment by segment on all samples, so each consumer is fit on inputs that already carry the
  refits before it (what makes reconstruction beat ``l2``), at the cost of one dense and one pruned
  forward pass. BatchNormalization after a consumer needs no change: each output channel is fit on
  its own, and the BN's per-channel affine map of a perfect fit is perfect too.

Memory stays bounded: per consumer, ``X X^T`` and ``Y X^T`` are accumulated in float64 in chunks, and
at most :data:`COLUMNS_PER_INPUT` columns per input row (spread over the samples) are used; the two
frontiers (the tensors between segments) hold one activation set per sample.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sparsify_tui.errors import CancelledError, EngineError, UsageError
from sparsify_tui.optim import reconstruct as rc

METHODS = ("l2", "reconstruct")
COLUMNS_PER_INPUT = 16  # columns of X (samples x positions) used per row of X, at least MIN_COLUMNS
MIN_COLUMNS = 4096
# Importance variants measured on the corpus (output change after the refit, 8-32 calibration samples):
# weighting the consumer's rows by a following BN's scale, or using Var[x_c] instead of E[x_c^2], did not
# help consistently (better on one plan, worse on the other), so both are off.
BN_WEIGHTED = False
CENTERED = False
MIN_RATIO = 1  # a layer's weights are refit only from at least this many columns per input row


def check_method(method: str) -> str:
    m = str(method or "l2").strip().lower()
    if m not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)} with --structure channels, got {method!r}")
    return m


def check_round_to(n: Any) -> int:
    try:
        v = int(n)
    except (TypeError, ValueError):
        raise UsageError(f"--round-to must be a whole number of channels (1 for no rounding), got {n!r}") from None
    if v < 1 or v > 4096:
        raise UsageError(f"--round-to must be between 1 and 4096, got {n!r}")
    return v


@dataclass
class ChannelResult:
    model: Any  # the pruned ModelProto (physically smaller)
    method: str
    removed: dict[str, list[int]]  # group id -> removed channel indices
    kept: dict[str, int]  # group id -> channels kept (pruned groups only)
    round_to: int
    notes: list[str] = field(default_factory=list)
    refit_layers: int = 0
    calibration_samples: int = 0
    seconds: float = 0.0

    def info(self) -> dict[str, Any]:
        return {"method": self.method, "round_to": self.round_to, "pruned_groups": len(self.removed),
                "removed_channels": sum(len(v) for v in self.removed.values()),
                "kept_channels": dict(self.kept), "refit_layers": self.refit_layers,
                "calibration_samples": self.calibration_samples, "notes": list(self.notes),
                "seconds": round(self.seconds, 3) if math.isfinite(self.seconds) else None}


# ---------------------------------------------------------------- preparing the model
def opset_of(model: Any) -> int:
    return max([int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")] or [13])


def with_input_shapes(model: Any, input_shapes: Mapping[str, Sequence[int]]) -> Any:
    """A copy of ``model`` whose graph inputs named in ``input_shapes`` have those fixed dimensions."""
    out = type(model)()
    out.CopyFrom(model)
    for vi in out.graph.input:
        shp = input_shapes.get(vi.name)
        if shp is None or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(shp):
            continue
        for d, v in zip(dims, shp):
            d.Clear()
            d.dim_value = int(v)
    return out


def sample_shapes(samples: Sequence[Mapping[str, np.ndarray]] | None) -> dict[str, list[int]]:
    return {k: list(np.shape(v)) for k, v in (samples[0].items() if samples else ())}


def prepare(model: Any, shapes: Mapping[str, Any] | None = None,
            input_shapes: Mapping[str, Sequence[int]] | None = None) -> tuple[Any, dict[str, Any], Any]:
    """(folded copy of ``model``, its shapes, its ChannelMap): what every step below reads.

    ``input_shapes`` fixes dynamic input dimensions for the shape inference only (the groups of a
    transformer need its sequence length known; the pruned model keeps its dynamic inputs)."""
    from sparsify_tui.analysis.shapes import infer
    from sparsify_tui.onnxkit.channels import channel_map, fold_constants

    if shapes is None:
        try:
            fixed = with_input_shapes(model, input_shapes) if input_shapes else model
            shapes = infer(fixed, opset_of(model))[1]
        except Exception:  # noqa: BLE001 - onnx's own inference (inside channel_map) is the fallback
            shapes = None
    dense = type(model)()
    dense.CopyFrom(model)
    constants_to_initializers(dense)
    fold_constants(dense)
    return dense, shapes, channel_map(dense, shapes)


def constants_to_initializers(model) -> int:
    """Turn the main graph's Constant nodes, and ConstantOfShape nodes of a constant shape, into initializers of
    the same name, in place (a weight stored in a Constant would otherwise be computed once, before the segment
    that refits it; removal turns each ConstantOfShape weight it slices into an initializer, so without this the
    pruned model would hold fewer nodes than the dense one and the refit's segments would not line up).
    Returns how many."""
    from sparsify_tui.onnxkit.channels import nodes_to_initializers
    from sparsify_tui.onnxkit.tensors import constant_node_value, fills_to_initializers

    n = nodes_to_initializers(
        model, lambda n: constant_node_value(n) if n.op_type == "Constant" and n.domain in ("", "ai.onnx") else None)
    return n + fills_to_initializers(model)


# ---------------------------------------------------------------- the plan
def kept_count(channels: int, fraction: float, round_to: int = 1) -> int:
    """Channels kept of a group of ``channels`` when ``fraction`` of them is removed, rounded to a
    multiple of ``round_to`` (nearest, at least ``round_to``; a group of ``round_to`` or fewer stays dense)."""
    c = int(channels)
    f = min(max(float(fraction), 0.0), 1.0)
    keep = c - int(round(f * c))
    if round_to > 1:
        if c <= round_to:
            return c
        keep = int(round_to * math.floor(keep / round_to + 0.5))
        keep = max(round_to, keep)
    keep = max(1, min(c, keep))
    return keep


def plan_counts(groups, plan: float | Mapping[str, float], round_to: int = 1) -> tuple[dict[str, int], list[str]]:
    """{group id: channels kept} for the groups the plan prunes, and notes (groups left dense and why)."""
    by_id = {g.id: g for g in groups}
    if isinstance(plan, Mapping):
        fractions = {}
        for gid, f in plan.items():
            g = by_id.get(gid)
            if g is None:
                raise UsageError(f"no channel group {gid!r} in this model")
            if not g.prunable:
                raise UsageError(f"channel group {gid!r} cannot be pruned: {'; '.join(g.reasons)}")
            fractions[gid] = float(f)
    else:
        fractions = {g.id: float(plan) for g in groups if g.prunable}
    for gid, f in fractions.items():
        if not 0.0 <= f < 1.0:
            raise UsageError(f"the fraction of channels removed from {gid!r} must be in [0, 1), got {f}")
    kept, small = {}, []
    for gid, f in fractions.items():
        g = by_id[gid]
        k = kept_count(g.channels, f, round_to)
        if round_to > 1 and g.channels <= round_to and f > 0:
            small.append(gid)
        if k < g.channels:
            kept[gid] = k
    notes = []
    if small:
        notes.append(f"{len(small)} group(s) of {round_to} channels or fewer stay dense (--round-to {round_to}): "
                     + ", ".join(small[:5]) + (" ..." if len(small) > 5 else ""))
    return kept, notes


def kept_share(lay, cmap, kept: Mapping[str, int], sizes: Mapping[str, int]) -> float:
    """The share of a layer's work (FLOPs or weights) left when each group keeps ``kept[group]`` of its
    ``sizes[group]`` channels: the share of its output channels kept times the share of its input channels
    kept (a depthwise convolution: of its channels); 1.0 for a layer no group touches."""

    def share(positions) -> float:
        if not positions:
            return 1.0
        return sum(kept.get(gid, sizes[gid]) / sizes[gid] for gid, _ in positions) / len(positions)

    key = lay.outputs[0] if lay.outputs else None
    s = 1.0
    if key in cmap.outputs:
        gid = cmap.outputs[key]
        s *= kept.get(gid, sizes[gid]) / sizes[gid]
    if key in cmap.inputs:
        s *= share(cmap.inputs[key][3])
    if key in cmap.depthwise:
        s *= share(cmap.depthwise[key])
    return s


def estimated_flops(graph, cmap, kept: Mapping[str, int]) -> tuple[float, float]:
    """(dense, pruned) FLOPs of the weighted layers' estimate: each Conv/Gemm/MatMul scaled by the share of
    its output and input channels kept, each depthwise convolution by the share of its channels kept; other
    layers as they are (:func:`kept_share`)."""
    sizes = {g.id: g.channels for g in cmap.groups}
    dense = pruned = 0.0
    for lay in graph.layers:
        f = float(lay.flops or 0)
        dense += f
        pruned += f * kept_share(lay, cmap, kept, sizes)
    return dense, pruned


def plan_for_flops(graph, cmap, target: float, round_to: int = 1) -> float:
    """The one fraction of every prunable group's channels whose removal cuts the estimated FLOPs
    (:func:`estimated_flops`) by ``target`` (closest from below or above, bisection)."""
    if not 0.0 < float(target) < 1.0:
        raise UsageError(f"the FLOPs reduction must be between 0 and 1, got {target}")
    dense = estimated_flops(graph, cmap, {})[0] or 1.0

    def reduction(f: float) -> float:
        kept, _ = plan_counts(cmap.groups, f, round_to)
        return 1.0 - estimated_flops(graph, cmap, kept)[1] / dense

    lo, hi = 0.0, 0.99
    if reduction(hi) < target:
        raise UsageError(f"removing channels cannot cut {target:.0%} of this model's FLOPs "
                         f"(at most {reduction(hi):.0%}: many of its groups cannot be pruned)")
    best = hi
    for _ in range(30):
        mid = (lo + hi) / 2
        if reduction(mid) >= target:
            hi = best = mid
        else:
            lo = mid
    return best


def refine_for_flops(prepared, graph, target: float, round_to: int = 1, fraction: float | None = None,
                     input_shapes=None, steps: int = 2) -> tuple[float, float]:
    """(fraction, FLOPs reduction): :func:`plan_for_flops`'s fraction corrected by the FLOPs the analysis
    counts in the pruned model (activations, pooling and additions shrink too, which the estimate leaves
    out): up to ``steps`` secant steps on the measured reduction; the fraction closest to ``target`` wins."""
    from sparsify_tui.analysis import analyze
    from sparsify_tui.onnxkit.channels import remove_channels

    dense, shapes, cmap = prepared
    base = graph.flops or graph.flops_known
    sizes = {g.id: g.channels for g in cmap.groups}

    def actual(f: float) -> float:
        kept, _ = plan_counts(cmap.groups, f, round_to)
        removed = {gid: list(range(sizes[gid] - k)) for gid, k in kept.items()}
        g = analyze(remove_channels(dense, removed, shapes), input_shapes)
        return 1.0 - (g.flops or g.flops_known) / base if base else 0.0

    f0 = plan_for_flops(graph, cmap, target, round_to) if fraction is None else float(fraction)
    tried = [(f0, actual(f0))]
    f_prev, r_prev = 0.0, 0.0
    for _ in range(steps):
        f, r = tried[-1]
        if abs(r - target) < 0.005 or r == r_prev:
            break
        nxt = f + (target - r) * (f - f_prev) / (r - r_prev)
        nxt = min(0.99, max(0.0, nxt))
        f_prev, r_prev = f, r
        tried.append((nxt, actual(nxt)))
    return min(tried, key=lambda t: abs(t[1] - target))


# ---------------------------------------------------------------- ranking
def _value(model, name: str) -> np.ndarray:
    from sparsify_tui.onnxkit.tensors import constant_tensor

    v = constant_tensor(model, name)
    if v is None:
        raise UsageError(f"{name!r} is not a constant of the model")
    return np.asarray(v, dtype=np.float64)


def l2_scores(dense, cmap) -> dict[str, np.ndarray]:
    """{group id: per-channel score}: sqrt of the summed squared filter norms of the group's producers (each
    times the BN scale |gamma|/sqrt(var+eps) of a BatchNormalization reading the producer directly)."""
    from onnx import helper

    bn_of = {}
    for n in dense.graph.node:
        if n.op_type == "BatchNormalization" and n.input:
            bn_of.setdefault(n.input[0], n)
    sizes = {g.id: g.channels for g in cmap.groups}
    out = {gid: np.zeros(c) for gid, c in sizes.items()}
    for key, gid in cmap.outputs.items():
        sp = cmap.spaces[key]
        w = _value(dense, sp.weight)
        sq = np.sum(np.moveaxis(w, sp.weight_axis, 0).reshape(w.shape[sp.weight_axis], -1) ** 2, axis=1)
        bn = bn_of.get(key)
        if bn is not None and len(bn.input) >= 5:
            eps = next((helper.get_attribute_value(a) for a in bn.attribute if a.name == "epsilon"), 1e-5)
            try:
                gamma, var = _value(dense, bn.input[1]).reshape(-1), _value(dense, bn.input[4]).reshape(-1)
                if gamma.size == sq.size:
                    sq = sq * gamma ** 2 / (var + eps)
            except UsageError:
                pass
        if sq.size == out[gid].size:
            out[gid] += sq
    return {gid: np.sqrt(v) for gid, v in out.items()}


def _session(model_bytes: bytes, cores: int | None = None, optimize: bool = True):
    from sparsify_tui.engines.ort import bytes_session

    return bytes_session(model_bytes, cores, optimize=optimize, purpose="prune its channels")


def _feed(sess, sample: Mapping[str, np.ndarray]) -> dict:
    names = {i.name for i in sess.get_inputs()}
    return {k: v for k, v in sample.items() if k in names}


def _check(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("channel pruning was cancelled; no file was written")


def _node_of(model) -> dict[str, Any]:
    return {n.output[0]: n for n in model.graph.node if n.output}


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _in_axis(node) -> int:
    if node.op_type == "Conv":
        return 1
    if node.op_type == "ConvTranspose":
        return 0
    if node.op_type == "Gemm":
        return 1 if int(_attr(node, "transB", 0)) else 0
    return 0


def _bn_scales(dense) -> dict[str, np.ndarray]:
    """{tensor: |gamma| / sqrt(var + eps)} of each BatchNormalization reading that tensor directly."""
    from onnx import helper

    out = {}
    for n in dense.graph.node:
        if n.op_type == "BatchNormalization" and len(n.input) >= 5 and n.input[0] not in out:
            eps = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "epsilon"), 1e-5)
            try:
                gamma, var = _value(dense, n.input[1]).reshape(-1), _value(dense, n.input[4]).reshape(-1)
            except UsageError:
                continue
            out[n.input[0]] = np.abs(gamma) / np.sqrt(var + eps)
    return out


def importance_scores(dense, cmap, samples: Sequence[Mapping[str, np.ndarray]], *, cores=None,
                      cancel=None) -> dict[str, np.ndarray]:
    """{group id: per-channel importance}: sum over the consumers reading a channel of
    ``||W[:, c]||^2 * E[x_c^2]`` (mean over samples and positions) from one dense pass (see
    :data:`BN_WEIGHTED` and :data:`CENTERED` for the variants). A group no consumer reads is ranked by
    :func:`l2_scores`."""
    from sparsify_tui.onnxkit.weightview import with_outputs

    nodes = _node_of(dense)
    cons = {k: v for k, v in cmap.inputs.items() if k in nodes}
    acts = sorted({nodes[k].input[0] for k in cons})
    sess = _session(with_outputs(dense, acts), cores)
    s1: dict[str, np.ndarray] = {}
    s2: dict[str, np.ndarray] = {}
    for s in samples:
        _check(cancel)
        try:
            got = dict(zip(acts, sess.run(acts, _feed(sess, s))))
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"ONNX Runtime failed on a calibration sample: {str(exc).splitlines()[0][:300]}") from None
        for k in cons:
            node = nodes[k]
            x = np.asarray(got[node.input[0]], dtype=np.float64)
            x = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).T if node.op_type in ("Conv", "ConvTranspose") \
                else x.reshape(-1, x.shape[-1])
            s1[k] = s1.get(k, 0) + np.mean(x, axis=0) / len(samples)
            s2[k] = s2.get(k, 0) + np.mean(x ** 2, axis=0) / len(samples)
        del got
    bn = _bn_scales(dense)
    sizes = {g.id: g.channels for g in cmap.groups}
    out = {gid: np.zeros(c) for gid, c in sizes.items()}
    seen = set()
    for k, (wname, axis, block, positions) in cons.items():
        w = _value(dense, wname)
        w = np.moveaxis(w, axis, 0)  # (inputs, ...) with the output rows on the axis after for Conv
        scale = bn.get(k) if BN_WEIGHTED else None
        if scale is not None:
            out_axis = 1 if nodes[k].op_type == "Conv" and axis == 1 else (w.ndim - 1)
            if w.shape[out_axis] == scale.size:
                shape = [1] * w.ndim
                shape[out_axis] = scale.size
                w = w * scale.reshape(shape)
        col = np.sum(w.reshape(w.shape[0], -1) ** 2, axis=1)  # per input feature
        var = s2[k] if not CENTERED else np.maximum(s2[k] - s1[k] ** 2, 0.0)
        contrib = (col * var).reshape(len(positions), block).sum(axis=1)
        for (gid, ch), c in zip(positions, contrib):
            out[gid][ch] += c
            seen.add(gid)
    l2 = None
    for gid in sizes:
        if gid not in seen:
            l2 = l2 if l2 is not None else l2_scores(dense, cmap)
            out[gid] = l2[gid]
    return out


def choose(scores: Mapping[str, np.ndarray], kept: Mapping[str, int]) -> dict[str, list[int]]:
    """{group id: the removed channels}: the lowest-scored, sorted (ties: the later channel goes first)."""
    out = {}
    for gid, k in kept.items():
        s = np.asarray(scores[gid])
        order = np.argsort(-s, kind="stable")  # highest first
        out[gid] = sorted(int(i) for i in order[k:])
    return out


# ---------------------------------------------------------------- running a model segment by segment
def _reads(node) -> set[str]:
    from sparsify_tui.onnxkit.graphs import iter_graphs, subgraphs

    names = {i for i in node.input if i}
    for sg in subgraphs(node):
        for _, g in iter_graphs(sg):
            for n in g.node:
                names.update(i for i in n.input if i)
    return names


class Segments:
    """A model cut before the nodes at ``cuts`` (positions in its node list), run one segment at a time on
    per-sample frontiers ({tensor: [array per sample]}); a segment's session is built when it runs, so
    weights changed before that are used."""

    def __init__(self, model, cuts: Sequence[int], extra_outputs: Mapping[int, Sequence[str]] | None = None):
        self.model = model
        nodes = list(model.graph.node)
        self.bounds = [0, *sorted(set(int(c) for c in cuts)), len(nodes)]
        seg_of: dict[str, int] = {}
        self.reads: list[set[str]] = []
        self.produced: list[set[str]] = []
        last_read: dict[str, int] = {}
        for s in range(len(self.bounds) - 1):
            r, p = set(), set()
            for n in nodes[self.bounds[s]:self.bounds[s + 1]]:
                r |= _reads(n) - p
                p.update(o for o in n.output if o)
            for o in p:
                seg_of[o] = s
            for name in r:
                last_read[name] = s
            self.reads.append(r)
            self.produced.append(p)
        self.last_read = last_read
        self.extra = {int(k): list(v) for k, v in (extra_outputs or {}).items()}
        self.nodes = nodes

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def outputs(self, s: int) -> list[str]:
        later = {n for n in self.produced[s] if self.last_read.get(n, -1) > s}
        return sorted(later | set(self.extra.get(s, [])))

    def run(self, s: int, frontier: dict[str, list[np.ndarray]], n: int, cores=None, cancel=None) -> dict:
        """Run segment ``s`` on the ``n`` samples of ``frontier`` (updated in place); returns the frontier."""
        from onnx import helper

        nodes = self.nodes[self.bounds[s]:self.bounds[s + 1]]
        outs = self.outputs(s)
        if not nodes or not outs:
            return frontier
        inits = {i.name: i for i in self.model.graph.initializer}  # refits may have added biases
        reads, made = set(), set()
        for nd in nodes:
            reads |= _reads(nd) - made
            made.update(o for o in nd.output if o)
        ins = sorted(r for r in reads if r not in inits and r in frontier)
        inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(frontier[name][0].dtype), None)
                  for name in ins]
        g = helper.make_graph(nodes, f"segment{s}", inputs, [helper.make_empty_tensor_value_info(o) for o in outs],
                              [inits[r] for r in sorted(reads) if r in inits])
        m = helper.make_model(g, opset_imports=list(self.model.opset_import))
        m.ir_version = self.model.ir_version
        m.functions.extend(self.model.functions)
        sess = _session(m.SerializeToString(), cores)
        results: dict[str, list[np.ndarray]] = {o: [] for o in outs}
        for i in range(n):
            _check(cancel)
            try:
                got = sess.run(outs, {name: frontier[name][i] for name in ins})
            except Exception as exc:  # noqa: BLE001
                raise EngineError(f"ONNX Runtime failed on a calibration sample: "
                                  f"{str(exc).splitlines()[0][:300]}") from None
            for o, v in zip(outs, got):
                results[o].append(v)
        frontier.update(results)
        for name in list(frontier):
            if self.last_read.get(name, -1) <= s and name not in self.extra.get(s, []):
                del frontier[name]
        return frontier


# ---------------------------------------------------------------- refitting one consumer
@dataclass
class _Fit:
    h: np.ndarray  # (d+1, d+1)  X X^T with the ones row last
    b: np.ndarray  # (rows, d+1) Y X^T
    columns: int = 0


def _columns(node, x: np.ndarray, w_shape) -> np.ndarray:
    """(d, P) input columns of ``node`` (a Conv with group 1, Gemm or MatMul)."""
    if node.op_type == "Conv":
        kernel = list(w_shape[2:])
        pads = _attr(node, "pads")
        auto = _attr(node, "auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else (auto or "NOTSET")
        return rc.conv_columns(x, kernel, strides=_attr(node, "strides"), pads=pads,
                               dilations=_attr(node, "dilations"), group=1, auto_pad=auto)[0]
    d = w_shape[1] if (node.op_type == "Gemm" and int(_attr(node, "transB", 0))) else w_shape[0]
    return rc.matmul_columns(x, d, transposed=bool(node.op_type == "Gemm" and int(_attr(node, "transA", 0))))[0]


def _outputs_as_rows(node, y: np.ndarray) -> np.ndarray:
    if node.op_type == "Conv":
        return np.moveaxis(y, 1, 0).reshape(y.shape[1], -1)
    return y.reshape(-1, y.shape[-1]).T


def _bias_add(model, node, rows: int):
    """The Add after a MatMul that adds a constant vector of ``rows`` used only there: (Add node, input index)."""
    from sparsify_tui.onnxkit.tensors import constant_tensor

    users = [n for n in model.graph.node if node.output[0] in n.input]
    if len(users) != 1 or users[0].op_type != "Add":
        return None
    add = users[0]
    other = 1 if add.input[0] == node.output[0] else 0
    v = constant_tensor(model, add.input[other])
    uses = sum(1 for n in model.graph.node for i in n.input if i == add.input[other])
    if v is None or v.size != rows or v.shape[-1] != rows or uses != 1:
        return None
    return add, other


def _refitable(node) -> str | None:
    if node.op_type == "Conv":
        return None if int(_attr(node, "group", 1)) == 1 and len(node.input) > 1 else "a grouped convolution"
    if node.op_type == "Gemm":
        if int(_attr(node, "transA", 0)):
            return "a Gemm with transA"
        return None
    if node.op_type == "MatMul":
        return None
    return f"{node.op_type} layers are not refit"


def _solve(fit: _Fit, w0: np.ndarray, intercept: bool) -> np.ndarray:
    """Ridge solution (rows, d+1) pulled toward the current weights ``w0`` (rows, d+1; the last column the
    intercept): ``min ||Y - W X||^2 + lambda ||W - W0||^2`` (a layer that sees few columns, such as a
    squeeze-excitation conv after global pooling, stays near its sliced weights rather than near zero)."""
    from sparsify_tui.optim.calibrated import damping

    h, b = fit.h, fit.b
    if fit.h.shape[0] * MIN_RATIO > fit.columns:
        # too few columns to refit the weights without following the calibration samples: only the bias
        # moves (the mean of what the kept channels miss), when the layer has one
        out = w0.copy()
        if intercept:
            n = max(float(fit.h[-1, -1]), 1.0)
            out[:, -1] = (fit.b[:, -1] - w0[:, :-1] @ fit.h[:-1, -1]) / n
        return out
    if not intercept:
        h, b, w0 = h[:-1, :-1], b[:, :-1], w0[:, :-1]
    d = h.shape[0]
    diag = np.diag(h)
    mean = float(np.mean(diag[:-1] if intercept and d > 1 else diag)) or 1.0
    lam = damping(d, fit.columns) * mean
    reg = np.full(d, lam)
    if intercept:
        reg[-1] = lam * 1e-3
    sol = np.linalg.solve(h + np.diag(reg), (b + w0 * reg[None, :]).T).T
    if not intercept:
        sol = np.concatenate([sol, np.zeros((sol.shape[0], 1))], axis=1)
    return sol


def _current(model, node, w: np.ndarray) -> np.ndarray:
    """The layer's weights in rows form with its bias (or 0) as the last column: (rows, d+1)."""
    from sparsify_tui.onnxkit.tensors import constant_tensor

    if node.op_type == "Conv":
        rows = w.reshape(w.shape[0], -1)
    elif node.op_type == "Gemm" and int(_attr(node, "transB", 0)):
        rows = w * float(_attr(node, "alpha", 1.0))
    else:
        rows = w.T * (float(_attr(node, "alpha", 1.0)) if node.op_type == "Gemm" else 1.0)
    bias = np.zeros(rows.shape[0])
    if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
        b = constant_tensor(model, node.input[2])
        if b is not None:
            beta = float(_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
            bias = np.broadcast_to(np.asarray(b, dtype=np.float64).reshape(-1) * beta, (rows.shape[0],))
    return np.concatenate([np.asarray(rows, dtype=np.float64), bias[:, None]], axis=1)


def _write_fit(model, node, sol: np.ndarray, w_shape, dtype, bias_add) -> None:
    from onnx import numpy_helper

    from sparsify_tui.onnxkit.tensors import constant_tensor, find_tensor_site, read_site, write_site

    rows = sol.shape[0]
    w, c = sol[:, :-1], sol[:, -1]
    ir = int(model.ir_version)
    site = find_tensor_site(model, node.input[1])
    if node.op_type == "Conv":
        write_site(site, w.reshape(w_shape).astype(dtype), ir)
    elif node.op_type == "Gemm":
        alpha = float(_attr(node, "alpha", 1.0))
        w = w / alpha
        write_site(site, (w if int(_attr(node, "transB", 0)) else w.T).astype(dtype), ir)
    else:
        write_site(site, w.T.astype(dtype), ir)
    if node.op_type in ("Conv", "Gemm"):
        beta = float(_attr(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
        old = constant_tensor(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if old is not None and old.size == rows and sum(i == node.input[2] for n in model.graph.node
                                                        for i in n.input) == 1:
            bsite = find_tensor_site(model, node.input[2])
            write_site(bsite, (c / beta).reshape(old.shape).astype(old.dtype), ir)
        else:
            name = f"{node.input[1]}__refit_bias"
            while name in {i.name for i in model.graph.initializer}:
                name += "_"
            model.graph.initializer.append(numpy_helper.from_array((c / beta).astype(dtype), name))
            while len(node.input) < 2:
                node.input.append("")
            if len(node.input) == 2:
                node.input.append(name)
            else:
                node.input[2] = name
    elif bias_add is not None:
        add, k = bias_add
        bsite = find_tensor_site(model, add.input[k])
        old = read_site(model, bsite)
        write_site(bsite, (old.astype(np.float64) + c.reshape(old.shape)).astype(old.dtype), ir)


def _kept_rows(cmap, key: str, removed: Mapping[str, list[int]], rows: int) -> np.ndarray:
    gid = cmap.outputs.get(key)
    gone = set(removed.get(gid, [])) if gid is not None else set()
    return np.asarray([r for r in range(rows) if r not in gone], dtype=np.int64)


def refit_consumers(dense, pruned, cmap, removed: Mapping[str, list[int]], samples, *, cores=None, seed: int = 0,
                    on_progress: Callable[[dict], Any] | None = None, cancel=None) -> tuple[int, list[str]]:
    """Refit, in place in ``pruned``, each consumer of a removed group to reproduce ``dense``'s outputs of that
    layer, sequentially (see the module doc). Returns (layers refit, notes)."""
    from sparsify_tui.onnxkit.tensors import constant_tensor
    from sparsify_tui.progress import emit_progress

    pn, dn = _node_of(pruned), _node_of(dense)
    pos = {n.output[0]: i for i, n in enumerate(pruned.graph.node) if n.output}
    dpos = {n.output[0]: i for i, n in enumerate(dense.graph.node) if n.output}
    gone = {gid for gid, idx in removed.items() if idx}
    notes: list[str] = []
    todo = []
    for key, (_w, _a, _b, positions) in cmap.inputs.items():
        if key not in pn or key not in dn or not any(gid in gone for gid, _ in positions):
            continue
        why = _refitable(pn[key])
        w_rank = len(constant_tensor(pruned, pn[key].input[1]).shape)
        if why is None and pn[key].op_type == "Conv" and w_rank not in (3, 4):
            why = "only 1-D and 2-D convolutions are refit"
        if why:
            notes.append(f"{key}: not refit ({why})")
            continue
        if pos[key] != dpos[key]:
            raise EngineError("the pruned model's nodes are not in the dense model's order")
        todo.append(key)
    todo.sort(key=lambda k: pos[k])
    if not todo:
        return 0, notes
    cuts = [pos[k] for k in todo]
    seg_p = Segments(pruned, cuts)
    seg_d = Segments(dense, cuts, {i + 1: [k] for i, k in enumerate(todo)})
    n = len(samples)
    inputs = [i.name for i in pruned.graph.input]
    fp = {name: [np.asarray(s[name]) for s in samples] for name in inputs if all(name in s for s in samples)}
    fd = {k: list(v) for k, v in fp.items()}
    seg_p.run(0, fp, n, cores, cancel)
    seg_d.run(0, fd, n, cores, cancel)
    rng = np.random.default_rng(seed)
    done = 0
    for j, key in enumerate(todo, start=1):
        _check(cancel)
        seg_d.run(j, fd, n, cores, cancel)
        node = pn[key]
        w = constant_tensor(pruned, node.input[1])
        w_shape = tuple(w.shape)
        xs, ys = fp[node.input[0]], fd[key]
        if seg_d.last_read.get(key, -1) <= j:
            del fd[key]
        rows_dense = ys[0].shape[1] if node.op_type == "Conv" else ys[0].shape[-1]
        kept = _kept_rows(cmap, key, removed, rows_dense)
        bias_add = _bias_add(pruned, node, len(kept)) if node.op_type == "MatMul" else None
        fit = None
        for x, y in zip(xs, ys):
            cols = _columns(node, np.asarray(x, dtype=np.float32), w_shape)
            yr = _outputs_as_rows(node, np.asarray(y))[kept]
            d = cols.shape[0]
            if fit is None:
                fit = _Fit(np.zeros((d + 1, d + 1)), np.zeros((len(kept), d + 1)))
                cap = max(MIN_COLUMNS, COLUMNS_PER_INPUT * (d + 1))
                per = max(1, -(-cap // n))
            p = cols.shape[1]
            if p > per:
                pick = np.sort(rng.choice(p, size=per, replace=False))
                cols, yr = cols[:, pick], yr[:, pick]
            for a in range(0, cols.shape[1], rc.CHUNK_COLUMNS):
                xc = np.asarray(cols[:, a:a + rc.CHUNK_COLUMNS], dtype=np.float64)
                xc = np.concatenate([xc, np.ones((1, xc.shape[1]))], axis=0)
                fit.h += xc @ xc.T
                fit.b += np.asarray(yr[:, a:a + rc.CHUNK_COLUMNS], dtype=np.float64) @ xc.T
            fit.columns += cols.shape[1]
        intercept = node.op_type in ("Conv", "Gemm") or bias_add is not None
        w0 = _current(pruned, node, w)
        sol = _solve(fit, w0, intercept)
        _write_fit(pruned, node, sol, w_shape, w.dtype, bias_add)
        done += 1
        emit_progress(on_progress, done, len(todo), f"refit {key} ({len(kept)} x {fit.h.shape[0] - 1})")
        if j < len(seg_p):
            seg_p.run(j, fp, n, cores, cancel)
    return done, notes


def _inputs_for_initializers(model) -> None:
    """Before IR 4 every main-graph initializer is a graph input too: list the ones a refit added (a bias)."""
    from onnx import helper

    if int(model.ir_version) >= 4:
        return
    listed = {vi.name for vi in model.graph.input}
    for init in model.graph.initializer:
        if init.name not in listed:
            model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))


# ---------------------------------------------------------------- the whole step
def prune_channels(model, plan: float | Mapping[str, float], *, method: str = "l2", round_to: int = 1,
                   samples: Sequence[Mapping[str, np.ndarray]] | None = None, shapes: Mapping[str, Any] | None = None,
                   removed: Mapping[str, Sequence[int]] | None = None, cores: int | None = None,
                   on_progress: Callable[[dict], Any] | None = None, cancel=None, prepared=None) -> ChannelResult:
    """Remove channels of ``model`` (a ModelProto, not changed) by ``plan`` with ``method``.

    ``removed`` (optional) fixes which channels go (the same channels for two methods' comparison);
    ``prepared`` is :func:`prepare`'s result when the caller already has it."""
    from sparsify_tui.onnxkit.channels import remove_channels
    from sparsify_tui.progress import emit_progress

    t0 = time.perf_counter()
    method = check_method(method)
    round_to = check_round_to(round_to)
    dense, shapes, cmap = prepared if prepared is not None else prepare(model, shapes, sample_shapes(samples))
    kept, notes = plan_counts(cmap.groups, plan, round_to)
    if method == "reconstruct" and not samples:
        raise UsageError("--method reconstruct needs calibration samples")
    if removed is None:
        if method == "l2":
            scores = l2_scores(dense, cmap)
        else:
            emit_progress(on_progress, 0, 1, f"ranking channels on {len(samples)} calibration samples")
            scores = importance_scores(dense, cmap, samples, cores=cores, cancel=cancel)
        removed = choose(scores, kept)
    removed = {k: sorted(int(i) for i in v) for k, v in removed.items() if len(v)}
    pruned = remove_channels(dense, removed, shapes)
    refit = 0
    if method == "reconstruct":
        refit, more = refit_consumers(dense, pruned, cmap, removed, samples, cores=cores, on_progress=on_progress,
                                      cancel=cancel)
        notes.extend(more)
        _inputs_for_initializers(pruned)
    return ChannelResult(pruned, method, dict(removed), {g: len_kept for g, len_kept in kept.items()}, round_to,
                         notes, refit, len(samples or []), time.perf_counter() - t0)
