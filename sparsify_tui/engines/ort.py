"""ONNX Runtime backend: per-node times from ORT's profiler, mapped back to the original layers.

The session runs at the optimization level users run (``ORT_ENABLE_ALL``) on
the CPU provider with ``intra_op_num_threads = cores``. ORT's profiler writes a
chrome-trace JSON: one ``model_run`` session event per run and one
``<node name>_kernel_time`` node event (``dur`` in µs) per executed node. The
warm-up runs are dropped; a node's time is the median over the timed runs.
The optimized graph (``optimized_model_filepath``) gives each executed
node's outputs, so the rules in :mod:`sparsify_tui.engines.mapping` map
fused/NCHWc nodes back to the original layers. Time inside ``model_run`` that
no node accounts for becomes the engine-internal row ``engine:run overhead``.

ONNX Runtime runs sparse weights no faster than dense ones, so a perf profile
measured with it has one measured level (0) and approximates the others
(see :func:`approx_level_ms`).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sparsify_tui.engines.mapping import Step, attribute
from sparsify_tui.engines.modelinfo import ModelInfo
from sparsify_tui.engines.timed import TimedModel, timed_runs
from sparsify_tui.errors import EngineError


def version() -> str:
    import onnxruntime as ort

    return ort.__version__


def available() -> bool:
    from sparsify_tui.engines.registry import get_engine

    return get_engine("onnxruntime").available()


def _with_batch(model_path: str, inputs: dict[str, np.ndarray] | None):
    """The model (path, or serialized bytes with a symbolic batch dimension when the
    inputs' batch differs from a fixed first dimension in the model)."""
    if not inputs:
        return model_path
    import onnx

    proto = onnx.load(model_path, load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    change = False
    for vi in proto.graph.input:
        if vi.name in inits or vi.name not in inputs:
            continue
        dims = vi.type.tensor_type.shape.dim
        arr = inputs[vi.name]
        if len(dims) and arr.ndim and dims[0].HasField("dim_value") and dims[0].dim_value != arr.shape[0]:
            change = True
    if not change:
        return model_path
    proto = onnx.load(model_path)  # with external data: the bytes must be self-contained
    for vi in list(proto.graph.input) + list(proto.graph.output) + list(proto.graph.value_info):
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"
    return proto.SerializeToString()


def _session(model_path: str, cores: int | None, tmp: str, profile: bool,
             inputs: dict[str, np.ndarray] | None = None, optimize: bool = True):
    import onnxruntime as ort

    so = session_options(cores, level="all" if optimize else "off")
    if cores:
        so.inter_op_num_threads = 1
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort_profile")
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
    try:
        sess = ort.InferenceSession(_with_batch(model_path, inputs), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"onnxruntime could not load {model_path}: {str(exc).strip().splitlines()[0][:300]}") \
            from None
    sess._sparsify_model_path = str(model_path)  # named in run errors
    return sess


def _feed(sess, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise EngineError(f"no data for the model input {missing[0]!r}")
    return {n: inputs[n] for n in names}


def _run(sess, feed) -> list:
    try:
        return sess.run(None, feed)
    except Exception as exc:  # noqa: BLE001
        from sparsify_tui.engines.inputs import shape_hint_for, shapes_fed

        model = getattr(sess, "_sparsify_model_path", "the model")
        declared = {i.name: list(i.shape) for i in sess.get_inputs()}
        raise EngineError(f"onnxruntime failed to run {model} ({shapes_fed(feed, declared)}): "
                          f"{str(exc).strip().splitlines()[0][:300]}", hint=shape_hint_for(feed, declared)) from None


def profile(model_path: str, info: ModelInfo, inputs: dict[str, np.ndarray], *, cores: int | None = None,
            iterations: int = 10, warmup: int = 5, repeats: int = 1, heartbeat=None,
            optimize: bool = True) -> dict[str, Any]:
    """Profile the dense model: per-layer medians and the model time per repeat (``optimize=False``: in a
    session with every graph optimization turned off).

    Returns ``{"repeat_ms": [...], "iteration_ms": [...], "layer_ms": {id: ms},
    "owner": {id: step}, "groups": {step: [ids]}, "internal": [{"id", "name", "ms"}],
    "steps": n, "engine_s": seconds spent in session creation and runs}``.
    """
    import onnx

    iterations = max(1, int(iterations))
    repeats = max(1, int(repeats))
    with tempfile.TemporaryDirectory(prefix="sparsify-ort-") as tmp:
        t0 = time.perf_counter()
        sess = _session(model_path, cores, tmp, profile=True, inputs=inputs, optimize=optimize)
        feed = _feed(sess, inputs)
        for _ in range(max(0, int(warmup))):
            _run(sess, feed)
        for r in range(repeats):
            for _ in range(iterations):
                _run(sess, feed)
            if heartbeat:
                heartbeat(f"repeat {r + 1}/{repeats}")
        prof_file = sess.end_profiling()
        engine_s = time.perf_counter() - t0
        with open(prof_file) as f:
            events = json.load(f)
        opt_path = os.path.join(tmp, "optimized.onnx")
        opt_nodes = []
        if os.path.exists(opt_path):
            try:
                opt = onnx.load(opt_path, load_external_data=False)
                opt_nodes = list(opt.graph.node)
            except Exception:  # noqa: BLE001
                opt_nodes = []

    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    timed = runs[len(runs) - iterations * repeats:] if len(runs) >= iterations * repeats else runs
    run_ms = [e["dur"] / 1000.0 for e in timed]
    node_events = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    node_events.sort(key=lambda e: e["ts"])
    # per timed run: node name -> total µs
    per_run: list[dict[str, float]] = []
    op_of: dict[str, str] = {}
    j = 0
    for run in timed:
        start, end = run["ts"], run["ts"] + run["dur"]
        acc: dict[str, float] = {}
        while j < len(node_events) and node_events[j]["ts"] < start:
            j += 1
        k = j
        while k < len(node_events) and node_events[k]["ts"] <= end:
            ev = node_events[k]
            name = ev["name"][: -len("_kernel_time")]
            acc[name] = acc.get(name, 0.0) + ev["dur"]
            op_of.setdefault(name, (ev.get("args") or {}).get("op_name", ""))
            k += 1
        j = k
        per_run.append(acc)
    names = []
    for acc in per_run:
        for n in acc:
            if n not in names:
                names.append(n)
    med_ms = {n: statistics.median([acc.get(n, 0.0) for acc in per_run]) / 1000.0 for n in names}

    by_name = {n.name: n for n in opt_nodes if n.name}
    steps: list[Step] = []
    for n in names:
        node = by_name.get(n)
        op = node.op_type if node is not None else op_of.get(n, "")
        tensors = list(node.output) if node is not None else []
        steps.append(Step(name=n, ms=med_ms[n], tensors=tensors, op_type=op, match_name=True))
    att = attribute(info.refs(), steps)
    internal = [{"id": rid, "name": name, "ms": ms} for rid, name, ms in att.internal]
    node_sum = sum(med_ms.values())
    model_med = statistics.median(run_ms) if run_ms else node_sum
    overhead = model_med - node_sum
    if overhead > 0:
        internal.append({"id": "engine:run overhead", "name": "run overhead (not in any node)", "ms": overhead})
    repeat_ms = []
    for r in range(repeats):
        chunk = run_ms[r * iterations:(r + 1) * iterations]
        if chunk:
            repeat_ms.append(statistics.median(chunk))
    return {
        "repeat_ms": repeat_ms,
        "iteration_ms": run_ms,
        "layer_ms": att.layer_ms,
        "owner": att.owner,
        "groups": att.groups,
        "internal": internal,
        "steps": len(steps),
        "engine_s": engine_s,
    }


def prunable_fraction(meta) -> float:
    """Share of a layer's FLOPs that pruning its weight removes (0 for layers without a weight)."""
    if not meta.prunable:
        return 0.0
    if meta.flops and meta.flops > 0:
        return max(0.0, min(1.0, 1.0 - meta.bias_flops / meta.flops))
    return 1.0


def approx_level_ms(baseline_ms: float, meta, level: float) -> float:
    """Approximated time of a layer at sparsity ``level`` from its measured dense time.

    ``t(s) = t(0) * (1 - s * p)`` where ``p`` is the share of the layer's FLOPs
    that multiply its prunable weight (1 minus the bias adds; 0 for layers
    without a prunable weight): the time an engine that skips zero weights
    would save if time followed FLOPs. Engine-internal rows do not change.
    """
    p = prunable_fraction(meta) if meta is not None else 0.0
    return baseline_ms * (1.0 - float(level) * p)


def benchmark(model_path: str, inputs: dict[str, np.ndarray], *, cores: int | None = None,
              iterations: int = 20, warmup: int = 5, repeats: int = 3, heartbeat=None) -> dict[str, Any]:
    """Plain latency benchmark (no profiler): per-iteration ms, grouped in repeats."""
    with tempfile.TemporaryDirectory(prefix="sparsify-ort-") as tmp:
        t0 = time.perf_counter()
        sess = _session(model_path, cores, tmp, profile=False, inputs=inputs)
        compile_s = time.perf_counter() - t0
        feed = _feed(sess, inputs)
        res = timed_runs(lambda: _run(sess, feed), iterations=iterations, warmup=warmup, repeats=repeats,
                         heartbeat=heartbeat)
    return {**res, "compile_s": compile_s}


def _ort():
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    import onnxruntime

    return onnxruntime


def session_options(cores: int | None = None, *, spinning: bool = True, level: str = "all"):
    """Quiet ONNX Runtime CPU session options: graph optimizations ``all`` | ``basic`` | ``off``, ``cores``
    intra-op threads, no spinning threads with ``spinning=False``."""
    ort = _ort()
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = levels[level]
    if cores:
        so.intra_op_num_threads = int(cores)
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def bytes_session(model_bytes: bytes, cores: int | None = None, *, optimize: bool = True, purpose: str = "run it"):
    """A quiet ONNX Runtime CPU session for a serialized model; EngineError naming ``purpose`` when it fails."""
    from sparsify_tui.errors import EngineError

    ort = _ort()
    so = session_options(cores)
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise EngineError(f"ONNX Runtime could not load the model to {purpose}: "
                          f"{str(exc).splitlines()[0][:300]}") from None


def session_from_model(model, so, **kwargs):
    """An ONNX Runtime CPU session for an in-memory model; models over ~1.8 GB of tensors go through a
    temporary file with external data (a protobuf cannot exceed 2 GB)."""
    import tempfile

    from sparsify_tui.onnxkit.modelio import EXTERNAL_DATA_THRESHOLD, tensor_bytes as _tensor_bytes, save_model_atomic

    ort = _ort()
    if _tensor_bytes(model) <= EXTERNAL_DATA_THRESHOLD:
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"], **kwargs)
    with tempfile.TemporaryDirectory(prefix="sparsify-session-") as d:
        path = Path(d) / "model.onnx"
        save_model_atomic(model, path, external=True)
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"], **kwargs)


# what `sparsify-tui deploy --export` writes next to the exported model (str.format fields: model, precision,
# sparse, cores, batch, shapes, hint, int8_note)
DEPLOY_SNIPPET = '''"""Run {model} with ONNX Runtime ({precision}{sparse}), as measured by sparsify-tui deploy."""
import numpy as np
import onnxruntime as ort

so = ort.SessionOptions()
so.intra_op_num_threads = {cores}
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession("{model}", so, providers=["CPUExecutionProvider"])
feed = {{i.name: np.random.rand(*{shapes}[i.name]).astype(np.float32) for i in session.get_inputs()}}
outputs = session.run(None, feed)
'''


def runner(model_path: str, inputs: dict[str, np.ndarray], *, names: list[str], batch_size: int,
           cores: int | None, precision: str | None = None, tmp: str | None = None, optimize: bool = True):
    """The model in one session: ``run()`` runs one inference of ``inputs``, ``run(feed)`` of other arrays;
    both return the outputs (``tmp``: where the session writes; it must outlive it)."""
    if tmp is None:
        tmp = tempfile.mkdtemp(prefix="sparsify-ort-run-")
    sess = _session(model_path, cores, tmp, profile=False, inputs=inputs, optimize=optimize)
    base = _feed(sess, inputs)

    def run(feed: dict[str, np.ndarray] | None = None) -> list:
        return _run(sess, base if feed is None else _feed(sess, feed))

    return run


class Timed(TimedModel):
    """ONNX Runtime at ``ORT_ENABLE_ALL`` on the CPU provider (:mod:`sparsify_tui.engines.timed`)."""

    def runner(self, tmp: str | None = None):
        return runner(self.path, self.inputs, names=self.names, batch_size=self.batch_size, cores=self.cores,
                      tmp=tmp)

    def _benchmark(self, **kw: Any) -> dict[str, Any]:
        return benchmark(self.path, self.inputs, cores=self.cores, **kw)

    def _profile(self, info, *, level: float | None = None, **kw: Any) -> dict[str, Any]:
        return profile(self.path, info, self.inputs, cores=self.cores, **kw)
