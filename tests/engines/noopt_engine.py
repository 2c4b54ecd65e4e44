"""A test-only engine: ONNX Runtime with every graph optimization turned off (``ORT_DISABLE_ALL``).

It runs the graph exactly as the file states it (no constant folding, no fusions, no
NCHWc layouts), so it is another engine with other times, not a stub. It is added the
way HACKING.md ("Add an engine") says, as one module and one ``register`` call, and
``tests/engines/test_added_engine.py`` uses it to show that nothing else has to change:
the environment variable ``SPARSIFY_TUI_ENGINE_MODULES=tests.engines.noopt_engine``
makes the CLI and its worker processes import it.
"""

from __future__ import annotations

from typing import Any

from sparsify_tui.engines.registry import EngineSpec, register
from sparsify_tui.engines.timed import TimedModel
from sparsify_tui.errors import EngineError

NAME = "ort-noopt"

# what `sparsify-tui deploy --export` writes next to the exported model (str.format fields, see ort.DEPLOY_SNIPPET)
DEPLOY_SNIPPET = '''"""Run {model} with ONNX Runtime, graph optimizations off ({precision}{sparse})."""
import numpy as np
import onnxruntime as ort

so = ort.SessionOptions()
so.intra_op_num_threads = {cores}
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
session = ort.InferenceSession("{model}", so, providers=["CPUExecutionProvider"])
feed = {{i.name: np.random.rand(*{shapes}[i.name]).astype(np.float32) for i in session.get_inputs()}}
outputs = session.run(None, feed)
'''


class Timed(TimedModel):
    """Its own session for runs (and so for benchmarks: the default loop over the runner); ONNX Runtime's
    profiler with the same setting for the per-layer profile."""

    def runner(self, tmp: str | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        if self.cores:
            so.intra_op_num_threads = int(self.cores)
        try:
            sess = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise EngineError(f"{NAME} could not load {self.path}: {str(exc).splitlines()[0][:200]}") from None
        names = [i.name for i in sess.get_inputs()]
        base = {n: self.inputs[n] for n in names}

        def run(feed: dict[str, Any] | None = None) -> list:
            return sess.run(None, base if feed is None else {n: feed[n] for n in names})

        return run

    def _profile(self, info, *, level: float | None = None, **kw: Any) -> dict[str, Any]:
        from sparsify_tui.engines import ort

        return ort.profile(self.path, info, self.inputs, cores=self.cores, optimize=False, **kw)


register(EngineSpec(
    name=NAME, label="ONNX Runtime (no graph optimizations)", module=__name__, distributions=("onnxruntime",),
    install_hint="onnxruntime is not installed; pip install onnxruntime"))
