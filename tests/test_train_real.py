"""Real sd-scripts training through Train Style, end to end (opt-in; minutes on a CPU).

Needs the trainer environment and a random-weight SD1.5 model:

    TRAIN_STYLE_TRAINER_VENV=/path/to/trainer/venv      (made by `python -m lib_lorakit trainer setup`)
    TRAIN_STYLE_SD15_DIR=/path/to/models                (holds sd15-random.safetensors and tokenizers/, made by
                                                         `<trainer python> tests/sd15_builder.py DIR`)

Skipped with the reason when either is absent (as in CI). What it checks: a LoRA is trained from a project's
images and captions, step files and samples appear, metadata carries our captions' tags, registration writes
the cards; a stopped run resumes from its saved state.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image

from lib_lorakit.host import StandaloneHost
from lib_lorakit.results.lora_info import read_lora_info
from lib_lorakit.train.config import SampleSettings
from lib_lorakit.train.environment import TrainerEnvironment
from lib_lorakit.train.queue import TrainQueue
from lib_lorakit.train.runner import Runs
from lib_lorakit.train.service import TrainingService, TrainRequest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("TRAIN_STYLE_TRAINER_VENV", "/nonexistent"))
MODELS = Path(os.environ.get("TRAIN_STYLE_SD15_DIR", "/nonexistent"))
TRAINER = TrainerEnvironment(VENV, ROOT / "sd-scripts")
pytestmark = pytest.mark.skipif(
    not (TRAINER.setup_complete() and (MODELS / "sd15-random.safetensors").is_file()
         and (ROOT / "sd-scripts" / "train_network.py").is_file()),
    reason="real training needs TRAIN_STYLE_TRAINER_VENV (a complete trainer setup), TRAIN_STYLE_SD15_DIR "
           "(tests/sd15_builder.py output) and the sd-scripts submodule")

TINY = {"max_train_steps": 4, "resolution": 64, "enable_bucket": False, "network_dim": 4, "network_alpha": 2,
        "train_batch_size": 1, "optimizer_type": "AdamW", "mixed_precision": "no", "save_precision": "float",
        "save_every_n_steps": 2, "save_state": True, "sample_every_n_steps": 2, "sample_sampler": "euler_a",
        "gradient_checkpointing": False, "cache_latents": False, "max_data_loader_n_workers": 0, "sdpa": False,
        "xformers": False}


@pytest.fixture
def service(workspace):
    host = StandaloneHost(home=workspace.home, lora=workspace.home.parent / "Lora", models=MODELS)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return TrainingService(host, trainer=TRAINER, tokenizer_cache_dir=MODELS / "tokenizers", env=env)


@pytest.fixture
def project(workspace):
    project = workspace.create("demo", trigger_words=("zkstyle",))
    concept = project.add_concept("demo", 1)
    for name, colour, caption in (("red", (220, 30, 30), "red square"), ("green", (30, 200, 30), "green circle"),
                                  ("blue", (30, 30, 220), "blue triangle")):
        Image.new("RGB", (64, 64), colour).save(concept.folder / f"{name}.png")
        (concept.folder / f"{name}.txt").write_text(f"zkstyle, {caption}")
    return project


def run_queue(service, project, run_id: str, stop_at_step: int | None = None, timeout: float = 900):
    queue = TrainQueue(service.host)
    deadline = time.monotonic() + timeout
    runs = Runs(project)
    while time.monotonic() < deadline:
        queue.tick()
        snap = runs.get(run_id)
        if stop_at_step and snap.state == "running" and (snap.progress.get("step") or 0) >= stop_at_step:
            runs.stop(run_id)
            stop_at_step = None
        if snap.state not in ("queued", "starting", "running"):
            return snap
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish: {runs.get(run_id)}")


def request(**over) -> TrainRequest:
    return TrainRequest(project="demo", preset="style-sd15-lora", base_model=str(MODELS / "sd15-random.safetensors"),
                        overrides={**TINY, **over}, samples=SampleSettings(steps=2), output_name="demo")


def test_train_register_and_read_back(service, project):
    plan = service.plan(project, request())
    assert not plan.blocked, plan.findings
    snap = service.create_run(project, request())
    final = run_queue(service, project, snap.id)
    assert final.state == "succeeded", (final.error, final.log_tail[-15:])
    assert {"demo.safetensors", "demo-step00000002.safetensors"} <= set(final.files)
    assert final.progress["step"] == final.progress["total"] == 4 and final.samples
    info = read_lora_info(final.dir / "demo.safetensors")
    assert info.tag_frequency == {"1_demo": {"zkstyle": 3, "red square": 1, "green circle": 1, "blue triangle": 1}}
    assert info.dim == 4 and info.base_model == "sd_v1"
    done = service.register(project, snap.id)
    cards = {d.lora.name: d for d in done}
    assert set(cards) == set(final.files)
    import json

    card = json.loads(cards["demo.safetensors"].card.read_text())
    assert card["activation text"] == "zkstyle" and card["sd version"] == "SD1"


def test_stop_then_resume_from_the_saved_state(service, project):
    snap = service.create_run(project, request())
    stopped = run_queue(service, project, snap.id, stop_at_step=3)
    assert stopped.state == "stopped" and "demo-step00000002.safetensors" in stopped.files
    service.resume(project, snap.id)
    final = run_queue(service, project, snap.id)
    assert final.state == "succeeded", (final.error, final.log_tail[-15:])
    assert "demo.safetensors" in final.files
    log = (final.dir / "train.log").read_text(errors="replace")
    assert "resume training from local state" in log and "skipping" in log  # continued, not restarted
    assert final.progress["step"] >= 3
