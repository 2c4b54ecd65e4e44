"""A DataTable whose body cells are re-rendered only when their own value changes.

Textual's DataTable keys its cell render cache on a table-wide update counter,
so one ``update_cell`` re-renders every visible cell through Rich (padding,
wrapping, styling: about a millisecond per cell on a busy 2-core machine).
The optimizer's layer table changes many cells per edit but most visible
cells stay the same, and every cell is one line of Text. This subclass keeps
a per-cell cache (valid while the cell holds the same value object and the
same styles) and renders a one-line Text cell straight to segments (the cell
padding takes the Text's own style too, which draws the same as DataTable's
unstyled padding). Header, row labels, str cells (markup to DataTable) and
multi-line rows take DataTable's normal path.

Three more costs of the stock table are avoided:

* ``update_cell`` refreshes the whole widget once per cell (an edit on a
  500-layer plan changes about a thousand cells); ``set_cells`` writes many
  cells, then repaints only the lines of the changed rows that are in view;
* every rendered row re-derives the component styles (header, zebra rows,
  background) by walking the widget's ancestors: within one render pass they
  are computed once;
* any cell change re-renders every visible row and line: a row (and its
  line) is re-rendered only when one of its cell values (by identity), its
  styles, the cursor or the widths changed, and then only its changed cells.

``tests/tui/test_optim_table.py`` checks it draws what DataTable draws.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._segment_tools import line_crop
from textual.color import Color
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable


class FastDataTable(DataTable):
    """DataTable with per-cell render caching for one-line Text cells."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_cache: dict[tuple, tuple[Any, int, list[list[Segment]]]] = {}
        self._row_cache: dict[Any, tuple[tuple, tuple, Any]] = {}
        self._strip_cache: dict[tuple, tuple[Any, Strip]] = {}
        self._pass: dict[str, Any] | None = None  # styles computed once per render pass

    def clear(self, columns: bool = False):  # noqa: ANN201
        self._fast_cache.clear()
        self._row_cache.clear()
        self._strip_cache.clear()
        return super().clear(columns)

    def set_cells(self, changes: Iterable[tuple[Any, Any, Any]]) -> int:
        """Put new values in many cells, then refresh once; returns how many.

        ``changes`` holds (row key, column key, value). Like ``update_cell``
        without ``update_width``: column widths are not re-measured.
        """
        data = self._data
        columns = self._column_locations
        rows = set()
        n = 0
        for row_key, column_key, value in changes:
            if row_key not in data or column_key not in columns:
                self.update_cell(row_key, column_key, value)  # raises CellDoesNotExist
            data[row_key][column_key] = value
            rows.add(row_key)
            n += 1
        if n:
            self._update_count += 1
            self._refresh_rows(rows)
        return n

    def _refresh_rows(self, row_keys: set) -> None:
        """Repaint the visible lines of these rows only (all of the table if rows are not all one line)."""
        if self.fixed_rows or self._total_row_height != len(self.rows):
            self.refresh()
            return
        top = self.header_height if self.show_header else 0
        scroll = self.scroll_offset
        first, last = scroll.y, scroll.y + max(0, self.size.height - top)  # visible row indices
        width = max(self.size.width, self.virtual_size.width)
        locations = self._row_locations
        regions = []
        for row_key in row_keys:
            index = locations.get(row_key)
            if index is not None and first <= index < last:  # as DataTable.refresh_row, without its O(rows) sum
                regions.append(Region(0, top + index, width, 1).translate(-scroll))
        if regions:
            self.refresh(*regions)

    # ------------------------------------------------------------ render pass
    def render_lines(self, crop: Region) -> list[Strip]:
        self._pass = {}
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def _pass_value(self, name: Any, compute: Any) -> Any:
        cache = self._pass
        if cache is None:
            return compute()
        value = cache.get(name)
        if value is None:
            value = cache[name] = compute()
        return value

    def _component(self, name: str) -> Style:
        return self._pass_value(name, lambda: self.get_component_styles(name).rich_style)

    def _get_row_style(self, row_index: int, base_style: Style) -> Style:
        if row_index == -1:
            return self._component("datatable--header")
        if row_index < self.fixed_rows:
            return self._component("datatable--fixed")
        if self.zebra_stripes:
            return self._component("datatable--odd-row" if row_index % 2 else "datatable--even-row")
        return base_style

    def render_line(self, y: int) -> Strip:
        if self._pass is None or self.fixed_rows:
            return super().render_line(y)
        scroll_x, scroll_y = self.scroll_offset
        if y >= (self.get_row_height(self._header_row_key) if self.show_header else 0):
            y += scroll_y
        width = self.size.width
        return self._render_line(y, scroll_x, scroll_x + width, self._pass_value("~base", lambda: self.rich_style))

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        """DataTable's line, cached on the identity of the row's rendering (see _render_line_in_row)."""
        if self._pass is None or self.fixed_columns:
            return super()._render_line(y, x1, x2, base_style)
        width = self.size.width
        try:
            row_key, y_offset_in_row = self._get_offsets(y)
        except LookupError:
            return Strip.blank(width, base_style)
        pair = self._render_line_in_row(row_key, y_offset_in_row, base_style,
                                        cursor_location=self.cursor_coordinate,
                                        hover_location=self.hover_coordinate)
        key = (y, x1, x2, width, base_style)
        hit = self._strip_cache.get(key)
        if hit is not None and hit[0] is pair:
            return hit[1]
        fixed, scrollable = pair
        fixed_line: list[Segment] = list(chain.from_iterable(fixed)) if fixed else []
        scrollable_line: list[Segment] = list(chain.from_iterable(scrollable))
        segments = fixed_line + line_crop(scrollable_line, x1, x2, width)
        strip = Strip(segments).adjust_cell_length(width, base_style).simplify()
        self._strip_cache[key] = (pair, strip)
        return strip

    def _render_line_in_row(self, row_key, line_no: int, base_style: Style, cursor_location: Coordinate,
                            hover_location: Coordinate):  # noqa: ANN001, ANN202
        """A body row of one-line cells, cached on its own cell values rather than the table-wide counter."""
        if self._pass is None or self.fixed_columns or (self._labelled_row_exists and self.show_row_labels):
            return super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
        header = row_key is self._header_row_key
        row = None if header else self.rows.get(row_key)
        if not header and (row is None or row.height != 1):
            return super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
        row_index = -1 if header else self._row_locations.get(row_key)
        row_style = self._get_row_style(row_index, base_style)
        columns = self.ordered_columns
        widths = self._pass_value("~widths", lambda: tuple(c.get_render_width(self) for c in columns))
        if header:
            values: tuple = tuple(c.label for c in columns)
        else:
            cells = self._data[row_key]
            values = tuple(cells.get(c.key) for c in columns)
        cursor_type = self.cursor_type
        key = (line_no, row_index, base_style, row_style, cursor_location, hover_location, cursor_type,
               self.show_cursor, self._show_hover_cursor, self._pseudo_class_state, widths, self.size.width)
        hit = self._row_cache.get(row_key)
        same = hit is not None and hit[0] == key
        if same and all(a is b for a, b in zip(hit[1], values)):
            return hit[2]
        if header:  # rare: DataTable's own path, cached here on the labels
            pair = super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
            self._row_cache[row_key] = (key, values, pair)
            return pair
        should_highlight = self._should_highlight
        render_cell = self._render_cell
        if same:  # same row context, some values changed: render just those cells
            scrollable_row = list(hit[2][1])
            for column_index, (old, new) in enumerate(zip(hit[1], values)):
                if old is not new:
                    cell_location = Coordinate(row_index, column_index)
                    scrollable_row[column_index] = render_cell(
                        row_index, column_index, row_style, widths[column_index],
                        cursor=should_highlight(cursor_location, cell_location, cursor_type),
                        hover=should_highlight(hover_location, cell_location, cursor_type),
                    )[line_no]
            pair = ([], scrollable_row)
            self._row_cache[row_key] = (key, values, pair)
            return pair
        scrollable_row = []
        for column_index, width in enumerate(widths):
            cell_location = Coordinate(row_index, column_index)
            scrollable_row.append(render_cell(
                row_index, column_index, row_style, width,
                cursor=should_highlight(cursor_location, cell_location, cursor_type),
                hover=should_highlight(hover_location, cell_location, cursor_type),
            )[line_no])
        # extend the row's styling to the widget's width (as DataTable does)
        remaining_space = max(0, self.size.width - (sum(widths) + self._row_label_column_width))
        if cursor_type == "row":
            extend_style, _ = self._get_styles_to_render_cell(
                False, False, False,
                should_highlight(hover_location, Coordinate(row_index or 0, 0), cursor_type),
                row_index == cursor_location.row, self.show_cursor, self._show_hover_cursor, False, False,
            )
            extend_style = row_style + extend_style
        elif row_style.bgcolor is not None:
            background_color = self._pass_value("~background", lambda: self.background_colors[1])
            faded_color = Color.from_rich_color(row_style.bgcolor).blend(background_color, factor=0.25)
            extend_style = Style.from_color(color=row_style.color, bgcolor=faded_color.rich_color)
        else:
            extend_style = Style.from_color(row_style.color, row_style.bgcolor)
        extend_style += Style.from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
        scrollable_row.append([Segment(" " * remaining_space, extend_style)])
        pair = ([], scrollable_row)
        self._row_cache[row_key] = (key, values, pair)
        return pair

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
        if not isinstance(value, Text):  # str cells are markup to DataTable: its own path
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        key = (row_key, column_key, base_style, cursor, hover, self._show_hover_cursor, self._pseudo_class_state)
        hit = self._fast_cache.get(key)
        if hit is not None and hit[0] is value and hit[1] == width:
            return hit[2]
        component_style, post_style = self._pass_value(("~cell", cursor, hover), lambda: self._get_styles_to_render_cell(
            False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css",
        ))
        text = value
        pad = self._pass_value("~pad", lambda: self.cell_padding)
        inner = max(0, width - 2 * pad)
        plain = text.plain
        pre = base_style + component_style + Style.from_meta({"row": row_index, "column": column_index})
        if text.style:  # Text.render leaves the Text's own style to the caller when it has no spans
            pre = pre + (self.app.console.get_style(text.style) if isinstance(text.style, str) else text.style)
        length = cell_len(plain)
        if not text.spans and length <= inner and "\n" not in plain:
            # one segment, the same as the general path below after Strip.simplify joins it
            if text.justify == "right":
                plain = " " * (inner - length) + plain
            elif text.justify == "center":
                plain = " " * ((inner - length) // 2) + plain
            body = " " * pad + plain + " " * (pad + inner - cell_len(plain))
            lines = [[Segment(body, pre + post_style if post_style else pre)]]
            self._fast_cache[key] = (value, width, lines)
            return lines
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
        segs = [Segment(" " * pad)] + list(t.render(self.app.console, end="")) + [Segment(" " * pad)]
        line = list(Segment.apply_style(segs, pre, post_style))
        lines = [line]
        self._fast_cache[key] = (value, width, lines)
        return lines
