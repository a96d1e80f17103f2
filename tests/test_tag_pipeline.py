"""The tagging pipeline on real files: the same tags whatever the batch size and worker count, bad files
reported and skipped, cancel, bounded memory, reduced-scale JPEG decoding."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from awkward import jpeg_bytes, pattern, png_header_only
from PIL import Image
from tiny_wd14 import SIZE, away_from, build_tiny_wd14, reference_scores, reference_tags

from lib_lorakit.errors import LorakitError
from lib_lorakit.images import LoadedImage, open_training_image
from lib_lorakit.taggers.base import ImageTags, TagScore
from lib_lorakit.taggers.pipeline import (
    TagItem,
    TagOutcome,
    default_batch_size,
    default_workers,
    draft_request,
    tag_images,
)
from lib_lorakit.taggers.wd14 import WD14Tagger

BAD = {"truncated.jpg": "truncated or corrupt", "empty.png": "empty file", "random.jpg": "not a recognisable image",
       "huge.png": "900 MP"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"any": build_tiny_wd14(root / "tiny"), "one": build_tiny_wd14(root / "tiny-b1", fixed_batch=1)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[list[TagItem], dict[str, list[tuple[str, str]]]]:
    """Twenty good pictures (flat colours, wide, tall, textured) and the bad files, with each good one's tags."""
    root = tmp_path_factory.mktemp("images")
    expected: dict[str, list[tuple[str, str]]] = {}
    colours = [(230, 30, 30), (30, 200, 60), (40, 60, 220), (250, 250, 250), (0, 200, 100), (30, 30, 60)]
    pics: dict[str, Image.Image] = {}
    for i, c in enumerate(colours):
        pics[f"flat {i}.png"] = Image.new("RGB", ((40, 90, 30)[i % 3], (40, 30, 70)[i % 3]), c)
    for seed in range(14):
        pics[f"pattern {seed}.png"] = Image.fromarray(pattern(seed, 48 + 8 * (seed % 5), 40 + 6 * (seed % 4)))
    for name, pic in pics.items():
        scores = reference_scores(pic)
        if not away_from(scores):  # a picture on a threshold proves nothing either way
            continue
        pic.save(root / name)
        expected[name] = reference_tags(scores)
    noisy = pattern(99, 120, 90) + np.random.default_rng(1).integers(0, 30, (90, 120, 3), dtype=np.uint8)
    full = jpeg_bytes(noisy)
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "random.jpg").write_bytes(np.random.default_rng(3).bytes(2048))
    (root / "huge.png").write_bytes(png_header_only(30000, 30000))
    names = sorted(expected) + sorted(BAD)
    assert len(expected) >= 16
    return [TagItem(path=root / n, key=n) for n in names], expected


def collect(**kwargs) -> tuple[dict[str, TagOutcome], object]:
    outcomes: dict[str, TagOutcome] = {}

    def keep(outcome: TagOutcome) -> None:
        assert outcome.key not in outcomes, f"{outcome.key} reported twice"
        outcomes[outcome.key] = outcome

    report = tag_images(on_result=keep, **kwargs)
    return outcomes, report


def pairs(tags: ImageTags) -> list[tuple[str, str]]:
    return [(t.tag, t.category) for t in tags.tags]


def decoders_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tagger-decode")]


# --- results ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, batch, workers", [("any", 1, 1), ("any", 3, 2), ("any", 8, 3), ("one", 8, 2)])
def test_same_tags_whatever_the_batch_and_workers(models, folder, model, batch, workers):
    items, expected = folder
    outcomes, report = collect(items=items, taggers={"wd14": WD14Tagger(models[model])}, batch_size=batch,
                               workers=workers)
    assert sorted(outcomes) == sorted(i.key for i in items)
    for key, want in expected.items():
        assert outcomes[key].problem == "" and pairs(outcomes[key].tags["wd14"]) == want, key
    for key, reason in BAD.items():
        assert outcomes[key].tags is None and reason in outcomes[key].problem, (key, outcomes[key].problem)
    assert report.done == len(expected) and not report.cancelled
    assert sorted(report.failed) == sorted((k, outcomes[k].problem) for k in BAD)
    assert report.device.startswith("CPU") and report.images_per_second > 0
    assert (report.batch_size, report.workers) == (batch, workers)
    assert decoders_alive() == []


def test_two_taggers_in_one_pass(models, folder):
    items, expected = folder
    taggers = [WD14Tagger(models["any"], name="free"), WD14Tagger(models["one"], name="fixed")]
    outcomes, report = collect(items=items, taggers=taggers, batch_size=4, workers=2)
    for key, want in expected.items():
        assert pairs(outcomes[key].tags["free"]) == want == pairs(outcomes[key].tags["fixed"])
    assert report.device == "free: CPU (onnxruntime); fixed: CPU (onnxruntime)"


def test_progress_reaches_the_total(models, folder):
    items, _ = folder
    seen: list[tuple[int, int, str]] = []
    tag_images(items, [WD14Tagger(models["any"])], batch_size=4, workers=2, progress=lambda *a: seen.append(a))
    assert seen[-1][:2] == (len(items), len(items))
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)
    assert any("huge.png" in s[2] and "900 MP" in s[2] for s in seen)


def test_nothing_to_tag(models):
    outcomes, report = collect(items=[], taggers=[WD14Tagger(models["any"])])
    assert outcomes == {} and report.done == 0 and report.failed == [] and not report.cancelled


def test_defaults_suit_the_device(models, folder):
    assert default_workers(["CPU (onnxruntime)"], cpus=2) == 2  # where sizing starts; measurement moves it
    assert default_workers(["CPU (onnxruntime)"], cpus=32) == 4
    assert default_workers(["CUDA (onnxruntime-gpu)"], cpus=16) == 16
    assert default_workers(["CUDA (onnxruntime-gpu)"], cpus=2) == 2
    assert default_workers(["CPU", "CUDA (NVIDIA H100)"], cpus=1) == 1
    assert (default_batch_size(["CPU (onnxruntime)"]), default_batch_size(["CUDA (onnxruntime-gpu)"])) == (1, 8)
    items, expected = folder
    outcomes, report = collect(items=items[:3], taggers=[WD14Tagger(models["any"])])
    assert 1 <= report.batch_size <= 2 and report.workers >= 1 and report.done == 3  # CPU: from 1, grown if quick



# --- cancel and failures ----------------------------------------------------------------------------------------

def test_cancel_midway_stops_promptly_and_keeps_what_was_done(models, folder):
    items, expected = folder
    many = [TagItem(path=i.path, key=f"{n}/{i.key}") for n in range(6) for i in items if i.key in expected]
    cancel = threading.Event()
    outcomes: list[TagOutcome] = []

    def on_result(outcome: TagOutcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 5:
            cancel.set()

    started = time.perf_counter()
    report = tag_images(many, [WD14Tagger(models["any"])], batch_size=1, workers=2, cancel=cancel,
                        on_result=on_result)
    assert report.cancelled and 5 <= report.done < len(many)
    assert len(outcomes) == report.done + len(report.failed)
    assert all(pairs(o.tags["tiny"]) == expected[o.key.split("/", 1)[1]] for o in outcomes)
    assert time.perf_counter() - started < 10
    assert decoders_alive() == []


def test_cancelled_before_the_start(models, folder):
    cancel = threading.Event()
    cancel.set()
    outcomes, report = collect(items=folder[0], taggers=[WD14Tagger(models["any"])], cancel=cancel)
    assert report.cancelled and report.done == 0 and outcomes == {}


class FakeTagger:
    """A tagger whose prepare and predict the test controls."""

    name = "fake"
    device = "CUDA (fake)"
    batch_limit = 64

    def __init__(self, *, fail_on_width: int | None = None, raise_in_predict: bool = False):
        self.prepared = 0
        self.release = threading.Event()
        self.fail_on_width = fail_on_width
        self.raise_in_predict = raise_in_predict
        self._lock = threading.Lock()

    def prepare(self, image: Image.Image) -> np.ndarray:
        if image.width == self.fail_on_width:
            raise ValueError("cannot handle this width")
        with self._lock:
            self.prepared += 1
        return np.full((4,), image.width, np.float32)

    def predict(self, batch: np.ndarray) -> list[ImageTags]:
        if self.raise_in_predict:
            raise LorakitError("the GPU ran out of memory")
        self.release.wait(10)
        return [ImageTags(tags=(TagScore(tag=f"w{int(row[0])}", score=1.0, category="general"),)) for row in batch]

    def unload(self) -> None:
        pass


def test_memory_stays_bounded_while_the_model_is_slow(folder):
    items, expected = folder
    many = [TagItem(path=i.path, key=f"{n}/{i.key}") for n in range(10) for i in items if i.key in expected]
    fake = FakeTagger()
    result: dict[str, object] = {}
    runner = threading.Thread(target=lambda: result.update(report=tag_images(many, [fake], batch_size=2,
                                                                             workers=3)))
    runner.start()
    time.sleep(0.5)  # the model is stuck on the first batch; decoders may only run a few batches ahead
    assert fake.prepared <= 2 + (2 * 2 + 2) + 3, f"{fake.prepared} images decoded ahead of a stuck model"
    fake.release.set()
    runner.join(30)
    assert result["report"].done == len(many) and fake.prepared == len(many)


def test_a_failing_prepare_fails_only_that_image(folder):
    items, expected = folder
    widths = {Image.open(i.path).width for i in items if i.key in expected}
    fake = FakeTagger(fail_on_width=min(widths))
    fake.release.set()
    outcomes, report = collect(items=items, taggers=[fake], batch_size=3, workers=2)
    failed = {k for k, _ in report.failed} - set(BAD)
    assert failed and all("cannot handle this width" in outcomes[k].problem for k in failed)
    assert report.done == len(expected) - len(failed)


def test_a_failing_model_stops_the_run_and_its_workers(folder):
    with pytest.raises(LorakitError, match="ran out of memory"):
        tag_images(folder[0] * 5, [FakeTagger(raise_in_predict=True)], batch_size=2, workers=3)
    assert decoders_alive() == []


# --- reduced-scale JPEG decoding --------------------------------------------------------------------------------

def blocks(width: int, height: int) -> np.ndarray:
    """Large flat colour blocks (JPEG-friendly), far from every threshold of the tiny model."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2] = (220, 40, 40)
    a[:, width // 2:] = (40, 40, 200)
    a[: height // 3, : width // 3] = (240, 240, 240)
    return a


def test_big_jpegs_decode_at_reduced_scale(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(blocks(800, 600)))
    side = 2 * SIZE
    request = draft_request(path, side)
    assert request is not None
    loaded = open_training_image(path, draft=request)
    assert isinstance(loaded, LoadedImage)
    assert max(loaded.image.size) < 800 and max(loaded.image.size) >= side, loaded.image.size
    assert loaded.keep_bytes_suffix is None, "a reduced decode is not the file's picture"
    full = open_training_image(path)
    assert full.image.size == (800, 600) and full.keep_bytes_suffix == ".jpg"
    assert "above the limit" in open_training_image(path, draft=request, max_pixels=400_000).reason, \
        "the size limit still judges the full picture"
    png = tmp_path / "photo.png"
    Image.fromarray(blocks(800, 600)).save(png)
    assert draft_request(png, side) is None
    assert open_training_image(png, draft=(100, 100)).image.size == (800, 600)
    small = tmp_path / "small.jpg"
    small.write_bytes(jpeg_bytes(blocks(100, 80)))
    assert draft_request(small, side) is None


def test_rotated_jpeg_is_reduced_the_same_way(tmp_path):
    from awkward import stored_for_orientation

    path = tmp_path / "turned.jpg"
    path.write_bytes(jpeg_bytes(stored_for_orientation(blocks(800, 400), 6), 6))
    loaded = open_training_image(path, draft=draft_request(path, 2 * SIZE))
    assert loaded.image.width > loaded.image.height and loaded.image.width >= 2 * SIZE
    assert loaded.image.width <= 400


def test_reduced_decoding_keeps_the_tags(models, tmp_path):
    items = []
    for i, (w, h) in enumerate([(800, 600), (640, 900), (1024, 1024)]):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(blocks(w, h)))
        items.append(TagItem(path=path, key=path.name))
    expected = {}
    for item in items:
        scores = reference_scores(open_training_image(item.path).image)
        assert away_from(scores)
        expected[item.key] = reference_tags(scores)
    for reduced in (True, False):
        outcomes, _ = collect(items=items, taggers=[WD14Tagger(models["any"])], batch_size=2, workers=2,
                              reduced_jpeg_decode=reduced)
        assert {k: pairs(o.tags["tiny"]) for k, o in outcomes.items()} == expected


def test_two_taggers_under_one_name_are_refused(models, folder):
    with pytest.raises(ValueError, match="each under its own name"):
        tag_images(folder[0], [WD14Tagger(models["any"]), WD14Tagger(models["any"])])


class TimedTagger(FakeTagger):
    """A CPU model taking `seconds` a call, whatever the batch (onnxruntime's per-call cost dominating)."""

    device = "CPU (fake)"

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.batches = seconds, []
        self.release.set()

    def predict(self, batch: np.ndarray) -> list[ImageTags]:
        self.batches.append(len(batch))
        time.sleep(self.seconds)
        return super().predict(batch)


def test_a_cheap_cpu_model_gets_bigger_batches_and_a_slow_one_stays_at_one(folder):
    items, expected = folder
    many = [TagItem(path=i.path, key=f"{n}/{i.key}") for n in range(8) for i in items if i.key in expected]
    cheap, slow = TimedTagger(0.001), TimedTagger(0.2)
    fast_report = tag_images(many, [cheap], workers=2)
    assert max(cheap.batches) == fast_report.batch_size > 1, cheap.batches
    slow_report = tag_images(many[:6], [slow], workers=2)
    assert set(slow.batches) == {1} and slow_report.batch_size == 1
    assert fast_report.done == len(many) and slow_report.done == 6
