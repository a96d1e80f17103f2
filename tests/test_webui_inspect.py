"""Inspect inside a real webui 1.10.1 (opt-in, as tests/test_webui.py: TRAIN_STYLE_WEBUI): an image dropped on the
Inspect panel goes to txt2img through the webui's own paste mechanism, which fills the prompt, steps, seed, CFG and
size from the infotext (its own parser)."""

from __future__ import annotations

import os

import pytest
from test_browser import CHROMIUM
from test_pnginfo import png
from test_webui import WEBUI, _browser_at, _data_dir, _get, _launch, _open_train_style

pytestmark = [pytest.mark.webui,
              pytest.mark.skipif(not WEBUI, reason="opt-in: set TRAIN_STYLE_WEBUI to a webui 1.10 checkout"),
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed")]

INFOTEXT = ("a red fox in the snow, sks\nNegative prompt: lowres, blurry\n"
            "Steps: 13, Sampler: Euler, CFG scale: 4.5, Seed: 777, Size: 320x448, Model hash: 0123456789")


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    data = _data_dir(tmp_path_factory)
    yield from ((url, data) for url in _launch(data))


def test_send_to_txt2img_fills_the_webuis_fields(webui, tmp_path):
    url, _ = webui
    assert _get(url + "/train-style/v1/projects", {"name": "pnginfo"})[0] == 201
    image = png(tmp_path / "fox.png", [("tEXt", "parameters", INFOTEXT)], size=(64, 96))
    with _browser_at(url) as page:
        _open_train_style(page, "pnginfo")
        page.locator("#train_style_tabs button", has_text="Inspect").first.click()
        page.locator("#train_style_inspect_drop input[type=file]").set_input_files(str(image))
        page.wait_for_function("() => document.querySelector('#train_style_inspect_infotext textarea')?.value"
                               ".startsWith('a red fox')", timeout=60_000)
        page.click("#train_style_inspect_to_txt2img")
        page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea')?.value === "
                               "'a red fox in the snow, sks'", timeout=60_000)
        assert page.locator("#txt2img_neg_prompt textarea").input_value() == "lowres, blurry"
        assert page.locator("#txt2img_steps input[type=number]").input_value() == "13"
        assert page.locator("#txt2img_seed input").input_value() == "777"
        assert page.locator("#txt2img_cfg_scale input[type=number]").input_value() == "4.5"
        assert page.locator("#txt2img_width input[type=number]").input_value() == "320"
        assert page.locator("#txt2img_height input[type=number]").input_value() == "448"
        if os.environ.get("TRAIN_STYLE_WEBUI_SCREENSHOT"):
            page.screenshot(path=os.environ["TRAIN_STYLE_WEBUI_SCREENSHOT"], full_page=True)
