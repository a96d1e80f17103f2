"""A concept's rename carries its images' per-image state: import records, crop steps, direction and sort labels.

Before, the records stayed under the old name: the next derivation found no original and adopted the (cropped)
training copy as its own original, labels vanished, and re-importing the folder imported everything again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from lib_lorakit.crop.service import CropRequest
from lib_lorakit.direction.service import LabelRequest
from lib_lorakit.host import StandaloneHost
from lib_lorakit.studio import Studio


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def studio(tmp_path: Path) -> Studio:
    src = tmp_path / "pictures"
    src.mkdir()
    for i, size in enumerate(((96, 48), (48, 96))):
        Image.new("RGB", size, (40 + 80 * i, 90, 160)).save(src / f"p{i}.png")
    home = tmp_path / "home"
    host = StandaloneHost(home=home, lora=tmp_path / "lora", models=tmp_path / "models", extra_roots=[tmp_path])
    s = Studio(host)
    s.create_project("art")
    s.import_paths("art", [str(src)], concept="cats", repeats=5)
    return s


def test_crop_steps_labels_and_records_follow_a_renamed_concept(studio: Studio, tmp_path: Path):
    wide, tall = "dataset/5_cats/p0.png", "dataset/5_cats/p1.png"
    studio.crop.crop("art", CropRequest.from_dict({"mode": "letterbox", "images": [wide], "aspect": "1:1"}))
    studio.direction.label("art", LabelRequest.from_dict({"images": [tall], "label": "left"}))
    studio.sorter.add_classes("art", ["plain"])
    studio.sorter.label("art", "plain", [tall])
    fresh = studio.project("art").root / "dataset" / "5_cats" / "p1.png"
    before = sha(fresh)

    studio.rename_concept("art", "cats", "felines")

    moved = "dataset/5_felines/p0.png"
    steps = studio.crop.steps("art", moved)
    assert steps.crop is not None and steps.mode == "letterbox", "the letterbox must survive the rename"
    assert studio.direction.labels("art")["labels"] == {"dataset/5_felines/p1.png": "left"}
    assert studio.sorter.labels("art") == {"dataset/5_felines/p1.png": "plain"}
    # the original is still found: resetting gives back the imported copy, not the letterboxed one
    studio.crop.crop("art", CropRequest.from_dict({"mode": "reset", "images": [moved]}))
    copy = Image.open(studio.project("art").root / moved)
    assert copy.size == (96, 48)
    assert sha(studio.project("art").root / "dataset" / "5_felines" / "p1.png") == before
    # importing the same folder into the renamed concept adds nothing twice
    again = studio.import_paths("art", [str(tmp_path / "pictures")], concept="felines")
    assert not again.imported and len(list((studio.project("art").root / "dataset" / "5_felines").glob("*.png"))) == 2
