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
* **cores**: ``INFERENCE_NUM_THREADS=cores``, one stream, the latency hint,
  threads pinned (``ENABLE_CPU_PINNING``) inside the process's CPU mask (the
  worker child sets it, see :mod:`sparsify_tui.engines.worker`);
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

from sparsify_tui.errors import EngineError, EngineUnavailableError, UsageError

INSTALL_HINT = "openvino is not installed; pip install 'sparsify-tui[openvino]' (Python 3.10 or newer)"
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# our precision -> (OpenVINO inference precision hint, plugin capability that must be listed)
_HINTS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16"), "int8": ("f32", "INT8")}
_SUFFIXES = re.compile(r"(/WithoutBiases|/WithoutBias|_original|/sink_port_\d+)$")


def available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # pragma: no cover
        return False


def version() -> str | None:
    """The installed distribution's version (e.g. ``2026.4.1``), without importing openvino."""
    try:
        from importlib.metadata import version as v

        return v("openvino")
    except Exception:  # noqa: BLE001
        return None


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
    p = (precision or "fp32").strip().lower()
    p = {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16", "bfloat16": "bf16", "i8": "int8"}.get(p, p)
    if p not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return p


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
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # OpenVINO's messages start with "Exception from src/...cpp:123:" lines; keep the first real sentence
    useful = [ln for ln in lines if not re.match(r"^(Exception from |Check '.*' failed at )", ln)
              and not re.match(r"^\[ *(GENERAL_ERROR|NOT_IMPLEMENTED|ERROR) *\]$", ln)]
    for ln in useful or lines:
        ln = re.sub(r"^\[ *\w+ *\]\s*", "", ln)
        if ln:
            return ln[:300]
    return type(exc).__name__


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
        cfg[hints.enable_cpu_pinning] = True
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
        dims = ", ".join(f"{n}={'x'.join(map(str, np.shape(inputs[n])))}" for n in order)
        raise EngineError(f"openvino could not set the input shapes {dims} of {model_path}: "
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
            arr = np.ascontiguousarray(feed[name], dtype=dtype)
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
            raise EngineError(f"openvino failed to run {self.model_path} (batch size {self.batch_size}): "
                              f"{_first_line(exc)}") from None
        return list(res.to_tuple())

    def profiling_info(self):
        """The performance counters of the last inference (compiled with ``profile=True`` only)."""
        return self._request.profiling_info

    @property
    def runtime_model(self):
        return self._compiled.get_runtime_model()


def _batch_of(inputs: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    out = {}
    for k, v in inputs.items():
        v = np.asarray(v)
        if v.ndim and v.shape[0] != batch_size:
            reps = -(-batch_size // max(1, v.shape[0]))
            v = np.concatenate([v] * reps, axis=0)[:batch_size]
        out[k] = v
    return out


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
        from sparsify_tui.profiles.inputs import make_inputs

        inputs = make_inputs(str(path), batch_size, {})
    inputs = _batch_of(inputs, batch_size)
    compiled, order, compile_s = compile_model(str(path), inputs, precision=precision, cores=cores,
                                               profile=profile)
    return Runner(compiled, order, inputs, normalize_precision(precision), compile_s, str(path))


def benchmark(model_path: str, inputs: dict[str, np.ndarray], *, precision: str = "fp32",
              cores: int | None = None, iterations: int = 20, warmup: int = 5, repeats: int = 3,
              heartbeat: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Compile once, then ``repeats`` blocks of ``iterations`` timed runs (ms per batch).

    Returns ``{"repeat_ms", "iteration_ms", "compile_s", "precision", "inference_precision", "threads"}``.
    """
    batch = next((int(np.shape(v)[0]) for v in inputs.values() if np.ndim(v)), 1)
    run = make_runner(model_path, precision=precision, cores=cores, batch_size=batch, inputs=inputs)
    for _ in range(max(0, int(warmup))):
        run()
    repeat_ms, all_ms = [], []
    for r in range(max(1, int(repeats))):
        times = []
        for _ in range(max(1, int(iterations))):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1000.0)
        all_ms += times
        repeat_ms.append(statistics.median(times))
        if heartbeat:
            heartbeat(f"repeat {r + 1}")
    return {"repeat_ms": repeat_ms, "iteration_ms": all_ms, "compile_s": run.compile_s,
            "precision": run.precision, "inference_precision": run.inference_precision, "threads": run.cores}
