"""OpenVINO backend (CPU plugin): runners, latency benchmark and per-layer profile.

OpenVINO reads ONNX files directly. Every compile here asks for:

* the **precision** the user chose, never the plugin's default (on CPUs with
  bf16 support it runs bf16 unless told otherwise): ``fp32`` ->
  ``INFERENCE_PRECISION_HINT=f32``; ``bf16`` / ``fp16`` -> that hint, only
  when the plugin lists the capability (``OPTIMIZATION_CAPABILITIES``; asked
  for f16 on a CPU without it, OpenVINO silently runs bf16, so we refuse);
  ``int8`` -> the QDQ (QuantizeLinear/DequantizeLinear) file runs as is, the
  layers left in float in f32. The precision the compiled model reports is
  checked against the request;
* **cores**: ``INFERENCE_NUM_THREADS=cores``, one stream, the latency hint;
  the threads run inside the process's CPU mask (the worker child sets it,
  see :mod:`sparsify_tui.engines.worker`) without being pinned one per CPU
  (``ENABLE_CPU_PINNING=False``: on a machine shared with other processes a
  pinned thread waits for its busy CPU: pinned runs were 8x slower than
  unpinned ones, interleaved, on a loaded 2-core machine);
* **static shapes**: the model is reshaped to the inputs' shapes (the batch
  size is their first dimension) before compiling.

Per-layer times come from the performance counters (``PERF_COUNT``): after
each timed inference, ``InferRequest.profiling_info`` lists every node of the
compiled (runtime) graph with its status, ``real_time`` and the kernel it ran
(``exec_type``, e.g. ``brgconv_avx512_f32`` or ``brgconv_avx512_amx_bf16``).
The runtime graph's nodes carry ``originalLayersNames`` (the names of the
model nodes fused into them). OpenVINO names a node after the ONNX node (or
its output tensor), sometimes with a suffix (``/WithoutBiases`` for a Conv
whose bias became a separate Add); fusions often keep only the LAST fused
node's name (Conv+BatchNorm is named after the BatchNorm's Multiply, MatMul+Add
after the Add). So a step anchors the ONNX layers its names resolve to and
the rules of :mod:`sparsify_tui.engines.mapping` place the rest (a Conv whose
name was lost belongs to its consumer's step). Steps that anchor no layer --
``Reorder`` (layout changes), ``Convert`` (precision changes) and nodes
OpenVINO inserted -- become engine-internal rows, named by their type.
"""

from __future__ import annotations

import functools
import re
import statistics
import time
from typing import Any, Callable

import numpy as np

from sparsify_tui.engines import registry
from sparsify_tui.engines.timed import TimedModel, timed_runs
from sparsify_tui.errors import EngineError, EngineUnavailableError, UsageError

INSTALL_HINT = registry.get_engine("openvino").install_hint
PRECISIONS = registry.get_engine("openvino").precisions_known
# our precision -> (OpenVINO inference precision hint, plugin capability that must be listed)
_HINTS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16"), "int8": ("f32", "INT8")}
_SUFFIXES = re.compile(r"(/WithoutBiases|/WithoutBias|_original|/sink_port_\d+)$")


def available() -> bool:
    return registry.get_engine("openvino").available()


def version() -> str | None:
    """The installed distribution's version (e.g. ``2026.4.1``), without importing openvino."""
    return registry.get_engine("openvino").version()


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise EngineUnavailableError(INSTALL_HINT) from None
    return ov


@functools.lru_cache(maxsize=1)
def _core():
    return _ov().Core()


def capabilities() -> list[str]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` here (e.g. FP32, BF16, INT8)."""
    try:
        return [str(c) for c in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except EngineUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"openvino found no usable CPU device: {_first_line(exc)}") from None


def normalize_precision(precision: str | None) -> str:
    """``fp32`` (default), ``bf16``, ``fp16`` or ``int8``; UsageError otherwise."""
    return registry.normalize_precision(precision)


def check_precision(precision: str | None) -> str:
    """The normalized precision if this CPU can run it with OpenVINO; EngineUnavailableError otherwise."""
    p = normalize_precision(precision)
    _, cap = _HINTS[p]
    caps = capabilities()
    if cap not in caps:
        need = {"bf16": ": it needs AVX-512 BF16 or AMX", "fp16": ": it needs AMX-FP16 or an ARM CPU with fp16 "
                "arithmetic"}.get(p, "")
        offered = ", ".join(c.lower() for c in caps if c in ("FP32", "BF16", "FP16", "INT8")) or "nothing"
        raise EngineUnavailableError(f"this CPU cannot run {p} with openvino{need} (openvino offers here: {offered})")
    return p


def _first_line(exc: BaseException) -> str:
    """An OpenVINO exception in one line: its sentences without the source-location lines."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    # OpenVINO's messages start with "Exception from src/...cpp:123:" / "Check 'x' failed at ...:" lines
    useful = [re.sub(r"^\[ *\w+ *\]\s*", "", ln) for ln in lines
              if not re.match(r"^(Exception from |Check '.*' failed at )", ln)]
    useful = [ln.lstrip("- ").strip() for ln in useful if ln.lstrip("- ").strip() and ln != "Summary:"]
    text = " ".join(useful or lines)
    return text[:300] if text else type(exc).__name__


def has_qdq(model_path: str) -> bool:
    """Whether the ONNX model holds QuantizeLinear/DequantizeLinear (or QLinear*) nodes."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
               or n.op_type.startswith("QLinear") for n in proto.graph.node)


def _config(precision: str, cores: int | None, profile: bool) -> dict:
    ov = _ov()
    import openvino.properties as props
    import openvino.properties.hint as hints

    hint, _ = _HINTS[precision]
    cfg: dict = {
        hints.inference_precision: getattr(ov.Type, hint),
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        hints.execution_mode: hints.ExecutionMode.PERFORMANCE,
        props.num_streams: 1,
        props.enable_profiling: bool(profile),
    }
    if cores:
        cfg[props.inference_num_threads] = int(cores)
    # threads stay inside the process's CPU mask but are not pinned to one CPU each: on a machine
    # shared with other work, pinned threads wait for their busy CPU (measured 8x slower here)
    cfg[hints.enable_cpu_pinning] = False
    return cfg


def _read(model_path: str):
    try:
        return _core().read_model(str(model_path))
    except EngineUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError / OVError
        raise EngineError(f"openvino could not read {model_path}: {_first_line(exc)}") from None


def _port_names(port) -> list[str]:
    """A port's tensor names, the main one first (empty for an unnamed port)."""
    try:
        names = sorted(port.get_names())
    except Exception:  # noqa: BLE001 - no names
        return []
    try:
        main = port.get_any_name()
    except Exception:  # noqa: BLE001
        return names
    return [main] + [n for n in names if n != main]


def compile_model(model_path: str, inputs: dict[str, np.ndarray], *, precision: str = "fp32",
                  cores: int | None = None, profile: bool = False):
    """Read, reshape to the inputs' shapes and compile ``model_path``; returns
    ``(compiled model, input names in port order, seconds spent)``."""
    precision = check_precision(precision)
    if precision == "int8" and not has_qdq(model_path):
        raise UsageError(f"precision int8 runs a quantized (QDQ) model as is, and {model_path} has no "
                         "QuantizeLinear/DequantizeLinear nodes: quantize it first (for instance with "
                         "onnxruntime.quantization.quantize_static)")
    t0 = time.perf_counter()
    model = _read(model_path)
    order: list[str] = []
    shapes = {}
    for port in model.inputs:
        names = _port_names(port)
        name = next((n for n in names if n in inputs), None)
        if name is None:
            raise EngineError(f"no data for the model input {names[0] if names else '?'!r}")
        order.append(name)
        shapes[port] = list(np.shape(inputs[name]))
    try:
        model.reshape(shapes)
    except Exception as exc:  # noqa: BLE001
        from sparsify_tui.engines.inputs import declared_shapes, shapes_fed

        fed = shapes_fed({n: inputs[n] for n in order}, declared_shapes(model_path))
        raise EngineError(f"openvino could not set the input shapes of {model_path} ({fed}): "
                          f"{_first_line(exc)}") from None
    try:
        compiled = _core().compile_model(model, "CPU", _config(precision, cores, profile))
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"openvino could not compile {model_path}: {_first_line(exc)}") from None
    applied = _applied_precision(compiled)
    want = _HINTS[precision][0]
    if applied and applied != want:
        raise EngineError(f"openvino ran {model_path} in {applied} although {precision} was asked for")
    return compiled, order, time.perf_counter() - t0


def _applied_precision(compiled) -> str:
    """The compiled model's inference precision: ``f32``, ``bf16`` or ``f16``."""
    import openvino.properties.hint as hints

    try:
        t = compiled.get_property(hints.inference_precision)
    except Exception:  # noqa: BLE001
        return ""
    try:
        return str(t.get_type_name())  # f32, bf16, f16
    except Exception:  # noqa: BLE001
        return str(t)


class Runner:
    """One compiled model and one infer request: ``runner()`` runs one inference of the inputs it was
    made with, ``runner(feed)`` of other arrays of the same shapes (``{input name: array}``); both
    return the outputs (new arrays, in the model's output order).

    Attributes: ``engine`` ("openvino"), ``engine_version``, ``precision`` (fp32|bf16|fp16|int8),
    ``inference_precision`` (what the compiled model reports: f32|bf16|f16), ``cores`` (threads the
    compiled model uses), ``batch_size``, ``input_names``, ``output_names``, ``compile_s``.
    """

    engine = "openvino"

    def __init__(self, compiled, order: list[str], inputs: dict[str, np.ndarray], precision: str,
                 compile_s: float, model_path: str) -> None:
        import openvino.properties as props

        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._dtypes = [port.get_element_type().to_dtype() for port in compiled.inputs]
        self._shapes = [tuple(port.get_shape()) for port in compiled.inputs]
        self.input_names = list(order)
        self.output_names = [(_port_names(p) or [f"output_{i}"])[0] for i, p in enumerate(compiled.outputs)]
        self.model_path = str(model_path)
        self.precision = precision
        self.inference_precision = _applied_precision(compiled)
        self.engine_version = version()
        self.compile_s = compile_s
        try:
            self.cores = int(compiled.get_property(props.inference_num_threads))
        except Exception:  # noqa: BLE001
            self.cores = None
        self.batch_size = int(self._shapes[0][0]) if self._shapes and self._shapes[0] else 1
        self._feed = self._prepare(inputs)

    def _prepare(self, feed: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
        out = {}
        for i, (name, dtype, shape) in enumerate(zip(self.input_names, self._dtypes, self._shapes)):
            if name not in feed:
                raise EngineError(f"no data for the model input {name!r}")
            arr = np.require(feed[name], dtype=dtype, requirements="C")  # (0-d stays 0-d)
            if tuple(arr.shape) != shape:
                raise EngineError(f"input {name!r} has shape {list(arr.shape)}, the compiled model takes "
                                  f"{list(shape)}")
            out[i] = arr
        return out

    def __call__(self, feed: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        data = self._feed if feed is None else self._prepare(feed)
        try:
            res = self._request.infer(data, share_inputs=True, share_outputs=False)
        except Exception as exc:  # noqa: BLE001
            from sparsify_tui.engines.inputs import declared_shapes, shapes_fed

            fed = dict(zip(self.input_names, self._shapes)) if feed is None else feed
            raise EngineError(f"openvino failed to run {self.model_path} "
                              f"({shapes_fed(fed, declared_shapes(self.model_path))}): {_first_line(exc)}") from None
        return list(res.to_tuple())

    def profiling_info(self):
        """The performance counters of the last inference (compiled with ``profile=True`` only)."""
        return self._request.profiling_info

    @property
    def runtime_model(self):
        return self._compiled.get_runtime_model()


def _batch_of(path: str, inputs: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    """The inputs at ``batch_size`` along each one's batch dimension (the model's: not always the first;
    an input without one, e.g. a 0-d sample rate, stays as it is)."""
    from sparsify_tui.engines.inputs import declared_shapes, rebatch

    return rebatch(inputs, batch_size, declared_shapes(path))


def _fed_batch(path: str, inputs: dict[str, np.ndarray]) -> int:
    from sparsify_tui.engines.inputs import declared_shapes, fed_batch

    return fed_batch(inputs, declared_shapes(path))


def make_runner(path: str, *, precision: str = "fp32", cores: int | None = None, batch_size: int = 1,
                inputs: dict[str, np.ndarray] | None = None, profile: bool = False) -> Runner:
    """Compile ``path`` with OpenVINO and return a :class:`Runner` (``runner() -> outputs``).

    ``inputs``: ``{input name: array}`` giving the shapes (their first dimension is tiled or cut to
    ``batch_size``); None: random inputs that fit the model (as the perf profile makes them).
    Raises EngineUnavailableError (openvino missing, precision this CPU cannot run), UsageError
    (bad precision name, int8 on a model without QDQ nodes) or EngineError (cannot read/compile).
    """
    if not available():
        raise EngineUnavailableError(INSTALL_HINT)
    batch_size = max(1, int(batch_size))
    if inputs is None:
        from sparsify_tui.engines.inputs import make_inputs

        inputs = make_inputs(str(path), batch_size, {})
    inputs = _batch_of(str(path), inputs, batch_size)
    compiled, order, compile_s = compile_model(str(path), inputs, precision=precision, cores=cores,
                                               profile=profile)
    return Runner(compiled, order, inputs, normalize_precision(precision), compile_s, str(path))


def benchmark(model_path: str, inputs: dict[str, np.ndarray], *, precision: str = "fp32",
              cores: int | None = None, iterations: int = 20, warmup: int = 5, repeats: int = 3,
              heartbeat: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Compile once, then ``repeats`` blocks of ``iterations`` timed runs (ms per batch).

    Returns ``{"repeat_ms", "iteration_ms", "compile_s", "precision", "inference_precision", "threads"}``.
    """
    batch = _fed_batch(model_path, inputs)
    run = make_runner(model_path, precision=precision, cores=cores, batch_size=batch, inputs=inputs)
    res = timed_runs(run, iterations=iterations, warmup=warmup, repeats=repeats, heartbeat=heartbeat)
    return {**res, "compile_s": run.compile_s,
            "precision": run.precision, "inference_precision": run.inference_precision, "threads": run.cores}


# ---------------------------------------------------------------- per-layer profile
_INTERNAL_TYPES = ("Reorder", "Convert")  # re-layouts and precision changes OpenVINO inserted
_AUTO_ID = re.compile(r"_\d{3,}")  # instance counters in names OpenVINO generated (change between compiles)


def _clean(name: str) -> str:
    return _AUTO_ID.sub("", name) or name


def _runtime_nodes(compiled) -> dict[str, dict]:
    """Runtime graph node name -> {type, names (fused original names), precision, consumers, producers}."""
    nodes: dict[str, dict] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        ri = op.get_rt_info()

        def get(key: str, ri=ri) -> str:
            try:
                return str(ri[key].astype(str))
            except Exception:  # noqa: BLE001 - a key this version does not set
                return ""

        name = op.get_friendly_name()
        consumers = []
        for out in op.outputs():
            for t in out.get_target_inputs():
                consumers.append(t.get_node().get_friendly_name())
        producers = [op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())]
        nodes[name] = {"type": get("layerType"), "names": [n for n in get("originalLayersNames").split(",") if n],
                       "precision": get("runtimePrecision"), "consumers": consumers, "producers": producers}
    return nodes


def _resolver(info) -> Callable[[str], str | None]:
    """OpenVINO node name -> ONNX layer id (by node name or output tensor, known suffixes removed)."""
    by_name: dict[str, str] = {}
    producer: dict[str, str] = {}
    for m in info.layers:
        if m.graph_path:
            continue
        if m.name:
            by_name.setdefault(m.name, m.id)
        for t in m.outputs:
            if t:
                producer.setdefault(t, m.id)

    def resolve(name: str) -> str | None:
        for cand in (name, _SUFFIXES.sub("", name)):
            lid = by_name.get(cand) or producer.get(cand)
            if lid is not None:
                return lid
        return None

    return resolve


def _step_anchors(names: list[str], nodes: dict[str, dict], resolve) -> dict[str, list[str]]:
    """Executed node -> the ONNX layer ids it anchors.

    A node anchors the layers its own or fused names resolve to. A node without any (an OpenVINO-made
    name such as ``MVN_77``, the first half of a LayerNormalization) that is not a Reorder/Convert
    takes the anchors of the nearest executed node downstream in the runtime graph (upstream if none),
    so its time counts for the layer it computes, not as an engine-internal row.
    """
    own: dict[str, list[str]] = {}
    for n in names:
        node = nodes.get(n, {})
        ids: list[str] = []
        for cand in [n] + list(node.get("names", [])):
            lid = resolve(cand)
            if lid is not None and lid not in ids:
                ids.append(lid)
        own[n] = ids
    executed = set(names)

    def nearest(start: str, key: str) -> list[str]:
        seen, todo = {start}, list(nodes.get(start, {}).get(key, []))
        while todo:
            n = todo.pop(0)
            if n in seen:
                continue
            seen.add(n)
            if own.get(n) and n in executed:
                return own[n]
            if n not in executed or not own.get(n):
                todo.extend(nodes.get(n, {}).get(key, []))
        return []

    out: dict[str, list[str]] = {}
    for n in names:
        if own[n] or nodes.get(n, {}).get("type") in _INTERNAL_TYPES:
            out[n] = own[n]
        else:
            out[n] = nearest(n, "consumers") or nearest(n, "producers")
    return out


def _snapshot(run: Runner) -> dict[str, tuple[int, str, str]]:
    """Executed node -> (average real time in whole µs over every inference so far, node type, exec_type)."""
    out = {}
    for e in run.profiling_info():
        if e.status == e.Status.EXECUTED:
            out[e.node_name] = (round(e.real_time.total_seconds() * 1e6), str(e.node_type), str(e.exec_type))
    return out


def _window_ms(before: dict, n_before: int, after: dict, n_after: int) -> dict[str, float]:
    """Mean ms per inference of each node over the inferences between two snapshots.

    The CPU plugin's counter of a node is ``total // runs`` in whole µs over all inferences since the
    compile (the graph's nodes are shared by every request), so the total after n runs lies in
    ``[avg * n, avg * n + n - 1]``: the middle of that range, differenced between the two snapshots.
    """
    n = n_after - n_before
    out = {}
    for name, (avg, _, _) in after.items():
        total_after = avg * n_after + (n_after - 1) / 2.0
        b = before.get(name)
        total_before = 0.0 if b is None or n_before == 0 else b[0] * n_before + (n_before - 1) / 2.0
        out[name] = max(0.0, (total_after - total_before) / n / 1000.0)
    return out


def _timed_windows(run, warmup: int, iterations: int, repeats: int,
                   heartbeat: Callable[[str], Any] | None) -> tuple[list[float], list[dict[str, float]], dict]:
    """(wall ms of every timed run, each repeat's per-node ms window, the last counter snapshot)."""
    done = 0
    for _ in range(max(0, int(warmup))):
        run()
        done += 1
    snap = _snapshot(run) if done else {}
    run_ms: list[float] = []
    windows: list[dict[str, float]] = []
    for r in range(repeats):
        for _ in range(iterations):
            t = time.perf_counter()
            run()
            run_ms.append((time.perf_counter() - t) * 1000.0)
        after = _snapshot(run)
        windows.append(_window_ms(snap, done, after, done + iterations))
        snap, done = after, done + iterations
        if heartbeat:
            heartbeat(f"repeat {r + 1}/{repeats}")
    return run_ms, windows, snap


def _attributed_repeats(info, order: list[str], nodes: dict, kind: dict, windows: list[dict[str, float]],
                        run_ms: list[float], iterations: int) -> list[dict[str, Any]]:
    """Each repeat's node times attributed to the ONNX layers, with its model time and engine-internal rows."""
    from sparsify_tui.engines.mapping import Step, attribute

    anchors = _step_anchors(order, nodes, _resolver(info))
    labels = []
    for n in order:
        node_type = nodes.get(n, {}).get("type") or kind[n][0]
        labels.append((n if anchors[n] else f"{node_type}: {_clean(n)}" if _clean(n) != node_type else node_type,
                       node_type))
    refs = info.refs()
    per_repeat = []
    for r, win in enumerate(windows):
        steps = [Step(name=label, ms=win.get(n, 0.0), anchors=list(anchors[n]), op_type=node_type)
                 for n, (label, node_type) in zip(order, labels)]
        att = attribute(refs, steps)
        chunk = run_ms[r * iterations:(r + 1) * iterations]
        model_ms = statistics.median(chunk)
        node_sum = sum(win.values())
        internal = [{"id": rid, "name": name, "ms": ms} for rid, name, ms in att.internal]
        if model_ms - node_sum > 0:
            internal.append({"id": "engine:run overhead", "name": "run overhead (not in any node)",
                             "ms": model_ms - node_sum})
        per_repeat.append({"model_ms": model_ms, "mean_ms": statistics.fmean(chunk), "node_ms": node_sum,
                           "layer_ms": att.layer_ms, "internal": internal, "att": att, "steps": steps})
    return per_repeat


def _kernels(att, steps: list, order: list[str], kind: dict, nodes: dict) -> tuple[dict[str, str], dict[str, str]]:
    """({layer or internal row: exec_type of the node that computed it}, {same: that node's precision})."""
    step_of_key: dict[str, int] = {}
    used: dict[str, int] = {}
    for i, st in enumerate(steps):
        used[st.name] = used.get(st.name, 0) + 1
        step_of_key[st.name if used[st.name] == 1 else f"{st.name}#{used[st.name]}"] = i
    kernels, layer_precision = {}, {}
    for lid, key in att.owner.items():  # the kernel that computed each layer: its primary owner's
        i = step_of_key.get(key)
        if i is not None:
            kernels[lid] = kind[order[i]][1]
            layer_precision[lid] = nodes.get(order[i], {}).get("precision", "")
    unanchored = [i for i, st in enumerate(steps) if not st.anchors]
    for (rid, _, _), i in zip(att.internal, unanchored):
        kernels[rid] = kind[order[i]][1]
        layer_precision[rid] = nodes.get(order[i], {}).get("precision", "")
    return kernels, layer_precision


def profile(model_path: str, info, inputs: dict[str, np.ndarray], *, precision: str = "fp32",
            cores: int | None = None, iterations: int = 10, warmup: int = 5, repeats: int = 1,
            heartbeat: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Profile the model with the performance counters: per-layer times and the model time per repeat.

    The counters hold each node's average since the compile (see :func:`_window_ms`), so a node's time
    in a repeat is its mean over that repeat's ``iterations`` runs; the model time of a repeat is the
    median wall time of its runs (one synchronous inference each). The layer times reported are those
    of the repeat with the median model time; what no node accounts for in it becomes the
    engine-internal row ``engine:run overhead``.

    Returns the keys of :func:`sparsify_tui.engines.ort.profile` (``repeat_ms``, ``iteration_ms``,
    ``layer_ms``, ``owner``, ``groups``, ``internal``, ``steps``, ``engine_s``) and: ``repeats``
    [{``model_ms``, ``mean_ms``, ``layer_ms``, ``internal``}] per repeat; ``kernels`` {layer or
    engine-internal row id: ``exec_type`` of the node that computed it}; ``layer_precision`` {same
    ids: that node's runtime precision}; ``step_info`` [{name, type, exec_type, precision, ms,
    layers}] for every executed node; ``precision`` (asked for), ``inference_precision`` (applied:
    f32|bf16|f16), ``threads``; ``counted_share``: the nodes' summed time over the mean wall time of
    the same runs (median over the repeats).
    """
    iterations = max(1, int(iterations))
    repeats = max(1, int(repeats))
    t0 = time.perf_counter()
    batch = _fed_batch(model_path, inputs)
    run = make_runner(model_path, precision=precision, cores=cores, batch_size=batch, inputs=inputs,
                      profile=True)
    run_ms, windows, snap = _timed_windows(run, warmup, iterations, repeats, heartbeat)
    kind = {name: (node_type, exec_type) for name, (_, node_type, exec_type) in snap.items()}
    order = list(snap)  # execution order
    nodes = _runtime_nodes(run._compiled)
    per_repeat = _attributed_repeats(info, order, nodes, kind, windows, run_ms, iterations)
    engine_s = time.perf_counter() - t0
    ranked = sorted(range(repeats), key=lambda i: per_repeat[i]["model_ms"])
    mid = per_repeat[ranked[(repeats - 1) // 2]]
    att, steps = mid["att"], mid["steps"]
    kernels, layer_precision = _kernels(att, steps, order, kind, nodes)
    step_info = [{"name": order[i], "type": st.op_type, "exec_type": kind[order[i]][1],
                  "precision": nodes.get(order[i], {}).get("precision", ""), "ms": st.ms, "layers": list(st.anchors)}
                 for i, st in enumerate(steps)]
    shares = [p["node_ms"] / p["mean_ms"] for p in per_repeat if p["mean_ms"] > 0]
    return {
        "repeat_ms": [p["model_ms"] for p in per_repeat], "iteration_ms": run_ms,
        "layer_ms": mid["layer_ms"], "owner": att.owner, "groups": att.groups, "internal": mid["internal"],
        "steps": len(steps), "engine_s": engine_s,
        "repeats": [{k: p[k] for k in ("model_ms", "mean_ms", "layer_ms", "internal")} for p in per_repeat],
        "kernels": kernels, "layer_precision": layer_precision, "step_info": step_info,
        "precision": run.precision, "inference_precision": run.inference_precision, "threads": run.cores,
        "counted_share": statistics.median(shares) if shares else 0.0,
    }


# what `sparsify-tui deploy --export` writes next to the exported model (str.format fields: model, precision,
# sparse, cores, batch, shapes, hint, int8_note)
DEPLOY_SNIPPET = '''"""Run {model} with OpenVINO ({precision}{sparse}), as measured by sparsify-tui deploy."""
import numpy as np
import openvino as ov

core = ov.Core()
compiled = core.compile_model("{model}", "CPU", {{
    "INFERENCE_PRECISION_HINT": "{hint}",  # {precision}{int8_note}
    "PERFORMANCE_HINT": "LATENCY",
    "INFERENCE_NUM_THREADS": {cores},
}})
request = compiled.create_infer_request()
feed = {{p.get_any_name(): np.random.rand(*{shapes}[p.get_any_name()]).astype(np.float32) for p in compiled.inputs}}
outputs = request.infer(feed)
'''


def runner(model_path: str, inputs: dict[str, np.ndarray], *, names: list[str], batch_size: int,
           cores: int | None, precision: str | None = None, tmp: str | None = None) -> Runner:
    """The model compiled at ``precision`` (:func:`make_runner`): ``run()`` or ``run(feed)`` -> outputs."""
    return make_runner(model_path, precision=precision or "fp32", cores=cores, batch_size=batch_size,
                       inputs=inputs)


class Timed(TimedModel):
    """OpenVINO's CPU plugin at the precision hint (:mod:`sparsify_tui.engines.timed`)."""

    def runner(self, tmp: str | None = None) -> Runner:
        return runner(self.path, self.inputs, names=self.names, batch_size=self.batch_size, cores=self.cores,
                      precision=self.precision)

    def _benchmark(self, **kw: Any) -> dict[str, Any]:
        return benchmark(self.path, self.inputs, precision=self.precision or "fp32", cores=self.cores, **kw)

    def _profile(self, info, *, level: float | None = None, **kw: Any) -> dict[str, Any]:
        return profile(self.path, info, self.inputs, precision=self.precision or "fp32", cores=self.cores, **kw)
