"""A regularisation set made for real by sd-scripts' gen_img.py with the random SD1.5 model (opt-in; a minute or
two on a CPU). Needs TRAIN_STYLE_TRAINER_VENV (a complete trainer setup), TRAIN_STYLE_SD15_DIR
(tests/sd15_builder.py output) and the sd-scripts submodule; skipped with the reason where one is absent."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PIL import Image

from lib_lorakit.evaluate.reg import RegRequest
from lib_lorakit.host import StandaloneHost
from lib_lorakit.studio import Studio
from lib_lorakit.train.environment import TrainerEnvironment

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("TRAIN_STYLE_TRAINER_VENV", "/nonexistent"))
MODELS = Path(os.environ.get("TRAIN_STYLE_SD15_DIR", "/nonexistent"))
TRAINER = TrainerEnvironment(VENV, ROOT / "sd-scripts")
pytestmark = pytest.mark.skipif(
    not (TRAINER.setup_complete() and (MODELS / "sd15-random.safetensors").is_file()
         and (ROOT / "sd-scripts" / "gen_img.py").is_file()),
    reason="real generation needs TRAIN_STYLE_TRAINER_VENV (a complete trainer setup), TRAIN_STYLE_SD15_DIR "
           "(tests/sd15_builder.py output) and the sd-scripts submodule")


def test_two_reg_images_made_by_gen_img_at_64_px(tmp_path):
    gen_module = pytest.importorskip("lib_lorakit.evaluate.sd_scripts_gen")
    from lib_lorakit.evaluate.pnginfo import parse_infotext

    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "Lora", models=MODELS)
    studio = Studio(host)
    studio.create_project("demo", resolution=64, base_model=str(MODELS / "sd15-random.safetensors"))
    gen = gen_module.SdScriptsGenerator(host, trainer=TRAINER, tokenizer_cache_dir=MODELS / "tokenizers",
                                        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, local_user=True)
    request = RegRequest.from_dict({"class_name": "woman", "prompt": "1girl, solo", "count": 2, "steps": 2,
                                    "seed": 500, "negative": "lowres"})
    started = time.monotonic()
    report = studio.reg.generate("demo", request, generator=gen)
    print(f"real reg set: 2 images at 64 px in {time.monotonic() - started:.0f} s")
    files = sorted((studio.project("demo").root / "reg" / "1_woman").glob("*.png"))
    assert [m["image"] for m in report.made] == [f"reg/1_woman/woman_{i:05d}.png" for i in range(2)]
    assert len(files) == 2 and report.checkpoint.endswith("sd15-random.safetensors")
    pictures = []
    for i, f in enumerate(files):
        assert f.with_suffix(".txt").read_text(encoding="utf-8").strip() == "1girl, solo"
        with Image.open(f) as im:
            assert im.size == (64, 64)
            fields = parse_infotext(im.info["parameters"])
            pictures.append(im.convert("RGB").tobytes())
        assert fields["Seed"] == str(500 + i) and fields["Prompt"] == "1girl, solo"
        assert fields["Negative prompt"] == "lowres"
    assert pictures[0] != pictures[1]  # two seeds, two pictures
    # the set is complete: asked again, nothing is made and no model is loaded
    assert studio.reg.generate("demo", request, generator=gen).made == []
