"""Tagging a project end to end (real onnxruntime and open_clip sessions on tiny models), the CLI and the API."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from tiny_clip import register_tiny_clip, save_tiny_checkpoint
from tiny_wd14 import build_tiny_wd14, reference_scores, reference_tags

from lib_lorakit import api
from lib_lorakit.captions.service import CaptionService, TagRequest
from lib_lorakit.captions.store import CaptionStore
from lib_lorakit.cli import main
from lib_lorakit.errors import LorakitError, PathNotAllowed
from lib_lorakit.host import StandaloneHost
from lib_lorakit.project import Project, Workspace

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230), "dark": (10, 10, 10)}


@pytest.fixture
def host(tmp_path: Path) -> StandaloneHost:
    h = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "models" / "Lora", models=tmp_path / "models")
    build_tiny_wd14(h.models / "train-style" / "taggers" / "tiny-wd14")
    return h


@pytest.fixture
def shop(host: StandaloneHost) -> Project:
    """A project with four coloured images, one hand-written caption and a corrupt file in its concept."""
    project = Workspace(host.home).create("shop", trigger_words=("mystyle",))
    folder = project.add_concept("shop", 2).folder
    for name, rgb in COLOURS.items():
        Image.new("RGB", (96, 64), rgb).save(folder / f"{name}.png")
    (folder / "dark.txt").write_text("mystyle, my own words", encoding="utf-8")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return project


def expected(colour: str) -> list[str]:
    im = Image.new("RGB", (96, 64), COLOURS[colour])
    return [tag for tag, _ in reference_tags(reference_scores(im))]


def caption(project: Project, image: str) -> str:
    path = project.root / "dataset" / "2_shop" / image
    return path.with_suffix(".txt").read_text(encoding="utf-8").strip() if path.with_suffix(".txt").exists() else ""


def test_tagging_writes_trigger_then_the_tags_skips_hand_captions_and_reports_bad_files(host, shop):
    service = CaptionService(host)
    report = service.tag("shop", TagRequest(model="tiny-wd14", batch=3))
    assert sorted(report.tagged) == ["dataset/2_shop/blue.png", "dataset/2_shop/green.png",
                                     "dataset/2_shop/red.png"]
    assert report.already == ["dataset/2_shop/dark.png"]
    assert [f["image"] for f in report.failed] == ["dataset/2_shop/broken.png"]
    assert "truncated or corrupt" in report.failed[0]["reason"] or "not a recognisable" in report.failed[0]["reason"]
    assert report.device.startswith("CPU")
    for colour in ("red", "green", "blue"):
        assert caption(shop, f"{colour}.png") == ", ".join(["mystyle", *expected(colour)])
    assert caption(shop, "dark.png") == "mystyle, my own words"
    # running it again resumes: nothing left to tag
    again = service.tag("shop", TagRequest(model="tiny-wd14"))
    assert again.tagged == [] and len(again.already) == 4


def test_a_whole_tagging_run_is_one_undo_step_and_overwrite_keeps_only_the_trigger(host, shop):
    service = CaptionService(host)
    service.tag("shop", TagRequest(model="tiny-wd14", batch=1))
    step = service.undo("shop")
    assert step.written == 3
    assert caption(shop, "red.png") == "" and caption(shop, "dark.png") == "mystyle, my own words"
    service.redo("shop")
    service.tag("shop", TagRequest(model="tiny-wd14", overwrite=True, images=("dataset/2_shop/dark.png",)))
    assert caption(shop, "dark.png") == ", ".join(["mystyle", *expected("dark")])


def test_wd14_and_clip_together_give_one_deduplicated_caption(host, shop, tmp_path):
    register_tiny_clip(tmp_path / "clipcfg")
    weights = save_tiny_checkpoint(host.home / "weights" / "tiny.pt")
    service = CaptionService(host)
    req = TagRequest(tagger="both", model="tiny-wd14", clip_model="lorakit-tiny-clip",
                     clip_pretrained=str(weights), images=("dataset/2_shop/red.png",))
    report = service.tag("shop", req)
    assert report.tagged == ["dataset/2_shop/red.png"]
    tags = caption(shop, "red.png").split(", ")
    wd14 = expected("red")
    assert tags[: 1 + len(wd14)] == ["mystyle", *wd14]
    clip_terms = tags[1 + len(wd14):]
    # one term per vocabulary category (top_k 1), from the user-editable vocabulary folder
    vocab = host.home / "vocabularies" / "clip"
    assert len(clip_terms) == len(list(vocab.glob("*.txt"))) == 7
    every_term = {line.strip() for p in vocab.glob("*.txt") for line in p.read_text().splitlines()}
    assert all(t.replace("\\(", "(").replace("\\)", ")") in every_term for t in clip_terms)


def test_model_folders_typed_by_a_user_are_confined_to_the_allowed_roots(host, shop, tmp_path):
    outside = build_tiny_wd14(tmp_path / "elsewhere" / "model")
    with pytest.raises(PathNotAllowed):
        CaptionService(host).tag("shop", TagRequest(model=str(outside)))
    inside = build_tiny_wd14(host.home / "my-models" / "wd")
    assert CaptionService(host).tag("shop", TagRequest(model=str(inside))).tagged


def test_a_missing_model_names_the_files_and_the_folder(host, shop, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, when the hub was imported
    with pytest.raises(LorakitError) as e:
        CaptionService(host).tag("shop", TagRequest(model="wd-vit-tagger-v3"))
    text = str(e.value)
    assert "model.onnx" in text and "selected_tags.csv" in text
    assert str(host.models / "train-style" / "taggers" / "wd-vit-tagger-v3") in text


def test_cancelled_tagging_writes_nothing_half_and_resumes(host, shop):
    cancel = threading.Event()
    cancel.set()
    report = CaptionService(host).tag("shop", TagRequest(model="tiny-wd14"), cancel=cancel)
    assert report.cancelled and report.tagged == []
    assert not list((shop.root / "dataset" / "2_shop").glob(".*.tmp"))
    assert len(CaptionService(host).tag("shop", TagRequest(model="tiny-wd14")).tagged) == 3


def test_cli_tag_caption_tags_and_check(host, shop, capsys):
    base = ["--home", str(host.home), "--models-dir", str(host.models)]

    def run(*args):
        code = main([*base, *args, "--json"])
        return code, json.loads(capsys.readouterr().out)

    code, out = run("tag", "shop", "--model", "tiny-wd14")
    assert code == 0 and len(out["tagged"]) == 3 and out["failed"][0]["image"] == "dataset/2_shop/broken.png"
    assert "red theme" in caption(shop, "red.png")
    assert run("caption", "shop", "prune", "red theme")[0] == 0
    assert "red theme" not in caption(shop, "red.png")
    counts = {r["tag"]: r["total"] for r in run("tags", "shop")[1]["tags"]}
    assert counts["mystyle"] == 4 and "red theme" not in counts
    assert run("caption", "shop", "undo")[0] == 0
    assert "red theme" in caption(shop, "red.png")
    code, report = run("check", "shop")
    assert code == 0
    codes = {f["code"] for f in report["findings"]}
    assert "UNTAGGED_IMAGE" not in codes and "MISSING_CATEGORY" in codes  # colour tags say nothing of gaze or pose
    assert all("broken.png" not in image for f in report["findings"] for image in f["images"])  # unreadable: skipped


def test_api_tag_ops_preview_undo_and_check(host, shop):
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    base = "/train-style/v1/projects/shop"
    r = client.post(f"{base}/tag", json={"model": "tiny-wd14", "wait": True})
    assert r.status_code == 200 and len(r.json()["tagged"]) == 3
    assert client.post(f"{base}/tag", json={"model": "/etc", "wait": True}).status_code == 403
    assert client.post(f"{base}/tag", json={"general_threshold": 7}).status_code == 400
    preview = client.post(f"{base}/captions/ops", json={"op": "remove", "tags": ["dark"], "preview": True}).json()
    assert [c["image"] for c in preview["changes"]] == ["dataset/2_shop/dark.png"] or preview["changes"] == []
    step = client.post(f"{base}/captions/ops", json={"op": "add", "tags": ["outdoors"], "position": "start"}).json()
    assert step["written"] == 4
    assert caption(shop, "red.png").startswith("mystyle, outdoors, ")
    assert client.post(f"{base}/captions/undo").json()["written"] == 4
    assert "outdoors" not in caption(shop, "red.png")
    edit = client.put(f"{base}/captions", json={"image": "dataset/2_shop/red.png", "text": "mystyle,  a,b"})
    assert edit.status_code == 200 and caption(shop, "red.png") == "mystyle, a, b"
    assert client.put(f"{base}/captions", json={"image": "../../etc/passwd", "text": "x"}).status_code in (400, 403,
                                                                                                          404)
    freq = {r["tag"]: r["total"] for r in client.get(f"{base}/tags").json()["tags"]}
    assert freq["mystyle"] == 4
    check = client.get(f"{base}/check").json()
    assert set(check) >= {"findings"}
    for f in check["findings"]:
        assert set(f) >= {"code", "severity", "images", "detail"}
        assert all(not Path(p).is_absolute() and p.startswith(("dataset/", "reg/")) for p in f["images"])


def test_the_store_sees_what_tagging_wrote(host, shop):
    CaptionService(host).tag("shop", TagRequest(model="tiny-wd14"))
    records = {r.image: r for r in CaptionStore(shop).records()}
    assert records["dataset/2_shop/red.png"].tags[0] == "mystyle"


def test_awkward_files_placed_in_a_concept_are_each_reported_and_the_rest_tagged(host, awkward):
    """CMYK, 16-bit, alpha, EXIF-rotated, animated, odd names — tagged; empty, truncated, not-an-image,
    decompression bombs — each reported with its reason; no image file changed."""
    from lib_lorakit.images import IMAGE_SUFFIXES

    project = Workspace(host.home).create("awk")
    folder = project.add_concept("awk", 1).folder
    good, bad = [], {}
    for rel in list(awkward.good) + list(awkward.bad):
        src = awkward.root / rel
        if src.suffix.lower() not in IMAGE_SUFFIXES or src.is_symlink() or not src.is_file():
            continue
        dst = folder / rel.replace("/", "__")
        dst.write_bytes(src.read_bytes())
        if rel in awkward.good:
            good.append(f"dataset/1_awk/{dst.name}")
        else:
            bad[f"dataset/1_awk/{dst.name}"] = awkward.bad[rel]
    # two images with one stem share one caption file: the first is tagged, the other reported
    shared = sorted(g for g in good if Path(g).stem == "anim__loop")
    assert len(shared) == 2
    good.remove(shared[1])
    bad[shared[1]] = "shares the caption file of " + shared[0]
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    report = CaptionService(host).tag("awk", TagRequest(model="tiny-wd14"))
    assert sorted(report.tagged) == sorted(good) and len(good) >= 5
    assert {f["image"] for f in report.failed} == set(bad)
    for f in report.failed:
        assert bad[f["image"]] in f["reason"], f  # the same reason the importer gives
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".txt"} == before
    assert all((project.root / image).with_suffix(".txt").read_text(encoding="utf-8").strip() for image in good)
