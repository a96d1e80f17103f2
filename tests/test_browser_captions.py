"""The Captions panel in headless Chromium: tag a folder with WD14 and CLIP (real onnxruntime and open_clip on
tiny models), find a dominant tag in the audit, prune it into the trigger word with the finding's fix, undo, and
edit one caption beside its image."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from appserver import open_page, running_app
from PIL import Image
from test_browser import CHROMIUM, html_of
from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint
from tiny_wd14 import build_tiny_wd14

from lib_lorakit.project import Workspace

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
REDS = [(220, 30, 30), (200, 40, 20), (240, 20, 50), (190, 10, 10)]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("captions")
    home = tmp / "home"
    project = Workspace(home).create("shop", trigger_words=("mystyle",))
    folder = project.add_concept("shop", 3).folder
    for i, rgb in enumerate(REDS):
        im = Image.new("RGB", (96, 64), rgb)
        im.paste((255, 255, 255), (0, 0, 8 * (i + 1), 8 * (i + 1)))  # visually different from each other
        im.save(folder / f"red{i}.png")
    Image.new("RGB", (96, 64), (20, 40, 230)).save(folder / "blue.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 30)
    # the default model, as if downloaded before: the tiny WD14-format model stands in for the real weights
    build_tiny_wd14(home / "models" / "train-style" / "taggers" / "wd-vit-tagger-v3")
    # a CLIP of one's own: an open_clip config file and its weights (tiny, random), typed into the tab
    clip = home / "models" / "clip"
    clip.mkdir(parents=True)
    (clip / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    register_tiny_clip(tmp / "clipcfg")
    save_tiny_checkpoint(clip / "tiny.pt")
    with running_app(home, tmp) as url:
        yield url, folder, clip


@pytest.fixture(scope="module")
def page(app):
    with open_page(app[0], height=1100, project="shop", tab="Captions") as pg:
        yield pg


def captions(folder: Path) -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.txt"))}


def test_tag_audit_prune_undo_and_edit(app, page):
    url, folder, clip = app
    # 1. tag with WD14 and CLIP: a background job whose progress the page follows
    page.locator("#train_style_tagger label", has_text="both").click()
    page.fill("#train_style_clip_model textarea, #train_style_clip_model input", str(clip / f"{TINY_MODEL}.json"))
    page.fill("#train_style_clip_weights textarea, #train_style_clip_weights input", str(clip / "tiny.pt"))
    page.click("#train_style_tag")
    result = html_of(page, "train_style_tag_result")
    result.get_by_text("Tagged 5 image(s)").wait_for(timeout=60_000)
    assert "broken.jpg" in result.inner_text()  # the bad file is listed with its reason
    assert "CPU" in result.inner_text()
    tagged = captions(folder)
    assert sorted(tagged) == ["blue", "red0", "red1", "red2", "red3"]
    assert all(text.startswith("mystyle, ") for text in tagged.values())
    assert all("red theme" in tagged[f"red{i}"] for i in range(4)) and "red theme" not in tagged["blue"]
    gaze = {line.strip() for line in (folder.parents[2] / "vocabularies" / "clip" / "gaze.txt").read_text()
            .splitlines() if line.strip() and not line.startswith("#")}
    assert all(any(tag in gaze for tag in text.split(", ")) for text in tagged.values())  # CLIP's words follow
    html_of(page, "train_style_tag_freq").get_by_text("red theme").wait_for(timeout=10_000)
    # 2. the audit points at the dominant tag on the four red images
    page.click("#train_style_check_captions")
    audit = html_of(page, "train_style_audit")
    audit.get_by_text("DOMINANT_TAG").first.wait_for(timeout=20_000)
    dominant = audit.locator('.ts-finding[data-code="DOMINANT_TAG"]', has_text="red theme")
    assert dominant.count() == 1
    if os.environ.get("TRAIN_STYLE_CAPTIONS_SCREENSHOT"):
        page.screenshot(path=os.environ["TRAIN_STYLE_CAPTIONS_SCREENSHOT"], full_page=True)
    # 3. choose that finding and apply its fix: prune it into the trigger
    page.click("#train_style_finding input")
    page.locator("ul.options li", has_text="red theme").first.click()
    page.click("#train_style_fix_finding")
    outcome = html_of(page, "train_style_caption_outcome")
    outcome.get_by_text("Prune").wait_for(timeout=20_000)
    pruned = captions(folder)
    assert all("red theme" not in t and t.startswith("mystyle") for t in pruned.values())
    page.wait_for_function("""() => !document.querySelector('#train_style_audit').innerText.includes("'red theme'")
                              && !/DOMINANT_TAG[^\\n]*red theme/.test(document.querySelector('#train_style_audit')
                              .innerText)""", timeout=20_000)
    # 4. undo brings the tag back
    page.click("#train_style_undo")
    outcome.get_by_text("Undone").wait_for(timeout=20_000)
    assert captions(folder) == tagged
    # 5. edit one caption beside its image
    page.locator("#train_style_caption_gallery .thumbnail-item, #train_style_caption_gallery button img").first.click()
    page.wait_for_function("() => document.querySelector('#train_style_caption_image textarea').value !== ''")
    image = page.input_value("#train_style_caption_image textarea")
    page.fill("#train_style_caption_text textarea", "mystyle, hand written, smile")
    page.click("#train_style_save_caption")
    outcome.get_by_text("Saved").wait_for(timeout=20_000)
    assert captions(folder)[Path(image).stem] == "mystyle, hand written, smile"


def test_set_trigger_words_puts_them_first_in_every_caption(app, page):
    url, folder, clip = app
    page.fill("#train_style_filter_with textarea", "red theme")  # a filter shown does not limit the trigger
    page.fill("#train_style_caption_triggers textarea", "mystyle, shopstyle")
    page.click("#train_style_set_trigger")
    html_of(page, "train_style_caption_outcome").get_by_text("Set trigger words").wait_for(timeout=20_000)
    texts = captions(folder)
    assert texts and all(t.startswith("mystyle, shopstyle, ") for t in texts.values())
    assert (folder.parents[1] / "project.toml").read_text().count("shopstyle") == 1  # keep_tokens follows
