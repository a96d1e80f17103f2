"""`overfit`: samples compared with a project's training images, from the core, the CLI (a real process) and the API
(a real FastAPI app). Training images and samples are real files: drawings made here, scikit-image's photos where
installed, near-copies made the way a memorising model would return them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from test_judge_descriptors import drawing, near_copies, skimage_photos
from tiny_sscd import save_tiny_sscd

from lib_lorakit import api
from lib_lorakit.host import StandaloneHost
from lib_lorakit.judge import descriptors as d
from lib_lorakit.judge import memorise
from lib_lorakit.judge.memorise import OverfitRequest, overfit
from lib_lorakit.schema import InvalidSettings

ROOT = Path(__file__).resolve().parents[1]
CONCEPT = "dataset/1_demo"


@pytest.fixture
def setup(workspace, tmp_path):
    """A project whose training images are 6 drawings (and 3 photos when scikit-image is here), a Host whose
    allowed folder is tmp/user, and what each training image looks like."""
    project = workspace.create("demo")
    concept = project.add_concept("demo", 1)
    training: dict[str, Image.Image] = {f"draw{s}.png": drawing(s) for s in range(6)}
    training.update({p.name: Image.open(p).convert("RGB") for p in skimage_photos()[:3]})
    for name, im in training.items():
        im.save(concept.folder / name)
    user = tmp_path / "user"
    user.mkdir()
    host = StandaloneHost(home=project.root.parent, lora=tmp_path / "lora", models=tmp_path / "models",
                          extra_roots=[user])
    return host, training, user


def write_samples(folder: Path, training: dict[str, Image.Image], copied: list[str]) -> dict[str, str]:
    """Near-copies of the `copied` training images and new drawings; sample file → the training image it copies
    ("" for none)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name in copied:
        for kind, im in near_copies(training[name]).items():
            file = f"{Path(name).stem}-{kind}.png"
            im.save(folder / file)
            expected[file] = name
    for s in range(100, 105):
        drawing(s).save(folder / f"new{s}.png")
        expected[f"new{s}.png"] = ""
    return expected


def perceptual(samples, **more) -> OverfitRequest:
    return OverfitRequest.from_dict({"samples": samples, "descriptor": "perceptual", **more})


def test_near_copies_are_flagged_with_their_training_image_and_new_pictures_are_not(setup):
    host, training, user = setup
    copied = ["draw1.png", "draw4.png", *[n for n in training if not n.startswith("draw")][:1]]
    expected = write_samples(user / "samples", training, copied)
    report = overfit(host, "demo", perceptual(str(user / "samples")))
    got = {Path(m.image).name: m for m in report.samples}
    assert set(got) == set(expected)
    for file, original in expected.items():
        m = got[file]
        assert m.image == str(user / "samples" / file), "the sample named as given"
        if original:
            assert m.copy and m.nearest == f"{CONCEPT}/{original}", (file, m)
        else:
            assert not m.copy, (file, m)
    copies = sum(1 for o in expected.values() if o)
    assert report.copy_rate == pytest.approx(copies / len(expected))
    assert (report.descriptor, report.threshold) == ("perceptual", d.PERCEPTUAL_THRESHOLD)
    assert report.unit == d.UNITS["perceptual"] and report.training_images == len(training)
    assert report.diversity is not None and 0 < report.diversity < 2
    data = report.to_dict()
    assert data["threshold"] == d.PERCEPTUAL_THRESHOLD and data["unit"].startswith("cosine similarity")


def test_a_threshold_given_replaces_the_descriptors_own(setup):
    host, training, user = setup
    write_samples(user / "s", training, ["draw2.png"])
    strict = overfit(host, "demo", perceptual(str(user / "s"), threshold=0.9999))
    loose = overfit(host, "demo", perceptual(str(user / "s"), threshold=-1))
    assert strict.threshold == 0.9999 and loose.threshold == -1.0
    assert loose.copy_rate == 1.0
    assert strict.copy_rate < overfit(host, "demo", perceptual(str(user / "s"))).copy_rate


def test_unreadable_samples_are_skipped_with_a_reason_and_awkward_ones_judged(setup):
    host, training, user = setup
    folder = user / "odd"
    folder.mkdir()
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "empty.jpg").write_bytes(b"")
    training["draw3.png"].convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    grey8 = np.asarray(training["draw5.png"].convert("L"), dtype=np.uint16)
    Image.fromarray(grey8 * 257, "I;16").save(folder / "grey16.png")  # the same picture in 16-bit grey
    Image.fromarray(grey8.astype(np.uint8), "L").save(host.projects_home() / "demo" / CONCEPT / "grey.png")
    (folder / "notes.txt").write_text("not an image")  # not an image suffix: not a sample at all
    report = overfit(host, "demo", perceptual(str(folder)))
    skipped = {Path(i).name: why for i, why in report.skipped}
    assert set(skipped) == {"corrupt.png", "empty.jpg"}
    assert all(why for why in skipped.values())
    got = {Path(m.image).name: m for m in report.samples}
    assert set(got) == {"cmyk.jpg", "grey16.png"}
    assert got["cmyk.jpg"].copy and got["cmyk.jpg"].nearest == f"{CONCEPT}/draw3.png"
    assert got["grey16.png"].copy and got["grey16.png"].nearest == f"{CONCEPT}/grey.png"
    assert got["grey16.png"].similarity > 0.99


def test_sscd_through_a_local_torchscript_model_and_the_store(setup, tmp_path):
    """Random weights: the plumbing (descriptor, ids, the store's cache), not what counts as a copy."""
    host, training, user = setup
    model = save_tiny_sscd(user / "tiny.pt")
    (user / "s").mkdir()
    training["draw0.png"].save(user / "s" / "same.png")
    request = OverfitRequest.from_dict({"samples": str(user / "s"), "descriptor": f"sscd:{model}"})
    report = overfit(host, "demo", request)
    assert report.descriptor == "sscd" and report.descriptor_id.startswith("sscd/tiny#")
    assert report.threshold == 0.5 and report.unit == "cosine similarity of SSCD descriptors"
    assert report.samples[0].nearest == f"{CONCEPT}/draw0.png" and report.samples[0].similarity > 0.999
    assert report.fallback == ""
    stores = list((host.projects_home() / "demo" / ".lorakit" / "embeddings").iterdir())
    chunks = sorted(p.name for s in stores for p in s.glob("chunk-*.npz"))
    overfit(host, "demo", request)  # the training side again: all from the store
    assert sorted(p.name for s in stores for p in s.glob("chunk-*.npz")) == chunks


def test_sscd_that_cannot_be_downloaded_falls_back_with_the_reason(setup, monkeypatch):
    host, training, user = setup
    write_samples(user / "s", training, ["draw1.png"])
    monkeypatch.setattr(d, "SSCD_URL", "http://127.0.0.1:9/sscd_disc_mixup.torchscript.pt")
    report = overfit(host, "demo", OverfitRequest.from_dict({"samples": str(user / "s")}))  # sscd: the default
    assert report.descriptor == "perceptual" and report.threshold == d.PERCEPTUAL_THRESHOLD
    assert "downloading it failed" in report.fallback and "perceptual descriptor" in report.fallback
    assert str(host.models_dir() / "train-style" / "sscd") in report.fallback
    assert report.to_dict()["fallback"] == report.fallback
    assert any(m.copy for m in report.samples)


def test_clip_with_the_tiny_clip_model(setup):
    from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

    host, training, user = setup
    config = user / f"{TINY_MODEL}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    register_tiny_clip(user)
    weights = save_tiny_checkpoint(user / "tiny-clip.pt")
    (user / "s").mkdir()
    training["draw2.png"].save(user / "s" / "same.png")
    report = overfit(host, "demo", OverfitRequest.from_dict(
        {"samples": [str(user / "s" / "same.png")], "descriptor": "clip", "embedder": f"{config}:{weights}"}))
    assert report.descriptor == "clip" and report.threshold == d.CLIP_THRESHOLD
    assert report.unit == "cosine similarity of CLIP image embeddings"
    assert report.samples[0].image == str(user / "s" / "same.png")
    assert report.samples[0].copy and report.samples[0].nearest == f"{CONCEPT}/draw2.png"


def test_a_bad_request_names_every_field():
    with pytest.raises(InvalidSettings) as e:
        OverfitRequest.from_dict({"samples": 3, "threshold": 2, "descriptor": "phash", "colour": "red"})
    text = str(e.value)
    for words in ("samples: expected a folder", "threshold: expected a cosine similarity", "descriptor: expected one",
                  "colour: unknown field"):
        assert words in text
    with pytest.raises(InvalidSettings, match="threshold"):
        OverfitRequest.from_dict({"samples": "x", "threshold": True})
    with pytest.raises(InvalidSettings, match="samples"):
        OverfitRequest.from_dict({"samples": []})
    req = OverfitRequest.from_dict({"samples": ["a.png", "b.png"], "threshold": 0.6})
    assert OverfitRequest.from_dict(req.to_dict()) == req


def test_a_folder_is_read_two_levels_deep_and_capped(setup, monkeypatch):
    host, training, user = setup
    top = user / "deep"
    (top / "a" / "b").mkdir(parents=True)
    training["draw0.png"].save(top / "one.png")
    training["draw1.png"].save(top / "a" / "two.png")
    training["draw2.png"].save(top / "a" / "b" / "three.png")  # too deep
    paths, shown = memorise.sample_files(host, str(top))
    assert shown == [str(top / "a" / "two.png"), str(top / "one.png")]
    monkeypatch.setattr(memorise, "MAX_SAMPLES", 1)
    with pytest.raises(Exception, match="More than 1 sample images"):
        memorise.sample_files(host, str(top))


def test_a_project_without_training_images_says_so(workspace, tmp_path):
    project = workspace.create("empty")
    (tmp_path / "s").mkdir()
    drawing(1).save(tmp_path / "s" / "a.png")
    host = StandaloneHost(home=project.root.parent, lora=tmp_path / "l", models=tmp_path / "m", extra_roots=[tmp_path])
    with pytest.raises(Exception, match="no training images"):
        overfit(host, "empty", perceptual(str(tmp_path / "s")))


# --- the CLI, as a process ----------------------------------------------------------------------------------------

def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAIN_STYLE_CONFIG": str(home.parent / "no-config.toml")}
    return subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_overfit_json_and_the_copies_listed_first(setup):
    host, training, user = setup
    expected = write_samples(user / "s", training, ["draw3.png"])
    out = run_cli(host.projects_home(), "overfit", "demo", "--samples", str(user / "s"), "--descriptor",
                  "perceptual", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"samples", "copy_rate", "descriptor", "threshold", "unit"} <= set(data)
    assert data["descriptor"] == "perceptual" and data["threshold"] == d.PERCEPTUAL_THRESHOLD
    assert all(set(s) == {"image", "nearest", "similarity", "copy"} for s in data["samples"])
    flagged = {Path(s["image"]).name for s in data["samples"] if s["copy"]}
    assert flagged == {f for f, o in expected.items() if o}
    assert all(s["nearest"] == f"{CONCEPT}/draw3.png" for s in data["samples"] if s["copy"])
    assert data["copy_rate"] == pytest.approx(len(flagged) / len(expected), abs=1e-4)
    human = run_cli(host.projects_home(), "overfit", "demo", "--samples", str(user / "s"), "--descriptor",
                    "perceptual")
    assert human.returncode == 0, human.stderr
    lines = [line.strip() for line in human.stdout.splitlines()[1:] if line.strip()]
    assert all(line.startswith("COPY") and f"≈ {CONCEPT}/draw3.png" in line for line in lines[:len(flagged)])
    assert not any(line.startswith("COPY") for line in lines[len(flagged):])


def test_cli_a_missing_folder_fails_with_words(setup):
    host, _, user = setup
    out = run_cli(host.projects_home(), "overfit", "demo", "--samples", str(user / "nowhere"), "--descriptor",
                  "perceptual", "--json")
    assert out.returncode != 0 and "No folder or file at" in out.stderr


# --- the API ------------------------------------------------------------------------------------------------------

def client_for(host: StandaloneHost) -> TestClient:
    app = FastAPI()
    api.mount(app, host)
    return TestClient(app)


def wait_job(client: TestClient, job_id: str) -> dict:
    for _ in range(600):
        job = client.get(f"/train-style/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_api_overfit_is_a_job_confined_to_the_allowed_folders(setup, tmp_path):
    host, training, user = setup
    client = client_for(host)
    url = "/train-style/v1/projects/demo/overfit"
    outside = tmp_path / "elsewhere"
    write_samples(outside, training, ["draw0.png"])
    os.symlink(outside, user / "link")
    (user / "mixed").mkdir()
    training["draw0.png"].save(user / "mixed" / "ok.png")
    os.symlink(outside / "new100.png", user / "mixed" / "leak.png")
    for samples in (str(outside), str(user / "link"), str(user / ".." / "elsewhere"), [str(outside / "new100.png")],
                    str(user / "mixed")):
        r = client.post(url, json={"samples": samples, "descriptor": "perceptual"})
        assert r.status_code == 403, samples
        assert "outside the allowed folders" in r.json()["detail"]
    r = client.post(url, json={"samples": str(user / "mixed" / "ok.png"), "descriptor": f"sscd:{outside}/m.pt"})
    assert r.status_code == 403 and "outside the allowed folders" in r.json()["detail"]
    r = client.post(url, json={"samples": 5, "threshold": "high"})
    assert r.status_code == 400 and "samples" in r.json()["detail"] and "threshold" in r.json()["detail"]
    assert client.get("/train-style/v1/jobs").json()["jobs"] == [], "nothing started for a refused request"

    expected = write_samples(user / "s", training, ["draw5.png"])
    r = client.post(url, json={"samples": str(user / "s"), "descriptor": "perceptual"})
    assert r.status_code == 200, r.text
    job = wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "done", job
    result = job["result"]
    assert result["descriptor"] == "perceptual" and result["threshold"] == d.PERCEPTUAL_THRESHOLD
    flagged = {Path(s["image"]).name for s in result["samples"] if s["copy"]}
    assert flagged == {f for f, o in expected.items() if o}
