"""The embedding store: vectors as open_clip computes them, stored by content and embedder, resumable after a
cancel, used by the audit's semantic near-duplicates only where they exist; the `embed` command and its API route.

The model is a tiny random-weight open_clip (tests/tiny_clip.py) given as `config.json:weights`, the way an offline
user names their own; its vectors mean nothing, so the tests assert what the plumbing must keep exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

from lib_lorakit import api
from lib_lorakit.captions.audit import audit
from lib_lorakit.dataset.importer import import_paths
from lib_lorakit.embed import EmbeddingTable, embed_project, embedder_from_spec
from lib_lorakit.embed import store as embed_store
from lib_lorakit.embed.models import parse_spec
from lib_lorakit.embed.neighbours import groups_of, similar_pairs
from lib_lorakit.errors import LorakitError
from lib_lorakit.host import StandaloneHost
from lib_lorakit.project import Workspace

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """The embedder spec of the tiny model: its open_clip config and its weights file."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    register_tiny_clip(folder)
    config = folder / (TINY_MODEL + ".json")  # written here too: registering is done once per process
    config.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    weights = save_tiny_checkpoint(folder / "tiny.pt")
    return f"{config}:{weights}"


def draw(path: Path, colour: tuple[int, int, int], *, arrow_right: bool = True, size: int = 64) -> Path:
    """A shape pointing one way on white (its mirror image is a different picture)."""
    im = Image.new("RGB", (size, size), "white")
    tip, back = (size - 6, 6) if arrow_right else (6, size - 6)
    ImageDraw.Draw(im).polygon([(back, 8), (tip, size // 2), (back, size - 8)], fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


@pytest.fixture
def shapes(tmp_path) -> Path:
    src = tmp_path / "src"
    for i, colour in enumerate([(220, 30, 30), (30, 30, 220), (30, 180, 30), (200, 200, 30), (120, 30, 160)]):
        draw(src / f"shape{i}.png", colour, arrow_right=i % 2 == 0)
    return src


@pytest.fixture
def project(tmp_path, shapes):
    project = Workspace(tmp_path / "home").create("p")
    report = import_paths(project, [str(shapes)], [tmp_path])
    assert len(report.imported) == 5
    return project


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(home / "no-config.toml")}
    return subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def reference_vectors(spec: str, paths: list[Path]) -> np.ndarray:
    """What open_clip itself gives for these files: its own model and preprocessing, one image at a time."""
    import open_clip
    import torch

    _, weights = spec.split(".json:")
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=weights)
    model.eval()
    with torch.no_grad():
        rows = [model.encode_image(preprocess(Image.open(p).convert("RGB"))[None]) for p in paths]
    return torch.nn.functional.normalize(torch.cat(rows), dim=-1).numpy()


def test_vectors_are_open_clips_own_and_the_mirror_variant_is_the_mirrored_picture(project, tiny, tmp_path):
    embedder = embedder_from_spec(tiny, tmp_path / "models")
    table = embed_project(project, embedder)
    assert isinstance(table, EmbeddingTable) and table.skipped == []
    assert table.images == sorted(f"dataset/1_p/shape{i}.png" for i in range(5))
    assert table.vectors.dtype == np.float32 and table.vectors.shape == (5, 16)
    assert np.allclose(np.linalg.norm(table.vectors, axis=1), 1.0, atol=1e-5)
    expected = reference_vectors(tiny, [project.root / i for i in table.images])
    assert np.abs(table.vectors - expected).max() < 1e-5

    mirrored = tmp_path / "mirrored"
    for i in table.images:  # the same pictures mirrored on disk, embedded the plain way by open_clip
        mirrored.mkdir(exist_ok=True)
        Image.open(project.root / i).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored / Path(i).name)
    flipped = embed_project(project, embedder, flipped=True)
    assert flipped.images == table.images
    assert np.abs(flipped.vectors - reference_vectors(tiny, [mirrored / Path(i).name for i in table.images])).max() \
        < 1e-5
    assert np.abs(flipped.vectors - table.vectors).max() > 1e-3  # arrows facing the other way are other pictures


def test_stored_vectors_are_reused_and_identical_content_is_computed_once(project, tiny, tmp_path):
    embedder = embedder_from_spec(tiny, tmp_path / "models")
    first, stats = embed_store.fill(project, embedder)
    assert (stats.computed, stats.reused) == (5, 0)
    twin = project.root / "dataset" / "1_p" / "twin.png"
    twin.write_bytes((project.root / first.images[0]).read_bytes())
    again, stats = embed_store.fill(project, embedder)
    assert (stats.computed, stats.reused) == (0, 6)  # the twin has a stored content hash
    assert np.array_equal(again.vectors[again.images.index("dataset/1_p/twin.png")], first.vectors[0])
    assert np.array_equal(again.vectors[[again.images.index(i) for i in first.images]], first.vectors)


def test_a_cancelled_run_keeps_what_it_finished_and_the_next_run_computes_only_the_rest(project, tiny, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setattr(embed_store, "FLUSH_EVERY", 1)
    monkeypatch.setattr(embed_store, "CPU_EMBED_BATCH", 1)
    embedder = embedder_from_spec(tiny, tmp_path / "models")
    cancel = threading.Event()

    def progress(done: int, total: int, message: str) -> None:
        if done >= 2:
            cancel.set()

    table, stats = embed_store.fill(project, embedder, progress=progress, cancel=cancel)
    assert stats.cancelled and 2 <= stats.computed < 5
    assert len(table.images) == stats.computed
    assert {reason for _, reason in table.skipped} == {"not embedded: the run was cancelled"}
    stored = embed_store.EmbeddingStore(project, embedder.id).load()
    assert len(stored) == stats.computed  # on disk, not only in the answer
    rest, again = embed_store.fill(project, embedder)
    assert (again.computed, again.reused) == (5 - stats.computed, stats.computed)
    assert len(rest.images) == 5 and rest.skipped == []


def test_a_damaged_chunk_is_skipped_and_its_images_computed_again(project, tiny, tmp_path):
    embedder = embedder_from_spec(tiny, tmp_path / "models")
    embed_project(project, embedder)
    store = embed_store.EmbeddingStore(project, embedder.id)
    for chunk in store.folder.glob("chunk-*.npz"):
        chunk.write_bytes(b"not an npz")
    table, stats = embed_store.fill(project, embedder)
    assert stats.computed == 5 and len(table.images) == 5


def test_unreadable_images_are_skipped_with_their_reason_and_unknown_images_refused(project, tiny, tmp_path):
    (project.root / "dataset" / "1_p" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    embedder = embedder_from_spec(tiny, tmp_path / "models")
    table = embed_project(project, embedder)
    assert len(table.images) == 5
    assert [i for i, _ in table.skipped] == ["dataset/1_p/broken.png"] and table.skipped[0][1]
    with pytest.raises(LorakitError, match="Not images of project 'p': 'dataset/1_p/nope.png'"):
        embed_project(project, embedder, ["dataset/1_p/nope.png"])
    with pytest.raises(LorakitError, match="Not images of project"):
        embed_project(project, embedder, ["../../etc/passwd"])


def test_specs_name_a_model_and_weights_or_a_config_and_a_file(tmp_path):
    assert parse_spec("ViT-B-32:laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k", None)
    assert parse_spec("ViT-B-32") == ("ViT-B-32", "openai", None)
    assert parse_spec("")[0] == "ViT-B-32"  # the default, a ViT-B/32
    model, weights, config = parse_spec("cfg/my-model.json:w/my.pt")
    assert (model, weights, config) == ("my-model", "w/my.pt", Path("cfg/my-model.json"))
    with pytest.raises(LorakitError, match="needs its weights too"):
        parse_spec("cfg/my-model.json")
    with pytest.raises(LorakitError, match="No open_clip model config"):
        embedder_from_spec(f"{tmp_path}/none.json:{tmp_path}/w.pt", tmp_path)


def test_with_downloads_off_missing_weights_say_how_to_fetch_them(project, tmp_path):
    embedder = embedder_from_spec("ViT-B-32:laion2b_s34b_b79k", tmp_path / "empty-models", download=False)
    with pytest.raises(LorakitError, match="not downloaded yet and downloading is off.*embed PROJECT --embedder"):
        embed_project(project, embedder)


def test_similar_pairs_in_blocks_equal_the_full_matrix(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 8)).astype(np.float32)
    x[5] = x[1] + 0.001  # near twins
    x[7] = x[1] * 3  # the same direction
    full = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = full @ full.T
    expected = {(i, j) for i in range(9) for j in range(i + 1, 9) if sims[i, j] >= 0.999}
    monkeypatch.setattr("lib_lorakit.embed.neighbours.BLOCK", 2)
    pairs = similar_pairs(x, 0.999)
    assert {(i, j) for i, j, _ in pairs} == expected == {(1, 5), (1, 7), (5, 7)}
    assert groups_of(pairs) == [[1, 5, 7]]


def test_the_audit_reports_semantic_duplicates_only_once_embeddings_exist(project, tiny, tmp_path, monkeypatch):
    twin = project.root / "dataset" / "1_p" / "twin.jpg"  # the same picture in other bytes
    Image.open(project.root / "dataset" / "1_p" / "shape0.png").save(twin, quality=100)
    from lib_lorakit.embed.models import OpenClipEmbedder

    def no_model(self):
        raise AssertionError("the audit must not load a model")

    monkeypatch.setattr(OpenClipEmbedder, "_load", no_model)
    before = audit(project, semantic_duplicate=0.995)
    assert "SEMANTIC_DUPLICATES" not in before.codes()
    monkeypatch.undo()
    embed_project(project, embedder_from_spec(tiny, tmp_path / "models"))
    after = audit(project, semantic_duplicate=0.995)
    found = [f for f in after.findings if f.code == "SEMANTIC_DUPLICATES"]
    assert [f.images for f in found] == [["dataset/1_p/shape0.png", "dataset/1_p/twin.jpg"]]
    assert found[0].data["similarity"] >= 0.995 and "seeds/000" in found[0].why
    with pytest.raises(LorakitError, match="semantic_duplicate"):
        audit(project, semantic_duplicate=1.5)


def test_the_embed_command_fills_the_store_and_a_second_run_reuses_it(project, tiny):
    home = project.root.parent
    first = cli(home, "embed", "p", "--embedder", tiny, "--json")
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert (data["images"], data["computed"], data["reused"], data["cancelled"]) == (5, 5, 0, False)
    assert data["embedder"].startswith(f"open_clip/{TINY_MODEL}/tiny.pt#")
    second = json.loads(cli(home, "embed", "p", "--embedder", tiny, "--json").stdout)
    assert (second["computed"], second["reused"]) == (0, 5)
    bad = cli(home, "embed", "p", "--embedder", tiny, "--image", "dataset/1_p/missing.png", "--json")
    assert bad.returncode == 1 and "Not images of project 'p'" in json.loads(bad.stdout)["error"]


def test_the_api_embeds_and_keeps_embedder_files_inside_the_allowed_folders(project, tiny, tmp_path):
    host = StandaloneHost(home=project.root.parent, lora=tmp_path / "lora", models=tmp_path / "models",
                          extra_roots=[Path(tiny.split(".json:")[0]).parent])
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    r = client.post("/train-style/v1/projects/p/embed", json={"embedder": tiny, "wait": True})
    assert r.status_code == 200, r.text
    assert r.json()["images"] == 5
    outside = tmp_path.parent / "elsewhere.json"
    r = client.post("/train-style/v1/projects/p/embed", json={"embedder": f"{outside}:{outside}.pt", "wait": True})
    assert r.status_code == 403 and "outside the allowed folders" in r.json()["detail"]
    r = client.post("/train-style/v1/projects/p/embed", json={"embedder": tiny, "flipped": "yes"})
    assert r.status_code == 400 and "flipped" in r.json()["detail"]
    (project.root / "dataset" / "1_p" / "new.png").write_bytes(draw(tmp_path / "new.png", (9, 9, 9)).read_bytes())
    job = client.post("/train-style/v1/projects/p/embed", json={"embedder": tiny}).json()["job"]
    for _ in range(600):  # the job runs in this process's threads; wait for it to finish
        state = client.get(f"/train-style/v1/jobs/{job['id']}").json()
        if state["state"] not in ("queued", "running"):
            break
        threading.Event().wait(0.1)
    assert state["state"] == "done", state
    assert (state["result"]["computed"], state["result"]["reused"]) == (1, 5)
