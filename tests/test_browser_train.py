"""The Train tab in headless Chromium: a real app process, a real queue and supervisor, a replayed sd-scripts.

The trainer is tests/fake_trainer_env.py (named by TRAIN_STYLE_TRAINER_PYTHON); everything else is real: the
run folders, the supervisor process, the queue worker in the app, the page's polling and registration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from appserver import open_page, running_app
from fake_trainer_env import build_fake_trainer
from PIL import Image
from test_browser import CHROMIUM, ROOT, html_of
from test_host import TEXT_ENCODERS, write_safetensors

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

ACTIVE = ("queued", "starting", "running")


def cli(env: dict, home: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), *args], env=env, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A project with 3 captioned images and a trigger word, an SD1 checkpoint, the fake trainer, the app."""
    tmp = tmp_path_factory.mktemp("train-app")
    home = tmp / "home"
    python = build_fake_trainer(tmp / "trainer", delay=0.03)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(tmp / "none.toml"),
           "GRADIO_ANALYTICS_ENABLED": "False", "TRAIN_STYLE_TRAINER_PYTHON": str(python)}
    src = tmp / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (96, 96), (80 * i, 100, 200 - 50 * i)).save(src / f"{i}.png")
        (src / f"{i}.txt").write_text(f"zkstyle, shape {i}")
    cli(env, home, "project", "new", "demo", "--trigger", "zkstyle")
    cli(env, home, "import", "demo", str(src))
    models = home / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    write_safetensors(models / "base.safetensors", ["model.diffusion_model.out.0.weight", TEXT_ENCODERS["SD1"]])
    with running_app(home, tmp, env={"TRAIN_STYLE_TRAINER_PYTHON": str(python),
                                     "TRAIN_STYLE_SD_SCRIPTS": str(tmp / "trainer" / "sd-scripts")}) as url:
        yield url, home


@pytest.fixture(scope="module")
def page(app):
    with open_page(app[0], height=1400, project="demo", tab="Train") as pg:
        yield pg


def pick(page, elem_id: str, value: str) -> None:
    """Choose `value` in a gradio dropdown the way a user does: type to filter, then click the option."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    page.locator(f"#{elem_id} li", has_text=value).first.click()
    page.wait_for_function(f"() => document.querySelector('#{elem_id} input').value === {value!r}")


def run_state(page) -> str:
    return page.locator("#train_style_run").get_attribute("data-state") or ""


def wait_state(page, states: tuple[str, ...], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.locator("#train_style_run").count() and run_state(page) in states:
            return run_state(page)
        time.sleep(0.1)
    raise AssertionError(f"the run is {run_state(page)!r}, not one of {states}: "
                         + page.locator("#train_style_run").inner_text())


def test_check_train_watch_and_register(app, page):
    url, home = app
    html_of(page, "train_style_train_heading").get_by_text("zkstyle").wait_for(timeout=20_000)
    pick(page, "train_style_preset", "style-sd15-lora")
    pick(page, "train_style_base_model", "base.safetensors (SD1)")
    page.fill("#train_style_overrides textarea", "max_train_epochs=4\n# a comment line is ignored")
    page.fill("#train_style_prompts textarea", "a lighthouse at dusk")
    # 1. Check: the step maths with the override applied, and no blocking finding
    page.click("#train_style_check")
    page.locator("#train_style_steps").wait_for(timeout=20_000)
    assert page.locator("#train_style_steps td[data-key='epochs']").inner_text() == "4"
    assert page.locator("#train_style_steps td[data-key='training images']").inner_text() == "3"
    assert int(page.locator("#train_style_steps td[data-key='total steps']").inner_text()) > 0
    assert page.locator("#train_style_ready").count() == 1
    assert page.locator(".ts-findings li.ts-error").count() == 0
    row = page.locator(".ts-settings tr", has=page.locator("td", has_text="max_train_epochs")).first
    assert "yours" in row.text_content() and row.get_attribute("title")  # source and the option's reason
    # 2. Train: queued and started at once, the page's poller moves the bar, the end redraws the panel
    page.click("#train_style_train")
    wait_state(page, ACTIVE, timeout=20)
    seen = set()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline and run_state(page) in ACTIVE:
        text = page.locator("#train_style_run .ts-run-text").inner_text()
        width = page.locator("#train_style_run .ts-fill").evaluate("e => e.style.width")
        if "step" in text and width not in ("0%", "100%"):
            seen.add(width)
        time.sleep(0.1)
    assert seen, "the progress bar never showed a step between start and end"
    assert wait_state(page, ("succeeded",)) == "succeeded"
    # the poller saw the end and pressed the hidden refresh: the server redraws the box with the loss curve
    page.locator("#train_style_run svg.ts-loss polyline").wait_for(timeout=10_000)
    assert "step 4/4" in page.locator("#train_style_run .ts-run-text").inner_text()
    assert "demo.safetensors" in page.locator("#train_style_run .ts-files").inner_text()
    page.locator("#train_style_samples img").first.wait_for(timeout=10_000)
    assert page.locator("#train_style_samples img").count() >= 2  # with and without the trigger
    # 3. Register: the files and their cards land in the Lora folder
    page.click("#train_style_register")
    html_of(page, "train_style_registered").get_by_text("Registered").wait_for(timeout=20_000)
    text = html_of(page, "train_style_registered").inner_text()
    target = home / "models" / "Lora" / "train-style" / "demo"
    for name in ("demo.safetensors", "demo-step00000002.safetensors"):
        assert name in text
        assert (target / name).is_file() and (target / name).with_suffix(".json").is_file()
    assert (target / "demo.preview.png").is_file()
    if os.environ.get("TRAIN_STYLE_SCREENSHOT_TRAIN"):
        page.screenshot(path=os.environ["TRAIN_STYLE_SCREENSHOT_TRAIN"], full_page=True)


def test_stop_a_running_run(app, page):
    page.fill("#train_style_output_name input, #train_style_output_name textarea", "demo-hang")
    page.click("#train_style_train")
    page.wait_for_function("() => document.querySelector('#train_style_run')?.dataset.runId?.endsWith('demo-hang')"
                           " || document.querySelector('#train_style_runs input')?.value.includes('demo-hang')",
                           timeout=20_000)
    wait_state(page, ("running",), timeout=60)  # queued → starting → running: the supervisor and trainer start
    page.locator("#train_style_run .ts-run-text", has_text="step").wait_for(timeout=20_000)
    page.click("#train_style_stop")
    assert wait_state(page, ("stopped",), timeout=40) == "stopped"
    page.locator("#train_style_run .ts-error", has_text="Stopped by the user").wait_for(timeout=10_000)
    page.wait_for_function("() => document.querySelector('#train_style_runs input').value.endsWith('— stopped')",
                           timeout=10_000)
    # it stopped before its first save, so Resume says why it cannot, as the CLI would
    page.click("#train_style_resume")
    page.get_by_text("saved no training state").first.wait_for(timeout=10_000)
    # choosing another run in the list shows that run
    first = page.locator("#train_style_runs input")
    first.click()
    page.locator("#train_style_runs li", has_text="— ").last.click()
    page.wait_for_function("() => !document.querySelector('#train_style_run').dataset.runId.endsWith('demo-hang')",
                           timeout=10_000)


def test_save_the_settings_as_a_preset_and_see_the_queue(app, page):
    url, home = app
    pick(page, "train_style_preset", "style-sd15-lora")
    page.fill("#train_style_overrides textarea", "network_dim=12")
    page.fill("#train_style_preset_name input, #train_style_preset_name textarea", "my-flat-style")
    page.click("#train_style_save_preset")
    html_of(page, "train_style_plan").get_by_text("Saved preset my-flat-style").wait_for(timeout=20_000)
    saved = (home / "presets" / "my-flat-style.toml").read_text()
    assert "network_dim = 12" in saved and "tab overrides" in saved
    page.wait_for_function("() => document.querySelector('#train_style_preset input').value === 'my-flat-style'",
                           timeout=10_000)
    # the queue box lists what the queue holds (empty once the runs above have ended)
    assert "queue" in html_of(page, "train_style_queue").inner_text().lower()


def test_export_a_run_then_import_it_trained_elsewhere(app, page, tmp_path):
    import zipfile

    url, home = app
    chosen = page.input_value("#train_style_runs input")
    run_id = chosen.split()[0] if chosen else ""
    page.get_by_text("Train on another machine").first.click()  # open the accordion
    page.click("#train_style_export")
    page.locator("#train_style_bundle_out a").first.wait_for(timeout=20_000)
    bundles = sorted((home / "demo" / "exports").glob("*.zip"))
    assert len(bundles) == 1 and run_id in bundles[0].name
    names = zipfile.ZipFile(bundles[0]).namelist()
    assert any(n.endswith("train.sh") for n in names) and any(n.endswith("/dataset.toml") for n in names)
    # trained on the other machine: its output folder now holds the LoRA; zipped up and dropped on the tab
    with zipfile.ZipFile(bundles[0]) as z:
        z.extractall(tmp_path / "elsewhere")
    (top,) = list((tmp_path / "elsewhere").iterdir())
    (top / "output").mkdir(exist_ok=True)
    write_safetensors(top / "output" / "demo.safetensors", ["lora_unet_x.lora_down.weight"])
    trained = shutil.make_archive(str(tmp_path / "trained"), "zip", root_dir=top.parent, base_dir=top.name)
    before = {p.name for p in (home / "demo" / "runs").iterdir()}
    page.locator("#train_style_bundle_in input[type=file]").set_input_files(trained)
    page.wait_for_function("() => !document.querySelector('#train_style_bundle_in').innerText.includes('Uploading')",
                           timeout=20_000)
    page.click("#train_style_import_bundle")
    page.wait_for_function(f"() => !document.querySelector('#train_style_runs input').value.startsWith({run_id!r})",
                           timeout=20_000)
    new_id = page.input_value("#train_style_runs input").split()[0]
    assert new_id not in before
    assert (home / "demo" / "runs" / new_id / "demo.safetensors").is_file()
    assert run_state(page) == "succeeded"
