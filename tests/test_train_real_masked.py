"""Real sd-scripts training on a letterboxed image with its padding masked out of the loss (opt-in; a minute or two
on a CPU, ~7 GB of memory).

Same requirements as tests/test_train_real.py (TRAIN_STYLE_TRAINER_VENV, TRAIN_STYLE_SD15_DIR, the sd-scripts
submodule); skipped with the reason where absent. What it checks: a padded RGBA copy trains to a LoRA, the run's
dataset TOML sets `alpha_mask` on its subset, and sd-scripts itself reports the subset as alpha-masked.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from test_train_real import pytestmark, request, run_queue, service  # noqa: F401 (fixture and skip mark)

from lib_lorakit.crop.service import CropRequest, run_crop
from lib_lorakit.tomlio import tomllib


def test_a_letterboxed_image_trains_with_its_padding_masked(service, squares_project):  # noqa: F811
    project = squares_project
    folder = project.concept("demo").folder
    Image.new("RGB", (64, 32), (200, 200, 30)).save(folder / "wide.png")
    (folder / "wide.txt").write_text("zkstyle, yellow band")
    report = run_crop(project, CropRequest.from_dict({"mode": "letterbox", "images": ["dataset/1_demo/wide.png"],
                                                      "fill": "white"}))
    padded = report.changed[0]
    assert padded.masked and padded.size == (64, 64)
    alpha = np.asarray(Image.open(project.root / padded.image))[..., 3]
    assert (alpha[:16] == 0).all() and (alpha[16:48] == 255).all() and (alpha[48:] == 0).all()
    req = request()
    plan = service.plan(project, req)
    assert not plan.blocked, plan.findings
    snap = service.create_run(project, req)
    dataset = tomllib.loads((snap.dir / "dataset.toml").read_text())
    assert dataset["datasets"][0]["subsets"][0]["alpha_mask"] is True
    final = run_queue(service, project, snap.id)
    assert final.state == "succeeded", (final.error, final.log_tail[-15:])
    assert "demo.safetensors" in final.files and final.progress["step"] == 4
    log = (snap.dir / "train.log").read_text(errors="replace")
    assert "alpha_mask: True" in log  # sd-scripts' own account of the subset it trained
