"""A DataTable whose body cells are re-rendered only when their own value changes.

Textual's DataTable keys its cell render cache on a table-wide update counter,
so one ``update_cell`` re-renders every visible cell through Rich (padding,
wrapping, styling: about a millisecond per cell on a busy 2-core machine).
The optimizer's layer table changes many cells per edit but most visible
cells stay the same, and every cell is one line of Text. This subclass keeps
a per-cell cache (valid while the cell holds the same value object and the
same styles) and renders a one-line Text cell straight to segments.
Header, row labels and multi-line rows take DataTable's normal path.
"""

from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable


class FastDataTable(DataTable):
    """DataTable with per-cell render caching for one-line Text/str cells."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_cache: dict[tuple, tuple[Any, int, list[list[Segment]]]] = {}

    def clear(self, columns: bool = False):  # noqa: ANN201
        self._fast_cache.clear()
        return super().clear(columns)

    def _render_cell(self, row_index: int, column_index: int, base_style: Style, width: int,
                     cursor: bool = False, hover: bool = False):  # noqa: ANN202
        if row_index < 0 or column_index < 0 or self.fixed_rows or self.fixed_columns:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        row = self.rows.get(row_key)
        if row is None or row.height != 1:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        column_key = self._column_locations.get_key(column_index)
        value = self._data[row_key][column_key]
        if not isinstance(value, (Text, str)):
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        key = (row_key, column_key, base_style, cursor, hover, self._show_hover_cursor, self._pseudo_class_state)
        hit = self._fast_cache.get(key)
        if hit is not None and hit[0] is value and hit[1] == width:
            return hit[2]
        component_style, post_style = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css",
        )
        text = value if isinstance(value, Text) else Text(value)
        pad = self.cell_padding
        inner = max(0, width - 2 * pad)
        t = text.copy()
        t.end = ""
        if t.cell_len > inner:
            t.truncate(inner, overflow="ellipsis")
        elif text.justify == "right":
            t.pad_left(inner - t.cell_len)
        elif text.justify == "center":
            left = (inner - t.cell_len) // 2
            t.pad_left(left)
        if t.cell_len < inner:
            t.pad_right(inner - t.cell_len)
        pre = base_style + component_style + Style.from_meta({"row": row_index, "column": column_index})
        if text.style:  # Text.render leaves the Text's own style to the caller when it has no spans
            pre = pre + (self.app.console.get_style(text.style) if isinstance(text.style, str) else text.style)
        segs = [Segment(" " * pad)] + list(t.render(self.app.console, end="")) + [Segment(" " * pad)]
        line = list(Segment.apply_style(segs, pre, post_style))
        lines = [line]
        self._fast_cache[key] = (value, width, lines)
        return lines
