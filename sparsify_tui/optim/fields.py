"""Coercion of stored fields (a project's TOML, a hand-written JSON): one clear sentence on a bad value.

Shared by the optimization (:mod:`sparsify_tui.optim.optimization`) and its plan
(:mod:`sparsify_tui.optim.plan`); ``ctx`` names the table the key sits in.
"""

from __future__ import annotations

import math

from sparsify_tui.errors import UsageError


def where(ctx: str, key: str) -> str:
    return f"{ctx}.{key}" if ctx else key


def get_float(d: dict, key: str, default: float, ctx: str) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(str(v).strip())
        except (TypeError, ValueError):
            raise UsageError(f"optimization field {where(ctx, key)} must be a number, got {v!r}") from None
    v = float(v)
    if not math.isfinite(v):
        raise UsageError(f"optimization field {where(ctx, key)} must be a finite number, got {v!r}")
    return v


def get_int(d: dict, key: str, default: int, ctx: str) -> int:
    v = d.get(key, default)
    if isinstance(v, bool):
        raise UsageError(f"optimization field {where(ctx, key)} must be a whole number, got {v!r}")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int):
        try:
            v = int(str(v).strip())
        except (TypeError, ValueError):
            raise UsageError(f"optimization field {where(ctx, key)} must be a whole number, got {v!r}") from None
    return v


def get_bool(d: dict, key: str, default: bool, ctx: str) -> bool:
    v = d.get(key, default)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return v.strip().lower() in ("true", "yes", "1")
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise UsageError(f"optimization field {where(ctx, key)} must be true or false, got {v!r}")


def get_str(d: dict, key: str, default: str, ctx: str) -> str:
    v = d.get(key, default)
    if v is None:
        return default
    if not isinstance(v, str):
        raise UsageError(f"optimization field {where(ctx, key)} must be text, got {v!r}")
    return v


def get_dict(d: dict, key: str, ctx: str) -> dict:
    v = d.get(key, {})
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise UsageError(f"optimization field {where(ctx, key)} must be a table, got {type(v).__name__}")
    return v


def num(x: float) -> float | int:
    """Floats stay floats (TOML/JSON friendly), no None."""
    return float(x)


