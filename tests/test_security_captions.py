"""Issue 8, done as an attacker would: captions that are links or huge, hostile caption and tag bodies, LoRA files
with hostile headers and metadata, and control characters on their way to a terminal.

Files, links and FIFOs are real; the HTTP API is a real FastAPI app (TestClient); the CLI runs as a process.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from lib_lorakit import api
from lib_lorakit.captions.ops import CaptionOp, execute
from lib_lorakit.captions.service import CaptionService, TagRequest
from lib_lorakit.captions.store import CaptionStore
from lib_lorakit.dataset.captions_io import MAX_CAPTION_CHARS, CaptionTooLong
from lib_lorakit.errors import LorakitError, PathNotAllowed
from lib_lorakit.host import StandaloneHost
from lib_lorakit.project import Project, Workspace
from lib_lorakit.results.lora_info import read_lora_info
from lib_lorakit.taggers.base import ImageTags, TagScore

ROOT = Path(__file__).resolve().parents[1]
V1 = "/train-style/v1"
SECRET = "hunter2-the-secret"


@pytest.fixture
def host(tmp_path: Path) -> StandaloneHost:
    return StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models",
                          extra_roots=[tmp_path / "user"])


@pytest.fixture
def demo(host: StandaloneHost) -> Project:
    """Project `demo`, concept `art` with a.png (caption "cat, smile"), b.png and c.png (no captions)."""
    project = Workspace(host.home).create("demo")
    folder = project.add_concept("art", 1).folder
    for i, name in enumerate(("a", "b", "c")):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(folder / f"{name}.png")
    (folder / "a.txt").write_text("cat, smile\n", encoding="utf-8")
    return project


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text(f"{SECRET}, password\n", encoding="utf-8")
    return path


@pytest.fixture
def client(host: StandaloneHost) -> TestClient:
    app = FastAPI()
    api.mount(app, host)
    return TestClient(app, raise_server_exceptions=False)


def art(project: Project) -> Path:
    return project.root / "dataset" / "1_art"


# --- item 5: captions are never read through links, from odd files, or without a size cap --------------------------
def test_a_caption_linked_to_an_outside_file_is_neither_read_nor_served(demo, secret, client):
    os.symlink(secret, art(demo) / "b.txt")
    os.symlink("/proc/self/environ", art(demo) / "c.txt")
    records = {r.image: r for r in CaptionStore(demo).records()}
    for image in ("dataset/1_art/b.png", "dataset/1_art/c.png"):
        assert records[image].exists and records[image].text == "" and records[image].tags == ()
        assert "symbolic link" in records[image].problem
    assert records["dataset/1_art/a.png"].text == "cat, smile"
    r = client.get(f"{V1}/projects/demo/captions")
    assert r.status_code == 200
    assert SECRET not in r.text and "PATH=" not in r.text and "HOME=" not in r.text
    assert "symbolic link" in {c["image"]: c for c in r.json()["captions"]}["dataset/1_art/b.png"]["problem"]
    tags = client.get(f"{V1}/projects/demo/tags")
    assert tags.status_code == 200 and SECRET not in tags.text
    # the audit names them instead of calling them empty
    check = client.get(f"{V1}/projects/demo/check").json()
    unreadable = [f for f in check["findings"] if f["code"] == "CAPTION_UNREADABLE"]
    assert unreadable and set(unreadable[0]["images"]) == {"dataset/1_art/b.png", "dataset/1_art/c.png"}
    assert not [f for f in check["findings"] if f["code"] == "EMPTY_CAPTION"]


def test_operations_edits_and_tagging_never_write_through_or_over_a_linked_caption(demo, secret, host, client):
    link = art(demo) / "b.txt"
    os.symlink(secret, link)
    before = secret.read_bytes()
    # a batch op that changes every caption it reads passes the linked one by
    step = execute(CaptionStore(demo), CaptionOp(op="trigger", tags=("mystyle",)))
    assert step.written == 1 and (art(demo) / "a.txt").read_text() == "mystyle, cat, smile\n"
    add = client.post(f"{V1}/projects/demo/captions/ops",
                      json={"op": "add", "tags": ["x"], "images": ["dataset/1_art/b.png"]})
    assert add.status_code == 200 and add.json()["written"] == 0
    # an edit of it is refused with what to do
    r = client.put(f"{V1}/projects/demo/captions", json={"image": "dataset/1_art/b.png", "text": "dog"})
    assert r.status_code == 400 and "symbolic link" in r.json()["detail"] and "delete it" in r.json()["detail"]
    # tagging reports it instead of overwriting it
    report = CaptionService(host).tag("demo", TagRequest(overwrite=True), taggers={"wd14": FakeTagger()})
    assert {f["image"]: f["reason"] for f in report.failed}["dataset/1_art/b.png"].count("symbolic link") == 1
    assert link.is_symlink() and secret.read_bytes() == before
    # the history never took the outside file's bytes either
    history = (demo.state_dir / "captions" / "history")
    assert not any(SECRET in p.read_text() for p in history.rglob("*.json"))


def test_undo_leaves_a_caption_that_became_a_link_alone(demo, secret):
    store = CaptionStore(demo)
    store.apply({"dataset/1_art/a.png": "dog"}, label="edit", op={"op": "edit"})
    (art(demo) / "a.txt").unlink()
    os.symlink(secret, art(demo) / "a.txt")
    step = store.undo()
    assert step.conflicts == ("dataset/1_art/a.png",) and step.written == 0
    assert (art(demo) / "a.txt").is_symlink() and SECRET in secret.read_text()


def test_a_concept_folder_linked_outside_the_project_is_neither_read_nor_written(demo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.new("RGB", (8, 8)).save(elsewhere / "x.png")
    (elsewhere / "x.txt").write_text(SECRET)
    os.symlink(elsewhere, demo.root / "dataset" / "1_linked")
    record = next(r for r in CaptionStore(demo).records() if r.concept == "linked")
    assert record.text == "" and "outside the project" in record.problem
    with pytest.raises(PathNotAllowed, match="outside the project"):
        CaptionStore(demo).apply({"dataset/1_linked/x.png": "dog"}, label="edit", op={"op": "edit"})
    assert (elsewhere / "x.txt").read_text() == SECRET


def without_blocking(fn, fifo: Path) -> list:
    """[fn()'s result or exception], or [] when it blocked on `fifo` (then a writer is opened to release it)."""
    done: list = []

    def call() -> None:
        try:
            done.append(fn())
        except Exception as e:  # noqa: BLE001 - handed to the test
            done.append(e)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(60)  # a reader blocked on a FIFO never returns by itself
    if not done:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    return done


def test_a_fifo_or_a_folder_in_a_caption_s_place_does_not_hang_or_break_the_listing(demo):
    os.mkfifo(art(demo) / "b.txt")
    (art(demo) / "c.txt").mkdir()
    done = without_blocking(lambda: CaptionStore(demo).records(), art(demo) / "b.txt")
    assert done, "reading the captions blocked on a FIFO"
    records = {r.image: r for r in done[0]}
    assert "not a regular file" in records["dataset/1_art/b.png"].problem
    assert records["dataset/1_art/c.png"].exists is False  # a folder is no caption at all


def test_a_20_mb_caption_is_not_read_and_tags_stay_small(demo, client):
    (art(demo) / "b.txt").write_text(", ".join(f"tag{i}" for i in range(2_000_000)))
    assert (art(demo) / "b.txt").stat().st_size > 20_000_000
    record = CaptionStore(demo).record("dataset/1_art/b.png")
    assert record.text == "" and "bytes; a caption holds at most" in record.problem
    r = client.get(f"{V1}/projects/demo/tags")
    assert r.status_code == 200 and len(r.content) < 10_000
    assert {row["tag"] for row in r.json()["tags"]} == {"cat", "smile"}
    # one just under the byte cap but over the character cap (ASCII: one byte a character) is refused too
    (art(demo) / "b.txt").write_text("x" * (MAX_CAPTION_CHARS + 1))
    assert "characters long; the limit is" in CaptionStore(demo).record("dataset/1_art/b.png").problem


# --- items 8, 11, 12: what a caption may hold when it is written --------------------------------------------------
def test_an_overlong_edit_is_refused_and_the_file_kept(demo, host, client):
    for n, refusals in ((100_000, (400,)), (3_000_000, (400, 413))):  # 500 kB; 15 MB (the body limit may come first)
        big = ", ".join(["tag"] * n)
        r = client.put(f"{V1}/projects/demo/captions", json={"image": "dataset/1_art/a.png", "text": big})
        assert r.status_code in refusals, r.text[:200]
    assert "the limit is 10,000" in client.put(f"{V1}/projects/demo/captions", json={
        "image": "dataset/1_art/a.png", "text": "x" * (MAX_CAPTION_CHARS + 1)}).json()["detail"]
    with pytest.raises(CaptionTooLong):
        CaptionService(host).edit("demo", "dataset/1_art/a.png", "x" * (MAX_CAPTION_CHARS + 1))
    assert (art(demo) / "a.txt").read_text() == "cat, smile\n"


def test_an_op_that_would_make_a_caption_too_long_writes_nothing(demo):
    huge = "y" * (MAX_CAPTION_CHARS - 5)
    with pytest.raises(CaptionTooLong, match="dataset/1_art/a.png"):
        execute(CaptionStore(demo), CaptionOp.from_dict({"op": "add", "tags": [huge]}))
    assert (art(demo) / "a.txt").read_text() == "cat, smile\n" and CaptionStore(demo).history() == []


def test_control_characters_and_lone_surrogates_are_cleaned_on_edit_and_op(demo, client):
    raw = '{"image": "dataset/1_art/a.png", "text": "red\\u001b[2J\\u0000 hair, \\u009bsmile\\ud800, ok\\u0007"}'
    r = client.put(f"{V1}/projects/demo/captions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert (art(demo) / "a.txt").read_bytes() == b"red[2J hair, smile, ok\n"
    raw = '{"op": "add", "tags": ["bl\\u001bue\\ud83d", "\\u0000"], "images": ["dataset/1_art/b.png"]}'
    r = client.post(f"{V1}/projects/demo/captions/ops", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "is not one tag" in r.json()["detail"]  # "\0" is nothing once cleaned
    raw = raw.replace(', "\\u0000"', "")
    r = client.post(f"{V1}/projects/demo/captions/ops", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert (art(demo) / "b.txt").read_bytes() == b"blue\n"
    # a file placed on disk with them is read cleaned, and the history and listings stay valid JSON
    (art(demo) / "c.txt").write_bytes(b"\x1b]0;owned\x07green, \x00tree\n")
    assert CaptionStore(demo).record("dataset/1_art/c.png").tags == ("]0;ownedgreen", "tree")
    assert client.get(f"{V1}/projects/demo/captions/history").status_code == 200


def test_image_paths_that_no_file_can_have_are_refused_not_crashed_on(demo, client):
    for image in ("dataset/1_art/a\ud800.png", "dataset/1_art/a\x00.png"):
        body = json.dumps({"image": image, "text": "dog"})
        r = client.put(f"{V1}/projects/demo/captions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, (image, r.text)
    body = json.dumps({"op": "add", "tags": ["x"], "images": ["dataset/1_art/a\ud800.png"]})
    r = client.post(f"{V1}/projects/demo/captions/ops", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "images" in r.json()["detail"]


class FakeTagger:
    """A tagger whose tags say what an attacker's model could: escape sequences, and one enormous caption."""

    name, device, batch_limit = "fake", "CPU", 4

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB"), dtype=np.float32).mean(axis=(0, 1))

    def predict(self, batch: np.ndarray) -> list[ImageTags]:
        out = []
        for pixel in batch:
            if pixel[0] > 60:  # c.png
                out.append(ImageTags(tags=(TagScore("z" * (MAX_CAPTION_CHARS + 1), 1.0, "general"),)))
            else:
                tags = (TagScore("\x1b[31mred\x00", 0.9, "general"), TagScore("sky", 0.8, "general"))
                out.append(ImageTags(tags=tags))
        return out

    def unload(self) -> None:
        pass


def test_tagging_writes_clean_captions_and_reports_an_overlong_one(demo, host):
    report = CaptionService(host).tag("demo", TagRequest(overwrite=True), taggers={"wd14": FakeTagger()})
    assert sorted(report.tagged) == ["dataset/1_art/a.png", "dataset/1_art/b.png"]
    assert (art(demo) / "b.txt").read_bytes() == b"[31mred, sky\n"
    failed = {f["image"]: f["reason"] for f in report.failed}
    assert "the limit is 10,000" in failed["dataset/1_art/c.png"] and not (art(demo) / "c.txt").exists()


# --- item 11: bodies that are not what the schema says -----------------------------------------------------------
@pytest.mark.parametrize("data,message", [
    ([], "expected an object"), ("prune", "expected an object"), ({}, "op: missing"),
    ({"op": ["add"]}, "op: expected one of"), ({"op": "add", "tags": 5}, "tags: expected a list of strings"),
    ({"op": "add", "tags": ["a"], "concept": 5}, "concept: expected a string"),
    ({"op": "add", "tags": ["a"], "images": [1]}, "images: expected a list of strings"),
    ({"op": "add", "tags": ["a"], "position": {"x": 1}}, "position: expected one of"),
    ({"op": "rename", "target": 5, "replacement": ["b"]}, "target: expected a string"),
])
def test_caption_op_from_dict_refuses_what_is_not_an_op(data, message):
    with pytest.raises(LorakitError, match=message):
        CaptionOp.from_dict(data)


@pytest.mark.parametrize("data,message", [
    ([], "expected an object"), ({"exclude": 5}, "exclude: expected a list"), ({"images": {"a": 1}}, "images:"),
    ({"exclude": [1, 2]}, "exclude:"), ({"overwrite": "yes"}, "overwrite:"), ({"model": 5}, "model:"),
    ({"concept": ["x"]}, "concept:"), ({"general_threshold": "high"}, "general_threshold"),
    ({"general_threshold": math.nan}, "general_threshold"), ({"exclude": ["a\ud800"]}, "exclude"),
])
def test_tag_request_from_dict_names_the_bad_field(data, message):
    with pytest.raises(LorakitError, match=message):
        TagRequest.from_dict(data)


@pytest.mark.parametrize("route,body,word", [
    ("captions/ops", [], "object"), ("captions/ops", {}, "op: missing"), ("tag", [], "object"),
    ("tag", {"exclude": 5}, "exclude"),
    ("tag", {"images": "dataset/1_art/a.png", "exclude": [[]]}, "exclude"),
])
def test_the_api_answers_bad_caption_bodies_with_400_naming_the_field(demo, client, route, body, word):
    r = client.post(f"{V1}/projects/demo/{route}", json=body)
    assert r.status_code == 400, r.text
    assert word in r.json()["detail"]
    assert client.get(f"{V1}/jobs").json()["jobs"] == []


# --- items 11, 12: LoRA files with hostile headers and metadata ------------------------------------------------------
def safetensors(path: Path, header: bytes, *, length: int | None = None, data: bytes = b"\0" * 16) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def with_metadata(path: Path, metadata: object) -> Path:
    header = {"w": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]}, "__metadata__": metadata}
    return safetensors(path, json.dumps(header).encode())


DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE_METADATA = {
    "metadata_is_a_list": ["ss_steps", "4"],
    "values_not_text": {"ss_steps": 4, "ss_network_dim": {"x": 1}, "ss_output_name": None, "ss_resolution": "64"},
    "steps_inf": {"ss_steps": "inf", "ss_epoch": "-Infinity", "ss_network_alpha": "nan", "ss_network_dim": "1e999"},
    "tag_frequency_deep": {"ss_tag_frequency": DEEP, "ss_bucket_info": DEEP, "ss_network_args": DEEP},
    "tag_frequency_odd": {"ss_tag_frequency": '{"1_a": 5, "1_b": {"cat": NaN, "dog": Infinity, "ok": 3, '
                                               '"neg": -2, "bool": true, "str": "7"}, "1_c": ["x"]}'},
    "datasets_odd": {"ss_datasets": "[5]", "ss_network_args": "[1, 2]", "ss_bucket_info": "NaN"},
    "datasets_deeper": {"ss_datasets": '[{"subsets": 5}, {"subsets": [5, {"image_dir": [1], "img_count": 1e400, '
                                       '"num_repeats": "3"}]}]',
                        "ss_dataset_dirs": '{"x": 5, "y": {"img_count": -1}}'},
    "surrogates": {"ss_output_name": "\ud800evil", "ss_tag_frequency": '{"1_\\ud800": {"\\udfff": 2}}',
                   "\udcff": "key"},
    "escapes": {"ss_output_name": "\x1b]0;owned\x07\x9b31m<script>alert(1)</script>",
                "ss_tag_frequency": json.dumps({"1_a": {"\x1b[2J<img src=x onerror=alert(1)>": 2}})},
}


def hostile_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: with_metadata(folder / f"{name}.safetensors", meta) for name, meta in HOSTILE_METADATA.items()}
    files["nan_in_header"] = safetensors(folder / "nan.safetensors",
                                         b'{"__metadata__": {"ss_steps": "4"}, "w": {"x": NaN}}')
    files["deep_header"] = safetensors(folder / "deep.safetensors", DEEP.encode())
    return files


REFUSED_FILES = {
    "length_2_62": lambda p: safetensors(p, b"{}", length=2 ** 62),
    "length_past_end": lambda p: safetensors(p, b"{}", length=1000),
    "not_json": lambda p: safetensors(p, b"\xff\xfe not json at all"),
    "json_not_object": lambda p: safetensors(p, b"[1, 2, 3]"),
    "too_short": lambda p: p.write_bytes(b"abc") and p,
}


@pytest.mark.parametrize("name", sorted(HOSTILE_METADATA) + ["nan_in_header", "deep_header"])
def test_hostile_metadata_gives_a_partial_result_that_is_valid_json(tmp_path, name):
    path = hostile_files(tmp_path / "loras")[name]
    if name == "deep_header":
        with pytest.raises(LorakitError, match="not JSON"):
            read_lora_info(path)
        return
    info = read_lora_info(path)
    data = json.loads(json.dumps(info.to_dict(), allow_nan=False, ensure_ascii=False).encode("utf-8"))
    assert data["path"] == str(path)
    assert all(isinstance(v, int) for tags in info.tag_frequency.values() for v in tags.values())
    assert all(isinstance(n, int) for _, n in info.top_tags())
    if name in ("metadata_is_a_list", "values_not_text", "steps_inf", "tag_frequency_deep", "datasets_odd"):
        assert info.notes, name
    if name == "tag_frequency_odd":
        assert info.tag_frequency == {"1_b": {"ok": 3}}
    if name == "steps_inf":
        assert (info.steps, info.epochs, info.alpha, info.dim) == (None, None, None, None)


CLI_CASES = ("escapes", "surrogates", "steps_inf", "tag_frequency_odd", "length_2_62", "not_json")


def test_hostile_loras_through_the_api_cli_and_inspect_panel_never_crash(tmp_path, host, client):
    files = hostile_files(tmp_path / "user")
    for name, make in REFUSED_FILES.items():
        files[name] = make(tmp_path / "user" / f"{name}.safetensors")
    from lib_lorakit.ui.inspect_panel import InspectPanel

    panel = InspectPanel()
    for name, path in files.items():
        r = client.get(f"{V1}/lora-info", params={"path": str(path)})
        assert r.status_code in (200, 400), (name, r.status_code, r.text)
        r.json()
        html = panel._show(str(path))
        assert "Traceback" not in html and "<script>" not in html and "<img src" not in html, name
        if name not in CLI_CASES:  # a process each: the CLI gets the cases that print others' text
            continue
        out = run_cli(tmp_path, "lora-info", str(path))
        assert out.returncode in (0, 1) and "Traceback" not in out.stderr, (name, out.stderr)
        assert "\x1b" not in out.stdout + out.stderr and "\x9b" not in out.stdout + out.stderr, name
        js = run_cli(tmp_path, "lora-info", str(path), "--json")
        assert "Traceback" not in js.stderr and "\x9b" not in js.stdout, name
        json.loads(js.stdout.splitlines()[-1] if js.returncode else js.stdout)
    shown = run_cli(tmp_path, "lora-info", str(files["escapes"])).stdout
    assert "\\x1b]0;owned\\x07\\x9b31m" in shown


def test_a_file_that_is_not_a_lora_is_refused_without_showing_its_bytes(tmp_path, host, client):
    private = tmp_path / "user" / "id_rsa"
    private.parent.mkdir(parents=True)
    private.write_bytes(b"SECRETKY" + b"-----BEGIN OPENSSH PRIVATE KEY-----\n" * 50)
    number = str(struct.unpack("<Q", b"SECRETKY")[0])
    messages = []
    with pytest.raises(LorakitError) as e:
        read_lora_info(private)
    messages.append(str(e.value))
    r = client.get(f"{V1}/lora-info", params={"path": str(private)})
    assert r.status_code == 400
    messages.append(r.json()["detail"])
    messages.append(run_cli(tmp_path, "lora-info", str(private)).stderr)
    for text in messages:
        assert "not a safetensors file" in text
        assert "SECRETKY" not in text and number not in text and "BEGIN" not in text and hex(int(number)) not in text


def test_a_fifo_named_as_a_lora_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "x.safetensors"
    os.mkfifo(fifo)
    done = without_blocking(lambda: read_lora_info(fifo), fifo)
    assert done, "reading the LoRA blocked on a FIFO"
    assert isinstance(done[0], LorakitError) and "not a regular file" in str(done[0])


# --- item 12: the CLI shows others' text without letting it drive the terminal ------------------------------------
def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(tmp_path / "no-config.toml"),
           "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(tmp_path / "home"), *args], env=env,
                          capture_output=True, text=True, encoding="utf-8", errors="strict", timeout=300)


def test_the_cli_escapes_control_characters_from_file_names_and_captions(demo, tmp_path):
    evil = "\x1b]0;owned\x07\x1b[2Jevil\u202e.png"
    Image.new("RGB", (8, 8)).save(art(demo) / evil)
    out = run_cli(tmp_path, "check", "demo")
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\u202e" not in out.stdout
    assert "\\x1b]0;owned\\x07\\x1b[2Jevil\\u202e.png" in out.stdout
    js = run_cli(tmp_path, "check", "demo", "--json")
    assert "\u202e" not in js.stdout and "\x1b" not in js.stdout
    images = {i for f in json.loads(js.stdout)["findings"] for i in f["images"]}
    assert f"dataset/1_art/{evil}" in images  # the JSON still carries the exact name
    edit = run_cli(tmp_path, "caption", "demo", "edit", "dataset/1_art/a.png", "\x1b[31mred, \x9bhat")
    assert edit.returncode == 0, edit.stderr
    assert (art(demo) / "a.txt").read_bytes() == b"[31mred, hat\n"


# --- the Inspect panel in a real browser -------------------------------------------------------------------------
@pytest.mark.browser
def test_hostile_loras_dropped_in_the_inspect_panel_show_a_partial_result_or_a_refusal(tmp_path):
    from appserver import open_page, running_app
    from test_browser import CHROMIUM, html_of

    if not CHROMIUM:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    combined = with_metadata(tmp_path / "combined.safetensors", {
        "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_steps": "inf", "ss_datasets": "[5]",
        "ss_output_name": "\x1b[2J<img src=x onerror=alert(1)>", "ss_tag_frequency": DEEP, "ss_epoch": 3,
        "ss_bucket_info": '{"buckets": {"0": {"resolution": [NaN, 64]}}}'})
    listed = with_metadata(tmp_path / "listed.safetensors", ["not", "an", "object"])
    private = tmp_path / "id_rsa.safetensors"
    private.write_bytes(b"SECRETKY" + b"-----BEGIN OPENSSH PRIVATE KEY-----\n" * 50)
    expected = {combined: "not valid JSON (or nested too deeply)", listed: "__metadata__ is a list",
                private: "not a safetensors file"}
    with running_app(tmp_path / "home", tmp_path) as url:
        for lora, text in expected.items():
            with open_page(url, tab="Inspect") as page:
                page.locator("#train_style_inspect_drop input[type=file]").set_input_files(str(lora))
                info = html_of(page, "train_style_inspect_info")
                info.get_by_text(text).first.wait_for(timeout=30_000)
                shown = info.inner_text()
                assert "SECRETKY" not in shown and "Traceback" not in shown, shown
                assert page.locator("#train_style_inspect_info img, #train_style_inspect_info script").count() == 0
                assert page.get_by_text("Error", exact=True).count() == 0
        assert "Traceback" not in (tmp_path / "server.log").read_text()
