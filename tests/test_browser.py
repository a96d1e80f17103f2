"""The standalone app in headless Chromium: a real server process, a real browser, real files.

Skipped where no Chromium is installed (`apt-get install chromium`); CI installs it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from appserver import open_page, running_app
from awkward import build_awkward_folder
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("TRAIN_STYLE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The standalone app as its own process, allowed to import from the awkward folder."""
    tmp = tmp_path_factory.mktemp("app")
    awk = build_awkward_folder(tmp / "user")
    with running_app(tmp / "home", tmp, "--allow-root", str(awk.root)) as url:
        yield url, awk, tmp


@pytest.fixture(scope="module")
def page(app):
    with open_page(app[0]) as pg:
        yield pg


def html_of(page, elem_id: str):
    return page.locator(f"#{elem_id}").last  # gradio 3 puts the id on the block and on the HTML inside it


def test_create_project_upload_and_see_the_report(app, page):
    url, awk, tmp = app
    page.fill("#train_style_new_name textarea, #train_style_new_name input", "demo")
    page.click("#train_style_create")
    page.wait_for_function("() => document.querySelector('#train_style_project input')?.value === 'demo'")
    # gradio 3.41 loses a file dropped while another event is still running: let the panel settle first
    html_of(page, "train_style_report").get_by_text("No concepts yet").wait_for(timeout=20_000)
    good = [awk.root / "photos" / "rot6.jpg", awk.root / "photos" / "plain.jpg"]
    bad = [awk.root / rel for rel in awk.bad if rel.endswith((".jpg", ".png")) and (awk.root / rel).is_file()
           and not (awk.root / rel).is_symlink()][:2]
    page.locator("#train_style_upload input[type=file]").set_input_files([str(p) for p in good + bad])
    # gradio lists each file as "Uploading..." until the server has it
    page.wait_for_function(f"""() => {{ const t = document.querySelector('#train_style_upload').innerText;
        return !t.includes('Uploading') && (t.match(/⇣/g) || []).length === {len(good + bad)}; }}""", timeout=30_000)
    # the step calculator proposes repeats for the dropped images: 4 × 75 = 300 images × repeats per epoch
    page.wait_for_function("() => document.querySelector('#train_style_repeats input').value === '75'")
    page.click("#train_style_import_uploads")
    result = html_of(page, "train_style_import_result")
    result.get_by_text("imported,").wait_for(timeout=30_000)
    text = result.inner_text()
    assert text.startswith(f"{len(good)} imported"), text
    for path in bad:
        assert path.name in text  # each bad upload listed with its reason
    report = html_of(page, "train_style_report").inner_text()
    assert f"{len(good)} training images" in report
    gallery = page.locator("#train_style_gallery img")
    gallery.first.wait_for(timeout=10_000)
    assert gallery.count() == len(good)
    # the training copies on disk are upright RGB
    folder = tmp / "home" / "demo" / "dataset" / "75_demo"
    assert sorted(p.stem for p in folder.iterdir() if p.suffix != ".txt") == ["plain", "rot6"]
    with Image.open(next(folder.glob("rot6.*"))) as im:
        assert im.mode == "RGB" and im.size == awk.good["photos/rot6.jpg"].size


def test_import_a_folder_then_reload_and_find_everything(app, page):
    url, awk, tmp = app
    page.fill("#train_style_folder textarea, #train_style_folder input", str(awk.root))
    page.fill("#train_style_concept textarea, #train_style_concept input", "style")
    page.click("#train_style_import_folder")
    result = html_of(page, "train_style_import_result")
    page.wait_for_function("() => [...document.querySelectorAll('#train_style_import_result')]"
                           ".some(e => e.innerText.includes('symbolic link loop'))", timeout=60_000)
    text = result.inner_text()
    assert "outside the allowed folders" in text and "symbolic link loop" in text
    report = html_of(page, "train_style_report").inner_text()
    assert "Exact duplicates" in report and "Near duplicates" in report
    page.reload()
    page.wait_for_function("() => document.querySelector('#train_style_project input')?.value === 'demo'")
    html_of(page, "train_style_report").get_by_role("cell", name="dataset/1_style").wait_for(timeout=20_000)
    if os.environ.get("TRAIN_STYLE_SCREENSHOT"):
        page.screenshot(path=os.environ["TRAIN_STYLE_SCREENSHOT"], full_page=True)


def test_a_folder_outside_the_allowed_roots_is_refused_in_the_tab(app, page):
    url, awk, tmp = app
    page.fill("#train_style_folder textarea, #train_style_folder input", str(awk.outside))
    page.click("#train_style_import_folder")
    page.get_by_text("outside the allowed folders").first.wait_for(timeout=10_000)
    assert not any((tmp / "home" / "demo" / "dataset").rglob("secret*"))


def test_settings_and_a_regularisation_set_from_the_tab(app, page):
    url, awk, tmp = app
    page.get_by_text("Project settings").click()
    page.fill("#train_style_trigger_words textarea, #train_style_trigger_words input", "sks, flat colours")
    page.locator("#train_style_background input[type=color]").fill("#000000")
    page.click("#train_style_save_settings")
    toml = tmp / "home" / "demo" / "project.toml"
    deadline = time.monotonic() + 20
    while 'background = "#000000"' not in toml.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    text = toml.read_text()
    assert 'background = "#000000"' in text and '"flat colours"' in text
    page.get_by_text("Concepts and repeats").click()
    page.fill("#train_style_concept_name textarea, #train_style_concept_name input", "person")
    page.fill("#train_style_concept_repeats input", "1")  # it shows the chosen concept's (75 since the upload)
    page.locator("#train_style_concept_reg input").check()
    page.click("#train_style_add_concept")
    html_of(page, "train_style_report").get_by_role("cell", name="reg: person").wait_for(timeout=20_000)
    assert (tmp / "home" / "demo" / "reg" / "1_person").is_dir()


def test_dropping_a_lora_shows_how_it_was_made(app, page, tmp_path):
    from test_results import sd_scripts_metadata, write_lora

    lora = tmp_path / "evil<b>.safetensors"
    write_lora(lora, sd_scripts_metadata(ss_tag_frequency='{"1_x": {"<script>alert(1)</script>": 2}}'))
    page.locator("#train_style_tabs button", has_text="Inspect").first.click()
    page.locator("#train_style_inspect_drop input[type=file]").set_input_files(str(lora))
    info = page.locator("#train_style_inspect_info").last
    info.get_by_text("LoRA (dim 4, alpha 2.0)").wait_for(timeout=20_000)
    assert "<script>alert(1)</script> (2)" in info.inner_text()  # shown as text, not run
    assert page.locator("#train_style_inspect_info script").count() == 0
