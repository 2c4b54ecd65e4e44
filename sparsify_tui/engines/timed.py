"""A model made ready for one engine: the one interface the jobs time and run engines through.

:meth:`sparsify_tui.engines.registry.EngineSpec.timed_model` yields a
:class:`TimedModel`: one model file (prepared the way the engine needs it), its
inputs, batch, cores and precision. The jobs (perf profile, deployment search,
A/B benchmark, channel profile) only call its three methods:

* :meth:`TimedModel.benchmark`: whole-model timing, ``repeats`` blocks of
  ``iterations`` runs after ``warmup`` (ms per batch);
* :meth:`TimedModel.profile`: per-layer timing with the engine's profiler, for
  an engine registered ``instrumented``; at a sparsity ``level`` the engine
  imposes when it is registered ``sparse_speedup``;
* :meth:`TimedModel.runner`: a compiled model, ``run(feed=None) -> outputs``.

Both timings also return ``windows``: the (start, end) ``time.perf_counter``
interval of each repeat's timed runs, so the caller measures what other
processes took of the cores in exactly those intervals
(:mod:`sparsify_tui.engines.interference`).

A backend module defines ``class Timed(TimedModel)`` and overrides what its
engine does its own way: :meth:`runner` always (the default benchmark loops
over it), :meth:`_profile` when instrumented, :meth:`_benchmark` and
:meth:`prepare` where the engine needs them. HACKING.md, "Add an engine".
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from typing import Any, Callable

from sparsify_tui.errors import UsageError

Runner = Callable[..., Any]  # run(feed: {input name: array} | None = None) -> list of output arrays


class TimedModel:
    """One model, prepared for one engine, with fixed inputs, batch, cores and precision.

    ``path``: the file the engine reads (what :meth:`prepare` made of the user's file); ``note``: how it
    was adapted, or None; ``precision``: what the engine compiles at (None for an engine that runs what the
    file holds); ``shapes_fixed``: :meth:`prepare` was given the inputs' shapes (a copy it made declares them).
    """

    def __init__(self, spec: Any, path: str, inputs: dict[str, Any], *, names: list[str] | None = None,
                 batch_size: int = 1, cores: int | None = None, precision: str | None = None,
                 note: str | None = None, shapes_fixed: bool = False) -> None:
        self.spec = spec
        self.path = str(path)
        self.inputs = inputs
        self.names = list(names or inputs)
        self.batch_size = int(batch_size)
        self.cores = cores
        self.precision = precision
        self.note = note or None
        self.shapes_fixed = shapes_fixed

    # ------------------------------------------------------------ what a backend overrides
    @classmethod
    def prepare(cls, path: str, input_shapes: dict[str, list[int]] | None = None):
        """Context manager: ``(path the engine reads, note or None)``; default: the file as it is.
        ``input_shapes``: the shapes the inputs will have (an engine may write them into its copy)."""
        return contextlib.nullcontext((str(path), None))

    def runner(self, tmp: str | None = None) -> Runner:
        """The model compiled once: ``run()`` runs one inference of the inputs, ``run(feed)`` of other arrays of
        the same shapes; both return the outputs. ``tmp``: a directory that outlives the runner."""
        raise NotImplementedError(f"{type(self).__module__}.Timed must define runner()")

    def _benchmark(self, *, iterations: int, warmup: int, repeats: int,
                   heartbeat: Callable[[str], Any]) -> dict[str, Any]:
        """``repeat_ms``, ``iteration_ms``, ``compile_s`` (and what the engine reports about itself); calls
        ``heartbeat`` once after each repeat. Default: :meth:`runner` timed call by call."""
        with tempfile.TemporaryDirectory(prefix="sparsify-run-") as tmp:
            t0 = time.perf_counter()
            run = self.runner(tmp)
            compile_s = time.perf_counter() - t0
            res = timed_runs(run, iterations=iterations, warmup=warmup, repeats=repeats, heartbeat=heartbeat)
        return {**res, "compile_s": compile_s}

    def _profile(self, info: Any, *, iterations: int, warmup: int, repeats: int,
                 heartbeat: Callable[[str], Any], level: float | None) -> dict[str, Any]:
        """The engine's per-layer profile: ``repeat_ms`` (or ``repeats``, see :meth:`profile`),
        ``iteration_ms``, ``layer_ms``, ``owner``, ``groups``, ``internal``, ``engine_s``."""
        raise UsageError(f"{self.spec.name} has no per-layer profile")

    def fallback_reason(self, message: str) -> str:
        """The ``engine_reason`` when ``auto`` falls back from this engine after it failed with ``message``."""
        return message

    # ------------------------------------------------------------ what the jobs call
    def benchmark(self, *, iterations: int = 20, warmup: int = 5, repeats: int = 3,
                  heartbeat: Callable[[str], Any] | None = None) -> dict[str, Any]:
        """Compile once and time ``repeats`` blocks of ``iterations`` runs: :meth:`_benchmark` and ``windows``."""
        ends: list[float] = []
        res = self._benchmark(iterations=iterations, warmup=warmup, repeats=repeats, heartbeat=_beat(ends, heartbeat))
        res["windows"] = _windows(res, ends, time.perf_counter())
        return res

    def profile(self, info: Any, *, iterations: int = 10, warmup: int = 5, repeats: int = 1,
                heartbeat: Callable[[str], Any] | None = None, level: float | None = None) -> dict[str, Any]:
        """Per-layer times of the model: :meth:`_profile`'s keys, and ``repeats`` (one
        ``{model_ms, layer_ms, internal}`` per repeat; layer times shared by the repeats unless the engine
        gives each its own) and ``windows``. Optional keys ``kernels`` and ``layer_precision`` (per layer: what
        computed it, at which precision) go into the profile as they are."""
        if not self.spec.instrumented:
            raise UsageError(f"{self.spec.name} has no per-layer profile")
        ends: list[float] = []
        res = self._profile(info, iterations=max(1, int(iterations)), warmup=max(0, int(warmup)),
                            repeats=max(1, int(repeats)), heartbeat=_beat(ends, heartbeat),
                            level=level if self.spec.sparse_speedup else None)
        if not res.get("repeats"):
            res["repeats"] = [{"model_ms": ms, "layer_ms": res["layer_ms"], "internal": res["internal"]}
                              for ms in res["repeat_ms"]]
        res["windows"] = _windows(res, ends, time.perf_counter())
        return res


def timed_runs(run: Callable[[], Any], *, iterations: int, warmup: int, repeats: int,
               heartbeat: Callable[[str], Any] | None = None) -> dict[str, list[float]]:
    """``warmup`` calls of ``run``, then ``repeats`` blocks of ``iterations`` timed calls (``heartbeat`` after
    each block): ``iteration_ms`` (every call's wall time) and ``repeat_ms`` (each block's median)."""
    for _ in range(max(0, int(warmup))):
        run()
    repeat_ms: list[float] = []
    all_ms: list[float] = []
    for r in range(max(1, int(repeats))):
        times = []
        for _ in range(max(1, int(iterations))):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1000.0)
        all_ms += times
        repeat_ms.append(statistics.median(times))
        if heartbeat:
            heartbeat(f"repeat {r + 1}")
    return {"repeat_ms": repeat_ms, "iteration_ms": all_ms}


def _beat(ends: list[float], heartbeat: Callable[[str], Any] | None) -> Callable[[str], None]:
    def beat(label: str) -> None:
        ends.append(time.perf_counter())
        if heartbeat:
            heartbeat(label)

    return beat


def _windows(res: dict, ends: list[float], t_end: float) -> list[tuple[float, float]]:
    """Each repeat's timed runs as a (start, end) interval: a repeat ends at its heartbeat and lasts the sum of
    its runs; an engine that does not beat per repeat gets one interval, the timed runs before ``t_end``."""
    its = [float(x) for x in res.get("iteration_ms") or []]
    n = len(res.get("repeats") or res.get("repeat_ms") or []) or 1
    if len(ends) >= n:
        per = len(its) // n if n else 0
        return [(end - sum(its[r * per:(r + 1) * per]) / 1000.0, end) for r, end in enumerate(ends[:n])]
    timed_s = sum(its) / 1000.0
    if res.get("engine_s") is not None:  # (never longer than the whole call)
        timed_s = min(timed_s, float(res["engine_s"]))
    return [(t_end - timed_s, t_end)] * n
