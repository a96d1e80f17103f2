"""Jobs keep their state on disk: progress, cancel, and what a restart finds."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from lib_lorakit.fsutil import atomic_write_json
from lib_lorakit.jobs import JobManager


def test_progress_result_and_files(tmp_path):
    jobs = JobManager(tmp_path / "jobs", min_write_interval=0)
    step, reached = threading.Event(), threading.Event()

    def work(progress, cancel):
        progress(1, 2, "first")
        reached.set()
        step.wait(5)
        progress(2, 2, "second")
        return {"answer": 42}

    job = jobs.start(kind="test", project="p", title="t", work=work)
    reached.wait(5)
    seen = JobManager(tmp_path / "jobs").get(job.id)  # another manager: reads the file, as a reloaded page would
    assert seen.state == "running" and seen.done == 1 and seen.message == "first"
    step.set()
    final = jobs.wait(job.id, 5)
    assert final.state == "done" and final.result == {"answer": 42} and final.done == 2


def test_cancel_stops_the_work(tmp_path):
    jobs = JobManager(tmp_path / "jobs")
    started = threading.Event()

    def work(progress, cancel):
        started.set()
        n = 0
        while not cancel.is_set() and n < 500:
            cancel.wait(0.01)
            n += 1
        return {"steps": n}

    job = jobs.start(kind="test", project="p", title="t", work=work)
    started.wait(5)
    jobs.cancel(job.id)
    final = jobs.wait(job.id, 5)
    assert final.state == "cancelled" and final.result["steps"] < 500


def test_a_failure_is_recorded_with_its_message(tmp_path):
    jobs = JobManager(tmp_path / "jobs")

    def work(progress, cancel):
        raise ValueError("boom")

    final = jobs.wait(jobs.start(kind="test", project="p", title="t", work=work).id, 5)
    assert final.state == "failed" and "boom" in final.error


def test_a_job_whose_process_died_is_reported_interrupted(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    atomic_write_json(tmp_path / "jobs" / "abc123.json",
                      {"id": "abc123", "kind": "import", "project": "p", "title": "Import", "state": "running",
                       "done": 3, "total": 10, "pid": pid, "started": "2026-01-01T00:00:00+00:00"})
    job = JobManager(tmp_path / "jobs").get("abc123")
    assert job.state == "interrupted" and "run it again" in job.error
    on_disk = json.loads((tmp_path / "jobs" / "abc123.json").read_text())
    assert on_disk["state"] == "interrupted"
    assert [j.id for j in JobManager(tmp_path / "jobs").list("p")] == ["abc123"]


def test_jobs_started_in_the_same_second_list_newest_first(tmp_path):
    jobs = JobManager(tmp_path / "jobs")
    ids = [jobs.start(kind="test", project="p", title=str(i), work=lambda p, c: {}).id for i in range(5)]
    for i in ids:
        jobs.wait(i, 5)
    assert [j.id for j in jobs.list("p")] == ids[::-1]
