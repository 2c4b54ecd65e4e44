"""``sparsify-tui info TARGET``: a model's totals, its layers, and this machine.

TARGET is an ONNX file or a project directory (then the project's model and
saved input shapes are used). ``--json`` prints one document
``{"model": totals, "layers": [...], "machine": {...}}``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sparsify_tui.commands.common import emit_json, fmt_count, print_table, resolve_target

MAX_ROWS = 200
LAYER_KEYS = ("id", "name", "op_type", "depth", "params", "prunable", "flops", "weight_shape",
              "input_shapes", "output_shapes", "attributes", "sparsity")


def layer_json(layer) -> dict[str, Any]:
    d = layer.to_dict()
    d["attributes"] = {k: v for k, v in d["attributes"].items() if v != "<subgraph>"}
    return d


def info_document(graph, machine: dict[str, Any]) -> dict[str, Any]:
    return {"model": graph.totals_dict(), "layers": [layer_json(layer) for layer in graph.layers], "machine": machine}


def _shape(s: Any) -> str:
    if s is None:
        return "?"
    if isinstance(s, (list, tuple)):
        return "x".join(str(d) for d in s) if s else "scalar"
    return str(s)


def _shapes(ss: list[Any]) -> str:
    return ", ".join(_shape(s) for s in ss)


def _key_attrs(attrs: dict[str, Any]) -> str:
    parts = []
    for k, short in (("kernel_shape", "k"), ("strides", "s"), ("pads", "p"), ("dilations", "d"), ("group", "g"),
                     ("transB", "transB"), ("perm", "perm"), ("axis", "axis")):
        if k in attrs:
            v = attrs[k]
            if isinstance(v, list):
                if k in ("strides", "dilations") and all(x == 1 for x in v):
                    continue
                if k == "pads" and all(x == 0 for x in v):
                    continue
                v = ",".join(str(x) for x in v)
            elif k == "group" and v == 1:
                continue
            elif k == "transB" and not v:
                continue
            parts.append(f"{short}={v}")
    return " ".join(parts)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def print_human(graph, machine: dict[str, Any], *, show_all: bool, out=None) -> None:
    out = out or sys.stdout
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"Model     {graph.path}")
    p(f"          opset {graph.opset}, IR {graph.ir_version}, producer {graph.producer or 'unknown'}, "
      f"{graph.file_size / 1e6:.1f} MB")
    for t in graph.inputs:
        assumed = f"  (assumed {', '.join(f'axis {k}={v}' for k, v in t.assumed.items())})" if t.assumed else ""
        p(f"Input     {t.name}: {t.dtype} {_shape(t.shape)}{assumed}")
    for t in graph.outputs:
        p(f"Output    {t.name}: {t.dtype} {_shape(t.shape)}")
    flops = fmt_count(graph.flops) if graph.flops is not None else (
        f"unknown ({fmt_count(graph.flops_known)} known; {graph.unknown_flops_layers} layers unknown)")
    p(f"Params    {fmt_count(graph.params)} ({graph.params:,}); prunable {fmt_count(graph.prunable_params)} "
      f"in {len(graph.prunable_layers)} prunable layers")
    p(f"FLOPs     {flops}" + (f" ({graph.flops:,})" if graph.flops is not None else ""))
    p(f"Sparsity  {_pct(graph.sparsity)} of prunable weights are zero")
    hist = ", ".join(f"{k} {v}" for k, v in graph.op_histogram.items())
    p(f"Ops       {len(graph.layers)} layers: {hist}")
    for n in graph.notes:
        p(f"Note      {n}")
    p("")
    layers = graph.layers if show_all else graph.layers[:MAX_ROWS]
    rows = []
    for layer in layers:
        name = layer.name if not layer.graph_path else f"{layer.graph_path}/{layer.name}"
        rows.append([
            layer.depth, name, layer.op_type, fmt_count(layer.params) if layer.params else "",
            fmt_count(layer.flops), _shapes(layer.input_shapes), _shapes(layer.output_shapes),
            _shape(layer.weight_shape) if layer.weight_shape else "", _key_attrs(layer.attributes),
            _pct(layer.sparsity) if layer.prunable else "",
        ])
    print_table(["Layer Depth", "Name", "Op", "Params", "FLOPs", "Input", "Output", "Weight", "Attributes", "Sparsity"],
                rows, right=(0, 3, 4, 9), file=out)
    if len(layers) < len(graph.layers):
        p(f"... {len(graph.layers) - len(layers)} more layers (use --all to list every layer)")
    p("")
    p(f"Machine   {machine['cpu_model']} ({machine.get('arch', '')})")
    p(f"Cores     {machine['physical_cores']} physical, {machine['logical_cores']} logical, "
      f"{machine['usable_cores']} usable by this process")
    p(f"ISA       {', '.join(machine['isa']) or 'none of avx2/avx512/vnni/amx/neon'}")
    eng = ", ".join(f"{k} {v}" if v else f"{k} (not installed)" for k, v in machine["engines"].items())
    p(f"Engines   {eng}")


def run(args: argparse.Namespace) -> int:
    from sparsify_tui.analysis import analyze
    from sparsify_tui.engines.machine import machine_info

    target = resolve_target(args.target, getattr(args, "input_shape", None), readonly=True)
    try:
        graph = analyze(target.model_path, target.input_shapes or None)
    finally:
        if target.project is not None and hasattr(target.project, "close"):
            target.project.close()
    machine = machine_info()
    if getattr(args, "json", False):
        emit_json(info_document(graph, machine))
    else:
        print_human(graph, machine, show_all=getattr(args, "all", False))
    return 0
