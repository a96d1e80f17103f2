"""Direction: estimators (antisymmetry, the few-shot classifier on embeddings whose answer is known, tags, head
boxes), labels and normalise through the CLI on drawn images with a tiny open_clip model, the caption swap table,
flip-unsafe images left alone, clear messages, originals untouched, and the HTTP routes."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

from lib_lorakit.cli import main
from lib_lorakit.detect import Box
from lib_lorakit.direction.estimate import (
    DIRECTIONS,
    MIRROR,
    Evidence,
    FewShot,
    HeadPose,
    TagEvidence,
    combine,
    side_model,
)
from lib_lorakit.direction.settings import DirectionSettings
from lib_lorakit.direction.swap import parse_swap_words, swap_words, unsafe_tags
from lib_lorakit.errors import LorakitError
from lib_lorakit.schema import InvalidSettings


# --- the swap table -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("before, after", [
    ("facing left", "facing right"),
    ("looking to the left, hand on left hip, left-handed", "looking to the right, hand on right hip, right-handed"),
    ("Facing_Left, RIGHT arm up", "Facing_Right, LEFT arm up"),
    ("a girl looking left while her right hand waves", "a girl looking right while her left hand waves"),
    ("leftover, upright, copyright, bright, lefty", "leftover, upright, copyright, bright, lefty"),
])
def test_the_swap_table_swaps_whole_words_only(before, after):
    assert swap_words(before, parse_swap_words("left:right")) == after


def test_trigger_words_and_an_edited_table():
    pairs = parse_swap_words("left:right, east:west")
    assert swap_words("zk left studio, facing left, east wind", pairs, keep=["zk left studio"]) == \
        "zk left studio, facing right, west wind"
    with pytest.raises(ValueError, match="already in another pair"):
        parse_swap_words("left:right, right:up")
    with pytest.raises(InvalidSettings, match="swap_words"):
        DirectionSettings.from_dict({"swap_words": "left-right"})


def test_unsafe_tags_match_whole_words():
    unsafe = DirectionSettings.from_dict({}).flip_unsafe
    assert unsafe_tags(["1girl", "side_ponytail", "english text", "textured skin", "smile"], unsafe) == \
        ["side_ponytail", "english text"]


# --- the estimators on embeddings whose answer is known --------------------------------------------------------------
def synthetic(n: int, seed: int = 0, d: int = 48) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Images whose embedding holds a hidden side axis (mirroring negates it) and a pose cluster, plus noise."""
    rng = np.random.default_rng(seed)
    side_axis = rng.normal(size=d)
    centres = {"side": rng.normal(size=d), "front": rng.normal(size=d), "away": rng.normal(size=d)}
    truth = [DIRECTIONS[i % 4] for i in range(n)]
    plain, mirrored = [], []
    for t in truth:
        pose = centres["side" if t in ("left", "right") else t] * 1.5
        noise = rng.normal(size=d) * 0.6
        s = {"left": 1.0, "right": -1.0}.get(t, 0.0) * (1.0 + rng.random())
        plain.append(pose + noise + s * side_axis)
        mirrored.append(pose + noise - s * side_axis)
    unit = lambda v: np.array(v) / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    return [f"i{k}" for k in range(n)], truth, unit(plain), unit(mirrored)


def test_the_side_score_is_exactly_antisymmetric():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(6, 32))
    p_left = side_model(d[:3], np.array([True, False, True]))
    assert np.allclose(p_left(d) + p_left(-d), 1.0, atol=1e-12)
    # an image and its mirror: the mirror's estimate is the opposite direction, exactly as sure
    images, _, plain, mirrored = synthetic(8, seed=2)
    ev = Evidence(images=["a", "b"], labels={"i0": "left", "i1": "right"}, embedded=["i0", "i1", "a", "b"],
                  vectors=np.stack([plain[0], plain[1], plain[4], mirrored[4]]),
                  flipped=np.stack([mirrored[0], mirrored[1], mirrored[4], plain[4]]))
    a, b = combine(ev, [FewShot()])
    assert a.direction == MIRROR[b.direction] and a.direction in ("left", "right")
    assert a.confidence == pytest.approx(b.confidence, abs=1e-12)


def test_the_few_shot_classifier_finds_the_known_answer_from_two_labels_a_class():
    images, truth, plain, mirrored = synthetic(80, seed=3)
    labels = {}
    for direction in DIRECTIONS:
        labels.update({images[i]: direction for i in [k for k, t in enumerate(truth) if t == direction][:2]})
    ev = Evidence(images=images, labels=labels, embedded=images, vectors=plain, flipped=mirrored)
    found = {e.image: e for e in combine(ev, [FewShot()])}
    rest = [i for i in images if i not in labels]
    right = sum(found[i].direction == truth[images.index(i)] for i in rest)
    assert right / len(rest) >= 0.9
    assert all(found[i].labelled and found[i].confidence == 1.0 for i in labels)


def test_with_no_front_or_away_labels_sides_are_told_apart_and_tags_say_away():
    images, truth, plain, mirrored = synthetic(40, seed=4)
    sides = [i for i, t in zip(images, truth, strict=True) if t in ("left", "right")]
    labels = {sides[0]: truth[images.index(sides[0])], sides[1]: truth[images.index(sides[1])]}
    ev = Evidence(images=images, labels=labels, embedded=images, vectors=plain, flipped=mirrored,
                  tags={images[k]: ("from behind",) for k, t in enumerate(truth) if t == "away"})
    found = {e.image: e for e in combine(ev)}
    assert sum(found[i].direction == truth[images.index(i)] for i in sides) >= len(sides) - 1
    away = [i for i, t in zip(images, truth, strict=True) if t == "away"]
    assert all(found[i].direction == "away" for i in away), [found[i].reason for i in away]


def test_tags_and_head_boxes_as_evidence():
    ev = Evidence(images=["a", "b", "c", "d"],
                  tags={"a": ("1girl", "from side", "facing_left"), "b": ("from behind",)},
                  boxes={"c": [Box("head", 100, 100, 200, 200, 0.9), Box("face", 105, 120, 150, 190, 0.8)],
                         "d": [Box("head", 100, 100, 200, 200, 0.9), Box("face", 125, 120, 175, 190, 0.8)]})
    found = {e.image: e for e in combine(ev, [TagEvidence(), HeadPose()])}
    assert (found["a"].direction, found["b"].direction) == ("left", "away")
    assert "'from side'" in found["a"].reason
    assert (found["c"].direction, found["d"].direction) == ("left", "front")
    assert combine(Evidence(images=["x"]))[0].direction == "unknown"


# --- drawn images, the CLI, a tiny open_clip ------------------------------------------------------------------------
def head(facing: str, *, size: int = 64, shift: int = 0, colour=(40, 90, 200)) -> Image.Image:
    """A head facing left: a disc with a nose on its left and an eye near it; mirrored for right."""
    im = Image.new("RGB", (size, size), "white")
    dr = ImageDraw.Draw(im)
    c = size // 2 + shift
    dr.ellipse([c - 18, 14, c + 18, 50], fill=colour)
    dr.polygon([(c - 18, 28), (c - 30, 34), (c - 18, 40)], fill=colour)
    dr.ellipse([c - 12, 24, c - 6, 30], fill="black")
    dr.rectangle([c + 8, 14, c + 18, 46], fill=(30, 20, 10))  # hair at the back of the head
    return ImageOps.mirror(im) if facing == "right" else im


def cli(home: Path, *args: str) -> tuple[int, dict]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--home", str(home), "--models-dir", str(home.parent / "models"), *args, "--json"])
    return code, json.loads(out.getvalue())


@pytest.fixture
def heads(tmp_path: Path) -> dict:
    """A project of six drawn heads imported through the CLI, captioned; the embedder spec of a tiny open_clip."""
    src = tmp_path / "src"
    src.mkdir()
    plan = {"l1": ("left", 0, "zkstyle, 1girl, facing left, hand on left hip"),
            "l2": ("left", 4, "zkstyle, 1girl, from side"),
            "l3": ("left", -4, "zkstyle, 1boy, looking at viewer"),
            "l4": ("left", 9, "zkstyle, 1boy"),
            "r1": ("right", 0, "zkstyle, 1girl, facing right, hand on right hip, left-handed"),
            "r2": ("right", 3, "zkstyle, 1girl, side ponytail, looking to the right"),
            "r3": ("right", -3, "zkstyle, 1boy, looking right")}
    for stem, (facing, shift, caption) in plan.items():
        head(facing, shift=shift).save(src / f"{stem}.png")
        (src / f"{stem}.txt").write_text(caption)
    home = tmp_path / "home"
    assert cli(home, "project", "new", "demo", "--trigger", "zkstyle")[0] == 0
    code, report = cli(home, "import", "demo", str(src), "--concept", "heads")
    assert code == 0, report
    config = tmp_path / "models" / f"{TINY_MODEL}.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(TINY_CONFIG))
    register_tiny_clip(tmp_path / "models")
    weights = save_tiny_checkpoint(tmp_path / "models" / "tiny.pt")
    project = home / "demo"
    images = {stem: f"dataset/1_heads/{stem}.png" for stem in plan}
    originals = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (project / "originals").rglob("*")
                 if p.is_file()}
    return {"home": home, "project": project, "images": images, "spec": f"{config}:{weights}",
            "originals": originals}


def _originals_unchanged(heads: dict) -> bool:
    now = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (heads["project"] / "originals").rglob("*")
           if p.is_file()}
    return now == heads["originals"] and len(now) >= 7


def test_estimate_with_a_tiny_clip_labels_through_the_cli_and_mirror_pairs(heads):
    home, img = heads["home"], heads["images"]
    assert cli(home, "direction", "demo", "label", img["l1"], "left")[0] == 0
    code, held = cli(home, "direction", "demo", "label", img["r1"], "right")
    assert code == 0 and held["labels"] == {img["l1"]: "left", img["r1"]: "right"}
    code, out = cli(home, "direction", "demo", "estimate", "--embedder", heads["spec"])
    assert code == 0, out
    found = {row["image"]: row for row in out["images"]}
    assert set(found) == set(img.values())
    assert {k: found[img[k]]["direction"] for k in ("l1", "r1")} == {"l1": "left", "r1": "right"}
    assert found[img["l1"]]["confidence"] == 1.0
    for row in out["images"]:
        assert row["direction"] in (*DIRECTIONS, "unknown") and 0.0 <= row["confidence"] <= 1.0
    # r1 is l1 mirrored pixel for pixel: with l1 unlabelled, the two get opposite sides, equally sure
    assert cli(home, "direction", "demo", "label", img["l1"], img["r1"], "unlabel")[0] == 0
    assert cli(home, "direction", "demo", "label", img["l2"], "left")[0] == 0
    assert cli(home, "direction", "demo", "label", img["r2"], "right")[0] == 0
    found = {row["image"]: row for row in cli(home, "direction", "demo", "estimate", "--embedder",
                                              heads["spec"])[1]["images"]}
    l1, r1 = found[img["l1"]], found[img["r1"]]
    assert l1["probabilities"]["left"] == pytest.approx(r1["probabilities"]["right"], abs=1e-4)
    assert l1["probabilities"]["right"] == pytest.approx(r1["probabilities"]["left"], abs=1e-4)
    assert _originals_unchanged(heads)


def test_normalise_flips_the_minority_swaps_captions_and_leaves_unsafe_ones(heads):
    home, img, project = heads["home"], heads["images"], heads["project"]
    for key in ("l1", "l2", "l3", "l4"):
        cli(home, "direction", "demo", "label", img[key], "left")
    cli(home, "direction", "demo", "label", img["r1"], img["r2"], img["r3"], "right")
    assert cli(home, "direction", "demo", "label", img["r3"], "never-flip")[0] == 0
    before = {p.name: p.read_bytes() for p in (project / "dataset" / "1_heads").iterdir()}
    # a dry run reports and changes nothing
    code, dry = cli(home, "direction", "demo", "normalise", "--dry-run")
    assert code == 0 and dry["to"] == "left" and dry["flipped"] == [img["r1"]]
    assert {p.name: p.read_bytes() for p in (project / "dataset" / "1_heads").iterdir()} == before
    # the real thing
    code, out = cli(home, "direction", "demo", "normalise", "--embedder", "none")
    assert code == 0, out
    assert out["flipped"] == [img["r1"]]
    unsafe = {u["image"]: u["reason"] for u in out["unsafe"]}
    assert "side ponytail" in unsafe[img["r2"]] and unsafe[img["r3"]] == "marked never flip"
    assert set(out["kept"]) == {img["l1"], img["l2"], img["l3"], img["l4"]}
    assert any("looking" in t for s in out["suggestions"] for t in s["tags"])
    copy = Image.open(project / img["r1"]).convert("RGB")
    assert np.array_equal(np.asarray(copy), np.asarray(head("left")))  # mirrored from its original
    assert (project / "dataset/1_heads/r1.txt").read_text().strip() == \
        "zkstyle, 1girl, facing left, hand on left hip, right-handed"
    for stem in ("r2", "r3", "l1"):
        assert (project / f"dataset/1_heads/{stem}.png").read_bytes() == before[f"{stem}.png"]
    r2 = (project / "dataset/1_heads/r2.txt").read_text().strip()
    assert r2 == "zkstyle, 1girl, side ponytail, looking to the right"
    assert _originals_unchanged(heads)
    # the label follows the copy: r1 faces left now; undoing the captions is one step
    assert cli(home, "direction", "demo", "labels")[1]["labels"][img["r1"]] == "left"
    assert cli(home, "caption", "demo", "undo")[0] == 0
    assert "facing right" in (project / "dataset/1_heads/r1.txt").read_text()
    assert cli(home, "crop", "demo", "undo")[0] == 0
    assert Image.open(project / img["r1"]).convert("RGB").tobytes() == head("right").tobytes()
    assert cli(home, "direction", "demo", "labels")[1]["labels"][img["r1"]] == "right"


def test_a_tie_goes_to_the_side_of_the_images_that_cannot_flip(heads):
    home, img = heads["home"], heads["images"]
    cli(home, "direction", "demo", "settings", "min_confidence=1")  # only the labels count
    code, out = cli(home, "direction", "demo", "normalise", "--dry-run", "--embedder", "none", "--image", img["l3"])
    assert code == 0 and out["flipped"] == [img["l3"]]  # chosen images flip, however the others face
    cli(home, "direction", "demo", "label", img["l1"], img["l2"], "left")
    cli(home, "direction", "demo", "label", img["r1"], img["r3"], "right")
    cli(home, "direction", "demo", "label", img["r3"], "never-flip")
    code, out = cli(home, "direction", "demo", "normalise", "--dry-run", "--embedder", "none")
    assert code == 0 and out["to"] == "right" and out["flipped"] == [img["l1"], img["l2"]]
    assert [u["image"] for u in out["unsafe"]] == []  # r3 faces right already: nothing to refuse


def test_unknown_image_and_label_get_clear_messages(heads, capsys):
    home = heads["home"]
    code, out = cli(home, "direction", "demo", "label", "dataset/1_heads/nope.png", "left")
    assert code == 1 and "Not a training image of project 'demo': dataset/1_heads/nope.png" in out["error"]
    assert "dataset/1_heads/" in out["error"].split("like")[1]
    code, out = cli(home, "direction", "demo", "label", heads["images"]["l1"], "sideways")
    assert code == 1 and "left, right, front, away, never-flip" in out["error"]
    assert cli(home, "direction", "demo", "settings", "min_confidence=1")[0] == 0  # only labels are sure enough
    code, out = cli(home, "direction", "demo", "normalise", "--embedder", "none")
    assert code == 1 and "--to left|right" in out["error"] and "label a few images first" in out["error"]
    code, out = cli(home, "direction", "demo", "settings", "swap_words=left")
    assert code == 1 and "swap_words" in out["error"] and "left:right" in out["error"]
    code, out = cli(home, "direction", "demo", "settings", "flip_unsafe=eyepatch")
    assert code == 0 and out["flip_unsafe"] == "eyepatch"


def test_requests_name_their_bad_field():
    from lib_lorakit.direction.service import EstimateRequest, NormaliseRequest

    with pytest.raises(LorakitError, match="unknown option.*embeder"):
        EstimateRequest.from_dict({"embeder": "x"})
    with pytest.raises(LorakitError, match="normalise.to: expected one of left, right, got 'up'"):
        NormaliseRequest.from_dict({"to": "up"})
    with pytest.raises(LorakitError, match="normalise.dry_run: expected true or false"):
        NormaliseRequest.from_dict({"dry_run": "yes"})


def test_the_http_routes(heads):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lorakit import api
    from lib_lorakit.host import StandaloneHost

    home, img = heads["home"], heads["images"]
    host = StandaloneHost(home=home, lora=home.parent / "lora", models=home.parent / "models")
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    base = "/train-style/v1/projects/demo/direction"
    r = client.post(base + "/labels", json={"images": [img["l1"]], "label": "left"})
    assert r.status_code == 200 and r.json()["labels"] == {img["l1"]: "left"}
    r = client.post(base + "/labels", json={"images": ["../../etc/passwd"], "label": "left"})
    assert r.status_code == 404 and "Not a training image" in r.json()["detail"]
    r = client.post(base + "/estimate", json={"embedder": "none", "wait": True})
    assert r.status_code == 200 and {row["image"] for row in r.json()["images"]} == set(img.values())
    r = client.post(base + "/estimate", json={"embedder": "none", "images": [img["l2"]], "wait": True})
    assert [row["image"] for row in r.json()["images"]] == [img["l2"]]
    kept = client.get(base + "/estimate").json()  # a part re-estimated: the rest is kept
    assert {row["image"] for row in kept["images"]} == set(img.values())
    r = client.post(base + "/estimate", json={"embedder": "/etc/x.json:/etc/y.pt", "wait": True})
    assert r.status_code == 403
    r = client.post(base + "/normalise", json={"to": "left", "dry_run": True, "images": [img["r1"]]})
    assert r.status_code == 200 and r.json()["flipped"] == [img["r1"]]
    job = client.post(base + "/estimate", json={"embedder": "none", "detector": True}).json()["job"]
    for _ in range(600):
        state = client.get(f"/train-style/v1/jobs/{job['id']}").json()
        if state["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert state["state"] == "done", state
    assert {row["image"] for row in state["result"]["images"]} == set(img.values())
    r = client.put(base + "/settings", json={"min_confidence": 2})
    assert r.status_code == 400 and "min_confidence" in r.json()["detail"]
