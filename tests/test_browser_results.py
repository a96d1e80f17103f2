"""The Results sub-tab in headless Chromium (gradio 3.41 and 4), on a real server process whose Host generator is a
painting stand-in (tests/results_fake_site) and a project with a finished run that saved two epoch files: pick the
run, weights 0,1, make the grid (its bar kept current by the page script), see the grid and its cells, choose a cell
→ the card's JSON holds the preferred weight; a hostile prompt is shown as text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from appserver import ROOT, open_page, running_app
from test_browser import CHROMIUM, html_of
from test_results_panel import make_run

from lib_lorakit.fsutil import read_json
from lib_lorakit.project import Workspace

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
HOSTILE = 'a cat <img src=x onerror="document.title=\'pwned\'">'


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("results")
    home = tmp / "home"
    project = Workspace(home).create("shoot", trigger_words=("zq",), resolution=64)
    run = make_run(project)
    lora = tmp / "Lora"
    config = tmp / "config.toml"
    config.write_text(f'lora_dir = "{lora}"\nmodels_dir = "{tmp / "models"}"\n')
    site = Path(__file__).resolve().parent / "results_fake_site"
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]), "TRAIN_STYLE_CONFIG": str(config)}
    with running_app(home, tmp, env=env) as url:
        yield url, home, run, lora


def pick(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    page.locator(f"#{elem_id} li", has_text=value).first.click()


def test_make_a_grid_and_choose_a_cell(app):
    url, home, run, lora = app
    with open_page(url, height=2200, project="shoot", tab="Results") as page:
        page.wait_for_function(f"() => document.querySelector('#train_style_results_run input')?.value"
                               f"?.startsWith({run!r})", timeout=30_000)
        heading = html_of(page, "train_style_results_heading").inner_text()
        assert f"Run {run} saved 2 files" in heading
        epochs = page.locator("#train_style_results_epochs input[type=checkbox]")
        assert epochs.count() == 2 and all(epochs.nth(i).is_checked() for i in range(2))
        assert "0, 0.2, 0.4, 0.6, 0.8, 1, 1.2" in html_of(page, "train_style_results_weights_shown").inner_text()
        page.fill("#train_style_results_weights textarea, #train_style_results_weights input", "0,1")
        page.fill("#train_style_results_prompts textarea", HOSTILE)
        page.locator("#train_style_results_trigger input").uncheck()
        page.wait_for_function("() => [...document.querySelectorAll('#train_style_results_size')]"
                               ".some(e => e.innerText.includes('4 images'))", timeout=30_000)
        assert "Weights: 0, 1" in html_of(page, "train_style_results_weights_shown").inner_text()
        page.click("#train_style_results_make")
        page.wait_for_function("() => [...document.querySelectorAll('#train_style_results_grid')]"
                               ".some(e => e.innerText.includes('4 of 4 images made'))", timeout=60_000)
        assert page.locator("#train_style_results_job").last.get_attribute("data-state") == "done"
        grid = html_of(page, "train_style_results_grid")
        assert grid.locator("img.ts-grid-picture").count() == 1
        href = grid.locator("a.ts-grid-link").get_attribute("href")
        assert href.startswith("/train-style/v1/projects/shoot/eval/") and href.endswith("/grid.png")
        assert grid.locator("tbody tr").count() == 4
        assert page.request.get(url + href).headers["content-type"] == "image/png"
        assert page.title() != "pwned" and page.locator("img[src='x']").count() == 0
        assert HOSTILE in grid.inner_text()
        pick(page, "train_style_results_cell", "epoch 2 · weight 1 ·")
        page.click("#train_style_results_use")
        page.wait_for_function("() => [...document.querySelectorAll('#train_style_results_chosen')]"
                               ".some(e => e.innerText.includes('Preferred weight 1'))", timeout=30_000)
        page.screenshot(path=os.environ.get("TRAIN_STYLE_RESULTS_SCREENSHOT", "/tmp/results_panel.png"),
                        full_page=True)
    card = read_json(lora / "train-style" / "shoot" / "zq-000002.json")
    assert card["preferred weight"] == 1.0 and "eval" in card["notes"]


def test_the_grid_survives_a_reload(app):
    url, home, run, lora = app
    with open_page(url, height=1600, project="shoot", tab="Results") as page:
        page.wait_for_function("() => [...document.querySelectorAll('#train_style_results_grid')]"
                               ".some(e => e.innerText.includes('4 of 4 images made'))", timeout=30_000)
        assert "done (4/4)" in page.locator("#train_style_results_grids input").input_value()
