"""One project picker for the whole tab, and panels that follow the project without a page reload: an import in
Dataset shows at once in Captions and Train, a switch of project redraws every panel, a caption written by another
program shows in the open panel, and each panel says what to do next. A real server process, a real browser."""

from __future__ import annotations

import os

import pytest
from appserver import open_page, running_app
from PIL import Image
from test_browser import CHROMIUM, html_of

from lib_lorakit.project import Workspace

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
SHOTS = os.environ.get("TRAIN_STYLE_SYNC_SCREENSHOTS")  # a folder: one PNG per panel, to look at


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """Two projects: `alpha` (empty, listed first) and `beta` (two captioned images); 14 images to import."""
    tmp = tmp_path_factory.mktemp("sync")
    home = tmp / "home"
    workspace = Workspace(home)
    workspace.create("alpha")
    beta = workspace.create("beta", trigger_words=("betastyle",)).add_concept("beta", 100).folder
    for i in range(2):
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(beta / f"b{i}.png")
        (beta / f"b{i}.txt").write_text("betastyle, blue", encoding="utf-8")
    source = tmp / "user" / "fourteen"
    source.mkdir(parents=True)
    for i in range(14):
        im = Image.new("RGB", (96, 80), (15 * i, 200 - 10 * i, 40))
        im.paste((255, 255, 255), (0, 0, 5 * (i + 1), 4 * (i + 1)))  # no two alike
        im.save(source / f"pic{i:02d}.png")
    with running_app(home, tmp, "--allow-root", str(source.parent)) as url:
        yield url, home, source


@pytest.fixture(scope="module")
def page(app):
    with open_page(app[0], height=1100, project="alpha") as pg:
        yield pg


def text_of(page, elem_id: str) -> str:
    return html_of(page, elem_id).inner_text()


def wait_text(page, elem_id: str, needle: str, timeout: int = 20_000) -> str:
    """The element's text once it holds `needle` (the page is never reloaded)."""
    page.wait_for_function("([id, needle]) => [...document.querySelectorAll('#' + id)]"
                           ".some(e => e.innerText.includes(needle))", arg=[elem_id, needle], timeout=timeout)
    return text_of(page, elem_id)


def open_tab(page, name: str) -> None:
    page.locator("#train_style_tabs button", has_text=name).first.click()


def shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=False)


def test_one_picker_above_the_panels_and_each_panel_says_what_to_do_next(page):
    assert page.locator("#train_style_project").count() == 1  # not one per panel
    wait_text(page, "train_style_dataset_next", "No images yet")
    for tab, box in (("Captions", "train_style_caption_summary"), ("Train", "train_style_train_heading")):
        open_tab(page, tab)
        text = wait_text(page, box, "No ")
        assert "import some in the Dataset tab" in text and "project in the Dataset tab" not in text, text
    open_tab(page, "Dataset")


def test_an_import_shows_in_captions_and_train_without_a_reload(app, page):
    url, home, source = app
    # 1. Captions and Train are drawn before the import (0 images), then the import runs in Dataset
    open_tab(page, "Captions")
    wait_text(page, "train_style_caption_summary", "0 of 0 images captioned")
    open_tab(page, "Train")
    wait_text(page, "train_style_train_heading", "No training images")
    open_tab(page, "Dataset")
    page.fill("#train_style_folder textarea, #train_style_folder input", str(source))
    page.click("#train_style_import_folder")
    html_of(page, "train_style_import_result").get_by_text("14 imported").wait_for(timeout=60_000)
    # 2. the Dataset panel proposes repeats from the step calculator: 14 images × 21 ≈ 300 per epoch
    nxt = wait_text(page, "train_style_dataset_next", "14 per epoch")
    assert "200–400" in nxt and "21 repeats: 294 per epoch" in nxt, nxt
    shot(page, "dataset-after-import")
    # 3. the other panels show the new counts as soon as they are opened
    open_tab(page, "Captions")
    summary = wait_text(page, "train_style_caption_summary", "0 of 14 images captioned")
    assert "14 images, 0 captioned — tag them: press Tag images" in summary, summary
    assert page.locator("#train_style_caption_gallery img").count() > 0
    shot(page, "captions-after-import")
    open_tab(page, "Train")
    heading = wait_text(page, "train_style_train_heading", "14 images, 0 captioned")
    assert "Captions tab" in heading, heading
    shot(page, "train-after-import")
    # 4. the proposal applied: the concept folder is renamed, and Train follows when opened again
    open_tab(page, "Dataset")
    page.click("#train_style_propose_repeats")
    wait_text(page, "train_style_dataset_next", "14 images, 0 captioned — tag them in the Captions tab")
    assert [p.name for p in (home / "alpha" / "dataset").iterdir()] == ["21_alpha"]
    assert not page.locator("#train_style_propose_repeats").is_visible()


def test_a_caption_written_elsewhere_shows_in_the_open_panel(app, page):
    url, home, source = app
    open_tab(page, "Captions")
    wait_text(page, "train_style_caption_summary", "of 14 images captioned")
    folder = home / "alpha" / "dataset" / "21_alpha"
    for image in sorted(folder.glob("*.png"))[:4]:
        image.with_suffix(".txt").write_text("mystyle, red", encoding="utf-8")  # the CLI, an editor, a script
    summary = wait_text(page, "train_style_caption_summary", "4 of 14 images captioned")
    assert "tag the other 10" in summary, summary
    open_tab(page, "Dataset")
    wait_text(page, "train_style_dataset_next", "14 images, 4 captioned")


def test_switching_the_project_redraws_every_panel(app, page):
    open_tab(page, "Train")
    page.click("#train_style_project input")
    page.locator("ul.options li", has_text="beta").first.click()
    # the open panel at once, and the others when they are opened: nothing of alpha is left anywhere
    heading = wait_text(page, "train_style_train_heading", "Training project beta")
    assert "betastyle" in heading and "2 images" in heading, heading
    open_tab(page, "Captions")
    summary = wait_text(page, "train_style_caption_summary", "All 2 images captioned")
    assert "press Check captions" in summary and "betastyle" in summary, summary
    assert page.locator("#train_style_caption_gallery img").count() == 2
    open_tab(page, "Dataset")
    nxt = wait_text(page, "train_style_dataset_next", "2 images, all captioned, 200 per epoch")
    assert "alpha" not in text_of(page, "train_style_report")
    assert "Training" not in nxt
    shot(page, "dataset-beta")
