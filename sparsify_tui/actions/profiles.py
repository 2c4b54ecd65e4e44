"""Measure or reuse a profile of a project: one function for the command line, the app and the cluster.

The same request gets the same settings, the same cache key and the same name
whichever face made it: :func:`perf_settings`, :func:`loss_settings` and
:func:`quant_settings` fill in every default (the cores this process may use,
the default levels, the project's input shapes), :func:`profile_name` names the
result from what was measured, :func:`find_cached` finds a stored profile of
those settings, and :func:`measure_or_reuse` does the whole action.

A measurement that fails or is cancelled stores nothing, so a finished profile
of the same settings is never replaced by a partial one.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sparsify_tui.errors import ProfileError, UsageError
from sparsify_tui.settings import (
    LOSS_APPROX_LEVELS,
    LOSS_ONE_SHOT_LEVELS,
    PERF_LEVELS,
    usable_cores,
)

if TYPE_CHECKING:
    from sparsify_tui.analysis.graph import ModelGraph
    from sparsify_tui.project import Project

KINDS = ("perf", "loss", "quant", "perf_channels", "loss_channels")
LOSS_METHODS = ("approx", "one-shot")


def _shapes(input_shapes: dict | None) -> dict[str, list[int]]:
    return {k: [d if d == "N" else int(d) for d in v] for k, v in sorted((input_shapes or {}).items())}


def _levels(levels: Any, default: tuple) -> list[float]:
    chosen = default if levels is None else levels
    return sorted({round(float(x), 6) for x in chosen} | {0.0})


def _data(data: Any) -> str | None:
    return str(Path(data).expanduser().resolve()) if data else None


def perf_settings(*, engine: str = "auto", batch_size: int = 1, cores: int | None = None, levels: Any = None,
                  iterations: int = 10, warmup: int = 5, repeats: int = 3, input_shapes: dict | None = None,
                  data: Any = None, approximate: bool = False, precision: str | None = None,
                  input_values: dict | None = None) -> dict[str, Any]:
    """The settings that identify a perf profile, every default filled in (``engine`` as requested;
    ``precision`` only when one is asked for: openvino's, or int8)."""
    if approximate:
        return {"approximate": True, "batch_size": int(batch_size), "input_shapes": _shapes(input_shapes)}
    s: dict[str, Any] = {
        "engine": engine or "auto", "batch_size": int(batch_size), "cores": int(cores or usable_cores()),
        "levels": _levels(levels, PERF_LEVELS), "iterations": int(iterations), "warmup": int(warmup),
        "repeats": int(repeats), "input_shapes": _shapes(input_shapes),
    }
    if data:
        s["data"] = _data(data)
    if precision:
        s["precision"] = str(precision)
    if input_values:  # (--input-value: part of what was measured)
        s["input_values"] = dict(sorted(input_values.items()))
    return s


def channel_perf_settings(*, engine: str = "auto", precision: str | None = None, batch_size: int = 1,
                          cores: int | None = None, fractions: Any = None, combinations: int | None = None,
                          repeats: int = 3, input_shapes: dict | None = None, data: Any = None) -> dict[str, Any]:
    """The settings that identify a channel perf profile (``perf_channels``), every default filled in."""
    from sparsify_tui.profiles.perf_channels import DEFAULT_FRACTIONS, check_fractions

    s: dict[str, Any] = {
        "engine": engine or "auto", "precision": precision or "fp32", "batch_size": int(batch_size),
        "cores": int(cores or usable_cores()),
        "fractions": check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions),
        "repeats": int(repeats), "input_shapes": _shapes(input_shapes),
    }
    if combinations:
        s["combinations"] = int(combinations)
    if data:
        s["data"] = _data(data)
    return s


def loss_settings(*, method: str = "approx", levels: Any = None, eval_sparsity: float = 0.9, samples: int = 4,
                  data: Any = None, input_shapes: dict | None = None,
                  prune_method: str = "magnitude") -> dict[str, Any]:
    """The settings that identify a loss profile (``prune_method`` only when not magnitude, so the
    profiles stored before it existed keep their key)."""
    if method not in LOSS_METHODS:
        raise UsageError(f"--method must be approx or one-shot, got {method!r}")
    s: dict[str, Any] = {
        "method": method, "levels": _levels(levels, LOSS_APPROX_LEVELS if method == "approx" else LOSS_ONE_SHOT_LEVELS),
        "eval_sparsity": float(eval_sparsity), "input_shapes": _shapes(input_shapes),
    }
    if method == "one-shot":
        s["samples"] = int(samples)
        s["data"] = _data(data)
        if prune_method and prune_method != "magnitude":
            s["prune_method"] = str(prune_method)
    return s


def channel_loss_settings(*, fractions: Any = None, samples: int = 4, data: Any = None,
                          input_shapes: dict | None = None) -> dict[str, Any]:
    """The settings that identify a channel loss profile (``loss_channels``), every default filled in."""
    from sparsify_tui.profiles.loss_channels import DEFAULT_FRACTIONS
    from sparsify_tui.profiles.perf_channels import check_fractions

    return {"fractions": check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions),
            "samples": int(samples), "data": _data(data), "input_shapes": _shapes(input_shapes)}


def quant_settings(*, samples: int = 4, data: Any = None, input_shapes: dict | None = None) -> dict[str, Any]:
    """The settings that identify an INT8 (quant) profile."""
    return {"samples": int(samples), "data": _data(data), "input_shapes": _shapes(input_shapes)}


def profile_name(kind: str, settings: dict[str, Any], doc: dict | None = None) -> str:
    """The one naming scheme of profiles: what was measured, as the user reads it in every list.

    perf: ``deepsparse b1 c2`` (the engine that measured, batch size, cores), ``approximated b1``;
    loss: ``loss approx`` / ``loss one-shot``; quant: ``int8 4 samples``.
    """
    doc = doc or {}
    if kind == "perf":
        batch = doc.get("batch_size") or settings.get("batch_size", 1)
        if settings.get("approximate"):
            return f"approximated b{batch}"
        engine = doc.get("engine") or settings.get("engine") or "auto"
        cores = doc.get("cores") or settings.get("cores")
        precision = doc.get("precision") or settings.get("precision")
        return f"{engine} b{batch}" + (f" c{cores}" if cores else "") + (
            f" {precision}" if precision and precision != "fp32" else "")
    if kind == "perf_channels":
        engine = doc.get("engine") or settings.get("engine") or "auto"
        precision = doc.get("precision") or settings.get("precision")
        return f"channels {engine} b{settings.get('batch_size', 1)} c{settings.get('cores')}" + (
            f" {precision}" if precision and precision != "fp32" else "")
    if kind == "loss":
        pm = settings.get("prune_method")
        return f"loss {doc.get('method') or settings.get('method', 'approx')}" + (f" {pm}" if pm else "")
    if kind == "loss_channels":
        return f"loss channels {doc.get('samples') or settings.get('samples', 4)} samples"
    if kind == "quant":
        return f"int8 {doc.get('samples') or settings.get('samples', 4)} samples"
    return kind


def _canon(value: Any) -> str:
    from sparsify_tui.project import drop_none

    return json.dumps(drop_none(value), sort_keys=True, default=str)


def installed_version(engine: str) -> str | None:
    """The version of an engine as installed now (a cached profile of another version is not reused);
    None for a name that is no engine of the registry."""
    from sparsify_tui.engines.registry import engine_names, get_engine

    return get_engine(engine).version() if engine in engine_names() else None


def _same_machine(kind: str, settings: dict) -> bool:
    """Timings (perf) and quantized speed (quant) belong to the machine that measured them."""
    return kind in ("quant", "perf_channels") or (kind == "perf" and not settings.get("approximate"))


def find_cached(project: "Project", kind: str, settings: dict, machine: dict | None = None) -> Any:
    """A stored, complete, fresh profile of ``kind`` with these settings (and this machine where it matters)."""
    from sparsify_tui.engines.registry import engine_names

    want = _canon(settings)
    fingerprint = (machine or {}).get("fingerprint")
    for entry in reversed(project.profiles_of(kind)):
        if _canon(entry.settings) != want:
            continue
        if _same_machine(kind, settings) and (entry.machine or {}).get("fingerprint") != fingerprint:
            continue
        if project.is_stale(entry) or project.profile_problem(entry):
            continue
        if entry.engine and entry.engine_version and entry.engine in engine_names() \
                and installed_version(entry.engine) != entry.engine_version:
            continue
        try:
            if project.load_profile(entry).get("incomplete"):
                continue  # finished levels were kept, but a complete measurement is wanted again
        except ProfileError:
            continue
        return entry
    return None


def measure(model_path: Any, kind: str, settings: dict, *, graph: "ModelGraph | None" = None,
            on_progress: Callable[[dict], Any] | None = None, cancel: threading.Event | None = None,
            timeout_s: float | None = None, wait_idle_s: float = 0.0) -> dict:
    """Measure a profile of ``kind`` with ``settings`` (blocking); the document.

    ``wait_idle_s`` (perf): first wait up to that long for a quiet machine (``--wait-idle``)."""
    shapes = settings.get("input_shapes") or None
    if kind == "perf":
        from sparsify_tui.profiles import perf

        if settings.get("approximate"):
            if graph is None:
                from sparsify_tui.analysis import analyze

                graph = analyze(model_path, shapes)
            return perf.approx_perf_profile(graph, batch_size=int(settings.get("batch_size") or 1))
        kw: dict[str, Any] = {"timeout_s": timeout_s} if timeout_s else {}
        return perf.run_perf_profile(
            model_path, engine=settings["engine"], batch_size=settings["batch_size"], cores=settings["cores"],
            levels=settings["levels"], iterations=settings["iterations"], warmup=settings["warmup"],
            repeats=settings["repeats"], input_shapes=shapes, data=settings.get("data"),
            on_progress=on_progress, cancel=cancel, precision=settings.get("precision"),
            input_values=settings.get("input_values"), wait_idle_s=wait_idle_s, **kw)
    if kind == "loss":
        from sparsify_tui.profiles import loss

        if settings["method"] == "approx":
            if graph is None:
                from sparsify_tui.analysis import analyze

                graph = analyze(model_path, shapes)
            return loss.approx_loss_profile(graph, levels=settings["levels"],
                                            eval_sparsity=settings["eval_sparsity"])
        return loss.run_loss_profile(
            model_path, "one-shot", data=settings.get("data"), samples=settings["samples"],
            levels=settings["levels"], input_shapes=shapes, eval_sparsity=settings["eval_sparsity"],
            on_progress=on_progress, cancel=cancel, prune_method=settings.get("prune_method") or "magnitude")
    if kind == "perf_channels":
        from sparsify_tui.profiles.perf_channels import run_channel_perf_profile

        kw = {"timeout_s": timeout_s} if timeout_s else {}
        return run_channel_perf_profile(
            model_path, engine=settings["engine"], precision=settings["precision"],
            batch_size=settings["batch_size"], cores=settings["cores"], fractions=settings["fractions"],
            combinations=settings.get("combinations"), repeats=settings["repeats"], input_shapes=shapes,
            data=settings.get("data"), on_progress=on_progress, cancel=cancel, **kw)
    if kind == "loss_channels":
        from sparsify_tui.profiles.loss_channels import run_channel_loss_profile

        return run_channel_loss_profile(model_path, fractions=settings["fractions"], data=settings.get("data"),
                                        samples=settings["samples"], input_shapes=shapes,
                                        on_progress=on_progress, cancel=cancel, timeout_s=timeout_s)
    if kind == "quant":
        from sparsify_tui.profiles import quant

        return quant.run_quant_profile(model_path, data=settings.get("data"), samples=settings["samples"],
                                       input_shapes=shapes, on_progress=on_progress, cancel=cancel)
    raise ProfileError(f"unknown profile kind {kind!r}")


def engine_of(kind: str, settings: dict, doc: dict) -> tuple[str, str]:
    """(engine, engine version) a stored profile is filed under."""
    if kind in ("perf", "perf_channels"):
        return str(doc.get("engine") or ""), str(doc.get("engine_version") or "")
    if kind == "loss" and settings.get("method") == "approx":
        return "none", ""
    from sparsify_tui.engines.registry import REFERENCE

    return REFERENCE, str(installed_version(REFERENCE) or "")


@dataclass
class ProfileResult:
    doc: dict
    entry: Any = None  # the project's ProfileEntry (None for a model file)
    reused: bool = False


def store(project: "Project", kind: str, settings: dict, doc: dict, *, name: str | None = None,
          machine: dict | None = None) -> Any:
    """Store a measured document as a profile of ``project``; returns the entry."""
    engine, version = engine_of(kind, settings, doc)
    label = name or profile_name(kind, settings, doc)
    if doc.get("incomplete") and "(incomplete)" not in label:
        label += " (incomplete)"
    machine = doc.get("machine") if isinstance(doc.get("machine"), dict) else (machine or {})
    entry = project.add_profile(kind, label, settings, engine, version, machine, doc)
    doc["profile_id"] = entry.id
    return entry


def measure_or_reuse(project: "Project", kind: str, settings: dict, *, force: bool = False, name: str | None = None,
                     graph: "ModelGraph | None" = None, on_progress: Callable[[dict], Any] | None = None,
                     cancel: threading.Event | None = None, timeout_s: float | None = None,
                     wait_idle_s: float = 0.0) -> ProfileResult:
    """The profile of ``project`` with these settings: the stored one, or a new measurement stored in it."""
    from sparsify_tui.engines.machine import machine_summary

    machine = machine_summary()
    if not force:
        entry = find_cached(project, kind, settings, machine)
        if entry is not None:
            doc = project.load_profile(entry)
            doc["profile_id"] = entry.id
            return ProfileResult(doc, entry, reused=True)
    project.require_writable()  # a locked project fails now, not after the measurement
    doc = measure(project.model_path, kind, settings, graph=graph, on_progress=on_progress, cancel=cancel,
                  timeout_s=timeout_s, wait_idle_s=wait_idle_s)
    return ProfileResult(doc, store(project, kind, settings, doc, name=name, machine=machine))
