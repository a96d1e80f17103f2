"""One door: the same training request, given to the CLI, the HTTP API and the Train panel, makes the same run.

The request is plain data (TrainRequest.from_dict). Each front end gets it in its own form: command-line flags
(`train --dry-run --json` as a subprocess), a JSON body (a real FastAPI app), the panel's fields (its handler,
called as gradio would). The run folders they write must hold the same arguments, dataset and sample prompts, and
the same bad request must be refused with the same words by all three.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from fake_trainer_env import build_fake_trainer  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_cli import cli  # noqa: E402
from test_cli_train import make_project  # noqa: E402

from lib_lorakit import api  # noqa: E402
from lib_lorakit.errors import LorakitError  # noqa: E402
from lib_lorakit.host import StandaloneHost  # noqa: E402
from lib_lorakit.studio import Studio  # noqa: E402
from lib_lorakit.train.config import ARGS_FILE, DATASET_FILE, PROMPTS_FILE  # noqa: E402
from lib_lorakit.train.distributed import ACCELERATE_SCHEMA  # noqa: E402
from lib_lorakit.train.runner import Runs  # noqa: E402
from lib_lorakit.ui.train_panel import TrainPanel  # noqa: E402

PRESET = "style-sd15-lora"


def request(model: Path, **changes) -> dict:
    """The request every front end is given, as plain data."""
    data = {"preset": PRESET, "base_model": str(model), "output_name": "door",
            "overrides": {"max_train_steps": 40, "network_dim": 8, "learning_rate": 0.0002},
            "samples": ["a red cube", "a blue ball"], "without_trigger": False, "accept_missing_captions": False,
            "num_processes": 1, "gpu_ids": "0"}
    data.update(changes)
    return data


def by_cli(home: Path, data: dict):
    """`train PROJECT --dry-run --json` with the request's flags."""
    args = ["train", "art", "--preset", data["preset"], "--base-model", data["base_model"],
            "--output-name", data["output_name"], "--dry-run", "--json"]
    args += [a for k, v in data["overrides"].items() for a in ("--set", f"{k}={v}")]
    args += [a for p in data["samples"] for a in ("--sample", p)]
    args += ["--without-trigger" if data["without_trigger"] else "--no-without-trigger"]
    args += ["--accept-missing-captions"] if data["accept_missing_captions"] else []
    args += [a for f in ACCELERATE_SCHEMA.fields if f.name in data
             for a in (f"--{f.name.replace('_', '-')}", str(data[f.name]))]
    return cli(home, *args, check=False)


def by_api(client: TestClient, data: dict):
    return client.post("/train-style/v1/projects/art/train", json={**data, "dry_run": True})


def by_panel(panel: TrainPanel, data: dict):
    """The Train button with the panel's fields filled in as a user would: the options typed into the 'More
    options' box, the prompts one per line, the multi-GPU fields as gradio gives them (numbers as floats)."""
    text = "\n".join(f"{k}={v}" for k, v in data["overrides"].items())
    gpu = [float(data[f.name]) if f.type is int and f.name in data else data.get(f.name, f.default)
           for f in ACCELERATE_SCHEMA.fields]
    return panel.runs._train("art", data["preset"], None, data["base_model"], text, data["output_name"],
                        "\n".join(data["samples"]), data["without_trigger"], data["accept_missing_captions"], *gpu)


def run_files(run_dir: Path) -> dict[str, str]:
    """The run's TOMLs and prompts with the run's own folder (its id) taken out."""
    return {name: (run_dir / name).read_text().replace(str(run_dir), "<run>")
            for name in (ARGS_FILE, DATASET_FILE, PROMPTS_FILE)}


@pytest.fixture
def fronts(tmp_path, monkeypatch):
    """(home, model, API client, panel) on one projects home, with the fake trainer as the trainer."""
    monkeypatch.setenv("TRAIN_STYLE_TRAINER_PYTHON", str(build_fake_trainer(tmp_path / "trainer", delay=0.5)))
    # the fake trainer's stand-in sd-scripts folder: no submodule checkout needed (CI has none)
    monkeypatch.setenv("TRAIN_STYLE_SD_SCRIPTS", str(tmp_path / "trainer" / "sd-scripts"))
    home = tmp_path / "home"
    model = make_project(home, tmp_path)  # the model lies in tmp_path/models: the Host's models folder
    host = StandaloneHost(home=home, lora=tmp_path / "lora", models=tmp_path / "models")
    app = FastAPI()
    api.mount(app, host)
    studio = Studio(host)
    yield home, model, TestClient(app), TrainPanel(studio, project=None), studio
    for snap in studio.training().runs("art"):  # the panel's run is real (fake trainer): end it
        if snap.active:
            studio.training().stop("art", snap.id)
            studio.training().wait("art", snap.id, timeout=30)


def test_the_same_request_makes_the_same_run_through_all_three(fronts):
    home, model, client, panel, studio = fronts
    data = request(model)
    out = by_cli(home, data)
    assert out.returncode == 0, out.stdout + out.stderr
    cli_run = json.loads(out.stdout)["run"]
    res = by_api(client, data)
    assert res.status_code == 201, res.text
    api_run = res.json()["id"]
    by_panel(panel, data)
    runs = Runs(studio.project("art"))
    panel_run = next(s.id for s in runs.list() if s.id not in (cli_run, api_run))
    cli_files, api_files, panel_files = (run_files(runs.get(r).dir) for r in (cli_run, api_run, panel_run))
    assert cli_files == api_files == panel_files
    args = cli_files[ARGS_FILE]
    assert "max_train_steps = 40" in args and "network_dim = 8" in args and 'output_name = "door"' in args
    prompts = cli_files[PROMPTS_FILE]
    assert "a red cube" in prompts and "a blue ball" in prompts
    # without_trigger is off in all three: no prompt appears a second time without the trigger word
    assert prompts.count("a red cube") == 1
    argvs = [[a.replace(str(runs.get(r).dir), "<run>") for a in runs.launch(r)["argv"]]
             for r in (cli_run, api_run, panel_run)]
    assert argvs[0] == argvs[1] == argvs[2] and "--gpu_ids" in argvs[0]


def test_without_trigger_on_adds_the_twin_prompts_in_all_three(fronts):
    home, model, client, panel, studio = fronts
    data = request(model, without_trigger=True)
    cli_run = json.loads(by_cli(home, data).stdout)["run"]
    api_run = by_api(client, data).json()["id"]
    by_panel(panel, data)
    runs = Runs(studio.project("art"))
    panel_run = next(s.id for s in runs.list() if s.id not in (cli_run, api_run))
    for run in (cli_run, api_run, panel_run):
        assert (runs.get(run).dir / PROMPTS_FILE).read_text().count("a red cube") == 2


def test_the_same_bad_request_is_refused_with_the_same_words(fronts):
    home, model, client, panel, studio = fronts
    bad = request(model, overrides={"network_dim": 0, "max_train_steps": 40}, gpu_ids="0,1")
    out = by_cli(home, bad)
    assert out.returncode == 1
    cli_text = json.loads(out.stdout)["error"]
    res = by_api(client, bad)
    assert res.status_code == 400
    with pytest.raises(LorakitError) as caught:
        by_panel(panel, bad)
    assert cli_text == res.json()["detail"] == str(caught.value)
    assert cli_text.startswith("overrides.network_dim: expected an integer from 1 to 1024, got 0")
    assert "gpu_ids lists 2 GPU(s)" in cli_text
    assert studio.training().runs("art") == []  # nothing was written by any of them


def test_an_unknown_field_in_the_api_body_is_named(fronts):
    home, model, client, panel, studio = fronts
    res = client.post("/train-style/v1/projects/art/train/plan", json={**request(model), "learning_rat": 1})
    assert res.status_code == 400 and "learning_rat: not a field of a training request" in res.json()["detail"]
    res = client.post("/train-style/v1/projects/art/train/plan", json=[["preset", PRESET]])
    assert res.status_code == 400 and "expected an object" in res.json()["detail"]
