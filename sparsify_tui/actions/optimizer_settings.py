"""The optimizer's settings and edit syntax, shared by the command line and the app (no Textual).

:data:`SETTINGS` lists the settings the editor shows and steps (key, label,
kind, step, limits, choices); :func:`get_setting` / :func:`fmt_setting` read
one from an :class:`~sparsify_tui.optim.optimization.Optimization`,
:func:`with_setting` returns a copy with one changed, :func:`parse_setting`
turns typed text into its value (a UsageError of one sentence when bad).
:func:`parse_lr` / :func:`lr_to_text` are the text form of a learning-rate
modifier (``step start=60 end=-1 lr=0.01 gamma=0.1 step_size=14``); a layer
sparsity is parsed by :func:`sparsify_tui.settings.parse_sparsity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparsify_tui.errors import UsageError
from sparsify_tui.optim.optimization import (
    INTERPOLATIONS,
    LR_KINDS,
    MASK_TYPES,
    LRModifier,
    Optimization,
    reschedule,
)


@dataclass(frozen=True)
class Setting:
    key: str
    label: str
    kind: str  # float | int | choice | bool
    step: float = 0.0
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""


SETTINGS: list[Setting] = [
    Setting("target_sparsity", "Target sparsity", "float", 0.01, 0.0, 0.99, help="share of prunable weights zeroed"),
    Setting("balance", "Balance (0=perf)", "float", 0.05, 0.0, 1.0, help="0 performance, 1 recovery"),
    Setting("epochs", "Epochs", "int", 1, 1, 100000, help="rescales the default schedule"),
    Setting("pruning_start", "Pruning start", "float", 1.0, 0.0, None),
    Setting("pruning_end", "Pruning end", "float", 1.0, 0.0, None),
    Setting("update_frequency", "Update frequency", "float", 0.25, 0.0, None),
    Setting("init_sparsity", "Initial sparsity", "float", 0.01, 0.0, 0.99),
    Setting("interpolation", "Interpolation", "choice", choices=INTERPOLATIONS),
    Setting("mask_type", "Mask type", "choice", choices=MASK_TYPES),
    Setting("max_sparsity", "Max sparsity", "float", 0.01, 0.01, 0.99, help="per-layer cap"),
    Setting("min_sparsity", "Min sparsity", "float", 0.05, 0.0, 0.99),
    Setting("min_speedup", "Min speedup (x)", "float", 0.05, 0.0, 100.0),
    Setting("min_recovery", "Min recovery", "float", 0.05, 0.0, 1.0),
    Setting("protect_edges", "Protect edges", "bool",
            help="leave the stem, output heads and tiny layers dense"),
    Setting("tiny_params", "Tiny layer (<N w)", "int", 256, 0, 10**9, help="with Protect edges; 0 = off"),
    Setting("buckets", "Buckets", "int", 1, 0, 100),
    Setting("quantization", "INT8 QAT", "bool"),
]
SETTING_BY_KEY = {s.key: s for s in SETTINGS}


def get_setting(opt: Optimization, key: str) -> Any:
    p = opt.pruning
    if key == "epochs":
        return opt.epochs
    if key == "pruning_start":
        return p.start_epoch
    if key == "pruning_end":
        return p.end_epoch
    if key == "quantization":
        return opt.quantization.enabled
    return getattr(p, key)


def fmt_setting(opt: Optimization, s: Setting) -> str:
    v = get_setting(opt, s.key)
    if s.kind == "bool":
        return "on" if v else "off"
    if s.kind == "choice":
        return str(v)
    if s.kind == "int":
        return "off" if s.key == "tiny_params" and not v else f"{int(v)}"
    if s.key in ("min_sparsity", "min_speedup", "min_recovery") and not v:
        return "off"
    return f"{float(v):.4g}"


def with_setting(opt: Optimization, key: str, value: Any) -> Optimization:
    """A copy of ``opt`` with one setting changed (epochs reschedules)."""
    if key == "epochs":
        return reschedule(opt, int(value))
    new = opt.copy()
    p = new.pruning
    if key == "pruning_start":
        p.start_epoch = float(value)
    elif key == "pruning_end":
        p.end_epoch = float(value)
    elif key == "quantization":
        new.quantization.enabled = bool(value)
    elif key in ("interpolation", "mask_type"):
        setattr(p, key, str(value))
    elif key == "buckets":
        p.buckets = int(value)
    elif key == "tiny_params":
        p.tiny_params = int(value)
    elif key == "protect_edges":
        p.protect_edges = bool(value)
    else:
        setattr(p, key, float(value))
    return new


def parse_setting(s: Setting, text: str) -> Any:
    """The typed value for setting ``s`` or UsageError with one sentence."""
    t = text.strip()
    if s.kind == "bool":
        if t.lower() in ("on", "true", "yes", "1"):
            return True
        if t.lower() in ("off", "false", "no", "0"):
            return False
        raise UsageError(f"{s.label} must be on or off, got {t!r}")
    if s.kind == "choice":
        if t not in s.choices:
            raise UsageError(f"{s.label} must be one of {', '.join(s.choices)}, got {t!r}")
        return t
    if s.kind == "int":
        if s.key == "tiny_params" and t.lower() == "off":
            return 0
        try:
            v: Any = int(t)
        except ValueError:
            raise UsageError(f"{s.label} must be a whole number, got {t!r}") from None
    else:
        if s.key.startswith("min_") and t.lower() == "off":
            return 0.0
        try:
            v = float(t.rstrip("%")) / (100.0 if t.endswith("%") else 1.0)
        except ValueError:
            raise UsageError(f"{s.label} must be a number, got {t!r}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise UsageError(f"{s.label} must be a finite number, got {t!r}")
    if s.lo is not None and v < s.lo:
        raise UsageError(f"{s.label} must be at least {s.lo:g}, got {v:g}")
    if s.hi is not None and v > s.hi:
        raise UsageError(f"{s.label} must be at most {s.hi:g}, got {v:g}")
    return v


def fmt_lr_args(m: LRModifier) -> str:
    parts = []
    for k, v in m.args.items():
        if k == "milestones":
            parts.append("milestones=" + ",".join(f"{x:g}" for x in v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{k}={v:g}")
    return " ".join(parts)


def lr_to_text(m: LRModifier) -> str:
    return f"{m.kind} start={m.start_epoch:g} end={m.end_epoch:g} lr={m.init_lr:g} {fmt_lr_args(m)}".strip()


def parse_lr(text: str) -> LRModifier:
    """``step start=60 end=-1 lr=0.01 gamma=0.1 step_size=14`` -> LRModifier (UsageError if bad)."""
    words = text.split()
    if not words:
        raise UsageError("a learning-rate modifier needs a kind: " + ", ".join(LR_KINDS))
    kind = words[0]
    if kind not in LR_KINDS:
        raise UsageError(f"learning-rate modifier kind must be one of {', '.join(LR_KINDS)}, got {kind!r}")
    m = LRModifier(kind=kind)
    for w in words[1:]:
        if "=" not in w:
            raise UsageError(f"learning-rate modifier values are written key=value, got {w!r}")
        k, v = w.split("=", 1)
        try:
            if k == "milestones":
                m.args["milestones"] = [float(x) for x in v.split(",") if x]
            elif k in ("start", "start_epoch"):
                m.start_epoch = float(v)
            elif k in ("end", "end_epoch"):
                m.end_epoch = float(v)
            elif k in ("lr", "init_lr"):
                m.init_lr = float(v)
            elif k in ("gamma", "step_size", "lr_min", "cycle_epochs"):
                m.args[k] = float(v)
            else:
                raise UsageError(f"unknown learning-rate modifier key {k!r} (start, end, lr, gamma, step_size, "
                                 "milestones, lr_min, cycle_epochs)")
        except ValueError:
            raise UsageError(f"learning-rate modifier value {w!r} is not a number") from None
    return m


def next_version_name(names: list[str], base: str) -> str:
    stem = base
    i = 2
    while f"{stem}-v{i}" in names:
        i += 1
    return f"{stem}-v{i}"
