"""Crop modes, the crop request, the training TOML for padded images, and the crop command and routes.

Planners are checked on numbers a user would see (a head kept whole where a centre crop cuts it); the rest runs on
real projects: the CLI in a subprocess, the API over HTTP on a real FastAPI app, and sd-scripts' own config parser
(in its trainer environment, where present) on the TOML of a project holding letterboxed images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from awkward import jpeg_bytes, pattern
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from lib_lorakit import api
from lib_lorakit.captions.store import CaptionStore
from lib_lorakit.crop import derive as dv
from lib_lorakit.crop import modes
from lib_lorakit.crop.service import CropRequest, padded_share, run_crop
from lib_lorakit.dataset.importer import import_paths
from lib_lorakit.errors import LorakitError
from lib_lorakit.host import StandaloneHost
from lib_lorakit.project import Project, Workspace
from lib_lorakit.train import config as cf
from lib_lorakit.train.presets import resolve

ROOT = Path(__file__).resolve().parents[1]
SD_SCRIPTS = ROOT / "sd-scripts"


@dataclass(frozen=True)
class Found:
    kind: str
    left: float
    top: float
    right: float
    bottom: float
    score: float


# --- planners -----------------------------------------------------------------------------------------------------
def test_centre_crop_cuts_the_head_that_smart_crop_keeps_with_headroom_and_body_below():
    head = Found("head", 150, 60, 250, 180, 0.9)  # a standing figure in a 400×1000 portrait
    centre = modes.center_box(400, 1000, modes.Aspect(1, 1))
    assert centre == (0, 300, 400, 700) and centre[1] > head.top  # the head is cut away
    box, placed = modes.smart_box(400, 1000, modes.Aspect(1, 1), [head])
    assert placed and box[2] - box[0] == 400 and box[3] - box[1] == 400
    assert box[1] <= head.top - 0.2 * (head.bottom - head.top)  # headroom above the head
    assert box[3] - head.bottom > 2 * (head.top - box[1])  # more of the body below than room above
    # a face box is raised to where the head begins, and the subject is centred across
    wide, _ = modes.smart_box(1000, 400, modes.Aspect(1, 1), [Found("face", 800, 100, 900, 200, 0.8)])
    assert wide == (600, 0, 1000, 400)


def test_smart_crop_without_a_subject_centres_and_weak_boxes_do_not_pull():
    assert modes.smart_box(400, 1000, modes.Aspect(1, 1), []) == ((0, 300, 400, 700), False)
    strong, weak = Found("face", 50, 500, 150, 600, 0.9), Found("face", 300, 0, 380, 80, 0.2)
    box, _ = modes.smart_box(400, 1000, modes.Aspect(1, 1), [strong, weak])
    assert box[1] <= 500 - 45 - 10 and box[3] >= 600  # only the strong face placed it


def test_letterbox_box_holds_the_whole_picture_at_the_aspect():
    assert modes.letterbox_box(120, 60, modes.Aspect(1, 1)) == (0, -30, 120, 90)
    assert modes.letterbox_box(60, 120, modes.Aspect(1, 1)) == (-30, 0, 90, 120)
    assert modes.letterbox_box(100, 100, modes.Aspect(1, 1)) == (0, 0, 100, 100)
    left, top, right, bottom = modes.letterbox_box(1000, 333, modes.Aspect(2, 3))
    assert left <= 0 and top <= 0 and right >= 1000 and bottom >= 333
    assert abs((right - left) / (bottom - top) - 2 / 3) < 0.01


@pytest.mark.parametrize("text, words", [("0:1", "zero side"), ("3:0", "zero side"), ("wide", "expected 'square'"),
                                         ("1:20", "thinner than 8:1"), (7, "expected 'square'")])
def test_bad_aspects_are_named(text, words):
    with pytest.raises(LorakitError, match=words):
        modes.parse_aspect(text)


def test_manual_box_must_lie_inside():
    assert modes.manual_box(100, 80, (10, 10, 50, 50)) == (10, 10, 50, 50)
    with pytest.raises(LorakitError, match="reaches outside the 100×80 picture"):
        modes.manual_box(100, 80, (-1, 0, 50, 50))


@pytest.mark.parametrize("data, words", [
    ({"mode": "crop"}, "mode: expected one of smart, letterbox"),
    ({"mode": "center", "colour": "red"}, "unknown option(s) colour"),
    ({"mode": "letterbox", "fraction": 1.5}, "fraction: expected a number above 0"),
    ({"mode": "letterbox", "fill": "pink"}, "fill: expected one of white"),
    ({"mode": "manual"}, "box: manual mode needs a box"),
    ({"mode": "center", "box": [0, 0, 1, 1]}, "only manual mode takes a box"),
    ({"mode": "manual", "box": [0, 0, 1]}, "box: expected four whole numbers"),
    ({"mode": "center", "images": "dataset/1_a/x.png"}, "images: expected a list"),
    ({"mode": "letterbox", "tag": "a, b"}, "tag: expected one caption tag"),
    ({"mode": "center", "aspect": "0:1"}, "aspect: '0:1' has a zero side"),
])
def test_the_request_names_the_bad_field(data, words):
    with pytest.raises(LorakitError, match=words.replace("(", r"\(").replace(")", r"\)")):
        CropRequest.from_dict(data)


def test_the_padded_share_is_the_same_on_every_run_and_of_the_right_size():
    images = [f"dataset/1_a/{i}.png" for i in range(40)]
    chosen = padded_share(images, 0.25)
    assert len(chosen) == 10 and chosen == padded_share(list(reversed(images)), 0.25)
    assert padded_share(images, 1.0) == set(images)


# --- on a project -------------------------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Project:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"p{i}.jpg").write_bytes(jpeg_bytes(pattern(i, 96 + 16 * i, 64)))
        (src / f"p{i}.txt").write_text("zkstyle, a tree")
    p = Workspace(tmp_path / "home").create("demo", trigger_words=("zkstyle",))
    import_paths(p, [str(src)], [tmp_path], concept="art")
    square = tmp_path / "other"
    square.mkdir()
    Image.fromarray(pattern(50, 64, 64)).save(square / "sq.png")
    import_paths(p, [str(square)], [tmp_path], concept="plain")
    return p


def test_letterbox_a_fraction_pads_that_share_crops_the_rest_and_tags_the_padded(project):
    originals = {f.name: f.read_bytes() for f in (project.root / "originals").iterdir()}
    preview = run_crop(project, CropRequest.from_dict({"mode": "letterbox", "concept": "art", "fraction": 0.5,
                                                       "tag": "letterboxed", "dry_run": True}))
    assert len(preview.changed) == 6 and not preview.step
    assert all(p.suffix == ".jpg" for p in project.concept("art").folder.iterdir() if p.suffix != ".txt")
    report = run_crop(project, CropRequest.from_dict({"mode": "letterbox", "concept": "art", "fraction": 0.5,
                                                      "tag": "letterboxed"}))
    padded = [c for c in report.changed if c.masked]
    assert len(padded) == 3 and report.step and report.caption_step
    assert [(c.box, c.masked) for c in preview.changed] == [(c.box, c.masked) for c in report.changed]
    for c in report.changed:
        with Image.open(project.root / c.image) as im:
            assert im.size == c.size and (im.mode == "RGBA") == c.masked
            if not c.masked:
                assert c.mode in ("smart", "center") and im.size[0] == im.size[1] == 64
    captions = {r.image: r.tags for r in CaptionStore(project).records(concept="art")}
    assert {i for i, tags in captions.items() if "letterboxed" in tags} == {c.image for c in padded}
    # reset takes the padding and the tag away again; the originals never changed
    again = run_crop(project, CropRequest.from_dict({"mode": "reset", "concept": "art", "tag": "letterboxed"}))
    assert not any(c.masked for c in again.changed)
    assert not any("letterboxed" in r.tags for r in CaptionStore(project).records())
    assert {f.name: f.read_bytes() for f in (project.root / "originals").iterdir()} == originals


def test_bucket_aspect_crops_each_image_to_its_own_bucket(project):
    buckets = pytest.importorskip("lib_lorakit.crop.buckets")  # brief A's module
    Bucketer, BucketSettings = buckets.Bucketer, buckets.BucketSettings

    report = run_crop(project, CropRequest.from_dict({"mode": "center", "concept": "art", "aspect": "bucket"}))
    bucketer = Bucketer(BucketSettings(resolution=(512, 512)))
    for c in report.changed:
        w, h = dv.original_size(project, c.image)
        bw, bh = bucketer.place(w, h).bucket
        assert abs(c.size[0] / c.size[1] - bw / bh) < 0.05


def test_the_toml_masks_subsets_with_padded_images_only(project):
    run_crop(project, CropRequest.from_dict({"mode": "letterbox", "concept": "art"}))
    files = cf.build_run_files(project, resolve("style-sd15-lora"), run_dir=project.root / "runs" / "r1",
                               pretrained_model="/models/base.safetensors", base_arch="SD1")
    subsets = {s["class_tokens"]: s for s in files.dataset["datasets"][0]["subsets"]}
    assert subsets["art"]["alpha_mask"] is True and "alpha_mask" not in subsets["plain"]
    assert "masked_loss" not in json.dumps(files.args)  # alpha masks mask the loss by themselves (sd-scripts)


PARSE = textwrap.dedent("""
    import json, sys
    from library import config_util, train_util
    import train_network
    parser = train_network.setup_parser()
    sys.argv = ["train_network.py", "--config_file", sys.argv[1]]
    args = train_util.read_config_from_file(parser.parse_args(), parser)
    train_util.prepare_dataset_args(args, True)
    user_config = config_util.load_user_config(args.dataset_config)
    sanitizer = config_util.ConfigSanitizer(True, True, args.masked_loss, True)
    blueprint = config_util.BlueprintGenerator(sanitizer).generate(user_config, args)
    subsets = blueprint.dataset_group.datasets[0].subsets
    print(json.dumps({s.params.class_tokens: s.params.alpha_mask for s in subsets}))
""")


def trainer_python() -> str | None:
    venv = os.environ.get("TRAIN_STYLE_TRAINER_VENV")
    for candidate in (os.environ.get("TRAIN_STYLE_TRAINER_PYTHON"), venv and f"{venv}/bin/python"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.mark.skipif(not (SD_SCRIPTS / "train_network.py").is_file(), reason="the sd-scripts submodule is absent")
def test_sd_scripts_own_parser_reads_alpha_mask_per_subset(project):
    python = trainer_python()
    if not python:
        pytest.skip("sd-scripts' trainer environment is absent (set TRAIN_STYLE_TRAINER_VENV)")
    run_crop(project, CropRequest.from_dict({"mode": "letterbox", "concept": "art", "aspect": "2:3"}))
    run_dir = project.root / "runs" / "r1"
    files = cf.build_run_files(project, resolve("style-sd15-lora"), run_dir=run_dir,
                               pretrained_model="/models/base.safetensors", base_arch="SD1")
    paths = cf.write_run_files(files, run_dir)
    done = subprocess.run([python, "-c", PARSE, str(paths.args_toml)], cwd=SD_SCRIPTS, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"art": True, "plain": False}


# --- the command and the routes -----------------------------------------------------------------------------------
def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_crop_letterbox_json_undo_and_bad_input(project):
    home = project.root.parent
    done = cli(home, "crop", "demo", "letterbox", "--concept", "plain", "--aspect", "2:1", "--fill", "edge", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["changed"] == [{"image": "dataset/1_plain/sq.png", "mode": "letterbox", "box": [-32, 0, 96, 64],
                                "size": [128, 64], "masked": True}]
    assert data["skipped"] == [] and data["step"]
    assert Image.open(project.root / "dataset/1_plain/sq.png").size == (128, 64)
    undo = cli(home, "crop", "demo", "undo")
    assert undo.returncode == 0 and "Undid: Letterbox 1 image(s)" in undo.stdout
    assert Image.open(project.root / "dataset/1_plain/sq.png").size == (64, 64)
    for args, words in ((("center", "--aspect", "0:1"), "aspect: '0:1' has a zero side"),
                        (("manual", "dataset/1_plain/sq.png", "--box", "0,0,65,10"), "reaches outside the 64×64"),
                        (("center", "dataset/1_plain/missing.png"), "No image 'dataset/1_plain/missing.png'")):
        bad = cli(home, "crop", "demo", *args, "--json")
        assert bad.returncode == 1 and words in json.loads(bad.stdout)["error"], bad.stdout


def test_api_preview_crop_undo_redo_over_http(tmp_path, project):
    host = StandaloneHost(home=project.root.parent, lora=tmp_path / "lora", models=tmp_path / "models")
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    base = "/train-style/v1/projects/demo/crop"
    body = {"mode": "smart", "images": ["dataset/1_plain/sq.png"], "aspect": "1:2"}
    preview = client.post(f"{base}/preview", json=body)
    assert preview.status_code == 200 and preview.json()["dry_run"] is True
    assert Image.open(project.root / "dataset/1_plain/sq.png").size == (64, 64)
    done = client.post(base, json=body).json()
    assert done["changed"][0]["size"] == [32, 64] and done["changed"][0]["box"] == preview.json()["changed"][0]["box"]
    assert client.get(f"{base}/steps", params={"image": "dataset/1_plain/sq.png"}).json()["steps"]["crop"] == \
        done["changed"][0]["box"]
    assert client.post(f"{base}/undo").status_code == 200
    assert Image.open(project.root / "dataset/1_plain/sq.png").size == (64, 64)
    assert client.post(f"{base}/redo").json()["derived"][0]["size"] == [32, 64]
    assert [s["label"] for s in client.get(f"{base}/history").json()["history"]] == ["Smart-crop 1 image(s) to 1:2"]
    for bad, status, words in (({"mode": "center", "aspect": "0:1"}, 400, "zero side"),
                               ({"mode": "center", "images": ["dataset/1_plain/nope.png"]}, 404, "No image"),
                               ({"mode": "center", "images": ["../../etc/passwd"]}, 400, "expected an image path")):
        r = client.post(base, json=bad)
        assert r.status_code == status and words in r.json()["detail"], r.text
    job = client.post(base, json={"mode": "center", "concept": "art", "background": True}).json()["job"]
    state = host_wait(client, job["id"])
    assert state["state"] == "done" and len(state["result"]["changed"]) == 6


def host_wait(client: TestClient, job_id: str) -> dict:
    import time

    for _ in range(600):
        state = client.get(f"/train-style/v1/jobs/{job_id}").json()
        if state["state"] not in ("queued", "running"):
            return state
        time.sleep(0.05)
    raise AssertionError("the crop job did not finish")


def test_smart_crop_uses_the_detector_it_is_given(project):
    image = "dataset/1_art/p5.jpg"  # 176×64
    found = [Found("head", 140, 5, 170, 35, 0.9)]
    report = run_crop(project, CropRequest.from_dict({"mode": "smart", "images": [image]}),
                      detector=lambda path: found)
    assert report.changed[0].mode == "smart" and report.changed[0].box == (112, 0, 176, 64)
    out = np.asarray(Image.open(project.root / report.changed[0].image))
    assert out.shape == (64, 64, 3)


def test_undoing_a_tagged_letterbox_takes_the_tag_back_too_and_redo_restores_both(project):
    from lib_lorakit.crop.service import redo_crop, undo_crop

    image = "dataset/1_plain/sq.png"
    report = run_crop(project, CropRequest.from_dict({"mode": "letterbox", "images": [image], "aspect": "2:1",
                                                      "tag": "letterboxed"}))
    assert report.changed[0].masked and "letterboxed" in CaptionStore(project).record(image).tags
    undone = undo_crop(project)
    assert undone.caption_step == report.caption_step
    assert Image.open(project.root / image).size == (64, 64)
    assert "letterboxed" not in CaptionStore(project).record(image).tags
    redone = redo_crop(project)
    assert redone.caption_step == report.caption_step
    assert Image.open(project.root / image).size == (128, 64)
    assert "letterboxed" in CaptionStore(project).record(image).tags
    # a caption change made since is not undone by the crop's undo
    CaptionStore(project).apply({image: "zkstyle, edited"}, label="edit", op={"op": "edit"})
    assert not undo_crop(project).caption_step
    assert CaptionStore(project).record(image).text == "zkstyle, edited"
