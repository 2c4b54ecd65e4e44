"""Profiles: perf (timings), loss (sensitivity to pruning), quant (sensitivity to INT8).

Profile documents are plain JSON-able dicts. Sparsity levels used as dict keys
are formatted with :func:`level_key`.
"""

from __future__ import annotations

PERF_LEVELS = (0.0, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)
LOSS_ONE_SHOT_LEVELS = (0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
LOSS_APPROX_LEVELS = tuple(round(i / 100, 2) for i in range(100))
SCHEMA_VERSION = 1


def level_key(level: float) -> str:
    """0.9 -> "0.9", 0.975 -> "0.975", 0 -> "0.0"."""
    return repr(round(float(level), 6))
