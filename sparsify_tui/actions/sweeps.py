"""Sweep profiles of a project, grouped for the TUI's profile comparison and scaling chart.

Pure functions over a :class:`sparsify_tui.project.Project` (or anything with
``profiles``, ``load_profile(entry)`` and ``is_stale(entry)``): no Ray, no
Textual, safe to call from the TUI.

A *sweep profile* is a profile whose settings carry ``sweep = true`` (written
by :func:`sparsify_tui.cluster.sweep.run_sweep`); its settings hold
``server``, ``batch_size``, ``cores``, ``engine`` and, when it was retried on
an equivalent server, ``measured_on``.

* :func:`sweep_rows` — one flat dict per sweep profile (for a table).
* :func:`group_sweep_profiles` — ``{server: {batch_size: {cores: [row, ...]}}}``.
* :func:`scaling_series` — ``{series: [(cores, batch_size, items_per_second), ...]}``:
  one line per server for the scaling chart (items per second against cores
  and batch size).

Profiles of a model that changed since (stale) are left out unless
``include_stale=True``; a profile whose file cannot be read is left out of the
series but kept in the rows with ``problem`` set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from sparsify_tui.project import Project

__all__ = ["is_sweep_entry", "sweep_rows", "group_sweep_profiles", "scaling_series"]


def is_sweep_entry(entry: Any) -> bool:
    """True for a profile entry written by a sweep."""
    return bool((getattr(entry, "settings", None) or {}).get("sweep"))


def _entries(project: "Project", kind: str | None) -> Iterable[Any]:
    for e in getattr(project, "profiles", []) or []:
        if kind is not None and e.kind != kind:
            continue
        if is_sweep_entry(e):
            yield e


def sweep_rows(project: "Project", *, kind: str | None = "perf", include_stale: bool = False,
               load: bool = True) -> list[dict]:
    """One dict per sweep profile, sorted by server, engine, batch size, cores.

    Keys: ``id``, ``name``, ``kind``, ``server``, ``measured_on``, ``batch_size``,
    ``cores``, ``engine``, ``engine_version``, ``machine`` (summary), ``created``,
    ``stale``, and with ``load=True`` (reads each profile file) ``items_per_second``,
    ``baseline_ms``, ``spread_ms``, ``approximated`` and ``problem`` (why the file
    could not be read, else None).
    """
    rows = []
    for e in _entries(project, kind):
        stale = bool(project.is_stale(e)) if hasattr(project, "is_stale") else False
        if stale and not include_stale:
            continue
        s = e.settings or {}
        row: dict[str, Any] = {
            "id": e.id,
            "name": e.name,
            "kind": e.kind,
            "server": str(s.get("server", "")),
            "measured_on": str(s.get("measured_on", s.get("server", ""))),
            "batch_size": s.get("batch_size"),
            "cores": s.get("cores"),
            "engine": e.engine or s.get("engine"),
            "engine_version": e.engine_version,
            "machine": dict(e.machine or {}),
            "created": e.created,
            "stale": stale,
        }
        if load:
            row.update(items_per_second=None, baseline_ms=None, spread_ms=None, approximated=None, problem=None)
            try:
                doc = project.load_profile(e)
            except Exception as exc:  # noqa: BLE001 - ProfileError and friends: shown, not fatal
                row["problem"] = str(exc)
            else:
                row["items_per_second"] = _num(doc.get("items_per_second"))
                row["baseline_ms"] = _num(doc.get("baseline_ms"))
                row["spread_ms"] = doc.get("spread_ms")
                row["approximated"] = doc.get("approximated")
                if row["cores"] is None:
                    row["cores"] = doc.get("cores")
                if row["batch_size"] is None:
                    row["batch_size"] = doc.get("batch_size")
        rows.append(row)
    rows.sort(key=lambda r: (r["server"], str(r["engine"]), _sortable(r["batch_size"]),
                             _sortable(r["cores"]), r["created"] or ""))
    return rows


def group_sweep_profiles(project: "Project", *, kind: str | None = "perf", include_stale: bool = False,
                         load: bool = True) -> dict[str, dict[Any, dict[Any, list[dict]]]]:
    """Sweep profiles grouped ``{server: {batch_size: {cores: [row, ...]}}}``, every level sorted.

    Rows are those of :func:`sweep_rows` (several per cell when several engines
    were swept, or a combination was measured again). Example::

        {"alpha": {1: {1: [{"id": "perf-3", "engine": "onnxruntime", "items_per_second": 812.0, ...}],
                       2: [...]},
                   16: {...}},
         "beta": {...}}
    """
    out: dict[str, dict[Any, dict[Any, list[dict]]]] = {}
    for row in sweep_rows(project, kind=kind, include_stale=include_stale, load=load):
        out.setdefault(row["server"], {}).setdefault(row["batch_size"], {}).setdefault(row["cores"], []).append(row)
    return {srv: {b: dict(sorted(by_cores.items(), key=lambda kv: _sortable(kv[0])))
                  for b, by_cores in sorted(by_batch.items(), key=lambda kv: _sortable(kv[0]))}
            for srv, by_batch in sorted(out.items())}


def scaling_series(project: "Project", *, engine: str | None = None,
                   include_stale: bool = False) -> dict[str, list[tuple[int, int, float]]]:
    """Points of the scaling chart: ``{series: [(cores, batch_size, items_per_second), ...]}``.

    One series per server, its points sorted by batch size then cores (draw one
    line per batch size, or use cores x batch as the x axis). ``engine`` keeps
    only that engine's profiles; without it, when the sweep holds more than one
    engine, each server gets one series per engine, named ``"<server> · <engine>"``.
    A combination measured more than once keeps its newest profile. Profiles
    with unreadable files or without ``items_per_second`` are left out.
    """
    rows = [r for r in sweep_rows(project, kind="perf", include_stale=include_stale)
            if r["problem"] is None and isinstance(r["items_per_second"], (int, float))
            and r["cores"] is not None and r["batch_size"] is not None]
    if engine is not None:
        rows = [r for r in rows if r["engine"] == engine]
    several = len({r["engine"] for r in rows}) > 1
    newest: dict[tuple, dict] = {}
    for r in rows:  # rows are sorted by created within a cell, so the last one wins
        series = f"{r['server']} · {r['engine']}" if several else r["server"]
        newest[(series, int(r["batch_size"]), int(r["cores"]))] = r
    out: dict[str, list[tuple[int, int, float]]] = {}
    for (series, batch, cores), r in newest.items():
        out.setdefault(series, []).append((cores, batch, float(r["items_per_second"])))
    return {k: sorted(v, key=lambda p: (p[1], p[0])) for k, v in sorted(out.items())}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _sortable(v: Any) -> tuple:
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))
