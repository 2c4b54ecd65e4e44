"""The app's job manager without the app (plain pytest): start, execute, finish, fail, cancel.

The manager talks to its host (the App) through five calls; here a small
recording host stands in for the App, and the jobs run for real (the
approximated loss profile of the demo model, ONNX Runtime for a perf profile).
"""

from __future__ import annotations

import os
import threading

import pytest

from sparsify_tui.project import Project
from sparsify_tui.tui import jobs as jobs_mod
from sparsify_tui.tui.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobManager


class Host:
    """What the App does for the manager, recorded."""

    def __init__(self, project):
        self.project = project
        self.notices: list[tuple[str, str]] = []
        self.changes = 0
        self.workers: list[Job] = []
        self.entries: list[tuple[str, str | None]] = []
        self.reloads = 0

    def notify(self, message, *, severity="information", timeout=None):
        self.notices.append((severity, message))

    def jobs_changed(self):
        self.changes += 1

    def run_in_worker(self, job):
        self.workers.append(job)

    def use_entry(self, kind, entry_id):
        self.entries.append((kind, entry_id))
        return True

    def reload_project(self):
        self.reloads += 1


def route(manager: JobManager, job: Job, **kw) -> jobs_mod.JobOutcome:
    """Execute the job in a thread and hand its reports to the manager, as the App's worker and handlers do.

    A thread of its own, as in the app: ``execute`` lowers the priority of the thread it runs in.
    """
    seen = []
    result = {}

    def started():
        manager.started(job.id)
        seen.append(job.state)

    def work():
        result["outcome"] = JobManager.execute(
            job, started=started, progress=lambda f, lbl: manager.progressed(job.id, f, lbl), **kw)

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    outcome = result["outcome"]
    if outcome.doc is not None:
        manager.finished(job.id, outcome.doc)
    else:
        manager.failed(job.id, outcome.error, cancelled=outcome.cancelled, partial=outcome.partial)
    outcome.seen = seen
    return outcome


@pytest.fixture
def project(tmp_path):
    from sparsify_tui.analysis.demo import build_demo_model

    p = Project.create(build_demo_model(tmp_path / "demo.onnx"), dir=tmp_path / "proj", name="demo")
    yield p
    p.close()


def test_a_profile_runs_is_stored_and_shown(project):
    nice = os.getpriority(os.PRIO_PROCESS, 0)  # this thread's (Linux)
    host = Host(project)
    manager = JobManager(host)
    job = manager.start_profile("loss", {"method": "approx"})
    assert job is not None and host.workers == [job] and job.state == QUEUED and manager.active() == [job]
    assert job.settings == jobs_mod.canonical_settings("loss", {"method": "approx"}, project)
    outcome = route(manager, job)
    assert outcome.seen == [RUNNING] and outcome.doc is not None
    assert job.state == DONE and job.fraction == 1.0 and not job.active and manager.active() == []
    (entry,) = project.profiles_of("loss")
    assert job.entry_id == entry.id and job.name == entry.name
    assert host.entries == [("loss", entry.id)] and host.reloads == 1  # the current project: shown at once
    assert host.notices[-1] == ("information", f"loss profile {entry.name!r} finished")
    assert host.changes >= 3  # added, running, done
    assert os.getpriority(os.PRIO_PROCESS, 0) == nice  # only the job's thread runs at a lower priority


def test_a_queued_job_is_cancelled_before_it_starts(project):
    host = Host(project)
    manager = JobManager(host)
    job = manager.start_profile("perf", {"engine": "onnxruntime", "iterations": 2, "warmup": 1, "repeats": 1})
    assert jobs_mod.needs_measure_slot(job)
    result = {}
    with jobs_mod.MEASURE_LOCK:  # another measurement holds the slot: the job waits in "queued"
        t = threading.Thread(target=lambda: result.update(outcome=route(manager, job)))
        t.start()
        t.join(0.5)
        assert t.is_alive() and job.state == QUEUED
        assert manager.cancel_active() == 1
        t.join(10)
    outcome = result["outcome"]
    assert outcome.cancelled and outcome.error == "cancelled while queued" and outcome.seen == []
    assert job.state == CANCELLED and not manager.active()
    assert host.notices[-1] == ("information", f"{job.title} cancelled")
    assert project.profiles_of("perf") == [] and host.reloads == 0
    assert manager.cancel_active() == 0


def test_a_failing_job_says_why_and_the_app_goes_on(project):
    host = Host(project)
    manager = JobManager(host)
    job = manager.start(Job(kind="nonsense", settings={}, project=project))
    outcome = route(manager, job)
    assert outcome.doc is None and not outcome.cancelled and "unknown job kind 'nonsense'" in outcome.error
    assert job.state == FAILED and job.error == outcome.error and job.status_text() == f"failed: {job.error}"
    assert host.notices[-1] == ("error", f"nonsense failed: {outcome.error}")
    assert host.entries == [] and host.reloads == 0


def test_a_cancelled_worker_stops_a_queued_job(project):
    """The app closing cancels the worker itself: a queued job gives up its wait too."""
    manager = JobManager(Host(project))
    job = manager.start(Job(kind="quant", settings={}, project=project))
    with jobs_mod.MEASURE_LOCK:
        outcome = route(manager, job, cancelled=lambda: True)
    assert outcome.cancelled and job.state == CANCELLED and not job.cancel.is_set()


def test_no_project_or_a_read_only_one_starts_nothing(project, tmp_path):
    host = Host(None)
    manager = JobManager(host)
    assert manager.start_profile("perf") is None and manager.start_deploy() is None
    assert host.notices == [("warning", "open a project first")] * 2 and manager.jobs == []
    ro = Project.open(tmp_path / "proj", readonly=True)
    try:
        host.project = ro
        assert manager.start_profile("loss", {"method": "approx"}) is None
        assert host.notices[-1] == ("error", "this project is open read-only: profiles cannot be saved")
        assert manager.start_deploy({}) is None
        assert host.notices[-1] == ("error", "this project is open read-only: a deployment search cannot be saved")
    finally:
        ro.close()
    host.project = project
    assert manager.start_profile("loss", {"method": "magic"}) is None  # settings the command line would refuse
    assert host.notices[-1] == ("error", "--method must be approx or one-shot, got 'magic'")
    assert manager.jobs == [] and host.workers == []


def test_one_validation_at_a_time_and_its_result_is_told(project):
    host = Host(project)
    manager = JobManager(host)
    job = manager.start_validation("plan-a", batch_size=1)
    assert job.settings == {"optimization": "plan-a", "batch_size": 1} and job.title == "validation of plan-a"
    assert manager.start_validation("plan-b") is None
    assert host.notices[-1] == ("information", "a validation is already running") and len(manager.jobs) == 1
    manager.started(job.id)
    manager.progressed(job.id, 0.5, "level 0.85")
    assert job.state == RUNNING and job.status_text() == "running 50%: measuring sparsity level 0.85"
    manager.finished(job.id, {"validation": {"measured_speedup": 1.5, "estimated_speedup": 1.25}})
    assert job.state == DONE and host.reloads == 1
    assert host.notices[-1] == ("information", "validation of plan-a: measured 1.50x, estimated 1.25x")
    manager.progressed(job.id, 0.1, "late")  # a late progress message does not bring a finished job back
    assert job.state == DONE and job.fraction == 1.0


def test_a_job_of_a_project_no_longer_shown_closes_it_when_it_ends(project, tmp_path):
    host = Host(project)
    manager = JobManager(host)
    job = manager.start(Job(kind="nonsense", settings={}, project=project))
    host.project = None  # the user opened another project meanwhile
    route(manager, job)
    assert host.reloads == 0
    # closed: the lock is free, so the directory opens writable again
    again = Project.open(tmp_path / "proj")
    try:
        assert not again.readonly
    finally:
        again.close()
