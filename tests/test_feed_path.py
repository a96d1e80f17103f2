"""The feed path (issue 9, item 6): the tagging pipeline sizes its decoder pool by measurement and tags exactly as
a straightforward loop does; import decodes each file once, on all cores, and links training copies to their
originals without ever letting an edit reach an original. Speed itself is measured in bench/, not here."""

from __future__ import annotations

import ast
import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from awkward import encode, jpeg_bytes, pattern, stored_for_orientation
from PIL import Image
from tiny_wd14 import away_from, build_tiny_wd14, reference_scores, reference_tags

import lib_lorakit
import lib_lorakit.taggers.pipeline as pipeline
from lib_lorakit.dataset.duplicates import find_duplicates
from lib_lorakit.dataset.importer import import_paths, remove_copies
from lib_lorakit.dataset.index import DatasetIndex
from lib_lorakit.fsutil import atomic_save_image, atomic_write_bytes
from lib_lorakit.images import ImageFacts, describe_image, hamming, perceptual_hash
from lib_lorakit.taggers.base import ImageTags, TagScore
from lib_lorakit.taggers.pipeline import DecoderSizing, FeedWindow, TagItem, tag_images
from lib_lorakit.taggers.wd14 import WD14Tagger


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the sizing policy, as pure logic ---------------------------------------------------------------------------

class Machine:
    """A pretend machine: `rate(n)` images a second with n decoders; the model waits for images (the share of its
    time `waiting(n)`) whenever the decoders, not the model, set that rate."""

    def __init__(self, rate, model_limit: float = float("inf"), waiting=None):
        self.rate = rate
        self.waiting = waiting or (lambda n: max(0.0, 1 - rate(n) / model_limit))

    def window(self, count: int, seconds: float = 0.5) -> FeedWindow:
        return FeedWindow(seconds=seconds, images=round(self.rate(count) * seconds),
                          waiting=seconds * self.waiting(count))


def drive(sizing: DecoderSizing, machine: Machine, windows: int) -> list[int]:
    counts = []
    for _ in range(windows):
        counts.append(sizing.observe(machine.window(sizing.count)))
    return counts


def test_a_cheap_model_gets_decoders_up_to_the_decode_limit():
    # a fast GPU on 8 cores: each decoder adds 100 img/s until the cores run out; the model could take 5,000
    machine = Machine(lambda n: 100 * min(n, 8) - 5 * max(0, n - 8), model_limit=5000)
    sizing = DecoderSizing(2, most=32, cores=8)
    counts = drive(sizing, machine, 300)
    assert 8 in counts[:25] and counts[-1] == 8, counts[:25]  # one more per measurement (two windows)
    settled = counts[100:]
    assert sum(c == 8 for c in settled) >= 0.9 * len(settled), "trying other counts must grow rare once settled"


def test_an_expensive_model_is_left_with_one_decoder():
    machine = Machine(lambda n: 2.0, model_limit=2.0)  # a ViT on a CPU: 2 img/s however many decoders
    sizing = DecoderSizing(4, most=8)
    counts = drive(sizing, machine, 40)
    assert counts[-1] == 1 and counts[:10] == [4, 4, 3, 3, 3, 2, 2, 2, 1, 1]


def test_decoders_that_take_the_models_cores_are_removed():
    # on 4 cores a model that needs them: one decoder starves it, two feed it, more keep it busy but slow it down
    machine = Machine(lambda n: {1: 60}.get(n, 100 - 20 * (n - 2)), waiting=lambda n: 0.4 if n == 1 else 0.0)
    sizing = DecoderSizing(4, most=8, cores=4)
    counts = drive(sizing, machine, 200)
    assert counts[:7] == [4, 4, 3, 3, 3, 2, 2] and counts[-1] == 2
    assert sum(c == 2 for c in counts[40:]) >= 0.9 * 160


def test_the_count_follows_a_machine_whose_load_changes():
    busy = Machine(lambda n: 50 * min(n, 2), model_limit=1000)  # other work holds all but two cores
    free = Machine(lambda n: 50 * min(n, 6), model_limit=1000)  # ... and then lets go
    sizing = DecoderSizing(2, most=16, cores=8)
    drive(sizing, busy, 60)
    assert sizing.count in (2, 3)
    counts = drive(sizing, free, 150)
    assert counts[-1] == 6


def test_a_starved_model_on_two_cores_keeps_its_two_decoders():
    # this machine's case: 2 cores, a cheap model; a third decoder gains nothing, one alone halves the rate
    machine = Machine(lambda n: 60 * min(n, 2) - 2 * max(0, n - 2), model_limit=2000)
    sizing = DecoderSizing(2, most=4, cores=2)
    counts = drive(sizing, machine, 200)
    assert 1 not in counts, "one decoder cannot feed a waiting model faster than two on two cores"
    assert sum(c == 2 for c in counts) >= 0.9 * len(counts), counts[:40]


def test_the_first_window_is_not_a_measurement_and_two_make_one():
    sizing = DecoderSizing(3, most=8, cores=2)
    assert sizing.observe(FeedWindow(seconds=1, images=0, waiting=1)) == 3  # queues filling: nothing learned
    assert sizing.observe(FeedWindow(seconds=1, images=90, waiting=0.5)) == 3  # one window is not enough
    assert sizing.observe(FeedWindow(seconds=1, images=110, waiting=0.5)) == 4  # starved: one more is tried
    assert sizing.observe(FeedWindow(seconds=1, images=150, waiting=0.3)) == 4  # a lucky window decides nothing
    assert sizing.observe(FeedWindow(seconds=1, images=55, waiting=0.3)) == 3  # 102.5 against 100: not worth it
    assert sizing.observe(FeedWindow(seconds=1, images=100, waiting=0.5)) == 3
    assert sizing.observe(FeedWindow(seconds=1, images=100, waiting=0.5)) == 2  # 4 rests; 3 on 2 cores: fewer
    with pytest.raises(ValueError):
        DecoderSizing(2, most=1, least=2)


# --- real runs of the pipeline ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> tuple[list[TagItem], dict[str, list[tuple[str, str]]], Path]:
    """Forty pictures (JPEG and PNG, wide and tall) away from every threshold of the tiny model, with the tags
    a straightforward loop gives (tiny_wd14.reference_*: numpy padding, PIL bicubic, the model's maths)."""
    root = tmp_path_factory.mktemp("pictures")
    expected: dict[str, list[tuple[str, str]]] = {}
    for seed in range(80):
        if len(expected) == 40:
            break
        picture = Image.fromarray(pattern(seed, 60 + 12 * (seed % 4), 50 + 10 * (seed % 3)))
        name = f"p{seed:02d}.{'jpg' if seed % 2 else 'png'}"
        path = root / name
        path.write_bytes(encode(picture, "JPEG", quality=90) if seed % 2 else encode(picture, "PNG"))
        scores = reference_scores(Image.open(path))
        if not away_from(scores):
            path.unlink()
            continue
        expected[name] = reference_tags(scores)
    model = build_tiny_wd14(root / "model")
    return [TagItem(path=root / n, key=n) for n in sorted(expected)], expected, model


def pairs(tags: ImageTags) -> list[tuple[str, str]]:
    return [(t.tag, t.category) for t in tags.tags]


@pytest.mark.parametrize("workers", [None, 1, 3, 6])
def test_tags_are_a_plain_loops_whatever_the_decoder_count(pictures, monkeypatch, workers):
    items, expected, model = pictures
    monkeypatch.setattr(pipeline, "WINDOW_S", 0.0)  # measure after every batch: the count moves during the run
    found = {}
    report = tag_images(items * 3, {"tiny": WD14Tagger(model)}, batch_size=1, workers=workers,
                        on_result=lambda o: found.setdefault(o.key, []).append(pairs(o.tags["tiny"])))
    assert report.done == 3 * len(items) and report.failed == []
    assert {k: v[0] for k, v in found.items()} == expected
    assert all(v == [v[0]] * 3 for v in found.values())
    if workers is None:
        assert len(set(report.worker_counts)) > 1, "sizing never changed the count"
    else:
        assert set(report.worker_counts) == {workers}


class TimedModel:
    """A tagger whose `prepare` (run by the decoders) and `predict` (the model) take the time the test says. They
    wait rather than compute, so more decoders really feed more images, whatever else the machine is doing."""

    name, device, batch_limit = "timed", "CPU (test)", 64

    def __init__(self, *, prepare: float, predict: float):
        self.prepare_s, self.predict_s = prepare, predict

    def prepare(self, image: Image.Image) -> np.ndarray:
        time.sleep(self.prepare_s)
        return np.full((2,), image.width, np.float32)

    def predict(self, batch: np.ndarray) -> list[ImageTags]:
        time.sleep(self.predict_s)
        return [ImageTags(tags=(TagScore(tag=f"w{int(r[0])}", score=1.0, category="general"),)) for r in batch]

    def unload(self) -> None:
        pass


def live_decoders() -> int:
    return sum(t.name.startswith("tagger-decode") for t in threading.enumerate())


def test_decoders_grow_for_a_cheap_model_and_shrink_for_an_expensive_one(pictures, monkeypatch):
    items, _, _ = pictures
    monkeypatch.setattr(pipeline, "WINDOW_S", 0.05)
    monkeypatch.setattr(pipeline, "default_workers", lambda devices, cpus=None: 2)
    monkeypatch.setattr(pipeline, "most_workers", lambda cpus=None: 12)
    # cheap: the model answers at once and each image takes 20 ms to prepare: the model waits, decoders are added
    cheap = tag_images(items * 15, [TimedModel(prepare=0.02, predict=0)], batch_size=1)
    assert cheap.done == 15 * len(items) and cheap.worker_counts[0] == 2
    # it grows well past the start and ends above it (a busy machine makes the last windows retire a few again)
    assert max(cheap.worker_counts) >= 6 and cheap.worker_counts[-1] > cheap.worker_counts[0], cheap.worker_counts
    # expensive: 10 ms an image against 1 ms to prepare it: decoders are retired down to one
    monkeypatch.setattr(pipeline, "WINDOW_S", 0.15)
    monkeypatch.setattr(pipeline, "default_workers", lambda devices, cpus=None: 4)
    seen = []
    slow = tag_images(items * 6, [TimedModel(prepare=0.001, predict=0.01)], batch_size=1,
                      progress=lambda *a: seen.append(live_decoders()))
    counts = slow.worker_counts
    assert slow.done == 6 * len(items) and counts[0] == max(counts) == 4 and 1 in counts, counts
    assert all(c <= 2 for c in counts[len(counts) // 2:]), counts  # (a busy machine may make it try 2 again)
    assert max(seen[:3]) >= 3 and max(seen[-10:]) <= 2, seen  # threads really leave (one may be finishing a put)
    assert live_decoders() == 0


def test_a_cancel_while_the_pool_changes_leaves_no_thread(pictures, monkeypatch):
    items, _, model = pictures
    monkeypatch.setattr(pipeline, "WINDOW_S", 0.0)
    cancel = threading.Event()
    done = []

    def on_result(outcome) -> None:
        done.append(outcome.key)
        if len(done) == 50:
            cancel.set()

    report = tag_images(items * 20, [WD14Tagger(model)], batch_size=1, cancel=cancel, on_result=on_result)
    assert report.cancelled and report.done == len(done) and 50 <= report.done < 20 * len(items)
    assert [t.name for t in threading.enumerate() if t.name.startswith("tagger-")] == []


def test_an_error_in_on_result_stops_the_run_and_reaches_the_caller(pictures):
    items, _, model = pictures

    def on_result(outcome) -> None:
        raise RuntimeError("disk full while writing a caption")

    with pytest.raises(RuntimeError, match="disk full"):
        tag_images(items, [WD14Tagger(model)], batch_size=1, on_result=on_result)
    assert [t.name for t in threading.enumerate() if t.name.startswith("tagger-")] == []


# --- import: one decode, all cores, links -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Pictures large enough for a reduced decode, with an exact duplicate, near duplicates (re-encoded, smaller,
    PNG), a picture turned by EXIF, a CMYK one and two files of the same name in different folders."""
    folder = tmp_path_factory.mktemp("user") / "photos"
    (folder / "more").mkdir(parents=True)
    pictures = {seed: Image.fromarray(pattern(seed, 800, 600)) for seed in range(6)}
    for seed, picture in pictures.items():
        (folder / f"pic{seed}.jpg").write_bytes(encode(picture, "JPEG", quality=92))
    (folder / "pic0 copy.jpg").write_bytes((folder / "pic0.jpg").read_bytes())
    (folder / "pic1 q70.jpg").write_bytes(encode(pictures[1], "JPEG", quality=70))
    (folder / "pic1 small.jpg").write_bytes(encode(pictures[1].resize((400, 300)), "JPEG", quality=90))
    (folder / "pic2.png").write_bytes(encode(pictures[2], "PNG"))
    (folder / "turned.jpg").write_bytes(jpeg_bytes(stored_for_orientation(pattern(20, 800, 600), 6), 6))
    (folder / "cmyk.jpg").write_bytes(encode(pictures[3].convert("CMYK"), "JPEG", quality=92))
    (folder / "more" / "pic4.jpg").write_bytes(encode(pictures[5], "JPEG", quality=80))
    return folder


def full_decode_phash(path: Path) -> int:
    """The perceptual hash as import made it before: from the full picture, upright, RGB."""
    with Image.open(path) as im:
        from PIL import ImageOps
        return perceptual_hash(ImageOps.exif_transpose(im).convert("RGB"))


def test_import_gives_the_same_images_hashes_and_duplicate_groups_as_before(project, photos):
    report = import_paths(project, [str(photos)], [photos.parent])
    assert report.skipped == [] and len(report.imported) == 13
    sources = sorted(p for p in photos.rglob("*") if p.is_file())
    # the order and names of before: sources in the order of the walk, the second "pic4" found becomes pic4-2
    assert [Path(i.source).relative_to(photos).as_posix() for i in report.imported] == \
        [p.relative_to(photos).as_posix() for p in sources]
    copies = {Path(i.source).relative_to(photos).as_posix(): project.root / i.image for i in report.imported}
    assert copies["more/pic4.jpg"].name == "pic4.jpg" and copies["pic4.jpg"].name == "pic4-2.jpg"
    converted = {"turned.jpg", "cmyk.jpg"}
    for rel, copy in copies.items():
        source = photos / rel
        original = project.root / "originals" / f"{sha(source)[:24]}{'.jpg' if rel.endswith('.jpg') else '.png'}"
        assert sha(original) == sha(source), rel
        if rel in converted:
            assert copy.suffix == ".png" and not os.path.samefile(copy, original), rel
        else:
            assert sha(copy) == sha(source) and os.path.samefile(copy, original), f"{rel} is not linked"
    # sizes of the whole picture (a reduced decode must not leak into them), hashes, duplicate groups
    entries = {e.path: e for e in DatasetIndex(project).scan()}
    for rel, copy in copies.items():
        entry = entries[copy.relative_to(project.root).as_posix()]
        with Image.open(copy) as im:
            assert (entry.width, entry.height) == im.size, rel
        assert entry.sha256 == sha(copy) and hamming(entry.phash_int, full_decode_phash(copy)) <= 4, rel
    before = find_duplicates([(e.path, e.sha256, full_decode_phash(project.root / e.path)) for e in entries.values()],
                             project.settings.near_duplicate_distance)
    assert {(g.kind, g.images) for g in report.duplicates} == {(g.kind, g.images) for g in before}
    groups = sorted((g.kind, sorted(Path(i).stem for i in g.images)) for g in before)  # so the comparison can fail
    assert groups == [("exact", ["pic0", "pic0 copy"]), ("near", ["cmyk", "pic3"]),
                      ("near", ["pic1", "pic1 q70", "pic1 small"]), ("near", ["pic2", "pic2-2"]),
                      ("near", ["pic4", "pic5"])]


def test_describe_image_decodes_a_kept_jpeg_reduced_and_the_rest_in_full(photos, tmp_path):
    kept = describe_image(photos / "pic0.jpg")
    assert isinstance(kept, ImageFacts) and kept.keep_bytes_suffix == ".jpg" and kept.image is None
    assert (kept.width, kept.height) == (800, 600)
    turned = describe_image(photos / "turned.jpg")
    assert turned.keep_bytes_suffix is None and turned.image.size == (turned.width, turned.height) == (800, 600)
    assert turned.phash == perceptual_hash(turned.image)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((photos / "pic0.jpg").read_bytes()[:5000])
    assert "truncated or corrupt" in describe_image(truncated).reason, "a reduced decode still reads every byte"


def test_editing_a_linked_training_copy_leaves_the_original_as_it_was(project, photos):
    report = import_paths(project, [str(photos / "pic0.jpg"), str(photos / "pic1.jpg")], [photos.parent])
    first, second = (project.root / i.image for i in report.imported)
    original = project.root / "originals" / f"{sha(first)[:24]}.jpg"
    before, mode = original.read_bytes(), original.stat().st_mode
    assert os.path.samefile(first, original)
    if os.name != "nt":  # an editor saving in place into the training copy cannot reach the original
        assert mode & 0o222 == 0 and first.stat().st_mode & 0o222 == 0
    # every writer of training copies goes through fsutil: a new file renamed over the link
    flipped = Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    atomic_save_image(flipped, first, quality=90)
    assert original.read_bytes() == before and original.stat().st_mode == mode
    assert first.read_bytes() != before and not os.path.samefile(first, original)
    atomic_write_bytes(first, b"not even an image")
    assert original.read_bytes() == before and original.stat().st_nlink == 1
    # removing a training copy keeps its original
    second_original = project.root / "originals" / f"{sha(second)[:24]}.jpg"
    kept = second_original.read_bytes()
    remove_copies(project, [second.relative_to(project.root).as_posix()])
    assert not second.exists() and second_original.read_bytes() == kept
    # and the user's files were only read
    assert sha(photos / "pic0.jpg") == hashlib.sha256(before).hexdigest()


def test_a_file_system_without_links_gets_copies(project, photos, monkeypatch):
    def no_links(src, dst, **kwargs):
        raise OSError(1, "Operation not permitted")  # EPERM, as FAT or some network shares answer

    monkeypatch.setattr(os, "link", no_links)
    report = import_paths(project, [str(photos / "pic0.jpg")], [photos.parent])
    copy = project.root / report.imported[0].image
    original = project.root / "originals" / f"{sha(copy)[:24]}.jpg"
    assert sha(copy) == sha(original) == sha(photos / "pic0.jpg") and not os.path.samefile(copy, original)


def test_the_import_pool_leaves_nothing_behind_when_cancelled(project, photos):
    class AfterCalls:
        calls = 0

        def is_set(self) -> bool:
            self.calls += 1
            return self.calls > 3

    report = import_paths(project, [str(photos)], [photos.parent], cancel=AfterCalls())
    assert report.cancelled and len(report.imported) == 3
    assert [t.name for t in threading.enumerate() if t.name.startswith("import-stage")] == []
    assert list((project.state_dir / "staging").iterdir()) == []
    assert len(list((project.root / "originals").iterdir())) == 3


# --- nothing writes a file in place -----------------------------------------------------------------------------

def test_no_module_writes_a_file_in_place():
    """Training copies may be hard links to originals: a write into one by name (PIL's `save(path)`, `open(path,
    "w")`) would change the original too. Every write goes through fsutil (a new file renamed into place); logs
    are appended to, which is allowed."""
    offenders = []
    package = Path(lib_lorakit.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.name == "fsutil.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            where = f"{path.relative_to(package)}:{node.lineno}"
            if isinstance(func, ast.Attribute) and func.attr == "save" and node.args and not (
                    isinstance(func.value, ast.Name) and func.value.id in ("np", "numpy")):
                offenders.append(f"{where} .save(...)")
            if isinstance(func, ast.Attribute) and func.attr in ("write_bytes", "write_text"):
                offenders.append(f"{where} .{func.attr}(...)")
            if isinstance(func, ast.Name) and func.id == "open":
                mode = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                text = mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "r"
                if mode is not None and not isinstance(mode, ast.Constant) or set(text) & set("wx+"):
                    offenders.append(f"{where} open(..., {text!r})")
    assert offenders == []
