"""Job kind ``outputs``: the outputs of models on samples (ONNX Runtime), written to files for the parent.

The parent scores them with the user's ``--metric`` function
(:mod:`sparsify_tui.user_metric`), which runs in the parent: the user's code
never runs beside an engine.

Job keys: ``models`` (paths), ``samples`` (a .npz written by
``actions.validate.save_samples``), ``out_dir`` (where ``outputs<i>.npz`` is
written per model, arrays ``"<sample>:<output name>"``). Result:
``{"files": [...], "names": [output names]}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sparsify_tui.jobs import register


def save_outputs(path: str | Path, outs: list[list[np.ndarray]], names: list[str]) -> None:
    """Per-sample output lists as one .npz (``"<i>:<output name>"``), read back by :func:`read_outputs`."""
    np.savez(str(path), **{f"{i}:{n}": y for i, ys in enumerate(outs) for n, y in zip(names, ys)})


def read_outputs(path: str | Path, names: list[str] | None = None) -> list[list[np.ndarray]]:
    """The per-sample output lists of a file written by :func:`save_outputs` (``names``: the output names in
    order; by default the file's own order)."""
    with np.load(str(path), allow_pickle=False) as z:
        count = 1 + max((int(k.partition(":")[0]) for k in z.files), default=-1)
        if names is None:
            names = output_names(path)
        return [[z[f"{i}:{n}"] for n in names] for i in range(count)]


def output_names(path: str | Path) -> list[str]:
    """The output names of a file written by :func:`save_outputs`, in the model's order."""
    with np.load(str(path), allow_pickle=False) as z:
        return [k.partition(":")[2] for k in z.files if k.partition(":")[0] == "0"]


@register("outputs")
def outputs_job(job: dict, ctx) -> dict[str, Any]:
    from sparsify_tui.jobs.ab_benchmark import _outputs, read_samples

    samples = read_samples(str(job["samples"]))
    models = [str(m) for m in job["models"]]
    files: list[str] = []
    names: list[str] = []
    for i, m in enumerate(models):
        ctx.progress(i, len(models), label=f"outputs of {Path(m).name} on {len(samples)} samples")
        names, outs = _outputs(m, samples)
        path = Path(job["out_dir"]) / f"outputs{i}.npz"
        save_outputs(path, outs, names)
        files.append(str(path))
    ctx.progress(len(models), len(models), label="outputs written")
    return {"files": files, "names": names}
