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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sparsify_tui.errors import EngineError
from sparsify_tui.profiles.fedmodel import FedWeight
from sparsify_tui.engines.ort import _ort, session_from_model, session_options

_STRIP = 1024
DISABLED_OPTIMIZERS = ["ConvBNFusion", "ConvAddFusion", "ConvMulFusion", "NchwcTransformer", "MatMulScaleFusion"]
_EMPTY_F32 = np.empty((0,), dtype=np.float32)
WHICH = "sparsify_which"
TRUE = "sparsify_true"
_TRUE = np.array(True)
_FALSE = np.array(False)


def _subgraphs(node):
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _implicit_inputs(node) -> set[str]:
    """Names a node's subgraphs read from the enclosing scopes."""
    used: set[str] = set()
    for g in _subgraphs(node):
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
    for g in _subgraphs(n):
        _rename_graph(g, mapping)


def _defined_in_subgraphs(node) -> set[str]:
    names: set[str] = set()
    for g in _subgraphs(node):
        names.update(i.name for i in g.input)
        names.update(i.name for i in g.initializer)
        for n in g.node:
            names.update(o for o in n.output if o)
            names.update(_defined_in_subgraphs(n))
    return names


@dataclass
class Cut:
    index: int
    fed_name: str
    layer_ids: list[str]
    outputs: list[str]  # original model output names computed by this cut
    out_names: list[str]  # the If node's output names (what to fetch)
    boundary: list[str]  # original activation names fed from the dense run
    cond: str
    act_input: str | None = None  # (act_qdq) original name of the layer's activation input
    act_scale: str | None = None  # (act_qdq) fed input names of the fake-quant scale / zero point
    act_zp: str | None = None


@dataclass
class _Plan:
    cuts: list[Cut] = field(default_factory=list)


class DownstreamModel:
    """See the module doc. ``run_dense(sample)`` then ``run_cut(layer_id, sample_index, weight)``."""

    def __init__(self, model_path: str | os.PathLike, graph, *, cores: int | None = None,
                 layer_ids: Iterable[str] | None = None, model=None, act_qdq: bool = False,
                 use_tree: bool = False) -> None:
        """``act_qdq``: also fake-quantize (uint8, per tensor) the studied layer's activation input
        with a scale and zero point fed per run (:meth:`run_cut` ``act=(scale, zero_point)``)."""
        import onnx
        from onnx import helper, numpy_helper

        from sparsify_tui.onnxkit.tensors import constant_tensor, find_dequant, find_tensor_site, quant_magnitude_and_zero
        from sparsify_tui.onnxkit.modelio import load_model_copy

        self.path = Path(model_path)
        if model is None:
            model, _, _ = load_model_copy(self.path)
        self.cores = cores
        g = model.graph
        wanted = set(layer_ids) if layer_ids is not None else None
        init_names = {i.name for i in g.initializer}
        real_inputs = [vi for vi in g.input if vi.name not in init_names]
        self.input_names = [vi.name for vi in real_inputs]
        nodes = list(g.node)
        producer: dict[str, int] = {}
        for i, n in enumerate(nodes):
            for o in n.output:
                if o:
                    producer[o] = i
        # constant nodes: computed from initializers / constants alone (no subgraphs, no randomness)
        const_names = set(init_names)
        is_const = [False] * len(nodes)
        for i, n in enumerate(nodes):
            if any(True for _ in _subgraphs(n)) or n.op_type.startswith("Random") or n.domain not in ("", "ai.onnx"):
                continue
            if all((not t) or t in const_names for t in n.input):
                is_const[i] = True
                const_names.update(o for o in n.output if o)
        consumers: dict[str, list[int]] = {}
        node_inputs = [_all_inputs(n) for n in nodes]
        for i, ins in enumerate(node_inputs):
            for t in ins:
                consumers.setdefault(t, []).append(i)

        # types of every value (for boundary inputs and branch outputs)
        self._types = self._infer_types(model)
        self._empty_inputs: dict[str, int] = {}
        out_types = {o.name: o.type.tensor_type.elem_type for o in g.output}
        out_rank = {o.name: (len(o.type.tensor_type.shape.dim) if o.type.tensor_type.HasField("shape") else None)
                    for o in g.output}
        model_outputs = [o.name for o in g.output]

        def top_node_of(layer) -> int | None:
            if not layer.graph_path:
                return producer.get(layer.id)
            key = layer.graph_path.split("/")[0]
            for i, n in enumerate(nodes):
                if n.name == key or (n.output and n.output[0] == key):
                    return i
            return None

        self.weights: dict[str, FedWeight] = {}
        self.layer_cut: dict[str, Cut] = {}
        self.skipped: dict[str, str] = {}
        # constant nodes stay at the top level; ConstantOfShape nodes become initializers (ONNX Runtime
        # does not fold them, so it would refill the tensor on every run). Constant nodes stay nodes:
        # ORT folds them, and as outer-scope initializers their scalar shapes confused its subgraph
        # type inference (seen on the CRNN model)
        top_nodes: list[Any] = []
        extra_inits: list[Any] = []
        for i, n in enumerate(nodes):
            if not is_const[i]:
                continue
            if n.op_type == "ConstantOfShape" and len(n.output) == 1:
                arr = constant_tensor(model, n.output[0])
                if arr is not None:
                    extra_inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), n.output[0]))
                    continue
            top_nodes.append(n)
        new_inputs: list[Any] = list(real_inputs)
        boundary_all: set[str] = set()
        cut_nodes: list[Any] = []
        # leaf 0 computes nothing (taken by the dense run); leaf i is the i-th cut
        if not all(out_types.get(o) for o in model_outputs):
            raise _Unsupported("an output of the model has no element type")
        self.tree_out_names = [f"{o}__sparsify_cut" for o in model_outputs]
        leaves: list[Any] = [self._empty_branch("none", model_outputs, out_types, out_rank, "__sparsify_none")]
        by_weight: dict[str, Cut] = {}
        suffix_n = 0
        for layer in graph.layers:
            if not layer.prunable or layer.weight is None:
                continue
            if wanted is not None and layer.id not in wanted:
                continue
            ref = layer.weight
            if ref.name in by_weight:
                by_weight[ref.name].layer_ids.append(layer.id)
                self.layer_cut[layer.id] = by_weight[ref.name]
                continue
            site = find_tensor_site(model, ref.name, ref.graph_path or "")
            dense = constant_tensor(model, ref.name, site.graph_path) if site is not None else None
            if dense is None:
                self.skipped[layer.id] = f"its weight {ref.name!r} is not a constant tensor"
                continue
            # the top-level nodes this weight reaches: for a main-graph weight, its const chain and
            # the layers consuming it (all of them: a shared weight changes every consumer)
            starts: set[int] = set()
            chain: set[int] = set()
            if site.graph_path == "":
                todo = [ref.name]
                seen = set()
                while todo:
                    t = todo.pop()
                    if t in seen:
                        continue
                    seen.add(t)
                    for ci in consumers.get(t, []):
                        if is_const[ci]:
                            if ci not in chain:
                                chain.add(ci)
                                todo.extend(o for o in nodes[ci].output if o)
                        else:
                            starts.add(ci)
            else:
                t = top_node_of(layer)
                if t is not None:
                    starts.add(t)
            if not starts:
                self.skipped[layer.id] = "its weight feeds no computation"
                continue
            # downstream closure over non-const nodes
            down: set[int] = set()
            todo_i = list(starts)
            while todo_i:
                i = todo_i.pop()
                if i in down:
                    continue
                down.add(i)
                for o in nodes[i].output:
                    for ci in consumers.get(o, []):
                        if not is_const[ci] and ci not in down:
                            todo_i.append(ci)
            copy_idx = sorted(chain | down)
            suffix_n += 1
            sfx = f"__sparsify_c{suffix_n}"
            fed_name = f"{ref.name}__sparsify_fed"
            copies = []
            for i in copy_idx:
                c = onnx.NodeProto()
                c.CopyFrom(nodes[i])
                copies.append(c)
            defined: set[str] = set()
            for c in copies:
                defined.update(o for o in c.output if o)
                defined.update(_defined_in_subgraphs(c))
            mapping = {name: name + sfx for name in defined}
            if site.graph_path == "":
                mapping[ref.name] = fed_name
            else:
                # the weight lives inside a subgraph of the copy: drop its definition there
                self._drop_definition(copies, ref.name)
                mapping[ref.name] = fed_name
            # boundary: what the copy reads that is neither defined in it nor constant nor an input
            boundary: set[str] = set()
            for c in copies:
                for t in _all_inputs(c):
                    if t in defined or t == ref.name or t in const_names or t in self.input_names:
                        continue
                    boundary.add(t)
            for b in boundary:
                mapping[b] = b + "__sparsify_bnd"
            layer_copy = None
            act_orig = None
            if act_qdq and site.graph_path == "" and layer.id in producer and producer[layer.id] in copy_idx:
                layer_copy = copies[copy_idx.index(producer[layer.id])]
                weight_side = {ref.name} | {o for ci in chain for o in nodes[ci].output}
                cands = [t for j, t in enumerate(layer_copy.input[:2]) if t and t not in weight_side]
                if layer.op_type in ("Conv", "ConvTranspose"):
                    cands = [layer_copy.input[0]] if layer_copy.input[0] not in weight_side else []
                if cands and self._types.get(cands[0]) == onnx.TensorProto.FLOAT:
                    act_orig = cands[0]
            for c in copies:
                _rename_node(c, mapping)
            act_scale = act_zp = None
            if act_orig is not None and layer_copy is not None:
                # y = (clip(floor(x / s + zp + 0.5), 0, 255) - zp) * s : uint8 fake quantization with
                # float ops only (works in every opset)
                x = mapping.get(act_orig, act_orig)
                act_scale, act_zp = f"qscale{sfx}", f"qzp{sfx}"
                t = [f"{x}{sfx}__fq{i}" for i in range(6)]
                half = f"qhalf{sfx}"
                qnodes = [
                    helper.make_node("Constant", [], [half], value=numpy_helper.from_array(np.array(0.5, np.float32), "")),
                    helper.make_node("Div", [x, act_scale], [t[0]]),
                    helper.make_node("Add", [t[0], act_zp], [t[1]]),
                    helper.make_node("Add", [t[1], half], [t[2]]),
                    helper.make_node("Floor", [t[2]], [t[3]]),
                    self._clip_node(model, t[3], t[4], 0.0, 255.0, sfx),
                ]
                flat_nodes = []
                for n in qnodes:
                    flat_nodes.extend(n if isinstance(n, list) else [n])
                qnodes = flat_nodes
                sub_out = f"{x}{sfx}__fq_sub"
                qnodes.append(helper.make_node("Sub", [t[4], act_zp], [sub_out]))
                qnodes.append(helper.make_node("Mul", [sub_out, act_scale], [t[5]]))
                for j, inp in enumerate(layer_copy.input):
                    if inp == x:
                        layer_copy.input[j] = t[5]
                pos = copies.index(layer_copy)
                copies[pos:pos] = qnodes
            outs = [o for o in model_outputs if o in defined]
            if not outs:
                self.skipped[layer.id] = "no model output depends on it"
                continue
            missing = [b for b in boundary if b not in self._types] + [o for o in outs if not out_types.get(o)]
            if missing:
                raise _Unsupported(f"no type known for {missing[0]!r}")
            cond = ""
            # every leaf of the selection tree returns all model outputs, in model order: the ones
            # downstream of this layer computed, the others empty placeholders
            leaf_outs = []
            for o in model_outputs:
                if o in outs:
                    leaf_outs.append(helper.make_tensor_value_info(o + sfx, out_types[o], None))
                else:
                    ph = f"{o}{sfx}__none"
                    copies.append(helper.make_node("Identity", [self._empty_input(out_types[o])], [ph]))
                    leaf_outs.append(helper.make_tensor_value_info(ph, out_types[o], None))
            leaves.append(helper.make_graph(copies, f"cut{suffix_n}", [], leaf_outs))
            out_names = list(self.tree_out_names)
            new_inputs.append(helper.make_tensor_value_info(
                fed_name, helper.np_dtype_to_tensor_dtype(dense.dtype), None))
            boundary_all.update(boundary)
            cut = Cut(len(leaves) - 1, fed_name, [layer.id], outs, out_names, sorted(boundary), cond,
                      act_orig if act_scale else None, act_scale, act_zp)
            if act_scale:
                new_inputs.append(helper.make_tensor_value_info(act_scale, onnx.TensorProto.FLOAT, None))
                new_inputs.append(helper.make_tensor_value_info(act_zp, onnx.TensorProto.FLOAT, None))
            by_weight[ref.name] = cut
            self.layer_cut[layer.id] = cut
            fw = FedWeight(fed_name, ref.name, np.ascontiguousarray(dense), [layer.id])
            if "DequantizeLinear" in (ref.transform or []):
                dq = find_dequant(model, ref.name, ref.graph_path or "")
                if dq is not None:
                    mag, zp = quant_magnitude_and_zero(fw.dense, dq)
                    fw.magnitude, fw.zero, fw.quant = mag, zp, dq
            fw.existing_zeros = int(np.count_nonzero(fw.magnitude == 0)) if fw.magnitude is not None \
                else int(fw.dense.size - np.count_nonzero(fw.dense))
            self.weights[fed_name] = fw
        # the dense branch: every non-const node with its original names
        dense_nodes = []
        for i, n in enumerate(nodes):
            if not is_const[i]:
                c = onnx.NodeProto()
                c.CopyFrom(n)
                dense_nodes.append(c)
        self.boundary = sorted(boundary_all)
        dense_outs = model_outputs + [b for b in self.boundary if b not in model_outputs]
        for b in self.boundary:
            if b not in self._types:
                raise _Unsupported(f"no type known for {b!r}")
        types = dict(self._types)
        types.update(out_types)
        then_dense = helper.make_graph(
            dense_nodes, "dense", [], [helper.make_tensor_value_info(o, types[o], None) for o in dense_outs])
        ranks = dict(out_rank)
        else_dense = self._empty_branch("skip_dense", dense_outs, types, ranks, "__sparsify_dense")
        self.dense_out_names = [o + "__sparsify_dense" for o in dense_outs]
        self.dense_outputs = dense_outs
        dense_if = helper.make_node("If", ["run__sparsify_dense"], self.dense_out_names,
                                    then_branch=then_dense, else_branch=else_dense, name="sparsify_dense")
        new_inputs.append(helper.make_tensor_value_info("run__sparsify_dense", onnx.TensorProto.BOOL, []))
        for b in self.boundary:
            new_inputs.append(helper.make_tensor_value_info(b + "__sparsify_bnd", self._types[b], None))
        graph_outputs = [helper.make_tensor_value_info(n, types[o], None)
                         for n, o in zip(self.dense_out_names, dense_outs)]
        # One If per cut (default): a run also executes the other cuts' empty else-branches (measured
        # ~37 ms per run for MobileNetV3's 54 layers on a heavily loaded 2-core machine).
        # ``use_tree=True`` selects the cut through a balanced tree of If nodes instead (~log2(layers)
        # If nodes per run) but ONNX Runtime's session set-up grows with the nesting depth (MobileNetV3:
        # 49 s instead of 7 s, same load), which costs more than it saves on a 10-level profile.
        self.use_tree = bool(use_tree)
        self.flat_conds: dict[int, str] = {}
        self.flat_outs: dict[int, list[str]] = {}
        if len(leaves) > 1 and self.use_tree:
            cut_nodes = self._selection_tree(leaves, model_outputs, out_types)
            graph_outputs += [helper.make_tensor_value_info(n, out_types[o], None)
                              for n, o in zip(self.tree_out_names, model_outputs)]
            new_inputs.append(helper.make_tensor_value_info(WHICH, onnx.TensorProto.FLOAT, []))
            new_inputs.append(helper.make_tensor_value_info(TRUE, onnx.TensorProto.BOOL, []))
        elif len(leaves) > 1:
            for i in range(1, len(leaves)):
                cond = f"sparsify_run{i}"
                outs_i = [f"{o}__sparsify_c{i}_out" for o in model_outputs]
                cut_nodes.append(helper.make_node(
                    "If", [cond], outs_i, then_branch=leaves[i],
                    else_branch=self._empty_branch(f"skip{i}", model_outputs, out_types, {}, f"__sparsify_s{i}"),
                    name=f"sparsify_cut{i}"))
                new_inputs.append(helper.make_tensor_value_info(cond, onnx.TensorProto.BOOL, []))
                graph_outputs += [helper.make_tensor_value_info(n, out_types[o], None)
                                  for n, o in zip(outs_i, model_outputs)]
                self.flat_conds[i] = cond
                self.flat_outs[i] = outs_i
        for name, elem in self._empty_inputs.items():
            new_inputs.append(helper.make_tensor_value_info(name, elem, None))

        # keep old-IR initializer inputs out of the input list (they are constants here)
        new_graph = helper.make_graph(
            top_nodes + [dense_if] + cut_nodes, g.name or "sparsify", new_inputs, graph_outputs,
            list(g.initializer) + extra_inits)
        new_model = helper.make_model(new_graph, opset_imports=list(model.opset_import))
        new_model.ir_version = max(int(model.ir_version), 4)
        self.model = new_model
        self.model_outputs = model_outputs
        self.session = None
        self._dummy: dict[str, np.ndarray] = {}
        self._cuts = list({id(c): c for c in self.layer_cut.values()}.values())
        self.layer_weight = {lid: cut.fed_name for lid, cut in self.layer_cut.items()}

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _drop_definition(copies, name: str) -> None:
        def drop(g) -> bool:
            for i, init in enumerate(g.initializer):
                if init.name == name:
                    del g.initializer[i]
                    return True
            for i, n in enumerate(g.node):
                if n.output and n.output[0] == name and n.op_type in ("Constant", "ConstantOfShape"):
                    del g.node[i]
                    return True
            for n in g.node:
                for sg in _subgraphs(n):
                    if drop(sg):
                        return True
            return False

        for c in copies:
            for sg in _subgraphs(c):
                if drop(sg):
                    return

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
                                                                        {}, f"__sparsify_never{lo}"),
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
    def _clip_node(model, x: str, y: str, lo: float, hi: float, sfx: str):
        """Clip(x) to [lo, hi] in the model's opset (attributes before opset 11, inputs after)."""
        from onnx import helper, numpy_helper

        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        if opset < 11:
            return helper.make_node("Clip", [x], [y], min=lo, max=hi)
        lo_n, hi_n = f"qlo{sfx}", f"qhi{sfx}"
        return [
            helper.make_node("Constant", [], [lo_n], value=numpy_helper.from_array(np.array(lo, np.float32), "")),
            helper.make_node("Constant", [], [hi_n], value=numpy_helper.from_array(np.array(hi, np.float32), "")),
            helper.make_node("Clip", [x, lo_n, hi_n], [y]),
        ]

    def _empty_branch(self, name: str, outs: list[str], types: dict, ranks: dict, sfx: str):
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

    # ---------------------------------------------------------------- running
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
        if not self._dummy:
            for inp in self.session.get_inputs():
                self._dummy[inp.name] = None
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
            feeds[b + "__sparsify_bnd"] = self._empty_of(b)
        for name, elem in self._empty_inputs.items():
            feeds[name] = self._empty_elem(elem)
        return feeds

    @staticmethod
    def _empty_elem(elem: int) -> np.ndarray:
        from onnx import helper

        return np.empty((0,), dtype=helper.tensor_dtype_to_np_dtype(elem))

    def _empty_of(self, b: str) -> np.ndarray:
        from onnx import helper

        return np.empty((0,), dtype=helper.tensor_dtype_to_np_dtype(self._types[b]))

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

    def __init__(self, model_path, graph, samples: list[dict[str, np.ndarray]], *, cores: int | None = None,
                 layer_ids: Iterable[str] | None = None, log=None, parallel: bool = True) -> None:
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
        self.plan = plan_outputs(self.dense, self.output_names)
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
