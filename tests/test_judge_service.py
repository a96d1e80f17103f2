"""JudgeService end to end on real files: a fake-trainer run's saved files, a grid made by controlled fake generators
into eval/<id>/, judge.json on disk, the recommendation written into the card.

The generators are Python objects implementing `evaluate.Generator`. Each picture is two halves: the left holds the
prompt (a colour of its own per prompt), the right the style (grey at weight 0, turning to the training images'
orange as weight × epoch grows), over a faint texture of its own. `CopyingGenerator` returns lightly altered
training images (resized, colour-shifted) for the final epoch at weight ≥ 0.8; `DeafGenerator` paints the left half
orange too at weight ≥ 0.8 (it ignores the prompt).

Strength and adherence need a CLIP whose geometry means something; a random-weight tiny CLIP has none. So the
scoring tests use `ColourClip`, a thin stand-in embedder: an image's vector is its two halves' mean colours, a
prompt's vector is the picture a prompt-following image would have (its colour on the left, nothing on the right).
The copy descriptor is the real perceptual one (judge/descriptors.py). The tiny CLIP (tests/tiny_clip.py) runs the
plumbing test: the request's embedder spec loaded through EmbedService in a job.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib_lorakit.errors import LorakitError, NotFound
from lib_lorakit.evaluate import GenImage, GenRequest, LoraUse
from lib_lorakit.evaluate.service import EvalService
from lib_lorakit.fsutil import atomic_write_json, read_json
from lib_lorakit.host import StandaloneHost
from lib_lorakit.jobs import job_manager
from lib_lorakit.judge.descriptors import PerceptualDescriptor
from lib_lorakit.judge.service import DEFAULT_OFF_PROMPTS, JudgeRequest, JudgeService
from lib_lorakit.schema import InvalidSettings
from lib_lorakit.train.config import without_trigger
from lib_lorakit.train.runner import Runs, RunSpec

W = H = 64
FILES = ["zq-000001.safetensors", "zq-000002.safetensors", "zq.safetensors"]
ORANGE = np.array([230, 120, 20], dtype=np.float32)
GREY = np.array([128, 128, 128], dtype=np.float32)
TRIGGERS = ["zq"]


def write_lora(path: Path) -> None:
    import struct

    header = {"lora_unet_a.lora_up.weight": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
              "__metadata__": {"ss_base_model_version": "sd_v1", "ss_output_name": "zq"}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))


def texture(key: str, amplitude: float, blocks: int = 8) -> np.ndarray:
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little"))
    small = rng.uniform(-amplitude, amplitude, size=(blocks, blocks, 1)).astype(np.float32)
    return np.kron(small, np.ones((H // blocks, W // blocks, 1), dtype=np.float32))


def prompt_colour(prompt: str) -> np.ndarray:
    d = hashlib.sha256(prompt.encode()).digest()
    return np.array([40 + d[0] % 60, 60 + d[1] % 160, 120 + d[2] % 130], dtype=np.float32)  # blue-green, not orange


def picture(left: np.ndarray, right: np.ndarray, key: str) -> Image.Image:
    pixels = np.empty((H, W, 3), dtype=np.float32)
    pixels[:, : W // 2] = left
    pixels[:, W // 2:] = right
    return Image.fromarray(np.clip(pixels + texture(key, 12), 0, 255).astype(np.uint8))


def training_image(i: int) -> Image.Image:
    """The style: orange, a strong texture of its own."""
    pixels = ORANGE + texture(f"train{i}", 60, blocks=4) + np.array([i * 6, -i * 4, i * 3], dtype=np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def epoch_of(lora_name: str) -> int:
    return int(lora_name.rsplit("-", 1)[1]) if "-" in lora_name else 3


class HealthyGenerator:
    """Follows the prompt on the left; the right half turns orange with weight × epoch."""

    name = "test-healthy"

    def __init__(self, stop_after: int | None = None):
        self.calls = 0
        self.stop_after = stop_after

    def generate(self, requests, *, progress=None, cancel=None):
        out = []
        for req in requests:
            out.append(GenImage(self.paint(req), f"{req.prompt}\nSeed: {req.seed}", req.seed, req))
        self.calls += 1
        if self.stop_after is not None and self.calls >= self.stop_after and cancel is not None:
            cancel.set()
        return out

    def mix(self, req) -> tuple[float, int]:
        lora = req.loras[0]
        return float(lora.weight), epoch_of(lora.name)

    def paint(self, req) -> Image.Image:
        w, epoch = self.mix(req)
        style = min(1.0, w * (0.5 + 0.15 * epoch))
        left = prompt_colour(without_trigger(req.prompt, TRIGGERS))
        return picture(left, GREY + (ORANGE - GREY) * style, f"{req.prompt}|{req.seed}|{w}|{epoch}")


class CopyingGenerator(HealthyGenerator):
    """The final epoch at weight ≥ 0.8 returns a training image, resized and colour-shifted a little."""

    name = "test-copier"

    def paint(self, req) -> Image.Image:
        w, epoch = self.mix(req)
        if epoch == 3 and w >= 0.8:
            i = int(hashlib.sha256(f"{req.prompt}|{req.seed}".encode()).hexdigest(), 16) % 6
            im = training_image(i).resize((56, 56)).resize((W, H))
            return Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + [8, -6, 5], 0, 255).astype(np.uint8))
        return super().paint(req)


class DeafGenerator(HealthyGenerator):
    """At weight ≥ 0.8 the prompt is ignored: the left half is the style too."""

    name = "test-deaf"

    def paint(self, req) -> Image.Image:
        w, epoch = self.mix(req)
        if w >= 0.8:
            return picture(ORANGE, ORANGE, f"{req.prompt}|{req.seed}|{w}|{epoch}")
        return super().paint(req)


class ColourClip:
    """A stand-in CLIP whose geometry is known (see the module docstring)."""

    id = "test/colour-clip"

    def embed_images(self, images):
        rows = []
        for im in images:
            a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 - 0.5
            w = a.shape[1] // 2
            rows.append(np.concatenate([a[:, :w].mean(axis=(0, 1)), a[:, w:].mean(axis=(0, 1))]))
        return _unit_rows(rows)

    def embed_texts(self, texts):
        return _unit_rows([np.concatenate([prompt_colour(t) / 255.0 - 0.5, np.zeros(3)]) for t in texts])


def _unit_rows(rows) -> np.ndarray:
    m = np.stack(rows).astype(np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)


class Setup:
    def __init__(self, workspace, tmp_path: Path):
        self.project = workspace.create("demo", trigger_words=("zq",))
        concept = self.project.add_concept("art", 1)
        for i in range(6):
            training_image(i).save(concept.folder / f"t{i}.png")
            (concept.folder / f"t{i}.txt").write_text(f"zq, a drawing of thing {i}")
        runs = Runs(self.project)
        run_dir = runs.new_dir("t")
        runs.create(run_dir, RunSpec(argv=(), cwd=str(run_dir), output_name="zq"), files={},
                    meta={"trigger_words": ["zq"], "base_arch": "SD1"})
        for name in FILES:
            write_lora(run_dir / name)
        data = read_json(run_dir / "run.json")
        data.update(state="done", files=FILES)
        atomic_write_json(run_dir / "run.json", data)
        self.run = run_dir.name
        self.host = StandaloneHost(home=self.project.root.parent, lora=tmp_path / "Lora", models=tmp_path / "models")
        self.judge = JudgeService(self.host)

    def request(self, **kw) -> JudgeRequest:
        data = {"descriptor": "perceptual", "weights": "0.4,0.8,1", "seeds": "1,2", "caption_samples": 2,
                "width": W, "height": H, "min_adherence": 0.8, "max_copy_rate": 0.1, **kw}
        return JudgeRequest.from_dict(data)

    def fakes(self) -> dict:
        return {"descriptor": PerceptualDescriptor(), "embedder": ColourClip()}


@pytest.fixture
def setup(workspace, tmp_path):
    return Setup(workspace, tmp_path)


def cell(doc, epoch, weight):
    return next(c for c in doc["cells"] if c["epoch"] == epoch and c["weight"] == weight)


# --- the grid the judge asks for ----------------------------------------------------------------------------------

def test_the_judges_grid_holds_weight_zero_off_prompts_and_captions_with_the_trigger(setup):
    grid = setup.judge.grid_request("demo", setup.run, setup.request())
    assert grid.settings["weights"].split(",") == ["0", "0.4", "0.8", "1"]
    assert grid.seeds == (1, 2)
    off = [p for p in grid.prompts if "drawing" not in p]
    assert off == [f"zq, {p}" for p in DEFAULT_OFF_PROMPTS]
    captions = [p for p in grid.prompts if "drawing" in p]
    assert len(captions) == 2 and all(p.startswith("zq, a drawing of thing") for p in captions)
    plan = EvalService(setup.host).plan("demo", grid)
    assert plan.size == 4 * 3 * 6 * 2


# --- copying, adherence, the recommendation -----------------------------------------------------------------------

def test_a_lora_that_returns_training_images_is_flagged_and_the_recommendation_avoids_it(setup):
    # adherence falls as the style grows (the right half's orange pulls each picture away from its prompt): a floor
    # of 0.6 leaves copying as what decides here
    doc = setup.judge.run("demo", setup.run, setup.request(min_adherence=0.6), generator=CopyingGenerator(),
                          **setup.fakes())
    assert doc["state"] == "done" and doc["error"] == ""
    on_disk = read_json(setup.project.root / "eval" / doc["grid"] / "judge.json")
    assert on_disk == json.loads(json.dumps(doc))
    assert doc["descriptor"]["name"] == "perceptual"
    assert doc["descriptor"]["threshold"] == PerceptualDescriptor.threshold and doc["descriptor"]["unit"]
    assert doc["training_images"] == 6 and doc["embedder"] == ColourClip.id
    for w in ("0.8", "1"):
        c = cell(doc, "final", w)
        assert c["copy_rate"] == 1.0, c
        for s in c["samples"]:
            assert s["copy"] and s["nearest"].startswith("dataset/1_art/t") and s["similarity"] >= 0.75
            assert (setup.project.root / s["image"]).is_file()
    others = [c for c in doc["cells"] if not (c["epoch"] == "final" and c["weight"] in ("0.8", "1"))]
    assert all(c["copy_rate"] == 0.0 for c in others), [(c["epoch"], c["weight"], c["copy_rate"]) for c in others]
    assert doc["first_copying_epoch"] == "final"
    assert [e["epoch"] for e in doc["epochs"]] == ["epoch 1", "epoch 2", "final"]
    assert doc["epochs"][2]["copies"] == doc["epochs"][2]["samples"] == 12
    rec = doc["recommendation"]
    assert (rec["epoch"], rec["weight"]) == ("epoch 2", 1.0)
    assert cell(doc, "final", "1")["strength"] > rec["scores"]["strength"] > cell(doc, "epoch 1", "1")["strength"]
    assert any("final copies 12 of 12 at weight 1" in r for r in rec["reasons"])
    kinds = {s["kind"] for c in doc["cells"] for s in c["samples"]}
    assert kinds == {"off", "caption"}


def test_a_lora_that_ignores_the_prompt_loses_adherence(setup):
    doc = setup.judge.run("demo", setup.run, setup.request(), generator=DeafGenerator(), **setup.fakes())
    for epoch in ("epoch 1", "epoch 2", "final"):
        assert cell(doc, epoch, "0.4")["adherence"] > 0.85
        assert cell(doc, epoch, "0.8")["adherence"] < 0.5
        assert cell(doc, epoch, "1")["adherence"] < 0.5
    assert doc["baseline"]["clip_score"] > 0.9
    rec = doc["recommendation"]
    assert rec["weight"] == 0.4 and rec["scores"]["adherence"] > 0.85
    assert any("refused" in r and "adherence" in r for r in rec["reasons"])


def test_the_recommendation_goes_into_the_card_with_its_reasons(setup):
    doc = setup.judge.run("demo", setup.run, setup.request(min_adherence=0.6), generator=CopyingGenerator(),
                          **setup.fakes())
    choice = setup.judge.apply("demo", doc["grid"])
    assert choice.lora.name == "zq-000002.safetensors" and choice.weight == 1.0
    card = read_json(choice.card)
    assert card["preferred weight"] == 1.0
    assert "epoch 2 at 1: strength" in card["notes"] and "final copies 12 of 12" in card["notes"]
    assert doc["grid"] in card["notes"]
    assert "Judge (style)" in choice.note


def test_no_recommendation_cannot_be_applied_and_says_why(setup):
    request = setup.request(max_copy_rate=0.0, min_adherence=1.5)
    doc = setup.judge.run("demo", setup.run, request, generator=HealthyGenerator(), **setup.fakes())
    assert doc["recommendation"] is None and "No cell passes" in doc["why_none"]
    with pytest.raises(LorakitError, match="recommends nothing: No cell passes"):
        setup.judge.apply("demo", doc["grid"])
    assert not list((setup.host.lora_dir()).rglob("*.json"))


# --- an existing grid, cancel, crash, interrupted, list -----------------------------------------------------------

def made_grid(setup, generator=None) -> str:
    grid = setup.judge.grid_request("demo", setup.run, setup.request(weights="0.4,1", caption_samples=0))
    return EvalService(setup.host).run("demo", grid, generator=generator or HealthyGenerator())["id"]


def test_an_existing_grid_is_judged_and_listed_newest_first(setup):
    first = made_grid(setup)
    second = made_grid(setup)
    setup.judge.judge("demo", first, setup.request(), **setup.fakes())
    setup.judge.judge("demo", second, setup.request(goal="character"), **setup.fakes())
    listed = setup.judge.list("demo")
    assert [g["grid"] for g in listed] == [second, first]
    assert listed[0]["goal"] == "character" and listed[0]["state"] == "done"
    assert setup.judge.show("demo", first)["recommendation"]["goal"] == "style"
    with pytest.raises(NotFound, match="has not been judged"):
        setup.judge.show("demo", made_grid(setup))
    with pytest.raises(NotFound):
        setup.judge.show("demo", "../../etc")


class CancellingDescriptor(PerceptualDescriptor):
    def __init__(self, cancel: threading.Event):
        super().__init__()
        self.cancel = cancel

    def embed_images(self, images):
        self.cancel.set()
        return super().embed_images(images)


class CrashingDescriptor(PerceptualDescriptor):
    def embed_images(self, images):
        raise RuntimeError("the descriptor broke")


def test_a_cancel_leaves_a_judge_json_that_says_so(setup):
    grid = made_grid(setup)
    cancel = threading.Event()
    doc = setup.judge.judge("demo", grid, setup.request(), descriptor=CancellingDescriptor(cancel),
                            embedder=ColourClip(), cancel=cancel)
    assert doc["state"] == "cancelled" and "judge the grid again" in doc["error"]
    assert setup.judge.show("demo", grid)["state"] == "cancelled"


def test_a_crash_leaves_a_failed_judge_json_and_a_dead_process_reads_interrupted(setup):
    grid = made_grid(setup)
    with pytest.raises(RuntimeError):
        setup.judge.judge("demo", grid, setup.request(), descriptor=CrashingDescriptor(), embedder=ColourClip())
    doc = setup.judge.show("demo", grid)
    assert doc["state"] == "failed" and "the descriptor broke" in doc["error"]
    path = setup.project.root / "eval" / grid / "judge.json"
    atomic_write_json(path, {**read_json(path), "state": "running", "pid": os.getpid() + 1})
    doc = setup.judge.show("demo", grid)
    assert doc["state"] == "interrupted" and "judge the grid again" in doc["error"]
    with pytest.raises(LorakitError, match="interrupted, not done"):
        setup.judge.apply("demo", grid)


def test_a_grid_cancelled_while_being_made_is_reported_cancelled(setup):
    cancel = threading.Event()
    doc = setup.judge.run("demo", setup.run, setup.request(), generator=HealthyGenerator(stop_after=1),
                          cancel=cancel, **setup.fakes())
    assert doc["state"] == "cancelled" and "resume the grid" in doc["error"]
    assert setup.judge.show("demo", doc["grid"])["state"] == "cancelled"


# --- requests -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, words", [
    ({"goal": "beauty"}, "goal: expected one of style, character"),
    ({"max_copy_rate": 2}, "max_copy_rate"),
    ({"seeds": "one"}, "seeds: expected whole numbers"),
    ({"weights": "heavy"}, "weights: 'heavy' is not a number"),
    ({"prompts": ["two\nlines"]}, "prompts[0]: expected one line"),
    ({"descriptor": "sift"}, "descriptor: expected one of sscd, clip, perceptual"),
    ({"colour": 1}, "unknown judge setting 'colour'"),
])
def test_a_bad_request_names_its_field(data, words):
    with pytest.raises(InvalidSettings) as e:
        JudgeRequest.from_dict(data)
    assert any(words in p for p in e.value.problems), e.value.problems


def test_several_bad_fields_are_named_together():
    with pytest.raises(InvalidSettings) as e:
        JudgeRequest.from_dict({"goal": "beauty", "seeds": "one", "weights": "heavy"})
    assert len(e.value.problems) == 3


def test_a_request_round_trips():
    r = JudgeRequest.from_dict({"goal": "character", "prompts": ["a red boat"], "seeds": "3,4"})
    assert JudgeRequest.from_dict(r.to_dict()) == r and r.seeds == (3, 4) and r.prompts == ("a red boat",)


# --- plumbing: the request's own embedder, as a job ---------------------------------------------------------------

def test_a_judge_job_loads_the_requests_clip_and_descriptor(setup):
    from tiny_clip import TINY_CONFIG, TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

    folder = setup.host.models_dir() / "train-style" / "clip"
    config = folder / f"{TINY_MODEL}.json"
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(TINY_CONFIG))
    register_tiny_clip(folder)
    weights = save_tiny_checkpoint(folder / "tiny.pt")
    grid = made_grid(setup)
    job = setup.judge.start_judge("demo", grid, setup.request(embedder=f"{config}:{weights}"))
    job = job_manager(setup.host.projects_home()).wait(job.id, timeout=120)
    assert job.state == "done", job.error
    doc = setup.judge.show("demo", grid)
    assert doc["state"] == "done" and TINY_MODEL in doc["embedder"]
    c = cell(doc, "epoch 1", "1")
    assert c["clip_score"] is not None and c["strength"] is not None and len(c["samples"]) == 8


class BlockingDescriptor(PerceptualDescriptor):
    def __init__(self, entered: threading.Event, release: threading.Event):
        super().__init__()
        self.entered, self.release = entered, release

    def embed_images(self, images):
        self.entered.set()
        assert self.release.wait(60)
        return super().embed_images(images)


def test_one_grid_is_judged_once_at_a_time_and_reads_running_meanwhile(setup):
    grid = made_grid(setup)
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first():
        try:
            setup.judge.judge("demo", grid, setup.request(), descriptor=BlockingDescriptor(entered, release),
                              embedder=ColourClip())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert entered.wait(60)
        assert setup.judge.show("demo", grid)["state"] == "running"
        with pytest.raises(LorakitError, match="being judged already"):
            setup.judge.judge("demo", grid, setup.request(), **setup.fakes())
    finally:
        release.set()
        thread.join(60)
    assert not errors and setup.judge.show("demo", grid)["state"] == "done"


def test_overfit_checks_a_folder_of_samples_against_the_training_images(setup, tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    training_image(2).resize((48, 48)).save(samples / "copy.png")
    fresh = GenRequest(prompt="a city street at night", seed=1, loras=(LoraUse(name="zq", weight=0.0),))
    HealthyGenerator().paint(fresh).save(samples / "fresh.png")
    from lib_lorakit.judge.memorise import OverfitRequest

    report = setup.judge.overfit("demo", OverfitRequest.from_dict({"samples": str(samples),
                                                                   "descriptor": "perceptual"}), local_user=True)
    by_name = {Path(m.image).name: m for m in report.samples}
    assert by_name["copy.png"].copy and by_name["copy.png"].nearest == "dataset/1_art/t2.png"
    assert not by_name["fresh.png"].copy and report.copy_rate == 0.5 and report.descriptor == "perceptual"
