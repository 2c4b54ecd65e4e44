"""Model inputs for measurements: random data that fits the model, or the user's samples.

:func:`make_inputs` gives one batch ``{input name: array}``:

* shapes come from ``input_shapes`` (e.g. the project's), else from the model
  (:func:`concrete_shape`): a stated dimension is fed as stated; the batch size
  goes only into the input's batch dimension -- the one the user marks ``N``,
  else the model's (a symbolic dimension named like a batch, else a symbolic or
  1 first dimension, else its one unnamed symbolic dimension) -- where the
  user left it open or wrote 1 (one item); other dynamic dimensions must be given;
* float inputs: uniform random in [0, 1); bool inputs: random booleans;
* integer inputs that feed an embedding ``Gather`` (directly or through
  Cast/Reshape/Unsqueeze/...) get ids below the vocabulary size (the table's
  first dimension); inputs named like ``*mask*`` get ones; ``token_type`` /
  ``segment`` / ``position`` ids get zeros / ascending positions; other
  integer inputs get small values in [0, 2);
* ``data``: a ``.npz`` file with arrays named like the inputs, a ``.npy`` file
  (single-input models), or a directory of such files (samples); shapes and
  dtypes are validated and the batch is sliced or tiled to ``batch_size``.

:func:`load_samples` returns every sample batch of ``data`` (the
loss and quantization profiles use it).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from sparsify_tui.analysis.analyzer import BATCH_DIM, format_shape, is_batch_dim
from sparsify_tui.errors import InputShapeError, ModelError, ProfileError, UsageError
from sparsify_tui.user_metric import LABELS

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph

_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Slice", "Clip"}

_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}


@dataclass
class InputSpec:
    name: str
    shape: list[Any]  # ints, or str / None for dynamic dims (the stated shape when there is one)
    dtype: str
    vocab: int | None = None  # ids must stay below this (embedding table rows)
    role: str = ""  # "mask", "token_type", "position", "ids" or ""
    declared: list[Any] | None = None  # the shape the model file declares (ints, str / None when dynamic)
    stated: list[Any] | None = None  # the user's --input-shape (ints and at most one BATCH_DIM), if any


def _load_proto(path: str | os.PathLike):
    import onnx

    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file")
    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises many kinds
        raise ModelError(f"{p} is not a readable ONNX model ({type(exc).__name__})") from None


def _table_rows(graph, name: str) -> int | None:
    for init in graph.initializer:
        if init.name == name and len(init.dims) >= 1:
            return int(init.dims[0])
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            for a in node.attribute:
                if a.name == "value" and len(a.t.dims) >= 1:
                    return int(a.t.dims[0])
    return None


def input_specs(model: Any, input_shapes: dict[str, list[int]] | None = None) -> list[InputSpec]:
    """The model's real inputs (initializers excluded) with shapes, dtypes and id ranges.

    ``model``: a path, an ``onnx.ModelProto`` or an analysed ``ModelGraph``.
    """
    graph_obj = None
    proto = None
    if hasattr(model, "layers") and hasattr(model, "inputs"):  # ModelGraph
        graph_obj = model
        proto = getattr(model, "model", None)
        if proto is None and getattr(model, "path", None):
            proto = _load_proto(model.path)
    elif hasattr(model, "graph"):
        proto = model
    else:
        proto = _load_proto(model)
    g = proto.graph
    inits = {i.name for i in g.initializer}
    consumers: dict[str, list] = {}
    for node in g.node:
        for i, t in enumerate(node.input):
            consumers.setdefault(t, []).append((node, i))

    def vocab_of(name: str) -> int | None:
        seen, todo = set(), [name]
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            for node, idx in consumers.get(t, []):
                if node.op_type == "Gather" and idx == 1:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    if axis == 0:
                        rows = _table_rows(g, node.input[0])
                        if rows:
                            return rows
                elif node.op_type in _PASS_THROUGH and idx == 0:
                    todo.extend(node.output)
        return None

    specs: list[InputSpec] = []
    by_name = {t.name: t for t in graph_obj.inputs} if graph_obj is not None else {}
    for vi in g.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = _ONNX_DTYPES.get(tt.elem_type, "float32")
        declared = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        shape = declared
        if vi.name in by_name:
            t = by_name[vi.name]
            shape = list(t.shape)
            # a size the analysis only assumed stays dynamic (the batch axis is the caller's batch size):
            # measurements need it given (--input-shape), not guessed
            for ax in t.assumed:
                if 0 < ax < len(shape) and ax < len(declared):
                    shape[ax] = declared[ax]
        spec = InputSpec(vi.name, shape, dtype, declared=list(declared))
        if dtype.startswith(("int", "uint")):
            spec.vocab = vocab_of(vi.name)
            low = vi.name.lower()
            if "mask" in low:
                spec.role = "mask"
            elif "token_type" in low or "segment" in low:
                spec.role = "token_type"
            elif "position" in low:
                spec.role = "position"
            elif spec.vocab:
                spec.role = "ids"
        specs.append(spec)
    if input_shapes:
        names = {s.name for s in specs}
        unknown = [n for n in input_shapes if n not in names]
        if unknown:
            raise InputShapeError(
                f"the model has no input named {unknown[0]!r} (its inputs: {', '.join(sorted(names))})")
        for s in specs:
            if s.name in input_shapes:
                s.stated = [BATCH_DIM if is_batch_dim(d) else int(d) for d in input_shapes[s.name]]
                s.shape = list(s.stated)
    return specs


def model_batch_axis(declared: list[Any] | None) -> int | None:
    """The axis of a declared shape that holds the batch: a symbolic one named like a batch (N, B, batch,
    batch_size, ...), else the first when it is symbolic or 1, else the only unnamed symbolic one; None when
    the model has no batch dimension there (every dimension fixed, or only named ones like ``seq``)."""
    if not declared:
        return None
    dyn = [i for i, d in enumerate(declared) if not (isinstance(d, int) and d > 0)]
    for i in dyn:
        name = str(declared[i] or "").lower()
        if "batch" in name or name in ("n", "b", "bs"):
            return i
    if 0 in dyn or declared[0] == 1:
        return 0
    unnamed = [i for i in dyn if declared[i] in (None, "", "?")]
    return unnamed[0] if len(unnamed) == 1 else None


def batch_axis(spec: InputSpec) -> int | None:
    """Where the batch size goes in this input: the dimension the user marks N, else the model's."""
    if spec.stated is not None:
        if BATCH_DIM in spec.stated:
            return spec.stated.index(BATCH_DIM)
        if spec.declared is not None and len(spec.declared) != len(spec.stated):
            return None
    return model_batch_axis(spec.declared if spec.declared is not None else spec.shape)


def concrete_shape(spec: InputSpec, batch_size: int) -> list[int]:
    """The shape fed to the engine for this input at ``batch_size``.

    A dimension the user states is fed as stated; the batch size fills only the input's batch dimension
    (:func:`batch_axis`) where the user marked it N, left the shape open, or wrote 1 (one item). Other
    dynamic dimensions must be given (InputShapeError).
    """
    b = int(batch_size)
    ax = batch_axis(spec)
    if spec.stated is not None:
        out = list(spec.stated)
        if ax is None or not out:
            return [int(d) for d in out]
        if is_batch_dim(out[ax]) or out[ax] == 1:
            out[ax] = b
        elif b != 1:
            raise InputShapeError(
                f"--batch-size {b} has no dimension to go into: --input-shape {spec.name}={format_shape(spec.stated)} "
                f"states {out[ax]} for its batch dimension (axis {ax}); write N there "
                f"(--input-shape {spec.name}={format_shape(out[:ax] + [BATCH_DIM] + out[ax + 1:])}) to feed the batch "
                f"size, or leave --batch-size at 1 to feed the shape as stated")
        return [int(d) for d in out]
    shape = list(spec.declared if spec.declared is not None else spec.shape)
    out = []
    for axis, d in enumerate(shape):
        if axis == ax:
            out.append(b)
        elif isinstance(d, int) and d > 0:
            out.append(d)
        else:
            hint = format_shape(["N" if i == ax else (x if isinstance(x, int) and x > 0 else "?")
                                 for i, x in enumerate(shape)])
            raise InputShapeError(
                f"input {spec.name!r} has a dynamic dimension {d!r} at axis {axis}; "
                f"give its shape with --input-shape {spec.name}={hint} (a number for each ?)")
    return out


def _dims(shape: Any) -> str:
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def shapes_fed(inputs: dict[str, Any], declared: dict[str, Any] | None = None) -> str:
    """``"fed input [1, 512], state [1, 1, 128], sr []; the model declares input [N, 512], state [2, N, 128],
    sr []"``: what an engine error names (the shapes actually fed, and the model's own)."""
    text = "fed " + ", ".join(f"{k} {_dims(v if isinstance(v, (tuple, list)) else np.shape(v))}"
                              for k, v in inputs.items())
    if declared:
        text += "; the model declares " + ", ".join(
            f"{k} {_dims(declared[k]) if declared.get(k) is not None else '(no shape)'}"
            for k in inputs if k in declared)
    return text


def misfits(inputs: dict[str, Any], declared: dict[str, Any]) -> list[str]:
    """``["state [1, 1, 128] against [2, N, 128]"]``: fed inputs whose rank or a fixed dimension differs
    from what the model declares."""
    out = []
    for k, v in inputs.items():
        want = declared.get(k)
        if want is None:
            continue
        got = list(v) if isinstance(v, (tuple, list)) else list(np.shape(v))
        if len(got) != len(want) or any(isinstance(w, int) and w > 0 and g != w for g, w in zip(got, want)):
            out.append(f"{k} {_dims(got)} against {_dims(want)}")
    return out


def shape_hint_for(inputs: dict[str, Any], declared: dict[str, Any]) -> str | None:
    """The hint of an engine error when fed shapes do not fit the model (None when they all fit)."""
    bad = misfits(inputs, declared)
    if not bad:
        return None
    return (f"the shapes fed do not fit the model: {'; '.join(bad)}; state each with --input-shape NAME=D1,D2,... "
            "(N for the dimension that takes the batch size)")


def synthetic_hint(values: dict[str, Any] | None = None) -> str:
    """What an engine failure on random inputs suggests (naming the inputs that were random when some were
    given with --input-value)."""
    if not values:
        return SYNTHETIC_HINT
    return SYNTHETIC_HINT.replace("the inputs were synthetic", f"the inputs other than {', '.join(values)} "
                                  "were synthetic")


def fed_batch(inputs: dict[str, Any], declared: dict[str, Any]) -> int:
    """The batch size of fed inputs: the size of the first one's batch dimension (the model's, see
    :func:`model_batch_axis`); 1 when none has one."""
    for k, v in inputs.items():
        ax = model_batch_axis(declared.get(k))
        if ax is not None and np.ndim(v) > ax:
            return int(np.shape(v)[ax])
    return 1


def rebatch(inputs: dict[str, Any], batch_size: int, declared: dict[str, Any]) -> dict[str, np.ndarray]:
    """The inputs with their batch dimension (the model's) tiled or cut to ``batch_size``; inputs
    without one (a 0-d sample rate, a fixed state) as they are."""
    out = {}
    for k, v in inputs.items():
        v = np.asarray(v)
        ax = model_batch_axis(declared.get(k))
        if ax is not None and v.ndim > ax and v.shape[ax] != batch_size:
            reps = -(-batch_size // max(1, v.shape[ax]))
            v = np.take(np.concatenate([v] * reps, axis=ax), range(batch_size), axis=ax)
        out[k] = v
    return out


def declared_shapes(model_path: str | os.PathLike) -> dict[str, Any]:
    """``{input name: declared shape}`` of a model file (empty when it cannot be read)."""
    try:
        return {s.name: s.declared for s in input_specs(model_path)}
    except Exception:  # noqa: BLE001 - only decorates an error message
        return {}


def random_input(spec: InputSpec, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec.dtype if spec.dtype != "bfloat16" else "float32")
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float64).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if spec.role == "mask":
        return np.ones(shape, dtype=dtype)
    if spec.role == "token_type":
        return np.zeros(shape, dtype=dtype)
    if spec.role == "position" and shape:
        pos = np.arange(shape[-1], dtype=dtype)
        return np.broadcast_to(pos, shape).copy()
    high = spec.vocab if spec.vocab else 2
    if dtype.kind == "u" or spec.vocab:
        low = 0
    else:
        low = 0
    info = np.iinfo(dtype)
    high = min(high, int(info.max) + 1)
    return rng.integers(low, max(high, low + 1), size=shape, dtype=dtype)


def _read_arrays(path: Path) -> dict[str, np.ndarray] | np.ndarray:
    try:
        if path.suffix == ".npy":
            return np.load(str(path), allow_pickle=False)
        with np.load(str(path), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ProfileError(f"{path} is not a readable .npz/.npy file ({exc})") from None


def _fit(spec: InputSpec, arr: np.ndarray, batch_size: int, source: Path) -> np.ndarray:
    want = None
    try:
        want = concrete_shape(spec, batch_size)
    except InputShapeError:
        want = None
    want_dtype = np.dtype(spec.dtype if spec.dtype != "bfloat16" else "float32")
    if arr.dtype != want_dtype:
        same_kind = (arr.dtype.kind == want_dtype.kind) or (arr.dtype.kind in "iu" and want_dtype.kind in "iu")
        if not same_kind:
            raise ProfileError(
                f"{source}: array {spec.name!r} has dtype {arr.dtype}, but the model's input needs {want_dtype}")
        arr = arr.astype(want_dtype)
    template = spec.stated if spec.stated is not None else (spec.declared if spec.declared is not None
                                                             else spec.shape)
    rank = len(template)
    ax = batch_axis(spec)
    if arr.ndim == rank - 1 and ax is not None:
        arr = np.expand_dims(arr, ax)  # one sample without its batch axis
    if arr.ndim != rank:
        raise ProfileError(
            f"{source}: array {spec.name!r} has shape {list(arr.shape)}, but the model's input has rank {rank} "
            f"(shape {format_shape(template)})")
    for axis in range(rank):
        d = template[axis]
        if axis != ax and isinstance(d, int) and d > 0 and arr.shape[axis] != d:
            raise ProfileError(
                f"{source}: array {spec.name!r} has shape {list(arr.shape)}, but the model's input needs "
                f"{want or format_shape(template)}")
    if ax is not None and arr.shape[ax] != batch_size and (want is None or want[ax] == batch_size):
        reps = -(-batch_size // max(arr.shape[ax], 1))
        arr = np.take(np.concatenate([arr] * reps, axis=ax), range(batch_size), axis=ax) if arr.shape[ax] else arr
    return np.require(arr, requirements="C")  # (0-d stays 0-d)


def _files_of(data: Path) -> list[Path]:
    if data.is_dir():
        files = sorted(p for p in data.iterdir() if p.suffix in (".npz", ".npy") and p.is_file())
        if not files:
            raise ProfileError(f"{data} contains no .npz or .npy files")
        return files
    if not data.exists():
        raise UsageError(f"{data}: no such data file")
    if data.suffix not in (".npz", ".npy"):
        raise UsageError(f"{data} is not a .npz or .npy file")
    return [data]


def load_samples(model: Any, data: str | os.PathLike, batch_size: int = 1,
                 input_shapes: dict[str, list[int]] | None = None,
                 specs: list[InputSpec] | None = None) -> list[dict[str, np.ndarray]]:
    """Every batch in ``data`` (a .npz/.npy file or a directory of them), validated against the model."""
    specs = specs if specs is not None else input_specs(model, input_shapes)
    names = [s.name for s in specs]
    batches = []
    for f in _files_of(Path(data).expanduser()):
        arrays = _read_arrays(f)
        if isinstance(arrays, np.ndarray):
            if len(specs) != 1:
                raise ProfileError(
                    f"{f} holds one unnamed array, but the model has {len(specs)} inputs "
                    f"({', '.join(names)}); use a .npz with arrays named like the inputs")
            arrays = {names[0]: arrays}
        missing = [n for n in names if n not in arrays]
        if missing:
            others = {k: v for k, v in arrays.items() if k != LABELS}  # the labels are never an input
            if len(specs) == 1 and len(others) == 1:
                arrays = {names[0]: next(iter(others.values()))}
            else:
                raise ProfileError(
                    f"{f} has no array named {missing[0]!r} (it has {', '.join(sorted(arrays)) or 'none'}; "
                    f"the model's inputs are {', '.join(names)})")
        batches.append({s.name: _fit(s, np.asarray(arrays[s.name]), batch_size, f) for s in specs})
    return batches


def make_inputs(model_path_or_graph: Any, batch_size: int = 1,
                input_shapes: dict[str, list[int]] | None = None,
                data: str | os.PathLike | None = None, seed: int = 0,
                values: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """One batch of inputs ``{name: array}`` for the model (random, or the first batch of ``data``).

    ``values`` (``--input-value NAME=V``): those inputs are filled with ``V`` instead (a sample
    rate, a flag the model branches on); they override ``data`` too.
    """
    specs = input_specs(model_path_or_graph, input_shapes)
    _check_values(specs, values)
    if data is not None:
        batch = load_samples(model_path_or_graph, data, batch_size, specs=specs)[0]
    else:
        shapes = {s.name: concrete_shape(s, batch_size) for s in specs}
        _check_memory(specs, shapes, batch_size)
        rng = np.random.default_rng(seed)
        batch = {s.name: random_input(s, shapes[s.name], rng) for s in specs}
    for s in specs:
        if values and s.name in values:
            arr = batch[s.name]
            batch[s.name] = np.full(arr.shape, values[s.name], dtype=arr.dtype)
    return batch


def parse_input_values(args: list[str] | None) -> dict[str, float]:
    """``["sr=16000"]`` -> ``{"sr": 16000.0}`` (``--input-value``); UsageError if malformed."""
    out: dict[str, float] = {}
    for arg in args or []:
        name, eq, val = str(arg).rpartition("=")
        name = name.strip()
        try:
            number = float(val)
        except ValueError:
            number = None
        if not eq or not name or number is None or number != number:
            raise UsageError(f"--input-value {arg!r} is malformed: expected NAME=NUMBER such as sr=16000")
        out[name] = int(number) if number.is_integer() else number
    return out


def _check_values(specs: list[InputSpec], values: dict[str, float] | None) -> None:
    if not values:
        return
    names = {s.name for s in specs}
    unknown = [n for n in values if n not in names]
    if unknown:
        raise InputShapeError(f"--input-value names {unknown[0]!r}, which the model has no input called "
                              f"(its inputs: {', '.join(sorted(names))})")


SYNTHETIC_HINT = ("the inputs were synthetic (random values); if the model needs real ones -- a sample rate, a "
                  "flag it branches on, token ids -- give them with --input-value NAME=VALUE or --data FILE.npz")


def _check_memory(specs: list[InputSpec], shapes: dict[str, list[int]], batch_size: int) -> None:
    """UsageError when one batch of inputs cannot fit in half of this machine's memory (absurd batch sizes)."""
    import math

    need = 0
    for s in specs:
        itemsize = np.dtype(s.dtype if s.dtype != "bfloat16" else "float32").itemsize
        need += math.prod(shapes[s.name]) * max(itemsize, 8)  # random floats are drawn as float64 first
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        mem = 2**40
    if need > mem // 2:
        raise UsageError(
            f"batch size {batch_size} needs {need / 2**30:.3g} GB of input data, more than half of this "
            f"machine's {mem / 2**30:.3g} GB of memory; use a smaller --batch-size or --input-shape"
        )


def save_inputs(path: str | os.PathLike, inputs: dict[str, np.ndarray]) -> None:
    np.savez(str(path), **inputs)


def iter_names(specs: Iterable[InputSpec]) -> list[str]:
    return [s.name for s in specs]


def load_samples_for(model_path: str | os.PathLike, graph: "ModelGraph", *, data=None, samples: int = 4,
                     input_shapes: dict[str, list[int]] | None = None, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``samples`` single-item batches: random data fitting the inputs, or rows of ``data``.

    ``data``: a ``.npz`` (arrays named like the inputs; a leading batch axis of
    B rows gives B samples), a ``.npy`` (single-input models) or a directory of
    such files (each file one or more samples). The first ``samples`` rows are used.
    """
    src = graph if graph is not None else model_path
    specs = input_specs(src, input_shapes)
    if data is None:
        # one item per sample (a model that fixes its batch dimension to another size keeps that size)
        return [make_inputs(src, 1, input_shapes, seed=seed + i) for i in range(samples)]
    data = Path(data).expanduser()
    if not data.exists():
        raise ProfileError(f"{data}: no such data file or directory")
    files = sorted(p for p in data.iterdir() if p.suffix in (".npz", ".npy") and p.is_file()) if data.is_dir() else [data]
    if not files:
        raise ProfileError(f"{data} contains no .npz or .npy files")
    out: list[dict[str, np.ndarray]] = []
    for f in files:
        rows = _rows_in(f, specs)
        batch = load_samples(src, f, batch_size=max(1, rows), input_shapes=input_shapes, specs=specs)
        axes = {sp.name: batch_axis(sp) for sp in specs}
        for b in batch:
            for r in range(max(1, rows)):
                out.append({k: np.ascontiguousarray(np.take(v, range(r, r + 1), axis=axes[k]))
                            if v.ndim and axes.get(k) is not None and v.shape[axes[k]] > r else v
                            for k, v in b.items()})
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
    others = {k: v for k, v in arrays.items() if k != LABELS or any(s.name == LABELS for s in specs)}
    for s in specs:
        a = arrays.get(s.name)
        if a is None and len(others) == 1 and len(specs) == 1:
            a = next(iter(others.values()))
        ax = batch_axis(s)
        if a is not None and a.ndim == len(s.shape) and a.ndim >= 1 and ax is not None:
            return int(a.shape[ax])
    return 1


def load_labels_for(model_path: str | os.PathLike, graph: "ModelGraph", *, data, samples: int = 4,
                    input_shapes: dict[str, list[int]] | None = None) -> list[np.ndarray] | None:
    """The labels of the samples :func:`load_samples_for` reads from ``data`` (same files, same rows, same
    order): one array per sample (its row of the ``labels`` array, with a first axis of 1), or None when
    ``data`` carries no labels. Labels are kept aside: they are never fed to the model.

    Each ``.npz`` holds ``labels`` with one row per sample on its first axis (a file of one sample may give
    its label without that axis); in a directory, every file has labels or none does."""
    src = graph if graph is not None else model_path
    specs = input_specs(src, input_shapes)
    if any(s.name == LABELS for s in specs):
        return None  # the model has an input of that name: the array is that input
    data = Path(data).expanduser()
    files = sorted(p for p in data.iterdir() if p.suffix in (".npz", ".npy") and p.is_file()) if data.is_dir() else [data]
    out: list[np.ndarray] = []
    with_labels: list[Path] = []
    without: list[Path] = []
    for f in files:
        rows = max(1, _rows_in(f, specs))
        labels = None
        if f.suffix == ".npz":
            with np.load(str(f), allow_pickle=False) as z:
                labels = np.asarray(z[LABELS]) if LABELS in z.files else None
        if labels is None:
            without.append(f)
            continue
        with_labels.append(f)
        if labels.ndim >= 1 and labels.shape[0] == rows:
            per = [labels[r:r + 1] for r in range(rows)]
        elif rows == 1:
            per = [labels[None]]
        else:
            raise ProfileError(f"{f}: {LABELS!r} has {labels.shape[0] if labels.ndim else 1} rows but the inputs "
                               f"hold {rows} samples: give one label row per sample")
        out += per
        if len(out) >= samples:
            break
    if with_labels and without:
        raise ProfileError(f"{with_labels[0]} has {LABELS!r} but {without[0]} has none: label every file or none")
    return out[:samples] if with_labels else None
