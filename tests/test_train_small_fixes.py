"""Small things a user hits (issue 9, item 10, the training side): a damaged checkpoint header keeps its reason, a
sample prompt that already holds the trigger word gets it once and its twin loses it, and what the queue and the
jobs drop is logged."""

from __future__ import annotations

import json
import logging
import struct

from test_api import make_client
from test_cli import cli
from test_host import TEXT_ENCODERS, write_safetensors
from test_security_train import make_project

from lib_lorakit.host import StandaloneHost, read_checkpoint_arch
from lib_lorakit.jobs import JobManager
from lib_lorakit.train.config import build_sample_prompts
from lib_lorakit.train.queue import TrainQueue

API = "/train-style/v1"
SD1 = ["model.diffusion_model.out.0.weight", TEXT_ENCODERS["SD1"]]


def test_a_damaged_checkpoint_says_what_is_wrong_in_the_list_and_the_plan(tmp_path):
    client, host = make_client(tmp_path)
    make_project(host.projects_home())
    models = tmp_path / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    write_safetensors(models / "good.safetensors", SD1)
    whole = (models / "good.safetensors").read_bytes()
    (models / "cut.safetensors").write_bytes(whole[:40])  # a download that stopped early
    raw = b"{not json"
    (models / "garbled.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    found = {c.name: c for c in StandaloneHost(home=tmp_path / "home", lora=tmp_path / "l",
                                               models=tmp_path / "models").checkpoints()}
    assert found["good.safetensors"].arch == "SD1" and found["good.safetensors"].problem == ""
    assert found["cut.safetensors"].arch == "Unknown"
    cut = found["cut.safetensors"].problem
    assert "header length says" in cut and "32 after it" in cut
    assert "not valid JSON" in found["garbled.safetensors"].problem
    assert read_checkpoint_arch(tmp_path / "none.safetensors").problem.endswith("No such file or directory.")
    for name, reason in (("cut.safetensors", "header length says"), ("garbled.safetensors", "not valid JSON")):
        r = client.post(f"{API}/projects/demo/train/plan",
                        json={"preset": "style-sd15-lora", "base_model": str(models / name), "dry_run": True})
        assert r.status_code == 200, r.text
        damaged = [f for f in r.json()["findings"] if f["code"] == "BASE_MODEL_DAMAGED"]
        assert damaged and damaged[0]["severity"] == "error" and reason in damaged[0]["message"], r.json()


def test_a_prompt_holding_the_trigger_gets_it_once_and_its_twin_loses_it(tmp_path):
    home = tmp_path / "home"
    make_project(home)  # trigger word zkstyle
    model = tmp_path / "models" / "base.safetensors"
    model.parent.mkdir()
    write_safetensors(model, SD1)
    out = cli(home, "train", "demo", "--preset", "style-sd15-lora", "--base-model", str(model), "--dry-run", "--json",
              "--sample", "zkstyle, a cat", "--sample", "a dog in ZKSTYLE style", "--sample", "a bird")
    run = json.loads(out.stdout)["run"]
    lines = (home / "demo" / "runs" / run / "sample_prompts.txt").read_text().splitlines()
    prompts = [line.split(" --")[0] for line in lines]
    assert prompts == ["zkstyle, a cat", "a cat", "a dog in ZKSTYLE style", "a dog in style", "zkstyle, a bird",
                       "a bird"]


def test_twins_of_trigger_only_and_multi_word_prompts():
    made = build_sample_prompts(["zqxstyle", "zqxstyles, a cat", "a cat, by zqx artist"], ["zqxstyle", "zqx artist"],
                                width=64, height=64, seed=1)
    assert [(p.prompt, p.with_trigger) for p in made] == [
        ("zqx artist, zqxstyle", True),  # only the trigger: no empty twin is drawn
        ("zqxstyle, zqx artist, zqxstyles, a cat", True), ("zqxstyles, a cat", False),  # a longer word is no trigger
        ("zqxstyle, a cat, by zqx artist", True), ("a cat, by", False)]


def test_what_the_queue_drops_is_logged(tmp_path, caplog):
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "l", models=tmp_path / "m")
    make_project(host.projects_home())
    queue = TrainQueue(host, unload_model=False)
    queue.add("demo", "20260101-000000-gone")
    queue.add("nosuchproject", "r1")
    with caplog.at_level(logging.WARNING, logger="lib_lorakit.train.queue"):
        assert queue.tick() is None
    text = caplog.text
    assert "dropped run 20260101-000000-gone of demo" in text and "dropped run r1 of nosuchproject" in text
    assert queue.entries() == []


def test_a_damaged_job_file_is_logged_and_hides_no_other_job(tmp_path, caplog):
    jobs = JobManager(tmp_path / "jobs")
    job = jobs.start(kind="k", project="p", title="t", work=lambda progress, cancel: {})
    jobs.wait(job.id)
    (tmp_path / "jobs" / "aaaa.json").write_text("{broken")
    (tmp_path / "jobs" / "bbbb.json").write_text(json.dumps({"id": "bbbb", "unexpected": 1}))
    with caplog.at_level(logging.WARNING, logger="lib_lorakit.jobs"):
        assert [j.id for j in jobs.list()] == [job.id]
    assert "aaaa.json" in caplog.text and "bbbb.json" in caplog.text
