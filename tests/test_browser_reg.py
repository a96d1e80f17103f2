"""The Dataset panel's "Generate regularisation images" in headless Chromium, on a real server process whose Host
generator is a drawing stand-in (tests/reg_fake_site): a batch is started from the page, its bar is kept current by
the page script, and when it ends the outcome shows and the Dataset report lists the new set; the prompt is shown as
text, never as markup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from appserver import ROOT, open_page, running_app
from test_browser import CHROMIUM, html_of

from lib_lorakit.project import Workspace

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
HOSTILE = '1girl, solo, <img src=x onerror="document.title=\'pwned\'">'


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reg")
    home = tmp / "home"
    Workspace(home).create("shoot", resolution=64)
    site = Path(__file__).resolve().parent / "reg_fake_site"
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    with running_app(home, tmp, env=env) as url:
        yield url, home


def test_generate_a_reg_set_from_the_dataset_panel(app):
    url, home = app
    with open_page(url, height=1600, project="shoot") as page:
        page.get_by_text("Generate regularisation images").click()
        page.fill("#train_style_reg_class textarea, #train_style_reg_class input", "woman")
        page.fill("#train_style_reg_prompt textarea, #train_style_reg_prompt input", HOSTILE)
        page.fill("#train_style_reg_count input", "4")
        page.fill("#train_style_reg_repeats input", "2")
        page.click("#train_style_reg_generate")
        page.wait_for_function("() => [...document.querySelectorAll('#train_style_reg_result')]"
                               ".some(e => e.innerText.includes('4 of 4 present'))", timeout=60_000)
        result = html_of(page, "train_style_reg_result").inner_text()
        assert "reg/2_woman: 4 image(s) made at 64×64" in result
        assert page.locator("#train_style_reg_job").last.get_attribute("data-state") == "done"
        page.wait_for_function("() => [...document.querySelectorAll('#train_style_report')]"
                               ".some(e => e.innerText.includes('2_woman'))", timeout=30_000)
        assert page.title() != "pwned" and page.locator("img[src='x']").count() == 0
        page.screenshot(path=os.environ.get("TRAIN_STYLE_REG_SCREENSHOT", "/tmp/reg_panel.png"), full_page=True)
    folder = home / "shoot" / "reg" / "2_woman"
    assert len(list(folder.glob("*.png"))) == 4
    assert (folder / "woman_00000.txt").read_text(encoding="utf-8").strip() == HOSTILE
