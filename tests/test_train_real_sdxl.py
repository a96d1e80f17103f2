"""Real SDXL LoRA training through Train Style with the style-sdxl-lora and style-pony-lora presets (opt-in; 3–7 min
and ~15 GB of RAM each on a CPU).

Needs the trainer environment and a random-weight, full-size SDXL model:

    TRAIN_STYLE_TRAINER_VENV=/path/to/trainer/venv   (made by `python -m lib_lorakit trainer setup`)
    TRAIN_STYLE_SDXL_DIR=/path/to/models             (holds sdxl-random.safetensors and tokenizers/ with both CLIP
                                                      tokenizers, made by `<trainer python> tests/sdxl_builder.py DIR`)

Skipped with the reason when either is absent (as in CI), or when the machine has too little free memory for the
fp32 SDXL that sd-scripts loads on a CPU. What it checks: sdxl_train_network.py trains a U-Net-only LoRA from a
project's images and captions with the preset (gradient checkpointing, no-half VAE), with the text encoders' outputs
cached; the step file, the sample and the final LoRA appear; the LoRA says it is for SDXL and holds no text-encoder
weights; registration writes an SDXL card; Pony's sample prompts start with its score tags. It prints the run's time
and the trainer's peak memory. Measured on 2 shared cores: 147–438 s a run (17–78 s a step, by load),
MemAvailable down by 13.5–15.6 GB, the trainer's peak RSS 17–21 GB (it counts the memory-mapped 6.9 GB model file,
which the kernel can drop).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lib_lorakit.host import StandaloneHost
from lib_lorakit.results.lora_info import read_header, read_lora_info
from lib_lorakit.train.config import SampleSettings
from lib_lorakit.train.environment import TrainerEnvironment
from lib_lorakit.train.queue import TrainQueue
from lib_lorakit.train.runner import Runs
from lib_lorakit.train.service import TrainingService, TrainRequest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("TRAIN_STYLE_TRAINER_VENV", "/nonexistent"))
MODELS = Path(os.environ.get("TRAIN_STYLE_SDXL_DIR", "/nonexistent"))
MODEL = MODELS / "sdxl-random.safetensors"
TRAINER = TrainerEnvironment(VENV, ROOT / "sd-scripts")
NEEDED_GB = 18  # measured: a run takes 13.5–15.6 GB (fp32 U-Net 10.3 GB, text encoders 3.3 GB, VAE, LoRA, optimizer)
pytestmark = pytest.mark.skipif(
    not (TRAINER.setup_complete() and MODEL.is_file() and (ROOT / "sd-scripts" / "sdxl_train_network.py").is_file()),
    reason="real SDXL training needs TRAIN_STYLE_TRAINER_VENV (a complete trainer setup), TRAIN_STYLE_SDXL_DIR "
           "(tests/sdxl_builder.py output) and the sd-scripts submodule")

TINY = {"max_train_steps": 3, "resolution": 64, "enable_bucket": False, "network_dim": 4, "network_alpha": 2,
        "train_batch_size": 1, "optimizer_type": "AdamW", "mixed_precision": "no", "save_precision": "float",
        "save_every_n_steps": 2, "sample_every_n_epochs": None, "sample_every_n_steps": 3,
        "shuffle_caption": False,  # sd-scripts refuses shuffled captions with cached text-encoder outputs
        "max_data_loader_n_workers": 0, "sdpa": False, "xformers": False}


def available_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def trainer_rss_gb() -> float:
    """Resident memory of the running sdxl_train_network.py processes (Linux /proc; 0 elsewhere)."""
    total = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"sdxl_train_network.py" in (proc / "cmdline").read_bytes():
                total += int((proc / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    return total / 2**30


@pytest.fixture
def service(workspace):
    free = available_gb()
    if free is not None and free < NEEDED_GB:
        pytest.skip(f"real SDXL training needs ~{NEEDED_GB} GB of free memory on a CPU; {free:.1f} GB available")
    host = StandaloneHost(home=workspace.home, lora=workspace.home.parent / "Lora", models=MODELS)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return TrainingService(host, trainer=TRAINER, tokenizer_cache_dir=MODELS / "tokenizers", env=env)


@pytest.fixture
def project(squares_project):
    return squares_project


def run_queue(service, project, run_id: str, timeout: float = 1800):
    """Tick the queue until the run ends; returns (final snapshot, seconds, trainer's peak RSS in GB)."""
    queue, runs = TrainQueue(service.host), Runs(project)
    started, peak = time.monotonic(), 0.0
    while time.monotonic() - started < timeout:
        queue.tick()
        peak = max(peak, trainer_rss_gb())
        snap = runs.get(run_id)
        if snap.state not in ("queued", "starting", "running"):
            return snap, time.monotonic() - started, peak
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish: {runs.get(run_id)}")


@pytest.mark.parametrize("preset", ["style-sdxl-lora", "style-pony-lora"])
def test_sdxl_lora_trains(service, project, preset):
    req = TrainRequest(project="demo", preset=preset, base_model=str(MODEL), overrides=TINY,
                       samples=SampleSettings(steps=2), output_name="demo",
                       extra_args={"cache_text_encoder_outputs": True})
    plan = service.plan(project, req)
    assert not plan.blocked, plan.findings
    snap = service.create_run(project, req)
    final, seconds, peak = run_queue(service, project, snap.id)
    print(f"{preset}, 3 steps at 64 px: {seconds:.0f} s, trainer peak RSS {peak:.1f} GB")
    assert final.state == "succeeded", (final.error, final.log_tail[-15:])
    assert {"demo.safetensors", "demo-step00000002.safetensors"} <= set(final.files)
    assert final.progress["step"] == final.progress["total"] == 3 and final.samples
    prompts = (final.dir / "sample_prompts.txt").read_text().splitlines()
    lead = "score_9, score_8_up, score_7_up, " if preset == "style-pony-lora" else ""
    assert prompts and all(p.startswith(f"{lead}zkstyle, demo") or p.startswith(f"{lead}demo") for p in prompts)
    argv = json.loads((final.dir / "launch.json").read_text())["argv"]
    assert any(a.endswith("sdxl_train_network.py") for a in argv)
    assert "--cache_text_encoder_outputs" in argv or "cache_text_encoder_outputs = true" in (
        final.dir / "args.toml").read_text()
    info = read_lora_info(final.dir / "demo.safetensors")
    assert info.base_model == "sdxl_base_v1-0" and info.dim == 4
    assert info.tag_frequency == {"1_demo": {"zkstyle": 3, "red square": 1, "green circle": 1, "blue triangle": 1}}
    keys = [k for k in read_header(final.dir / "demo.safetensors")[0] if k != "__metadata__"]
    assert keys and all(k.startswith("lora_unet_") for k in keys)  # network_train_unet_only: no text encoder
    cards = {d.lora.name: d for d in service.register(project, snap.id)}
    card = json.loads(cards["demo.safetensors"].card.read_text())
    assert card["activation text"] == "zkstyle" and card["sd version"] == "SDXL"
