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

Job keys: ``variants`` (list of ``{"optimization": name|None, "fp32": path,
"int8": path|None, "int8_error": str|None}``; the first is dense),
``engines``, ``precisions``, ``batch_size``, ``cores``, ``timing_inputs``
(.npz), ``heldout`` (list of .npz, one batch each), ``repeats``, ``warmup``,
``min_block_ms``, ``scratch`` (the parent's temporary directory), ``skip`` (row ids not to try: an earlier child crashed on them).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from typing import Any, Callable

import numpy as np

from sparsify_tui.jobs import register

ENGINES = ("onnxruntime", "deepsparse", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
MIN_BLOCK_MS = 250.0
MAX_ITERATIONS = 5000
MIN_ITERATIONS = 3

Runner = Callable[..., list]


def row_id(engine: str, precision: str, optimization: str | None) -> str:
    return f"{engine}/{precision}/{optimization or 'dense'}"


def _first_line(exc: BaseException) -> str:
    """The first telling line (OpenVINO's messages start with "Exception from src/...cpp:N:" lines)."""
    import re

    text = str(getattr(exc, "message", None) or exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not re.match(r"^(Exception from |Check '.*' failed at )", ln)]
    return ((useful or lines or [type(exc).__name__])[0])[:300]


def ov_make_runner(path: str, **kw: Any) -> Runner:
    from sparsify_tui.engines import openvino_engine

    return openvino_engine.make_runner(path, **kw)


def _ort_runner(path: str, *, precision: str, cores: int | None, batch_size: int,
                inputs: dict[str, np.ndarray], tmp: str) -> Runner:
    from sparsify_tui.engines import ort
    from sparsify_tui.errors import EngineError

    sess = ort._session(path, cores, tmp, profile=False, inputs=inputs)
    base = ort._feed(sess, inputs)
    names = list(base)

    def run(feed: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        f = base if feed is None else {n: feed[n] for n in names}
        try:
            return sess.run(None, f)
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"onnxruntime failed to run {path}: {_first_line(exc)}") from None

    return run


def _ds_runner(path: str, *, precision: str, cores: int | None, batch_size: int,
               inputs: dict[str, np.ndarray], names: list[str]) -> Runner:
    from sparsify_tui.engines import deepsparse_engine as dse
    from sparsify_tui.errors import EngineError

    dse._import()
    from deepsparse import compile_model

    xs = [np.ascontiguousarray(inputs[n]) for n in names]
    try:
        eng = compile_model(path, batch_size=int(batch_size), num_cores=cores,
                            input_shapes=[list(x.shape) for x in xs])
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"deepsparse could not compile {path}: {_first_line(exc)}") from None

    def run(feed: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        data = xs if feed is None else [np.ascontiguousarray(feed[n]) for n in names]
        return [np.asarray(y) for y in eng.run(data)]

    return run


def engine_unavailable(engine: str) -> str | None:
    """Why ``engine`` cannot run here (not installed), or None."""
    if engine == "deepsparse":
        from sparsify_tui.engines import deepsparse_engine as dse

        if not dse.available():
            return "deepsparse is not installed (pip install 'sparsify-tui[deepsparse]')"
        try:
            import deepsparse  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            return f"deepsparse cannot be imported: {_first_line(exc)}"
    if engine == "openvino":
        from sparsify_tui.engines import openvino_engine

        if not openvino_engine.available():
            return openvino_engine.INSTALL_HINT
        try:
            import openvino  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            return f"openvino cannot be imported: {_first_line(exc)}"
    return None


def precision_unsupported(engine: str, precision: str) -> str | None:
    """Why ``engine`` cannot run ``precision`` on this machine, or None."""
    if precision == "bf16":
        if engine == "onnxruntime":
            return "ONNX Runtime's CPU provider has no bf16 kernels for these operators"
        if engine == "deepsparse":
            return "DeepSparse runs fp32 and int8 only"
        if engine == "openvino":
            from sparsify_tui.engines import openvino_engine
            from sparsify_tui.errors import EngineError

            try:
                openvino_engine.check_precision("bf16")
            except EngineError as exc:
                return exc.message
            return None
    return None


def engine_version(engine: str) -> str:
    try:
        from importlib.metadata import version

        return version({"onnxruntime": "onnxruntime", "deepsparse": "deepsparse", "openvino": "openvino"}[engine])
    except Exception:  # noqa: BLE001
        return ""


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _time_block(fn: Runner, iterations: int) -> float:
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


@register("deploy")
def deploy_job(job: dict, ctx) -> dict[str, Any]:
    from sparsify_tui.errors import EngineError
    from sparsify_tui.analysis.loader import bounded_output_names
    from sparsify_tui.metrics import compare_outputs, plan_outputs

    variants = list(job["variants"])
    engines = [e for e in ENGINES if e in (job.get("engines") or ENGINES)]
    precisions = [p for p in PRECISIONS if p in (job.get("precisions") or PRECISIONS)]
    batch = int(job.get("batch_size", 1))
    cores = job.get("cores")
    repeats = max(1, int(job.get("repeats", 5)))
    warmup = max(0, int(job.get("warmup", 3)))
    min_block = float(job.get("min_block_ms", MIN_BLOCK_MS))
    skip_ids = dict(job.get("skip") or {})
    inputs = _load_npz(job["timing_inputs"])
    heldout = [_load_npz(p) for p in job.get("heldout") or []]
    names = list(inputs)

    # the configurations, reference first
    configs: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []

    def skip(engine: str, precision: str, opt: str | None, reason: str) -> None:
        s = {"id": row_id(engine, precision, opt), "engine": engine, "precision": precision,
             "optimization": opt, "reason": reason}
        skipped.append(s)
        ctx.partial({"skipped": s})

    plan: list[tuple[str, str, dict]] = [("onnxruntime", "fp32", variants[0])]
    for v in variants:
        for e in engines:
            for p in precisions:
                if (e, p, v) != plan[0]:
                    plan.append((e, p, v))
    unavailable = {e: engine_unavailable(e) for e in ENGINES}
    for e, p, v in plan:
        opt = v.get("optimization")
        rid = row_id(e, p, opt)
        if rid in skip_ids:
            skip(e, p, opt, skip_ids[rid])
            continue
        if unavailable.get(e):
            skip(e, p, opt, str(unavailable[e]))
            continue
        why = precision_unsupported(e, p)
        if why:
            skip(e, p, opt, why)
            continue
        if p == "int8" and not v.get("int8"):
            skip(e, p, opt, v.get("int8_error") or "no INT8 file")
            continue
        configs.append({"id": rid, "engine": e, "precision": p, "optimization": opt,
                        "path": v["int8"] if p == "int8" else v["fp32"]})

    total = len(configs) + repeats
    runners: dict[str, Runner] = {}
    rows: list[dict[str, Any]] = []
    ref_out: list[list[np.ndarray]] = []
    kinds: list[str] = []
    plan: list = []
    import onnx

    out_names = [o.name for o in onnx.load(variants[0]["fp32"], load_external_data=False).graph.output]
    # inside the parent's scratch directory: a child killed mid-search (Ctrl+C, cancel) leaves nothing behind
    with tempfile.TemporaryDirectory(prefix="child-", dir=job.get("scratch")) as tmp:
        from sparsify_tui.engines import deepsparse_engine as dse

        for i, c in enumerate(configs):
            ctx.progress(i, total, label=f"compiling {c['engine']} {c['precision']} "
                                         f"{c['optimization'] or 'dense'}", config=c["id"])
            t0 = time.perf_counter()
            try:
                kw = dict(precision=c["precision"], cores=cores, batch_size=batch, inputs=inputs)
                if c["engine"] == "onnxruntime":
                    run = _ort_runner(c["path"], tmp=tmp, **kw)
                elif c["engine"] == "deepsparse":
                    with dse.compatible_model(c["path"]) as (pd, _note):
                        run = _ds_runner(pd, names=names, **kw)
                else:
                    run = ov_make_runner(c["path"], **kw)
                compile_s = time.perf_counter() - t0
                outs = [[np.asarray(y) for y in run(h)] for h in heldout]
                if i == 0:
                    ref_out = outs
                    plan = plan_outputs(ref_out, out_names, bounded=bounded_output_names(c["path"]))
                    kinds = [m.kind for m in plan]
                change = compare_outputs(ref_out, outs, plan=plan, names=out_names).to_json()
            except EngineError as exc:
                if i == 0:
                    raise
                skip(c["engine"], c["precision"], c["optimization"], exc.message)
                continue
            except Exception as exc:  # noqa: BLE001 - an engine failing on one file skips that row only
                if i == 0:
                    raise EngineError(f"onnxruntime could not run the model: {_first_line(exc)}") from None
                skip(c["engine"], c["precision"], c["optimization"],
                     f"{c['engine']} failed: {_first_line(exc)}")
                continue
            row = {k: c[k] for k in ("id", "engine", "precision", "optimization")}
            row.update({
                "engine_version": engine_version(c["engine"]),
                "compile_s": round(compile_s, 3),
                **change,
                "top1_agreement": next((o["top1_agreement"] for o in change["output_change_outputs"]
                                        if o.get("top1_agreement") is not None), None),
            })
            runners[c["id"]] = run
            rows.append(row)
            ctx.partial({"row": row})
        # warm up, then size each configuration's block to at least min_block ms
        iterations: dict[str, int] = {}
        for rid, run in runners.items():
            ctx.heartbeat(f"warming up {rid}")
            for _ in range(warmup):
                run()
            one = _time_block(run, 3)
            n = MIN_ITERATIONS
            if min_block > 0 and one > 0:
                n = max(n, min(MAX_ITERATIONS, math.ceil(min_block / one)))
            iterations[rid] = n
        for r in rows:
            r["iterations"] = iterations.get(r["id"])
        ctx.partial({"iterations": iterations})
        order = list(runners)
        rounds: list[dict[str, float]] = []
        for rnd in range(repeats):
            k = rnd % len(order) if order else 0
            block: dict[str, float] = {}
            for rid in order[k:] + order[:k]:
                block[rid] = _time_block(runners[rid], iterations[rid])
                ctx.heartbeat(f"round {rnd + 1}: {rid}")
            rounds.append(block)
            ctx.partial({"round": rnd, "block_ms": block})
            ref = block.get(order[0]) if order else None
            ctx.progress(len(configs) + rnd + 1, total,
                         label=f"round {rnd + 1}/{repeats}" + (f": reference {ref:.2f} ms" if ref else ""))
        runners.clear()
    return {"rows": rows, "skipped": skipped, "rounds": rounds, "output_kinds": kinds,
            "heldout_batches": len(heldout), "repeats": repeats, "min_block_ms": min_block}
