"""Job kind ``perf_channels``: each channel group's time saved with a fraction of its channels removed.

Every variant is a physically smaller file (:func:`sparsify_tui.onnxkit.channels.remove_channels`; INT8: the
pruned file quantized as the deployment search does), compiled on the chosen engine and precision and timed
against the dense model compiled once in the same process: dense and variant blocks (each the median of
``iterations`` runs) alternate, the order flipping each repeat, so drift and neighbours' load cancel in the
ratio ``variant / dense`` of each pair; a variant's ratio is the median over its pairs, its saving
``dense_ms * (1 - ratio)`` with ``dense_ms`` the median of every dense block of the run.

Groups are measured in batches, not one by one (a group's own saving is often smaller than the machine's
noise, and groups x fractions compiles is too many for a large model): at each fraction, ``combinations``
variants (default groups + 1, at most 12) remove that fraction from several groups at once: all of them,
then random halves (seeded). Each group's saving per removed FLOP is a least-squares fit over the
combinations (:func:`fit_ms_per_flop`), and its saving at the fraction is that times the FLOPs it removes
alone. A layer left with a share ``k`` of its FLOPs is modelled to keep ``k ** gamma`` of its time, ``gamma``
(1 to 2) the exponent whose fit leaves the smallest residuals over all variants (ONNX Runtime runs a 3x3
convolution with half its input and output channels up to 8x faster, not 4x). Compiles:
``1 + fractions x combinations``.

For the estimator the result keeps, for every group and fraction, the FLOPs it removes from each layer
(``removed_flops``: layer id -> FLOPs; from the analysis of the pruned file), and the dense FLOPs of those
layers (``layer_flops``): a layer between two pruned groups loses ``1 - (1-a)(1-b)`` of its FLOPs, not
``a + b`` (:func:`sparsify_tui.optim.channel_estimate.estimate_channel_speedup`, which the fit uses too).

Job keys: ``model_path``, ``engine``, ``precision``, ``batch_size``, ``cores``, ``input_shapes``, ``data``,
``fractions``, ``combinations`` (per fraction), ``seed``, ``repeats`` (pairs per variant), ``warmup``, ``min_block_ms``.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sparsify_tui.engines.bench import time_block
from sparsify_tui.jobs import register

MIN_BLOCK_MS = 120.0
MAX_ITERATIONS = 2000
MAX_COMBINATIONS = 12  # per fraction
GAMMAS = (1.0, 1.25, 1.5, 1.75, 2.0)  # candidate exponents of a layer's kept cost (kept FLOPs share ** gamma)
RIDGE = 0.3  # pull of each group's ms per FLOP towards the pooled one (share of the mean diagonal)
CALIBRATION_SAMPLES = 4


def removed_count(channels: int, fraction: float) -> int:
    """Channels removed from a group of ``channels`` at ``fraction``: rounded, at least 1, one kept."""
    return max(1, min(channels - 1, int(round(fraction * channels))))


def _layer_flops(model: Any, shapes: dict | None) -> dict[str, int]:
    from sparsify_tui.analysis import analyze

    g = analyze(model, shapes or None)
    return {la.id: int(la.flops or 0) for la in g.layers}


def fit_ms_per_flop(combos: list[dict[str, dict[str, int]]], saved_ms: list[float], layer_flops: dict[str, int],
                    groups: list[str], gamma: float = 1.0) -> tuple[dict[str, float], float]:
    """Each group's saving per removed FLOP, fitted to the combinations' measured savings.

    ``combos[c]``: {group: {layer: FLOPs the group removes alone}} of combination ``c``. A combination's
    saving is modelled as ``sum_g e_g * x_cg``, ``x_cg`` the FLOPs group ``g`` removes there once overlaps
    are counted once (:func:`sparsify_tui.optim.channel_estimate.group_shares`, as the estimate counts
    them, with ``gamma``). Least squares with a ridge pull towards the pooled ``e`` (a group in few
    combinations, or in always the same ones as another, gets the pooled value), ``e_g`` kept at 0 or above.
    Returns ({group: e_g}, the sum of squared residuals in ms^2)."""
    from sparsify_tui.optim.channel_estimate import group_shares

    x = np.zeros((len(combos), len(groups)))
    col = {g: i for i, g in enumerate(groups)}
    for c, removed in enumerate(combos):
        for g, v in group_shares(removed, layer_flops, gamma).items():
            x[c, col[g]] = v
    y = np.asarray(saved_ms, dtype=float)
    pooled = float(y.sum() / x.sum()) if x.sum() > 0 else 0.0
    gram = x.T @ x
    lam = RIDGE * float(np.mean(np.diag(gram))) if gram.size else 0.0
    d = np.linalg.solve(gram + lam * np.eye(len(groups)), x.T @ (y - x @ np.full(len(groups), pooled)))
    e = np.maximum(pooled + d, 0.0)
    sse = float(np.sum((x @ e - y) ** 2))
    return {g: float(e[col[g]]) for g in groups}, sse


class _ChannelPerfRun:
    """One ``perf_channels`` job's state, in the order its steps run: the job's settings and the dense
    model's analysis (:meth:`__init__`), what each group removes alone (:meth:`solo_flops`), the
    combinations (:meth:`plans`), their timing against the dense model (:meth:`measure`), the fit
    (:meth:`fit`) and the result (:meth:`result`)."""

    def __init__(self, job: dict, ctx) -> None:
        import onnx

        from sparsify_tui.analysis.shapes import infer
        from sparsify_tui.engines.inputs import input_specs, load_samples_for, make_inputs
        from sparsify_tui.engines.registry import get_engine, resolve_auto
        from sparsify_tui.errors import ProfileError
        from sparsify_tui.onnxkit.channels import find_groups

        self.job, self.ctx = job, ctx
        self.path = path = str(job["model_path"])
        self.fractions = sorted({float(f) for f in job.get("fractions") or (0.25, 0.5, 0.75)})
        self.batch = int(job.get("batch_size", 1))
        self.cores = job.get("cores")
        self.shapes = shapes = job.get("input_shapes") or {}
        self.precision = job.get("precision") or "fp32"
        self.repeats = max(1, int(job.get("repeats", 3)))
        self.warmup = max(0, int(job.get("warmup", 3)))
        self.min_block = float(job.get("min_block_ms", MIN_BLOCK_MS))
        self.engine, self.reason = resolve_auto(job.get("engine", "auto"))
        self.spec = get_engine(self.engine)

        self.model = model = onnx.load(path)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.tshapes = infer(model, opset)[1]
        self.groups = [g for g in find_groups(model, self.tshapes) if g.prunable]
        if not self.groups:
            raise ProfileError("the model has no prunable channel group: no channel perf profile to measure")
        self.by_id = {g.id: g for g in self.groups}
        self.dense_flops = _layer_flops(model, shapes)
        self.names = [s.name for s in input_specs(path, shapes)]
        self.inputs = make_inputs(path, self.batch, shapes, data=job.get("data"))
        self.calib = None
        if self.precision == "int8":
            from sparsify_tui.analysis import analyze

            self.calib = load_samples_for(path, analyze(path, shapes or None), data=job.get("data"),
                                          samples=CALIBRATION_SAMPLES, input_shapes=shapes)

    def solo_flops(self) -> dict[tuple[str, float], dict[str, int]]:
        """What each group removes alone at each fraction, layer by layer (an analysis only, no engine)."""
        from sparsify_tui.onnxkit.channels import remove_channels

        solo: dict[tuple[str, float], dict[str, int]] = {}
        step, steps = 0, len(self.groups) * len(self.fractions)
        for g in self.groups:
            for f in self.fractions:
                self.ctx.progress(step, steps, label=f"FLOPs of group {g.id} at {f:g}")
                small = remove_channels(self.model, {g.id: range(removed_count(g.channels, f))}, self.tshapes)
                after = _layer_flops(small, self.shapes)
                solo[(g.id, f)] = {k: v - after.get(k, 0) for k, v in self.dense_flops.items()
                                   if v - after.get(k, 0) > 0}
                step += 1
        return solo

    def plans(self) -> list[tuple[float, list[str]]]:
        """At each fraction, ``combinations`` sets of groups: all of them, then distinct random ones (seeded)."""
        groups = self.groups
        n_comb = int(self.job.get("combinations") or min(len(groups) + 1, MAX_COMBINATIONS))
        rng = np.random.default_rng(int(self.job.get("seed", 0)))
        plans: list[tuple[float, list[str]]] = []
        for f in self.fractions:
            chosen = [[g.id for g in groups]]  # all groups: the plans the optimizer makes look like this
            while len(chosen) < n_comb:
                pick = [g.id for g in groups if rng.random() < 0.5]
                if pick and pick not in chosen or (pick and len(chosen) >= 2 ** len(groups) - 1):
                    chosen.append(pick)
            plans += [(f, c) for c in chosen]
        return plans

    def compiled(self, src: Any, stem: str, tmp: str) -> Callable[[], Any]:
        """A runner of ``src`` (a path, or a model saved into ``tmp``), quantized first for INT8."""
        import onnx

        if isinstance(src, (str, Path)):
            p = Path(src)
        else:
            p = Path(tmp) / f"{stem}.onnx"
            onnx.save(src, str(p))
        if self.calib is not None:
            from sparsify_tui.profiles.quant import quantize_file

            import logging

            q = Path(tmp) / f"{stem}.int8.onnx"
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # the quantizer logs advice on the root logger
            try:
                quantize_file(p, q, self.calib)
            finally:
                root.setLevel(level)
            p = q
        with self.spec.prepared(str(p)) as (pp, _note):
            return self.spec.runner(pp, self.inputs, names=self.names, batch_size=self.batch, cores=self.cores,
                                    precision=self.precision, tmp=tmp)

    def time_pairs(self, run_dense: Callable[[], Any], run_v: Callable[[], Any],
                   iterations: int) -> tuple[list[float], list[float]]:
        """``repeats`` alternating dense/variant blocks: (the ratios variant / dense, the dense blocks)."""
        pairs, ds = [], []
        for r in range(self.repeats):
            if r % 2 == 0:
                d, v = time_block(run_dense, iterations), time_block(run_v, iterations)
            else:
                v, d = time_block(run_v, iterations), time_block(run_dense, iterations)
            ds.append(d)
            pairs.append(v / d if d > 0 else 1.0)
        return pairs, ds

    def measure(self, plans: list[tuple[float, list[str]]]) -> None:
        """Compile the dense model, then every combination's variant, timed in pairs against it."""
        from sparsify_tui.onnxkit.channels import remove_channels

        ctx, warmup = self.ctx, self.warmup
        with tempfile.TemporaryDirectory(prefix="sparsify-chperf-") as tmp:
            self.total = total = len(plans) + 1
            ctx.progress(0, total, label=f"compiling the dense model ({self.engine})")
            t0 = time.perf_counter()
            run_dense = self.compiled(self.path, "dense", tmp)
            self.compile_s = time.perf_counter() - t0
            for _ in range(warmup):
                run_dense()
            one = time_block(run_dense, 3)
            self.iterations = iterations = (max(3, min(MAX_ITERATIONS, math.ceil(self.min_block / one)))
                                            if one > 0 else 3)
            self.dense_blocks: list[float] = []
            self.combos: list[dict[str, Any]] = []
            for step, (f, members) in enumerate(plans, start=1):
                ctx.progress(step, total, label=f"{len(members)} groups with {f:g} of their channels removed")
                small = remove_channels(self.model, {gid: range(removed_count(self.by_id[gid].channels, f))
                                                     for gid in members}, self.tshapes)
                run_v = self.compiled(small, f"v{step}", tmp)
                for _ in range(warmup):
                    run_v()
                pairs, ds = self.time_pairs(run_dense, run_v, iterations)
                del run_v
                self.dense_blocks += ds
                combo = {"fraction": f, "groups": members, "ratio": statistics.median(pairs),
                         "ratio_spread": [min(pairs), max(pairs)]}
                self.combos.append(combo)
                ctx.partial({"combination": combo})
            self.dense_ms = statistics.median(self.dense_blocks) if self.dense_blocks else one

    def fit(self, solo: dict[tuple[str, float], dict[str, int]]) -> tuple[float, dict[float, dict[str, float]]]:
        """Each combination's saving in ms, and (gamma, {fraction: {group: ms per FLOP}}) fitted to them."""
        for c in self.combos:
            c["saved_ms"] = self.dense_ms * (1.0 - c["ratio"])

        def fitted(gamma: float) -> tuple[dict[float, dict[str, float]], float]:
            fits, sse = {}, 0.0
            for f in self.fractions:
                at = [c for c in self.combos if c["fraction"] == f]
                fits[f], err = fit_ms_per_flop([{gid: solo[(gid, f)] for gid in c["groups"]} for c in at],
                                               [c["saved_ms"] for c in at], self.dense_flops,
                                               [g.id for g in self.groups], gamma)
                sse += err
            return fits, sse

        # how a layer's time follows its FLOPs (gamma 1: in proportion): the exponent that fits the variants best
        gamma, (fits, _sse) = min(((gm, fitted(gm)) for gm in GAMMAS), key=lambda t: t[1][1])
        return gamma, fits

    def result(self, solo: dict[tuple[str, float], dict[str, int]], gamma: float,
               fits: dict[float, dict[str, float]]) -> dict[str, Any]:
        """The job's result: a row per group and fraction, and the measurements it rests on."""
        from sparsify_tui.optim.channel_estimate import group_shares

        dense_flops = self.dense_flops
        rows: list[dict[str, Any]] = []
        for f in self.fractions:
            for g in self.groups:
                rem = solo[(g.id, f)]
                eff = group_shares({g.id: rem}, dense_flops, gamma)[g.id]
                rows.append({"group": g.id, "fraction": f, "removed": removed_count(g.channels, f),
                             "channels": g.channels, "removed_flops": rem, "ms_per_gflop": fits[f][g.id] * 1e9,
                             "saved_ms": fits[f][g.id] * eff})
        touched = {lid for r in rows for lid in r["removed_flops"]}
        self.ctx.progress(self.total, self.total, label="done")
        return {
            "engine": self.engine, "engine_version": self.spec.version(), "engine_reason": self.reason,
            "precision": self.precision, "batch_size": self.batch, "cores": self.cores,
            "fractions": self.fractions, "repeats": self.repeats, "iterations": self.iterations,
            "dense_ms": self.dense_ms, "dense_block_ms": self.dense_blocks, "compile_s": self.compile_s,
            "combinations": self.combos, "gamma": gamma,
            "groups": [{"id": g.id, "channels": g.channels, "producers": list(g.producers)} for g in self.groups],
            "layer_flops": {lid: dense_flops[lid] for lid in sorted(touched)},
            "total_flops": sum(dense_flops.values()),
            "rows": rows,
        }


@register("perf_channels")
def perf_channels_job(job: dict, ctx) -> dict[str, Any]:
    run = _ChannelPerfRun(job, ctx)
    solo = run.solo_flops()
    run.measure(run.plans())
    gamma, fits = run.fit(solo)
    return run.result(solo, gamma, fits)
