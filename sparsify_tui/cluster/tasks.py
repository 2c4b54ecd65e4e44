"""The code that runs on a benchmark server, inside a Ray worker.

These are plain functions (no Ray import at module level); :mod:`.sweep` and
:mod:`.servers` wrap them with ``ray.remote`` and pin them to a server's node.
The server must have sparsify-tui (with the engines it offers) installed.

* :func:`probe` — the server's machine summary (``machine_info()``), host
  name and process id; used by ``cluster status`` and to plan a sweep.
* :func:`measure` — one sweep job: writes the model bytes (which arrive from
  Ray's object store) to a temporary file and runs exactly the same core
  function as a local profile (``run_perf_profile`` / ``run_loss_profile`` /
  ``run_quant_profile``, which measure in a child process). Returns the
  profile document with the server's machine summary and the wall-clock
  start and end of the measurement.

A problem with the measurement itself (engine error, model the engine cannot
run) is *returned* as ``{"error": ..., "error_type": ...}`` so the driver can
tell it apart from a lost server (a Ray error), which it retries elsewhere.
"""

from __future__ import annotations

import inspect
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def machine_summary() -> dict:
    """``sparsify_tui.engines.machine.machine_info()`` of the machine this runs on."""
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    from sparsify_tui.engines.machine import machine_info

    return dict(machine_info())


def probe() -> dict:
    """Who am I: machine summary, host name, pid, Ray node id."""
    info: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        info["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - not inside Ray (unit use)
        info["node_id"] = None
    try:
        info["machine"] = machine_summary()
    except Exception as exc:  # noqa: BLE001 - reported, not fatal for status
        info["machine"] = None
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def _call_with_known_kwargs(func, *args, **kwargs):
    """Call ``func`` with only the keyword arguments its signature accepts."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return func(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return func(*args, **kwargs)
    return func(*args, **{k: v for k, v in kwargs.items() if k in params})


def run_profile(model_path: Path, job: dict, cancel: threading.Event | None = None) -> dict:
    """Run the local profile function that ``job["kind"]`` names on ``model_path``."""
    kind = job.get("kind", "perf")
    shapes = job.get("input_shapes") or None
    if kind == "perf":
        from sparsify_tui.profiles.perf import run_perf_profile

        return run_perf_profile(
            model_path,
            engine=job.get("engine", "auto"),
            batch_size=int(job.get("batch_size", 1)),
            cores=job.get("cores"),
            levels=job.get("levels"),
            iterations=int(job.get("iterations", 10)),
            warmup=int(job.get("warmup", 5)),
            repeats=int(job.get("repeats", 3)),
            input_shapes=shapes,
            cancel=cancel,
            **({"timeout_s": float(job["timeout_s"])} if job.get("timeout_s") else {}),
            **({"precision": job["precision"]} if job.get("precision") else {}),
        )
    if kind == "loss":
        from sparsify_tui.profiles.loss import run_loss_profile

        return _call_with_known_kwargs(
            run_loss_profile, model_path, job.get("method", "one-shot"),
            input_shapes=shapes, levels=job.get("levels"), cores=job.get("cores"), cancel=cancel,
        )
    if kind == "quant":
        from sparsify_tui.profiles.quant import run_quant_profile

        return _call_with_known_kwargs(
            run_quant_profile, model_path, input_shapes=shapes, cores=job.get("cores"), cancel=cancel,
        )
    raise ValueError(f"unknown profile kind {kind!r}")


def _write_model(files: bytes | dict, directory: Path) -> Path:
    """Write the model (bytes, or ``{relative name: bytes}`` with its external data) into ``directory``."""
    if isinstance(files, (bytes, bytearray, memoryview)):
        files = {"model.onnx": bytes(files)}
    for rel, data in files.items():
        target = (directory / rel).resolve()
        if directory.resolve() not in target.parents:
            raise ValueError(f"model file {rel!r} would be written outside the job directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return directory / "model.onnx"


def measure(model_files: bytes | dict, job: dict) -> dict:
    """One sweep job on this server (see the module docstring for the result).

    ``model_files``: the model's bytes, or ``{relative name: bytes}`` holding
    ``model.onnx`` and its external data files.
    """
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    from sparsify_tui.errors import SparsifyError

    started = time.time()
    out: dict[str, Any] = {"job": job, "hostname": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        out["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        out["node_id"] = None

    with tempfile.TemporaryDirectory(prefix="sparsify-sweep-") as tmp:
        model_path = _write_model(model_files, Path(tmp))
        box = _in_thread(lambda cancel: run_profile(model_path, job, cancel))
    out["started"] = started
    out["finished"] = time.time()
    exc = box.get("exc")
    if exc is not None:
        if isinstance(exc, SparsifyError):
            out["error"] = str(exc)
            out["error_type"] = type(exc).__name__
            return out
        raise exc
    try:
        out["machine"] = machine_summary()
    except Exception:  # noqa: BLE001
        out["machine"] = (box["value"] or {}).get("machine")
    out["profile"] = box["value"]
    return out


def _in_thread(fn) -> dict:
    """Run ``fn(cancel)`` in a helper thread so a Ray cancellation (KeyboardInterrupt here) stops the engine's
    child process through the runner's cancel event; returns ``{"value": ...}`` or ``{"exc": ...}``."""
    box: dict[str, Any] = {}
    cancel = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn(cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the task thread
            box["exc"] = exc

    t = threading.Thread(target=work, name="sparsify-measure", daemon=True)
    t.start()
    try:
        while t.is_alive():
            t.join(0.2)
    except BaseException:
        cancel.set()
        t.join(30)
        raise
    return box


def deploy_search(bundle: dict, cores: int) -> dict:
    """One server's deployment search (``sparsify-tui deploy --servers``).

    ``bundle`` (from Ray's object store, the same for every server): ``files`` ``{relative name: bytes}`` (the
    dense model, the pruned and INT8 files, the timing inputs and held-out batches, built once by the driver) and
    ``job``, the child job ``deploy`` with those relative names. Runs it here with ``cores`` cores
    (:func:`sparsify_tui.actions.deploy.measure`) and returns the raw measurement (``rows``, ``rounds``,
    ``skipped``: the driver computes the timings and flags against this server's own reference row) with this
    server's machine summary and engine versions; a measurement error is returned as ``error`` with what finished.
    """
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    from sparsify_tui.actions.deploy import Measurement, measure
    from sparsify_tui.errors import SparsifyError
    from sparsify_tui.jobs.deploy import engine_version

    started = time.time()
    out: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        out["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        out["node_id"] = None
    m = Measurement()
    with tempfile.TemporaryDirectory(prefix="sparsify-deploy-") as tmp:
        root = Path(tmp)
        _write_model(bundle["files"], root)
        job = relocate(bundle["job"], root)
        box = _in_thread(lambda cancel: measure(job, int(cores), m, cancel=cancel))
    out["started"], out["finished"] = started, time.time()
    out["measurement"] = m.to_dict()
    exc = box.get("exc")
    if exc is not None:
        if not isinstance(exc, SparsifyError):
            raise exc
        out["error"], out["error_type"] = str(exc), type(exc).__name__
    out["machine"] = machine_summary()
    out["versions"] = {e: engine_version(e) for e in job.get("engines") or []}
    return out


def relocate(job: dict, root: Path) -> dict:
    """The deploy job with its relative file names made absolute under ``root``."""
    def at(rel: str | None) -> str | None:
        return str(root / rel) if rel else None

    out = dict(job)
    out["variants"] = [dict(v, fp32=at(v["fp32"]), int8=at(v.get("int8"))) for v in job["variants"]]
    out["timing_inputs"] = at(job["timing_inputs"])
    out["heldout"] = [at(h) for h in job["heldout"]]
    out["scratch"] = str(root)
    return out
