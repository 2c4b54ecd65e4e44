"""Issue 16: a perf profile says when other processes took its cores, and how far the instrumented
run is from the engine as deployed.

The hog case pins a CPU-bound process to the one core the profile measures on. The "quiet" case
cannot rely on a quiet machine (other tests run alongside), so when the tests run as root the
driver's and the worker's scheduling groups (autogroups: one per session) get the highest CPU
weight (nice -20): background processes of other sessions then take ~1% of the core each, while
the hog, in the boosted driver's group, still competes with the engine as an equal. Without root the quiet case only
checks what holds whatever runs alongside.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from sparsify_tui.engines import interference as itf

pytestmark = pytest.mark.skipif(not itf.available(), reason="needs Linux /proc/stat")

DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys, time
    model, cpu, hog = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hog"
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write("-20")
        boosted = True
    except OSError:
        boosted = False
    os.sched_setaffinity(0, {cpu})  # the worker (cores=1) inherits this one CPU
    p = None
    if hog:
        p = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
        os.sched_setaffinity(p.pid, {cpu})
        time.sleep(0.3)
    def boost_worker(ev):  # the worker runs in a session (scheduling group) of its own: boost it too
        global boosted
        if ev.get("event") == "started" and boosted:
            try:
                with open(f"/proc/{ev['pid']}/autogroup", "w") as f:
                    f.write("-20")
            except OSError:
                boosted = False
    try:
        from sparsify_tui.profiles.perf import run_perf_profile
        doc = run_perf_profile(model, engine="onnxruntime", cores=1, levels=[0], iterations=100, warmup=5,
                               repeats=3, remeasure=0, on_progress=boost_worker)
    finally:
        if p is not None:
            p.kill()
            p.wait()
    print(json.dumps({"boosted": boosted, "quality": doc["quality"], "baseline_ms": doc["baseline_ms"]}))
""")


def _profile(model, cpu: int, hog: bool) -> dict:
    res = subprocess.run([sys.executable, "-c", DRIVER, str(model), str(cpu), "hog" if hog else "quiet"],
                         capture_output=True, text=True, timeout=600, start_new_session=True,
                         env=dict(os.environ, NM_DISABLE_ANALYTICS="1"))
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _busy_warnings(q: dict) -> list[str]:
    return [w for w in q["warnings"] if "other processes used" in w]


def test_a_hog_on_the_measured_core_is_flagged_and_its_absence_is_not(tmp_path):
    from sparsify_tui.analysis.demo import build_demo_model

    model = build_demo_model(tmp_path / "demo.onnx")
    cpu = itf.measured_cpus()[-1]
    hog = _profile(model, cpu, hog=True)
    quiet = _profile(model, cpu, hog=False)
    qh, qq = hog["quality"], quiet["quality"]
    # the hog took about half of the core in every timed block
    assert qh["interference"] > 3 * itf.THRESHOLD, qh
    assert _busy_warnings(qh), qh
    assert qh["interference_by_level"]["0.0"] > 3 * itf.THRESHOLD
    # without it the same mechanism reports much less, and warns exactly when it is above the threshold
    assert qq["interference"] is not None
    assert qq["interference"] < qh["interference"] - 0.2, (qq, qh)
    assert bool(_busy_warnings(qq)) == (max(qq["interference_by_level"]["0.0"], qq.get("deployed_interference") or 0)
                                        > itf.THRESHOLD), qq
    if quiet["boosted"]:  # background processes are held to ~1% of the core each: this is a quiet core
        assert qq["interference"] < itf.THRESHOLD, qq
        assert not _busy_warnings(qq), qq
    # both cases timed the deployed engine as well
    for q in (qh, qq):
        assert q["deployed_ms"] > 0 and math.isfinite(q["instrumentation_ratio"]) and q["instrumentation_ratio"] > 0


@pytest.mark.corpus
@pytest.mark.parametrize("engine", ["onnxruntime", "deepsparse"])
def test_instrumentation_ratio_is_recorded_for_both_engines(corpus, engine):
    from tests.conftest import deepsparse_available

    if engine == "deepsparse" and not deepsparse_available():
        pytest.skip("deepsparse is not installed")
    from sparsify_tui.profiles.perf import run_perf_profile

    doc = run_perf_profile(corpus.path("mobilenetv3"), engine=engine, levels=[0], iterations=20, warmup=3,
                           repeats=2, input_shapes=corpus.input_shapes("mobilenetv3"), remeasure=0)
    q = doc["quality"]
    assert doc["engine"] == engine
    assert q["deployed_ms"] > 0 and len(q["deployed_repeat_ms"]) == 3
    assert q["instrumentation_ratio"] == pytest.approx(doc["baseline_ms"] / q["deployed_ms"])
    off = q["instrumentation_ratio"] > 1.25 or q["instrumentation_ratio"] < 0.8
    assert off == any("as deployed" in w for w in q["warnings"]), q


class _Ctx:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def heartbeat(self, label: str) -> None:
        pass

    def partial(self, data: dict) -> None:
        self.sent.append(data)


def _level(lv: float, ms: float) -> dict:
    return {"type": "level", "key": f"{lv:g}", "level": lv, "model_ms": ms, "layer_ms": {}, "internal": [],
            "engine_s": 0.1, "interference": 0.01, "attempts": 1}


def test_level_sanity_remeasures_a_level_slower_than_the_one_before_and_flags_what_stays():
    from sparsify_tui.jobs.perf import level_sanity

    base = [{"type": "baseline", "key": "0.0", "level": 0.0, "model_ms": ms} for ms in (10.0, 10.2, 9.9)]
    asked = []

    def again(ms):
        def measure(lv):
            asked.append(lv)
            return {"model_ms": ms, "layer_ms": {}, "internal": [], "engine_s": 0.1, "interference": 0.02}
        return measure

    # 0.7 rises above 0.5 by more than the dense spread (0.3 ms): measured again, still slower -> flagged
    parts = base + [_level(0.5, 8.0), _level(0.7, 12.0), _level(0.9, 5.0)]
    notes = level_sanity(_Ctx(), parts, again(11.5))
    assert asked == [0.7]
    assert len(notes) == 1 and notes[0].startswith("level 0.7 measured 11.500 ms, slower than level 0.5 (8.000 ms)")
    assert next(p for p in parts if p.get("level") == 0.7)["attempts"] == 2
    # measured again faster: the new time replaces it, nothing is flagged
    asked.clear()
    parts = base + [_level(0.5, 8.0), _level(0.7, 12.0), _level(0.9, 5.0)]
    ctx = _Ctx()
    assert level_sanity(ctx, parts, again(7.0)) == []
    assert [p["model_ms"] for p in parts if p["type"] == "level"] == [8.0, 7.0, 5.0]
    assert ctx.sent and ctx.sent[0]["model_ms"] == 7.0  # the parent gets the new part
    # not measured again (None: a busy level on a machine that stayed busy): still flagged
    asked.clear()
    parts = base + [_level(0.5, 8.0), _level(0.7, 12.0), _level(0.9, 5.0)]
    notes = level_sanity(_Ctx(), parts, lambda lv: asked.append(lv))
    assert asked == [0.7] and len(notes) == 1 and notes[0].startswith("level 0.7 measured 12.000 ms")
    assert next(p for p in parts if p.get("level") == 0.7)["attempts"] == 1
    # within the spread: nothing measured again
    asked.clear()
    assert level_sanity(_Ctx(), base + [_level(0.5, 10.1)], again(1.0)) == [] and asked == []


def test_busy_blocks_are_not_remeasured_while_a_remeasure_stayed_busy_and_say_so():
    from sparsify_tui.engines import interference as itf
    from sparsify_tui.jobs.perf import PerfRun

    class Ctx(_Ctx):
        def log(self, _message: str) -> None:
            pass

    run = PerfRun(Ctx(), {"remeasure": 1}, "deepsparse", "", "", None, {}, [], 1, 1, [0.0, 0.5, 0.7, 0.9, 0.95], 10,
                  5, 1, [], [], 5)

    def block(name, shares):
        """One block measured as the job does, its attempts seeing ``shares`` in turn; the attempts made."""
        it = iter(shares)
        _res, share, attempts = itf.remeasure(lambda: (None, next(it)), threshold=run.threshold,
                                              retries=run._retries_now(), on_retry=None)
        run._after_remeasure(name, share, attempts)
        return attempts

    assert block("the dense model", [0.05]) == 1  # quiet: one attempt
    assert block("level 0.5", [0.4, 0.05]) == 2  # busy, quiet when measured again
    assert block("level 0.7", [0.4, 0.3]) == 2  # busy, and busy again: the machine stays busy
    assert block("level 0.9", [0.5, 0.0]) == 1  # so this busy level is not measured again
    run.parts = [{"type": "level", "level": 0.9, "interference": 0.5}]
    assert run._sanity_again(0.9) is None  # nor for the level sanity check (the engine is not called)
    assert block("level 0.95", [0.02]) == 1  # quiet again ...
    assert block("level 0.97", [0.4, 0.05]) == 2  # ... so a busy level gets its re-measure back
    assert run._retries_now(tries=0) == 0
    assert run.remeasure_note() == (
        "level 0.7 stayed busy when measured again, so level 0.9 (busy too) was not measured again: its time is "
        "probably too high; measure again on a quiet machine (--wait-idle SECONDS)")


def test_a_quiet_level_slower_than_the_one_before_is_flagged_without_a_compile_more():
    from sparsify_tui.jobs.perf import PerfRun, level_sanity

    run = PerfRun(_Ctx(), {}, "deepsparse", "", "", None, {}, [], 1, 1, [0.0, 0.5, 0.7], 10, 5, 1, [], [], 3)
    base = [{"type": "baseline", "key": "0.0", "level": 0.0, "model_ms": 10.0, "interference": 0.01}]
    run.parts = base + [_level(0.5, 8.0), _level(0.7, 12.0)]  # 0.7 rises; its timed runs were quiet (1%)
    calls = []
    run._analyze = lambda lv, tries=None: calls.append(lv)  # a busy level would be measured again
    notes = level_sanity(run.ctx, run.parts, run._sanity_again, threshold=run.threshold)
    assert calls == []  # quiet: no compile more, the rise is flagged as measured quiet
    assert len(notes) == 1 and notes[0].startswith("level 0.7 measured 12.000 ms, slower than level 0.5")
    assert "on a quiet machine (other processes used 1% of the cores)" in notes[0]
    assert next(p for p in run.parts if p.get("level") == 0.7)["attempts"] == 1
    run.parts = base + [_level(0.5, 8.0), dict(_level(0.7, 12.0), interference=0.4)]  # busy: measured again
    run._analyze = lambda lv, tries=None: calls.append(lv) or {**_level(lv, 7.0), "owner": {}, "groups": {}}
    assert level_sanity(run.ctx, run.parts, run._sanity_again, threshold=run.threshold) == [] and calls == [0.7]
