"""Buckets as sd-scripts v0.10.1 makes them (lib_lorakit/crop/buckets.py) and the preview built on them.

1. The pure module against sd-scripts' answers for ~270 image sizes × 10 settings: always against the golden file
   tests/golden/buckets/sd_scripts.json (made by sd-scripts' own code), and, where the trainer environment and
   sd-scripts exist (TRAIN_STYLE_TRAINER_VENV or TRAIN_STYLE_TRAINER_PYTHON; sd-scripts from TRAIN_STYLE_SD_SCRIPTS or
   the submodule), against sd-scripts itself run in a subprocess (tests/sd_scripts_buckets.py): its
   `BucketManager`, `select_bucket` and `trim_and_resize_if_required`, with the same and with other sizes.
   After a deliberate change: `TRAIN_STYLE_REGOLD=1 TRAIN_STYLE_TRAINER_VENV=... pytest tests/test_buckets.py -k real`.
2. The preview through the CLI (`buckets PROJECT --json`, a subprocess) and the HTTP API (GET and POST on a real app):
   the JSON shape, settings from the latest run, bad settings refused by name, images sd-scripts skips.
3. SUBJECT_CUT: a face the crop cuts is reported, citing seeds/002; one inside the kept part is not.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from lib_lorakit import api
from lib_lorakit.crop.bucket_preview import BucketRequest, bucket_preview, subject_cut
from lib_lorakit.crop.buckets import Bucketer, BucketSettings, bucket_resolutions
from lib_lorakit.errors import LorakitError
from lib_lorakit.host import StandaloneHost

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "buckets" / "sd_scripts.json"
PROBE = ROOT / "tests" / "sd_scripts_buckets.py"
REGOLD = os.environ.get("TRAIN_STYLE_REGOLD") == "1"
API = "/train-style/v1"

SETTINGS = [  # resolution (w, h), enable_bucket, min, max, steps, no_upscale
    ((512, 512), True, 256, 1024, 64, False),  # sd-scripts' defaults for SD1
    ((512, 512), True, 256, 1024, 64, True),
    ((1024, 1024), True, 512, 2048, 64, False),  # the SDXL presets
    ((1024, 1024), True, 512, 2048, 32, True),
    ((768, 768), True, 320, 1536, 64, False),
    ((512, 512), True, 200, 1000, 64, False),  # not multiples of the steps: sd-scripts moves them to 192 and 1024
    ((512, 512), True, 256, 1024, 64, False),
    ((512, 768), True, 256, 1024, 64, False),  # a width,height resolution
    ((640, 640), True, 256, 1024, 32, False),
    ((512, 512), True, 256, 512, 8, False),  # fine steps: many buckets, near ties
]
SETTINGS[6] = ((512, 512), False, 256, 1024, 64, False)  # buckets off: one bucket, centre crop


def settings_dict(s) -> dict:
    (w, h), enable, lo, hi, step, no_up = s
    return {"resolution": [w, h], "enable_bucket": enable, "min_bucket_reso": lo, "max_bucket_reso": hi,
            "bucket_reso_steps": step, "bucket_no_upscale": no_up}


def bucket_settings(s) -> BucketSettings:
    d = settings_dict(s)
    return BucketSettings(**{**d, "resolution": tuple(d["resolution"])})


def sizes(seed: int = 0, n: int = 200) -> list[list[int]]:
    """Sizes worth testing: every bucket of the defaults and their multiples, squares, tiny, extreme and huge
    images, then `n` random ones (log-uniform sides and aspects)."""
    special = [[w, h] for w, h in bucket_resolutions((512, 512), 256, 1024, 64)]
    special += [[w * 2, h * 2] for w, h in special[:6]] + [[w * 3 // 2, h * 3 // 2] for w, h in special[6:12]]
    special += [[512, 512], [1024, 1024], [513, 511], [1, 1], [10, 10], [63, 64], [64, 63], [64, 64], [200, 3000],
                [6000, 40], [40, 6000], [10000, 10], [8000, 6000], [4000, 4000], [1920, 1080], [1080, 1920],
                [1000, 600], [600, 1000], [2048, 1365], [1365, 2048], [768, 1024], [3000, 2000], [5000, 100]]
    rng = random.Random(seed)
    for _ in range(n):
        side = int(2 ** rng.uniform(5, 13))
        aspect = 2 ** rng.uniform(-3, 3)
        w, h = (side, max(1, round(side / aspect))) if rng.random() < 0.5 else (max(1, round(side * aspect)), side)
        special.append([w, h])
    return special


def ours(setting, size) -> dict:
    placement = Bucketer(bucket_settings(setting)).place(*size)
    if placement.problem:
        return {"problem": placement.problem}
    return {"bucket": list(placement.bucket), "resized": list(placement.resized), "crop": list(placement.crop)}


def assert_same(setting, size, theirs: dict) -> None:
    mine = ours(setting, size)
    if "problem" in mine:  # sd-scripts fails on it, now or when it trains (an empty bucket)
        assert "error" in theirs or 0 in theirs["bucket"], (setting, size, theirs, mine)
        return
    assert mine == theirs, (setting, size)


def check_all(results: list, sizes_: list[list[int]]) -> int:
    """Each answer against ours, one by one (`place`) and all at once (`place_many`, numpy): the same."""
    compared = 0
    for setting, answers in zip(SETTINGS, results, strict=True):
        assert len(answers) == len(sizes_)
        for size, theirs in zip(sizes_, answers, strict=True):
            assert_same(setting, size, theirs)
            compared += 1
        together = Bucketer(bucket_settings(setting)).place_many([tuple(size) for size in sizes_])
        assert together == [Bucketer(bucket_settings(setting)).place(*size) for size in sizes_]
    return compared


# --- 1. equality with sd-scripts ------------------------------------------------------------------------------------
def test_buckets_equal_the_golden_answers_of_sd_scripts():
    golden = json.loads(GOLDEN.read_text())
    assert golden["settings"] == [settings_dict(s) for s in SETTINGS] and golden["sizes"] == sizes()
    assert check_all(golden["results"], golden["sizes"]) >= 2500
    # the golden file is not trivial: buckets differ, crops happen, and sd-scripts fails on some sizes
    flat = [r for per_setting in golden["results"] for r in per_setting]
    assert len({tuple(r["bucket"]) for r in flat if "bucket" in r}) > 40
    assert sum(1 for r in flat if r.get("crop", [0, 0]) != [0, 0]) > 500
    assert any("error" in r for r in flat)


def trainer_python() -> str | None:
    if os.environ.get("TRAIN_STYLE_TRAINER_PYTHON"):
        return os.environ["TRAIN_STYLE_TRAINER_PYTHON"]
    venv = os.environ.get("TRAIN_STYLE_TRAINER_VENV")
    return str(Path(venv) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")) if venv else None


def sd_scripts_dir() -> Path:
    return Path(os.environ.get("TRAIN_STYLE_SD_SCRIPTS") or ROOT / "sd-scripts")


def run_sd_scripts(job: dict) -> list:
    python = trainer_python()
    if not python or not Path(python).exists():
        pytest.skip("sd-scripts' trainer environment is absent: set TRAIN_STYLE_TRAINER_VENV (source env.sh)")
    if not (sd_scripts_dir() / "library" / "train_util.py").is_file():
        pytest.skip(f"sd-scripts is absent at {sd_scripts_dir()}: init the submodule or set TRAIN_STYLE_SD_SCRIPTS")
    done = subprocess.run([python, str(PROBE)], input=json.dumps(job), cwd=sd_scripts_dir(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_real_sd_scripts_buckets_equal_ours():
    """One subprocess (the imports take ~10-20 s): the golden sizes and 150 others, every setting."""
    golden_sizes, other = sizes(), sizes(seed=1, n=150)
    results = run_sd_scripts({"settings": [settings_dict(s) for s in SETTINGS], "sizes": golden_sizes + other})
    if REGOLD:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        n = len(golden_sizes)
        GOLDEN.write_text(json.dumps({"sd_scripts": "v0.10.1", "settings": [settings_dict(s) for s in SETTINGS],
                                      "sizes": golden_sizes, "results": [r[:n] for r in results]}) + "\n")
    assert check_all(results, golden_sizes + other) > 3000


def test_real_sd_scripts_refuses_the_settings_we_refuse():
    bad = [((512, 512), True, 576, 1024, 64, False), ((1024, 1024), True, 256, 960, 64, False)]
    results = run_sd_scripts({"settings": [settings_dict(s) for s in bad], "sizes": [[100, 100]]})
    assert results == [{"error": "AssertionError"}, {"error": "AssertionError"}]
    for setting, name in zip(bad, ("min_bucket_reso", "max_bucket_reso"), strict=True):
        with pytest.raises(LorakitError, match=name):
            Bucketer(bucket_settings(setting))


# --- the pure module's promises ----------------------------------------------------------------------------------
@pytest.mark.parametrize("setting", SETTINGS[:6])
def test_visible_is_inside_the_image_centred_and_of_the_buckets_shape(setting):
    bucketer = Bucketer(bucket_settings(setting))
    for w, h in sizes(seed=2, n=100):
        p = bucketer.place(w, h)
        if p.problem:
            continue
        left, top, right, bottom = p.visible
        assert 0 <= left <= right <= w and 0 <= top <= bottom <= h
        assert abs(left - (w - right)) <= w / p.resized[0] + 1e-6  # centred up to one resized pixel
        assert abs(top - (h - bottom)) <= h / p.resized[1] + 1e-6
        assert abs((right - left) * p.resized[0] / w - p.bucket[0]) < 1e-6  # exactly the bucket, resized
        assert abs((bottom - top) * p.resized[1] / h - p.bucket[1]) < 1e-6
        assert p.cut == (p.visible != (0.0, 0.0, float(w), float(h)))


def test_settings_sd_scripts_refuses_name_the_setting():
    with pytest.raises(LorakitError, match=r"min_bucket_reso: expected at most .* 512, got 576"):
        Bucketer(BucketSettings(min_bucket_reso=576))
    with pytest.raises(LorakitError, match="max_bucket_reso"):
        Bucketer(BucketSettings(resolution=(1024, 1024), max_bucket_reso=960))
    b = Bucketer(BucketSettings(min_bucket_reso=200, max_bucket_reso=1000))
    assert (b.settings.min_bucket_reso, b.settings.max_bucket_reso) == (192, 1024)
    assert any("sd-scripts uses 192" in n for n in b.notes)
    assert any("32 fits SDXL only" in n for n in Bucketer(BucketSettings(bucket_reso_steps=32)).notes)
    assert not Bucketer(BucketSettings()).notes


# --- 3. SUBJECT_CUT ---------------------------------------------------------------------------------------------
class Box:
    def __init__(self, kind, left, top, right, bottom, score=0.9):
        self.kind, self.left, self.top, self.right, self.bottom, self.score = kind, left, top, right, bottom, score


def test_subject_cut_reports_boxes_partly_or_wholly_outside():
    visible = (0.0, 128.0, 512.0, 640.0)  # a 512×768 portrait in a 512×512 bucket: 128 px cut at top and bottom
    boxes = [Box("face", 200, 60, 300, 180), Box("head", 190, 300, 310, 420), Box("face", 10, 0, 60, 40),
             Box("salient", 0, 0, 512, 768), Box("face", 100, 127.5, 200, 200)]
    cut = subject_cut(visible, boxes, image="dataset/1_a/x.png", bucket=(512, 512))
    assert [(c.kind, round(c.cut_fraction, 3)) for c in cut] == [("face", round(68 / 120, 3)), ("face", 1.0)]
    d = cut[0].to_dict()
    assert d["code"] == "SUBJECT_CUT" and "seeds/002" in d["why"] and "57%" in d["message"]
    assert "smart" in d["fix"] and "letterbox" in d["fix"]


# --- 2. the preview: CLI and API --------------------------------------------------------------------------------
IMAGES = {"dataset/10_art/wide.png": (1000, 600), "dataset/10_art/tall.png": (512, 768),
          "dataset/10_art/square.png": (700, 700), "reg/1_woman/reg.png": (640, 384),
          "dataset/10_art/deep/nested.png": (300, 300), "dataset/stray/x.png": (300, 300)}


@pytest.fixture
def home(tmp_path) -> Path:
    from lib_lorakit.project import Workspace

    project = Workspace(tmp_path / "home").create("demo")
    for rel, size in IMAGES.items():
        path = project.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (200, 100, 50)).save(path)
    (project.root / "dataset" / "10_art" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return tmp_path / "home"


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(home / "no-config.toml")}
    return subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def expected_rows(settings: BucketSettings) -> dict:
    b = Bucketer(settings)
    trained = {k: v for k, v in IMAGES.items() if "nested" not in k and "stray" not in k}
    return {k: {"image": k, "width": w, "height": h, "bucket": list(b.place(w, h).bucket),
                "resized": list(b.place(w, h).resized), "visible": [round(v, 2) for v in b.place(w, h).visible]}
            for k, (w, h) in trained.items()}


def test_cli_json_gives_each_image_its_bucket_and_the_histogram(home):
    out = cli(home, "buckets", "demo", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {r["image"]: r for r in data["buckets"]} == expected_rows(BucketSettings())
    assert {tuple(b["bucket"]): (b["images"], b["count"]) for b in data["histogram"]} == {
        (640, 384): (2, 11), (384, 640): (1, 10), (512, 512): (1, 10)}
    wide = next(r for r in data["buckets"] if r["image"].endswith("wide.png"))
    assert wide["visible"] == [0, 0, 1000, 600]  # 1000×600 is exactly 640×384's shape: nothing cut
    tall = next(r for r in data["buckets"] if r["image"].endswith("tall.png"))  # 2:3 goes to 3:5, 21 px cut
    assert tall["bucket"] == [384, 640] and tall["resized"] == [427, 640]  # each side of 427: 21 px left, 22 right
    assert tall["visible"] == [round(21 * 512 / 427, 2), 0, round(405 * 512 / 427, 2), 768] == [25.18, 0, 485.62, 768]
    skipped = {s["image"]: s["reason"] for s in data["skipped"]}
    assert set(skipped) == {"dataset/10_art/deep/nested.png", "dataset/stray/x.png", "dataset/10_art/broken.png"}
    assert "<repeats>_<name>" in skipped["dataset/stray/x.png"] and "corrupt" in skipped["dataset/10_art/broken.png"]
    assert data["settings"]["source"] == "the project's resolution and sd-scripts' bucket defaults"
    assert "findings" not in data


def test_cli_options_and_text_table(home):
    data = json.loads(cli(home, "buckets", "demo", "--no-upscale", "--bucket-reso-steps", "32", "--json").stdout)
    assert {r["image"]: r for r in data["buckets"]} == expected_rows(
        BucketSettings(bucket_no_upscale=True, bucket_reso_steps=32))
    out = cli(home, "buckets", "demo", "--resolution", "768", "--max-bucket-reso", "1536")
    assert out.returncode == 0, out.stderr
    assert "dataset/10_art/tall.png" in out.stdout and "512×768" in out.stdout and "Histogram" in out.stdout
    bad = cli(home, "buckets", "demo", "--min-bucket-reso", "640", "--json")
    assert bad.returncode == 1 and "min_bucket_reso" in json.loads(bad.stdout)["error"]


def test_settings_come_from_the_latest_run(home):
    runs = home / "demo" / "runs"
    for run_id, res in (("20260101-000000-old", 512), ("20260102-000000-style-sdxl-lora", 1024)):
        (runs / run_id).mkdir(parents=True)
        (runs / run_id / "run.json").write_text(json.dumps({"id": run_id, "meta": {
            "preset": run_id[16:], "settings": {"resolution": res, "min_bucket_reso": res // 2,
                                                "max_bucket_reso": res * 2, "learning_rate": 1e-4}}}))
    (runs / "20260103-000000-damaged").mkdir()
    (runs / "20260103-000000-damaged" / "run.json").write_text("{not json")
    data = json.loads(cli(home, "buckets", "demo", "--json").stdout)
    assert data["settings"]["resolution"] == [1024, 1024] and data["settings"]["min_bucket_reso"] == 512
    assert data["settings"]["source"] == "run 20260102-000000-style-sdxl-lora (preset style-sdxl-lora)"
    assert {r["image"]: r for r in data["buckets"]} == expected_rows(
        BucketSettings(resolution=(1024, 1024), min_bucket_reso=512, max_bucket_reso=2048))


def make_client(tmp_path: Path, home: Path) -> TestClient:
    host = StandaloneHost(home=home, lora=tmp_path / "lora", models=tmp_path / "models")
    app = FastAPI()
    api.mount(app, host)
    return TestClient(app)


def test_api_get_and_post_answer_the_same_json_as_the_cli(tmp_path, home):
    client = make_client(tmp_path, home)
    got = client.get(f"{API}/projects/demo/buckets", params={"bucket_no_upscale": "true"})
    posted = client.post(f"{API}/projects/demo/buckets", json={"bucket_no_upscale": True})
    assert got.status_code == 200 and posted.status_code == 200, (got.text, posted.text)
    assert got.json() == posted.json()
    assert got.json() == json.loads(cli(home, "buckets", "demo", "--no-upscale", "--json").stdout)
    assert {r["image"]: r for r in got.json()["buckets"]} == expected_rows(BucketSettings(bucket_no_upscale=True))


@pytest.mark.parametrize("how,payload,word", [
    ("get", {"min_bucket_reso": "-3"}, "buckets.min_bucket_reso"),
    ("get", {"resolution": "big"}, "resolution"),
    ("post", {"bucket_reso_steps": "64"}, "buckets.bucket_reso_steps"),
    ("post", {"resolutoin": 512}, "resolution"),  # a typo: named, with the close match
    ("post", [512], "expected an object"),
    ("post", {"min_bucket_reso": 1024}, "min_bucket_reso: expected at most"),
])
def test_api_refuses_bad_settings_naming_them(tmp_path, home, how, payload, word):
    client = make_client(tmp_path, home)
    if how == "get":
        r = client.get(f"{API}/projects/demo/buckets", params=payload)
    else:
        r = client.post(f"{API}/projects/demo/buckets", json=payload)
    assert r.status_code == 400 and word in r.json()["detail"], r.text


def test_api_unknown_project_is_404(tmp_path, home):
    r = make_client(tmp_path, home).get(f"{API}/projects/nope/buckets")
    assert r.status_code == 404, r.text


def test_detection_finds_a_face_the_crop_cuts(home):
    """A detector that sees a face at the left edge of the 512×768 portrait (its bucket 384×640 keeps x 25.18 to
    485.62) and one in the middle of the other images: only the portrait's face is reported."""
    from lib_lorakit.project import Workspace

    class FaceAtTop:
        name = "test-faces"

        def detect(self, image):
            if image.size == (512, 768):
                return [Box("face", 10, 100, 60, 150, 0.8), Box("head", 100, 50, 300, 250, 0.9)]
            return [Box("face", 300, 300, 400, 400, 0.8)]

    report = bucket_preview(Workspace(home).open("demo"), BucketRequest.from_dict({"detect": True}),
                            detector=FaceAtTop())
    findings = report.to_dict()["findings"]
    assert [f["image"] for f in findings] == ["dataset/10_art/tall.png"]
    assert findings[0]["cut_fraction"] == round((21 * 512 / 427 - 10) / 50, 3) == 0.304
    assert findings[0]["kind"] == "face" and "seeds/002" in findings[0]["why"]
    assert report.to_dict()["detection"]["detector"] == "test-faces"


def test_cli_detect_runs_the_default_chain_without_downloading(home):
    data = json.loads(cli(home, "buckets", "demo", "--detect", "--json").stdout)
    assert isinstance(data["findings"], list) and data["detection"]["detector"]
    assert not any(f["kind"] not in ("face", "head") for f in data["findings"])


def test_detections_are_kept_by_content_and_made_again_for_a_changed_picture(home):
    """The Crop panel redraws often: a picture already analysed by the same detectors is not analysed again; an
    edited picture (new content hash) is."""
    from PIL import Image as PILImage

    from lib_lorakit.project import Workspace

    class Counting:
        name = "counting-faces"

        def __init__(self):
            self.seen = []

        def detect(self, image):
            self.seen.append(image.size)
            return [Box("face", 10, 100, 60, 150, 0.8)] if image.size == (512, 768) else []

    project = Workspace(home).open("demo")
    first, second = Counting(), Counting()
    one = bucket_preview(project, BucketRequest.from_dict({"detect": True}), detector=first)
    two = bucket_preview(project, BucketRequest.from_dict({"detect": True}), detector=second)
    assert first.seen and not second.seen, "the second preview must answer from the kept detections"
    assert one.to_dict()["findings"] == two.to_dict()["findings"] != []
    tall = project.root / "dataset" / "10_art" / "tall.png"
    picture = PILImage.open(tall).convert("RGB")
    picture.putpixel((0, 0), (1, 2, 3))
    tall.unlink()  # a hard-linked copy: replace, never write into it
    picture.save(tall)
    third = Counting()
    bucket_preview(project, BucketRequest.from_dict({"detect": True}), detector=third)
    assert third.seen == [(512, 768)], "only the changed picture is analysed again"


def test_a_small_project_previews_without_a_run(home):
    """sd-scripts' default min_bucket_reso (256) is above a 64 px project's resolution: without a run the preview
    takes limits that hold the resolution instead of refusing (the Crop tab of a test-sized project opened)."""
    from lib_lorakit.project import Workspace

    project = Workspace(home).open("demo")
    project.update_settings(resolution=64)
    report = bucket_preview(project, BucketRequest.from_dict({}))
    settings = report.to_dict()["settings"]
    assert settings["min_bucket_reso"] <= 64 <= settings["max_bucket_reso"]
    assert all(max(b.placement.bucket) <= 64 for b in report.images)
