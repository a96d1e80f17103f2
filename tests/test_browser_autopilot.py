"""The Autopilot tab in headless Chromium: a real app process runs the whole chain with fakes (the fake trainer,
tests/fake_gen_img.py as gen_img.py, the perceptual descriptor and a tiny CLIP for the judge); the page shows each
step's state as it goes and finds the chain again after a reload.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from appserver import open_page, running_app
from fake_trainer_env import build_fake_trainer
from PIL import Image
from test_browser import CHROMIUM, ROOT
from test_gen_sd_scripts import SD1_KEYS, write_safetensors

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

HERE = Path(__file__).resolve().parent
STEP_NAMES = ("import", "tag", "audit", "plan", "train", "register", "judge", "card")


def tiny_clip_files(folder: Path) -> str:
    """A tiny open_clip config and random weights, built in a child process (the app's process loads them itself)."""
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]);"
            "from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint;"
            "f = Path(sys.argv[1]); (f / (TINY_MODEL + '.json')).write_text(json.dumps(TINY_CONFIG));"
            "register_tiny_clip(f); save_tiny_checkpoint(f / 'tiny.pt')")
    subprocess.run([sys.executable, "-c", code, str(folder), str(HERE)], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return f"{folder / 'lorakit-tiny-clip.json'}:{folder / 'tiny.pt'}"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autopilot-app")
    home = tmp / "home"
    python = build_fake_trainer(tmp / "trainer", delay=0.01)
    sd_scripts = tmp / "trainer" / "sd-scripts"
    (sd_scripts / "gen_img.py").write_text((HERE / "fake_gen_img.py").read_text())
    src = tmp / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (96, 96), (80 * i, 100, 200 - 50 * i)).save(src / f"{i}.png")
        (src / f"{i}.txt").write_text(f"zkstyle, shape {i}")
    write_safetensors(home / "models" / "Stable-diffusion" / "base.safetensors", SD1_KEYS)
    embedder = tiny_clip_files(tmp / "clip")
    env = {"TRAIN_STYLE_TRAINER_PYTHON": str(python), "TRAIN_STYLE_SD_SCRIPTS": str(sd_scripts),
           "FAKE_GEN_RECORD": str(tmp / "gen.jsonl")}
    with running_app(home, tmp, "--allow-root", str(src), "--allow-root", str(tmp / "clip"), env=env) as url:
        subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), "project", "new", "demo"],
                       check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                             "TRAIN_STYLE_CONFIG": str(tmp / "none.toml")})
        yield url, home, src, embedder


def pick(page, elem_id: str, value: str) -> None:
    """Choose `value` in a gradio dropdown the way a user does: type to filter, then click the option."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(value)
    page.locator(f"#{elem_id} li", has_text=value).first.click()
    page.wait_for_function(f"() => document.querySelector('#{elem_id} input').value === {value!r}")


def chain_state(page) -> str:
    mark = page.locator("#train_style_autopilot_state")
    return (mark.get_attribute("data-state") or "") if mark.count() else ""


def step_states(page) -> dict[str, str]:
    rows = page.locator("#train_style_autopilot_table tr[data-step]")
    return {rows.nth(i).get_attribute("data-step"): rows.nth(i).get_attribute("data-state")
            for i in range(rows.count())}


def test_the_tab_runs_the_chain_shows_each_step_and_finds_it_again_after_a_reload(app):
    url, home, src, embedder = app
    judge = {"descriptor": "perceptual", "embedder": embedder, "weights": "1", "seeds": "1", "caption_samples": 1,
             "width": 64, "height": 64, "steps": 2}
    with open_page(url, height=1600, project="demo", tab="Autopilot") as page:
        page.fill("#train_style_autopilot_folder textarea, #train_style_autopilot_folder input", str(src))
        page.fill("#train_style_autopilot_trigger textarea, #train_style_autopilot_trigger input", "zkstyle")
        pick(page, "train_style_autopilot_preset", "style-sd15-lora")
        pick(page, "train_style_autopilot_base_model", "base.safetensors (SD1)")
        page.locator("#train_style_autopilot_accept input").check()
        page.locator("#train_style_autopilot_more").get_by_text("More settings").click()
        page.fill("#train_style_autopilot_overrides textarea", "max_train_epochs=2")
        page.fill("#train_style_autopilot_judge textarea", "\n".join(f"{k}={v}" for k, v in judge.items()))
        page.locator("#train_style_autopilot_start").click()
        seen: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 240
        while chain_state(page) not in ("done", "failed", "cancelled", "paused") and time.monotonic() < deadline:
            seen |= set(step_states(page).items())
            time.sleep(0.5)
        assert chain_state(page) == "done", page.locator("#train_style_autopilot_steps").inner_text()
        states = step_states(page)
        assert tuple(states) == STEP_NAMES and set(states.values()) <= {"done", "skipped"}
        assert ("train", "running") in seen or ("train", "pending") in seen  # drawn while the chain was on its way
        table = page.locator("#train_style_autopilot_table").inner_text()
        chain = json.loads((next((home / "demo" / "autopilot").glob("*.json"))).read_text())
        run = chain["steps"][4]["result"]["run"]
        assert f"run {run}" in table and f"grid {chain['steps'][6]['result']['grid']}" in table
        link = page.locator("#train_style_autopilot_table a", has_text=f"run {run}")
        assert link.get_attribute("href") == f"/train-style/v1/projects/demo/runs/{run}"
        page.reload()
        page.wait_for_function("() => document.querySelector('#train_style_project input')?.value === 'demo'")
        page.locator("#train_style_tabs button", has_text="Autopilot").first.click()
        page.wait_for_selector("#train_style_autopilot_state[data-state='done']", timeout=20_000)
        assert f"run {run}" in page.locator("#train_style_autopilot_table").inner_text()
