"""The words shown for jobs and runs are made once, in Python, and travel in the JSON the page script polls."""

from __future__ import annotations

import json
import os
import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lib_lorakit import api
from lib_lorakit.display import duration, job_display, percent, run_display, time_left
from lib_lorakit.host import StandaloneHost
from lib_lorakit.jobs import JobState, job_manager
from lib_lorakit.studio import Studio
from lib_lorakit.train.runner import Runs
from lib_lorakit.ui.render import job_html
from lib_lorakit.ui.render_train import run_html

EVIL = '<img src=x onerror="alert(1)">'


@pytest.mark.parametrize("seconds, words", [(None, ""), (0, "about 0 s left"), (42.4, "about 42 s left"),
                                            (89, "about 1 min left"), (150, "about 2 min left"),
                                            (3569, "about 59 min left"), (3570, "about 1 h 00 min left"),
                                            (3725, "about 1 h 02 min left"), (-5, "about 0 s left")])
def test_time_left_reads_as_a_person_says_it(seconds, words):
    assert time_left(seconds) == words


@pytest.mark.parametrize("seconds, shown", [(None, "–"), (0, "0:00"), (65, "1:05"), (3599, "59:59"),
                                            (3600, "1:00:00"), (3725.9, "1:02:05")])
def test_duration(seconds, shown):
    assert duration(seconds) == shown


def test_percent_is_whole_and_stays_in_0_to_100():
    assert (percent(40, 120), percent(1, 3), percent(2, 3), percent(5, 0), percent(9, 4), percent(-1, 4)) == \
        (33, 33, 67, 0, 100, 0)


def test_a_training_run_says_its_epoch_steps_loss_and_time_left():
    shown = run_display("running", {"step": 40, "total": 120, "epoch": 2, "epochs": 6, "loss": 0.08123,
                                    "eta_s": 150})
    assert shown.state == "Training — epoch 2 of 6"
    assert shown.progress == "step 40/120 · 33 %"
    assert shown.eta == "about 2 min left"
    assert shown.percent == 33
    assert shown.text == "Training — epoch 2 of 6 · step 40/120 · 33 % · loss 0.0812 · about 2 min left"


def test_a_finished_run_has_a_full_bar_and_no_time_left():
    shown = run_display("succeeded", {"step": 118, "total": 120, "epoch": 6, "epochs": 6, "loss": 0.05,
                                      "eta_s": 3})
    assert (shown.state, shown.percent, shown.eta) == ("Finished", 100, "")
    assert shown.text == "Finished · epoch 6 of 6 · step 118/120 · 100 % · loss 0.0500"


def test_a_run_without_progress_says_only_its_state():
    assert run_display("queued", {}).to_dict() == {"state": "Queued", "progress": "", "eta": "", "percent": 0,
                                                   "text": "Queued"}
    assert run_display("stopped", {"step": 3, "total": 0}).text == "Stopped"
    assert run_display("something-new", {}).state == "something-new"  # a state we have no word for is shown as is


def test_job_words():
    job = JobState(id="a1", kind="import", project="p", title="Import 10 item(s) into p", state="running",
                   done=3, total=10, message="copying")
    assert job_display(job).text == "Import 10 item(s) into p: running — 3/10 · 30 % · copying"
    assert job_display(job).percent == 30
    job.state = "done"
    assert (job_display(job).text, job_display(job).percent) == ("Import 10 item(s) into p: done", 100)
    waiting = JobState(id="a2", kind="tag", project="p", title="Tagging", state="queued")
    assert (job_display(waiting).text, job_display(waiting).percent) == ("Tagging: waiting", 0)


def _client(tmp_path) -> tuple[TestClient, StandaloneHost]:
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models")
    app = FastAPI()
    api.mount(app, host)
    return TestClient(app), host


def test_the_jobs_json_carries_the_words_the_panel_draws(tmp_path):
    client, host = _client(tmp_path)
    manager = job_manager(host.projects_home())
    reached, release = threading.Event(), threading.Event()

    def work(progress, cancel):
        progress(7, 20, "tagging <b>x</b>")
        reached.set()
        release.wait(20)
        return {}

    manager.min_write_interval = 0
    job = manager.start(kind="tag", project="", title=EVIL, work=work)
    try:
        assert reached.wait(20)
        got = client.get(f"/train-style/v1/jobs/{job.id}").json()
        assert got["display"]["text"] == f"{EVIL}: running — 7/20 · 35 % · tagging <b>x</b>"
        assert got["display"]["percent"] == 35
        # the panel's first drawing says the same words, escaped
        html = job_html(manager.get(job.id))
        assert "<img" not in html and "<b>x" not in html
        assert "7/20 · 35 % · tagging &lt;b&gt;x&lt;/b&gt;" in html and 'style="width:35%"' in html
        assert [j["display"]["text"] for j in client.get("/train-style/v1/jobs").json()["jobs"]] == \
            [got["display"]["text"]]
        # the job's file holds its fields, not the words made from them
        assert "display" not in json.loads((host.projects_home() / ".jobs" / f"{job.id}.json").read_text())
    finally:
        release.set()
        manager.wait(job.id, 20)
    assert client.get(f"/train-style/v1/jobs/{job.id}").json()["display"] == {
        "state": "done", "progress": "", "eta": "", "percent": 100, "text": f"{EVIL}: done"}


def test_the_runs_json_carries_the_words_the_run_box_draws(tmp_path):
    client, host = _client(tmp_path)
    assert client.post("/train-style/v1/projects", json={"name": "demo"}).status_code == 201
    run_dir = host.projects_home() / "demo" / "runs" / "20260101-000000-demo"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({
        "id": run_dir.name, "project": "demo", "state": "running", "supervisor_pid": os.getpid(),
        "progress": {"step": 7, "total": 9, "epoch": 2, "epochs": 3, "loss": 0.125, "eta_s": 3725}, "meta": {}}))
    want = "Training — epoch 2 of 3 · step 7/9 · 78 % · loss 0.1250 · about 1 h 02 min left"
    one = client.get(f"/train-style/v1/projects/demo/runs/{run_dir.name}").json()
    assert one["display"] == {"state": "Training — epoch 2 of 3", "progress": "step 7/9 · 78 %",
                              "eta": "about 1 h 02 min left", "percent": 78, "text": want}
    assert client.get("/train-style/v1/projects/demo/runs").json()["runs"][0]["display"]["text"] == want
    html = run_html(Runs(Studio(host).project("demo")).get(run_dir.name))
    assert f'<p class="ts-run-text">{want}</p>' in html
    assert '<span class="ts-run-state">Training — epoch 2 of 3</span>' in html and 'style="width:78%"' in html

