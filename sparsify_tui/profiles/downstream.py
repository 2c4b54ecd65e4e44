"""One ONNX Runtime session that re-runs only the part of the model downstream of one layer.

The measured loss and quantization profiles change ONE layer's weight at a
time and compare the outputs with the dense model's. Everything upstream of
that layer is unchanged, so running it again is wasted work; building a
session per layer (or per layer and level) is slow too. :class:`DownstreamModel`
builds a single model, and a single session, that holds:

* the model's constant computations (initializers, Constant nodes and nodes
  computed from constants alone) at the top level, where ONNX Runtime folds
  and pre-packs them once;
* an ``If`` node running the whole (dense) model, taken once per sample; it
  also outputs every *boundary* activation the other branches need;
* one ``If`` node per studied layer (a "cut") whose then-branch is a copy of
  the nodes downstream of that layer (the layer itself, what consumes its
  output, transitively; nodes inside If/Loop/Scan bodies count with their
  top-level parent). In the copy, the studied weight is a graph input (fed as
  stored: for DequantizeLinear weights, the integer tensor), every other
  weight stays a constant, and activations computed upstream are graph inputs
  fed with the dense run's values.

Each run sets one condition input to true: ONNX Runtime executes only the
taken branch (the other ``If`` nodes run an empty else-branch). A layer's
reference outputs are computed by the same branch fed with the dense weight,
so an unchanged weight gives bit-identical outputs and tiny differences are
due to pruning alone. Outputs that are not downstream of the layer cannot
change and are not computed.

When the model cannot be rewritten this way (missing type information, an
unusual graph), :func:`build_runner` falls back to
:class:`~sparsify_tui.profiles.fedmodel.WeightFedModel`: one session with
every prunable weight as an input, running the whole model each time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from sparsify_tui.errors import EngineError
from sparsify_tui.onnxkit.graphs import subgraph_attrs, subgraphs
from sparsify_tui.profiles.fedmodel import FedWeight
from sparsify_tui.engines.ort import _ort, session_from_model, session_options

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import Layer, ModelGraph

_STRIP = 1024
DISABLED_OPTIMIZERS = ["ConvBNFusion", "ConvAddFusion", "ConvMulFusion", "NchwcTransformer", "MatMulScaleFusion"]
_EMPTY_F32 = np.empty((0,), dtype=np.float32)
WHICH = "sparsify_which"
TRUE = "sparsify_true"
_TRUE = np.array(True)
_FALSE = np.array(False)


def _implicit_inputs(node) -> set[str]:
    """Names a node's subgraphs read from the enclosing scopes."""
    used: set[str] = set()
    for g in subgraphs(node):
        defined = {i.name for i in g.input} | {i.name for i in g.initializer}
        for n in g.node:
            for t in n.input:
                if t and t not in defined:
                    used.add(t)
            for t in _implicit_inputs(n):
                if t not in defined:
                    used.add(t)
            defined.update(o for o in n.output if o)
        for o in g.output:
            if o.name not in defined:
                used.add(o.name)
    return used


def _all_inputs(node) -> list[str]:
    return [t for t in node.input if t] + sorted(_implicit_inputs(node))


def _rename_graph(g, mapping: dict[str, str]) -> None:
    """Apply ``mapping`` to every name in a graph (and nested graphs)."""
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.name in mapping:
            vi.name = mapping[vi.name]
    for init in g.initializer:
        if init.name in mapping:
            init.name = mapping[init.name]
    for n in g.node:
        _rename_node(n, mapping)


def _rename_node(n, mapping: dict[str, str]) -> None:
    for i, t in enumerate(n.input):
        if t in mapping:
            n.input[i] = mapping[t]
    for i, t in enumerate(n.output):
        if t in mapping:
            n.output[i] = mapping[t]
    for g in subgraphs(n):
        _rename_graph(g, mapping)


def _defined_in_subgraphs(node) -> set[str]:
    names: set[str] = set()
    for g in subgraphs(node):
        names.update(i.name for i in g.input)
        names.update(i.name for i in g.initializer)
        for n in g.node:
            names.update(o for o in n.output if o)
            names.update(_defined_in_subgraphs(n))
    return names


def _drop_definition(copies, name: str) -> None:
    """Remove the initializer / Constant defining ``name`` from the first subgraph of ``copies`` holding it."""
    def drop(g) -> bool:
        for i, init in enumerate(g.initializer):
            if init.name == name:
                del g.initializer[i]
                return True
        for i, n in enumerate(g.node):
            if n.output and n.output[0] == name and n.op_type in ("Constant", "ConstantOfShape"):
                del g.node[i]
                return True
        return any(drop(sg) for n in g.node for sg in subgraphs(n))

    for c in copies:
        for sg in subgraphs(c):
            if drop(sg):
                return


class _TopGraph:
    """The main graph's nodes indexed: who produces and consumes each value, and which nodes are constant
    (computed from initializers / constants alone: no subgraphs, no randomness, standard domain)."""

    def __init__(self, model) -> None:
        g = model.graph
        init_names = {i.name for i in g.initializer}
        self.real_inputs = [vi for vi in g.input if vi.name not in init_names]
        self.input_names = [vi.name for vi in self.real_inputs]
        self.nodes = list(g.node)
        self.producer: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for o in n.output:
                if o:
                    self.producer[o] = i
        self.const_names = set(init_names)
        self.is_const = [False] * len(self.nodes)
        for i, n in enumerate(self.nodes):
            if any(True for _ in subgraphs(n)) or n.op_type.startswith("Random") or n.domain not in ("", "ai.onnx"):
                continue
            if all((not t) or t in self.const_names for t in n.input):
                self.is_const[i] = True
                self.const_names.update(o for o in n.output if o)
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in _all_inputs(n):
                self.consumers.setdefault(t, []).append(i)

    def reached_by(self, name: str) -> tuple[set[int], set[int]]:
        """(constant nodes computed from ``name``, non-constant nodes reading it or them): for a main-graph
        weight, its const chain and every layer consuming it (a shared weight changes every consumer)."""
        chain: set[int] = set()
        starts: set[int] = set()
        todo = [name]
        seen = set()
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            for ci in self.consumers.get(t, []):
                if self.is_const[ci]:
                    if ci not in chain:
                        chain.add(ci)
                        todo.extend(o for o in self.nodes[ci].output if o)
                else:
                    starts.add(ci)
        return chain, starts

    def holder_of(self, graph_path: str) -> int | None:
        """The top-level node whose subgraph ``graph_path`` is (or is nested in)."""
        for i, n in enumerate(self.nodes):
            for sub_path, _ in subgraph_attrs(n):
                if graph_path == sub_path or graph_path.startswith(sub_path + "/"):
                    return i
        return None

    def downstream(self, starts: set[int]) -> set[int]:
        """``starts`` and every non-constant node consuming their outputs, transitively."""
        down: set[int] = set()
        todo = list(starts)
        while todo:
            i = todo.pop()
            if i in down:
                continue
            down.add(i)
            for o in self.nodes[i].output:
                for ci in self.consumers.get(o, []):
                    if not self.is_const[ci] and ci not in down:
                        todo.append(ci)
        return down


@dataclass
class Cut:
    index: int
    fed_name: str
    layer_ids: list[str]
    outputs: list[str]  # original model output names computed by this cut
    boundary: list[str]  # original activation names fed from the dense run
    act_input: str | None = None  # (act_qdq) original name of the layer's activation input
    act_scale: str | None = None  # (act_qdq) fed input names of the fake-quant scale / zero point
    act_zp: str | None = None


class DownstreamGraph:
    """The ONNX model of the module doc, built from the original: the dense branch, one cut branch per
    studied weight (fed its weight, and its boundary activations from the dense run), the selector.
    :class:`DownstreamModel` runs it."""

    def __init__(self, model_path: str | os.PathLike, graph: "ModelGraph", *, cores: int | None = None,
                 layer_ids: Iterable[str] | None = None, model=None, act_qdq: bool = False,
                 use_tree: bool = False) -> None:
        """``act_qdq``: also fake-quantize (uint8, per tensor) the studied layer's activation input
        with a scale and zero point fed per run (:meth:`run_cut` ``act=(scale, zero_point)``)."""
        from onnx import helper

        from sparsify_tui.onnxkit.modelio import load_model_copy

        self.path = Path(model_path)
        if model is None:
            model, _, _ = load_model_copy(self.path)
        self.cores = cores
        self.use_tree = bool(use_tree)
        g = model.graph
        top = _TopGraph(model)
        self.input_names = top.input_names
        # types of every value (for boundary inputs and branch outputs)
        self._types = self._infer_types(model)
        self._empty_inputs: dict[str, int] = {}
        self._out_types = {o.name: o.type.tensor_type.elem_type for o in g.output}
        self.model_outputs = [o.name for o in g.output]
        self.weights: dict[str, FedWeight] = {}
        self.layer_cut: dict[str, Cut] = {}
        self.skipped: dict[str, str] = {}
        self.boundary: list[str] = []
        top_nodes, extra_inits = self._constant_nodes(model, top)
        if not all(self._out_types.get(o) for o in self.model_outputs):
            raise _Unsupported("an output of the model has no element type")
        self.tree_out_names = [f"{o}__sparsify_cut" for o in self.model_outputs]
        # leaf 0 computes nothing (taken by the dense run); leaf i is the i-th cut
        leaves: list[Any] = [self._empty_branch("none", self.model_outputs, self._out_types, "__sparsify_none")]
        self._new_inputs: list[Any] = list(top.real_inputs)
        self._n_copies = 0
        by_weight: dict[str, Cut] = {}
        for layer in graph.weighted_layers(layer_ids):
            ref = layer.weight
            if ref.name in by_weight:
                by_weight[ref.name].layer_ids.append(layer.id)
                self.layer_cut[layer.id] = by_weight[ref.name]
                continue
            cut = self._add_cut(model, top, layer, leaves, act_qdq)
            if cut is not None:
                by_weight[ref.name] = cut
                self.layer_cut[layer.id] = cut
        self.boundary = sorted({b for cut in self.layer_cut.values() for b in cut.boundary})
        dense_if, graph_outputs = self._dense_branch(top)
        cut_nodes, cut_outputs = self._cut_nodes(leaves)
        new_inputs = self._new_inputs + [helper.make_tensor_value_info(name, elem, None)
                                         for name, elem in self._empty_inputs.items()]
        # keep old-IR initializer inputs out of the input list (they are constants here)
        new_graph = helper.make_graph(
            top_nodes + [dense_if] + cut_nodes, g.name or "sparsify", new_inputs, graph_outputs + cut_outputs,
            list(g.initializer) + extra_inits)
        new_model = helper.make_model(new_graph, opset_imports=list(model.opset_import))
        new_model.ir_version = max(int(model.ir_version), 4)
        self.model = new_model
        self.session = None
        self._cuts = list({id(c): c for c in self.layer_cut.values()}.values())
        self.layer_weight = {lid: cut.fed_name for lid, cut in self.layer_cut.items()}

    # ---------------------------------------------------------------- building
    @staticmethod
    def _constant_nodes(model, top: _TopGraph) -> tuple[list[Any], list[Any]]:
        """(constant nodes kept at the top level, initializers replacing ConstantOfShape nodes).

        ONNX Runtime does not fold ConstantOfShape, so it would refill the tensor on every run. Constant
        nodes stay nodes: ORT folds them, and as outer-scope initializers their scalar shapes confused its
        subgraph type inference (seen on the CRNN model)."""
        from onnx import numpy_helper

        from sparsify_tui.onnxkit.tensors import constant_tensor

        top_nodes: list[Any] = []
        extra_inits: list[Any] = []
        for i, n in enumerate(top.nodes):
            if not top.is_const[i]:
                continue
            if n.op_type == "ConstantOfShape" and len(n.output) == 1:
                arr = constant_tensor(model, n.output[0])
                if arr is not None:
                    extra_inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n.output[0]))
                    continue
            top_nodes.append(n)
        return top_nodes, extra_inits

    def _add_cut(self, model, top: _TopGraph, layer: "Layer", leaves: list, act_qdq: bool) -> Cut | None:
        """Build the branch re-running what is downstream of ``layer``'s weight (appended to ``leaves``, its
        inputs to the model's), or record why it is skipped (None)."""
        import onnx
        from onnx import helper

        from sparsify_tui.onnxkit.tensors import constant_tensor, find_tensor_site, weight_dequant

        ref = layer.weight
        site = find_tensor_site(model, ref.name, ref.graph_path or "")
        dense = constant_tensor(model, ref.name, site.graph_path) if site is not None else None
        if dense is None:
            self.skipped[layer.id] = f"its weight {ref.name!r} is not a constant tensor"
            return None
        # the top-level nodes this weight reaches
        if site.graph_path == "":
            chain, starts = top.reached_by(ref.name)
        else:
            holder = top.holder_of(layer.graph_path) if layer.graph_path else top.producer.get(layer.id)
            chain, starts = set(), ({holder} if holder is not None else set())
        if not starts:
            self.skipped[layer.id] = "its weight feeds no computation"
            return None
        copy_idx = sorted(chain | top.downstream(starts))
        self._n_copies += 1
        sfx = f"__sparsify_c{self._n_copies}"
        fed_name = f"{ref.name}__sparsify_fed"
        copies = []
        for i in copy_idx:
            c = onnx.NodeProto()
            c.CopyFrom(top.nodes[i])
            copies.append(c)
        defined: set[str] = set()
        for c in copies:
            defined.update(o for o in c.output if o)
            defined.update(_defined_in_subgraphs(c))
        if site.graph_path != "":
            # the weight lives inside a subgraph of the copy: drop its definition there
            _drop_definition(copies, ref.name)
        # boundary: what the copy reads that is neither defined in it nor constant nor an input
        boundary = {t for c in copies for t in _all_inputs(c)
                    if t not in defined and t != ref.name and t not in top.const_names and t not in top.input_names}
        mapping = {name: name + sfx for name in defined}
        mapping[ref.name] = fed_name
        for b in boundary:
            mapping[b] = b + "__sparsify_bnd"
        layer_copy = act_orig = None
        if act_qdq and site.graph_path == "" and layer.id in top.producer and top.producer[layer.id] in copy_idx:
            layer_copy = copies[copy_idx.index(top.producer[layer.id])]
            act_orig = self._activation_input(layer, layer_copy, {ref.name} | {
                o for ci in chain for o in top.nodes[ci].output})
        for c in copies:
            _rename_node(c, mapping)
        act_scale = act_zp = None
        if act_orig is not None:
            act_scale, act_zp = f"qscale{sfx}", f"qzp{sfx}"
            self._insert_fake_quant(model, copies, layer_copy, mapping.get(act_orig, act_orig), act_scale, act_zp,
                                    sfx)
        outs = [o for o in self.model_outputs if o in defined]
        if not outs:
            self.skipped[layer.id] = "no model output depends on it"
            return None
        missing = [b for b in boundary if b not in self._types]
        if missing:
            raise _Unsupported(f"no type known for {missing[0]!r}")
        leaves.append(self._leaf(copies, outs, sfx, f"cut{self._n_copies}"))
        self._new_inputs.append(helper.make_tensor_value_info(
            fed_name, helper.np_dtype_to_tensor_dtype(dense.dtype), None))
        if act_scale:
            self._new_inputs.append(helper.make_tensor_value_info(act_scale, onnx.TensorProto.FLOAT, None))
            self._new_inputs.append(helper.make_tensor_value_info(act_zp, onnx.TensorProto.FLOAT, None))
        self.weights[fed_name] = FedWeight.of(fed_name, ref.name, dense, layer.id, weight_dequant(model, ref))
        return Cut(len(leaves) - 1, fed_name, [layer.id], outs, sorted(boundary), act_orig, act_scale, act_zp)

    def _activation_input(self, layer: "Layer", layer_copy, weight_side: set[str]) -> str | None:
        """The float activation input of the layer's node (not computed from its weight), or None."""
        import onnx

        cands = [t for t in layer_copy.input[:2] if t and t not in weight_side]
        if layer.op_type in ("Conv", "ConvTranspose"):
            cands = [layer_copy.input[0]] if layer_copy.input[0] not in weight_side else []
        if cands and self._types.get(cands[0]) == onnx.TensorProto.FLOAT:
            return cands[0]
        return None

    def _insert_fake_quant(self, model, copies: list, layer_copy, x: str, scale: str, zp: str, sfx: str) -> None:
        """Feed ``layer_copy`` with ``x`` fake-quantized: y = (clip(floor(x / s + zp + 0.5), 0, 255) - zp) * s,
        uint8 fake quantization with float ops only (works in every opset)."""
        from onnx import helper, numpy_helper

        t = [f"{x}{sfx}__fq{i}" for i in range(6)]
        half = f"qhalf{sfx}"
        sub_out = f"{x}{sfx}__fq_sub"
        qnodes = [
            helper.make_node("Constant", [], [half], value=numpy_helper.from_array(np.array(0.5, np.float32), "")),
            helper.make_node("Div", [x, scale], [t[0]]),
            helper.make_node("Add", [t[0], zp], [t[1]]),
            helper.make_node("Add", [t[1], half], [t[2]]),
            helper.make_node("Floor", [t[2]], [t[3]]),
            *self._clip_nodes(model, t[3], t[4], 0.0, 255.0, sfx),
            helper.make_node("Sub", [t[4], zp], [sub_out]),
            helper.make_node("Mul", [sub_out, scale], [t[5]]),
        ]
        for j, inp in enumerate(layer_copy.input):
            if inp == x:
                layer_copy.input[j] = t[5]
        pos = copies.index(layer_copy)
        copies[pos:pos] = qnodes

    def _leaf(self, copies: list, outs: list[str], sfx: str, name: str):
        """A cut's branch: every model output, in model order; those downstream of the layer computed, the
        others empty placeholders (every leaf of the selection tree returns the same outputs)."""
        from onnx import helper

        leaf_outs = []
        for o in self.model_outputs:
            if o in outs:
                leaf_outs.append(helper.make_tensor_value_info(o + sfx, self._out_types[o], None))
            else:
                ph = f"{o}{sfx}__none"
                copies.append(helper.make_node("Identity", [self._empty_input(self._out_types[o])], [ph]))
                leaf_outs.append(helper.make_tensor_value_info(ph, self._out_types[o], None))
        return helper.make_graph(copies, name, [], leaf_outs)

    def _dense_branch(self, top: _TopGraph) -> tuple[Any, list[Any]]:
        """The If node running every non-const node with its original names (model outputs and boundary
        activations), and the main graph's outputs it gives."""
        import onnx
        from onnx import helper

        dense_nodes = []
        for i, n in enumerate(top.nodes):
            if not top.is_const[i]:
                c = onnx.NodeProto()
                c.CopyFrom(n)
                dense_nodes.append(c)
        dense_outs = self.model_outputs + [b for b in self.boundary if b not in self.model_outputs]
        types = dict(self._types)
        types.update(self._out_types)
        then_dense = helper.make_graph(
            dense_nodes, "dense", [], [helper.make_tensor_value_info(o, types[o], None) for o in dense_outs])
        else_dense = self._empty_branch("skip_dense", dense_outs, types, "__sparsify_dense")
        self.dense_out_names = [o + "__sparsify_dense" for o in dense_outs]
        self.dense_outputs = dense_outs
        dense_if = helper.make_node("If", ["run__sparsify_dense"], self.dense_out_names,
                                    then_branch=then_dense, else_branch=else_dense, name="sparsify_dense")
        self._new_inputs.append(helper.make_tensor_value_info("run__sparsify_dense", onnx.TensorProto.BOOL, []))
        for b in self.boundary:
            self._new_inputs.append(helper.make_tensor_value_info(b + "__sparsify_bnd", self._types[b], None))
        return dense_if, [helper.make_tensor_value_info(n, types[o], None)
                          for n, o in zip(self.dense_out_names, dense_outs)]

    def _cut_nodes(self, leaves: list) -> tuple[list[Any], list[Any]]:
        """The nodes selecting one cut per run, and the main graph's outputs they give.

        One If per cut (default): a run also executes the other cuts' empty else-branches (measured
        ~37 ms per run for MobileNetV3's 54 layers on a heavily loaded 2-core machine).
        ``use_tree=True`` selects the cut through a balanced tree of If nodes instead (~log2(layers)
        If nodes per run) but ONNX Runtime's session set-up grows with the nesting depth (MobileNetV3:
        49 s instead of 7 s, same load), which costs more than it saves on a 10-level profile."""
        import onnx
        from onnx import helper

        model_outputs, out_types = self.model_outputs, self._out_types
        self.flat_conds: dict[int, str] = {}
        self.flat_outs: dict[int, list[str]] = {}
        cut_nodes: list[Any] = []
        outputs: list[Any] = []
        if len(leaves) > 1 and self.use_tree:
            cut_nodes = self._selection_tree(leaves, model_outputs, out_types)
            outputs += [helper.make_tensor_value_info(n, out_types[o], None)
                        for n, o in zip(self.tree_out_names, model_outputs)]
            self._new_inputs.append(helper.make_tensor_value_info(WHICH, onnx.TensorProto.FLOAT, []))
            self._new_inputs.append(helper.make_tensor_value_info(TRUE, onnx.TensorProto.BOOL, []))
        elif len(leaves) > 1:
            for i in range(1, len(leaves)):
                cond = f"sparsify_run{i}"
                outs_i = [f"{o}__sparsify_c{i}_out" for o in model_outputs]
                cut_nodes.append(helper.make_node(
                    "If", [cond], outs_i, then_branch=leaves[i],
                    else_branch=self._empty_branch(f"skip{i}", model_outputs, out_types, f"__sparsify_s{i}"),
                    name=f"sparsify_cut{i}"))
                self._new_inputs.append(helper.make_tensor_value_info(cond, onnx.TensorProto.BOOL, []))
                outputs += [helper.make_tensor_value_info(n, out_types[o], None)
                            for n, o in zip(outs_i, model_outputs)]
                self.flat_conds[i] = cond
                self.flat_outs[i] = outs_i
        return cut_nodes, outputs

    def _selection_tree(self, leaves: list, model_outputs: list[str], out_types: dict) -> list:
        """Top-level nodes choosing leaf ``which`` through a balanced tree of If nodes (log2 depth),
        so a run executes a handful of If nodes whatever the number of layers."""
        from onnx import helper, numpy_helper

        counter = [0]

        def node_for(lo: int, hi: int, outputs: list[str]) -> list:
            """Nodes computing ``outputs`` as leaf ``which`` in [lo, hi)."""
            if hi - lo == 1:
                # the leaf as the then-branch of an If that is always taken (inlining its nodes into
                # the selection branch confused ONNX Runtime's shape planning on nested If models)
                return [helper.make_node("If", [TRUE], outputs, then_branch=leaves[lo],
                                         else_branch=self._empty_branch(f"never{lo}", model_outputs, out_types,
                                                                        f"__sparsify_never{lo}"),
                                         name=f"sparsify_leaf{lo}")]
            mid = (lo + hi) // 2
            counter[0] += 1
            k = counter[0]
            cond = f"sparsify_sel{k}"
            mid_name = f"sparsify_mid{k}"
            branch_outs = [f"{o}__sparsify_t{k}" for o in model_outputs]
            else_outs = [f"{o}__sparsify_e{k}" for o in model_outputs]
            then_g = helper.make_graph(node_for(lo, mid, branch_outs), f"sel{k}_lo", [],
                                       [helper.make_tensor_value_info(n, out_types[o], None)
                                        for n, o in zip(branch_outs, model_outputs)])
            else_g = helper.make_graph(node_for(mid, hi, else_outs), f"sel{k}_hi", [],
                                       [helper.make_tensor_value_info(n, out_types[o], None)
                                        for n, o in zip(else_outs, model_outputs)])
            return [
                helper.make_node("Constant", [], [mid_name],
                                 value=numpy_helper.from_array(np.array(mid - 0.5, np.float32), "")),
                helper.make_node("Less", [WHICH, mid_name], [cond]),
                helper.make_node("If", [cond], outputs, then_branch=then_g, else_branch=else_g,
                                 name=f"sparsify_select{k}"),
            ]

        return node_for(0, len(leaves), list(self.tree_out_names))

    @staticmethod
    def _clip_nodes(model, x: str, y: str, lo: float, hi: float, sfx: str) -> list:
        """Clip(x) to [lo, hi] in the model's opset (attributes before opset 11, inputs after)."""
        from onnx import helper, numpy_helper

        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        if opset < 11:
            return [helper.make_node("Clip", [x], [y], min=lo, max=hi)]
        lo_n, hi_n = f"qlo{sfx}", f"qhi{sfx}"
        return [
            helper.make_node("Constant", [], [lo_n], value=numpy_helper.from_array(np.array(lo, np.float32), "")),
            helper.make_node("Constant", [], [hi_n], value=numpy_helper.from_array(np.array(hi, np.float32), "")),
            helper.make_node("Clip", [x, lo_n, hi_n], [y]),
        ]

    def _empty_branch(self, name: str, outs: list[str], types: dict, sfx: str):
        """An else-branch returning empty tensors of unknown shape (Identity of an empty graph input per
        element type), so the If's shape inference accepts it in every opset."""
        from onnx import helper

        nodes, vis = [], []
        for o in outs:
            elem = types[o]
            src = self._empty_input(elem)
            out = o + sfx + "__empty"
            nodes.append(helper.make_node("Identity", [src], [out]))
            vis.append(helper.make_tensor_value_info(out, elem, None))
        return helper.make_graph(nodes, name, [], vis)

    def _empty_input(self, elem: int) -> str:
        name = f"sparsify_empty_{elem}"
        self._empty_inputs[name] = elem
        return name

    @staticmethod
    def _infer_types(model) -> dict[str, int]:
        """Element type of every main-graph value (shape inference on a weight-free copy)."""
        import onnx

        light = onnx.ModelProto()
        light.CopyFrom(model)
        for init in light.graph.initializer:
            if len(init.raw_data) > _STRIP:
                init.ClearField("raw_data")
                # keep a valid (if meaningless) payload so shape inference does not choke on sizes
        try:
            inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False)
        except Exception:  # noqa: BLE001 - shape inference may fail on exotic models
            inferred = light
        types: dict[str, int] = {}
        g = inferred.graph
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                types[vi.name] = vi.type.tensor_type.elem_type
        for init in g.initializer:
            types[init.name] = init.data_type
        return types



class DownstreamModel(DownstreamGraph):
    """See the module doc. ``run_dense(sample)`` then ``run_cut(layer_id, sample_index, weight)``."""

    def build_session(self):
        _ort()
        so = session_options(self.cores)
        # every cut branch reads the same constant weights from the outer scope; optimizers that rewrite
        # weights (BN / Add / Mul folding into Conv, NCHWc reordering) or pre-pack them would make one
        # private copy per branch (measured: 12 GB instead of 0.7 GB on the light ResNet-50), so they are off
        so.add_session_config_entry("session.disable_prepacking", "1")
        try:
            self.session = session_from_model(self.model, so, disabled_optimizers=DISABLED_OPTIMIZERS)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise _Unsupported(str(exc).splitlines()[0][:300]) from None
        return self.session

    def _base_feeds(self, sample: dict[str, np.ndarray]) -> dict[str, Any]:
        feeds: dict[str, Any] = dict(sample)
        feeds["run__sparsify_dense"] = np.array(False)
        if len(self._cuts) and self.use_tree:
            feeds[WHICH] = np.array(0.0, dtype=np.float32)
            feeds[TRUE] = np.array(True)
        for cond in self.flat_conds.values():
            feeds[cond] = _FALSE
        for cut in self._cuts:
            fw = self.weights[cut.fed_name]
            feeds[cut.fed_name] = np.empty((0,), dtype=fw.dense.dtype)
            if cut.act_scale:
                feeds[cut.act_scale] = _EMPTY_F32
                feeds[cut.act_zp] = _EMPTY_F32
        for b in self.boundary:
            feeds[b + "__sparsify_bnd"] = self._empty_elem(self._types[b])
        for name, elem in self._empty_inputs.items():
            feeds[name] = self._empty_elem(elem)
        return feeds

    @staticmethod
    def _empty_elem(elem: int) -> np.ndarray:
        from onnx import helper

        return np.empty((0,), dtype=helper.tensor_dtype_to_np_dtype(elem))

    def run_dense(self, sample: dict[str, np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """(model outputs, boundary activations) of the dense model for ``sample``."""
        if self.session is None:
            self.build_session()
        feeds = self._base_feeds(sample)
        feeds["run__sparsify_dense"] = np.array(True)
        try:
            res = self.session.run(self.dense_out_names, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"ONNX Runtime failed to run {self.path.name}: {str(exc).splitlines()[0][:300]}") from None
        by_name = dict(zip(self.dense_outputs, res))
        return [by_name[o] for o in self.model_outputs], {b: by_name[b] for b in self.boundary}

    def run_cut(self, layer_id: str, sample: dict[str, np.ndarray], boundary: dict[str, np.ndarray],
                weight: np.ndarray, act: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
        """The outputs downstream of ``layer_id`` with its weight replaced by ``weight`` ({output name: array}).

        ``act``: (scale, zero point) of the activation fake quantization (models built with ``act_qdq``).
        """
        cut = self.layer_cut[layer_id]
        feeds = self._base_feeds(sample)
        if self.use_tree:
            feeds[WHICH] = np.array(float(cut.index), dtype=np.float32)
            fetch = self.tree_out_names
        else:
            feeds[self.flat_conds[cut.index]] = _TRUE
            fetch = self.flat_outs[cut.index]
        feeds[cut.fed_name] = weight
        if cut.act_scale:
            if act is None:
                raise ValueError(f"layer {layer_id!r} needs activation quantization parameters")
            feeds[cut.act_scale] = np.array(act[0], dtype=np.float32)
            feeds[cut.act_zp] = np.array(act[1], dtype=np.float32)
        for b in cut.boundary:
            feeds[b + "__sparsify_bnd"] = boundary[b]
        try:
            res = self.session.run(fetch, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"ONNX Runtime failed to run {self.path.name}: {str(exc).splitlines()[0][:300]}") from None
        by_name = dict(zip(self.model_outputs, res))
        return {o: by_name[o] for o in cut.outputs}


class _Unsupported(Exception):
    """The model cannot be rewritten into the downstream form (the caller falls back)."""


# ---------------------------------------------------------------- the runner the profiles use
class LayerSwapRunner:
    """Measure the output change when one layer's weight is replaced, on fixed samples.

    ``weights``: {fed input name: FedWeight}; ``layer_weight``: {layer id: fed name};
    ``change(layer_id, array)``: output change (:func:`sparsify_tui.metrics.compare_outputs`,
    with ``plan`` fixed from the dense outputs) over the samples, against that layer's dense reference; ``mode``: "downstream"
    (one session, only the downstream part runs) or "full" (one session, whole model).
    """

    def __init__(self, model_path: str | os.PathLike, graph: "ModelGraph", samples: list[dict[str, np.ndarray]], *,
                 cores: int | None = None, layer_ids: Iterable[str] | None = None, log=None,
                 parallel: bool = True) -> None:
        from sparsify_tui.analysis.loader import bounded_output_names
        from sparsify_tui.metrics import LEGACY_KIND, plan_outputs
        from sparsify_tui.profiles.fedmodel import WeightFedModel
        from sparsify_tui.settings import usable_cores

        self.samples = samples
        self.mode = "downstream"
        self.note = ""
        self.runs = 0
        # independent runs go to a pool of single-threaded runs (one per core): better use of the
        # cores than one run at a time with intra-op threads, which idle on the small late layers
        self.workers = max(1, int(cores or usable_cores())) if parallel else 1
        threads = 1 if self.workers > 1 else cores
        try:
            self.impl: Any = DownstreamModel(model_path, graph, cores=threads, layer_ids=layer_ids)
            self.impl.build_session()
        except _Unsupported as exc:
            self.mode = "full"
            self.note = f"downstream-only runs unavailable ({exc}); the whole model runs for every measurement"
            if log:
                log(self.note)
            self.impl = WeightFedModel(model_path, graph, cores=threads, layer_ids=layer_ids)
            self.impl.build_session()
        import threading

        self._lock = threading.Lock()
        self._pool = None
        if self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sparsify-run")
        self.weights: dict[str, FedWeight] = self.impl.weights
        self.layer_weight: dict[str, str] = self.impl.layer_weight
        self.skipped: dict[str, str] = dict(self.impl.skipped)
        self.dense: list[list[np.ndarray]] = []
        self.boundary: list[dict[str, np.ndarray]] = []
        for s in samples:
            if self.mode == "downstream":
                outs, bnd = self.impl.run_dense(s)
            else:
                outs, bnd = self.impl.run(s), {}
            self.dense.append(outs)
            self.boundary.append(bnd)
        self.output_names = list(getattr(self.impl, "model_outputs", None) or self.impl.output_names)
        # how each output is compared (metric, temperature), fixed from the dense outputs for every layer
        self.plan = plan_outputs(self.dense, self.output_names, bounded=bounded_output_names(model_path))
        self.kinds = {m.name: LEGACY_KIND[m.kind] for m in self.plan}
        self._ref: dict[str, list[dict[str, np.ndarray]]] = {}

    def _outputs(self, layer_id: str, i: int, weight: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self.runs += 1
        if self.mode == "downstream":
            return self.impl.run_cut(layer_id, self.samples[i], self.boundary[i], weight)
        name = self.layer_weight[layer_id]
        return dict(zip(self.output_names, self.impl.run(self.samples[i], {name: weight})))

    def reference(self, layer_id: str) -> list[dict[str, np.ndarray]]:
        if layer_id not in self._ref:
            if self.mode == "downstream":
                fw = self.weights[self.layer_weight[layer_id]]
                self._ref[layer_id] = [self._outputs(layer_id, i, fw.dense) for i in range(len(self.samples))]
            else:
                self._ref[layer_id] = [dict(zip(self.output_names, d)) for d in self.dense]
        return self._ref[layer_id]

    def change(self, layer_id: str, weight: np.ndarray) -> float:
        return self.comparisons(layer_id, [weight])[0].value

    def changes(self, layer_id: str, weights: list[np.ndarray], cancel=None) -> list[float]:
        """:meth:`change` for several weights of the same layer (see :meth:`comparisons`)."""
        return [c.value for c in self.comparisons(layer_id, weights, cancel=cancel)]

    def comparisons(self, layer_id: str, weights: list[np.ndarray], cancel=None) -> list:
        """The output change (:class:`sparsify_tui.metrics.OutputChange`) of each weight of the layer against
        the layer's dense reference, the runs spread over the worker pool (``cancel``, a threading.Event, is
        checked before every run)."""
        from sparsify_tui.metrics import compare_outputs
        from sparsify_tui.progress import check_cancel

        n = len(self.samples)
        need_ref = layer_id not in self._ref
        fw = self.weights[self.layer_weight[layer_id]]
        arrays = ([fw.dense] if need_ref and self.mode == "downstream" else []) + list(weights)
        tasks = [(a, i) for a in range(len(arrays)) for i in range(n)]

        def run(task):
            check_cancel(cancel)
            a, i = task
            return self._outputs(layer_id, i, arrays[a])

        results = list(self._pool.map(run, tasks)) if self._pool is not None and len(tasks) > 1 \
            else [run(t) for t in tasks]
        if need_ref:
            if self.mode == "downstream":
                self._ref[layer_id] = results[:n]
                results = results[n:]
            else:
                self.reference(layer_id)
        ref = self._ref[layer_id]
        return [compare_outputs(ref, results[w * n:(w + 1) * n], self.plan, self.output_names)
                for w in range(len(weights))]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def finish_layer(self, layer_id: str) -> None:
        self._ref.pop(layer_id, None)
        name = self.layer_weight.get(layer_id)
        if name in self.weights:
            self.weights[name].order = None
