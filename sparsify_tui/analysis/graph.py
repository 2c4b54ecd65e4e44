"""The analysed model: :class:`ModelGraph` and its :class:`Layer` rows.

Definitions (the same words are used in the help screen):

* **Layer**: one ONNX node, at any depth (nodes inside If/Loop/Scan bodies
  included). Its ``id`` is the name of its first output (unique across the
  model); ``depth`` is its position in execution (topological) order,
  counted from 0, with subgraph nodes placed right after their parent node.
* **Prunable layer**: a Conv, ConvTranspose, Gemm or MatMul (or a quantized
  form: ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul) whose weight is
  constant: an initializer, a Constant / ConstantOfShape node, or a tensor
  computed from those alone through Transpose, Reshape, Cast,
  DequantizeLinear, Identity, Squeeze, Unsqueeze, Flatten and the like.
* **Params**: elements of the constant tensors that layers consume as weights,
  biases or normalization parameters (Gather embedding tables and LSTM/GRU/RNN
  weights included), counted once per tensor even when shared; integer
  tensors used as shapes, axes or indices are not params.
* **FLOPs**: floating-point operations for one inference at the analysed batch
  size; a multiply-add counts 2. ``None`` means unknown (an op we do not model
  or a shape we could not infer), never 0.
* **Sparsity**: the fraction of a weight tensor's elements that are exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

Shape = list  # list[int | str]: a str is an unresolved dimension


def _attrs(obj: Any, *names: str) -> dict[str, Any]:
    """{name: obj.name} for the named attributes, in order (the plain fields of the to_dict methods)."""
    return {n: getattr(obj, n) for n in names}


@dataclass
class TensorInfo:
    """A model input or output."""

    name: str
    shape: list[Any]
    dtype: str  # numpy dtype name, e.g. "float32", "int64"
    assumed: dict[int, int] = field(default_factory=dict)  # axis -> value we assumed

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "assumed": {str(k): v for k, v in self.assumed.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorInfo":
        return cls(name=d["name"], shape=list(d.get("shape") or []), dtype=d.get("dtype", "unknown"),
                   assumed={int(k): int(v) for k, v in (d.get("assumed") or {}).items()})


@dataclass
class WeightRef:
    """Where a prunable layer's weight lives, so it can be read and rewritten.

    ``kind`` is ``initializer`` (the graph at ``graph_path`` holds an
    initializer named ``name``), ``constant`` (a Constant node whose output is
    ``name``), ``constant_of_shape`` (a ConstantOfShape node: a filled tensor
    that can only be replaced by an initializer) or ``graph_input`` (an
    initializer listed as a graph input in old IR versions).
    ``transform`` lists the ops between that tensor and the layer
    (e.g. ``["Transpose"]`` or ``["DequantizeLinear"]``).
    """

    name: str
    kind: str
    graph_path: str = ""
    transform: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "graph_path": self.graph_path, "transform": list(self.transform)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WeightRef":
        return cls(name=d["name"], kind=d["kind"], graph_path=d.get("graph_path", ""),
                   transform=list(d.get("transform") or []))


@dataclass
class Layer:
    id: str
    name: str
    op_type: str
    depth: int
    domain: str = ""
    graph_path: str = ""  # "" for the main graph, e.g. "If_3/then_branch" inside a subgraph
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    input_shapes: list[Any] = field(default_factory=list)  # one shape (or None) per activation input
    output_shapes: list[Any] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    params: int = 0  # params first counted at this layer (shared tensors count once)
    prunable: bool = False
    prunable_params: int = 0  # elements of the prunable weight
    weight_name: str | None = None
    weight_shape: list[int] | None = None
    weight: WeightRef | None = None
    bias_name: str | None = None
    bias_shape: list[int] | None = None
    flops: int | None = None
    sparsity: float | None = None  # of the prunable weight; None when not prunable
    constant: bool = False  # computed from constants only (Constant, weight Transpose/DequantizeLinear...): folded

    def to_dict(self) -> dict[str, Any]:
        return {
            **_attrs(self, "id", "name", "op_type", "domain", "depth", "graph_path", "params", "prunable",
                     "prunable_params", "flops", "weight_name", "weight_shape", "bias_name", "bias_shape",
                     "input_shapes", "output_shapes", "attributes", "sparsity"),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "weight": self.weight.to_dict() if self.weight is not None else None,
            "constant": self.constant,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Layer":
        w = d.get("weight")
        return cls(
            id=d["id"], name=d.get("name", d["id"]), op_type=d["op_type"], depth=int(d["depth"]),
            domain=d.get("domain", ""), graph_path=d.get("graph_path", ""), inputs=list(d.get("inputs") or []),
            outputs=list(d.get("outputs") or []), input_shapes=list(d.get("input_shapes") or []),
            output_shapes=list(d.get("output_shapes") or []), attributes=dict(d.get("attributes") or {}),
            params=int(d.get("params", 0)), prunable=bool(d.get("prunable", False)),
            prunable_params=int(d.get("prunable_params", 0)), weight_name=d.get("weight_name"),
            weight_shape=d.get("weight_shape"), weight=WeightRef.from_dict(w) if w else None,
            bias_name=d.get("bias_name"), bias_shape=d.get("bias_shape"), flops=d.get("flops"),
            sparsity=d.get("sparsity"), constant=bool(d.get("constant", False)),
        )


class _LazyModel:
    """Descriptor behind ``ModelGraph.model``: loads the full proto on first read."""

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__.get("_model_value")
        if value is None:
            loader = obj.__dict__.get("_loader")
            if loader is not None:
                value = loader()
                obj.__dict__["_model_value"] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["_model_value"] = None if value is self else value


_LAZY_MODEL = _LazyModel()


@dataclass
class ModelGraph:
    """Everything ``sparsify-tui info`` knows about a model."""

    path: str
    opset: int
    ir_version: int
    producer: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    layers: list[Layer]
    params: int
    prunable_params: int
    flops: int | None  # None when any layer's FLOPs are unknown...
    flops_known: int  # ...in which case this is the sum of the known ones
    unknown_flops_layers: int
    sparsity: float  # zeros / elements over all prunable weights (0 when none)
    op_histogram: dict[str, int]
    notes: list[str] = field(default_factory=list)  # assumptions made, in plain words
    file_size: int = 0
    # The onnx.ModelProto with its weights, for pruning. Loaded lazily on first
    # access (analysis itself reads a weight-free skeleton and counts zeros on
    # the memory-mapped file); assignable; ``ModelGraph(..., model=proto)`` works.
    # Not serialized.
    model: Any = field(default=_LAZY_MODEL, repr=False, compare=False)
    _loader: Any = field(default=None, repr=False, compare=False)
    _skeleton_model: Any = field(default=None, repr=False, compare=False)  # weight-free proto
    _raw: dict = field(default_factory=dict, repr=False, compare=False)  # initializer -> RawRef

    @property
    def _model(self) -> Any:
        """The model if already loaded (never triggers a load)."""
        return self.__dict__.get("_model_value")

    @property
    def prunable_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.prunable]

    def weighted_layers(self, layer_ids: Iterable[str] | None = None) -> Iterator[Layer]:
        """The prunable layers whose weight is known (only those in ``layer_ids`` when given), in order."""
        wanted = set(layer_ids) if layer_ids is not None else None
        for layer in self.layers:
            if layer.prunable and layer.weight is not None and (wanted is None or layer.id in wanted):
                yield layer

    def layer(self, layer_id: str) -> Layer:
        for layer in self.layers:
            if layer.id == layer_id:
                return layer
        raise KeyError(layer_id)

    def input_shapes(self) -> dict[str, list[int]]:
        """Concrete input shapes (assumed dimensions filled in)."""
        return {t.name: [int(d) for d in t.shape] for t in self.inputs if all(isinstance(d, int) for d in t.shape)}

    def totals_dict(self) -> dict[str, Any]:
        return {
            **_attrs(self, "path", "opset", "ir_version", "producer", "file_size"),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "layers": len(self.layers),
            "prunable_layers": len(self.prunable_layers),
            **_attrs(self, "params", "prunable_params", "flops", "flops_known", "unknown_flops_layers", "sparsity"),
            "op_histogram": dict(self.op_histogram),
            "notes": list(self.notes),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.totals_dict(), "layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelGraph":
        """From ``to_dict()`` output (or ``sparsify-tui info --json``); ``model`` is not restored."""
        m = d["model"]
        return cls(
            path=m["path"], opset=int(m["opset"]), ir_version=int(m["ir_version"]), producer=m.get("producer", ""),
            inputs=[TensorInfo.from_dict(t) for t in m.get("inputs", [])],
            outputs=[TensorInfo.from_dict(t) for t in m.get("outputs", [])],
            layers=[Layer.from_dict(x) for x in d.get("layers", [])],
            params=int(m["params"]), prunable_params=int(m["prunable_params"]), flops=m.get("flops"),
            flops_known=int(m.get("flops_known", 0)), unknown_flops_layers=int(m.get("unknown_flops_layers", 0)),
            sparsity=float(m.get("sparsity", 0.0)), op_histogram=dict(m.get("op_histogram") or {}),
            notes=list(m.get("notes") or []), file_size=int(m.get("file_size", 0)),
        )
