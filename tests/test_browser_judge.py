"""The Judge sub-tab in headless Chromium (gradio 3.41 and 4), on a real server process and a project with a finished
run that saved two epoch files, a grid made through the Results service by a stand-in generator (at epoch 2, weight 1
it hands back a training image: a copy) and that grid's judge.json: open the tab → the recommendation and the copy
beside the training image it copies → "Write to the card" → the card's JSON holds the weight; a hostile prompt and a
hostile training file name are shown as text. Then "Judge this run" from the form (perceptual descriptor, a tiny CLIP
model built for the test, the Results tests' painting generator): a job whose bar ends done and whose grid's report
is then shown, and found again after a reload."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from appserver import ROOT, open_page, running_app
from PIL import Image, ImageDraw
from test_browser import CHROMIUM, html_of
from test_browser_results import pick
from test_results_panel import make_run

from lib_lorakit.evaluate import GenImage
from lib_lorakit.evaluate.service import EvalService, GridRequest
from lib_lorakit.fsutil import atomic_write_json, read_json
from lib_lorakit.host import StandaloneHost
from lib_lorakit.project import Workspace

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM, reason="Chromium is not installed (apt-get install chromium)")]
HOSTILE = 'a cat <img src=x onerror="document.title=\'pwned\'">'
HOSTILE_FILE = '"><img src=y onerror=alert(2)>.png'  # a training image's name


def tiny_clip_spec(folder: Path) -> str:
    """A tiny open_clip config and random weights in the CLIP models' folder, made in a child process (the app's
    process loads them itself): the embedder spec that names them."""
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]);"
            "from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint;"
            "f = Path(sys.argv[1]); (f / (TINY_MODEL + '.json')).write_text(json.dumps(TINY_CONFIG));"
            "register_tiny_clip(f); save_tiny_checkpoint(f / 'tiny.pt')")
    subprocess.run([sys.executable, "-c", code, str(folder), str(Path(__file__).resolve().parent)], check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return f"{folder / 'lorakit-tiny-clip.json'}:{folder / 'tiny.pt'}"


def training_image(colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (64, 64), colour)
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=(250, 240, 40))
    return image


class Copier:
    """Paints a plain square, except at epoch 2 and weight 1, where it hands back the hostile-named training image."""

    name = "copier"

    def __init__(self, copied: Image.Image):
        self.copied = copied

    def generate(self, requests, *, progress=None, cancel=None):
        out = []
        for i, req in enumerate(requests):
            lora = req.loras[0]
            copy = lora.weight == 1 and lora.path is not None and lora.path.name.endswith("000002.safetensors")
            image = self.copied.copy() if copy else Image.new("RGB", (req.width, req.height),
                                                              (int(200 * lora.weight), 80, 140))
            out.append(GenImage(image, f"{req.prompt}\nSeed: {req.seed}", req.seed, req))
            if progress:
                progress(i + 1, len(requests), "painting")
        return out


def judge_json(grid: dict, copied: str, other: str) -> dict:
    """judge.json as the judge writes it for this grid: one sample per cell, the epoch 2 × weight 1 one a copy."""
    cells = []
    for c in grid["cells"]:
        copy = c["epoch"] == "epoch 2" and c["weight"] == "1"
        cells.append({"epoch": c["epoch"], "weight": c["weight"], "copy_rate": 1.0 if copy else 0.0,
                      "strength": 0.0 if c["weight"] == "0" else (0.9 if copy else 0.55),
                      "adherence": 1.0 if c["weight"] == "0" else (0.6 if copy else 0.95), "clip_score": 0.3,
                      "diversity": None,
                      "samples": [{"cell": c["index"], "image": c["image"], "prompt": c["prompt"], "kind": "off",
                                   "seed": c["seed"], "nearest": copied if copy else other,
                                   "similarity": 0.998 if copy else 0.31, "copy": copy}]})
    return {
        "grid": grid["id"], "run": grid["run"], "project": "shoot", "state": "done", "error": "",
        "request": {}, "descriptor": {"name": "perceptual", "id": "perceptual-v1", "threshold": 0.9,
                                      "unit": "cosine similarity of perceptual descriptors", "fallback": ""},
        "embedder": "fake", "training_images": 2, "skipped": [],
        "baseline": {"weight": "0", "clip_score": 0.3, "similarity_to_training": 0.4,
                     "training_self_similarity": 0.9},
        "cells": cells,
        "epochs": [{"epoch": e, "weight": "1", "copy_rate": r, "diversity": None, "copies": int(r), "samples": 1}
                   for e, r in (("epoch 1", 0.0), ("epoch 2", 1.0))],
        "first_copying_epoch": "epoch 2",
        "recommendation": {"epoch": "epoch 1", "weight": 1.0, "goal": "style",
                           "reasons": ["epoch 2 at weight 1 copies 100 % of its samples (over 10 %)",
                                       "epoch 1 at weight 1: the strongest style left (0.55), adherence 0.95 ≥ 0.8"],
                           "scores": {"strength": 0.55, "adherence": 0.95, "copy_rate": 0.0}},
        "elapsed_s": 1.0}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("judge")
    home, lora = tmp / "home", tmp / "Lora"
    project = Workspace(home).create("shoot", trigger_words=("zq",), resolution=64)
    concept = project.root / "dataset" / "1_art"
    concept.mkdir(parents=True, exist_ok=True)
    copied = training_image((200, 30, 30))
    copied.save(concept / HOSTILE_FILE)
    training_image((30, 30, 200)).save(concept / "blue.png")
    for name in (HOSTILE_FILE, "blue.png"):
        (concept / name).with_suffix(".txt").write_text("zq, circle", encoding="utf-8")
    run = make_run(project)
    host = StandaloneHost(home=home, lora=lora, models=tmp / "models")
    request = GridRequest.from_dict({"run": run, "epochs": "1,2", "weights": "0,1", "prompts": [HOSTILE],
                                     "with_and_without_trigger": False, "seeds": "1", "width": 64, "height": 64})
    grid = EvalService(host).run("shoot", request, generator=Copier(copied))
    assert grid["state"] == "done" and grid["made"] == 4
    atomic_write_json(project.root / "eval" / grid["id"] / "judge.json",
                      judge_json(grid, f"dataset/1_art/{HOSTILE_FILE}", "dataset/1_art/blue.png"))
    config = tmp / "config.toml"
    config.write_text(f'lora_dir = "{lora}"\nmodels_dir = "{tmp / "models"}"\n')
    clip = tiny_clip_spec(tmp / "models" / "train-style" / "clip")
    site = Path(__file__).resolve().parent / "results_fake_site"  # the Host's generator: a painting stand-in
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]), "TRAIN_STYLE_CONFIG": str(config)}
    with running_app(home, tmp, env=env) as url:
        yield url, grid["id"], lora, run, clip


def test_the_judgement_shown_and_written_to_the_card(app):
    url, gid, lora, _, _ = app
    with open_page(url, height=2400, project="shoot", tab="Judge") as page:
        page.wait_for_function("() => [...document.querySelectorAll('#train_style_judge_report')]"
                               ".some(e => e.innerText.includes('Recommended: epoch 1 at weight 1'))", timeout=60_000)
        assert page.locator("#train_style_judge_judged input").input_value().startswith(gid)
        report = html_of(page, "train_style_judge_report")
        text = report.inner_text()
        assert "epoch 2 at weight 1 copies 100 % of its samples" in text
        assert "Copying starts at epoch 2" in text
        assert report.locator("svg.ts-judge-chart polyline").count() == 3
        assert report.locator("td.ts-recommended").count() == 1
        pairs = report.locator("figure.ts-judge-pair")
        assert pairs.count() == 1  # only the copy, beside the training image it copies
        pair = pairs.first
        for role in ("sample", "nearest"):  # both pictures drawn (loaded, not broken)
            img = pair.locator(f"img.ts-judge-{role}")
            assert img.get_attribute("src").startswith("data:image/")
            assert img.evaluate("e => e.complete && e.naturalWidth > 0")
        caption = pair.locator("figcaption").inner_text()
        assert "similarity 0.998" in caption and "threshold 0.9" in caption
        assert "cosine similarity of perceptual descriptors" in caption
        assert HOSTILE in caption and HOSTILE_FILE in caption  # hostile text as text
        assert page.title() != "pwned" and page.locator("img[src='x'], img[src='y']").count() == 0
        page.click("#train_style_judge_apply")
        page.wait_for_function("() => [...document.querySelectorAll('#train_style_judge_applied')]"
                               ".some(e => e.innerText.includes('Preferred weight 1'))", timeout=30_000)
        page.screenshot(path=os.environ.get("TRAIN_STYLE_JUDGE_SCREENSHOT", "/tmp/judge_panel.png"), full_page=True)
    card = read_json(lora / "train-style" / "shoot" / "zq-000001.json")
    assert card["preferred weight"] == 1.0 and gid in card["notes"]


def test_judge_this_run_as_a_job_found_again_after_a_reload(app):
    url, first, _, run, clip = app
    with open_page(url, height=2400, project="shoot", tab="Judge") as page:
        page.wait_for_function(f"() => document.querySelector('#train_style_judge_run input')?.value"
                               f"?.startsWith({run!r})", timeout=60_000)
        pick(page, "train_style_judge_descriptor", "perceptual")
        for name, value in (("embedder", clip), ("weights", "1"), ("epochs", "2"), ("seeds", "1"),
                            ("caption_samples", "0")):
            page.fill(f"#train_style_judge_{name} textarea, #train_style_judge_{name} input", value)
        page.fill("#train_style_judge_prompts textarea", HOSTILE)
        page.click("#train_style_judge_start")
        page.wait_for_function("() => [...document.querySelectorAll('#train_style_judge_message')]"
                               ".some(e => e.innerText.includes('Judging run'))", timeout=30_000)
        # the page script follows the job and redraws the panel when it ends: the new grid's report, judged
        page.wait_for_function(f"() => [...document.querySelectorAll('.ts-judge')].some(e => e.dataset.gridId "
                               f"&& e.dataset.gridId !== {first!r} && e.dataset.state === 'done')", timeout=120_000)
        assert page.locator("#train_style_judge_job").last.get_attribute("data-state") == "done"
        report = html_of(page, "train_style_judge_report")
        gid = report.locator(".ts-judge").get_attribute("data-grid-id")
        text = report.inner_text()
        assert "descriptor perceptual" in text and "Epoch × weight" in text
        assert ("Recommended: epoch 2 at weight 1" in text) or ("No recommendation." in text)
        assert report.locator("table.ts-judge-cells tbody td").count() == 2  # epoch 2 × weights 0 (added) and 1
        assert page.title() != "pwned"
    with open_page(url, height=1600, project="shoot", tab="Judge") as page:
        page.wait_for_function(f"() => [...document.querySelectorAll('.ts-judge')]"
                               f".some(e => e.dataset.gridId === {gid!r})", timeout=60_000)
        assert page.locator("#train_style_judge_judged input").input_value().startswith(gid)
