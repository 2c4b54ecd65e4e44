"""Synthetic models and profiles for the optimizer's tests and benchmark (no ONNX file needed).

``synthetic_model(n_layers, seed)`` returns ``(graph, perf, loss)``: a
:class:`~sparsify_tui.analysis.graph.ModelGraph` with ``n_layers`` prunable
Conv/Gemm layers (plus a Relu after each, non-prunable) and perf / loss
profile documents with the keys the real profiles have (issue 4 and 6).
"""

from __future__ import annotations

import random
from typing import Any

from sparsify_tui.analysis.graph import Layer, ModelGraph, TensorInfo
from sparsify_tui.settings import LOSS_ONE_SHOT_LEVELS, PERF_LEVELS, level_key


def synthetic_graph(params: list[int], flops: list[int | None] | None = None, *, extra_params: int = 1000,
                    relu_flops: int = 1000) -> ModelGraph:
    layers: list[Layer] = []
    depth = 0
    flops = flops if flops is not None else [2 * p * 49 for p in params]
    for i, (p, f) in enumerate(zip(params, flops)):
        lid = f"conv{i}"
        layers.append(Layer(
            id=lid, name=f"conv{i}", op_type="Conv" if i % 5 else "Gemm", depth=depth,
            inputs=[f"relu{i - 1}" if i else "input", f"w{i}"], outputs=[lid], params=int(p),
            prunable=True, prunable_params=int(p), weight_name=f"layer{i}.weight", weight_shape=[int(p)],
            flops=None if f is None else int(f), sparsity=0.0,
        ))
        depth += 1
        layers.append(Layer(id=f"relu{i}", name=f"relu{i}", op_type="Relu", depth=depth, inputs=[lid],
                            outputs=[f"relu{i}"], flops=relu_flops))
        depth += 1
    known = [lay.flops for lay in layers if lay.flops is not None]
    unknown = sum(1 for lay in layers if lay.flops is None)
    total_params = sum(params) + extra_params
    return ModelGraph(
        path="synthetic.onnx", opset=13, ir_version=8, producer="synthetic",
        inputs=[TensorInfo("input", [1, 3, 224, 224], "float32")],
        outputs=[TensorInfo(f"relu{len(params) - 1}", [1, 1000], "float32")],
        layers=layers, params=total_params, prunable_params=sum(params),
        flops=None if unknown else sum(known), flops_known=sum(known), unknown_flops_layers=unknown,
        sparsity=0.0, op_histogram={"Conv": len(params), "Relu": len(params)},
    )


def perf_profile(graph: ModelGraph, layer_ms: dict[str, float], drop: dict[str, float] | None = None,
                 knee: dict[str, float] | None = None, *, internal_ms: float = 0.0,
                 other_ms: float = 0.01) -> dict[str, Any]:
    """A perf profile: layer ``id`` takes ``layer_ms[id]`` dense and loses ``drop[id]`` of it at 0.99,
    linearly from sparsity ``knee[id]`` (DeepSparse-like: no gain below the knee)."""
    drop = drop or {}
    knee = knee or {}
    rows = []
    for lay in graph.layers:
        t0 = float(layer_ms.get(lay.id, other_ms if not lay.prunable else 0.1))
        by = {}
        for lv in PERF_LEVELS:
            if lay.prunable:
                k = knee.get(lay.id, 0.4)
                x = max(0.0, (lv - k) / (0.99 - k)) if lv > k else 0.0
                by[level_key(lv)] = t0 * (1.0 - drop.get(lay.id, 0.7) * min(x, 1.0))
            else:
                by[level_key(lv)] = t0
        rows.append({"id": lay.id, "name": lay.name, "op_type": lay.op_type, "baseline_ms": t0,
                     "ms_by_level": by, "group": [lay.id], "engine_internal": False})
    if internal_ms:
        rows.append({"id": "__shuffle_0", "name": "Shuffle", "op_type": "Shuffle", "baseline_ms": internal_ms,
                     "ms_by_level": {level_key(lv): internal_ms for lv in PERF_LEVELS}, "group": [],
                     "engine_internal": True})
    total = sum(r["baseline_ms"] for r in rows)
    model = {level_key(lv): sum(r["ms_by_level"][level_key(lv)] for r in rows) for lv in PERF_LEVELS}
    return {
        "schema_version": 1, "kind": "perf", "engine": "synthetic", "engine_version": "0",
        "approximated": False, "batch_size": 1, "cores": 1, "levels": list(PERF_LEVELS),
        "baseline_ms": total, "items_per_second": 1000.0 / total if total else 0.0,
        "spread_ms": [total, total], "model_ms_by_level": model, "layers": rows,
    }


def loss_profile(graph: ModelGraph, scale: dict[str, float], power: dict[str, float] | None = None) -> dict[str, Any]:
    """A loss profile: layer ``id``'s sensitivity is ``scale[id] * s ** power[id]``."""
    power = power or {}
    rows = []
    for lay in graph.layers:
        if not lay.prunable:
            continue
        a, pw = float(scale.get(lay.id, 1.0)), float(power.get(lay.id, 3.0))
        by = {level_key(lv): a * lv ** pw for lv in LOSS_ONE_SHOT_LEVELS}
        rows.append({"id": lay.id, "name": lay.name, "sensitivity_by_level": by,
                     "sensitivity": by[level_key(0.9)], "rank": 0})
    return {"schema_version": 1, "kind": "loss", "method": "one-shot", "levels": list(LOSS_ONE_SHOT_LEVELS),
            "eval_sparsity": 0.9, "layers": rows}


def synthetic_model(n_layers: int = 500, seed: int = 0) -> tuple[ModelGraph, dict, dict]:
    """A random model with ``n_layers`` prunable layers and its perf and loss profiles."""
    rng = random.Random(seed)
    params = [rng.choice([256, 1024, 4096, 16384, 65536, 262144]) * rng.randint(1, 4) for _ in range(n_layers)]
    graph = synthetic_graph(params)
    ms = {f"conv{i}": rng.uniform(0.01, 2.0) for i in range(n_layers)}
    drop = {f"conv{i}": rng.uniform(0.1, 0.9) for i in range(n_layers)}
    knee = {f"conv{i}": rng.uniform(0.0, 0.6) for i in range(n_layers)}
    perf = perf_profile(graph, ms, drop, knee, internal_ms=0.5)
    loss = loss_profile(graph, {f"conv{i}": rng.uniform(0.001, 1.0) for i in range(n_layers)},
                        {f"conv{i}": rng.uniform(1.0, 6.0) for i in range(n_layers)})
    return graph, perf, loss
