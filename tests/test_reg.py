"""Regularisation sets made by a generator (evaluate/reg.py), through the Studio, the CLI and the HTTP API.

The generator here is a thin fake that draws its prompt and seed into the picture: it stands in for the webui and
sd-scripts only so the logic (folders, captions, records, seeds, cancel, resume) can be checked; the real
generation is tested in tests/test_reg_real.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from lib_lorakit import api
from lib_lorakit.cli import main
from lib_lorakit.crop.service import CropRequest
from lib_lorakit.dataset.index import DatasetIndex
from lib_lorakit.errors import LorakitError
from lib_lorakit.evaluate import GenImage, GenRequest
from lib_lorakit.evaluate import reg as reg_module
from lib_lorakit.evaluate.reg import RegRequest
from lib_lorakit.host import StandaloneHost
from lib_lorakit.schema import InvalidSettings
from lib_lorakit.studio import Studio
from lib_lorakit.train.steps import project_counts

PROMPT = "1girl, solo"


class DrawingGenerator:
    """Draws each request's prompt and seed on a grey picture of the asked size. `hold_after=k`: after k images it
    says so (`reached`) and waits until its cancel flag is set, then returns what it made (a user's cancel)."""

    name = "drawing"

    def __init__(self, hold_after: int | None = None):
        self.hold_after = hold_after
        self.reached = threading.Event()
        self.requests: list[GenRequest] = []

    def generate(self, requests, *, progress=None, cancel=None):
        made = []
        for i, req in enumerate(requests):
            if self.hold_after is not None and len(self.requests) == self.hold_after:
                self.reached.set()
                for _ in range(200):
                    if cancel is not None and cancel.is_set():
                        break
                    time.sleep(0.05)
            if cancel is not None and cancel.is_set():
                break
            self.requests.append(req)
            made.append(draw(req))
            if progress:
                progress(i + 1, len(requests), f"seed {req.seed}")
        return made


def draw(req: GenRequest) -> GenImage:
    image = Image.new("RGB", (req.width, req.height), (120, 120, 120))
    pen = ImageDraw.Draw(image)
    pen.text((2, 2), req.prompt, fill=(255, 255, 255))
    pen.text((2, 20), str(req.seed), fill=(0, 0, 0))
    pen.rectangle((0, 40, req.seed % req.width, 44), fill=(req.seed % 251, 40, 200))
    infotext = (f"{req.prompt}\nNegative prompt: {req.negative}\nSteps: {req.steps}, Sampler: {req.sampler}, "
                f"CFG scale: {req.cfg}, Seed: {req.seed}, Size: {req.width}x{req.height}")
    return GenImage(image=image, infotext=infotext, seed=req.seed, request=req)


class GeneratingHost(StandaloneHost):
    """The standalone Host with the fake generator as its own (`generator=None`: a Host without one)."""

    def __init__(self, root: Path, generator: DrawingGenerator | None):
        super().__init__(home=root / "home", lora=root / "lora", models=root / "models")
        self.fake = generator

    def generator(self):
        if self.fake is None:
            raise LorakitError("no generator in this test Host")
        return self.fake


@pytest.fixture
def studio(tmp_path) -> Studio:
    s = Studio(GeneratingHost(tmp_path, DrawingGenerator()))
    s.create_project("demo", resolution=64)
    return s


def request(**changes) -> RegRequest:
    return RegRequest.from_dict({"class_name": "woman", "prompt": PROMPT, "count": 5, **changes})


def reg_pngs(studio: Studio) -> list[Path]:
    return sorted((studio.project("demo").root / "reg").glob("*/*.png"))


def test_n_images_land_in_the_reg_set_with_captions_records_and_index(studio):
    report = studio.reg.generate("demo", request(repeats=2, seed=1000))
    root = studio.project("demo").root
    files = reg_pngs(studio)
    assert [f.relative_to(root).as_posix() for f in files] == [f"reg/2_woman/woman_{i:05d}.png" for i in range(5)]
    assert report.folder == "reg/2_woman" and report.present == 5 and len(report.made) == 5
    for i, f in enumerate(files):
        assert f.with_suffix(".txt").read_text(encoding="utf-8").strip() == PROMPT
        with Image.open(f) as im:
            assert im.size == (64, 64)  # the project's training resolution
            assert f"Seed: {1000 + i}," in im.info["parameters"]  # the infotext travels in the file
    # imported like any other image: an original per file, a record naming it, the index knowing the copy
    records = json.loads((root / ".lorakit" / "imports.json").read_text())
    assert sorted(r["image"] for r in records.values()) == [f.relative_to(root).as_posix() for f in files]
    assert all((root / r["original"]).is_file() for r in records.values())
    indexed = {e.path for e in DatasetIndex(studio.project("demo")).scan()}
    assert {f.relative_to(root).as_posix() for f in files} <= indexed
    # the step calculator and the dataset report count the set
    counts = [c for c in project_counts(studio.project("demo")) if c.is_reg]
    assert [(c.name, c.images, c.repeats) for c in counts] == [("woman", 5, 2)]
    concepts = {c.folder: c.images for c in studio.report("demo").concepts if c.kind == "reg"}
    assert concepts == {"reg/2_woman": 5}
    # crop works on them from their originals, which stay as they were
    original = root / next(r["original"] for r in records.values() if r["image"].endswith("woman_00000.png"))
    kept = original.read_bytes()
    studio.crop.crop("demo", CropRequest.from_dict({"mode": "center", "images": ["reg/2_woman/woman_00000.png"],
                                                    "aspect": "1:2"}))
    with Image.open(files[0]) as im:
        assert im.size == (32, 64)
    assert original.read_bytes() == kept


def test_seeds_are_the_same_for_every_maker_and_differ_per_index(tmp_path):
    made = []
    for run in ("a", "b"):
        fake = DrawingGenerator()
        s = Studio(GeneratingHost(tmp_path / run, fake))
        s.create_project("demo", resolution=64)
        s.reg.generate("demo", request(count=3))
        made.append([r.seed for r in fake.requests])
    assert made[0] == made[1] and len(set(made[0])) == 3
    assert made[0] == [made[0][0] + i for i in range(3)]


def test_a_cancelled_job_keeps_what_it_made_and_a_rerun_continues_to_n(tmp_path, monkeypatch):
    monkeypatch.setattr(reg_module, "CHUNK", 2)  # 0-1 imported in one go, then the cancel lands inside 2-3
    fake = DrawingGenerator(hold_after=3)
    studio = Studio(GeneratingHost(tmp_path, fake))
    studio.create_project("demo", resolution=64)
    job = studio.reg.start("demo", request(count=5))
    assert fake.reached.wait(30)
    studio.jobs.cancel(job.id)
    job = studio.jobs.wait(job.id, timeout=60)
    assert job.state == "cancelled"
    assert len(reg_pngs(studio)) == 3 and job.result["present"] == 3 and job.result["cancelled"]
    kept = {f.name: f.stat().st_ino for f in reg_pngs(studio)}
    # the rerun asks for 5 again: it makes the two missing (indexes 3 and 4), not five more
    again = DrawingGenerator()
    report = studio.reg.generate("demo", request(count=5), generator=again)
    assert [r.seed - fake.requests[0].seed for r in again.requests] == [3, 4]
    assert report.present_before == 3 and report.present == 5 and len(reg_pngs(studio)) == 5
    assert all(f.stat().st_ino == kept[f.name] for f in reg_pngs(studio) if f.name in kept)  # untouched
    # asked for more later: it continues to the new N
    more = studio.reg.generate("demo", request(count=7), generator=DrawingGenerator())
    assert [m["index"] for m in more.made] == [5, 6] and len(reg_pngs(studio)) == 7


def test_a_complete_set_needs_no_generator_and_a_deleted_image_comes_back_the_same(tmp_path):
    studio = Studio(GeneratingHost(tmp_path, DrawingGenerator()))
    studio.create_project("demo", resolution=64)
    studio.reg.generate("demo", request(count=3))
    studio.host.fake = None  # no generator now: nothing to make, nothing asked of it
    assert studio.reg.generate("demo", request(count=3)).made == []
    gone = reg_pngs(studio)[1]
    before = gone.read_bytes()
    gone.unlink()
    with pytest.raises(LorakitError, match="no generator"):
        studio.reg.start("demo", request(count=3))  # said at once, not inside a job
    studio.host.fake = DrawingGenerator()
    report = studio.reg.generate("demo", request(count=3))
    assert [m["index"] for m in report.made] == [1] and len(reg_pngs(studio)) == 3
    remade = studio.project("demo").root / report.made[0]["image"]  # beside the caption the deleted one left
    assert remade.read_bytes() == before and remade.with_suffix(".txt").read_text().strip() == PROMPT


def test_the_last_runs_resolution_and_model_are_used_and_the_projects_model_comes_first(studio):
    run = studio.project("demo").root / "runs" / "20260101-000000-style"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"state": "succeeded", "meta": {
        "base_model": "/models/anime.safetensors", "settings": {"resolution": 96}}}))
    plan = studio.reg.plan("demo", request())
    assert (plan.width, plan.resolution_from, plan.checkpoint, plan.checkpoint_from) == \
        (96, "last run", "/models/anime.safetensors", "last run")
    studio.update_settings("demo", base_model="sdxl_base.safetensors")
    studio.reg.generate("demo", request(count=1))
    sent = studio.host.fake.requests[0]
    assert (sent.width, sent.height, sent.checkpoint, sent.prompt) == (96, 96, "sdxl_base.safetensors", PROMPT)
    assert studio.reg.plan("demo", request(resolution=128)).width == 128


def test_bad_fields_are_named_all_at_once():
    with pytest.raises(InvalidSettings) as e:
        RegRequest.from_dict({"class_name": "../up", "prompt": "", "count": 0, "repeats": -1, "cfg": "high"})
    text = str(e.value)
    for field in ("class_name:", "prompt: required", "count:", "repeats:", "cfg:"):
        assert field in text, field
    with pytest.raises(InvalidSettings, match="prompt: required"):
        RegRequest.from_dict({"class_name": "woman", "prompt": " ", "count": 3})
    with pytest.raises(InvalidSettings, match="prompt: one line"):
        RegRequest.from_dict({"class_name": "woman", "prompt": "a\nb", "count": 3})
    with pytest.raises(InvalidSettings, match="unknown regularisation option 'cont'"):
        RegRequest.from_dict({"class_name": "woman", "prompt": PROMPT, "cont": 3})


def test_cli_json(tmp_path, monkeypatch, capsys):
    fake = DrawingGenerator()
    monkeypatch.setattr(StandaloneHost, "generator", lambda self: fake, raising=False)
    monkeypatch.setenv("TRAIN_STYLE_CONFIG", str(tmp_path / "none.toml"))
    home = str(tmp_path / "home")
    assert main(["--home", home, "project", "new", "demo"]) == 0
    assert main(["--home", home, "project", "set", "demo", "resolution=64"]) == 0
    capsys.readouterr()
    code = main(["--home", home, "reg", "demo", "generate", "woman", "--prompt", PROMPT, "--count", "3",
                 "--repeats", "4", "--negative", "lowres", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["folder"] == "reg/4_woman" and data["present"] == 3
    assert [m["image"] for m in data["made"]] == [f"reg/4_woman/woman_{i:05d}.png" for i in range(3)]
    assert {r.negative for r in fake.requests} == {"lowres"}
    code = main(["--home", home, "reg", "demo", "generate", "bad/name", "--prompt", PROMPT, "--count", "0",
                 "--json"])
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == 1 and "class_name:" in error and "count: expected an integer from 1" in error


def test_api_runs_it_as_a_job_and_names_bad_fields(tmp_path):
    host = GeneratingHost(tmp_path, DrawingGenerator())
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    assert client.post("/train-style/v1/projects", json={"name": "demo"}).status_code == 201
    Studio(host).update_settings("demo", resolution=64)
    url = "/train-style/v1/projects/demo/reg/generate"
    r = client.post(url, json={"class_name": "woman", "prompt": PROMPT, "count": 2, "repeats": 3})
    assert r.status_code == 200, r.text
    assert r.json()["plan"]["missing"] == 2 and r.json()["plan"]["width"] == 64
    job_id = r.json()["job"]["id"]
    for _ in range(200):
        job = client.get(f"/train-style/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["state"] == "done" and job["kind"] == "reg", job
    assert job["result"]["present"] == 2 and job["result"]["folder"] == "reg/3_woman"
    bad = client.post(url, json={"class_name": "", "prompt": PROMPT, "count": 100_000})
    assert bad.status_code == 400 and "class_name:" in bad.json()["detail"] and "count:" in bad.json()["detail"]
    remote = client.post(url, json={"class_name": "woman", "prompt": PROMPT, "count": 2,
                                    "webui_url": "http://169.254.169.254"})
    assert remote.status_code == 400 and "command line" in remote.json()["detail"]
    fields = {f["name"]: f for f in client.get("/train-style/v1/settings").json()["reg"]["fields"]}
    assert fields["count"]["maximum"] == 10_000 and fields["prompt"]["reason"].startswith("What every image shows")
    assert client.post("/train-style/v1/projects/nope/reg/generate",
                       json={"class_name": "woman", "prompt": PROMPT, "count": 2}).status_code == 404
