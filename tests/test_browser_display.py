"""The page shows the server's words for a running training, exactly: headless Chromium, a real app process, the
fake trainer (tests/fake_trainer_env.py), the page's own polling of the runs API."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
from test_browser import CHROMIUM
from test_browser_train import app, page, pick, wait_state  # noqa: F401  (app and page: the fixtures)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

PROGRESS = {"step": 7, "total": 9, "epoch": 2, "epochs": 3, "loss": 0.125, "seconds_per_step": 2.0,
            "elapsed_s": 14, "eta_s": 3725}
WORDS = "Training — epoch 2 of 3 · step 7/9 · 78 % · loss 0.1250 · about 1 h 02 min left"


def server_words(url: str, run_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/train-style/v1/projects/demo/runs/{run_id}", timeout=5) as r:
        return json.load(r)["display"]


def page_words(pg) -> dict:
    box = pg.locator("#train_style_run")
    return {"text": box.locator(".ts-run-text").inner_text(), "state": box.locator(".ts-run-state").inner_text(),
            "percent": box.locator(".ts-fill").evaluate("e => e.style.width")}


def as_shown(display: dict) -> dict:
    return {"text": display["text"], "state": display["state"], "percent": f"{display['percent']}%"}


def write_progress(run_json: Path, progress: dict) -> None:
    """Change the progress in run.json the way the supervisor does (a whole new file, renamed over the old)."""
    data = json.loads(run_json.read_text())
    data["progress"] = progress
    tmp = run_json.with_suffix(".test-tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, run_json)


def test_the_page_shows_the_servers_words_for_a_running_training(app, page):  # noqa: F811
    url, home = app
    pick(page, "train_style_preset", "style-sd15-lora")
    pick(page, "train_style_base_model", "base.safetensors (SD1)")
    page.fill("#train_style_output_name input, #train_style_output_name textarea", "words-hang")
    page.click("#train_style_train")
    page.wait_for_function("() => document.querySelector('#train_style_run')?.dataset.runId?.endsWith('words-hang')",
                           timeout=20_000)
    wait_state(page, ("running",), timeout=60)  # queued → starting → running: the supervisor and trainer start
    run_id = page.locator("#train_style_run").get_attribute("data-run-id")
    try:
        # 1. while sd-scripts replays its log, what the page shows is what the server said
        page.locator("#train_style_run .ts-run-text", has_text="step").wait_for(timeout=20_000)
        deadline, seen, said = time.monotonic() + 30, {}, {}
        while time.monotonic() < deadline:
            seen, said = page_words(page), as_shown(server_words(url, run_id))
            if seen == said:
                break
            time.sleep(0.2)
        assert seen == said and seen["state"].startswith("Training — epoch "), (seen, said)
        # 2. the progress changes on the server only: the page's poller writes the server's new words, as they are
        run_json = home / "demo" / "runs" / run_id / "run.json"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and page_words(page)["text"] != WORDS:
            if json.loads(run_json.read_text()).get("progress") != PROGRESS:  # the supervisor wrote after us
                write_progress(run_json, PROGRESS)
            time.sleep(0.2)
        assert server_words(url, run_id)["text"] == WORDS
        assert page_words(page) == {"text": WORDS, "state": "Training — epoch 2 of 3", "percent": "78%"}
    finally:
        page.click("#train_style_stop")
        wait_state(page, ("stopped",), timeout=40)


def write_job(home: Path, **fields) -> None:
    """A job file as the app's job manager writes it; `pid` is this test's process, alive, so the app reports the
    job as running (it was started by another process)."""
    folder = home / ".jobs"
    folder.mkdir(exist_ok=True)
    job = {"id": JOB_ID, "kind": "import", "project": "demo", "title": "Import 20 item(s) into demo",
           "state": "running", "done": 0, "total": 20, "message": "", "result": None, "error": "",
           "pid": os.getpid(), "started": "2999-01-01T00:00:00.000000+00:00", "finished": "", **fields}
    tmp = folder / f"{JOB_ID}.test-tmp"
    tmp.write_text(json.dumps(job))
    os.replace(tmp, folder / f"{JOB_ID}.json")


JOB_ID = "d15a1a7e0b01"


def job_words(pg) -> dict:
    box = pg.locator("#train_style_job")
    return {"text": box.locator(".ts-job-text").inner_text(), "percent": box.locator(".ts-fill").evaluate(
        "e => e.style.width")}


def test_the_page_shows_the_servers_words_for_a_running_job(app, page):  # noqa: F811
    url, home = app
    write_job(home, done=7, message="copying <b>x</b>")
    page.goto(url)  # the Dataset panel draws the project's newest import job; the page script polls it
    page.wait_for_function("() => document.querySelector('#train_style_project input')?.value === 'demo'")
    page.wait_for_function(f"() => document.querySelector('#train_style_job')?.dataset.jobId === {JOB_ID!r}",
                           timeout=20_000)
    with urllib.request.urlopen(f"{url}/train-style/v1/jobs/{JOB_ID}", timeout=5) as r:
        said = json.load(r)["display"]
    assert said["text"] == "Import 20 item(s) into demo: running — 7/20 · 35 % · copying <b>x</b>"
    assert job_words(page) == {"text": said["text"], "percent": "35%"}
    # the job moves on: the page script writes the server's new words as they are
    write_job(home, done=15, message="hashing")
    page.wait_for_function("() => document.querySelector('#train_style_job .ts-job-text')?.textContent"
                           ".includes('15/20')", timeout=20_000)
    assert job_words(page) == {"text": "Import 20 item(s) into demo: running — 15/20 · 75 % · hashing",
                               "percent": "75%"}
    write_job(home, state="cancelled", done=15, message="cancelled", finished="2999-01-01T00:00:01.000000+00:00")
    page.wait_for_function("() => document.querySelector('#train_style_job')?.dataset.state === 'cancelled'",
                           timeout=20_000)
