"""The layer summaries' view-model without the app (plain pytest): filters, sort rule, cells, status line."""

from __future__ import annotations

import pytest

from sparsify_tui.tui.data import LayerRow, ModelData
from sparsify_tui.tui.views.layers import (
    ALL_OPS,
    COLUMNS,
    OP_COLUMNS,
    LayerView,
    column_widths,
    jobs_text,
    name_width,
    shorten_names,
    sort_key,
)


def _rows() -> list[LayerRow]:
    return [
        LayerRow("w0", "weights", "Constant", 0, params=100),
        LayerRow("conv1", "stem.conv1", "Conv", 1, params=400, flops=8000, prunable=True, prunable_params=400,
                 baseline_ms=3.0, ms_points=[(0.0, 3.0), (0.5, 2.0), (0.9, 1.0)],
                 loss_points=[(0.0, 0.0), (0.9, 0.3)]),
        LayerRow("relu1", "stem.relu", "Relu", 2, params=0, flops=100, baseline_ms=1.0),
        LayerRow("conv2", "block[1].conv", "Conv", 3, params=600, flops=12000, prunable=True, prunable_params=600,
                 baseline_ms=5.0, ms_points=[(0.0, 5.0), (0.5, 3.0), (0.9, 2.0)],
                 loss_points=[(0.0, 0.0), (0.9, 0.1)]),
        LayerRow("shuffle", "Shuffle", "Shuffle", None, baseline_ms=0.5, engine_internal=True),
    ]


def _view(**kw) -> LayerView:
    data = ModelData(rows=_rows(), perf={"engine": "onnxruntime"}, loss={"method": "approx"},
                     perf_levels=[0.0, 0.5, 0.9], loss_levels=[0.0, 0.9])
    view = LayerView(**kw)
    view.set_data(data)
    view.refresh()
    return view


def ids(rows):
    return [r.id for r in rows]


def test_filters_hide_constants_and_combine():
    view = _view()
    assert ids(view.visible_rows) == ["conv1", "relu1", "conv2", "shuffle"]  # the Constant is hidden
    view.show_constants = True
    assert ids(view.refresh()) == ["w0", "conv1", "relu1", "conv2", "shuffle"]
    view.prunable_only = True
    assert ids(view.refresh()) == ["conv1", "conv2"]
    view.prunable_only, view.op_filter = False, "Relu"
    assert ids(view.refresh()) == ["relu1"]
    assert view.next_op_filter() == "Shuffle" and view.next_op_filter() == ALL_OPS  # after the last: all
    assert view.next_op_filter() == "Constant"
    view.keep_op_filter(["Conv"])  # the new model has no Constant
    assert view.op_filter == ALL_OPS


def test_a_name_pattern_is_a_regex_or_else_plain_text():
    view = _view(name_pattern=r"^STEM\.conv")  # case does not matter
    assert ids(view.refresh()) == ["conv1"] and view.pattern_error == ""
    view.name_pattern = "block[1"  # not a regular expression: matched as typed
    assert ids(view.refresh()) == ["conv2"] and "unterminated character set" in view.pattern_error
    status = view.status_text().plain
    assert status.startswith("not a regular expression (unterminated character set")
    assert "matching the text as typed" in status and "1/4 layers (all)" in status
    assert view.status_text().spans[0].style == "bold red"
    view.name_pattern = "stem"
    assert ids(view.refresh()) == ["conv1", "relu1"] and view.pattern_error == ""
    assert not view.status_text().plain.startswith("not a regular")


def test_the_sort_rule():
    view = _view()
    view.sort_by("ms")  # a new numeric column starts with the largest
    assert (view.sort_column, view.sort_reverse) == ("ms", True)
    view.sort_by("ms")  # the same column again flips
    assert view.sort_reverse is False
    view.sort_by("name")  # a new text column starts at A
    assert (view.sort_column, view.sort_reverse) == ("name", False)
    view.sort_by("name", reverse=True)
    assert view.sort_reverse is True and view.layer_sort() == "name"
    view.sort_column, view.sort_reverse = "depth", False
    assert view.layer_sort() is None  # already in depth order
    view.next_sort()
    assert (view.sort_column, view.sort_reverse) == ("name", False)
    view.next_sort()
    view.next_sort()
    assert (view.sort_column, view.sort_reverse) == ("params", True)
    view.toggle_groups()  # the op table has params: the sort stays
    assert view.by_op and (view.sort_column, view.sort_reverse) == ("params", True)
    view.sort_column = "depth"
    view.toggle_groups()
    view.toggle_groups()  # the op table has no depth: by ms, largest first
    assert (view.sort_column, view.sort_reverse) == ("ms", True)
    view.sort_column, view.sort_reverse = "op", False
    assert view.op_sort() is None and [k for k, _, _ in OP_COLUMNS][0] == "op"
    view.sort_column = "count"
    view.toggle_groups()  # the layer table has no count: back to depth order
    assert (view.by_op, view.sort_column, view.sort_reverse) == (False, "depth", False)
    # missing values sort last in both directions
    vals = [2.0, None, 1.0]
    assert sorted(vals, key=sort_key(False)) == [1.0, 2.0, None]
    assert sorted(vals, key=sort_key(True), reverse=True) == [2.0, 1.0, None]


def test_cells_follow_the_summary_type_and_value_display():
    view = _view()
    cells = {c[0].value: c for c in view.layer_cells()}
    assert len(cells[1]) == len(COLUMNS)
    total_ms = 3.0 + 1.0 + 5.0 + 0.5
    share = cells[3][6]
    assert share.value == pytest.approx(100 * 5.0 / total_ms) and share.plain == f"{100 * 5.0 / total_ms:.1f}%"
    assert cells[1][5].value == 3.0 and cells[1][7].value == pytest.approx(2.0)  # perf sens at 0.9: 3 - 1 ms
    assert cells[1][1].style == "bold" and cells[None][1].style == "italic dim"  # prunable; engine-internal
    view.level = 0.5
    assert view.column_labels() == {"ms": "ms@50%", "perf": "Perf@50%", "loss": "Loss@50%"}
    cells = {c[0].value: c for c in view.layer_cells()}
    assert cells[3][5].value == 3.0 and cells[3][7].value == pytest.approx(2.0)
    view.display_mode = "percent"
    cells = {c[0].value: c for c in view.layer_cells()}
    assert cells[1][3].value == pytest.approx(100 * 400 / 1100)  # of all layers, the hidden constant too
    view.cycle_display()
    assert view.display_mode == "log"
    ops = dict(view.op_cells())
    assert set(ops) == {"op:Conv", "op:Relu", "op:Shuffle"} and ops["op:Conv"][1].value == 2
    view.set_data(ModelData(rows=_rows(), perf_levels=[0.0, 0.9]))  # the new profile lacks level 0.5
    assert view.level is None and view.sens_level == 0.9


def test_summary_levels_cycle_and_charts():
    view = _view()
    seen = []
    for _ in range(4):
        assert view.next_level()
        seen.append(view.level)
    assert seen == [0.5, 0.9, None, 0.5]
    depths, values, title = view.chart_series("perf")
    assert depths == [1, 2, 3] and title == "Performance Sensitivity @ 50% (ms saved)"
    assert values == [pytest.approx(1.0), None, pytest.approx(2.0)]
    assert view.chart_series("flops")[1:] == ([8000, 100, 12000], "FLOPs per layer")
    assert view.perf_curve(view.data.row("conv1")) == [(0.0, 0.0), (0.5, 1.0), (0.9, 2.0)]
    assert not LayerView(data=ModelData(rows=_rows())).next_level()  # no profile: stays baseline


def test_status_text():
    view = _view()
    assert LayerView().status_text() == "no model data"
    assert LayerView().status_text("perf profile 10%, x cancels", loading=True) == \
        "analysing the model…  ·  perf profile 10%, x cancels"
    assert view.status_items() == [
        ("Summary Type ", "baseline"), ("Value Display ", "measured"), ("sort ", "Depth ↑"),
        ("", "3/4 layers (all) + 1 engine row (time the engine spends outside the layers)"
             " · 1 constants hidden (k shows)"),
        ("", "perf: onnxruntime"), ("", "loss: approx")]
    view.prunable_only, view.op_filter, view.sort_column, view.sort_reverse = True, "Conv", "loss", True
    view.refresh()
    items = view.status_items()
    assert items[2] == ("sort ", "Loss sens ↓") and items[3] == ("", "2/4 layers (prunable, Conv) · 1 constants hidden (k shows)")
    running = jobs_text([type("J", (), {"kind": "perf", "state": "running", "fraction": 0.4,
                                        "label": "level 0.6: a rather long label for the line"})()])
    assert running == "perf profile 40% (level 0.6: a rather long la…), x cancels"
    items = view.status_items(running)
    assert items[0] == ("⟳ ", running) and ("", "perf: onnxruntime") not in items
    assert view.status_text(running).plain.startswith("⟳ perf profile 40%")
    assert jobs_text([]) == ""


def test_column_widths_and_names_cut_in_the_middle():
    view = _view()
    cells = view.layer_cells()
    labels = view.column_labels()
    widths = column_widths(view.columns(), labels, cells)
    assert widths[1] == len("block[1].conv") and widths[0] == len("Depth")
    assert name_width(widths, 1, avail=200, pad=2) == len("block[1].conv")  # room enough: the longest name
    assert name_width(widths, 1, avail=20, pad=2) == 12  # never narrower than 12
    short = shorten_names(cells, 1, 12)
    names = [c[1] for c in short]
    assert [n.value for n in names] == [r.name for r in view.visible_rows]  # the sort value stays the name
    assert all(len(n) <= 12 for n in names) and names[2].plain != "block[1].conv" and "…" in names[2].plain
