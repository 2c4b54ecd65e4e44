"""Profiles: perf (timings), loss (sensitivity to pruning), quant (sensitivity to INT8).

Profile documents are plain JSON-able dicts. Sparsity levels used as dict keys
are formatted with :func:`sparsify_tui.settings.level_key`.
"""

SCHEMA_VERSION = 1
