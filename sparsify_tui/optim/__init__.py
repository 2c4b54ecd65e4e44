"""The optimizer: plans, allocation, estimates, recipes.

* :mod:`.optimization` -- the ``Optimization`` dataclass (modifiers, allocation settings, per-layer
  results), its validation and the default schedule (``SCHEDULE_HELP``).
* :mod:`.allocate` -- automatic per-layer sparsity allocation (Lagrangian greedy over convexified
  curves, per-layer cap during allocation, buckets, filters, provably monotone balance).
* :mod:`.estimate` -- ``Evaluator`` / ``evaluate``: time, speedup, FLOPs, params, compression,
  Recovery Confidence (``RECOVERY_HELP``) for the model and each layer.
* :mod:`.recipe` -- SparseML recipe export / import, name maps.
* :mod:`.code_samples` -- PyTorch / Keras / TensorFlow code applying a recipe.
* :mod:`.prune` -- one-shot magnitude pruning of the ONNX model.
* :mod:`.synthetic` -- a synthetic model graph and profiles for tests and benchmarks.

Nothing here imports Textual; importing this package imports none of its modules.
"""
