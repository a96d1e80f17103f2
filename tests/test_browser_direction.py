"""The Direction panel in headless Chromium, on a real server process with a tiny open_clip model built by the test
(its config and weights in a folder the app may read, named by the embedder field): six drawn heads are imported,
estimated as a job, two are labelled by clicking their pictures, Normalise is previewed (nothing written) and
applied (the right-facing copy mirrored from its original, its caption's left/right swapped, originals untouched);
then the sorter gets two classes, two examples each, and trains (accuracy shown, every image sorted)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from appserver import open_page, running_app
from PIL import Image
from test_browser import CHROMIUM, html_of

from lib_lorakit.project import Workspace

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
SHOT = os.environ.get("TRAIN_STYLE_DIRECTION_SCREENSHOT", "/tmp/direction_panel.png")
CAPTIONS = {"l1": "zkstyle, 1girl, facing left", "l2": "zkstyle, 1girl, from side", "l3": "zkstyle, 1boy",
            "r1": "zkstyle, 1girl, facing right, hand on right hip", "r2": "zkstyle, 1girl, looking right",
            "r3": "zkstyle, 1boy"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from test_direction import head
    from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

    tmp = tmp_path_factory.mktemp("direction")
    home = tmp / "home"
    Workspace(home).create("demo")
    user = tmp / "user"
    source = user / "heads"
    source.mkdir(parents=True)
    for stem, caption in CAPTIONS.items():
        head("left" if stem[0] == "l" else "right", shift=int(stem[1]) * 3 - 6).save(source / f"{stem}.png")
        (source / f"{stem}.txt").write_text(caption)
    models = user / "models"
    config = models / f"{TINY_MODEL}.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(TINY_CONFIG))
    register_tiny_clip(models)
    weights = save_tiny_checkpoint(models / "tiny.pt")
    with running_app(home, tmp, "--allow-root", str(user)) as url:
        yield url, home, source, f"{config}:{weights}"


@pytest.fixture(scope="module")
def page(app):
    with open_page(app[0], height=1300, project="demo") as pg:
        yield pg


def text_of(page, elem_id: str) -> str:
    return html_of(page, elem_id).inner_text()


def wait_text(page, elem_id: str, needle: str, timeout: int = 60_000) -> str:
    page.wait_for_function("([id, needle]) => [...document.querySelectorAll('#' + id)]"
                           ".some(e => e.innerText.includes(needle))", arg=[elem_id, needle], timeout=timeout)
    return text_of(page, elem_id)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def pick(page, box: str, image: str) -> None:
    """Click an image's picture in an HTML box (it is added to the Chosen images box)."""
    html_of(page, box).locator(f'.ts-pick[data-image="{image}"]').first.click()


def chosen(page) -> str:
    return page.locator("#train_style_direction_chosen textarea").first.input_value()


def choose_option(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.locator("ul.options li", has_text=option).first.click()


def test_estimate_label_normalise_and_sort(app, page):
    url, home, source, spec = app
    project = home / "demo"
    # 1. import the six heads with their captions in the Dataset tab
    fill(page, "train_style_folder", str(source))
    page.click("#train_style_import_folder")
    html_of(page, "train_style_import_result").get_by_text("6 imported").wait_for(timeout=60_000)
    concept = next((project / "dataset").iterdir())
    img = {s: f"dataset/{concept.name}/{s}.png" for s in CAPTIONS}
    originals = {p: sha(p) for p in (project / "originals").rglob("*") if p.is_file()}
    # 2. Direction: the next step says to estimate; every picture is drawn, file text escaped
    page.locator("#train_style_tabs button", has_text="Direction").first.click()
    nxt = wait_text(page, "train_style_direction_next", "directions not estimated yet")
    assert "press Estimate" in nxt
    groups = html_of(page, "train_style_direction_groups")
    groups.locator(".ts-pick").nth(5).wait_for(timeout=20_000)
    # 3. estimate as a job with the tiny embedder
    fill(page, "train_style_direction_embedder", spec)
    page.click("#train_style_direction_estimate")
    wait_text(page, "train_style_direction_outcome", "Estimated 6 image(s)")
    # 4. label two by clicking their pictures, then a direction button
    pick(page, "train_style_direction_groups", img["l1"])
    assert chosen(page) == img["l1"]
    assert groups.locator(".ts-chosen").get_attribute("data-image") == img["l1"]
    page.click("#train_style_direction_label_left")
    wait_text(page, "train_style_direction_outcome", "1 image(s) labelled left")
    pick(page, "train_style_direction_groups", img["r1"])
    page.click("#train_style_direction_label_right")
    wait_text(page, "train_style_direction_outcome", "1 image(s) labelled right")
    assert chosen(page) == ""
    no_border = "() => !document.querySelector('#train_style_direction_groups .ts-chosen')"
    page.wait_for_function(no_border, timeout=10_000)  # the borders follow the emptied box
    card = groups.locator(f'.ts-pick[data-image="{img["r1"]}"]')
    assert card.inner_text().count("your label") == 1
    assert groups.locator('[data-direction="right"]').locator(f'[data-image="{img["r1"]}"]').count() == 1
    # 5. only labelled images count (a setting), face left: the preview names r1 and its caption swap
    page.get_by_text("Direction settings: swap words, never-flip tags").click()
    fill(page, "train_style_direction_min_confidence", "1")
    page.click("#train_style_direction_save_settings")
    wait_text(page, "train_style_direction_outcome", "Direction settings saved")
    page.locator("#train_style_direction_target label", has_text="left").first.click()
    before = {p: sha(p) for p in (project / "dataset").rglob("*") if p.is_file()}
    page.click("#train_style_direction_preview")
    preview = wait_text(page, "train_style_direction_normalised", "Would flip 1 image(s) to face left")
    assert "facing left, hand on left hip" in preview and "Nothing was changed" in preview, preview
    assert {p: sha(p) for p in (project / "dataset").rglob("*") if p.is_file()} == before
    # 6. apply: the copy is mirrored from its original, the caption swapped, the originals untouched
    page.click("#train_style_direction_apply")
    done = wait_text(page, "train_style_direction_normalised", "Flipped 1 image(s) to face left")
    assert "Caption the gaze" in done
    r1 = project / img["r1"]
    assert np.array_equal(np.asarray(Image.open(r1).convert("RGB")),
                          np.asarray(Image.open(source / "r1.png").convert("RGB"))[:, ::-1])
    assert r1.with_suffix(".txt").read_text().strip() == "zkstyle, 1girl, facing left, hand on left hip"
    assert sha(project / img["l1"]) == before[project / img["l1"]]
    assert {p: sha(p) for p in (project / "originals").rglob("*") if p.is_file()} == originals
    page.wait_for_function(
        "(image) => document.querySelector('#train_style_direction_groups [data-direction=\"left\"] "
        "[data-image=\"' + image + '\"]')", arg=img["r1"], timeout=20_000)
    page.screenshot(path=SHOT, full_page=True)
    # 7. the sorter: two classes, two examples each, Train → accuracy, then every image sorted
    page.get_by_text("Sort (teachable machine)").click()
    for name in ("lefty", "righty"):
        fill(page, "train_style_sort_new", name)
        page.click("#train_style_sort_add")
        wait_text(page, "train_style_sort_status", name)
    for cls, stems in (("lefty", ("l1", "l2")), ("righty", ("r2", "r3"))):
        choose_option(page, "train_style_sort_class", cls)
        for stem in stems:
            pick(page, "train_style_direction_groups", img[stem])
        page.click("#train_style_sort_label")
        wait_text(page, "train_style_sort_outcome", f"2 image(s) labelled {cls}")
        page.wait_for_function(no_border, timeout=10_000)
    page.click("#train_style_sort_train")
    status = wait_text(page, "train_style_sort_status", "cross-validated accuracy")
    assert "lefty" in status and "righty" in status
    predictions = html_of(page, "train_style_sort_predictions")
    predictions.locator(".ts-pick").nth(5).wait_for(timeout=60_000)
    assert "least certain first" in predictions.inner_text()
    page.screenshot(path=SHOT.replace(".png", "-sort.png"), full_page=True)
    assert {p: sha(p) for p in (project / "originals").rglob("*") if p.is_file()} == originals
