"""Job kind ``perf``: measure a performance profile in the worker.

Every level is measured and sent to the parent as a ``partial`` event as soon
as it is finished (so a crash later keeps it); the result is the document
:func:`sparsify_tui.profiles.perf.assemble` builds from the parts.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from sparsify_tui.engines.machine import loadavg, machine_summary
from sparsify_tui.errors import EngineError
from sparsify_tui.jobs import JobContext, register
from sparsify_tui.profiles.perf import add_quality, assemble
from sparsify_tui.settings import PERF_LEVELS, level_key, usable_cores


def choose_engine(requested: str) -> tuple[str, str]:
    """(engine, reason) for ``--engine requested``: the registry's one ``auto`` resolution."""
    from sparsify_tui.engines.registry import resolve_auto

    return resolve_auto(requested)


def busy_note(doc: dict, load_start: float | None) -> None:
    """Record the load average around the measurement; warn when other work competed for the cores."""
    load_end = loadavg()
    if load_start is None or load_end is None:
        return
    doc["load_average"] = [load_start, load_end]
    usable = usable_cores()
    if max(load_start, load_end) > usable + 0.5:
        doc.setdefault("notes", []).append(
            f"the machine was busy during the measurement (load average {max(load_start, load_end):.1f} "
            f"on {usable} usable cores): other processes competed for the cores, so times are less reliable")


def _part(res: dict, kind: str, lv: float, keep_groups: bool) -> dict:
    """The part of an engine result that goes into the document (and to the parent)."""
    out = {"type": kind, "key": level_key(lv), "level": lv, "model_ms": res["model_ms"],
           "layer_ms": res["layer_ms"], "internal": res["internal"], "engine_s": res["engine_s"],
           "interference": res.get("interference"), "attempts": res.get("attempts", 1)}
    if keep_groups:
        out["owner"] = res["owner"]
        out["groups"] = res["groups"]
    return out


@dataclass
class PerfRun:
    """One perf profile being measured: the settings, the prepared model and inputs, and the parts so far."""

    ctx: JobContext
    job: dict
    engine: str
    reason: str
    path: str
    info: Any
    inputs: dict
    names: list[str]
    batch: int
    cores: int | None
    levels: list[float]
    iterations: int
    warmup: int
    repeats: int
    layers_meta: list[dict]
    notes: list[str]
    total: int
    timed: Any = None  # the engine's TimedModel of the model (sparsify_tui.engines.timed)
    stack: Any = None  # the ExitStack holding it (a fallback engine's model is entered there too)
    parts: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    setup: dict | None = None
    done: int = 1
    level_notes: list[str] = field(default_factory=list)
    stay_busy: str = ""  # the block whose re-measure was busy too: later busy blocks are not re-measured
    not_remeasured: list[str] = field(default_factory=list)  # busy blocks left at one attempt because of it
    stayed_busy: list[str] = field(default_factory=list)  # every block whose re-measure was busy too

    @property
    def spec(self) -> Any:
        from sparsify_tui.engines.registry import get_engine

        return get_engine(self.engine)

    def open_model(self) -> None:
        """The model prepared for ``engine`` (entered on ``stack``); the engine's note goes into the reason."""
        self.timed = self.stack.enter_context(self.spec.timed_model(
            self.path, self.inputs, names=self.names, batch_size=self.batch, cores=self.cores,
            precision=self.job.get("precision"), fix_shapes=self.spec.sparse_speedup))
        if self.timed.note:
            self.reason = f"{self.reason} ({self.timed.note})"

    @property
    def threshold(self) -> float:
        from sparsify_tui.engines import interference as itf

        return float(self.job.get("interference_threshold", itf.THRESHOLD))

    @property
    def retries(self) -> int:
        from sparsify_tui.engines import interference as itf

        return int(self.job.get("remeasure", itf.MAX_REMEASURE))

    def _on_retry(self, n: int, share: float) -> None:
        self.ctx.heartbeat(f"other processes used {share:.0%} of the cores: measuring again ({n})")

    def _step(self, label: str) -> None:
        self.done += 1
        self.ctx.progress(self.done, self.total, label=label)

    def _keep(self, part: dict) -> None:
        self.parts.append(part)
        self.ctx.partial(part)

    def _setup(self, engine: str, version: Any, approximated: bool, notes: list[str], **extra: Any) -> None:
        self.setup = {"type": "setup", "engine": engine, "engine_version": version,
                      "engine_reason": self.reason, "approximated": approximated, "layers": self.layers_meta,
                      **extra,
                      "input_shapes": {n: list(self.inputs[n].shape) for n in self.names},
                      "machine": machine_summary(), "notes": notes}
        self.ctx.partial(self.setup)

    def _analyze(self, level: float | None, tries: int | None = None) -> dict:
        """One profile call at sparsity ``level`` (an engine with ``sparse_speedup``) and the interference of
        its timed runs (the end of the call, after the compile); re-measured (bounded) while other processes
        take more than the threshold."""
        from sparsify_tui.engines import interference as itf

        def once():
            with itf.Sampler(engine_cores=self.cores) as sampler:
                res = self.timed.profile(self.info, iterations=self.iterations, warmup=self.warmup, repeats=1,
                                         level=level)
                share = _shares(sampler, res["windows"])[0]
            res.update(res["repeats"][0], interference=share)
            return res, share

        res, share, attempts = itf.remeasure(once, threshold=self.threshold, retries=self._retries_now(tries),
                                             on_retry=self._on_retry)
        if tries is None:
            self._after_remeasure("the dense model" if not level else f"level {level_key(level)}", share, attempts)
        res["attempts"] = attempts
        return res

    def _retries_now(self, tries: int | None = None) -> int:
        """Re-measures allowed for the next block: none while the machine stayed busy through a re-measure
        (a compile and a run more, most likely as busy again); the block's interference is still recorded
        and warned about."""
        if tries is not None:
            return tries
        return 0 if self.stay_busy else self.retries

    def _after_remeasure(self, what: str, share: float | None, attempts: int) -> None:
        from sparsify_tui.engines import interference as itf

        if not itf.above(share, self.threshold):
            self.stay_busy = ""  # quiet again: the next busy block gets its re-measures back
        elif attempts == 1 and self.stay_busy and self.retries > 0:
            self.not_remeasured.append(what)
        elif attempts > 1 and not self.stay_busy:
            self.stay_busy = what
            self.stayed_busy.append(what)
            self.ctx.log(f"{what} stayed busy when measured again: busy blocks are not re-measured until the "
                         "machine is quiet again")

    def remeasure_note(self) -> str:
        """The warning for the busy blocks left unmeasured again (empty when there are none)."""
        if not self.not_remeasured:
            return ""
        one = len(self.not_remeasured) == 1
        return (f"{', '.join(self.stayed_busy)} stayed busy when measured again, so {', '.join(self.not_remeasured)} "
                f"(busy too) {'was' if one else 'were'} not measured again: {'its time is' if one else 'their times are'}"
                " probably too high; measure again on a quiet machine (--wait-idle SECONDS)")

    def sparse_dense(self) -> bool:
        """The dense model ``repeats`` times (one profile call each, as every level); False when the engine
        failed on it and ``auto`` falls back to the reference engine."""
        from sparsify_tui.engines.registry import REFERENCE

        for r in range(self.repeats):
            self.ctx.heartbeat(f"dense model, repeat {r + 1}/{self.repeats}")
            try:
                res = self._analyze(None)
            except EngineError as exc:
                if r == 0 and self.job.get("engine", "auto") == "auto" and self.engine != REFERENCE:
                    self.reason = self.timed.fallback_reason(exc.message)
                    self.engine = REFERENCE
                    self.open_model()
                    return False
                raise
            min_ms = float(self.job.get("min_level_ms") or 0.0)
            if r == 0 and min_ms > 0 and res["model_ms"] > 0:
                self.iterations = max(self.iterations, min(5000, math.ceil(min_ms / res["model_ms"])))
            if self.setup is None:
                self._setup(self.engine, self.spec.version(), False, self.notes, iterations_used=self.iterations)
            self._keep(_part(res, "baseline", 0.0, keep_groups=True))
            self._step(f"dense, repeat {r + 1}/{self.repeats}: {res['model_ms']:.2f} ms")
        return True

    def sparse_levels(self) -> None:
        """Each sparsity level once; a level that fails is recorded and the others go on."""
        for lv in self.levels:
            if lv == 0.0:
                continue
            self.ctx.heartbeat(f"level {level_key(lv)}")
            try:
                res = self._analyze(lv)
            except EngineError as exc:
                self.failures.append(f"level {level_key(lv)}: {exc.message}")
                self.ctx.log(self.failures[-1])
                self._step(f"level {level_key(lv)} failed")
                continue
            self._keep(_part(res, "level", lv, keep_groups=False))
            self._step(f"level {level_key(lv)}: {res['model_ms']:.2f} ms")
        self.level_notes = level_sanity(self.ctx, self.parts, self._sanity_again, threshold=self.threshold)

    def _sanity_again(self, lv: float) -> dict | None:
        """A level slower than the one before, measured once more -- unless its timed runs were quiet
        (other processes took no more than the threshold of the cores: a compile and a run more would
        time the same kernels on the same quiet cores), or it was busy and the machine stayed busy
        through a re-measure. Then None: the rise is flagged, not measured again."""
        from sparsify_tui.engines import interference as itf

        part = next((p for p in self.parts if p.get("type") == "level" and p.get("level") == lv), None)
        share = None if part is None else part.get("interference")
        if share is not None and not itf.above(share, self.threshold):
            return None
        if self.stay_busy and part is not None and itf.above(share, self.threshold):
            return None
        return self._analyze(lv, tries=0)

    def dense_profile(self) -> None:
        """The engine's profiler on the dense model, ``repeats`` repeats in one call (at the job's precision
        for an engine with a precision hint); the sparsity levels are approximated from FLOPs."""
        from sparsify_tui.engines import interference as itf

        spec = self.spec
        notes = self.notes + [spec.approximation_note()]
        if spec.precision_hint:
            self.ctx.heartbeat(f"compiling with {spec.name} ({self.timed.precision})")
        else:  # the setup goes out first, unless it records what the engine compiled the model at
            self._setup(spec.name, spec.version(), True, notes)

        def once():
            with itf.Sampler(engine_cores=self.cores) as sampler:
                res = self.timed.profile(self.info, iterations=self.iterations, warmup=self.warmup,
                                         repeats=self.repeats, heartbeat=self.ctx.heartbeat)
                res["shares"] = _shares(sampler, res["windows"])
            return res, max((x for x in res["shares"] if x is not None), default=None)

        res, _share, attempts = itf.remeasure(once, threshold=self.threshold, retries=self.retries,
                                              on_retry=self._on_retry)
        if spec.precision_hint:
            self.reason = f"{self.reason} ({self.timed.precision}, runs in {res['inference_precision']})"
            self._setup(spec.name, spec.version(), True, notes, precision=self.timed.precision,
                        inference_precision=res["inference_precision"])
        shares = res["shares"]
        extra = {k: res[k] for k in ("kernels", "layer_precision") if k in res}
        for r, rep in enumerate(res["repeats"]):  # each repeat's own layer times where the engine has them
            self._keep({"type": "baseline", "key": level_key(0.0), "level": 0.0, "model_ms": rep["model_ms"],
                        "layer_ms": rep["layer_ms"], "internal": rep["internal"],
                        "engine_s": res["engine_s"] if r == 0 else 0.0,
                        "owner": res["owner"], "groups": res["groups"], **extra,
                        "interference": shares[r] if r < len(shares) else None, "attempts": attempts})
        self.done = self.total
        self.ctx.progress(self.done, self.total, label=f"dense: {statistics.median(res['repeat_ms']):.2f} ms")

    def measure(self) -> dict:
        """Every level of an engine with ``sparse_speedup``, else the dense model (levels from FLOPs)."""
        if self.spec.sparse_speedup and self.sparse_dense():
            self.sparse_levels()
        if not self.spec.sparse_speedup:
            self.dense_profile()
        setup = dict(self.setup or {})
        if self.failures:
            setup["failures"] = self.failures
        if self.not_remeasured:
            self.level_notes = self.level_notes + [self.remeasure_note()]
        if self.level_notes:
            setup["level_notes"] = self.level_notes
        return setup

    def deployed_time(self) -> dict | None:
        """Time the dense model in the engine as a user deploys it (the engine's plain benchmark: DeepSparse
        ``compile_model``, a plain ONNX Runtime session, ...): same batch, cores and inputs; about 250 ms of
        timed runs per repeat."""
        from sparsify_tui.engines import interference as itf

        base = [float(p["model_ms"]) for p in self.parts if p.get("type") == "baseline"]
        if not self.job.get("deployed", True) or not base:
            return None
        iterations = max(5, min(2000, math.ceil(250.0 / max(statistics.median(base), 0.01))))
        self.ctx.heartbeat("timing the engine as deployed")

        def once():
            with itf.Sampler(engine_cores=self.cores) as sampler:
                res = self.timed.benchmark(iterations=iterations, warmup=3, repeats=3)
                shares = _shares(sampler, res["windows"])
            return res, max((x for x in shares if x is not None), default=None)

        try:
            res, share, _n = itf.remeasure(once, threshold=self.threshold, retries=self._retries_now(),
                                           on_retry=self._on_retry)
        except EngineError as exc:
            self.ctx.log(f"the engine as deployed could not time the model: {exc.message}")
            return {"error": exc.message}
        return {"deployed_ms": statistics.median(res["repeat_ms"]), "repeat_ms": res["repeat_ms"],
                "interference": share, "iterations": iterations}


def _shares(sampler: Any, windows: list[tuple[float, float]]) -> list:
    """Interference of each timed repeat (its (start, end) window; a window repeated is measured once)."""
    seen: dict[tuple[float, float], Any] = {}
    for w in windows:
        if w not in seen:
            seen[w] = sampler.share(*w).interference
    return [seen[w] for w in windows]


def level_sanity(ctx: Any, parts: list[dict], measure_again: Any, threshold: float | None = None) -> list[str]:
    """Model time must not rise from one sparsity level to the next by more than the dense repeats'
    spread (at least 2%): such a level is measured once more (the lower time kept; ``measure_again``
    may return None to skip it); what still rises is returned as warning sentences. With ``threshold``
    a rise not measured again on a block whose interference was at most that is worded as measured
    on a quiet machine."""
    base = [float(p["model_ms"]) for p in parts if p.get("type") == "baseline"]
    levels = sorted((p for p in parts if p.get("type") == "level"), key=lambda p: p["level"])
    if not base or not levels:
        return []
    med = statistics.median(base)
    tol = max(max(base) - min(base), 0.02 * med)
    notes = []
    prev_key, prev_ms = level_key(0.0), med
    for part in levels:
        again = None
        if part["model_ms"] > prev_ms + tol:
            ctx.heartbeat(f"level {part['key']} is slower than level {prev_key}: checking it")
            try:
                again = measure_again(part["level"])  # None: not measured again (quiet, or a machine that stays busy)
                if again is not None and again["model_ms"] < part["model_ms"]:
                    new = _part(again, "level", part["level"], keep_groups=False)
                    new["attempts"] = int(part.get("attempts", 1)) + 1
                    new["interference"] = max(float(part.get("interference") or 0.0),
                                              float(again.get("interference") or 0.0))
                    parts[parts.index(part)] = new
                    ctx.partial(new)
                    part = new
            except EngineError:
                pass
            if part["model_ms"] > prev_ms + tol:
                notes.append(_rise_note(part, prev_key, prev_ms, tol, again is not None, threshold))
        prev_key, prev_ms = part["key"], part["model_ms"]
    return notes


def _rise_note(part: dict, prev_key: str, prev_ms: float, tol: float, measured_again: bool,
               threshold: float | None) -> str:
    head = (f"level {part['key']} measured {part['model_ms']:.3f} ms, slower than level {prev_key} "
            f"({prev_ms:.3f} ms) by more than the measured spread ({tol:.3f} ms)")
    share = part.get("interference")
    if not measured_again and threshold is not None and share is not None and float(share) <= threshold:
        return (f"{head}, on a quiet machine (other processes used {float(share):.0%} of the cores): the sparse "
                "kernels are probably slower than dense here, or the engine's run-to-run spread is larger than "
                "measured (--repeats 3 measures it)")
    return (f"{head}, also when measured again: its time is doubtful (a busy machine, or sparse kernels slower "
            "than dense here)" if measured_again else
            f"{head}, not measured again (the machine stayed busy): its time is doubtful (a busy machine, or "
            "sparse kernels slower than dense here)")



def _layers_meta(info: Any) -> list[dict]:
    return [
        {"id": m.id, "name": m.name, "op_type": m.op_type, "depth": m.depth, "flops": m.flops,
         "prunable": m.prunable, "bias_flops": m.bias_flops, "constant": m.constant}
        for m in info.layers
    ]


@register("perf")
def perf_job(job: dict, ctx: JobContext) -> dict:
    """Measure every level of a perf profile, sending each finished one as a partial."""
    from sparsify_tui.engines.inputs import input_specs, make_inputs
    from sparsify_tui.engines.modelinfo import load_model_info

    t_start = time.perf_counter()
    load_start = loadavg()
    path = str(job["model_path"])
    batch = int(job.get("batch_size", 1))
    cores = job.get("cores")
    levels = [float(x) for x in job.get("levels") or PERF_LEVELS]
    if 0.0 not in levels:
        levels = [0.0] + levels
    repeats = max(1, int(job.get("repeats", 3)))
    shapes = job.get("input_shapes") or {}
    engine, reason = choose_engine(str(job.get("engine", "auto")))
    total = len(levels) - 1 + repeats + 1
    ctx.progress(0, total, label="analysing the model")
    info = load_model_info(path, shapes)
    src = info.graph if info.graph is not None and getattr(info.graph, "model", None) is not None else path
    names = [s.name for s in input_specs(src, shapes)]
    inputs = make_inputs(src, batch, shapes, data=job.get("data"), seed=int(job.get("seed", 0)),
                         values=job.get("input_values") or None)
    settings = {"model_path": path, "batch_size": batch, "cores": cores, "levels": levels,
                "iterations": int(job.get("iterations", 10)), "warmup": int(job.get("warmup", 5)),
                "repeats": repeats, "input_shapes": shapes, "precision": job.get("precision") or "fp32"}
    notes = []
    if info.source != "analysis":
        notes.append("FLOPs were not available: fused groups were split equally among their layers")
    idle = None
    if float(job.get("wait_idle_s") or 0) > 0:
        from sparsify_tui.engines import interference as itf

        ctx.progress(1, total, label="waiting for a quiet machine")
        idle = itf.wait_idle(float(job["wait_idle_s"]), on_wait=lambda w, sh: ctx.heartbeat(
            f"waiting for a quiet machine: other processes use {sh:.0%} of the cores ({w:.0f} s)"))
    ctx.progress(1, total, label="compiling")
    run = PerfRun(ctx, job, engine, reason, path, info, inputs, names, batch, cores, levels,
                  settings["iterations"], settings["warmup"], repeats, _layers_meta(info), notes, total)
    with contextlib.ExitStack() as stack:
        run.stack = stack
        run.open_model()
        setup = run.measure()
        deployed = run.deployed_time()
    failures = setup.get("failures") or []
    doc = assemble(setup, run.parts, settings, wall_s=time.perf_counter() - t_start,
                   error="; ".join(failures) if failures else None)
    busy_note(doc, load_start)
    add_quality(doc, run.parts, deployed, idle=idle, level_notes=setup.get("level_notes") or [])
    return doc
