"""Training as an attacker tries it (issue 8): a model file that runs code, paths that probe the disk, names that
leave the run folder, bundles that bomb or lie, unknown body fields, and one damaged run among good ones.

The upload chain runs against the real standalone app (a process, gradio's own /upload, the fake trainer of
tests/fake_trainer_env.py so the queue would really start a run); the rest uses the API on a real FastAPI app,
the CLI as a process, and the core with real files, links and zips made here.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import httpx
import pytest
from appserver import running_app
from fake_trainer_env import build_fake_trainer
from PIL import Image
from test_api import make_client
from test_cli import cli
from test_host import TEXT_ENCODERS, write_safetensors

from lib_lorakit.errors import LorakitError
from lib_lorakit.fsutil import atomic_write_json, read_json
from lib_lorakit.host import StandaloneHost
from lib_lorakit.project import Workspace
from lib_lorakit.train import bundle as _bundle
from lib_lorakit.train.bundle import export_run, import_bundle
from lib_lorakit.train.environment import TrainerEnvironment
from lib_lorakit.train.runner import Runs
from lib_lorakit.train.service import TrainingService, TrainRequest
from lib_lorakit.ui import render_train

API = "/train-style/v1"
SD1 = ["model.diffusion_model.out.0.weight", TEXT_ENCODERS["SD1"]]


class _RunsCode:
    """Unpickling this runs `touch MARKER` (what a hostile .ckpt does inside sd-scripts' torch.load)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_ckpt_bytes(marker: Path) -> bytes:
    return pickle.dumps(_RunsCode(marker))


def make_project(home: Path, name: str = "demo") -> Path:
    """A trainable project: one concept, three captioned images, a trigger word."""
    project = Workspace(home).create(name, trigger_words=("zkstyle",))
    concept = project.add_concept(name, 1)
    for i in range(3):
        Image.new("RGB", (64, 64), (80 * i, 100, 200)).save(concept.folder / f"{i}.png")
        (concept.folder / f"{i}.txt").write_text(f"zkstyle, shape {i}")
    return project.root


def without(text: str, *paths: str) -> str:
    for p in paths:
        text = text.replace(p, "<path>")
    return text


# --- 2. the upload-then-train chain, on the real app -----------------------------------------------------------
@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security-app")
    home = tmp / "home"
    python = build_fake_trainer(tmp / "trainer", delay=0.01)
    make_project(home)
    models = home / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    write_safetensors(models / "base.safetensors", SD1)
    env = {"TRAIN_STYLE_TRAINER_PYTHON": str(python), "TRAIN_STYLE_SD_SCRIPTS": str(tmp / "trainer" / "sd-scripts")}
    with running_app(home, tmp, env=env) as url:
        yield url, home, tmp


def test_an_uploaded_ckpt_is_refused_as_base_model_before_anything_is_queued(app):
    url, home, tmp = app
    marker = tmp / "pwned"
    with httpx.Client(base_url=url, timeout=30) as http:
        evil = ("evil.ckpt", evil_ckpt_bytes(marker), "application/octet-stream")
        up = http.post("/upload", files=[("files", evil)])
        assert up.status_code == 200, up.text
        (stored,) = up.json()
        stored = stored if isinstance(stored, str) else stored["path"]  # gradio 3: the path; 4: the path too
        assert Path(stored).is_file() and not Path(stored).resolve().is_relative_to(home.resolve())
        body = {"preset": "style-sd15-lora", "base_model": stored, "overrides": {"max_train_steps": 4}}
        r = http.post(f"{API}/projects/demo/train", json=body)
        assert r.status_code in (400, 403), r.text
        assert "not one of the listed checkpoints" in r.json()["detail"]
        # …also when a link in the models folder, named .safetensors, points at it: links are resolved
        link = home / "models" / "Stable-diffusion" / "innocent.safetensors"
        link.symlink_to(stored)
        try:
            r = http.post(f"{API}/projects/demo/train", json={**body, "base_model": str(link)})
            assert r.status_code in (400, 403) and "not a .safetensors file" in r.json()["detail"], r.text
        finally:
            link.unlink()
        assert http.get(f"{API}/queue").json() == {"queue": []}
        assert http.get(f"{API}/projects/demo/runs").json() == {"runs": []}
        # the same request with the listed checkpoint is taken (so the refusal was about the model, not the rest)
        ok = http.post(f"{API}/projects/demo/train",
                       json={**body, "base_model": str(home / "models" / "Stable-diffusion" / "base.safetensors"),
                             "dry_run": True})
        assert ok.status_code == 201, ok.text
        assert ok.json()["state"] == "draft" and http.get(f"{API}/queue").json() == {"queue": []}
    assert not marker.exists()
    assert [p.name for p in (home / "demo" / "runs").iterdir()] == [ok.json()["id"]]


def test_the_base_model_path_is_no_existence_oracle(app):
    url, home, _ = app
    models = home / "models"
    probes = ["/etc/shadow", "/etc/nonexistent", "/etc", f"{models}/../../../etc/passwd",
              f"{models}/../../elsewhere.safetensors"]
    with httpx.Client(base_url=url, timeout=30) as http:
        answers = []
        for path in probes:
            body = {"preset": "style-sd15-lora", "base_model": path}
            train = http.post(f"{API}/projects/demo/train", json=body)
            plan = http.post(f"{API}/projects/demo/train/plan", json=body)
            refusal = [f for f in plan.json()["findings"] if f["severity"] == "error"]
            answers.append((train.status_code, without(train.json()["detail"], path), plan.status_code,
                            without(json.dumps(refusal), path)))
    assert all(a == answers[0] for a in answers), answers
    assert answers[0][0] in (400, 403) and "not one of the listed checkpoints" in answers[0][1]
    assert "does not exist" not in answers[0][1]


# --- 2. the same rule without the app: checkpoints, links, base weights, the CLI's own user ------------------------
def service(tmp_path: Path, home: Path, *, local_user: bool = False) -> TrainingService:
    host = StandaloneHost(home=home, lora=tmp_path / "lora", models=tmp_path / "models")
    return TrainingService(host, trainer=TrainerEnvironment(tmp_path / "venv", tmp_path / "sd"), local_user=local_user)


def errors(plan) -> dict[str, str]:
    return {f.code: f.message for f in plan.findings if f.severity == "error"}


def test_listed_checkpoints_may_be_links_but_other_paths_stay_inside(tmp_path):
    home = tmp_path / "home"
    project = Workspace(home).open(make_project(home).name)
    outside = tmp_path / "big-drive"
    outside.mkdir()
    write_safetensors(outside / "real.safetensors", SD1)
    write_safetensors(outside / "unlisted.safetensors", SD1)
    listed = tmp_path / "models" / "Stable-diffusion"
    listed.mkdir(parents=True)
    (listed / "linked.safetensors").symlink_to(outside / "real.safetensors")  # the user's own link: listed
    (tmp_path / "models" / "escape").symlink_to(outside)  # a folder link out of the models folder
    svc = service(tmp_path, home)
    req = TrainRequest(project="demo", preset="style-sd15-lora", base_model=str(listed / "linked.safetensors"),
                       dry_run=True)
    plan = svc.plan(project, req)
    assert not plan.blocked, plan.findings
    assert plan.base_model == (outside / "real.safetensors").resolve()  # the run names what was checked
    for path in (outside / "unlisted.safetensors", tmp_path / "models" / "escape" / "unlisted.safetensors"):
        plan = svc.plan(project, TrainRequest(project="demo", preset="style-sd15-lora", base_model=str(path),
                                              dry_run=True))
        assert plan.blocked and plan.base_model is None
        # the refusal names the path as given, never where its links lead
        assert str(path) in errors(plan)["BASE_MODEL_NOT_ALLOWED"]
    assert "big-drive" not in errors(plan)["BASE_MODEL_NOT_ALLOWED"]
    # the LoRA merged first (a differential stage 2) may lie in the project; elsewhere it is refused the same way
    stage1 = project.root / "runs" / "r1" / "demo-base.safetensors"
    req = TrainRequest(project="demo", preset="style-sd15-lora", base_model=str(listed / "linked.safetensors"),
                       base_weights=((str(stage1), 1.0), (str(outside / "unlisted.safetensors"), 1.0)),
                       depends_on="r1", dry_run=True)
    plan = svc.plan(project, req)
    assert [str(p) for p, _ in plan.base_weights] == [str(stage1.resolve())]
    assert list(errors(plan)) == ["BASE_WEIGHTS_NOT_ALLOWED"]
    with pytest.raises(LorakitError, match="not one of the listed checkpoints"):
        svc.create_run(project, req, queue=False)
    assert runs_of(project.root) == []


def test_the_cli_trains_from_any_file_and_warns_about_pickles(tmp_path):
    home = tmp_path / "home"
    make_project(home)
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "downloads" / "model.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(evil_ckpt_bytes(marker))
    out = cli(home, "train", "demo", "--preset", "style-sd15-lora", "--base-model", str(ckpt), "--dry-run", "--json")
    assert "runs any code the file holds" in out.stderr  # said before anything could run it
    run = json.loads(out.stdout)["run"]
    meta = read_json(home / "demo" / "runs" / run / "run.json")["meta"]
    assert meta["base_model"] == str(ckpt) and any("torch.load" in w for w in meta["warnings"])
    assert not marker.exists()


# --- 3. output_name never leaves the run folder --------------------------------------------------------------------
def test_output_name_with_a_path_is_refused_at_the_request_and_in_the_cli(tmp_path):
    client, host = make_client(tmp_path)
    make_project(host.projects_home())
    model = tmp_path / "models" / "base.safetensors"
    model.parent.mkdir()
    write_safetensors(model, SD1)
    for name in ("../../../../tmp/x/pwned", "a/b", "..", ".hidden", "x\x00y"):
        body = {"preset": "style-sd15-lora", "base_model": str(model), "output_name": name, "dry_run": True}
        for route in ("train", "train/plan"):
            r = client.post(f"{API}/projects/demo/{route}", json=body)
            assert r.status_code == 400 and "output name" in r.json()["detail"], (name, route, r.text)
        r = client.post(f"{API}/projects/demo/train/differential", json={**body, "target_concepts": ["demo"]})
        assert r.status_code == 400 and "output name" in r.json()["detail"], r.text
    assert runs_of(host.projects_home() / "demo") == []
    assert not Path("/tmp/x/pwned.safetensors").exists()
    out = cli(host.projects_home(), "train", "demo", "--preset", "style-sd15-lora", "--base-model", str(model),
              "--output-name", "../../../../tmp/x/pwned", "--dry-run", check=False)
    assert out.returncode == 1 and "output name" in out.stderr
    assert runs_of(host.projects_home() / "demo") == []


# --- request bodies: an unknown field is named, not dropped ----------------------------------------------------------
def test_unknown_body_fields_are_refused_by_name(tmp_path):
    client, host = make_client(tmp_path)
    make_project(host.projects_home())
    base = {"preset": "style-sd15-lora", "base_model": "x.safetensors"}
    cases = [("projects/demo/train", {**base, "dry_run": True, "outputname": "typo"}, "outputname"),
             ("projects/demo/train/plan", {**base, "vae": "/etc/passwd"}, "vae"),
             ("projects/demo/train/differential", {**base, "target_concepts": ["demo"], "base_weights": [["/x", 1]]},
              "base_weights"),
             ("projects/demo/runs/import", {"path": "x.zip", "overwrite": True}, "overwrite"),
             ("projects/demo/runs/r1/export", {"include_model": True, "out": "/tmp/x.zip"}, "out"),
             ("queue/move", {"project": "demo", "run": "r1", "offset": 1, "force": True}, "force")]
    for route, body, field in cases:
        r = client.post(f"{API}/{route}", json=body)
        assert r.status_code in (400, 422), (route, r.text)
        assert field in r.text, (route, r.text)
    assert runs_of(host.projects_home() / "demo") == []


# --- 8. bundles: entries capped, alone, together and by compression --------------------------------------------------
def lora_bytes(pad: int = 4) -> bytes:
    """A real (tiny) LoRA file with `pad` bytes of weights that compress as weights do (not at all)."""
    raw = json.dumps({"__metadata__": {"ss_output_name": "art"},
                      "w": {"dtype": "F16", "shape": [pad // 2], "data_offsets": [0, pad]}}).encode()
    return struct.pack("<Q", len(raw)) + raw + os.urandom(pad)


def write_bundle(path: Path, *, manifest: object = None, manifest_text: str | bytes | None = None,
                 entries: dict[str, bytes] | None = None, zeros: dict[str, int] | None = None) -> Path:
    """A trained bundle zip: b/bundle.json, b/output/art.safetensors, plus `entries` and `zeros` (name → a run of
    that many zero bytes, deflated: how a bomb is made)."""
    if manifest_text is None:
        manifest_text = json.dumps({"format": 1, "project": "art", "run": "r1", "output_name": "art", "meta": {}}
                                   if manifest is None else manifest)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("b/bundle.json", manifest_text)
        zf.writestr("b/output/art.safetensors", lora_bytes())
        for name, data in (entries or {}).items():
            zf.writestr(name, data)
        for name, size in (zeros or {}).items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as out:
                chunk = bytes(2**20)
                for _ in range(size // len(chunk)):
                    out.write(chunk)
    return path


def runs_of(project_root: Path) -> list[str]:
    runs = project_root / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def test_a_small_zip_with_a_huge_log_is_refused_before_extracting(tmp_path, project):
    bomb = write_bundle(tmp_path / "bomb.zip", zeros={"b/output/train.log": 300 * 2**20})
    assert bomb.stat().st_size < 2 * 2**20  # a few hundred KB on disk
    with pytest.raises(LorakitError, match=r"train\.log would be 300\.0 MiB \(the limit for a training log is 64"):
        import_bundle(project, bomb)
    ratio = write_bundle(tmp_path / "ratio.zip", zeros={"b/output/train.log": 20 * 2**20})
    with pytest.raises(LorakitError, match="more than 100 times, as zip bombs do"):
        import_bundle(project, ratio)
    sample = write_bundle(tmp_path / "sample.zip", zeros={"b/output/sample/art_000001_00_1_42.png": 80 * 2**20})
    with pytest.raises(LorakitError, match="limit for a sample image"):
        import_bundle(project, sample)
    assert runs_of(project.root) == []
    # a long run's real log (tqdm redrawing one line 20,000 times) compresses far less and is taken
    n = 20_000
    lines = "".join(f"steps: {100 * i // n:3d}%|{'#' * (10 * i // n):<10}| {i}/{n} [{i // 3600}:{i // 60 % 60:02d}:"
                    f"{i % 60:02d}<{(n - i) // 3600}:{(n - i) // 60 % 60:02d}:{(n - i) % 60:02d}, 1.{i * 7 % 100:02d}"
                    f"s/it, avr_loss={(i * 7919 % 1000) / 10000:.4f}]\r" for i in range(n))
    fine = write_bundle(tmp_path / "fine.zip", entries={"b/output/train.log": lines.encode()})
    assert (tmp_path / "fine.zip").stat().st_size < len(lines) / 3  # it did compress
    snap = import_bundle(project, fine)
    assert snap.state == "succeeded" and snap.progress["step"] == n - 1


def test_the_bundle_total_is_capped(tmp_path, project, monkeypatch):
    monkeypatch.setattr(_bundle, "_MAX_TOTAL", 3 * 2**20)
    big = write_bundle(tmp_path / "big.zip", entries={"b/output/art-000001.safetensors": lora_bytes(2 * 2**20),
                                                      "b/output/art-000002.safetensors": lora_bytes(2 * 2**20)})
    with pytest.raises(LorakitError, match=r"add up to 4\.0 MiB \(the limit is 3\.0 MiB\)"):
        import_bundle(project, big)
    assert runs_of(project.root) == []


# --- 11. hostile bundle.json; one damaged run among good ones -------------------------------------------------------
def test_hostile_manifests_are_400_and_write_nothing(tmp_path):
    client, host = make_client(tmp_path)
    root = make_project(host.projects_home(), "art")
    good = {"format": 1, "project": "art", "run": "r1", "output_name": "art", "meta": {"warnings": ["ok"]}}
    deep: object = "x"
    for _ in range(40):
        deep = {"a": deep}
    cases = {"meta a string": {**good, "meta": "hello"},
             "warnings a number": {**good, "meta": {"warnings": 5}},
             "trigger words a dict": {**good, "meta": {"trigger_words": {"a": 1}}},
             "no output name": {k: v for k, v in good.items() if k != "output_name"},
             "output name a list": {**good, "output_name": ["art"]},
             "project a number": {**good, "project": 7},
             "deep nesting": {**good, "meta": {"settings": deep}},
             "a list": [good]}
    texts = {name: json.dumps(m) for name, m in cases.items()}
    texts["nested past the parser"] = '{"format": 1, "output_name": "art", "meta": {"x": ' + "[" * 100_000 + \
                                      "]" * 100_000 + "}}"
    texts["a lone surrogate"] = '{"format": 1, "output_name": "art\\udcff"}'
    texts["not utf-8"] = b'{"format": 1, "output_name": "art\xff"}'
    for i, (name, text) in enumerate(texts.items()):
        path = write_bundle(host.projects_home() / f"{i}.zip", manifest_text=text)
        r = client.post(f"{API}/projects/art/runs/import", json={"path": str(path)})
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert "bundle" in r.json()["detail"], (name, r.text)
    assert runs_of(root) == []
    ok = client.post(f"{API}/projects/art/runs/import",
                     json={"path": str(write_bundle(host.projects_home() / "ok.zip", manifest=good))})
    assert ok.status_code == 201 and ok.json()["meta"]["warnings"] == ["ok"], ok.text


def test_an_imported_run_keeps_the_bundles_paths_to_itself(tmp_path, project):
    """A bundle's args.toml naming a file outside must not make the imported run export that file, nor resume."""
    args = 'pretrained_model_name_or_path = "/etc/passwd"\noutput_name = "art"\n[x]\nsecret = "/etc/hostname"\n'
    manifest = {"format": 1, "output_name": "art", "meta": {"depends_on": "r0"}}
    path = write_bundle(tmp_path / "b.zip", manifest=manifest, entries={
        "b/args.toml": args.encode(), "b/dataset.toml": b'[[datasets]]\n[[datasets.subsets]]\nimage_dir = "/etc"\n'})
    snap = import_bundle(project, path)
    assert (snap.dir / "bundle" / "args.toml").read_text() == args and not (snap.dir / "args.toml").exists()
    assert "depends_on" not in snap.meta
    with pytest.raises(LorakitError, match="has no args.toml"):
        export_run(project, snap.id, include_model=True)
    svc = service(tmp_path, project.root.parent)
    Runs(project).mark(snap.id, "failed")
    with pytest.raises(LorakitError, match="imported from a bundle; it cannot be resumed"):
        svc.resume(project, snap.id, queue=False)


def test_one_damaged_run_does_not_break_the_runs_list(tmp_path):
    client, host = make_client(tmp_path)
    root = make_project(host.projects_home())
    project = Workspace(host.projects_home()).open("demo")
    runs = Runs(project)
    damage = {"warnings-a-number": lambda d: d["meta"].update(warnings=5),
              "meta-a-string": lambda d: d.update(meta="hello"),
              "progress-a-text": lambda d: d.update(progress={"step": "3", "total": "x"}),
              "files-leading-out": lambda d: d.update(files=["../../../../etc/passwd"],
                                                      samples=["sample/../../x.png"])}
    for name, spoil in damage.items():
        run_dir = root / "runs" / name
        run_dir.mkdir(parents=True)
        data = {"id": name, "project": "demo", "state": "succeeded", "meta": {"preset": "p"}}
        spoil(data)
        atomic_write_json(run_dir / "run.json", data)
    (root / "runs" / "not-json").mkdir()
    (root / "runs" / "not-json" / "run.json").write_text("{ no")
    (root / "runs" / "a-list").mkdir()
    (root / "runs" / "a-list" / "run.json").write_text("[1, 2]")
    good = root / "runs" / "good"
    good.mkdir()
    atomic_write_json(good / "run.json", {"id": "good", "project": "demo", "state": "succeeded",
                                          "meta": {"warnings": ["fine"]}, "files": ["demo.safetensors"]})
    r = client.get(f"{API}/projects/demo/runs")
    assert r.status_code == 200, r.text
    states = {run["id"]: (run["state"], run["error"]) for run in r.json()["runs"]}
    assert states["good"] == ("succeeded", "")
    for name in ("warnings-a-number", "meta-a-string", "progress-a-text", "files-leading-out", "not-json", "a-list"):
        state, error = states[name]
        assert state == "damaged" and "run.json" in error, (name, error)
    assert "meta.warnings: expected a list of texts, got 5" in states["warnings-a-number"][1]
    for snap in runs.list():  # the tab draws every one of them, and never a file outside its run
        assert snap.id in render_train.run_html(snap)
        assert all(not f.startswith(".") and "/" not in f for f in snap.files)
        assert all((snap.dir / s).resolve().is_relative_to(snap.dir) for s in snap.samples)
    assert runs.get("files-leading-out").files == []
    stop = client.post(f"{API}/projects/demo/runs/not-json/stop")  # an answer that says why, not a 500
    assert stop.status_code == 400 and "run.json" in stop.json()["detail"]
    out = cli(host.projects_home(), "runs", "demo")
    assert "good" in out.stdout and "damaged" in out.stdout
