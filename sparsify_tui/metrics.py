"""Output change: how far a changed model's outputs moved from the reference model's (numpy only).

This is the tool's accuracy axis without labels. Loss profiles, INT8 profiles,
validation (and the deployment search and the pruning methods) all call
:func:`compare_outputs`; nothing else computes an output change.

**Per output, a metric chosen from what the output is** (:func:`plan_outputs`,
fixed once from the *reference* outputs so every measurement against that
reference uses the same metric, temperature and scale):

=================  ==========================================  ===================  =====================
kind               how it is recognised                        primary metric       also reported
=================  ==========================================  ===================  =====================
``probabilities``  float, >= 0, rows sum to 1 on the last axis  ``kl`` (nats)        top-1, relative RMS
``class_scores``   a 2-D [N, C] float output, C >= 2, or a      ``kl`` (nats) at     top-1, relative RMS
                   name such as ``logits``/``probs``/``cls``    temperature T
                   (classes on the last axis)
``embedding``      a 2-D [N, D] float output whose rows have    ``cosine_distance``  relative RMS
                   unit L2 norm, or whose D is the feature
                   axis of a 3-D output of the same model, or
                   a name such as ``embedding``/``pooled``
``map``            a float output bounded in [0, 1]: a Sigmoid  ``mean_abs``           ``flipped`` (share of
                   or Softmax output in the graph (the caller's                      decisions at 0.5)
                   ``bounded`` names), or values within [0, 1]
                   on every reference sample
``regression``     any other float output (maps, boxes...)     ``nse`` (ratio)      relative RMS (%)
``integer``        integer or boolean outputs                  ``changed_fraction`` -
=================  ==========================================  ===================  =====================

* ``kl``: KL(reference || changed) of the softmax over the last axis at
  temperature T, averaged over rows. T = max(1, s / 4), s being the median,
  over the reference rows, of the standard deviation of the reference scores
  across classes (log-probabilities for a ``probabilities`` output). An
  ordinary trained classifier has s < 4 and gets T = 1, the plain softmax;
  logits spanning thousands (untrained heads, exports without a temperature)
  get a T that keeps the softmax informative instead of one-hot.
* ``top1_changed``: the share of rows whose argmax changed;
  ``top1_agreement`` = 1 - that.
* ``cosine_distance``: 1 - cos(reference row, changed row), averaged over rows
  (0 = same direction, 1 = orthogonal, 2 = opposite).
* ``nse``: normalized squared error ||y - y'||^2 / ||y||^2 per sample;
  ``rel_rms_pct`` = 100 * sqrt(nse), the relative RMS change in percent.
* ``changed_fraction``: the share of elements that differ.
* ``mean_abs``: mean over the elements of |y - y'| (a probability map's own
  units); ``flipped``: the share of elements on the other side of 0.5
  (``flipped_count`` of ``elements``). A map fed inputs that keep it near 0
  reads ~0 here, where a relative metric would divide noise by ~0.

**Degenerate-metric guard**: where the primary metric cannot see a change on
the reference samples, the output switches to the next informative metric and
says so in ``notes``: a softmax saturated even at T (on every row the classes
other than the top one hold less than ``SATURATED_MASS`` of the probability)
-> ``nse`` of the scores; an embedding with an all-zero row -> ``nse``; an
output that is all zeros (``nse`` undefined) or whose reference energy is
negligible (RMS below ``NEGLIGIBLE_RMS`` over the samples: a relative metric
would rank noise) -> ``rms``, the RMS change in the output's own units. Within
``nse``, a sample whose reference energy is below ``NEGLIGIBLE_SHARE`` of the
samples' mean is scaled by that mean. A relative metric is never computed over
a reference that is about zero.

:func:`departure` turns a stored output change into a sentence when the changed
model's outputs no longer follow the original (thresholds ``DEPART_*``).

**The combined value** (``output_change``): the sum over the model's outputs of
each output's primary-metric value (``value``), each averaged over the
samples, capped at ``MAX_CHANGE``. For a single-output model it is that
output's metric in its unit (``output_change_metric``, ``output_change_unit``);
for several outputs of different metrics ``output_change_metric`` is "sum".
A changed output of another shape, or NaN/inf where the reference is finite,
counts as ``MAX_CHANGE``.

**In the JSON documents** (:meth:`OutputChange.to_json`), beside ``output_change``:
``output_change_metric`` (a metric name, or "sum"), ``output_change_unit``,
``output_change_reading`` (one line in words), ``output_change_samples`` and
``output_change_outputs``: one dict per output with ``name``, ``kind``,
``metric``, ``unit``, ``temperature`` (KL only), ``notes``, ``value`` (the
primary metric), the values of every metric computed for it (``kl``,
``top1_changed``, ``top1_agreement``, ``cosine_distance``, ``nse``,
``rel_rms_pct``, ``rms``, ``changed_fraction``, ``mean_abs``, ``flipped``,
``flipped_count``), ``rows`` (class scores and embeddings), ``elements`` (maps)
and ``reading``. Profiles, whose rows all share one reference, list
the plan once (``output_metrics``: ``name``, ``kind``, ``metric``, ``unit``,
``temperature``, ``notes``) and give each layer ``output_values``:
{output name: {``value``, ``top1_changed``, ``flipped``, ``rel_rms_pct``}} (those present).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# an output whose values became NaN/inf where the reference's are finite moved "infinitely":
# it is recorded as this value (JSON has no infinity)
MAX_CHANGE = 1e9
# T = max(1, s / TEMPERATURE_SPREAD): the tempered reference logits have a spread of at most this
TEMPERATURE_SPREAD = 4.0
# a softmax is saturated when on every row the non-top classes hold less than this probability
SATURATED_MASS = 1e-4
_TINY = 1e-30  # probabilities are clipped here before their log

# a reference whose RMS is below this (in the output's own units, over all samples) has negligible energy:
# a relative metric over it would divide noise by ~0, so the RMS change in output units is used instead
NEGLIGIBLE_RMS = 1e-6
# a sample whose reference energy is below this share of the samples' mean is scaled by that mean
NEGLIGIBLE_SHARE = 1e-6
DECISION = 0.5  # a [0, 1] map's decisions: above it or not

KINDS = ("probabilities", "class_scores", "embedding", "map", "regression", "integer")
# the kind names of the first output-change definition (the `output_kinds` key of older documents)
LEGACY_KIND = {"probabilities": "dist", "class_scores": "logits", "regression": "nse", "integer": "discrete",
               "embedding": "embedding", "map": "map"}

UNITS = {
    "kl": "nats",
    "cosine_distance": "cosine distance",
    "nse": "ratio (squared error / squared norm)",
    "rms": "output units (RMS)",
    "changed_fraction": "fraction of elements",
    "top1_changed": "fraction of rows",
    "mean_abs": "mean absolute change (of a [0, 1] map)",
    "flipped": "fraction of decisions at 0.5",
}

OUTPUT_CHANGE_HELP = (
    "Output change: how far the outputs moved from the reference (dense or fp32) model's on the same "
    "samples, with a metric chosen per output: class probabilities and class scores (logits) use the KL "
    "divergence KL(reference || changed) in nats of the softmax at a temperature T = max(1, s/4) (s: the "
    "median spread of the reference scores across classes; T = 1 for ordinary trained classifiers), with the "
    "share of samples whose top-1 class changed beside it; embeddings use the cosine distance 1 - cos; "
    "other float outputs (maps, boxes) the normalized squared error ||y - y'||^2 / ||y||^2, shown as a "
    "relative RMS change in percent (its square root); maps bounded in [0, 1] (a Sigmoid or Softmax "
    "output, or values that stay in that range) the mean absolute change, with the share of decisions at 0.5 "
    "that flipped beside it; integer outputs the fraction of elements that changed. A relative metric is "
    "never computed over a reference that is about zero: the RMS change in the output's units is used. "
    "Where a metric cannot see a change (a softmax saturated even at T, an all-zero output) the "
    "next informative one is used and the notes say so. The value is the sum over the outputs of each "
    "output's metric, averaged over the samples."
)

_CLASS_NAME = re.compile(r"(logit|prob|softmax|class|cls)", re.IGNORECASE)
_EMBED_NAME = re.compile(r"(embed|pool|sentence|feature|vector|encod)", re.IGNORECASE)


# ---------------------------------------------------------------- what an output is
def in_unit_range(y: np.ndarray) -> bool:
    """Whether a float output's values are all finite and within [0, 1], and not all zeros (an all-zero
    output, e.g. a dead ReLU, says nothing of a bound)."""
    y = np.asarray(y)
    return y.size > 0 and y.dtype.kind == "f" and bool(np.all(np.isfinite(y))) \
        and float(y.min()) >= 0.0 and 0.0 < float(y.max()) <= 1.0


def classify_output(y: np.ndarray, name: str = "", others: Iterable[np.ndarray] = (),
                    bounded: bool | None = None) -> str:
    """The kind of an output (one of ``KINDS``) from its reference values, its name and the other outputs.

    ``bounded``: True when the graph says the output is a map bounded in [0, 1] (produced by a Sigmoid or
    Softmax, possibly through reshapes), False when the caller checked it is not, None to judge from ``y``
    (values within [0, 1]). A bounded output is a ``map`` unless it is ``probabilities`` (rows summing to 1
    on the last axis, compared by KL); judged from the values alone, an ``embedding`` stays one.
    """
    y = np.asarray(y)
    if y.dtype.kind not in "fc":
        return "integer"
    finite = y.size > 0 and bool(np.all(np.isfinite(y)))
    if y.ndim >= 1 and y.shape[-1] >= 2 and finite:
        yy = y.astype(np.float64)
        if yy.min() >= -1e-6 and np.all(np.abs(yy.sum(axis=-1) - 1.0) <= 1e-3):
            return "probabilities"
    kind = _classify_unbounded(y, name, others, finite)
    if bounded is None:
        bounded = in_unit_range(y) and kind != "embedding"
    return "map" if bounded and y.dtype.kind == "f" else kind


def _classify_unbounded(y: np.ndarray, name: str, others: Iterable[np.ndarray], finite: bool) -> str:
    if y.ndim >= 2 and y.shape[-1] >= 2:
        if name and _CLASS_NAME.search(name):
            return "class_scores"
        if y.ndim == 2 and name and _EMBED_NAME.search(name):
            return "embedding"
    if y.ndim == 2 and y.shape[1] >= 2:
        if finite:
            norms = np.linalg.norm(y.astype(np.float64), axis=-1)
            if np.all(np.abs(norms - 1.0) <= 1e-3):
                return "embedding"  # L2-normalized rows
        for o in others:
            o = np.asarray(o)
            if o is not y and o.ndim == 3 and o.dtype.kind == "f" and o.shape[-1] == y.shape[1] \
                    and o.shape[0] == y.shape[0]:
                return "embedding"  # pooled from a [N, T, D] hidden state of the same model
        return "class_scores"
    return "regression"


@dataclass
class OutputMetric:
    """How one output is compared (fixed from the reference outputs)."""

    name: str
    kind: str
    metric: str  # the primary metric: its value enters the combined output change
    unit: str
    temperature: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "metric": self.metric, "unit": self.unit}
        if self.temperature is not None:
            d["temperature"] = self.temperature
        d["notes"] = list(self.notes)
        return d


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]) if a.ndim >= 1 and a.size else a.reshape(0, 1)


def _scores(a: np.ndarray, kind: str) -> np.ndarray:
    """Rows of class scores (float64): the logits, or the log-probabilities."""
    x = _rows(np.asarray(a, dtype=np.float64))
    if kind == "probabilities":
        return np.log(np.clip(x, _TINY, None))
    return x


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _as_list(sample: Any, names: Sequence[str] | None) -> list[np.ndarray]:
    if isinstance(sample, Mapping):
        return [sample.get(n) for n in (names or list(sample))]  # None: not computed (unaffected)
    return list(sample)


def plan_outputs(reference: Sequence[Any], names: Sequence[str] | None = None,
                 kinds: Mapping[str, str] | None = None, bounded: Iterable[str] = ()) -> list[OutputMetric]:
    """The metric of each output, from the reference outputs of all samples (lists or {name: array}).

    ``bounded``: names of outputs the graph says are bounded in [0, 1] (a Sigmoid or Softmax output,
    e.g. from :func:`sparsify_tui.onnxkit.graphs.bounded_outputs`); any other float output whose values
    stay in [0, 1] on every sample is a map too (see :func:`classify_output`).
    """
    bounded = set(bounded)
    reference = list(reference)
    if not reference:
        return []
    first = reference[0]
    if names is None:
        names = list(first) if isinstance(first, Mapping) else [f"output {i}" for i in range(len(first))]
    names = list(names)
    samples = [_as_list(s, names) for s in reference]
    plan = []
    for i, name in enumerate(names):
        y0 = np.asarray(samples[0][i])
        ys = [np.asarray(s[i]) for s in samples]
        from_graph = name in bounded
        from_values = not from_graph and any(np.any(y) for y in ys) \
            and all(in_unit_range(y) or not np.any(y) for y in ys)
        kind = (kinds or {}).get(name)
        if not kind:
            kind = classify_output(y0, name, [np.asarray(s) for j, s in enumerate(samples[0]) if j != i],
                                   bounded=False)
            if (from_graph and kind in ("class_scores", "embedding", "regression")) or \
                    (from_values and kind in ("class_scores", "regression")):
                kind = "map"
        m = _plan_one(name, kind, ys)
        if m.kind == "map":
            why = ("a Sigmoid or Softmax output in the graph" if from_graph else
                   f"its values stay in [0, 1] on the {len(ys)} samples" if from_values else "as the caller said")
            m.notes.insert(0, f"{name} is a map bounded in [0, 1] ({why}): compared by the mean absolute "
                              f"change, with the share of decisions at {DECISION:g} that flipped")
        plan.append(m)
    return plan


def _all_finite_rows(ys: list[np.ndarray], kind: str) -> np.ndarray:
    rows = [_scores(y, kind) for y in ys if y.size]
    if not rows:
        return np.zeros((0, 1))
    x = np.concatenate(rows, axis=0) if len({r.shape[-1] for r in rows}) == 1 else rows[0]
    return x[np.all(np.isfinite(x), axis=-1)]


def _plan_one(name: str, kind: str, ys: list[np.ndarray]) -> OutputMetric:
    if kind == "integer":
        return OutputMetric(name, kind, "changed_fraction", UNITS["changed_fraction"])
    flat = [y.astype(np.float64).ravel() for y in ys]
    finite_vals = np.concatenate([f[np.isfinite(f)] for f in flat]) if flat else np.zeros(0)
    all_zero = finite_vals.size == 0 or not np.any(finite_vals)
    ref_rms = float(np.sqrt(np.mean(np.square(finite_vals)))) if finite_vals.size else 0.0
    if kind == "map":
        return OutputMetric(name, kind, "mean_abs", UNITS["mean_abs"])

    def fallback_nse(note: str) -> OutputMetric:
        if all_zero or (ref_rms < NEGLIGIBLE_RMS and kind != "probabilities"):
            zero = (f"{name} is all zeros on the samples: a relative change is undefined, "
                    "the RMS change in the output's own units is used") if all_zero else (
                    f"{name} is about zero on the samples (RMS {ref_rms:.2g}, below {NEGLIGIBLE_RMS:g}): a "
                    "relative change over it would rank noise, the RMS change in the output's own units is used")
            return OutputMetric(name, kind, "rms", UNITS["rms"], notes=[n for n in (note, zero) if n])
        return OutputMetric(name, kind, "nse", UNITS["nse"], notes=[note] if note else [])

    if kind in ("probabilities", "class_scores"):
        x = _all_finite_rows(ys, kind)
        if x.shape[0] == 0 or x.shape[-1] < 2:
            return fallback_nse(f"{name} has no finite class-score rows: the normalized squared error is used")
        spread = float(np.median(np.std(x, axis=-1)))
        t = max(1.0, spread / TEMPERATURE_SPREAD)
        t = float(f"{t:.4g}")  # a readable temperature; the value is exact as stored
        p = np.exp(_log_softmax(x / t))
        rest = 1.0 - np.max(p, axis=-1)
        if np.all(rest < SATURATED_MASS):
            what = "probabilities" if kind == "probabilities" else "logits"
            m = fallback_nse(
                f"the softmax of {name} is saturated even at T={t:g} (the top class holds more than "
                f"{1 - SATURATED_MASS:.4%} on every sample): KL would read ~0 whatever the change, so the "
                f"normalized squared error of the {what} is used")
            m.temperature = t
            return m
        return OutputMetric(name, kind, "kl", UNITS["kl"], temperature=t)
    if kind == "embedding":
        x = _all_finite_rows(ys, kind)
        if x.shape[0] == 0 or np.any(np.linalg.norm(x, axis=-1) == 0):
            return fallback_nse(f"{name} has an all-zero vector on the samples: its cosine distance is "
                                "undefined, the normalized squared error is used")
        return OutputMetric(name, kind, "cosine_distance", UNITS["cosine_distance"])
    return fallback_nse("")


# ---------------------------------------------------------------- one output, one sample
def _kl_rows(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (logp - logq), 0.0)
    return np.maximum(0.0, np.sum(terms, axis=-1))


def _one(m: OutputMetric, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Values of one output on one sample (sums over rows, to be pooled): see :func:`compare_outputs`."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return {"broken": 1.0, "why": "shape"}  # type: ignore[dict-item]
    if a.size == 0:
        return {"empty": 1.0}
    if m.kind == "integer" or a.dtype.kind not in "fc":
        return {"changed": float(np.count_nonzero(a != b)), "elements": float(a.size)}
    af = a.astype(np.float64)
    bf = b.astype(np.float64)
    fa = np.isfinite(af)
    if not np.array_equal(fa, np.isfinite(bf)):
        return {"broken": 1.0, "why": "nonfinite"}  # type: ignore[dict-item]
    out: dict[str, float] = {}
    if not fa.all():  # compare where both are finite (the same places), as a regression output
        af, bf = af[fa], bf[fa]
        if af.size == 0:
            return {"empty": 1.0}
        partial = True
    else:
        partial = False
    num = float(np.sum(np.square(af - bf)))
    den = float(np.sum(np.square(af)))
    out["sq_err"] = num
    out["sq_norm"] = den
    out["elements"] = float(af.size)
    if m.kind == "map":
        out["abs_err"] = float(np.sum(np.abs(af - bf)))
        out["flipped"] = float(np.count_nonzero((af > DECISION) != (bf > DECISION)))
        return out
    if partial or m.kind == "regression":
        return out
    if m.kind in ("probabilities", "class_scores"):
        sa, sb = _scores(af.reshape(a.shape), m.kind), _scores(bf.reshape(a.shape), m.kind)
        out["rows"] = float(sa.shape[0])
        out["top1_changed"] = float(np.count_nonzero(np.argmax(sa, axis=-1) != np.argmax(sb, axis=-1)))
        if m.metric == "kl":
            t = m.temperature or 1.0
            out["kl"] = float(np.sum(_kl_rows(_log_softmax(sa / t), _log_softmax(sb / t))))
        elif m.kind == "probabilities":  # the guard: nse of the log-probabilities
            out["sq_err"] = float(np.sum(np.square(sa - sb)))
            out["sq_norm"] = float(np.sum(np.square(sa)))
        return out
    if m.kind == "embedding":
        ra, rb = _rows(af.reshape(a.shape)), _rows(bf.reshape(a.shape))
        na, nb = np.linalg.norm(ra, axis=-1), np.linalg.norm(rb, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.sum(ra * rb, axis=-1) / (na * nb)
        cos = np.where((na > 0) & (nb > 0), cos, 0.0)  # a vector that became zero: cosine distance 1
        out["rows"] = float(ra.shape[0])
        out["cosine_distance"] = float(np.sum(np.clip(1.0 - cos, 0.0, 2.0)))
    return out


# ---------------------------------------------------------------- the combined value
@dataclass
class OutputChange:
    """The result of :func:`compare_outputs`: ``value`` (the combined output change) and ``outputs``."""

    value: float
    outputs: list[dict[str, Any]]
    samples: int

    @property
    def metric(self) -> str:
        ms = {o["metric"] for o in self.outputs}
        return ms.pop() if len(ms) == 1 else "sum"

    @property
    def unit(self) -> str:
        us = {o["unit"] for o in self.outputs}
        return us.pop() if len(us) == 1 else "sum of the outputs' units (see output_change_outputs)"

    def reading(self) -> str:
        """One line in plain words, e.g. "top-1 changed on 2 of 32 samples; logits moved 2.2% RMS"."""
        if not self.outputs:
            return "no outputs compared"
        if len(self.outputs) == 1:
            return self.outputs[0]["reading"]
        return "; ".join(f"{o['name']}: {o['reading']}" for o in self.outputs)

    def values_by_output(self) -> dict[str, dict[str, Any]]:
        """{output name: {"value": primary value, secondary values...}} (compact, for per-layer rows)."""
        keys = ("value", "top1_changed", "flipped", "rel_rms_pct")
        return {o["name"]: {k: o[k] for k in keys if k in o} for o in self.outputs}

    def to_json(self, prefix: str = "output_change") -> dict[str, Any]:
        return {prefix: self.value, f"{prefix}_metric": self.metric, f"{prefix}_unit": self.unit,
                f"{prefix}_reading": self.reading(), f"{prefix}_samples": self.samples,
                f"{prefix}_outputs": self.outputs}


def _g(x: float) -> str:
    return f"{x:.2g}" if x < 100 else f"{x:.0f}"


def _finish(m: OutputMetric, acc: dict[str, float], per_sample: dict[str, list[float]], n: int) -> dict[str, Any]:
    d = m.to_dict()
    d["notes"] = list(m.notes)
    if acc.get("broken"):
        d.update(value=MAX_CHANGE, reading="changed shape, or NaN/inf where the reference is finite")
        d["notes"].append(f"on {int(acc['broken'])} of {n} samples the output changed shape or became "
                          f"NaN/inf: counted as {MAX_CHANGE:g}")
        return d
    if not acc.get("seen"):
        d.update(value=0.0, reading="unchanged (the change does not reach this output)")
        return d
    if m.metric == "changed_fraction":
        frac = acc.get("changed", 0.0) / acc["elements"] if acc.get("elements") else 0.0
        d.update(value=frac, changed_fraction=frac)
        d["reading"] = "no element changed" if frac == 0 else f"{_g(100 * frac)}% of the elements changed"
        return d
    if m.metric == "mean_abs":
        elements = acc.get("elements", 0.0)
        mean_abs = acc.get("abs_err", 0.0) / elements if elements else 0.0
        k = int(acc.get("flipped", 0))
        flipped = k / elements if elements else 0.0
        rms_list = per_sample.get("rms", [])
        d.update(value=mean_abs, mean_abs=mean_abs, flipped=flipped, flipped_count=k, elements=int(elements),
                 rms=float(np.mean(rms_list)) if rms_list else 0.0)
        decisions = ("no decision at 0.5 flipped" if k == 0 else
                     f"{_g(100 * flipped)}% of the decisions at 0.5 flipped ({k} of {int(elements)})")
        d["reading"] = f"map moved {mean_abs:.2g} on average (mean absolute change); {decisions}"
        return d
    nse_list = per_sample.get("nse", [])
    nse = float(np.mean(nse_list)) if nse_list else 0.0
    rms_list = per_sample.get("rms", [])
    values: dict[str, float] = {"nse": nse, "rel_rms_pct": 100.0 * math.sqrt(nse)}
    rows = int(acc.get("rows", 0))
    item = "samples" if rows == n else "items"
    parts = []
    if m.kind in ("probabilities", "class_scores") and rows:
        k = int(acc.get("top1_changed", 0))
        values["top1_changed"] = k / rows
        values["top1_agreement"] = 1.0 - k / rows
        d["rows"] = rows
        parts.append(f"top-1 changed on {k} of {rows} {item}")
    if m.metric == "kl":
        values["kl"] = acc.get("kl", 0.0) / rows if rows else 0.0
    if m.metric == "cosine_distance":
        values["cosine_distance"] = acc.get("cosine_distance", 0.0) / rows if rows else 0.0
        d["rows"] = rows
    if m.metric == "rms":
        values = {"rms": float(np.mean(rms_list)) if rms_list else 0.0}
    what = {"probabilities": "probabilities", "class_scores": "logits", "embedding": "embeddings"}.get(m.kind, "values")
    if m.kind == "probabilities" and m.metric == "nse":
        what = "log-probabilities"
    if m.metric == "cosine_distance":
        parts.append(f"cosine distance {values['cosine_distance']:.2g} on average over {rows} {item}")
        what = "vectors"
    if m.metric == "rms":
        parts.append(f"{what} moved {values['rms']:.3g} RMS (the reference is about zero)")
    else:
        parts.append(f"{what} moved {_g(values['rel_rms_pct'])}% RMS")
    if m.metric == "kl":
        parts.append(f"KL {values['kl']:.2g} nats at T={m.temperature:g}")
    d.update(value=min(MAX_CHANGE, values[m.metric]), **{k: min(MAX_CHANGE, v) for k, v in values.items()})
    d["reading"] = "; ".join(parts)
    return d


def compare_outputs(reference: Sequence[Any], changed: Sequence[Any], plan: list[OutputMetric] | None = None,
                    names: Sequence[str] | None = None, kinds: Mapping[str, str] | None = None,
                    bounded: Iterable[str] = ()) -> OutputChange:
    """THE output change of ``changed`` against ``reference`` (see the module doc).

    ``reference``/``changed``: one entry per sample, each a list of output arrays
    (in ``names`` order) or a {name: array} dict. ``plan``: from
    :func:`plan_outputs` on a reference (computed from ``reference`` when None;
    pass the same plan to every comparison that is ranked together).
    """
    reference, changed = list(reference), list(changed)
    if plan is None:
        plan = plan_outputs(reference, names, kinds, bounded)
    if names is None:
        names = [m.name for m in plan]
    n = min(len(reference), len(changed))
    accs: list[dict[str, float]] = [{} for _ in plan]
    per: list[dict[str, list[float]]] = [{} for _ in plan]
    for s in range(n):
        ra = _as_list(reference[s], names) if isinstance(reference[s], Mapping) else list(reference[s])
        cb = _as_list(changed[s], names) if isinstance(changed[s], Mapping) else list(changed[s])
        for i, m in enumerate(plan):
            if i >= len(ra) or i >= len(cb) or ra[i] is None or cb[i] is None:
                continue  # an output the change cannot reach (e.g. not downstream of a layer) did not move
            r = _one(m, ra[i], cb[i])
            acc = accs[i]
            acc["seen"] = acc.get("seen", 0.0) + 1.0
            if r.get("broken"):
                acc["broken"] = acc.get("broken", 0.0) + 1.0
                continue
            if r.get("empty"):
                per[i].setdefault("nse", []).append(0.0)
                per[i].setdefault("rms", []).append(0.0)
                continue
            for k in ("changed", "elements", "rows", "top1_changed", "kl", "cosine_distance", "abs_err", "flipped"):
                if k in r:
                    acc[k] = acc.get(k, 0.0) + r[k]
            if "sq_err" in r:
                per[i].setdefault("err", []).append(r["sq_err"])
                per[i].setdefault("den", []).append(r["sq_norm"])
                per[i].setdefault("rms", []).append(math.sqrt(r["sq_err"] / max(1.0, r["elements"])))
    for p in per:
        # nse per sample; a sample whose reference energy is negligible against the samples' mean (all zeros,
        # or below NEGLIGIBLE_SHARE of it) is scaled by that mean instead of its own ~0 norm
        dens = [d for d in p.get("den", []) if d > 0]
        mean_den = float(np.mean(dens)) if dens else 0.0
        p["nse"] = p.get("nse", []) + [
            e / d if d > NEGLIGIBLE_SHARE * mean_den and d > 0 else (e / mean_den if mean_den > 0 else 0.0)
            for e, d in zip(p.get("err", []), p.get("den", []))]
    outputs = [_finish(m, accs[i], per[i], n) for i, m in enumerate(plan)]
    total = 0.0
    for o in outputs:
        v = o["value"]
        total += v if math.isfinite(v) else MAX_CHANGE
    return OutputChange(min(MAX_CHANGE, total), outputs, n)


def plan_to_json(plan: list[OutputMetric]) -> list[dict[str, Any]]:
    return [m.to_dict() for m in plan]


def plan_notes(plan: list[OutputMetric]) -> list[str]:
    return [n for m in plan for n in m.notes if n]


# ---------------------------------------------------------------- showing it
SHORT = {"kl": "nats (KL)", "cosine_distance": "(cosine distance)", "nse": "(normalized squared error)",
         "rms": "(RMS, output units)", "changed_fraction": "(fraction of elements changed)",
         "mean_abs": "(mean absolute change)"}


SHORTER = {"kl": "nats", "cosine_distance": "cos dist", "nse": "NSE", "rms": "RMS", "changed_fraction": "changed",
            "mean_abs": "MAE"}


def format_change(doc: Mapping[str, Any] | None, prefix: str = "output_change", *,
                  short: bool = False) -> tuple[str, str]:
    """(value with its unit, one-line meaning) of the output change stored in a JSON document
    (``doc[prefix]`` and the ``{prefix}_metric`` / ``_reading`` / ``_outputs`` keys beside it);
    ``short``: the unit in a word. Documents measured before these keys existed show the bare number
    and an empty meaning."""
    doc = doc or {}
    v = doc.get(prefix)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "n/a", ""
    metric = doc.get(f"{prefix}_metric")
    if v >= MAX_CHANGE:
        text = "broken (NaN/inf or a changed shape)"
    elif metric in SHORT:
        text = f"{v:.3g} {(SHORTER if short else SHORT)[metric]}"
    elif metric == "sum" and short:
        text = f"{v:.3g} (sum)"
    elif metric == "sum":
        n = len(doc.get(f"{prefix}_outputs") or [])
        text = f"{v:.3g} (sum over {n} outputs)"
    else:
        text = f"{v:.3g}"
    return text, str(doc.get(f"{prefix}_reading") or "")


_METRIC_WORDS = {"kl": "KL divergence in nats", "cosine_distance": "cosine distance",
                 "nse": "normalized squared error", "rms": "RMS change (output units)",
                 "changed_fraction": "fraction of elements changed",
                 "mean_abs": "mean absolute change (a [0, 1] map)"}


def describe_metrics(output_metrics: Sequence[Mapping[str, Any]] | None) -> str:
    """One line naming each output's metric (a profile's ``output_metrics``), e.g. "logits: KL divergence
    in nats at T=212"; "" for documents measured before the key existed."""
    parts = []
    for m in output_metrics or []:
        words = _METRIC_WORDS.get(str(m.get("metric")), str(m.get("metric")))
        if m.get("metric") == "kl" and m.get("temperature") is not None:
            words += f" at T={m['temperature']:g}"
        parts.append(f"{m.get('name')}: {words}")
    return "; ".join(parts)


# ---------------------------------------------------------------- outputs that no longer follow the original
# Thresholds of :func:`departure`: past these a changed model's outputs are "broken", not "slightly worse".
DEPART_DECISIONS = 0.25  # more than a quarter of the top-1 classes / decisions at 0.5 changed
DEPART_REL_RMS_PCT = 100.0  # the change is larger than the reference itself (relative RMS > 100%)
DEPART_COSINE = 0.5  # vectors more than 60 degrees away on average (cos < 0.5)
DEPART_KL = 1.0  # nats: a confident (one-hot) reference class kept less than e^-1 = 37% of the probability
DEPART_MEAN_ABS = 0.25  # a [0, 1] map moved by more than a quarter of its range on average
DEPART_CHANGED = 0.25  # more than a quarter of an integer output's elements changed
_DEPARTED = "outputs no longer follow the original"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.1 else f"{100 * x:.2g}%"


def _departed_output(o: Mapping[str, Any]) -> str | None:
    """Why one output (an entry of ``{prefix}_outputs``) no longer follows the original, or None."""
    def num(k: str) -> float | None:
        v = o.get(k)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    metric = o.get("metric")
    value = num("value")
    if value is not None and value >= MAX_CHANGE:
        return "NaN/inf or a changed shape"
    checks: list[tuple[str, float, str]] = []
    if (v := num("flipped")) is not None and v > DEPART_DECISIONS:
        checks.append(("flipped", v, f"{_pct(v)} of decisions flipped"))
    if (v := num("top1_changed")) is not None and v > DEPART_DECISIONS:
        checks.append(("top1_changed", v, f"top-1 changed on {_pct(v)} of samples"))
    if metric == "cosine_distance" and (v := num("cosine_distance")) is not None and v > DEPART_COSINE:
        checks.append(("cosine_distance", v, f"cosine distance {v:.2g}"))
    if metric == "kl" and (v := num("kl")) is not None and v > DEPART_KL:
        checks.append(("kl", v, f"KL {v:.2g} nats"))
    if metric == "nse":
        v = num("rel_rms_pct")
        if v is None and (nse := num("nse")) is not None:
            v = 100.0 * math.sqrt(max(0.0, nse))
        if v is not None and v > DEPART_REL_RMS_PCT:
            checks.append(("rel_rms_pct", v, f"values moved {_g(v)}% RMS"))
    if metric == "mean_abs" and (v := num("mean_abs")) is not None and v > DEPART_MEAN_ABS:
        checks.append(("mean_abs", v, f"values moved {v:.2g} on average (on a [0, 1] map)"))
    if metric == "changed_fraction" and (v := num("changed_fraction")) is not None and v > DEPART_CHANGED:
        checks.append(("changed_fraction", v, f"{_pct(v)} of the elements changed"))
    return checks[0][2] if checks else None


def departure(doc: Mapping[str, Any] | None, prefix: str = "output_change") -> str | None:
    """A sentence when the changed model's outputs no longer follow the original, else None.

    ``doc``: an output-change JSON document (:meth:`OutputChange.to_json` with
    ``prefix``, as stored in validation and deployment rows). An output departs
    when its decisions changed (top-1 class, or decision at 0.5 of a [0, 1]
    map, on more than ``DEPART_DECISIONS`` of the rows), or its primary metric
    is past its threshold (``DEPART_KL`` nats, ``DEPART_COSINE``,
    ``DEPART_REL_RMS_PCT`` for the normalized squared error,
    ``DEPART_MEAN_ABS``, ``DEPART_CHANGED``), or it became NaN/inf or changed
    shape. E.g. "outputs no longer follow the original: 74% of decisions
    flipped"; with several outputs each departed one is named. Documents with
    only the combined value (older ones) are judged by it and its metric.
    """
    doc = doc or {}
    outputs = doc.get(f"{prefix}_outputs")
    reasons: list[str] = []
    if isinstance(outputs, list) and outputs:
        for o in outputs:
            if not isinstance(o, Mapping):
                continue
            why = _departed_output(o)
            if why:
                reasons.append(f"{o.get('name')}: {why}" if len(outputs) > 1 else why)
    else:
        v = doc.get(prefix)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return None
        metric = doc.get(f"{prefix}_metric")
        why = _departed_output({"metric": metric, "value": v, str(metric): v})
        if why:
            reasons.append(why)
    return f"{_DEPARTED}: {'; '.join(reasons)}" if reasons else None
