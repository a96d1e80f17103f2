"""The judge's front ends: `python -m lib_lorakit judge …` as a subprocess (the grid made by tests/fake_gen_img.py
standing in for sd-scripts' gen_img.py in a fake trainer environment, tests/fake_trainer_env.py), and the HTTP API
through a real FastAPI app. Descriptor: the real perceptual one; CLIP: the tiny random-weight model
(tests/tiny_clip.py), so only the plumbing is checked here: the scores themselves are judged in test_judge_service.py
and test_judge_scores.py. `--max-copy-rate 1 --min-adherence 0` make every cell with weight above 0 pass, so the
recommendation is known: the strongest cell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_trainer_env import build_fake_trainer
from test_cli import ROOT
from test_gen_sd_scripts import SD1_KEYS, write_safetensors
from test_judge_service import HealthyGenerator, Setup

from lib_lorakit.fsutil import read_json
from lib_lorakit.host import StandaloneHost

HERE = Path(__file__).resolve().parent


def tiny_clip_spec(models: Path) -> str:
    from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

    folder = models / "train-style" / "clip"
    config = folder / f"{TINY_MODEL}.json"
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(TINY_CONFIG))
    register_tiny_clip(folder)
    weights = save_tiny_checkpoint(folder / "tiny.pt")
    return f"{config}:{weights}"


@pytest.fixture
def cli_setup(workspace, tmp_path, monkeypatch):
    s = Setup(workspace, tmp_path)
    python = build_fake_trainer(tmp_path / "trainer", delay=0.003)
    sd_scripts = tmp_path / "trainer" / "sd-scripts"
    (sd_scripts / "gen_img.py").write_text((HERE / "fake_gen_img.py").read_text())
    write_safetensors(s.host.models_dir() / "Stable-diffusion" / "base.safetensors", SD1_KEYS)
    s.embedder = tiny_clip_spec(s.host.models_dir())
    s.env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(tmp_path / "no-config.toml"),
             "TRAIN_STYLE_TRAINER_PYTHON": str(python), "TRAIN_STYLE_SD_SCRIPTS": str(sd_scripts),
             "FAKE_GEN_RECORD": str(tmp_path / "gen.jsonl")}
    s.env.pop("FAKE_GEN_MODE", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "lib_lorakit", "--home", str(s.host.home), "--models-dir",
                str(s.host.models_dir()), "--lora-dir", str(s.host.lora_dir()), *args]
        return subprocess.run(argv, env=s.env, capture_output=True, text=True, timeout=300)

    s.cli = cli
    return s


def test_the_cli_makes_the_grid_judges_it_and_writes_the_card(cli_setup):
    s = cli_setup
    out = s.cli("judge", "demo", s.run, "--descriptor", "perceptual", "--embedder", s.embedder, "--weights", "0.5,1",
                "--seeds", "3", "--caption-samples", "1", "--prompt", "a cat riding a bicycle", "--size", "64x64",
                "--steps", "2", "--epochs", "1,final", "--max-copy-rate", "1", "--min-adherence", "0", "--apply",
                "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    doc = json.loads(out.stdout)
    assert doc["state"] == "done" and doc["run"] == s.run and doc["descriptor"]["name"] == "perceptual"
    assert [c["weight"] for c in doc["cells"]] == ["0", "0.5", "1", "0", "0.5", "1"]
    assert {s_["prompt"] for c in doc["cells"] for s_ in c["samples"]} == {"zq, a cat riding a bicycle",
                                                                          "zq, a drawing of thing 0"}
    rec = doc["recommendation"]
    best = max((c for c in doc["cells"] if c["weight"] != "0"), key=lambda c: c["strength"])
    assert (rec["epoch"], rec["weight"]) == (best["epoch"], float(best["weight"]))
    card = read_json(Path(doc["applied"]["card"]))
    assert card["preferred weight"] == rec["weight"] and "Judge (style)" in card["notes"]
    on_disk = read_json(s.project.root / "eval" / doc["grid"] / "judge.json")
    assert {k: v for k, v in doc.items() if k != "applied"} == on_disk

    shown = s.cli("judge", "demo", "show", doc["grid"], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout) == on_disk
    listed = json.loads(s.cli("judge", "demo", "list", "--json").stdout)
    assert [g["grid"] for g in listed["judged"]] == [doc["grid"]]

    again = s.cli("judge", "demo", "grid", doc["grid"], "--goal", "character", "--descriptor", "perceptual",
                  "--embedder", s.embedder, "--max-copy-rate", "1", "--min-adherence", "0", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["recommendation"]["goal"] == "character"
    applied = s.cli("judge", "demo", "apply", doc["grid"], "--json")
    assert applied.returncode == 0, applied.stderr[-2000:]
    assert json.loads(applied.stdout)["weight"] == json.loads(again.stdout)["recommendation"]["weight"]
    human = s.cli("judge", "demo", "show", doc["grid"])
    assert human.returncode == 0 and "Recommended (character):" in human.stdout
    assert "Copying per epoch (perceptual, threshold" in human.stdout


def test_the_cli_says_what_is_wrong(cli_setup):
    s = cli_setup
    out = s.cli("judge", "demo", s.run, "--seeds", "one,two", "--weights", "heavy", "--json")
    assert out.returncode == 1
    error = json.loads(out.stdout)["error"]
    assert "seeds: expected whole numbers" in error and "weights: 'heavy'" in error
    missing = s.cli("judge", "demo", "show", "no-such-grid", "--json")
    assert missing.returncode == 1 and "No grid 'no-such-grid'" in json.loads(missing.stdout)["error"]
    no_id = s.cli("judge", "demo", "apply")
    assert no_id.returncode == 1 and "give the grid's ID" in no_id.stderr


# --- the HTTP API -------------------------------------------------------------------------------------------------

def wait_job(client, job_id: str) -> dict:
    for _ in range(1200):
        job = client.get(f"/train-style/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_the_api_judges_as_a_job_shows_lists_and_applies(workspace, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lorakit import api

    s = Setup(workspace, tmp_path)

    class GeneratingHost(StandaloneHost):
        def generator(self):
            return HealthyGenerator()

    host = GeneratingHost(home=s.host.home, lora=s.host.lora, models=s.host.models)
    spec = tiny_clip_spec(host.models_dir())
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    base = "/train-style/v1/projects/demo"
    body = {"run": s.run, "descriptor": "perceptual", "embedder": spec, "weights": "1", "seeds": "1",
            "caption_samples": 0, "prompts": ["a cat riding a bicycle"], "width": 64, "height": 64,
            "max_copy_rate": 1, "min_adherence": 0, "epochs": "last"}
    r = client.post(f"{base}/judge", json=body)
    assert r.status_code == 200, r.text
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "done" and job["kind"] == "judge", job
    grid = job["result"]["grid"]
    assert client.get(f"{base}/judge").json()["judged"][0]["grid"] == grid
    shown = client.get(f"{base}/eval/{grid}/judge").json()
    assert shown["state"] == "done" and shown["recommendation"]["weight"] == 1.0
    again = client.post(f"{base}/eval/{grid}/judge", json={k: v for k, v in body.items() if k != "run"})
    assert again.status_code == 200, again.text
    assert wait_job(client, again.json()["job"]["id"])["state"] == "done"
    card = client.post(f"{base}/eval/{grid}/judge/apply")
    assert card.status_code == 200, card.text
    assert read_json(Path(card.json()["card"]))["preferred weight"] == 1.0

    bad = client.post(f"{base}/judge", json={"goal": "beauty"})
    assert bad.status_code == 400 and "run: expected a run id" in bad.json()["detail"]
    assert "goal: expected one of style, character" in bad.json()["detail"]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "c.json").write_text("{}")
    refused = client.post(f"{base}/judge", json={**body, "embedder": f"{outside / 'c.json'}:{outside / 'w.pt'}"})
    assert refused.status_code == 403, refused.text
    assert client.get(f"{base}/eval/..%2F..%2Fproject.toml/judge").status_code == 404
    assert client.get(f"{base}/eval/{grid}x/judge").status_code == 404
    assert client.post("/train-style/v1/projects/nope/judge", json=body).status_code == 404


def test_a_standalone_grid_generates_with_the_runs_base_model_whatever_else_the_models_folder_holds(cli_setup):
    """sd-scripts' gen_img.py takes one checkpoint; with two in the models folder a grid without a checkpoint axis
    must use the one the run was trained on, not stop at "name the checkpoint"."""
    from lib_lorakit.fsutil import atomic_write_json

    s = cli_setup
    models = s.host.models_dir() / "Stable-diffusion"
    write_safetensors(models / "another.safetensors", SD1_KEYS)
    record = s.host.home / "demo" / "runs" / s.run / "run.json"
    data = read_json(record)
    data["meta"]["base_model"] = str(models / "base.safetensors")
    atomic_write_json(record, data)
    out = s.cli("grid", "demo", s.run, "--weights", "1", "--prompt", "a cat", "--size", "64x64", "--steps", "2",
                "--epochs", "final", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    calls = [json.loads(line) for line in Path(s.env["FAKE_GEN_RECORD"]).read_text().splitlines()]
    assert calls and {Path(c["args"]["ckpt"]).name for c in calls} == {"base.safetensors"}
