"""The Inspect panel in headless Chromium, on a real server process (gradio 3.41 here, 4.x under .venv-gradio4): a
PNG the test writes with a webui infotext naming a LoRA one of the project's runs saved (registered in the Lora
folder) shows its fields, the X/Y/Z fields and "ours: project/run/epoch"; a hostile infotext stays text; a file
that is not an image gets a clear message."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from appserver import open_page, running_app
from test_browser import CHROMIUM, html_of
from test_pnginfo import png, write_lora

from lib_lorakit.project import Workspace
from lib_lorakit.results.registry import register_files

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
SHOT = os.environ.get("TRAIN_STYLE_INSPECT_SCREENSHOT", "/tmp/inspect_panel.png")
RUN = "20240101-000000-demo"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inspect")
    home = tmp / "home"
    Workspace(home).create("mystyle")
    run = home / "mystyle" / "runs" / RUN
    files = ["mystyle-000001.safetensors", "mystyle-000002.safetensors"]
    for i, name in enumerate(files):
        write_lora(run / name, {"ss_output_name": "mystyle", "ss_epoch": str(i + 1)}, bytes([i + 7]) * 64)
    (run / "run.json").write_text(json.dumps({"id": RUN, "project": "mystyle", "state": "done", "files": files}))
    register_files([run / f for f in files], lora_dir=home / "models" / "Lora", project="mystyle",
                   trigger_words=["sks"], description="")
    short = hashlib.sha256(bytes([8]) * 64).hexdigest()[:12]  # epoch 2's file
    made = png(tmp / "made.png", [("tEXt", "parameters", (
        "sks, a cat <lora:mystyle-000002:0.8>\nNegative prompt: lowres\nSteps: 24, Sampler: DPM++ 2M, CFG scale: 6, "
        f'Seed: 4242, Size: 512x768, Model hash: abcdef1234, Lora hashes: "mystyle-000002: {short}", '
        'Script: X/Y/Z plot, X Type: Prompt S/R, X Values: "<lora:mystyle-000002:0>,<lora:mystyle-000002:1>"'))],
               size=(64, 96))
    evil = png(tmp / "evil<i>.png", [("tEXt", "parameters", (
        '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>\n'
        'Negative prompt: </td></tr></table><b>bold</b>\n'
        'Steps: <u>1</u>, Seed: 2, Sampler: "<svg onload=alert(1)>", Lora hashes: "<i>x</i>: 0123"'))])
    bad = tmp / "notes.png"
    bad.write_text("just some text")
    with running_app(home, tmp) as url:
        yield url, {"made": made, "evil": evil, "bad": bad}


@pytest.fixture
def page(app):  # a fresh page each: a gr.File holding a file offers no file input
    with open_page(app[0], height=1400, project="mystyle", tab="Inspect") as pg:
        yield pg


def drop(page, path) -> None:
    page.locator("#train_style_inspect_drop input[type=file]").set_input_files(str(path))


def wait_info(page, needle: str) -> str:
    page.wait_for_function("(needle) => [...document.querySelectorAll('#train_style_inspect_info')]"
                           ".some(e => e.innerText.includes(needle))", arg=needle, timeout=30_000)
    return html_of(page, "train_style_inspect_info").inner_text()


def test_drop_a_png_and_see_our_lora_and_its_epoch(app, page):
    drop(page, app[1]["made"])
    text = wait_info(page, f"ours: mystyle/{RUN}/epoch 2")
    for shown in ("DPM++ 2M", "4242", "512x768", "abcdef1234", "Prompt S/R", "<lora:mystyle-000002:0>",
                  "mystyle-000002", "0.8", "lowres"):
        assert shown in text, shown
    infotext = page.locator("#train_style_inspect_infotext textarea").input_value()
    assert infotext.startswith("sks, a cat") and "Lora hashes" in infotext
    page.locator("#train_style_inspect_picture img").first.wait_for(timeout=20_000)
    assert page.locator("#train_style_inspect_to_txt2img").count() == 0  # the paste buttons live in the webui only
    page.screenshot(path=SHOT, full_page=True)


def test_a_hostile_infotext_stays_text(app, page):
    drop(page, app[1]["evil"])
    text = wait_info(page, "<script>")
    assert '<img src=x onerror="document.title=\'pwned\'">' in text and "<b>bold</b>" in text
    assert "<svg onload=alert(1)>" in text and "<u>1</u>" in text and "<i>x</i>" in text
    info = html_of(page, "train_style_inspect_info")
    assert info.locator("script, img, svg, b, u, i").count() == 0
    assert page.title() != "pwned"


def test_not_an_image_says_so(app, page):
    drop(page, app[1]["bad"])
    assert "is not a PNG, JPEG or WebP image" in wait_info(page, "not a PNG")
