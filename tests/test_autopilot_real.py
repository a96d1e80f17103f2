"""The autopilot end to end with the real trainer and sd-scripts' gen_img.py at 64 px (opt-in; minutes on a CPU).

    TRAIN_STYLE_TRAINER_VENV=/path/to/trainer/venv   TRAIN_STYLE_SD15_DIR=/path/to/models   (see test_train_real.py)

A folder of captioned images → import → tag (nothing to tag: every image has its caption) → audit → plan → real
training of the random SD1.5 model, 2 epochs at 64 px → register → a tiny judge grid (both epochs × weights 0 and 1
× one off-dataset prompt and one caption, one seed, 2 sampling steps) made by the real gen_img.py, judged with the
perceptual descriptor and a tiny CLIP → the recommendation on the card. Skipped with the reason when a part is absent.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from lib_lorakit.autopilot.service import AutopilotRequest
from lib_lorakit.fsutil import read_json
from lib_lorakit.host import StandaloneHost
from lib_lorakit.studio import Studio
from lib_lorakit.train.environment import TrainerEnvironment

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("TRAIN_STYLE_TRAINER_VENV", "/nonexistent"))
MODELS = Path(os.environ.get("TRAIN_STYLE_SD15_DIR", "/nonexistent"))
TRAINER = TrainerEnvironment(VENV, ROOT / "sd-scripts")
pytestmark = pytest.mark.skipif(
    not (TRAINER.setup_complete() and (MODELS / "sd15-random.safetensors").is_file()
         and (ROOT / "sd-scripts" / "train_network.py").is_file() and (ROOT / "sd-scripts" / "gen_img.py").is_file()),
    reason="the real autopilot needs TRAIN_STYLE_TRAINER_VENV (a complete trainer setup), TRAIN_STYLE_SD15_DIR "
           "(tests/sd15_builder.py output) and the sd-scripts submodule")

TINY = {"max_train_epochs": 2, "resolution": 64, "enable_bucket": False, "network_dim": 4, "network_alpha": 2,
        "train_batch_size": 1, "optimizer_type": "AdamW", "mixed_precision": "no", "save_precision": "float",
        "save_every_n_epochs": 1, "gradient_checkpointing": False, "cache_latents": False,
        "max_data_loader_n_workers": 0, "sdpa": False, "xformers": False}


def squares(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, colour in enumerate(("red", "green", "blue")):
        im = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(im).rectangle((8 + 4 * i, 8, 40 + 4 * i, 56), fill=colour)
        im.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"zkstyle, a {colour} square")
    return folder


def tiny_clip(tmp: Path, models_dir: Path) -> str:
    from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

    folder = models_dir / "train-style" / "clip"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
    register_tiny_clip(folder)
    save_tiny_checkpoint(folder / "tiny.pt")
    return f"{folder / f'{TINY_MODEL}.json'}:{folder / 'tiny.pt'}"


def test_the_real_chain_trains_registers_judges_and_sets_the_card(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_STYLE_TRAINER_PYTHON", str(VENV / "bin" / "python"))
    monkeypatch.setenv("TRAIN_STYLE_SD_SCRIPTS", str(ROOT / "sd-scripts"))
    monkeypatch.setenv("TRAIN_STYLE_TOKENIZER_CACHE", str(MODELS / "tokenizers"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    src = squares(tmp_path / "src")
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "Lora", models=tmp_path / "models",
                          extra_roots=[src, MODELS])
    embedder = tiny_clip(tmp_path, tmp_path / "models")
    request = AutopilotRequest.from_dict({
        "folder": str(src), "preset": "style-sd15-lora", "base_model": str(MODELS / "sd15-random.safetensors"),
        "trigger": "zkstyle", "accept_warnings": True, "overrides": TINY,
        "judge": {"descriptor": "perceptual", "embedder": embedder, "weights": "1", "seeds": "1",
                  "caption_samples": 1, "width": 64, "height": 64, "steps": 2, "sampler": "Euler a",
                  "prompts": ["a cat riding a bicycle"]}})
    started = time.monotonic()
    record = Studio(host).autopilot.run("real", request, local_user=True)
    took = time.monotonic() - started
    times = {s["name"]: (s["started"], s["finished"]) for s in record["steps"]}
    print(f"real autopilot: {record['state']} in {took:.0f} s; steps {times}")
    assert record["state"] == "done", json.dumps(record, indent=1)[-4000:]
    steps = {s["name"]: s["result"] for s in record["steps"]}
    assert steps["import"]["imported"] == 3 and steps["tag"]["already"] == 3
    assert len(steps["train"]["files"]) == 2  # epoch 1 and the final file
    assert all(Path(r["lora"]).is_file() for r in steps["register"]["registered"])
    judge = read_json(tmp_path / "home" / "real" / "eval" / steps["judge"]["grid"] / "judge.json")
    assert judge["state"] == "done" and judge["descriptor"]["name"] == "perceptual"
    assert len(judge["cells"]) >= 2
    recommendation = steps["judge"]["recommendation"]
    if recommendation is None:  # random weights: the judge may find no cell worth recommending, and says why
        assert steps["card"].get("why_none") and record["steps"][-1]["state"] == "skipped"
    else:
        card = read_json(Path(steps["card"]["card"]))
        assert card["preferred weight"] == pytest.approx(float(recommendation["weight"]))
