"""User settings: validation shared by the command line, the app and the cluster, and the defaults.

Every face parses a flag or a typed field with the same function here, so the
limits (at least 1, at most the usable cores, levels in [0, 1)) are the same
everywhere; a bad value raises :class:`~sparsify_tui.errors.UsageError` naming the flag."""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

from sparsify_tui.errors import UsageError

# ---------------------------------------------------------------- defaults
PERF_LEVELS = (0.0, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)
LOSS_ONE_SHOT_LEVELS = (0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
LOSS_APPROX_LEVELS = tuple(round(i / 100, 2) for i in range(100))


def level_key(level: float) -> str:
    """A sparsity level as a dict key: 0.9 -> "0.9", 0.975 -> "0.975", 0 -> "0.0"."""
    return repr(round(float(level), 6))


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------- flag values
def parse_int(flag: str, value: Any, *, minimum: int | None = 1, maximum: int | None = None) -> int:
    """An integer flag value, or a UsageError naming the flag."""
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be a whole number, got {value!r}") from None
    if minimum is not None and n < minimum:
        raise UsageError(f"{flag} must be at least {minimum}, got {n}")
    if maximum is not None and n > maximum:
        raise UsageError(f"{flag} must be at most {maximum}, got {n}")
    return n


def parse_float(flag: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                max_exclusive: bool = False) -> float:
    try:
        x = float(str(value).strip())
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise UsageError(f"{flag} must be a finite number, got {value!r}")
    if minimum is not None and x < minimum:
        raise UsageError(f"{flag} must be at least {minimum}, got {x:g}")
    if maximum is not None and (x >= maximum if max_exclusive else x > maximum):
        bound = "below" if max_exclusive else "at most"
        raise UsageError(f"{flag} must be {bound} {maximum}, got {x:g}")
    return x


def parse_sparsity(value: Any, what: str = "a layer sparsity") -> float:
    """A layer sparsity in [0, 1), written 0.8 or 80%: the one syntax of the optimizer editor and
    ``optimize --override``; a bad value raises a UsageError naming ``what``."""
    t = str(value).strip()
    try:
        v = float(t.rstrip("%")) / (100.0 if t.endswith("%") else 1.0)
    except ValueError:
        raise UsageError(f"{what} must be a number in [0, 1) such as 0.8 or 80%, got {t!r}") from None
    if not (0.0 <= v < 1.0):
        raise UsageError(f"{what} must be in [0, 1), got {t!r}")
    return v


def parse_int_list(flag: str, value: Any, *, minimum: int = 1) -> list[int]:
    parts = [p for p in str(value).replace(" ", "").split(",") if p != ""]
    if not parts:
        raise UsageError(f"{flag} needs at least one value")
    return [parse_int(flag, p, minimum=minimum) for p in parts]


def parse_levels(flag: str, value: str | None, default: Iterable[float]) -> list[float]:
    """Sparsity levels: numbers in [0, 1), sorted, de-duplicated; 0 is always included."""
    if value is None:
        levels = list(default)
    else:
        parts = [p for p in str(value).replace(" ", "").split(",") if p != ""]
        if not parts:
            raise UsageError(f"{flag} needs at least one level")
        levels = [parse_float(flag, p, minimum=0.0, maximum=1.0, max_exclusive=True) for p in parts]
    levels = sorted(set(round(x, 6) for x in levels) | {0.0})
    return levels


def parse_cores(flag: str, value: Any) -> int | None:
    """A core count between 1 and the cores this process may use; None = all."""
    if value is None:
        return None
    return parse_int(flag, value, minimum=1, maximum=usable_cores())
