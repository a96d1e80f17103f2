"""The autopilot with fakes: the fake trainer (tests/fake_trainer_env.py) replays a recorded sd-scripts run and writes
real small LoRAs; tests/fake_gen_img.py stands in for sd-scripts' gen_img.py; a tiny WD14 model tags; the judge
uses the perceptual descriptor and a tiny CLIP. Everything else is real: the project on disk, the supervisor and
trainer processes, the CLI as a subprocess that is killed mid-training, the HTTP API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_trainer_env import build_fake_trainer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from test_cli import ROOT
from test_gen_sd_scripts import SD1_KEYS, write_safetensors
from test_resume_states import write_state
from tiny_wd14 import build_tiny_wd14

from lib_lorakit import api
from lib_lorakit.autopilot.service import AutopilotRequest
from lib_lorakit.errors import PathNotAllowed
from lib_lorakit.fsutil import read_json
from lib_lorakit.host import StandaloneHost
from lib_lorakit.schema import InvalidSettings
from lib_lorakit.studio import Studio
from lib_lorakit.train.runner import Runs

HERE = Path(__file__).resolve().parent
PROJECT = "art"


class Setup:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.home, self.models, self.lora = tmp / "home", tmp / "models", tmp / "lora"
        self.src = tmp / "src"
        self.base = write_safetensors(self.models / "Stable-diffusion" / "base.safetensors", SD1_KEYS)
        # another checkpoint beside it: the judge must still generate with the one the LoRA was trained on
        write_safetensors(self.models / "Stable-diffusion" / "other.safetensors", SD1_KEYS, payload=b"other")
        build_tiny_wd14(self.models / "train-style" / "taggers" / "tiny")
        self.host = StandaloneHost(home=self.home, lora=self.lora, models=self.models, extra_roots=[self.src])
        self.studio = Studio(self.host)

    def folder(self, *, captions: dict[int, str], count: int = 3) -> Path:
        """`count` images, with the captions given beside them (the others untagged)."""
        self.src.mkdir(exist_ok=True)
        for i in range(count):
            Image.new("RGB", (96, 96), (70 * i, 120, 200 - 50 * i)).save(self.src / f"{i}.png")
            if i in captions:
                (self.src / f"{i}.txt").write_text(captions[i])
        return self.src

    def request(self, **changes) -> dict:
        data = {"folder": str(self.src), "preset": "style-sd15-lora", "base_model": str(self.base),
                "trigger": "zkstyle", "tag": {"model": "tiny"}, "overrides": {"max_train_epochs": 2},
                "judge": self.judge_settings()}
        return {**data, **changes}

    def judge_settings(self) -> dict:
        from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

        folder = self.models / "train-style" / "clip"  # the CLIP models' own folder: allowed to every caller
        config = folder / f"{TINY_MODEL}.json"
        if not config.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            config.write_text(json.dumps(TINY_CONFIG))
            register_tiny_clip(folder)
            save_tiny_checkpoint(folder / "tiny.pt")
        return {"descriptor": "perceptual", "embedder": f"{config}:{folder / 'tiny.pt'}",
                "weights": "1", "seeds": "1", "caption_samples": 1, "width": 64, "height": 64, "steps": 2,
                "prompts": ["a cat riding a bicycle"]}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(self.argv(*args), env=self.env(), capture_output=True, text=True, timeout=300)
        if check:
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "lib_lorakit", "--home", str(self.home), "--models-dir", str(self.models),
                "--lora-dir", str(self.lora), *args]

    def env(self) -> dict:
        return {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(self.home / "no-config.toml")}

    def runs(self) -> list:
        return Runs(self.studio.project(PROJECT)).list()


def fake_trainer(tmp: Path, monkeypatch, delay: float) -> None:
    python = build_fake_trainer(tmp / "trainer", delay=delay)
    sd_scripts = tmp / "trainer" / "sd-scripts"
    (sd_scripts / "gen_img.py").write_text((HERE / "fake_gen_img.py").read_text())
    monkeypatch.setenv("TRAIN_STYLE_TRAINER_PYTHON", str(python))
    monkeypatch.setenv("TRAIN_STYLE_SD_SCRIPTS", str(sd_scripts))
    monkeypatch.setenv("FAKE_GEN_RECORD", str(tmp / "gen.jsonl"))
    monkeypatch.delenv("FAKE_GEN_MODE", raising=False)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    fake_trainer(tmp_path, monkeypatch, delay=0.003)
    s = Setup(tmp_path)
    yield s
    for snap in s.runs() if (s.home / PROJECT).is_dir() else []:  # end any run a failing test left training
        if snap.active:
            s.studio.training().stop(PROJECT, snap.id)
            s.studio.training().wait(PROJECT, snap.id, timeout=30)


def run_chain(s: Setup, **changes) -> dict:
    return s.studio.autopilot.run(PROJECT, AutopilotRequest.from_dict(s.request(**changes)), local_user=True)


def states(record: dict) -> dict[str, str]:
    return {step["name"]: step["state"] for step in record["steps"]}


# --- the whole chain ------------------------------------------------------------------------------------------------

def test_the_cli_goes_from_a_folder_to_a_registered_lora_whose_card_carries_the_recommendation(setup):
    s = setup
    s.folder(captions={0: "zkstyle, a blue square", 1: "zkstyle, a teal square"})  # image 2 is tagged
    judge = [f"--judge-set={k}={v}" for k, v in s.judge_settings().items() if k != "prompts"]
    out = s.cli("autopilot", PROJECT, "--from", str(s.src), "--preset", "style-sd15-lora", "--base-model",
                str(s.base), "--trigger", "zkstyle", "--accept-warnings", "--tag-set", "model=tiny", "--set",
                "max_train_epochs=2", *judge, "--judge-prompt", "a cat riding a bicycle", "--json")
    record = json.loads(out.stdout)
    assert record["state"] == "done", record
    assert all(state in ("done", "skipped") for state in states(record).values())
    steps = {step["name"]: step["result"] for step in record["steps"]}
    assert steps["import"]["imported"] == 3 and steps["tag"]["tagged"] == 1 and steps["tag"]["already"] == 2
    assert "zkstyle" in s.studio.settings(PROJECT).trigger_words
    run = steps["train"]["run"]
    assert [snap.id for snap in s.runs()] == [run] and s.runs()[0].state == "succeeded"
    registered = [Path(r["lora"]) for r in steps["register"]["registered"]]
    assert registered and all(p.is_file() and str(p).startswith(str(s.lora)) for p in registered)
    grid = steps["judge"]["grid"]
    assert (s.home / PROJECT / "eval" / grid / "judge.json").is_file()
    generated = [json.loads(line) for line in (s.tmp / "gen.jsonl").read_text().splitlines()]
    assert generated and {Path(g["args"]["ckpt"]).name for g in generated} == {"base.safetensors"}
    recommendation = steps["judge"]["recommendation"]  # the card carries the judge's weight and its reasons
    assert recommendation and states(record)["card"] == "done"
    card = read_json(Path(steps["card"]["card"]))
    assert card["preferred weight"] == pytest.approx(float(recommendation["weight"])) == steps["card"]["weight"]
    assert grid in json.dumps(card) and recommendation["reasons"][0] in json.dumps(card, ensure_ascii=False)
    shown = s.cli("autopilot", PROJECT, "show").stdout
    assert f"run {run}" in shown and f"grid {grid}" in shown


# --- stops: the audit, pause and continue -----------------------------------------------------------------------

def test_audit_errors_stop_the_chain_with_the_findings_and_nothing_trains(setup):
    s = setup
    long = ", ".join(f"tag number {i} with words" for i in range(120))  # far past 225 CLIP tokens
    s.folder(captions={0: "zkstyle, a square", 1: long, 2: "zkstyle, a circle"})
    record = run_chain(s, accept_warnings=True)
    assert record["state"] == "failed" and record["current"] == "audit"
    audit = record["steps"][2]
    assert audit["state"] == "failed" and "OVERLONG_CAPTION" in audit["error"]
    assert [f["code"] for f in audit["result"]["errors"]] == ["OVERLONG_CAPTION"]
    assert audit["result"]["errors"][0]["images"] == ["dataset/1_art/1.png"]
    assert {states(record)[n] for n in ("plan", "train", "register", "judge", "card")} == {"pending"}
    assert s.runs() == []
    # the user fixes the caption; resume starts at the audit (import and tag are not done again)
    s.studio.captions.edit(PROJECT, "dataset/1_art/1.png", "zkstyle, a triangle")
    again = s.studio.autopilot.resume(PROJECT, record["id"], pause_after="plan", local_user=True)
    assert again["state"] == "paused" and states(again)["audit"] == "done" and states(again)["plan"] == "done"
    for i in (0, 1):
        assert again["steps"][i]["finished"] == record["steps"][i]["finished"]
    assert s.runs() == []


def test_warnings_stop_the_chain_unless_accepted(setup):
    s = setup
    s.folder(captions={0: "zkstyle, a square", 1: "zkstyle, a square", 2: "zkstyle, a square"})
    record = run_chain(s, pause_after="audit")
    assert record["state"] == "failed" and states(record)["audit"] == "failed"
    assert record["steps"][2]["result"]["warnings"] and "accept" in record["steps"][2]["error"]
    again = s.studio.autopilot.resume(PROJECT, record["id"], accept_warnings=True, local_user=True)
    assert again["state"] == "paused" and states(again)["audit"] == "done"
    assert again["request"]["accept_warnings"] is True


def test_pause_after_a_step_lets_the_user_edit_then_continue_goes_on(setup):
    s = setup
    s.folder(captions={0: "zkstyle, a square"})
    record = run_chain(s, pause_after="tag", accept_warnings=True)
    assert record["state"] == "paused" and record["current"] == "audit"
    assert states(record)["tag"] == "done" and record["steps"][1]["result"]["tagged"] == 2
    s.studio.captions.edit(PROJECT, "dataset/1_art/2.png", "zkstyle, edited by hand")
    shown = s.cli("autopilot", PROJECT, "continue", record["id"], "--pause-after", "register", "--json")
    after = json.loads(shown.stdout)
    assert after["state"] == "paused" and states(after)["register"] == "done" and states(after)["judge"] == "pending"
    assert after["steps"][1]["finished"] == record["steps"][1]["finished"]  # tagging was not done again
    assert s.studio.caption(PROJECT, "dataset/1_art/2.png").text == "zkstyle, edited by hand"
    assert len(s.runs()) == 1 and s.runs()[0].state == "succeeded"


def test_a_bad_setting_is_refused_by_name_before_anything_happens(setup):
    s = setup
    s.folder(captions={})
    with pytest.raises(InvalidSettings) as e:
        AutopilotRequest.from_dict(s.request(overrides={"network_dim": 0}, pause_after="later",
                                             judge={"weights": "heavy"}))
    text = str(e.value)
    assert "overrides.network_dim" in text and "pause_after" in text and "judge.weights" in text
    assert not (s.home / PROJECT).exists()


# --- a restart in the middle --------------------------------------------------------------------------------------

def wait_for(predicate, timeout: float = 60, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def chain_file(s: Setup) -> Path:
    return wait_for(lambda: next(iter((s.home / PROJECT / "autopilot").glob("*.json")), None)
                    if (s.home / PROJECT / "autopilot").is_dir() else None, what="the chain's record")


def test_killed_mid_training_then_resume_finishes_without_redoing_import_or_tag(tmp_path, monkeypatch):
    fake_trainer(tmp_path, monkeypatch, delay=0.05)  # ~15 s of training: time to kill it in the middle
    s = Setup(tmp_path)
    s.folder(captions={0: "zkstyle, a square"})
    proc = subprocess.Popen(s.argv("autopilot", PROJECT, "--from", str(s.src), "--preset", "style-sd15-lora",
                                   "--base-model", str(s.base), "--trigger", "zkstyle", "--accept-warnings",
                                   "--tag-set", "model=tiny", "--pause-after", "register", "--json"),
                            env=s.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        path = chain_file(s)
        run_id = wait_for(lambda: (read_json(path) or {}).get("steps", [{}] * 5)[4].get("result", {}).get("run"),
                          what="the run's id in the record")
        run_json = s.home / PROJECT / "runs" / run_id / "run.json"
        wait_for(lambda: (read_json(run_json) or {}).get("state") == "running", what="training")
        before = read_json(path)
    finally:  # the whole machine stops: the CLI, the run's supervisor and the trainer, all at once
        proc.kill()
        proc.wait()
    data = read_json(run_json)
    os.kill(data["supervisor_pid"], signal.SIGKILL)
    os.killpg(data["pid"], signal.SIGKILL)
    shown = json.loads(s.cli("autopilot", PROJECT, "show", "--json").stdout)
    assert shown["state"] == "interrupted" and states(shown)["train"] == "interrupted"
    assert s.studio.training().run(PROJECT, run_id).state == "interrupted"
    # the run saved a complete state before the stop (the fake trainer writes only train_state.json)
    output_name = Runs(s.studio.project(PROJECT)).launch(run_id)["output_name"]
    write_state(s.home / PROJECT / "runs" / run_id / f"{output_name}-step00000001-state", 1)

    out = s.cli("autopilot", PROJECT, "resume", "--json")
    after = json.loads(out.stdout)
    assert after["state"] == "paused" and states(after)["register"] == "done", after
    for i, name in enumerate(("import", "tag", "audit", "plan")):  # finished before the kill: not done again
        assert after["steps"][i]["finished"] == before["steps"][i]["finished"] and states(after)[name] == "done"
    train = after["steps"][4]["result"]
    assert train["run"] == run_id and train["resumed"] == 1  # the same run, resumed through the TrainingDoor
    snap = s.studio.training().run(PROJECT, run_id)
    assert snap.state == "succeeded" and snap.meta.get("resumed_from") == f"{output_name}-step00000001-state"
    assert [r.id for r in s.runs()] == [run_id]
    assert len(list((s.home / PROJECT / "dataset").rglob("*.png"))) == 3  # imported once


def test_a_cancel_while_judging_then_resume_finishes_the_same_grid(setup, monkeypatch):
    s = setup
    s.folder(captions={0: "zkstyle, a square", 1: "zkstyle, a circle", 2: "zkstyle, a line"})
    monkeypatch.setenv("FAKE_GEN_MODE", "hang")  # gen_img.py makes one image, then waits to be stopped
    record, job = s.studio.autopilot.start(PROJECT, AutopilotRequest.from_dict(s.request(accept_warnings=True)))
    wait_for(lambda: (s.tmp / "gen.jsonl").is_file(), what="the judge's generator")
    s.studio.jobs.cancel(job.id)
    assert s.studio.jobs.wait(job.id, timeout=60).state == "cancelled"
    cancelled = s.studio.autopilot.show(PROJECT, record["id"])
    assert cancelled["state"] == "cancelled" and states(cancelled)["judge"] == "cancelled"
    (grid,) = [p.name for p in (s.home / PROJECT / "eval").iterdir()]
    monkeypatch.delenv("FAKE_GEN_MODE")
    done = s.studio.autopilot.resume(PROJECT, record["id"])
    assert done["state"] == "done" and done["steps"][6]["result"]["grid"] == grid
    assert [p.name for p in (s.home / PROJECT / "eval").iterdir()] == [grid]  # finished, not made again
    assert len(s.runs()) == 1


# --- the API ------------------------------------------------------------------------------------------------------

def test_the_api_runs_the_chain_as_a_job_and_confines_the_folder(setup):
    s = setup
    s.folder(captions={0: "zkstyle, a square"})
    app = FastAPI()
    api.mount(app, s.host)
    client = TestClient(app)
    base = f"/train-style/v1/projects/{PROJECT}/autopilot"
    outside = client.post(base, json=s.request(folder=str(s.tmp / "models")))
    assert outside.status_code == 403 and not (s.home / PROJECT).exists()
    bad = client.post(base, json=s.request(overrides={"network_dim": 0}))
    assert bad.status_code == 400 and "overrides.network_dim" in bad.text
    res = client.post(base, json=s.request(pause_after="register", accept_warnings=True))
    assert res.status_code == 201, res.text
    chain, job = res.json()["chain"], res.json()["job"]
    s.studio.jobs.wait(job["id"], timeout=120)
    record = client.get(f"{base}/{chain['id']}").json()
    assert record["state"] == "paused" and record["job"] == job["id"] and states(record)["register"] == "done"
    assert [c["id"] for c in client.get(base).json()["chains"]] == [chain["id"]]
    again = client.post(f"{base}/{chain['id']}/resume", json={"pause_after": "nope"})
    assert again.status_code == 400 and "pause_after" in again.text
    assert client.get(f"{base}/0123456789ab").status_code == 404


def test_a_folder_outside_the_allowed_ones_is_refused_to_the_tab_and_api_caller(setup):
    s = setup
    s.folder(captions={})
    with pytest.raises(PathNotAllowed):
        s.studio.autopilot.start(PROJECT, AutopilotRequest.from_dict(s.request(folder="/etc")))
    judge = {**s.judge_settings(), "embedder": f"{s.tmp / 'elsewhere' / 'clip.json'}:{s.tmp / 'elsewhere' / 'w.pt'}"}
    with pytest.raises(PathNotAllowed):  # the judge's model files too: refused before anything is imported
        s.studio.autopilot.start(PROJECT, AutopilotRequest.from_dict(s.request(judge=judge)))
    assert not (s.home / PROJECT).exists()


def test_the_panel_shows_a_hostile_folder_name_and_error_as_text(setup):
    from lib_lorakit.ui.autopilot_panel import steps_html

    s = setup
    hostile = s.src / "<img src=x onerror=alert(1)>"
    hostile.mkdir(parents=True)
    (hostile / "<b>x.png").write_bytes(b"<script>not an image</script>")
    record = run_chain(s, folder=str(hostile))
    html = steps_html(record)
    assert record["state"] == "failed" and "<b>x.png" in json.dumps(record)  # skipped, with its reason
    assert "<img src=x" not in html and "<b>" not in html.replace("<b>failed</b>", "") and "&lt;" in html
    (s.src / "empty").mkdir()
    empty = run_chain(s, folder=str(s.src / "empty"))  # nothing to import: the chain stops and says why, as text
    assert empty["state"] == "failed" and "no image files were found" in empty["error"]
    assert "no image files were found" in steps_html(empty)
