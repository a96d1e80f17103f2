"""The Crop panel in headless Chromium, on a real server process: three imported images of different shapes, one a
tall portrait whose head sd-scripts' centre crop would cut (a head detector in the models store says where the head
is: a tiny YOLOv8-format ONNX model, run by onnxruntime). The panel shades what the crop cuts away, shows the bucket
histogram and SUBJECT_CUT; a letterbox is previewed, applied as a job (the training copy changes, the original
does not), undone; and a box dragged on one picture crops it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from appserver import open_page, running_app
from PIL import Image, ImageDraw
from test_browser import CHROMIUM, html_of

from lib_lorakit.project import Workspace

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
SHOT = os.environ.get("TRAIN_STYLE_CROP_SCREENSHOT", "/tmp/crop_panel.png")


def draw_portrait(path: Path) -> None:
    """220×1000: a face-like blob at the very top, a body below it."""
    im = Image.new("RGB", (220, 1000), (90, 150, 90))
    d = ImageDraw.Draw(im)
    d.ellipse((40, 10, 180, 170), fill=(240, 200, 170))
    for x in (75, 125):
        d.ellipse((x, 60, x + 20, 80), fill=(20, 20, 20))
    d.arc((80, 100, 140, 140), 20, 160, fill=(150, 40, 40), width=4)
    d.rectangle((50, 180, 170, 900), fill=(60, 60, 160))
    im.save(path)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from test_detect import build_constant_yolo

    tmp = tmp_path_factory.mktemp("crop")
    home = tmp / "home"
    Workspace(home).create("shoot")
    source = tmp / "user" / "shoot"
    source.mkdir(parents=True)
    draw_portrait(source / "portrait.png")
    Image.new("RGB", (512, 512), (200, 120, 60)).save(source / "square.png")
    Image.new("RGB", (800, 400), (60, 120, 200)).save(source / "wide.png")
    # the anime-head model's place in the store: a head at the top middle of whatever picture it is shown
    rows = np.asarray([(32, 6, 12, 12, 0.9)], np.float32).T
    build_constant_yolo(home / "models" / "train-style" / "detectors" / "head_detect_v2.0_s", rows, labels=["head"])
    with running_app(home, tmp, "--allow-root", str(source.parent)) as url:
        yield url, home, source


@pytest.fixture(scope="module")
def page(app):
    with open_page(app[0], height=1400, project="shoot") as pg:
        yield pg


def text_of(page, elem_id: str) -> str:
    return html_of(page, elem_id).inner_text()


def wait_text(page, elem_id: str, needle: str, timeout: int = 30_000) -> str:
    page.wait_for_function("([id, needle]) => [...document.querySelectorAll('#' + id)]"
                           ".some(e => e.innerText.includes(needle))", arg=[elem_id, needle], timeout=timeout)
    return text_of(page, elem_id)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_see_the_cut_head_letterbox_it_undo_and_draw_a_box(app, page):
    url, home, source = app
    project = home / "shoot"
    # 1. import the three pictures in the Dataset tab
    page.fill("#train_style_folder textarea, #train_style_folder input", str(source))
    page.click("#train_style_import_folder")
    html_of(page, "train_style_import_result").get_by_text("3 imported").wait_for(timeout=60_000)
    originals = {p: sha(p) for p in (project / "originals").iterdir()}
    assert len(originals) == 3
    # 2. Crop: the next step names the cut head; the grid shades what sd-scripts cuts away
    page.locator("#train_style_tabs button", has_text="Crop").first.click()
    nxt = wait_text(page, "train_style_crop_next", "2 of 3 images trimmed")
    assert "tick Find cut faces" in nxt, nxt  # looking for faces decodes every image: the user asks for it
    assert "were not looked for" in text_of(page, "train_style_crop_grid")
    page.locator("#train_style_crop_detect input").check()
    page.click("#train_style_crop_show")
    nxt = wait_text(page, "train_style_crop_next", "1 head would be cut")
    assert "smart-crop them" in nxt, nxt
    grid = html_of(page, "train_style_crop_grid")
    assert grid.locator(".ts-crop-card").count() == 3
    portrait = grid.locator(".ts-crop-card", has_text="portrait.png")
    assert portrait.locator(".ts-crop-keep").count() == 1 and portrait.locator(".ts-crop-face").count() == 1
    assert grid.locator(".ts-crop-card", has_text="square.png").locator(".ts-crop-keep").count() == 0
    assert "nothing cut" in grid.locator(".ts-crop-card", has_text="square.png").inner_text()
    text = grid.inner_text()
    assert "Bucket histogram (3 buckets)" in text and "512×512" in text, text
    assert "SUBJECT_CUT" in text and "seeds/002" in text and "portrait.png" in text, text
    # the shaded part is really drawn over the picture: the kept box is narrower than the card's picture, lower
    keep = portrait.locator(".ts-crop-keep").bounding_box()
    picture = portrait.locator("img").bounding_box()
    assert keep["y"] > picture["y"] + 1 and keep["height"] < picture["height"] - 2
    page.screenshot(path=SHOT, full_page=True)
    # 3. choose the cut image, preview a letterbox: before → after, nothing written yet
    page.click("#train_style_crop_choose_cut")
    page.locator("#train_style_crop_mode label", has_text="letterbox").click()
    page.click("#train_style_crop_preview")
    preview = wait_text(page, "train_style_crop_outcome", "would change")
    assert "1 image(s) would change (1 padded)" in preview, preview
    assert html_of(page, "train_style_crop_outcome").locator(".ts-crop-pair").count() == 1
    copy = project / "dataset" / "1_shoot" / "portrait.png"
    assert Image.open(copy).size == (220, 1000)
    page.screenshot(path=SHOT.replace(".png", "-preview.png"), full_page=True)
    # 4. apply: a job; the training copy is padded to a square, the originals are untouched
    page.click("#train_style_crop_apply")
    done = wait_text(page, "train_style_crop_outcome", "changed (1 padded)", timeout=60_000)
    assert "Undo takes it back" in done, done
    with Image.open(copy) as im:
        assert im.size == (1000, 1000) and im.mode == "RGBA"
    assert {p: sha(p) for p in (project / "originals").iterdir()} == originals
    nxt = wait_text(page, "train_style_crop_next", "no face or head cut")
    grid = html_of(page, "train_style_crop_grid")
    assert grid.locator(".ts-crop-face").count() == 0  # the padded copy's bucket is square: nothing of it is cut
    assert "512×512 · nothing cut" in grid.locator(".ts-crop-card", has_text="portrait.png").inner_text()
    # 5. undo: the copy is derived again from the original
    page.click("#train_style_crop_undo")
    wait_text(page, "train_style_crop_outcome", "Undone: Letterbox 1 image(s)")
    assert Image.open(copy).size == (220, 1000)
    wait_text(page, "train_style_crop_next", "1 head would be cut")
    # 6. manual: pick the square picture, drag a box on it, crop to it
    page.get_by_text("Manual crop: draw a box on one image").click()
    page.click("#train_style_crop_one input")
    page.locator("ul.options li", has_text="square.png").first.click()
    canvas = html_of(page, "train_style_crop_canvas").locator(".ts-crop-canvas")
    canvas.wait_for(timeout=20_000)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.6, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.75, steps=5)
    page.mouse.up()
    page.screenshot(path=SHOT.replace(".png", "-manual.png"), full_page=True)
    field = page.locator("#train_style_crop_box textarea, #train_style_crop_box input").first
    numbers = [int(v) for v in field.input_value().split(",")]
    assert numbers == pytest.approx([128, 128, 384, 384], abs=3), numbers
    page.click("#train_style_crop_manual")
    wait_text(page, "train_style_crop_outcome", "1 image(s) changed")
    square = project / "dataset" / "1_shoot" / "square.png"
    assert Image.open(square).size == (numbers[2] - numbers[0], numbers[3] - numbers[1])
    assert {p: sha(p) for p in (project / "originals").iterdir()} == originals
