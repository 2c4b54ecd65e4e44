"""The project's constants and the text helpers every part of it shares: names, JSON and TOML.

Nothing here touches a project directory; :mod:`.store` does the reading and writing.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from sparsify_tui import fsutil
from sparsify_tui.errors import ProjectError

SCHEMA_VERSION = 1
PROFILE_SCHEMA_VERSION = 1
KINDS = ("perf", "loss", "quant", "deploy", "perf_channels", "loss_channels")
PROJECT_FILE = "project.toml"
BACKUP_FILE = "project.toml.bak"
LOCK_FILE = "project.lock"
MODEL_FILE = "model.onnx"
PROFILES_DIR = "profiles"
OPTIMIZATIONS_DIR = "optimizations"
RECENT_MAX = 30


_KNOWN_TOP = ("schema_version", "project", "model", "profiles", "optimizations")


# ---------------------------------------------------------------- helpers
def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-11-28T16:15:00+00:00``)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def slugify(name: str, default: str = "project") -> str:
    """A file-system friendly version of ``name``: ``"My ResNet 50!"`` -> ``"my-resnet-50"``."""
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._").lower()
    text = re.sub(r"-{2,}", "-", text)
    return text[:64].strip("-._") or default


def drop_none(value: Any) -> Any:
    """``value`` with ``None`` removed recursively (dict values and list items); tuples become lists."""
    if isinstance(value, dict):
        return {str(k): drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [drop_none(v) for v in value if v is not None]
    return value


def clean_text(text: str) -> str:
    """``text`` made encodable as UTF-8: undecodable bytes (from a non-UTF-8 command line or file
    name, kept by Python as lone surrogates) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:  # surrogates standing for undecodable bytes: one U+FFFD per byte run
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # other lone surrogates
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _clean_strings(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_strings(v) for v in value]
    return value


def dumps_json(doc: Any) -> str:
    """JSON for our files: readable UTF-8 when possible, ASCII escapes when the text holds lone surrogates."""
    try:
        text = json.dumps(doc, indent=1, default=fsutil.json_default, ensure_ascii=False) + "\n"
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return json.dumps(doc, indent=1, default=fsutil.json_default, ensure_ascii=True) + "\n"


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used for cache keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=fsutil.json_default)


def _to_toml_value(value: Any, where: str) -> Any:
    """Make ``value`` writable by tomli_w: drop None, tuples -> lists, numpy -> Python, str keys."""
    if value is None:
        return None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if v is None:
                continue
            out[str(k)] = _to_toml_value(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = value if not isinstance(value, (set, frozenset)) else sorted(value, key=repr)
        return [_to_toml_value(v, where) for v in items if v is not None]
    if isinstance(value, (bool, int, float, str, _dt.datetime, _dt.date, _dt.time)):
        return value
    if isinstance(value, Path):
        return str(value)
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return _to_toml_value(value.tolist(), where)
    except ImportError:  # pragma: no cover
        pass
    raise ProjectError(f"cannot store {where} in project.toml: a {type(value).__name__} is not a TOML value")


def dump_toml(doc: dict[str, Any], aot_keys: tuple[str, ...] = ("profiles", "optimizations")) -> str:
    """TOML text of ``doc`` with the top-level arrays ``aot_keys`` always written as ``[[key]]`` sections
    at the end (tomli_w writes short arrays of tables inline, which is harder to edit by hand)."""
    import tomli_w

    doc = dict(doc)
    aots = {}
    for k in aot_keys:
        v = doc.get(k)
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            aots[k] = doc.pop(k)
    text = tomli_w.dumps(doc)
    for k, rows in aots.items():
        header = f"[{tomli_w.dumps({k: 0}).split(' = ')[0]}]"  # the key as TOML writes it
        for row in rows:
            chunk = tomli_w.dumps({k: row})
            if chunk.startswith(header + "\n"):
                chunk = "[" + header + "]" + chunk[len(header):]
            else:  # a row with only sub-tables gets no header line of its own
                chunk = "[" + header + "]\n" + chunk
            text += ("\n" if text else "") + chunk
    return text


def _timestr(value: Any) -> Any:
    """A hand-written TOML datetime becomes its ISO string; strings stay as they are."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    return value


_TYPE_NAMES = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"), (list, "an array"),
               (dict, "a table"))  # bool before int: a bool is an int


def _type_name(value: Any) -> str:
    return next((name for t, name in _TYPE_NAMES if isinstance(value, t)), f"a {type(value).__name__}")



def bad_type(path: Any, key: str, want: str, value: Any) -> ProjectError:
    """``<path>: <key> must be <want>, not <a type>`` (a hand-edited value of the wrong type)."""
    return ProjectError(f"{path}: {key} must be {want}, not {_type_name(value)}")
