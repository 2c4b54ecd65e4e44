"""DeepSparse backend: per-layer timings with ``model_debug_analysis``.

Each call compiles the model at ``optimization_level=1`` (the level users
run; SparseML's own sweep used 0; the call
uses keywords only) and runs it ``iterations`` times after ``warmup``. For a
sparsity level ``s > 0`` it passes ``imposed_ks=s``: the engine treats every
prunable weight as ``s`` sparse and compiles its sparse kernels, which tracks
real pruning closely.

The result's ``layer_info`` entries are engine steps, often fused groups whose
``canonical_name`` lists several ONNX output tensors; ``<none>`` marks
engine-internal steps (naive subgraphs, shuffles). They are mapped to the
original layers by :mod:`sparsify_tui.engines.mapping`.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from sparsify_tui.engines.mapping import Step, attribute
from sparsify_tui.engines.modelinfo import ModelInfo
from sparsify_tui.engines.registry import get_engine
from sparsify_tui.engines.timed import TimedModel, timed_runs
from sparsify_tui.errors import EngineError, EngineUnavailableError

INSTALL_HINT = get_engine("deepsparse").install_hint


def available() -> bool:
    return get_engine("deepsparse").available()


def version() -> str | None:
    return get_engine("deepsparse").version()


def _import():
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    try:
        import deepsparse  # noqa: F401
        from deepsparse import model_debug_analysis
    except ImportError:
        raise EngineUnavailableError(INSTALL_HINT) from None
    return model_debug_analysis


MAX_IR_VERSION = 9  # DeepSparse 1.8 bundles an ONNX Runtime that reads IR <= 9 ...
MAX_OPSET = 19  # ... which carries opsets up to 19


def _set_input_dims(proto, input_shapes: dict[str, list[int]]) -> None:
    """Write ``input_shapes`` (by input name) into the graph's input dims, as DeepSparse's override does."""
    for vi in proto.graph.input:
        shape = input_shapes.get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        if shape is None or len(dims) != len(shape):
            continue
        for d, v in zip(dims, shape):
            d.dim_value = int(v)  # also clears a symbolic dim_param (oneof)


def _declares(proto, input_shapes: dict[str, list[int]]) -> bool:
    """True when every graph input in ``input_shapes`` already declares exactly those fixed dims (the copy
    can then be the file's bytes: no 100 MB serialization)."""
    declared = {vi.name: vi.type.tensor_type.shape.dim for vi in proto.graph.input}
    for name, shape in input_shapes.items():
        dims = declared.get(name)
        if dims is None or len(dims) != len(shape):
            return False
        if any(not d.HasField("dim_value") or d.dim_value != int(v) for d, v in zip(dims, shape)):
            return False
    return True


@contextlib.contextmanager
def compatible_model(model_path: str, input_shapes: dict[str, list[int]] | None = None):
    """Yield ``(path, note)``: a private copy of the model that DeepSparse may load and rewrite.

    DeepSparse 1.8 overwrites the model file IN PLACE when it is given input
    shapes (``deepsparse.utils.onnx.override_onnx_input_shapes`` defaults to
    ``inplace=True``): handing it the user's file would silently change the
    user's model. So DeepSparse always gets a copy in a temporary directory
    (with its external data files), removed afterwards.

    Exporters now write IR version 10, which DeepSparse 1.8 refuses although the
    operators are the same; when the model's default-domain opset is at most
    ``MAX_OPSET`` the copy also lowers ``ir_version`` to 9 (nothing else
    changes) and ``note`` says so.

    With ``input_shapes`` (input name -> shape), the copy's graph inputs get
    those dimensions once, here, so that the many compiles of a sweep can skip
    DeepSparse's own ``input_shapes`` override, which loads and rewrites the
    whole file on every call (0.5-0.7 s each on a 100 MB model). A file that
    already declares exactly those shapes is copied byte for byte (no 100 MB
    parse-and-serialize).
    """
    import shutil

    import onnx

    try:
        head = onnx.load(model_path, load_external_data=False)
    except Exception:  # noqa: BLE001 - the engine will report it (on a copy, see below)
        head = None
    opset = 0 if head is None else max((o.version for o in head.opset_import if o.domain in ("", "ai.onnx")),
                                       default=0)
    lower = head is not None and head.ir_version > MAX_IR_VERSION and opset <= MAX_OPSET
    locations: set[str] = set()
    if head is not None and not lower:
        for t in head.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                for kv in t.external_data:
                    if kv.key == "location":
                        locations.add(kv.value)
    with tempfile.TemporaryDirectory(prefix="sparsify-ds-") as tmp:
        out = os.path.join(tmp, "model.onnx")
        if not lower:
            if head is not None and input_shapes and not _declares(head, input_shapes):
                _set_input_dims(head, input_shapes)
                onnx.save(head, out)  # the external data files (if any) are copied below
            else:
                shutil.copyfile(model_path, out)
            del head
            src_dir = os.path.dirname(os.path.abspath(model_path))
            for loc in locations:
                src = os.path.normpath(os.path.join(src_dir, loc))
                dst = os.path.normpath(os.path.join(tmp, loc))
                if not dst.startswith(tmp + os.sep) or not os.path.isfile(src):
                    continue  # the engine reports a missing or odd external file itself
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)
            yield out, ""
            return
        del head
        proto = onnx.load(model_path)
        old = proto.ir_version
        proto.ir_version = MAX_IR_VERSION
        if input_shapes:
            _set_input_dims(proto, input_shapes)
        if proto.ByteSize() > 1_900_000_000:
            onnx.save(proto, out, save_as_external_data=True, location="model_ir9.data")
        else:
            onnx.save(proto, out)
        del proto
        yield out, f"its IR version was lowered from {old} to {MAX_IR_VERSION} in a temporary copy"


def arrays(inputs: dict[str, np.ndarray], input_names: list[str]) -> list[np.ndarray]:
    """The inputs in the engine's order, C-contiguous (a 0-d input stays 0-d)."""
    return [np.require(inputs[n], requirements="C") for n in input_names]


def engine_batch(xs: list[np.ndarray], batch_size: int) -> int | None:
    """The ``batch_size`` to hand DeepSparse: it rewrites the FIRST dimension of every input to it, so
    when an input has its batch elsewhere or none (a state [2, N, 128], a 0-d sample rate) the batch
    override is turned off (None) and the shapes fed (written in the file, or given as input_shapes)
    are compiled as they are."""
    if all(x.ndim and x.shape[0] == int(batch_size) for x in xs):
        return int(batch_size)
    return None


def _fed(model_path: str, inputs: dict[str, np.ndarray], input_names: list[str]) -> str:
    from sparsify_tui.engines.inputs import declared_shapes, shapes_fed

    return shapes_fed({n: inputs[n] for n in input_names if n in inputs}, declared_shapes(model_path))


def _first_line(exc: BaseException) -> str:
    """The useful part of an engine exception, in one short line."""
    import re

    text = str(exc).strip()
    m = re.search(r"Unsupported model IR version: \d+, max supported IR version: \d+", text)
    if m:
        return m.group(0)
    text = re.sub(r"^(NM: )?error: ", "", text)
    text = re.sub(r"/\S+:\d+ \S+::\S+\(.*?\) ", "", text)
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return type(exc).__name__


def analyze_level(model_path: str, info: ModelInfo, inputs: dict[str, np.ndarray], input_names: list[str], *,
                  batch_size: int, cores: int | None, iterations: int, warmup: int,
                  level: float | None, shapes_fixed: bool = False) -> dict[str, Any]:
    """One ``model_debug_analysis`` call at ``imposed_ks=level`` (None or 0 = dense), mapped to layers.

    ``shapes_fixed``: the file already declares the inputs' shapes (see
    :func:`compatible_model`), so DeepSparse need not rewrite it first.
    """
    mda = _import()
    xs = arrays(inputs, input_names)
    shapes = None if shapes_fixed else [list(x.shape) for x in xs]
    ks = float(level) if level else None
    t0 = time.perf_counter()
    try:
        res = mda(
            model=model_path, inp=xs, batch_size=engine_batch(xs, batch_size), num_cores=cores,
            num_iterations=max(1, int(iterations)), num_warmup_iterations=max(0, int(warmup)),
            optimization_level=1, imposed_ks=ks, input_shapes=shapes,
        )
    except Exception as exc:  # noqa: BLE001 - the engine raises RuntimeError and friends
        raise EngineError(f"deepsparse could not compile or run the model: {_first_line(exc)} "
                          f"({_fed(model_path, inputs, input_names)})") from None
    engine_s = time.perf_counter() - t0
    steps = []
    for entry in res.get("layer_info", []):
        canon = str(entry.get("canonical_name") or "<none>")
        tensors = [] if canon.strip() in ("<none>", "") else [t.strip() for t in canon.split(",") if t.strip()]
        steps.append(Step(name=str(entry.get("name", "step")), ms=float(entry.get("average_run_time_in_ms", 0.0)),
                          tensors=tensors, op_type="",
                          fallback=not tensors and str(entry.get("name", "")).startswith("Naive Subgraph")))
    att = attribute(info.refs(), steps)
    iteration_ms = [float(t) for t in res.get("iteration_times", [])]
    avg_total = float(res.get("average_total_time", sum(s.ms for s in steps)))
    return {
        "level": float(level or 0.0),
        "model_ms": statistics.median(iteration_ms) if iteration_ms else avg_total,
        "average_total_ms": avg_total,
        "iteration_ms": iteration_ms,
        "layer_ms": att.layer_ms,
        "owner": att.owner,
        "groups": att.groups,
        "internal": [{"id": rid, "name": name, "ms": ms} for rid, name, ms in att.internal],
        "steps": [{"name": s.name, "canonical_name": ",".join(s.tensors) or "<none>", "ms": s.ms} for s in steps],
        "num_threads": res.get("num_threads"),
        "engine_s": engine_s,
    }


def benchmark(model_path: str, inputs: dict[str, np.ndarray], input_names: list[str], *, batch_size: int,
              cores: int | None, iterations: int = 20, warmup: int = 5, repeats: int = 3,
              heartbeat=None, shapes_fixed: bool = False) -> dict[str, Any]:
    """Compile once and time ``repeats`` x ``iterations`` runs (ms per batch).

    ``shapes_fixed``: as in :func:`analyze_level` (no rewrite of the file before the compile).
    """
    _import()
    from deepsparse import compile_model

    xs = arrays(inputs, input_names)
    t0 = time.perf_counter()
    try:
        engine = compile_model(model_path, batch_size=engine_batch(xs, batch_size), num_cores=cores,
                               input_shapes=None if shapes_fixed else [list(x.shape) for x in xs])
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"deepsparse could not compile the model: {_first_line(exc)} "
                          f"({_fed(model_path, inputs, input_names)})") from None
    compile_s = time.perf_counter() - t0
    try:
        res = timed_runs(lambda: engine.run(xs), iterations=iterations, warmup=warmup, repeats=repeats,
                         heartbeat=heartbeat)
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"deepsparse failed to run the model: {_first_line(exc)} "
                          f"({_fed(model_path, inputs, input_names)})") from None
    return {**res, "compile_s": compile_s}


# what `sparsify-tui deploy --export` writes next to the exported model (str.format fields: model, precision,
# sparse, cores, batch, shapes, hint, int8_note)
DEPLOY_SNIPPET = '''"""Run {model} with DeepSparse ({precision}{sparse}), as measured by sparsify-tui deploy."""
import numpy as np
from deepsparse import compile_model

engine = compile_model("{model}", batch_size={batch}, num_cores={cores})
inputs = [np.random.rand(*shape).astype(np.float32) for shape in {shapes}.values()]
outputs = engine.run(inputs)
'''


def runner(model_path: str, inputs: dict[str, np.ndarray], *, names: list[str], batch_size: int,
           cores: int | None, precision: str | None = None, tmp: str | None = None):
    """The model compiled once (``model_path``: a :func:`compatible_model` file): ``run()`` runs one inference
    of ``inputs``, ``run(feed)`` of other arrays of the same shapes; both return the outputs."""
    _import()
    from deepsparse import compile_model

    xs = arrays(inputs, names)
    try:
        eng = compile_model(model_path, batch_size=engine_batch(xs, batch_size), num_cores=cores,
                            input_shapes=[list(x.shape) for x in xs])
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"deepsparse could not compile {model_path}: {_first_line(exc)}") from None

    def run(feed: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        return [np.asarray(y) for y in eng.run(xs if feed is None else arrays(feed, names))]

    return run


class Timed(TimedModel):
    """DeepSparse on a private copy of the model (:func:`compatible_model`); its per-layer profile is one
    ``model_debug_analysis`` call (one repeat) at the sparsity ``level`` it imposes."""

    @classmethod
    def prepare(cls, path: str, input_shapes: dict[str, list[int]] | None = None):
        return compatible_model(path, input_shapes)

    def runner(self, tmp: str | None = None):
        return runner(self.path, self.inputs, names=self.names, batch_size=self.batch_size, cores=self.cores)

    def _benchmark(self, **kw: Any) -> dict[str, Any]:
        return benchmark(self.path, self.inputs, self.names, batch_size=self.batch_size, cores=self.cores,
                         shapes_fixed=self.shapes_fixed, **kw)

    def _profile(self, info, *, iterations: int, warmup: int, repeats: int, heartbeat,
                 level: float | None) -> dict[str, Any]:
        res = analyze_level(self.path, info, self.inputs, self.names, batch_size=self.batch_size, cores=self.cores,
                            iterations=iterations, warmup=warmup, level=level, shapes_fixed=self.shapes_fixed)
        res["repeat_ms"] = [res["average_total_ms"]]  # the model time a level is compared by
        return res

    def fallback_reason(self, message: str) -> str:
        return message.replace("deepsparse could not compile or run the model", "deepsparse could not compile the model")
