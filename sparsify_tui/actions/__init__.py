"""One core function per user action, called alike by the command line, the app and the cluster.

- :mod:`~sparsify_tui.actions.profiles`: measure or reuse a perf / loss / quant profile of a project
  (one cache key and one name for the same settings, whichever face asked).
- :mod:`~sparsify_tui.actions.optimizer`: load the optimizer's inputs from a project, save an optimization.
- :mod:`~sparsify_tui.actions.validate`: prune a plan one-shot and measure it against the dense model.
- :mod:`~sparsify_tui.actions.sweeps`: group a sweep's profiles and give the scaling chart's series.
"""
