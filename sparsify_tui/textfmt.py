"""Plain-text number formats shared by the command line and the app (no Textual here)."""

from __future__ import annotations


def fmt_count(n: int | float | None, unknown: str = "?") -> str:
    """1234567 -> '1.23M' (k, M, G, T); None -> ``unknown``."""
    if n is None:
        return unknown
    n = float(n)
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"
