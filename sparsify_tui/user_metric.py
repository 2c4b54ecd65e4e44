"""The user's own accuracy metric (``--metric module:function``), numpy only.

The output change (:mod:`sparsify_tui.metrics`) is the tool's accuracy axis
without labels. When the user has labelled samples (an array ``labels`` in the
``.npz`` beside the inputs, one row per sample) and a way of scoring a model
(top-1 accuracy, mAP, word error rate...), ``--metric`` names that function and
validation, the deployment search and budgets report it and stop by it.

**The contract** (:func:`load_metric` reads the spec, :meth:`UserMetric.evaluate`
calls the function)::

    def top1(reference, changed, samples):
        pred = changed["probs"].argmax(axis=-1)
        return {"value": 100.0 * float((pred == samples["labels"]).mean()),
                "higher_is_better": True, "name": "top-1", "unit": "%"}

* ``spec``: ``module:function`` (a module importable from the current
  directory or the Python path, e.g. ``mymetrics:top1``) or
  ``path/to/file.py:function``.
* ``reference`` / ``changed``: ``{output name: array}``, the outputs of the
  reference (dense fp32) model and of the changed (pruned, INT8...) model on the
  same samples, the samples stacked on the first axis in their order (an output
  whose samples differ in shape beyond the first axis is a list of the
  per-sample arrays instead).
* ``samples``: ``{input name: array}`` stacked the same way, plus ``labels``
  (stacked the same way) when the samples carry labels. The labels are never fed
  to the model.
* It returns ``(value, higher_is_better)`` or a dict with ``value`` and
  ``higher_is_better`` and, optionally, ``name`` (default: the function's name)
  and ``unit`` (e.g. ``"%"``, shown after the values). ``value`` is one finite
  real number; ``higher_is_better`` a bool.

The function is called twice per evaluation: ``fn(reference, reference,
samples)`` gives ``reference_value`` (the reference model's own score), and
``fn(reference, changed, samples)`` gives ``value``. Both calls must agree on
``higher_is_better``. A spec that does not import, a function that raises or
returns anything else (NaN, a string, an array, a number without its
direction) raises :class:`~sparsify_tui.errors.UsageError` with one sentence
naming the metric: the caller stores nothing.

**The result** (:meth:`UserMetric.evaluate`, stored as ``user_metric`` in
validations and deploy rows): ``{"name", "value", "reference_value",
"higher_is_better", "unit", "drop", "samples", "spec"}``; ``drop`` is how much
worse the changed model is, in the metric's units (``reference_value - value``
when higher is better, ``value - reference_value`` otherwise; negative when it
got better). ``--max-drop D`` (same units) is a budget: :func:`over_budget`
says why a result exceeds it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import numbers
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sparsify_tui.errors import UsageError

LABELS = "labels"  # the array of a samples .npz that holds the labels (never fed to the model)


def parse_spec(spec: str) -> tuple[str, str]:
    """(module or file, function name) of ``module:function`` / ``file.py:function``; UsageError otherwise."""
    text = str(spec or "").strip()
    where, sep, name = text.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise UsageError(f"--metric must be module:function or path/to/file.py:function, got {spec!r}")
    return where, name


def _import_file(path: Path) -> Any:
    mod_name = "sparsify_user_metric_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    loader_spec = importlib.util.spec_from_file_location(mod_name, str(path))
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(f"--metric: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    loader_spec.loader.exec_module(module)
    return module


def _import(where: str) -> tuple[Any, str | None]:
    """(the module, its source file) of a module name or a ``.py`` path."""
    looks_like_file = where.endswith(".py") or os.sep in where or "/" in where
    if looks_like_file:
        path = Path(where).expanduser()
        if not path.is_file():
            raise UsageError(f"--metric: {where}: no such file")
        return _import_file(path), str(path.resolve())
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # "importable from the current directory", as `python -m` would
    module = importlib.import_module(where)
    return module, getattr(module, "__file__", None)


class UserMetric:
    """A loaded ``--metric``: the function, its spec and its name; :meth:`evaluate` scores outputs."""

    def __init__(self, spec: str, fn: Callable[..., Any], source: str | None = None) -> None:
        self.spec, self.fn, self.source = spec, fn, source
        self.function_name = getattr(fn, "__name__", "metric")

    def digest(self) -> str:
        """The spec and the source file's content (a cache key: editing the function measures again)."""
        h = hashlib.sha256(self.spec.encode())
        if self.source and Path(self.source).is_file():
            h.update(Path(self.source).read_bytes())
        return h.hexdigest()[:16]

    def _call(self, reference: dict, changed: dict, samples: dict, which: str) -> tuple[float, bool, str, str]:
        try:
            out = self.fn(reference, changed, samples)
        except Exception as exc:  # noqa: BLE001 - the user's code: any failure is one clear sentence
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            hint = ""
            if isinstance(exc, KeyError) and LABELS in str(exc) and LABELS not in samples:
                hint = f" (the samples carry no labels: give a .npz with a {LABELS!r} array beside the inputs)"
            raise UsageError(f"--metric {self.spec} raised {type(exc).__name__} on the {which} outputs"
                             + (f": {first}" if first else "") + hint) from None
        return self._check(out, which)

    def _check(self, out: Any, which: str) -> tuple[float, bool, str, str]:
        """(value, higher_is_better, name, unit) of what the function returned, or UsageError saying what is wrong."""
        bad = f"--metric {self.spec} returned {_describe(out)} on the {which} outputs"
        name, unit = self.function_name, ""
        if isinstance(out, dict):
            if "value" not in out or "higher_is_better" not in out:
                raise UsageError(f"{bad}: a dict needs 'value' and 'higher_is_better'")
            value, hib = out["value"], out["higher_is_better"]
            name = str(out.get("name") or name)
            unit = str(out.get("unit") or "")
        elif isinstance(out, (tuple, list)) and len(out) == 2:
            value, hib = out
        elif _is_number(out):
            raise UsageError(f"{bad} without saying whether higher is better: return (value, higher_is_better)")
        else:
            raise UsageError(f"{bad}: return (value, higher_is_better) or a dict with 'value' and "
                             "'higher_is_better'")
        if not _is_number(value):
            raise UsageError(f"--metric {self.spec} returned a value that is {_describe(value)} on the {which} "
                             "outputs, not one number")
        value = float(value)
        if not math.isfinite(value):
            raise UsageError(f"--metric {self.spec} returned {value} on the {which} outputs, not a finite number")
        if not isinstance(hib, (bool, np.bool_)):
            raise UsageError(f"--metric {self.spec} returned higher_is_better {_describe(hib)} on the {which} "
                             "outputs: give True or False")
        return value, bool(hib), name, unit

    def evaluate(self, reference: list[list[np.ndarray]] | dict, changed: list[list[np.ndarray]] | dict,
                 samples: list[dict] | dict, labels: list[np.ndarray] | np.ndarray | None = None,
                 names: list[str] | None = None) -> dict:
        """The ``user_metric`` dict (see the module doc) of ``changed`` against ``reference`` on ``samples``.

        ``reference`` / ``changed``: per sample, the list of output arrays (in ``names`` order), or already
        stacked dicts; ``samples``: per sample the input dict, or a stacked dict; ``labels``: per sample the
        label rows (or a stacked array), None when the samples carry none."""
        ref = reference if isinstance(reference, dict) else stack_outputs(reference, names)
        chg = changed if isinstance(changed, dict) else stack_outputs(changed, names)
        feed = dict(samples) if isinstance(samples, dict) else stack(samples)
        count = len(samples) if isinstance(samples, list) else None
        if labels is not None:
            feed[LABELS] = labels if isinstance(labels, np.ndarray) else _stack_one(list(labels))
        ref_value, hib0, name, unit = self._call(ref, ref, feed, "reference")
        value, hib, name, unit = self._call(ref, chg, feed, "changed")
        if hib != hib0:
            raise UsageError(f"--metric {self.spec} said higher_is_better {hib0} on the reference outputs and "
                             f"{hib} on the changed ones: it must not change")
        drop = (ref_value - value) if hib else (value - ref_value)
        return {"name": name, "value": value, "reference_value": ref_value, "higher_is_better": hib,
                "unit": unit, "drop": drop, "samples": count, "labels": labels is not None, "spec": self.spec}


def load_metric(spec: "str | UserMetric | None") -> UserMetric | None:
    """The :class:`UserMetric` of ``spec`` (None stays None); UsageError when it does not import or is no function."""
    if spec is None or isinstance(spec, UserMetric):
        return spec
    where, name = parse_spec(spec)
    try:
        module, source = _import(where)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - an import error of the user's module, or an error it raised
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"--metric {spec}: {where} does not import ({type(exc).__name__}"
                         + (f": {first}" if first else "") + ")") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise UsageError(f"--metric {spec}: {where} has no function {name!r}")
    if not callable(fn):
        raise UsageError(f"--metric {spec}: {where}.{name} is {_describe(fn)}, not a function")
    return UserMetric(str(spec), fn, source)


def parse_max_drop(value: Any) -> float | None:
    """``--max-drop D``: None, or a finite number >= 0 (in the metric's units)."""
    if value is None:
        return None
    try:
        d = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise UsageError(f"--max-drop must be a number >= 0 (in the metric's units), got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(d) or d < 0:
        raise UsageError(f"--max-drop must be a finite number >= 0 (in the metric's units), got {value!r}")
    return d


def over_budget(um: dict | None, max_drop: float | None) -> str | None:
    """Why ``um`` (a ``user_metric`` dict) is over ``--max-drop`` (None when within it, or without either)."""
    if um is None or max_drop is None:
        return None
    if um["drop"] > max_drop + 1e-12:
        return (f"{format_metric(um)}: a drop of {fmt_value(um['drop'])}{_units(um)} is over --max-drop "
                f"{max_drop:g}")
    return None


def budget_line(um: dict, max_drop: float) -> str:
    """"PASS/FAIL" line of a validation's ``--max-drop``."""
    why = over_budget(um, max_drop)
    if why:
        return f"FAIL: {why}"
    return f"PASS: {format_metric(um)}, a drop of {fmt_value(um['drop'])}{_units(um)} (--max-drop {max_drop:g})"


def _units(um: dict) -> str:
    unit = um.get("unit") or ""
    return " points" if unit == "%" else (f" {unit}" if unit else "")


def fmt_value(x: float) -> str:
    """A metric value with as many decimals as its size needs: 76.1, 0.761, 2.35, 0.00123."""
    a = abs(x)
    if a >= 10 or a == 0:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def format_metric(um: dict) -> str:
    """"top-1 76.1% → 75.8%": the reference value, then the changed model's."""
    unit = um.get("unit") or ""
    sep = "" if unit == "%" else (" " if unit else "")
    return (f"{um['name']} {fmt_value(um['reference_value'])}{sep}{unit} → "
            f"{fmt_value(um['value'])}{sep}{unit}")


def _is_number(x: Any) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, np.ndarray):
        return x.ndim == 0 and x.dtype.kind in "iuf"
    return isinstance(x, numbers.Real)


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of shape {list(x.shape)}"
    if x is None:
        return "None"
    if isinstance(x, (bool, np.bool_)):
        return f"the bool {bool(x)}"
    if isinstance(x, str):
        return f"the string {x[:40]!r}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)} items"
    if _is_number(x):
        return f"the number {x}"
    return f"a {type(x).__name__}"


def _stack_one(items: list) -> Any:
    """The arrays stacked on the first axis (0-d ones as rows), or the list when their shapes differ."""
    arrays = [np.asarray(a) for a in items]
    if not arrays:
        return np.zeros((0,))
    arrays = [a.reshape(1) if a.ndim == 0 else a for a in arrays]
    if all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    return arrays


def stack(samples: list[dict]) -> dict:
    """``{name: stacked array}`` of a list of per-sample dicts (see :func:`_stack_one`)."""
    keys = list(samples[0]) if samples else []
    return {k: _stack_one([s[k] for s in samples]) for k in keys}


def stack_outputs(outputs: list[list[np.ndarray]], names: list[str] | None) -> dict:
    """``{output name: stacked array}`` of per-sample output lists (names ``output0``... when not given)."""
    n = len(outputs[0]) if outputs else 0
    names = list(names) if names else [f"output{i}" for i in range(n)]
    return {names[i]: _stack_one([o[i] for o in outputs]) for i in range(n)}
