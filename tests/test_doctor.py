"""`doctor` for the whole app: real checks on a temporary home (real model files, real trainer processes, a
really read-only folder), its JSON, the CLI's exit status as a process, and the API route on a real app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_trainer_env import build_fake_trainer
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from tiny_wd14 import TAGS, build_tiny_wd14

from lib_lorakit import api
from lib_lorakit.doctor import read_pins, run_doctor
from lib_lorakit.host import StandaloneHost
from lib_lorakit.taggers.models import resolve_wd14_model
from lib_lorakit.train.environment import PROBE_MARK

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ["folders", "offline", "home", "disk", "trainer", "sd-scripts", "gpu", "tokenizers", "wd14", "clip",
          "detectors", "webui-venv"]
OUR_VARIABLES = ("TRAIN_STYLE_TRAINER_PYTHON", "TRAIN_STYLE_SD_SCRIPTS", "TRAIN_STYLE_TOKENIZER_CACHE",
                 "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE", "HUGGINGFACE_HUB_CACHE")
# What a working CUDA trainer's probe reports (train.environment's probe prints this shape)
GPU_TRAINER = {"python": "3.10.14", "torch": "2.4.1+cu121", "cuda": True, "device": "Stand-in GPU",
               "vram_total_mb": 24576, "vram_free_mb": 20000, "sdpa": True, "torchvision_ok": True,
               "bitsandbytes_ok": True, "accelerate_ok": True, "transformers_ok": True, "diffusers_ok": True,
               "safetensors_ok": True,
               "packages": {"torch": "2.4.1", "torchvision": "0.19.1", "accelerate": "0.30.0",
                            "transformers": "4.44.0", "diffusers": "0.25.0", "safetensors": "0.4.4",
                            "lycoris-lora": "3.4.0", "bitsandbytes": "0.44.0", "library": "0.0.0", "xformers": None}}


@pytest.fixture(autouse=True)
def clean_environment(tmp_path, monkeypatch):
    """The checks read the same variables a run reads: none of the machine's may leak in."""
    for name in OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TRAIN_STYLE_CONFIG", str(tmp_path / "no-config.toml"))


@pytest.fixture
def host(tmp_path) -> StandaloneHost:
    return StandaloneHost(home=tmp_path / "home", lora=tmp_path / "models" / "Lora", models=tmp_path / "models")


def stand_in_trainer(folder: Path, facts: dict, *, hold: Path | None = None) -> Path:
    """A trainer python that answers the doctor's probe (`python -c …`) with `facts`; with `hold`, it first writes
    `<hold>.started` and waits until `hold` exists."""
    python = folder / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    (folder / "facts.json").write_text(json.dumps({**facts, "executable": str(python)}))
    python.write_text(f"""#!{sys.executable}
import json, sys, time
from pathlib import Path
HOLD = {str(hold) if hold else None!r}
if HOLD:
    Path(HOLD + ".started").write_text("probing")
    for _ in range(600):
        if Path(HOLD).exists():
            break
        time.sleep(0.05)
print("LORAKIT_JSON " + Path({str(folder / "facts.json")!r}).read_text())
""")
    python.chmod(0o755)
    return python


def stand_in_sd_scripts(folder: Path) -> Path:
    """An sd-scripts folder kept elsewhere (TRAIN_STYLE_SD_SCRIPTS): a copy, not a git checkout."""
    folder.mkdir(parents=True)
    (folder / "train_network.py").write_text("# stand-in\n")
    return folder


def save_tokenizer(folder: Path) -> None:
    """The files CLIPTokenizer.save_pretrained writes (tiny, real formats)."""
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))


def check(report, name: str):
    return report.check(name)


# --- models ------------------------------------------------------------------------------------------------------

def test_a_missing_tagger_model_is_reported_with_its_fix_and_the_fix_works(host):
    report = run_doctor(host)
    wd14 = check(report, "wd14")
    assert wd14.status == "warning"
    store = host.models_dir() / "train-style" / "taggers"
    (issue,) = [i for i in wd14.issues if "No WD14 tagger model" in i.what]
    assert str(store) in issue.what and "downloads there on first use" in issue.what
    assert f"place them in {store / 'wd-vit-tagger-v3'}" in issue.fix
    assert "https://huggingface.co/SmilingWolf/wd-vit-tagger-v3" in issue.fix
    # doing what the fix says: the files in that folder are the model the tagger uses, without a download
    build_tiny_wd14(store / "wd-vit-tagger-v3")
    assert resolve_wd14_model("wd-vit-tagger-v3", store, download=False) == store / "wd-vit-tagger-v3"
    wd14 = check(run_doctor(host), "wd14")
    assert wd14.status == "ok", wd14.issues
    assert wd14.facts["models"] == {"wd-vit-tagger-v3": len(TAGS)}
    assert f"wd-vit-tagger-v3 ({len(TAGS)} tags)" in wd14.summary


def test_offline_mode_is_named_where_a_model_would_be_downloaded(host, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = run_doctor(host)
    assert "offline mode is on" in check(report, "wd14").issues[0].what
    assert "offline mode is on" in check(report, "clip").issues[0].what
    assert check(report, "offline").summary.startswith("on (HF_HUB_OFFLINE)")
    assert check(report, "offline").facts["HF_HUB_OFFLINE"] is True


def test_a_damaged_or_incomplete_tagger_folder_is_a_warning_naming_the_file(host):
    store = host.models_dir() / "train-style" / "taggers"
    build_tiny_wd14(store / "my-own-tagger")
    (store / "my-own-tagger" / "selected_tags.csv").unlink()
    build_tiny_wd14(store / "wd-vit-tagger-v3")
    (store / "wd-vit-tagger-v3" / "selected_tags.csv").write_text("not,a,tag,list\n")
    wd14 = check(run_doctor(host), "wd14")
    whats = " | ".join(i.what for i in wd14.issues)
    assert f"{store / 'my-own-tagger'} lacks selected_tags.csv" in whats
    assert "is not a WD14 tag list" in whats
    assert wd14.facts["models"] == {}


def test_clip_weights_in_the_store_are_listed(host):
    cache = host.models_dir() / "train-style" / "clip"
    snapshot = cache / "models--timm--vit_large_patch14_clip_224.openai" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"PK\x03\x04 stand-in")
    (cache / "my-finetune.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    clip = check(run_doctor(host), "clip")
    assert clip.facts["weights"] == ["timm/vit_large_patch14_clip_224.openai", "my-finetune.safetensors"]
    assert not [i for i in clip.issues if "No CLIP weights" in i.what]


def test_tokenizers_in_the_cache_folder_or_the_hub_cache(host, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizers = check(run_doctor(host), "tokenizers")
    assert tokenizers.status == "error"  # offline and none in place: no run can start
    assert "--tokenizer-cache-dir" in tokenizers.issues[0].fix
    cache = tmp_path / "tokenizers"
    save_tokenizer(cache / "openai_clip-vit-large-patch14")
    tokenizers = check(run_doctor(host, tokenizer_cache_dir=cache), "tokenizers")
    assert tokenizers.status == "warning" and tokenizers.facts["ready_for"] == ["SD1"]
    assert "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k" in tokenizers.issues[0].what
    # the same files in the Hugging Face cache's layout count too (sd-scripts falls back to it)
    snap = tmp_path / "hf-cache" / "models--laion--CLIP-ViT-bigG-14-laion2B-39B-b160k" / "snapshots" / "0123"
    save_tokenizer(snap)
    monkeypatch.setenv("TRAIN_STYLE_TOKENIZER_CACHE", str(cache))
    tokenizers = check(run_doctor(host), "tokenizers")
    assert tokenizers.facts["ready_for"] == ["SD1", "SDXL"]


# --- trainer, sd-scripts, GPU -------------------------------------------------------------------------------------

def test_the_fake_trainer_is_reported_as_it_is(host, tmp_path, monkeypatch):
    python = build_fake_trainer(tmp_path / "trainer")
    monkeypatch.setenv("TRAIN_STYLE_SD_SCRIPTS", str(tmp_path / "trainer" / "sd-scripts"))
    report = run_doctor(host, trainer_python=str(python))
    trainer = check(report, "trainer")
    assert trainer.facts["python"] == str(python) and trainer.facts["source"] == "--trainer-python"
    probe = subprocess.run([str(python), "-c", PROBE_MARK + "\n"], capture_output=True, text=True)
    facts = json.loads(probe.stdout.split("LORAKIT_JSON ", 1)[1])  # what the fake says about itself
    assert trainer.facts["torch"] == facts["torch"] and trainer.facts["cuda"] is facts["cuda"] is False
    assert "No CUDA GPU is visible to the trainer" in " ".join(i.what for i in trainer.issues)
    assert check(report, "gpu").summary == "none: CPU only"
    sd = check(report, "sd-scripts")
    assert sd.facts["source"] == "TRAIN_STYLE_SD_SCRIPTS" and sd.facts["commit"] is None
    assert sd.status == "warning" and "tested with" in sd.issues[0].what  # a copy elsewhere: allowed, untested


def test_a_gpu_trainer_and_a_missing_one(host, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_STYLE_TRAINER_PYTHON", str(stand_in_trainer(tmp_path / "gpu", GPU_TRAINER)))
    report = run_doctor(host)
    assert check(report, "trainer").status == "ok" and check(report, "trainer").facts["source"] == \
        "TRAIN_STYLE_TRAINER_PYTHON"
    gpu = check(report, "gpu")
    assert gpu.status == "ok" and gpu.summary.startswith("Stand-in GPU: 20000 of 24576 MB free")
    monkeypatch.delenv("TRAIN_STYLE_TRAINER_PYTHON")
    trainer = check(run_doctor(host), "trainer")  # our own environment, never set up under this home
    assert trainer.status == "error" and trainer.facts["source"] == "Train Style's own environment"
    assert "trainer setup" in trainer.issues[0].fix


def test_a_missing_sd_scripts_folder_is_an_error_with_its_fix(host, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_STYLE_SD_SCRIPTS", str(tmp_path / "nowhere"))
    sd = check(run_doctor(host), "sd-scripts")
    assert sd.status == "error" and "no train_network.py" in sd.issues[0].what
    assert sd.issues[0].fix


# --- the home -----------------------------------------------------------------------------------------------------

def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@contextmanager
def read_only(folder: Path):
    """`folder` made read-only for this process: by its mode, or (as root, who ignores modes) immutable."""
    folder.chmod(0o555)
    immutable = False
    try:
        if _writable(folder) and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if _writable(folder):
            pytest.skip("cannot make a folder read-only here (root, and chattr is not available)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_a_read_only_home_is_an_error_with_its_fix(host):
    home = host.projects_home()
    home.mkdir()
    with read_only(home):
        report = run_doctor(host)
    home_check = check(report, "home")
    assert home_check.status == "error" and not report.ok and report.exit_code == 1
    assert f"Cannot write in the projects home {home}" in home_check.issues[0].what
    assert "--home" in home_check.issues[0].fix


def test_the_doctor_leaves_the_home_as_it_found_it(host):
    assert check(run_doctor(host), "home").summary.endswith("does not exist yet; it is made on first use "
                                                            f"({host.projects_home().parent} is writable)")
    assert not host.projects_home().exists()  # a check makes no folder
    host.projects_home().mkdir()
    (host.projects_home() / "keep.txt").write_text("mine")
    assert check(run_doctor(host), "home").status == "ok"
    assert sorted(p.name for p in host.projects_home().iterdir()) == ["keep.txt"]


# --- the webui's packages -----------------------------------------------------------------------------------------

class PinnedHost(StandaloneHost):
    """A host whose webui pins the packages of a requirements file."""

    pins_file: Path = Path("none")

    def webui_pins(self):
        return read_pins(self.pins_file)


def test_webui_pins_each_checked_against_this_venv(tmp_path):
    from importlib.metadata import version

    pins = tmp_path / "requirements_versions.txt"
    pins.write_text(f"setuptools==69.5.1  # a comment\nPillow=={version('pillow')}\nfastapi==0.94\n"
                    "gradio==0.0.1\nno-such-package-lorakit==1.0\ntorch\nnumpy>=1.0\n")
    host = PinnedHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models")
    host.pins_file = pins
    venv = check(run_doctor(host), "webui-venv")
    differ = venv.facts["differ"]
    assert "Pillow" not in differ and "fastapi" not in differ  # 0.94 is 0.94.0; torch and numpy pin nothing
    assert differ["gradio"] == {"pinned": "0.0.1", "installed": version("gradio")}
    assert differ["no-such-package-lorakit"] == {"pinned": "1.0", "installed": None}
    fixes = [i.fix for i in venv.issues]
    assert f"\"{sys.executable}\" -m pip install \"gradio==0.0.1\"" in fixes
    assert venv.status == "warning"


def test_outside_the_webui_the_venv_check_is_skipped_with_the_reason(host):
    venv = check(run_doctor(host), "webui-venv")
    assert venv.status == "skipped" and venv.summary.startswith("outside the webui")


def test_the_webui_host_reads_the_pins_where_the_webui_keeps_them(tmp_path, monkeypatch):
    from lib_lorakit.webui_host import WebuiHost

    (tmp_path / "requirements_versions.txt").write_text("GitPython==3.1.32\ngradio==3.41.2\ntorch\n")
    modules = types.ModuleType("modules")
    modules.paths_internal = types.SimpleNamespace(script_path=str(tmp_path))
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "modules.paths_internal", modules.paths_internal)
    assert WebuiHost().webui_pins() == {"GitPython": "3.1.32", "gradio": "3.41.2"}
    (tmp_path / "requirements_versions.txt").unlink()
    assert WebuiHost().webui_pins() == {}


# --- the CLI and the API ------------------------------------------------------------------------------------------

def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in OUR_VARIABLES}
    base.update(PYTHONPATH=str(ROOT), TRAIN_STYLE_CONFIG=str(tmp_path / "no-config.toml"),
                HF_HUB_CACHE=str(tmp_path / "hf-cache"), **env)
    return subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(tmp_path / "home"),
                           "--models-dir", str(tmp_path / "models"), *args],
                          env=base, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_cli_json_shape_and_exit_status_1_on_an_error(tmp_path):
    out = cli(tmp_path, "doctor", "--json")  # our own trainer, never set up: an error
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"ok", "host", "errors", "warnings", "checks"}
    assert data["ok"] is False and data["host"] == "standalone"
    assert [c["name"] for c in data["checks"]] == CHECKS
    for c in data["checks"]:
        assert set(c) == {"name", "title", "status", "summary", "issues", "facts"}
        assert c["status"] in {"ok", "warning", "error", "skipped"} and c["summary"]
        for issue in c["issues"]:
            assert set(issue) == {"severity", "what", "fix"} and issue["what"] and issue["fix"]
    statuses = [c["status"] for c in data["checks"]]
    assert data["errors"] == statuses.count("error") >= 1 and data["warnings"] == statuses.count("warning")
    trainer = next(c for c in data["checks"] if c["name"] == "trainer")
    assert trainer["status"] == "error"


def test_cli_exit_status_0_when_only_warnings_remain(tmp_path):
    python = stand_in_trainer(tmp_path / "gpu", GPU_TRAINER)
    sd_scripts = stand_in_sd_scripts(tmp_path / "sd-scripts")
    out = cli(tmp_path, "doctor", "--trainer-python", str(python), TRAIN_STYLE_SD_SCRIPTS=str(sd_scripts))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("ready: 0 error(s)")
    assert any(line.startswith("ok       GPU: Stand-in GPU") for line in lines)
    assert any(line.startswith("warning  WD14 tagger models") for line in lines)
    assert any(line.strip().startswith("fix: Download model.onnx and selected_tags.csv") for line in lines)
    assert any(line.startswith("skipped  webui venv untouched: outside the webui") for line in lines)


def make_client(host: StandaloneHost, authorize=None) -> TestClient:
    app = FastAPI()
    api.mount(app, host, authorize=authorize)
    return TestClient(app)


def test_api_route_answers_the_same_report(host, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN_STYLE_TRAINER_PYTHON", str(stand_in_trainer(tmp_path / "gpu", GPU_TRAINER)))
    build_tiny_wd14(host.models_dir() / "train-style" / "taggers" / "wd-vit-tagger-v3")
    r = make_client(host).get("/train-style/v1/doctor")
    assert r.status_code == 200
    data = r.json()
    assert [c["name"] for c in data["checks"]] == CHECKS
    by_name = {c["name"]: c for c in data["checks"]}
    assert by_name["wd14"]["status"] == "ok" and by_name["gpu"]["summary"].startswith("Stand-in GPU")
    core = run_doctor(host).to_dict()  # the same report as the core gives (free disk space may move between)
    assert [(c["name"], c["status"], c["issues"]) for c in data["checks"]] == \
        [(c["name"], c["status"], c["issues"]) for c in core["checks"]]


def test_api_route_needs_the_login_and_runs_one_check_at_a_time(host, tmp_path, monkeypatch):
    def login(request: Request) -> None:
        if request.headers.get("authorization") != "Basic dTpw":
            raise HTTPException(401, "log in")

    hold = tmp_path / "release"
    monkeypatch.setenv("TRAIN_STYLE_TRAINER_PYTHON", str(stand_in_trainer(tmp_path / "slow", GPU_TRAINER, hold=hold)))
    client = make_client(host, authorize=login)
    assert client.get("/train-style/v1/doctor").status_code == 401
    answers = []
    first = threading.Thread(target=lambda: answers.append(
        client.get("/train-style/v1/doctor", headers={"Authorization": "Basic dTpw"})))
    first.start()
    try:
        for _ in range(600):  # until the first check's trainer probe has started
            if Path(str(hold) + ".started").exists():
                break
            first.join(0.05)
        assert Path(str(hold) + ".started").exists()
        second = client.get("/train-style/v1/doctor", headers={"Authorization": "Basic dTpw"})
        assert second.status_code == 409 and "already running" in second.json()["detail"]
    finally:
        hold.write_text("go")
        first.join(60)
    assert answers[0].status_code == 200 and answers[0].json()["checks"][4]["status"] == "ok"
