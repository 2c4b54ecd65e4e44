"""A footer that shows the most important keys that fit, never a key cut in half.

Textual's Footer lays every shown binding out in a row and the terminal cuts
the row (``/ Nam▏``). This one keeps, in order of importance, F1 Help (it
lists every key), Cancel job while a profile runs, then the screen's keys in
the order the screen declares them, then the app's; what does not fit is left
to F1/``?`` and the command palette (ctrl+p), which list everything.
"""

from __future__ import annotations

from textual.widgets import Footer
from textual.widgets._footer import FooterKey

FIRST = ("help", "area_help", "cancel_jobs")  # action names kept before anything else
PALETTE_ROOM = 12  # "▏^p palette" on the right


def key_width(key: FooterKey) -> int:
    """Cells a non-compact FooterKey takes: ' key ' + 'description '."""
    return len(key.key_display) + 2 + (len(key.description) + 1 if key.description else 0)


def fit_keys(keys: list[FooterKey], width: int, app_actions: frozenset[str] = frozenset()) -> list[FooterKey]:
    """The keys to show in ``width`` cells, in their original order (``app_actions``: the app's own keys,
    ranked after the screen's)."""

    def rank(item: tuple[int, FooterKey]) -> tuple[int, int]:
        i, k = item
        name = k.action.rsplit(".", 1)[-1]
        if name in FIRST:
            return (FIRST.index(name), i)
        return (len(FIRST) + (1 if k.action in app_actions else 0), i)

    keep: set[int] = set()
    used = 0
    for i, k in sorted(enumerate(keys), key=rank):
        w = key_width(k)
        if used + w <= width:
            keep.add(i)
            used += w
    return [k for i, k in enumerate(keys) if i in keep]


class FitFooter(Footer):
    """Footer that drops the least important keys instead of cutting the row."""

    def compose(self):  # noqa: ANN201 - a compose generator
        items = list(super().compose())
        palette = [w for w in items if isinstance(w, FooterKey) and w.has_class("-command-palette")]
        keys = [w for w in items if isinstance(w, FooterKey) and w not in palette]
        others = [w for w in items if not isinstance(w, FooterKey)]
        width = (self.size.width or self.app.size.width) - (PALETTE_ROOM if palette else 0)
        try:
            app_actions = frozenset(b.action for node, b, _e, _t in self.screen.active_bindings.values()
                                    if node is self.app)
        except Exception:  # noqa: BLE001 - ranking only
            app_actions = frozenset()
        shown = fit_keys(keys, width, app_actions)
        self.styles.grid_size_columns = len(shown) + len(others)
        yield from shown
        yield from others
        yield from palette

    def on_resize(self) -> None:
        if getattr(self, "_fit_width", None) != self.size.width:
            self._fit_width = self.size.width
            self.refresh(recompose=True)
