"""Why an estimate missed its validation (issue 16): each cause is named only where the figures show it.

The figures are those of real validations on this wave's machine (YOLOv8n at 0.85, a uniform 0.9 ResNet-50);
`test_validate.py` checks the same function on a validation run in the test itself.
"""

from __future__ import annotations

from sparsify_tui.actions.validate import explain_miss

YOLO = {"engine": "deepsparse", "estimated_speedup": 1.20, "measured_speedup": 0.88, "estimated_ms": 10.85,
        "baseline_ms": 13.0, "dense_ms": 12.34, "pruned_ms": 13.96, "speedup_spread": [0.86, 0.90],
        "estimate_approximated": False, "interference": 0.02}


def test_within_tolerance_says_nothing():
    assert explain_miss({**YOLO, "measured_speedup": 1.10}) == []
    assert explain_miss({**YOLO, "measured_speedup": None}) == []


def test_pruned_slower_than_dense_is_named_with_both_times():
    (s,) = explain_miss(YOLO)
    assert s.startswith("the estimate (1.20x) is 36% above the measured speedup (0.88x): ")
    assert "slower than the dense one (13.96 ms against 12.34 ms)" in s
    assert "repeats" not in s and "other processes" not in s and "warning" not in s


def test_the_side_that_departed_is_named():
    # dense as profiled, pruned slower than estimated: the sparse levels
    r50 = {**YOLO, "estimated_speedup": 1.79, "measured_speedup": 1.36, "baseline_ms": 49.4, "dense_ms": 50.0,
           "estimated_ms": 27.6, "pruned_ms": 36.8, "speedup_spread": [1.33, 1.39]}
    (s,) = explain_miss(r50)
    assert "the dense model ran as the profile says (50.00 ms against 49.40 ms)" in s
    assert "pruned one slower than estimated (36.80 ms against 27.60 ms)" in s
    # pruned as estimated, dense slower than profiled: the dense time
    (s,) = explain_miss({**r50, "dense_ms": 27.6 * 1.79 / 1.36, "pruned_ms": 27.6,
                         "measured_speedup": 1.36})
    assert "the pruned model ran as estimated" in s and "the miss is in the dense time" in s


def test_noise_interference_profile_warnings_and_flops_are_each_named():
    (s,) = explain_miss({**YOLO, "speedup_spread": [0.80, 1.25], "interference": 0.4}, profile_warnings=2)
    assert "ranged 0.80x-1.25x" in s
    assert "other processes used 40% of the measured cores" in s
    assert "has 2 warning(s)" in s
    (s,) = explain_miss({**YOLO, "engine": "onnxruntime", "estimated_speedup": 1.6, "measured_speedup": 1.0,
                         "estimate_approximated": True})
    assert "comes from FLOPs" in s and "onnxruntime runs sparse weights at dense speed" in s
    assert "slower than the dense one" not in s


def test_an_unexplained_miss_says_so():
    (s,) = explain_miss({**YOLO, "dense_ms": None})
    assert "none of the checks explains it" in s
