"""Job kind ``deploy``: every engine x precision x sparsity configuration timed in ONE child process.

The parent (:mod:`sparsify_tui.actions.deploy`) prepares the files (the dense
model, each optimization one-shot pruned, and one INT8 QDQ file per sparsity
shared by the engines that run INT8) and the inputs; this job compiles every
configuration the machine can run, checks its outputs on the held-out batches
against ONNX Runtime fp32 dense (the reference, always the first row), then
times all of them in interleaved blocks: round after round, each configuration
runs one block of at least ``min_block_ms`` (its own iteration count), the
order rotating every round, so every row sees the same machine.

Events: a ``partial`` ``{"row": {...}}`` once a configuration is compiled and
its outputs compared (or ``{"skipped": {...}}`` when it cannot run), then a
``partial`` ``{"round": r, "block_ms": {row id: ms}}`` after each round. The
result holds the same data. The parent computes medians, speedups and the
Pareto front from the block times (so a cancelled search keeps its finished
rounds).

With job key ``outputs_dir`` (``--metric``), each row's held-out outputs are
written there (:func:`outputs_file`) before its ``row`` event, for the parent
to score with the user's metric.

Job keys: ``variants`` (list of ``{"optimization": name|None, "fp32": path,
"int8": path|None, "int8_error": str|None}``; the first is dense),
``engines``, ``precisions``, ``batch_size``, ``cores``, ``timing_inputs``
(.npz), ``heldout`` (list of .npz, one batch each), ``repeats``, ``warmup``,
``min_block_ms``, ``scratch`` (the parent's temporary directory), ``skip`` (row ids not to try: an earlier child crashed on them),
``only`` (optional: the row ids to run besides the reference; the others are left out silently, as the
budgeted optimizer's closed loop times one candidate per step).
"""

from __future__ import annotations

import math
import tempfile
import time
from typing import Any, Callable

import numpy as np

from sparsify_tui.engines.registry import REFERENCE, engine_names
from sparsify_tui.engines.bench import time_block as _time_block
from sparsify_tui.jobs import register

ENGINES = engine_names()
PRECISIONS = ("fp32", "bf16", "int8")
MIN_BLOCK_MS = 250.0
MAX_ITERATIONS = 5000
MIN_ITERATIONS = 3

Runner = Callable[..., list]


def row_id(engine: str, precision: str, optimization: str | None) -> str:
    return f"{engine}/{precision}/{optimization or 'dense'}"


def outputs_file(outputs_dir: str, rid: str) -> str:
    """Where a row's held-out outputs are written with job key ``outputs_dir`` (``--metric``)."""
    import hashlib

    return f"{outputs_dir}/{hashlib.sha1(rid.encode()).hexdigest()[:16]}.npz"


def _first_line(exc: BaseException) -> str:
    """The first telling line (OpenVINO's messages start with "Exception from src/...cpp:N:" lines)."""
    import re

    text = str(getattr(exc, "message", None) or exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not re.match(r"^(Exception from |Check '.*' failed at )", ln)]
    return ((useful or lines or [type(exc).__name__])[0])[:300]


def engine_unavailable(engine: str) -> str | None:
    """Why ``engine`` cannot run here (not installed, or its import fails), or None."""
    import importlib

    from sparsify_tui.engines.registry import get_engine

    spec = get_engine(engine)
    if not spec.available():
        return spec.install_hint
    try:
        importlib.import_module(spec.import_name)
    except Exception as exc:  # noqa: BLE001
        return f"{spec.name} cannot be imported: {_first_line(exc)}"
    return None


def precision_unsupported(engine: str, precision: str) -> str | None:
    """Why ``engine`` cannot run ``precision`` on this machine, or None (the registry's one message)."""
    from sparsify_tui.engines.registry import precision_problem

    return precision_problem(engine, precision)


def engine_version(engine: str) -> str:
    from sparsify_tui.engines.registry import get_engine

    return get_engine(engine).version() or ""


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class _Search:
    """One deployment search in the child: its configurations, their compiled runners, rows and skips."""

    def __init__(self, job: dict, ctx) -> None:
        self.job, self.ctx = job, ctx
        self.variants = list(job["variants"])
        self.engines = [e for e in ENGINES if e in (job.get("engines") or ENGINES)]
        self.precisions = [p for p in PRECISIONS if p in (job.get("precisions") or PRECISIONS)]
        self.batch = int(job.get("batch_size", 1))
        self.cores = job.get("cores")
        self.repeats = max(1, int(job.get("repeats", 5)))
        self.warmup = max(0, int(job.get("warmup", 3)))
        self.min_block = float(job.get("min_block_ms", MIN_BLOCK_MS))
        self.inputs = _load_npz(job["timing_inputs"])
        self.heldout = [_load_npz(p) for p in job.get("heldout") or []]
        self.skipped: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.runners: dict[str, Runner] = {}
        self.kinds: list[str] = []

    def skip(self, engine: str, precision: str, opt: str | None, reason: str) -> None:
        s = {"id": row_id(engine, precision, opt), "engine": engine, "precision": precision,
             "optimization": opt, "reason": reason}
        self.skipped.append(s)
        self.ctx.partial({"skipped": s})

    def configurations(self) -> list[dict[str, Any]]:
        """Every engine x precision x variant this machine can run, the reference (ORT fp32 dense) first;
        the others are skipped with the reason."""
        skip_ids = dict(self.job.get("skip") or {})
        order: list[tuple[str, str, dict]] = [(REFERENCE, "fp32", self.variants[0])]
        for v in self.variants:
            for e in self.engines:
                for p in self.precisions:
                    if (e, p, v) != order[0]:
                        order.append((e, p, v))
        unavailable = {e: engine_unavailable(e) for e in ENGINES}
        only = set(self.job.get("only") or ())
        configs = []
        for e, p, v in order:
            opt = v.get("optimization")
            rid = row_id(e, p, opt)
            if only and rid not in only and (e, p, v) != order[0]:
                continue
            why = skip_ids.get(rid) or unavailable.get(e) or precision_unsupported(e, p)
            if not why and p == "int8" and not v.get("int8"):
                why = v.get("int8_error") or "no INT8 file"
            if why:
                self.skip(e, p, opt, str(why))
                continue
            configs.append({"id": rid, "engine": e, "precision": p, "optimization": opt,
                            "path": v["int8"] if p == "int8" else v["fp32"]})
        return configs

    def _runner(self, c: dict[str, Any], tmp: str) -> Runner:
        """The configuration's file compiled by its engine (``run(feed=None) -> outputs``)."""
        from sparsify_tui.engines.registry import get_engine

        with get_engine(c["engine"]).timed_model(c["path"], self.inputs, names=list(self.inputs),
                                                 batch_size=self.batch, cores=self.cores,
                                                 precision=c["precision"]) as tm:
            return tm.runner(tmp)

    def compile_and_check(self, configs: list[dict[str, Any]], tmp: str) -> None:
        """Compile each configuration and compare its outputs on the held-out batches with the reference's
        (the first); a configuration that fails is skipped, a reference that fails ends the search."""
        import onnx

        from sparsify_tui.analysis.loader import bounded_output_names
        from sparsify_tui.errors import EngineError
        from sparsify_tui.metrics import compare_outputs, plan_outputs

        out_names = [o.name for o in onnx.load(self.variants[0]["fp32"], load_external_data=False).graph.output]
        ref_out: list[list[np.ndarray]] = []
        plan: list = []
        total = len(configs) + self.repeats
        for i, c in enumerate(configs):
            self.ctx.progress(i, total, label=f"compiling {c['engine']} {c['precision']} "
                                              f"{c['optimization'] or 'dense'}", config=c["id"])
            t0 = time.perf_counter()
            try:
                run = self._runner(c, tmp)
                compile_s = time.perf_counter() - t0
                outs = [[np.asarray(y) for y in run(h)] for h in self.heldout]
                if i == 0:
                    ref_out = outs
                    plan = plan_outputs(ref_out, out_names, bounded=bounded_output_names(c["path"]))
                    self.kinds = [m.kind for m in plan]
                change = compare_outputs(ref_out, outs, plan=plan, names=out_names).to_json()
                if self.job.get("outputs_dir"):  # --metric: the parent scores these outputs with the user's function
                    from sparsify_tui.jobs.outputs import save_outputs

                    save_outputs(outputs_file(self.job["outputs_dir"], c["id"]), outs, out_names)
            except EngineError as exc:
                if i == 0:
                    raise
                self.skip(c["engine"], c["precision"], c["optimization"], exc.message)
                continue
            except Exception as exc:  # noqa: BLE001 - an engine failing on one file skips that row only
                if i == 0:
                    raise EngineError(f"onnxruntime could not run the model: {_first_line(exc)}") from None
                self.skip(c["engine"], c["precision"], c["optimization"], f"{c['engine']} failed: {_first_line(exc)}")
                continue
            row = {k: c[k] for k in ("id", "engine", "precision", "optimization")}
            row.update({
                "engine_version": engine_version(c["engine"]),
                "compile_s": round(compile_s, 3),
                **change,
                "top1_agreement": next((o["top1_agreement"] for o in change["output_change_outputs"]
                                        if o.get("top1_agreement") is not None), None),
            })
            self.runners[c["id"]] = run
            self.rows.append(row)
            self.ctx.partial({"row": row})

    def size_blocks(self) -> dict[str, int]:
        """Warm each runner up, then give it the iteration count of a block of at least ``min_block`` ms."""
        iterations: dict[str, int] = {}
        for rid, run in self.runners.items():
            self.ctx.heartbeat(f"warming up {rid}")
            for _ in range(self.warmup):
                run()
            one = _time_block(run, 3)
            n = MIN_ITERATIONS
            if self.min_block > 0 and one > 0:
                n = max(n, min(MAX_ITERATIONS, math.ceil(self.min_block / one)))
            iterations[rid] = n
        for r in self.rows:
            r["iterations"] = iterations.get(r["id"])
        self.ctx.partial({"iterations": iterations})
        return iterations

    def timed_rounds(self, iterations: dict[str, int], done: int) -> list[dict[str, float]]:
        """``repeats`` rounds, each one block per configuration, the order rotating every round."""
        order = list(self.runners)
        total = done + self.repeats
        rounds: list[dict[str, float]] = []
        for rnd in range(self.repeats):
            k = rnd % len(order) if order else 0
            block: dict[str, float] = {}
            for rid in order[k:] + order[:k]:
                block[rid] = _time_block(self.runners[rid], iterations[rid])
                self.ctx.heartbeat(f"round {rnd + 1}: {rid}")
            rounds.append(block)
            self.ctx.partial({"round": rnd, "block_ms": block})
            ref = block.get(order[0]) if order else None
            self.ctx.progress(done + rnd + 1, total,
                              label=f"round {rnd + 1}/{self.repeats}" + (f": reference {ref:.2f} ms" if ref else ""))
        return rounds


@register("deploy")
def deploy_job(job: dict, ctx) -> dict[str, Any]:
    search = _Search(job, ctx)
    configs = search.configurations()
    # inside the parent's scratch directory: a child killed mid-search (Ctrl+C, cancel) leaves nothing behind
    with tempfile.TemporaryDirectory(prefix="child-", dir=job.get("scratch")) as tmp:
        search.compile_and_check(configs, tmp)
        rounds = search.timed_rounds(search.size_blocks(), len(configs))
        search.runners.clear()
    return {"rows": search.rows, "skipped": search.skipped, "rounds": rounds, "output_kinds": search.kinds,
            "heldout_batches": len(search.heldout), "repeats": search.repeats, "min_block_ms": search.min_block}
