"""Quantization profile: each prunable layer's sensitivity to INT8, and the whole model quantized.

**Per layer** (simulated, in one ONNX Runtime session): the layer alone is
quantized as an INT8 kernel would see it, and the change of the model's
outputs is measured on the samples like the loss profile does
(:func:`sparsify_tui.metrics.compare_outputs`, a metric chosen per output and
named in ``output_metrics``; per-output values in each row's ``output_values``):

* its weight is quantize-dequantized **per output channel, symmetric, int8**:
  ``scale_c = max|w_c| / 127``, ``w' = clip(round(w / scale_c), -127, 127) * scale_c``
  (the channel axis is the output-channel axis of the stored tensor: 0 for
  Conv and Gemm with transB=1, 1 for ConvTranspose and Gemm without transB,
  the last axis for MatMul; per tensor when a Transpose/Reshape stands between
  the stored tensor and the layer). A weight already stored as integers
  behind DequantizeLinear is already quantized and is left as is.
* its activation input is fake-quantized **per tensor, asymmetric uint8**,
  calibrated on the samples: ``min``/``max`` of that input over all samples
  (widened to include 0), ``scale = (max - min) / 255``,
  ``zero_point = round(-min / scale)``; ``x' = (clip(floor(x/scale + zp + 0.5), 0, 255) - zp) * scale``.
  This is inserted before the layer inside the model ONNX Runtime runs (float
  ops, so it works in every opset). Layers inside If/Loop bodies, or with a
  non-float32 activation, get the weight part only (``activation_quantized`` false).

It uses the same single session as the loss profile
(:class:`~sparsify_tui.profiles.downstream.DownstreamModel`: only the part of
the model downstream of the layer runs; the reference is the dense model).

**Whole model**: ONNX Runtime's ``quantize_static`` (QDQ format, or the
QOperator format when QDQ fails, e.g. per-channel QDQ before opset 13; per-channel
int8 weights, uint8 activations, MinMax calibration with a
``CalibrationDataReader`` over the samples); ``output_change`` is measured the
same way against the fp32 model (with ``output_change_metric``, ``_unit``,
``_reading`` and the per-output ``output_change_outputs`` beside it), and ``fp32_ms`` / ``int8_ms`` are medians of
several timed runs of each model in this process with the same session
options (``speedup = fp32_ms / int8_ms``). When ONNX Runtime cannot quantize
the model, ``model`` holds ``error`` and the layers are still measured.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from sparsify_tui.errors import UsageError
from sparsify_tui.profiles import SCHEMA_VERSION
from sparsify_tui.analysis.loader import bounded_output_names
from sparsify_tui.metrics import LEGACY_KIND, OUTPUT_CHANGE_HELP, compare_outputs, plan_notes, plan_to_json
from sparsify_tui.progress import check_cancel
from sparsify_tui.engines.inputs import load_samples_for
from sparsify_tui.profiles.ranks import sensitivity_ranks
from sparsify_tui.engines.ort import session_options

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph

QUANT_HELP = (
    "INT8 sensitivity: the layer alone is quantized (weights per output channel, symmetric int8; its input "
    "activation per tensor, uint8, calibrated on the samples' min/max) and the change of the model's outputs "
    "is measured. " + OUTPUT_CHANGE_HELP
)

LATENCY_RUNS = 10
LATENCY_WARMUP = 3


# ---------------------------------------------------------------- weight fake quantization
def weight_channel_axis(layer) -> int | None:
    """Output-channel axis of the stored weight, or None for per-tensor."""
    ref = layer.weight
    transform = [t for t in (ref.transform if ref else []) if t not in ("Identity", "Cast")]
    if transform:
        return None
    shape = layer.weight_shape or []
    if not shape:
        return None
    op = layer.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        return 0
    if op == "ConvTranspose":
        return 1 if len(shape) > 1 else 0
    if op == "Gemm":
        trans_b = int((layer.attributes or {}).get("transB", 0) or 0)
        if layer.inputs and len(layer.inputs) > 1 and ref and layer.inputs[1] == ref.name:
            return 0 if trans_b else (1 if len(shape) > 1 else 0)
        return None
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        if layer.inputs and len(layer.inputs) > 1 and ref and layer.inputs[1] == ref.name:
            return len(shape) - 1
        return None
    return None


def fake_quant_weight(w: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric int8 quantize-dequantize, per channel along ``axis`` (per tensor when None)."""
    w = np.asarray(w)
    wf = w.astype(np.float64)
    if axis is None or w.ndim == 0:
        amax = np.max(np.abs(wf)) if wf.size else 0.0
        scale = amax / 127.0
        if scale == 0:
            return w.copy()
        return (np.clip(np.round(wf / scale), -127, 127) * scale).astype(w.dtype)
    axis = axis % w.ndim
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(wf), axis=red, keepdims=True) if wf.size else np.zeros([1] * w.ndim)
    scale = amax / 127.0
    safe = np.where(scale == 0, 1.0, scale)
    q = np.clip(np.round(wf / safe), -127, 127) * safe
    return np.where(scale == 0, wf, q).astype(w.dtype)


def activation_qparams(lo: float, hi: float) -> tuple[float, float]:
    """(scale, zero point) of asymmetric uint8 quantization of the range [lo, hi] (widened to include 0)."""
    lo, hi = min(0.0, float(lo)), max(0.0, float(hi))
    if hi - lo <= 0 or not np.isfinite(hi - lo):
        return 1.0, 0.0
    scale = (hi - lo) / 255.0
    zp = float(np.clip(np.round(-lo / scale), 0, 255))
    return float(np.float32(scale)), zp


# ---------------------------------------------------------------- whole model
class CalibrationReader:
    """ONNX Runtime CalibrationDataReader over our samples."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(samples)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - not used by MinMax
        pass


def _median_ms(session, feeds, runs: int = LATENCY_RUNS, warmup: int = LATENCY_WARMUP) -> float:
    for _ in range(warmup):
        session.run(None, feeds)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        ts.append((time.perf_counter() - t) * 1000.0)
    return float(np.median(ts))


def quantize_whole_model(model_path, samples: list[dict[str, np.ndarray]], *, cores: int | None = None,
                         runs: int = LATENCY_RUNS) -> dict:
    """Quantize with ONNX Runtime (QDQ, per channel) and measure output change and latency (see module doc)."""
    import onnxruntime as ort

    out: dict[str, Any] = {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                           "per_channel": True, "weight_type": "int8", "activation_type": "uint8"}
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as exc:  # pragma: no cover - part of onnxruntime
        out["error"] = f"onnxruntime.quantization is unavailable: {exc}"
        return out
    with tempfile.TemporaryDirectory(prefix="sparsify-quant-") as d:
        qpath = Path(d) / "model.int8.onnx"
        size = Path(model_path).stat().st_size
        errors = []
        # QDQ first; per-channel QDQ needs opset 13, so older models get the QOperator format
        import logging

        root = logging.getLogger()
        level = root.level
        for fmt_name, fmt in (("QDQ", QuantFormat.QDQ), ("QOperator", QuantFormat.QOperator)):
            try:
                root.setLevel(logging.ERROR)  # the quantizer logs advice ("pre-process ...") on the root logger
                quantize_static(
                    str(model_path), str(qpath), CalibrationReader(samples), quant_format=fmt,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, use_external_data_format=size > 1_800_000_000,
                )
                out["format"] = fmt_name
                break
            except Exception as exc:  # noqa: BLE001 - ORT's quantizer raises anything on unsupported models
                msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                errors.append(f"{fmt_name}: {type(exc).__name__}: {msg}")
            finally:
                root.setLevel(level)
        else:
            out["error"] = "; ".join(errors)
            return out
        if errors:
            out["notes"] = errors
        try:
            so = session_options(cores)
            fp32 = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
            int8 = ort.InferenceSession(str(qpath), session_options(cores), providers=["CPUExecutionProvider"])
            names = [o.name for o in fp32.get_outputs()]
            ref = [fp32.run(None, s) for s in samples]
            change = compare_outputs(ref, [int8.run(None, s) for s in samples], names=names,
                                     bounded=bounded_output_names(model_path))
            out.update(change.to_json())
            fp32_ms = _median_ms(fp32, samples[0], runs)
            int8_ms = _median_ms(int8, samples[0], runs)
            # once more in the other order: the machine warms up / throttles
            fp32_ms = min(fp32_ms, _median_ms(fp32, samples[0], runs))
            out.update({"fp32_ms": fp32_ms, "int8_ms": int8_ms,
                        "speedup": fp32_ms / int8_ms if int8_ms > 0 else None,
                        "timing_runs": runs, "int8_file_bytes": qpath.stat().st_size})
        except Exception as exc:  # noqa: BLE001 - a quantized model ORT cannot run
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            out["error"] = f"the quantized model could not be run: {msg}"
    return out




# ---------------------------------------------------------------- per layer
def _layer_runner(model_path, graph, threads, notes: list[str]) -> tuple[Any, str]:
    """The session the layers run in: downstream-only where it can be built, else the whole model
    fed its weights (a note says why)."""
    from sparsify_tui.profiles.downstream import DownstreamModel, _Unsupported
    from sparsify_tui.profiles.fedmodel import WeightFedModel

    try:
        impl: Any = DownstreamModel(model_path, graph, cores=threads, act_qdq=True)
        impl.build_session()
        return impl, "downstream"
    except _Unsupported as exc:
        notes.append(f"downstream-only runs unavailable ({exc}); weights only, the whole model runs each time")
        impl = WeightFedModel(model_path, graph, cores=threads)
        impl.build_session()
        return impl, "full"


class _LayerQuant:
    """The dense reference (outputs, and the boundary tensors of a downstream run) and one layer's
    measurement against it."""

    def __init__(self, impl, mode: str, sample_list: list[dict], model_path) -> None:
        from sparsify_tui.metrics import plan_outputs

        self.impl, self.mode, self.sample_list = impl, mode, sample_list
        self.dense: list[dict[str, np.ndarray]] = []
        self.boundary: list[dict[str, np.ndarray]] = []
        for s in sample_list:
            if mode == "downstream":
                outs, bnd = impl.run_dense(s)
                self.dense.append(dict(zip(impl.model_outputs, outs)))
                self.boundary.append(bnd)
            else:
                self.dense.append(dict(zip(impl.output_names, impl.run(s))))
                self.boundary.append({})
        self.names = list(self.dense[0]) if self.dense else []
        # each output's metric, fixed from the dense outputs for every layer
        self.plan = plan_outputs(self.dense, self.names, bounded=bounded_output_names(model_path))

    def _quantized_weight(self, layer, fw, row: dict) -> np.ndarray:
        if fw.quant is not None or fw.dense.dtype.kind not in "f":
            row["weight_quantized"] = "already"
            return fw.dense  # already stored as integers
        axis = weight_channel_axis(layer)
        row["weight_quantized"] = "per-channel" if axis is not None else "per-tensor"
        return fake_quant_weight(fw.dense, axis)

    def _activation(self, cut) -> tuple[float, float]:
        """Per-tensor uint8 parameters of the layer's activation input over all samples."""
        lo, hi = np.inf, -np.inf
        for smp, bnd in zip(self.sample_list, self.boundary):
            x = bnd.get(cut.act_input)
            if x is None:
                x = smp.get(cut.act_input)
            if x is not None and x.size:
                lo = min(lo, float(np.min(x)))
                hi = max(hi, float(np.max(x)))
        return activation_qparams(lo, hi) if np.isfinite(lo) else (1.0, 0.0)

    def measure(self, layer, stopped: Callable[[], bool]) -> dict[str, Any]:
        impl = self.impl
        row: dict[str, Any] = {"id": layer.id, "name": layer.name, "op_type": layer.op_type, "depth": layer.depth}
        fed = impl.layer_weight.get(layer.id)
        if fed is None:
            row.update({"sensitivity": None, "skipped": impl.skipped.get(layer.id, "not measurable")})
            return row
        if stopped():
            row["sensitivity"] = None
            return row
        wq = self._quantized_weight(layer, impl.weights[fed], row)
        act = None
        cut = impl.layer_cut.get(layer.id) if self.mode == "downstream" else None
        if cut is not None and cut.act_scale:
            act = self._activation(cut)
            row["activation_scale"] = act[0]
            row["activation_zero_point"] = act[1]
        row["activation_quantized"] = act is not None
        changed = []
        for j, smp in enumerate(self.sample_list):
            if self.mode == "downstream":
                outs = impl.run_cut(layer.id, smp, self.boundary[j], wq, act=act if cut is not None and cut.act_scale else None)
            else:
                outs = dict(zip(impl.output_names, impl.run(smp, {fed: wq})))
            changed.append(outs)
        change = compare_outputs(self.dense, changed, self.plan, self.names)
        row["sensitivity"] = change.value
        row["output_values"] = change.values_by_output()
        return row


def _measure_layers(quant: _LayerQuant, layers, workers: int, total: int, cancel, on_progress, on_partial) -> list[dict]:
    """Layers are measured concurrently, one single-threaded run per core (see LayerSwapRunner);
    rows come back in layer order."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()
    rows: list[dict[str, Any]] = []

    def stopped() -> bool:
        return stop.is_set() or (cancel is not None and cancel.is_set())

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sparsify-quant") as ex:
        futures = [ex.submit(quant.measure, layer, stopped) for layer in layers]
        try:
            for i, (layer, fut) in enumerate(zip(layers, futures)):
                check_cancel(cancel)
                row = fut.result()
                check_cancel(cancel)
                rows.append(row)
                if on_partial and row.get("sensitivity") is not None:
                    on_partial({"layer": layer.id, "sensitivity": row["sensitivity"]})
                if on_progress:
                    on_progress({"event": "progress", "done": i + 1, "total": total, "label": layer.id})
        except BaseException:
            stop.set()  # the remaining layers return at once
            for fut in futures:
                fut.cancel()
            raise
    for r, k in zip(rows, sensitivity_ranks([r.get("sensitivity") for r in rows])):
        r["rank"] = k
    return rows


def compute_quant(
    model_path: str | os.PathLike,
    *,
    data=None,
    samples: int = 4,
    input_shapes: dict[str, list[int]] | None = None,
    on_progress: Callable[[dict], Any] | None = None,
    on_partial: Callable[[dict], Any] | None = None,
    cancel=None,
    cores: int | None = None,
    graph: "ModelGraph | None" = None,
    whole_model: bool = True,
    latency_runs: int = LATENCY_RUNS,
) -> dict:
    """Measure the quantization profile in this process (the child process calls this)."""
    from sparsify_tui.analysis import analyze
    from sparsify_tui.settings import usable_cores

    t0 = time.perf_counter()
    if graph is None:
        graph = analyze(model_path, input_shapes=input_shapes or None)
    layers = list(graph.prunable_layers)
    sample_list = load_samples_for(model_path, graph, data=data, samples=samples, input_shapes=input_shapes)
    notes: list[str] = []
    workers = max(1, int(cores or usable_cores()))
    impl, mode = _layer_runner(model_path, graph, 1 if workers > 1 else cores, notes)
    quant = _LayerQuant(impl, mode, sample_list, model_path)
    names, plan = quant.names, quant.plan
    kinds = {m.name: LEGACY_KIND[m.kind] for m in plan}
    notes += plan_notes(plan)
    total = len(layers) + (1 if whole_model else 0)
    rows = _measure_layers(quant, layers, workers, total, cancel, on_progress, on_partial)
    measured = [r["sensitivity"] for r in rows if r.get("sensitivity") is not None]
    model_part: dict[str, Any] = {}
    if whole_model:
        check_cancel(cancel)
        if on_progress:
            on_progress({"event": "progress", "done": len(layers), "total": total,
                         "label": "whole model: quantize_static"})
        del impl, quant
        model_part = quantize_whole_model(model_path, sample_list, cores=cores, runs=latency_runs)
        if on_progress:
            on_progress({"event": "progress", "done": total, "total": total, "label": "done"})
    from sparsify_tui.engines.ort import version as ort_version_of

    ort_version = ort_version_of()
    return {
        "kind": "quant",
        "schema_version": SCHEMA_VERSION,
        "samples": len(sample_list),
        "data": str(data) if data is not None else None,
        "average_sensitivity": float(np.mean(measured)) if measured else None,
        "layers": rows,
        "model": model_part,
        "engine": "onnxruntime",
        "engine_version": ort_version,
        "execution": mode,
        "output_kinds": [kinds[n] for n in names],
        "output_metrics": plan_to_json(plan),
        "definition": QUANT_HELP,
        "notes": notes,
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }


def run_quant_profile(
    model_path: str | os.PathLike,
    data=None,
    samples: int = 4,
    input_shapes: dict[str, list[int]] | None = None,
    on_progress: Callable[[dict], Any] | None = None,
    cancel=None,
    *,
    in_process: bool = False,
    cores: int | None = None,
    timeout_s: float | None = None,
    whole_model: bool = True,
) -> dict:
    """The quantization profile (``kind: "quant"``), measured in the child process (job kind ``quant``)
    unless ``in_process``. ``on_progress`` gets the runner's event dicts; ``cancel`` is a threading.Event."""
    if int(samples) < 1:
        raise UsageError(f"the number of samples must be at least 1, got {samples}")
    if data is not None and not Path(data).expanduser().exists():
        raise UsageError(f"{data}: no such data file or directory")
    if in_process:
        def _part(d):
            if on_progress:
                on_progress({"event": "partial", "data": d})

        return compute_quant(model_path, data=data, samples=int(samples), input_shapes=input_shapes,
                             on_progress=on_progress, on_partial=_part, cancel=cancel, cores=cores,
                             whole_model=whole_model)
    from sparsify_tui.engines.runner import run_job

    job = {
        "kind": "quant",
        "model_path": str(Path(model_path).resolve()),
        "data": str(Path(data).expanduser().resolve()) if data is not None else None,
        "samples": int(samples),
        "input_shapes": input_shapes or None,
        "whole_model": bool(whole_model),
    }
    return run_job(job, on_progress=on_progress, cancel=cancel, timeout_s=timeout_s, cores=cores)


def quantize_file(src: str | Path, dst: str | Path, samples: list[dict],
                  nodes_to_exclude: list[str] | None = None) -> dict:
    """INT8-quantize ``src`` into ``dst`` with ONNX Runtime (QDQ per channel; QOperator for old opsets); the nodes
    named in ``nodes_to_exclude`` stay fp32 (mixed precision).

    Weights stored as ConstantOfShape fills become initializers first (the quantizer only quantizes
    initializers: left as nodes, the convolutions would stay fp32 behind quantized activations). Per-channel
    QDQ needs opset 13: an older model whose QDQ quantization fails for that is converted to opset 13 and
    quantized in QDQ again (OpenVINO cannot read per-channel QLinearConv), before the QOperator fallback."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from sparsify_tui.errors import ModelError

    errors = []
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=str(Path(dst).parent)) as tmp:
        source = _quantizable(src, Path(tmp))
        attempts = [("QDQ", QuantFormat.QDQ, source), ("QDQ", QuantFormat.QDQ, None),
                    ("QOperator", QuantFormat.QOperator, source)]
        for fmt_name, fmt, path in attempts:
            if path is None:  # the opset-13 retry, only after a QDQ failure that asks for it
                if not errors or "opset version 13" not in errors[-1]:
                    continue
                path = _opset13(source, Path(tmp))
                if path is None:
                    continue
            try:
                quantize_static(str(path), str(dst), CalibrationReader(samples), quant_format=fmt, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax,
                                nodes_to_exclude=list(nodes_to_exclude or []))
                return {"format": fmt_name}
            except Exception as exc:  # noqa: BLE001 - the quantizer raises anything on unsupported models
                msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                errors.append(f"{fmt_name}: {msg}")
    raise ModelError(f"ONNX Runtime could not quantize {src} to INT8 ({'; '.join(errors)})")


def _quantizable(src: str | Path, tmp: Path) -> Path:
    """``src``, or a copy in ``tmp`` whose ConstantOfShape weights are initializers (when it has any)."""
    from sparsify_tui.onnxkit.modelio import load_model_copy, save_model_atomic
    from sparsify_tui.onnxkit.tensors import fills_to_initializers

    model, external, _src = load_model_copy(src)
    if not fills_to_initializers(model):
        return Path(src)
    out = tmp / "filled.onnx"
    save_model_atomic(model, out, external=external)
    return out


def _opset13(src: Path, tmp: Path) -> Path | None:
    """A copy of ``src`` converted to opset 13 (onnx's version converter), or None when it cannot be."""
    import onnx
    from onnx import version_converter

    from sparsify_tui.onnxkit.modelio import load_model_copy, save_model_atomic

    model, external, _src = load_model_copy(src)
    try:
        converted = version_converter.convert_version(model, 13)
        onnx.checker.check_model(converted)
    except Exception:  # noqa: BLE001 - the converter has no adapter for some op: keep the QOperator fallback
        return None
    out = tmp / "opset13.onnx"
    save_model_atomic(converted, out, external=external)
    return out
