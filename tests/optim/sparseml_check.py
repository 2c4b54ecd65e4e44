"""Load recipe files with SparseML's own parser and modifier classes (run with a Python that has sparseml).

Usage: ``SPARSEML_PYTHON -m tests.optim.sparseml_check RECIPE.yaml ...`` or
``python tests/optim/sparseml_check.py RECIPE.yaml ...``; prints one JSON line per
recipe: the modifiers SparseML built, or the error it raised. SparseML's
framework-independent base classes are registered under the ``base``
framework (no torch needed), which runs their own validation of every value
(final_sparsity in (0, 1), init_lr in (0, 1], milestones, update frequencies,
...). ``QuantizationModifier`` is torch-only: a stand-in that accepts its
documented fields (``start_epoch``, ``ignore``) and requires ``end_epoch`` -1
is registered instead.
"""

from __future__ import annotations

import json
import sys


def main(paths: list[str]) -> int:
    from sparseml.optim.manager import BaseManager
    from sparseml.optim.modifier import BaseModifier, ModifierYAML
    from sparseml.sparsification.modifier_epoch import EpochRangeModifier
    from sparseml.sparsification.modifier_lr import LearningRateModifier, SetLearningRateModifier
    from sparseml.sparsification.modifier_pruning import GMPruningModifier

    ModifierYAML("base")(EpochRangeModifier)
    ModifierYAML("base")(GMPruningModifier)
    ModifierYAML("base")(SetLearningRateModifier)

    @ModifierYAML("base")
    class LearningRateModifier(LearningRateModifier):  # noqa: F811 - base class needs min_frequency
        def __init__(self, **kw):
            super().__init__(min_frequency=-1.0, **kw)

    from sparseml.optim.modifier import BaseScheduled

    @ModifierYAML("base")
    class QuantizationModifier(BaseModifier, BaseScheduled):
        def __init__(self, start_epoch=-1.0, end_epoch=-1.0, ignore=None, **kw):
            if end_epoch != -1:
                raise ValueError("QuantizationModifier end_epoch must be -1")
            if kw:
                raise ValueError(f"unexpected QuantizationModifier fields {sorted(kw)}")
            if ignore is not None and not (isinstance(ignore, list) and all(isinstance(x, str) for x in ignore)):
                raise ValueError("QuantizationModifier ignore must be a list of module names")
            super().__init__(start_epoch=start_epoch, end_epoch=-1.0, end_comparator=-1)
            self.ignore = ignore

    rc = 0
    for p in paths:
        text = open(p, encoding="utf-8").read()
        try:
            mods = BaseModifier.load_framework_list(text, "base")
            manager = BaseManager(mods)
            out = {"recipe": p, "ok": True, "modifiers": [type(m).__name__ for m in mods],
                   "max_epochs": manager.max_epochs}
            for m in mods:
                if isinstance(m, GMPruningModifier):
                    out.setdefault("final_sparsities", []).append(m.final_sparsity)
                    out.setdefault("params", 0)
                    out["params"] += len(m.params)
        except Exception as exc:  # noqa: BLE001 - report whatever SparseML raised
            out = {"recipe": p, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            rc = 1
        print(json.dumps(out))
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
