"""``sparsify-tui info TARGET``: a model's totals, its layers, and this machine.

TARGET is an ONNX file or a project directory (then the project's model and
saved input shapes are used). ``--json`` prints one document
``{"model": totals, "layers": [...], "machine": {...}}``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from sparsify_tui.commands.common import ellipsize, emit_json, fmt_count, next_steps, print_table, resolve_target

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph

MAX_ROWS = 200
LAYER_KEYS = ("id", "name", "op_type", "depth", "params", "prunable", "flops", "weight_shape",
              "input_shapes", "output_shapes", "attributes", "sparsity")


def layer_json(layer) -> dict[str, Any]:
    d = layer.to_dict()
    d["attributes"] = {k: v for k, v in d["attributes"].items() if v != "<subgraph>"}
    return d


def info_document(graph: "ModelGraph", machine: dict[str, Any]) -> dict[str, Any]:
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


NAME_WIDTH = 32
OP_WIDTH = 18
SHAPE_WIDTH = 20
ATTR_WIDTH = 24
CONSTANT_OPS = frozenset({"Constant", "ConstantOfShape"})


def is_constant_layer(layer) -> bool:
    """True for a layer that only produces a constant (a weight): Constant, ConstantOfShape or a folded transform."""
    return bool(getattr(layer, "constant", False)) or layer.op_type in CONSTANT_OPS


def terminal_width() -> int:
    """Columns to fit the table in: the terminal's width (``COLUMNS`` if set); no limit (10,000) when
    stdout is a file or a pipe, so saved or piped output keeps every column."""
    import shutil

    try:
        tty = sys.stdout.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return 10_000
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def _table_width(headers: list[str], rows: list[list[Any]]) -> int:
    widths = [max([len(str(h))] + [len("" if r[i] is None else str(r[i])) for r in rows]) for i, h in enumerate(headers)]
    return sum(widths) + 2 * (len(widths) - 1)


def fit_columns(headers: list[str], rows: list[list[Any]], width: int, *, drop_order: tuple[str, ...],
                shrink: str = "Name", min_width: int = 28):
    """Leave out the columns named in ``drop_order`` (in that order) until the table fits in ``width``,
    then shorten the ``shrink`` column (down to ``min_width``, with an ellipsis) if it is still too wide."""
    headers = list(headers)
    rows = [list(r) for r in rows]
    dropped: list[str] = []
    for name in drop_order:
        if _table_width(headers, rows) <= width or name not in headers:
            continue
        i = headers.index(name)
        headers.pop(i)
        for r in rows:
            r.pop(i)
        dropped.append(name)
    excess = _table_width(headers, rows) - width
    if excess > 0 and shrink in headers:
        i = headers.index(shrink)
        current = max([len(headers[i])] + [len(str(r[i])) for r in rows])
        new_width = max(min_width, current - excess)
        for r in rows:
            r[i] = ellipsize(str(r[i]), new_width)
    return headers, rows, dropped


def _wrap(label: str, text: str, width: int) -> str:
    import textwrap

    return textwrap.fill(text, width=width, initial_indent=label, subsequent_indent=" " * len(label),
                         break_on_hyphens=False, break_long_words=False)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def print_human(graph: "ModelGraph", machine: dict[str, Any], *, show_all: bool, out=None,
                width: int | None = None) -> None:
    out = out or sys.stdout
    p = lambda *a: print(*a, file=out)  # noqa: E731
    path = str(graph.path)
    width = width or terminal_width()
    if len(path) > width - 10:  # a narrow terminal: keep the file name, shorten the directory
        from sparsify_tui.commands.common import ellipsize as _shorten

        path = _shorten(path, width - 10)
    p(f"Model     {path}")
    p(f"          opset {graph.opset}, IR {graph.ir_version}, producer {graph.producer or 'unknown'}, "
      f"{graph.file_size / 1e6:.1f} MB")
    for t in graph.inputs:
        assumed = f"  (assumed {', '.join(f'axis {k}={v}' for k, v in t.assumed.items())})" if t.assumed else ""
        p(f"Input     {t.name}: {t.dtype} {_shape(t.shape)}{assumed}")
    for t in graph.outputs:
        p(f"Output    {t.name}: {t.dtype} {_shape(t.shape) if '(' not in t.dtype else '(shape unknown)'}")
    flops = fmt_count(graph.flops) if graph.flops is not None else (
        f"unknown ({fmt_count(graph.flops_known)} known; {graph.unknown_flops_layers} layers unknown)")
    p(f"Params    {fmt_count(graph.params)} ({graph.params:,}); prunable {fmt_count(graph.prunable_params)} "
      f"in {len(graph.prunable_layers)} prunable layers")
    p(f"FLOPs     {flops}" + (f" ({graph.flops:,})" if graph.flops is not None else ""))
    p(f"Sparsity  {_pct(graph.sparsity)} of prunable weights are zero")
    hist = ", ".join(f"{k} {v}" for k, v in graph.op_histogram.items())
    wrap_width = max(60, (width if width is not None else terminal_width()))
    p(_wrap("Ops       ", f"{len(graph.layers)} layers: {hist}", wrap_width))
    for n in graph.notes:
        p(_wrap("Note      ", n, wrap_width))
    p("")
    if show_all:
        layers = list(graph.layers)
        hidden = 0
    else:
        compute = [layer for layer in graph.layers if not is_constant_layer(layer)]
        hidden = len(graph.layers) - len(compute)
        layers = compute[:MAX_ROWS]
    rows = []
    for layer in layers:
        name = layer.name if not layer.graph_path else f"{layer.graph_path}/{layer.name}"
        rows.append([
            layer.depth, ellipsize(name, NAME_WIDTH), ellipsize(layer.op_type, OP_WIDTH),
            fmt_count(layer.params) if layer.params else "", fmt_count(layer.flops),
            ellipsize(_shapes(layer.input_shapes), SHAPE_WIDTH), ellipsize(_shapes(layer.output_shapes), SHAPE_WIDTH),
            ellipsize(_shape(layer.weight_shape), SHAPE_WIDTH) if layer.weight_shape else "",
            ellipsize(_key_attrs(layer.attributes), ATTR_WIDTH),
            _pct(layer.sparsity) if layer.prunable else "",
        ])
    headers = ["Depth", "Name", "Op", "Params", "FLOPs", "Input", "Output", "Weight", "Attributes", "Sparsity"]
    headers, rows, dropped = fit_columns(headers, rows, width if width is not None else terminal_width(),
                                         drop_order=("Input", "Attributes", "Weight"))
    title = "Layers" if show_all else "Compute layers"
    p(f"{title} (execution order; Layer Depth = position in that order)")
    right_names = {"Depth", "Params", "FLOPs", "Sparsity"}
    print_table(headers, rows, right=[i for i, h in enumerate(headers) if h in right_names], file=out)
    if dropped:
        p(f"({', '.join(dropped)} hidden at {width if width is not None else terminal_width()} columns: "
          "set COLUMNS=200 or use --json)")
    more = (len(graph.layers) - hidden) - len(layers) if not show_all else 0
    if hidden:
        p(f"{hidden} constant layers (Constant, ConstantOfShape, ...) hidden; --all lists them")
    if more > 0:
        p(f"... {more} more layers (use --all to list every layer, --json for all details)")
    p("")
    p(f"Machine   {machine['cpu_model']} ({machine.get('arch', '')})")
    p(f"Cores     {machine['physical_cores']} physical, {machine['logical_cores']} logical, "
      f"{machine['usable_cores']} usable by this process")
    from sparsify_tui.engines.machine import capability_line

    p(f"ISA       {', '.join(machine['isa']) or 'none of avx2/avx512/vnni/amx/neon'}  ({capability_line(machine)})")
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
        if target.project is not None:
            next_steps(f"sparsify-tui profile perf {target.project.dir}   (time each layer on this machine)")
        else:
            next_steps(f"sparsify-tui new {args.target}   (a project to profile it and plan its sparsification)")
    return 0
