"""The sorter: classes and labels given through the CLI, a classifier trained on the embedding store and
cross-validated, predictions least certain first, Apply into concepts / tags / a discard set with undo, the
classifier saved without pickle, a Teachable Machine export through LiteRT; the API's routes.

Images are drawn where the signal is plain (red vs blue shapes; sharp vs blurred textures) and embedded with a tiny
random open_clip (tests/tiny_clip.py): random features still separate such plain signals."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFilter
from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

from lib_lorakit import api
from lib_lorakit.cli import main
from lib_lorakit.dataset.importer import import_paths
from lib_lorakit.direction import classifier as linear
from lib_lorakit.direction import tflite
from lib_lorakit.direction.sorter import ApplyRequest, SortService, check_class, concept_of_class
from lib_lorakit.errors import LorakitError
from lib_lorakit.fsutil import read_json
from lib_lorakit.host import StandaloneHost
from lib_lorakit.project import Workspace

ROOT = Path(__file__).resolve().parents[1]
RED, BLUE = (220, 30, 30), (30, 30, 220)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny_clip")
    register_tiny_clip(folder)
    config = folder / (TINY_MODEL + ".json")  # written here too: registering is done once per process
    config.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    return f"{config}:{save_tiny_checkpoint(folder / 'tiny.pt')}"


def shape(path: Path, colour, i: int) -> None:
    im = Image.new("RGB", (64, 64), "white")
    d = ImageDraw.Draw(im)
    box = (4 + 3 * (i % 5), 6 + 2 * (i % 4), 40 + 3 * (i % 5), 44 + 2 * (i % 4))
    (d.ellipse if i % 3 else d.rectangle)(box, fill=colour)
    im.save(path)


def texture(path: Path, i: int, *, blurred: bool) -> None:
    rng = np.random.default_rng(i)
    cells = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    im = Image.fromarray(cells).resize((64, 64), Image.Resampling.NEAREST)
    (im.filter(ImageFilter.GaussianBlur(6)) if blurred else im).save(path)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def colours(tmp_path) -> Path:
    """A project `p` with 8 red and 8 blue shapes in one concept."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        shape(src / f"red{i}.png", RED, i)
        shape(src / f"blue{i}.png", BLUE, i + 1)
    project = Workspace(tmp_path / "home").create("p")
    assert len(import_paths(project, [str(src)], [tmp_path]).imported) == 16
    return project.root.parent


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(home / "no-config.toml")}
    return subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def in_process(home: Path, *args: str) -> tuple[int, str]:
    """The CLI's own `main` in this process (each test also drives some steps through a real process)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--home", str(home), "--config", str(home / "no-config.toml"), *args])
    return code, out.getvalue()


def ok(home: Path, *args: str, process: bool = False) -> dict:
    if process:
        done = cli(home, *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    code, out = in_process(home, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def refused(home: Path, *args: str, process: bool = False) -> str:
    if process:
        done = cli(home, *args, "--json")
        assert done.returncode == 1, done.stdout
        return json.loads(done.stdout)["error"]
    code, out = in_process(home, *args, "--json")
    assert code == 1, out
    return json.loads(out)["error"]


def img(name: str) -> str:
    return f"dataset/1_p/{name}.png"


def test_the_cli_teaches_two_colours_and_files_the_images_into_concepts(colours, tiny):
    home = colours
    originals = {p.name: sha(p) for p in (home / "p" / "originals").iterdir()}
    # 1. classes and labels, with clear refusals
    assert "No class 'red'" in refused(home, "sort", "p", "label", "red", img("red0"), process=True)
    assert ok(home, "sort", "p", "classes", "add", "red", "blue")["classes"] == ["red", "blue"]
    assert "Not training images of 'p': 'dataset/1_p/green.png'" in refused(home, "sort", "p", "label", "red",
                                                                           "dataset/1_p/green.png")
    assert "needs labelled examples of at least two classes" in refused(home, "sort", "p", "train", "--embedder",
                                                                        tiny)
    ok(home, "sort", "p", "label", "red", img("red0"), img("red1"), img("red2"), process=True)
    ok(home, "sort", "p", "label", "blue", img("blue0"), img("blue1"), img("blue2"))
    # 2. train: cross-validated on the labelled examples
    trained = ok(home, "sort", "p", "train", "--embedder", tiny, process=True)
    assert trained["classes"] == ["red", "blue"] and trained["examples"] == {"red": 3, "blue": 3}
    assert trained["cv_accuracy"] == 1.0
    # 3. predict: every image, least certain first, unlabelled ones right
    images = ok(home, "sort", "p", "predict")["images"]
    assert len(images) == 16
    assert [i["confidence"] for i in images] == sorted(i["confidence"] for i in images)
    for row in images:
        assert row["class"] == Path(row["image"]).stem.rstrip("0123456789"), row
        assert 0.5 < row["confidence"] <= 1.0
    # 4. a dry run changes nothing; apply copies into <repeats>_<class>; originals untouched
    before = sorted(p.relative_to(home).as_posix() for p in (home / "p" / "dataset").rglob("*"))
    plan = ok(home, "sort", "p", "apply", "--into", "concepts", "--dry-run")
    assert plan["dry_run"] and len(plan["applied"]) == 16
    assert sorted(p.relative_to(home).as_posix() for p in (home / "p" / "dataset").rglob("*")) == before
    done = ok(home, "sort", "p", "apply", "--into", "concepts", "--repeats", "3", process=True)
    assert {a["to"] for a in done["applied"]} == {f"dataset/3_red/red{i}.png" for i in range(8)} | \
        {f"dataset/3_blue/blue{i}.png" for i in range(8)}
    for i in range(8):
        assert sha(home / "p" / "dataset" / "3_red" / f"red{i}.png") == sha(home / "p" / img(f"red{i}"))
    records = read_json(home / "p" / ".lorakit" / "imports.json")
    by_image = {r["image"]: r for r in records.values()}
    assert by_image["dataset/3_red/red4.png"]["original"] == by_image[img("red4")]["original"]
    assert {p.name: sha(p) for p in (home / "p" / "originals").iterdir()} == originals
    # 5. undo takes the copies (and the concepts it made) back
    undone = ok(home, "sort", "p", "undo")
    assert len(undone["removed"]) == 16
    assert not (home / "p" / "dataset" / "3_red").exists()
    assert sorted(p.relative_to(home).as_posix() for p in (home / "p" / "dataset").rglob("*")) == before
    assert "Nothing to undo" in refused(home, "sort", "p", "undo")


def test_move_one_class_keeps_labels_and_undo_brings_the_images_back(colours, tiny):
    home = colours
    ok(home, "sort", "p", "classes", "add", "red", "blue")
    ok(home, "sort", "p", "label", "red", img("red0"), img("red1"))
    ok(home, "sort", "p", "label", "blue", img("blue0"), img("blue1"))
    ok(home, "sort", "p", "train", "--embedder", tiny)
    assert "No class 'green'" in refused(home, "sort", "p", "apply", "--class", "green")
    moved = ok(home, "sort", "p", "apply", "--into", "concepts", "--class", "red", "--move")
    assert len(moved["applied"]) == 8
    assert sorted(p.name for p in (home / "p" / "dataset" / "1_p").glob("*.png")) == \
        sorted(f"blue{i}.png" for i in range(8))
    labels = ok(home, "sort", "p", "predict")["images"]
    assert {r["image"]: r["label"] for r in labels if r["label"] == "red"} == \
        {"dataset/1_red/red0.png": "red", "dataset/1_red/red1.png": "red"}
    ok(home, "sort", "p", "undo")
    assert len(list((home / "p" / "dataset" / "1_p").glob("*.png"))) == 16
    assert not (home / "p" / "dataset" / "1_red").exists()
    labels = {r["image"]: r["label"] for r in ok(home, "sort", "p", "predict")["images"] if r["label"]}
    assert labels == {img("red0"): "red", img("red1"): "red", img("blue0"): "blue", img("blue1"): "blue"}


def test_sharp_and_blurred_are_told_apart_and_the_blurred_go_to_the_discard_set(tmp_path, tiny):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        texture(src / f"sharp{i}.png", i, blurred=False)
        texture(src / f"soft{i}.png", 100 + i, blurred=True)
    project = Workspace(tmp_path / "home").create("p")
    import_paths(project, [str(src)], [tmp_path])
    home = project.root.parent
    ok(home, "sort", "p", "classes", "add", "sharp", "blurry")
    ok(home, "sort", "p", "label", "sharp", img("sharp0"), img("sharp1"), img("sharp2"))
    ok(home, "sort", "p", "label", "blurry", img("soft0"), img("soft1"), img("soft2"))
    assert ok(home, "sort", "p", "train", "--embedder", tiny)["cv_accuracy"] >= 0.8  # leave-one-out of 6
    found = {Path(r["image"]).stem: r["class"] for r in ok(home, "sort", "p", "predict")["images"]}
    assert found == {**{f"sharp{i}": "sharp" for i in range(6)}, **{f"soft{i}": "blurry" for i in range(6)}}
    done = ok(home, "sort", "p", "apply", "--into", "discard", "--class", "blurry")
    assert sorted(a["image"] for a in done["applied"]) == sorted(img(f"soft{i}") for i in range(6))
    assert sorted(p.stem for p in (project.root / "dataset" / "1_p").glob("*.png")) == \
        sorted(f"sharp{i}" for i in range(6))
    assert len(list((project.root / "originals").iterdir())) == 12
    ok(home, "sort", "p", "undo")
    assert len(list((project.root / "dataset" / "1_p").glob("*.png"))) == 12


def test_apply_into_tags_adds_the_class_once_and_caption_undo_restores(colours, tiny, capsys):
    home = colours
    (home / "p" / "dataset" / "1_p" / "red0.txt").write_text("shape, red")
    ok(home, "sort", "p", "classes", "add", "red", "blue")
    ok(home, "sort", "p", "label", "red", img("red0"), img("red1"))
    ok(home, "sort", "p", "label", "blue", img("blue0"), img("blue1"))
    ok(home, "sort", "p", "train", "--embedder", tiny)
    done = ok(home, "sort", "p", "apply", "--into", "tags", "--min-confidence", "0.5")
    assert {s["image"]: s["reason"] for s in done["skipped"]} == {img("red0"): "its caption already has the tag"}
    assert (home / "p" / "dataset" / "1_p" / "blue3.txt").read_text().strip() == "blue"
    assert (home / "p" / "dataset" / "1_p" / "red1.txt").read_text().strip() == "red"
    ok(home, "caption", "p", "undo")
    assert not (home / "p" / "dataset" / "1_p" / "blue3.txt").exists() or \
        (home / "p" / "dataset" / "1_p" / "blue3.txt").read_text().strip() == ""
    with pytest.raises(SystemExit) as exit_:
        in_process(home, "sort", "p", "apply", "--min-confidence", "1.5")
    assert exit_.value.code == 2 and "min_confidence: expected a number from 0 to 1" in capsys.readouterr().err


def test_a_copy_keeps_the_flip_of_its_source(colours, tiny):
    from lib_lorakit.crop.derive import flip, steps_of

    project = Workspace(colours).open("p")
    flip(project, [img("red5")], True)
    service = SortService(StandaloneHost(home=colours, lora=colours / "lora", models=colours / "models"))
    service.add_classes("p", ["red", "blue"])
    service.label("p", "red", [img("red5")])
    report = service.apply("p", ApplyRequest(into="concepts"), predictions=[
        p for p in _labelled_only(service) if p.image == img("red5")])
    made = report.applied[0]["to"]
    assert made == "dataset/1_red/red5.png" and steps_of(project, made).flip
    assert np.array_equal(np.asarray(Image.open(project.root / made)), np.asarray(Image.open(project.root /
                                                                                                 img("red5"))))


def test_the_saved_classifier_sorts_a_new_import(colours, tiny, tmp_path):
    home = colours
    ok(home, "sort", "p", "classes", "add", "red", "blue")
    ok(home, "sort", "p", "label", "red", img("red0"), img("red1"), img("red2"))
    ok(home, "sort", "p", "label", "blue", img("blue0"), img("blue1"), img("blue2"))
    ok(home, "sort", "p", "train", "--embedder", tiny)
    new = tmp_path / "new"
    new.mkdir()
    shape(new / "late_red.png", RED, 11)
    shape(new / "late_blue.png", BLUE, 12)
    ok(home, "import", "p", str(new), "--concept", "later")
    found = {r["image"]: r["class"] for r in ok(home, "sort", "p", "predict")["images"]}
    assert found["dataset/1_later/late_red.png"] == "red" and found["dataset/1_later/late_blue.png"] == "blue"


def _labelled_only(service: SortService):
    from lib_lorakit.direction.sorter import Prediction

    return [Prediction(image=i, cls=c, confidence=1.0, label=c) for i, c in service.labels("p").items()]


def test_class_names_must_be_one_tag_and_become_safe_concept_names():
    assert check_class("  3/4   view ") == "3/4 view" and concept_of_class("3/4 view") == "3-4 view"
    for bad, words in (("a, b", "comma"), ("", "text"), ("x" * 61, "limit"), ("..", "concept name")):
        with pytest.raises(LorakitError, match=words):
            check_class(bad)


def test_the_classifier_learns_known_classes_and_saves_without_pickle(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 64))
    y = np.repeat(np.arange(3), 40)
    x = (centres[y] + 0.5 * rng.standard_normal((120, 64))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    trained = linear.train(x, y, ("a", "b", "c"))
    assert trained.cv_accuracy == 1.0
    test = (centres + 0.5 * rng.standard_normal((3, 64))).astype(np.float32)
    best, confidence = trained.model.predict(test)
    assert list(best) == [0, 1, 2] and (confidence > 0.5).all()
    linear.store_classifier(tmp_path, trained.model, {"embedder": "e"})
    loaded, info = linear.read_classifier(tmp_path)
    assert info["classes"] == ["a", "b", "c"] and info["embedder"] == "e"
    assert np.array_equal(loaded.probabilities(x), trained.model.probabilities(x))
    np.load(tmp_path / info["arrays"], allow_pickle=False)  # a plain array
    with pytest.raises(LorakitError, match="trained with another embedder"):
        loaded.probabilities(np.zeros((1, 32), np.float32))
    one_each = linear.train(x[[0, 40]], y[[0, 40]], ("a", "b"))
    assert one_each.cv_accuracy is None  # nothing can be held out


def test_labels_of_teachable_machine_and_a_model_that_does_not_match_them(tmp_path):
    assert tflite.parse_labels("0 Class 1\n1 back view\n\n2 3/4 view\n") == ["Class 1", "back view", "3/4 view"]
    with pytest.raises(LorakitError, match="at least two"):
        tflite.parse_labels("0 only\n")

    class Fake:
        def __init__(self, out):
            self.out = out

        def allocate_tensors(self):
            pass

        def get_input_details(self):
            return [{"shape": np.array([1, 224, 224, 3]), "dtype": np.float32, "index": 0}]

        def get_output_details(self):
            return [{"shape": np.array([1, self.out]), "dtype": np.float32, "index": 1}]

    (tmp_path / "m.tflite").write_bytes(b"tflite")
    (tmp_path / "labels.txt").write_text("0 a\n1 b\n2 c\n")
    with pytest.raises(LorakitError, match="gives 2 scores but labels.txt names 3 classes"):
        tflite.install_teachable(tmp_path / "m.tflite", tmp_path / "labels.txt", tmp_path / "tm",
                                 interpreter=Fake(2))
    assert not (tmp_path / "tm").exists()
    assert tflite.install_teachable(tmp_path / "m.tflite", tmp_path / "labels.txt", tmp_path / "tm",
                                    interpreter=Fake(3)) == ["a", "b", "c"]


def test_a_missing_litert_is_installed_on_demand_or_explained(monkeypatch):
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(tflite.importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name))
                        if name.startswith("ai_edge_litert") else real(name))
    calls = []

    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found for ai-edge-litert"

    with pytest.raises(LorakitError, match="No matching distribution.*pip install ai-edge-litert"):
        tflite.interpreter_class(runner=lambda argv, **kw: calls.append(argv) or Failed())
    assert calls and calls[0][1:] == ["-m", "pip", "install", "ai-edge-litert"]
    with pytest.raises(LorakitError, match="pip install ai-edge-litert"):
        tflite.interpreter_class(install=False)


def test_a_real_teachable_machine_export_sorts_red_from_blue(colours, tmp_path):
    pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (ai-edge-litert) is not installed here")
    from tiny_tflite import write_model

    export = tmp_path / "export"
    write_model(export / "model_unquant.tflite")
    (export / "labels.txt").write_text("0 red\n1 blue\n")
    home = colours
    assert ok(home, "sort", "p", "teachable", str(export / "model_unquant.tflite"),
              str(export / "labels.txt"))["classes"] == ["red", "blue"]
    found = ok(home, "sort", "p", "predict")["images"]
    assert {Path(r["image"]).stem: r["class"] for r in found} == \
        {**{f"red{i}": "red" for i in range(8)}, **{f"blue{i}": "blue" for i in range(8)}}
    done = ok(home, "sort", "p", "apply", "--into", "concepts", "--min-confidence", "0.9")
    assert len(done["applied"]) == 16 and (home / "p" / "dataset" / "1_blue" / "blue7.png").is_file()


def test_the_api_labels_trains_predicts_and_applies(colours, tiny, tmp_path):
    host = StandaloneHost(home=colours, lora=tmp_path / "lora", models=tmp_path / "models",
                          extra_roots=[Path(tiny.split(".json:")[0]).parent])
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    base = "/train-style/v1/projects/p/sort"
    assert client.post(base + "/classes", json={"add": ["red", "blue"]}).json() == {"classes": ["red", "blue"]}
    r = client.post(base + "/labels", json={"class": "green", "images": [img("red0")]})
    assert r.status_code == 404 and "No class 'green'" in r.json()["detail"]
    r = client.post(base + "/labels", json={"class": "red", "images": ["../../etc/passwd"]})
    assert r.status_code == 404 and "Not training images" in r.json()["detail"]
    client.post(base + "/labels", json={"class": "red", "images": [img("red0"), img("red1"), img("red2")]})
    client.post(base + "/labels", json={"class": "blue", "images": [img("blue0"), img("blue1"), img("blue2")]})
    r = client.post(base + "/train", json={"embedder": tiny, "wait": True})
    assert r.status_code == 200 and r.json()["cv_accuracy"] == 1.0
    status = client.get(base).json()
    assert status["classifier"]["classes"] == ["red", "blue"] and len(status["labels"]) == 6
    images = client.post(base + "/predict", json={"wait": True}).json()["images"]
    assert {Path(r["image"]).stem: r["class"] for r in images} == \
        {**{f"red{i}": "red" for i in range(8)}, **{f"blue{i}": "blue" for i in range(8)}}
    r = client.post(base + "/apply", json={"into": "concepts", "dry_run": True, "classes": ["blue"]})
    assert r.status_code == 200 and {a["class"] for a in r.json()["applied"]} == {"blue"}
    assert not (colours / "p" / "dataset" / "1_blue").exists()
    r = client.post(base + "/apply", json={"into": "sideways"})
    assert r.status_code == 400 and "into" in r.json()["detail"]
    r = client.post(base + "/teachable", json={"model": "/etc/passwd", "labels": "/etc/hostname"})
    assert r.status_code == 403
