"""Training elsewhere: `run export` writes a bundle, its train.sh runs (a fake sd-scripts and python here), and
`run import` brings the LoRAs back as a run that `register` takes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_api import make_client
from test_cli import cli
from test_cli_train import make_project

from lib_lorakit.tomlio import read_toml

FAKE_SCRIPT = r'''"""A stand-in train_network.py: checks the paths it gets (relative to where it runs), then saves."""
import json, os, struct, sys, tomllib
from pathlib import Path

argv = sys.argv[1:]
cli = {}
for i, a in enumerate(argv):
    if a.startswith("--"):
        cli[a[2:]] = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else True
with open(cli["config_file"], "rb") as f:
    args = {k: v for s in tomllib.load(f).values() for k, v in s.items()}
args.update(cli)  # the command line wins, as in sd-scripts
with open(args["dataset_config"], "rb") as f:
    dataset = tomllib.load(f)
for subset in dataset["datasets"][0]["subsets"]:
    assert Path(subset["image_dir"]).is_dir(), subset["image_dir"]
assert Path(args["pretrained_model_name_or_path"]).is_file(), args["pretrained_model_name_or_path"]
out = Path(args["output_dir"])
name = args["output_name"]
raw = json.dumps({"__metadata__": {"ss_output_name": name}, "w": {"dtype": "F16", "shape": [2],
                                                                   "data_offsets": [0, 4]}}).encode()
blob = struct.pack("<Q", len(raw)) + raw + b"\0" * 4
(out / "sample").mkdir(parents=True, exist_ok=True)
(out / f"{name}-000001.safetensors").write_bytes(blob)
(out / "sample" / f"{name}_000004_00_20250101120000_42.png").write_bytes(b"\x89PNG\r\n\x1a\n")
print("steps: 100%|##########| 4/4 [00:04<00:00,  1.00s/it, avr_loss=0.123]", file=sys.stderr)
if os.environ.get("FAKE_NO_FINAL") != "1":
    (out / f"{name}.safetensors").write_bytes(blob)
json.dump({"cwd": os.getcwd(), "argv": argv, "model": args["pretrained_model_name_or_path"]},
          open(os.environ["FAKE_RECORD"], "w"))
'''

FAKE_PYTHON = r'''#!{python}
"""A stand-in python: `-m accelerate.commands.launch [options] SCRIPT args…` runs SCRIPT with the real python."""
import json, os, sys

argv = sys.argv[1:]
assert argv[:2] == ["-m", "accelerate.commands.launch"], argv
rest = argv[2:]
i = next(i for i, a in enumerate(rest) if a.endswith(".py"))
with open(os.environ["FAKE_RECORD"] + ".accelerate", "w") as f:
    json.dump(rest[:i], f)
os.execv({python!r}, [{python!r}, *rest[i:]])
'''


def unzip(bundle: Path, dest: Path) -> Path:
    """Extract as `unzip` does (permissions included); returns the bundle's one top folder."""
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(dest)
        for info in zf.infolist():
            mode = info.external_attr >> 16 & 0o777
            if mode:
                os.chmod(dest / info.filename, mode)
    (top,) = list(dest.iterdir())
    return top


def fake_tools(tmp_path: Path) -> tuple[Path, Path]:
    sd = tmp_path / "sd-scripts"
    sd.mkdir()
    (sd / "train_network.py").write_text(FAKE_SCRIPT)
    python = tmp_path / "fakebin" / "python"
    python.parent.mkdir()
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    return sd, python


def train_sh(top: Path, *args: str, cwd: Path, python: Path, record: Path,
             **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(top / "train.sh"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": str(python), "FAKE_RECORD": str(record), **env})


@pytest.fixture
def dry_run(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    out = cli(home, "train", "art", "--preset", "style-sd15-lora", "--base-model", str(model), "--set",
              "max_train_steps=40", "--set", "sample_every_n_steps=20", "--dry-run", "--json")
    return home, model, json.loads(out.stdout)["run"]


def paths_in(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from paths_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from paths_in(v)
    elif isinstance(value, str):
        yield value


def test_export_train_elsewhere_and_import_back(tmp_path, dry_run):
    home, model, run = dry_run
    data = json.loads(cli(home, "run", "export", "art", run, "--out", str(tmp_path / "b.zip"), "--json").stdout)
    bundle = Path(data["bundle"])
    assert bundle == (tmp_path / "b.zip").resolve()
    names = zipfile.ZipFile(bundle).namelist()
    assert not any(n.endswith(".safetensors") for n in names)  # the base model stays home without --include-model
    top = unzip(bundle, tmp_path / "elsewhere")
    # the TOMLs parse and every path in them lies inside the bundle
    args = read_toml(top / "args.toml")
    dataset = read_toml(top / "dataset.toml")
    flat = {k: v for s in args.values() for k, v in s.items()}
    assert flat["pretrained_model_name_or_path"] == "model/base.safetensors"
    assert flat["dataset_config"] == "dataset.toml" and flat["output_dir"] == "output"
    assert flat["sample_prompts"] == "sample_prompts.txt" and (top / "sample_prompts.txt").is_file()
    assert "tokenizer_cache_dir" not in flat
    for text in [*paths_in(args), *paths_in(dataset)]:
        assert not os.path.isabs(text), text
    for key in ("dataset_config", "output_dir", "logging_dir", "sample_prompts", "pretrained_model_name_or_path"):
        assert (top / flat[key]).resolve().is_relative_to(top.resolve()), key
    (subset,) = dataset["datasets"][0]["subsets"]
    assert subset["image_dir"] == "dataset/10_art"
    files = sorted(p.name for p in (top / "dataset" / "10_art").iterdir())
    assert files == ["0.png", "0.txt", "1.png", "1.txt", "2.png", "2.txt"]
    caption = home / "art" / "dataset" / "10_art" / "1.txt"
    assert (top / "dataset" / "10_art" / "1.txt").read_bytes() == caption.read_bytes()
    # the launch script: executable, valid sh, and it checks its arguments
    assert (top / "train.sh").stat().st_mode & stat.S_IXUSR
    assert subprocess.run(["sh", "-n", str(top / "train.sh")]).returncode == 0
    assert (top / "train.ps1").is_file() and "run import" in (top / "README.md").read_text()
    sd, python = fake_tools(tmp_path)
    record = tmp_path / "record.json"
    no_sd = train_sh(top, str(tmp_path / "nowhere"), str(model), cwd=tmp_path, python=python, record=record)
    assert no_sd.returncode == 2 and "is not an sd-scripts folder" in no_sd.stderr
    no_model = train_sh(top, str(sd), cwd=tmp_path, python=python, record=record)
    assert no_model.returncode == 2 and "give the base model base.safetensors" in no_model.stderr
    bad_model = train_sh(top, str(sd), str(tmp_path / "nope.safetensors"), cwd=tmp_path, python=python,
                         record=record)
    assert bad_model.returncode == 2 and "does not exist" in bad_model.stderr
    # a real run, from another folder, with relative arguments: the model given by its folder, extra arguments
    ok = train_sh(top, "sd-scripts", "models", "--max_train_steps", "4", cwd=tmp_path, python=python, record=record)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    seen = json.loads(record.read_text())
    assert Path(seen["cwd"]).resolve() == top.resolve()
    assert seen["model"] == str(model.resolve()) and seen["argv"][-2:] == ["--max_train_steps", "4"]
    assert json.loads(Path(str(record) + ".accelerate").read_text()) == ["--num_cpu_threads_per_process", "2"]
    out = top / "output"
    assert (out / "art.safetensors").is_file() and (out / "art-000001.safetensors").is_file()
    assert "avr_loss=0.123" in (out / "train.log").read_text()
    # back home: a new, succeeded run holding the LoRAs, samples and log; register takes it
    imported = json.loads(cli(home, "run", "import", "art", str(top), "--json").stdout)
    assert imported["state"] == "succeeded" and imported["id"] != run
    assert imported["files"] == ["art-000001.safetensors", "art.safetensors"]
    assert imported["samples"] == ["sample/art_000004_00_20250101120000_42.png"]
    assert imported["meta"]["imported"]["run"] == run and imported["meta"]["preset"] == "style-sd15-lora"
    assert imported["progress"]["step"] == 4 and imported["progress"]["loss"] == 0.123
    run_dir = Path(imported["dir"])
    assert (run_dir / "art.safetensors").read_bytes() == (out / "art.safetensors").read_bytes()
    assert (run_dir / "train.log").is_file() and (run_dir / "sample").is_dir()
    reg = json.loads(cli(home, "register", "art", imported["id"], "--json").stdout)
    assert sorted(Path(r["lora"]).name for r in reg["registered"]) == ["art-000001.safetensors", "art.safetensors"]
    # the trained folder zipped up imports the same way
    shutil.make_archive(str(tmp_path / "trained"), "zip", root_dir=top.parent, base_dir=top.name)
    again = json.loads(cli(home, "run", "import", "art", str(tmp_path / "trained.zip"), "--json").stdout)
    assert again["state"] == "succeeded" and again["files"] == imported["files"]


def test_a_bundle_with_the_model_and_a_run_that_saved_no_final_file(tmp_path, dry_run):
    home, model, run = dry_run
    bundle = Path(json.loads(cli(home, "run", "export", "art", run, "--include-model", "--json").stdout)["bundle"])
    assert bundle.parent == home / "art" / "exports"
    top = unzip(bundle, tmp_path / "elsewhere")
    assert (top / "model" / "base.safetensors").read_bytes() == model.read_bytes()
    sd, python = fake_tools(tmp_path)
    record = tmp_path / "record.json"
    failed = train_sh(top, str(sd), cwd=tmp_path, python=python, record=record, FAKE_NO_FINAL="1")
    assert failed.returncode == 1 and "without saving output/art.safetensors" in failed.stderr
    assert json.loads(record.read_text())["model"] == str((top / "model" / "base.safetensors").resolve())
    partial = json.loads(cli(home, "run", "import", "art", str(top), "--json").stdout)
    assert partial["state"] == "failed" and partial["files"] == ["art-000001.safetensors"]
    assert "no final art.safetensors" in partial["error"]


def test_an_untrained_bundle_and_unsafe_zips_are_refused(tmp_path, dry_run):
    home, _, run = dry_run
    bundle = Path(json.loads(cli(home, "run", "export", "art", run, "--json").stdout)["bundle"])
    runs_before = json.loads(cli(home, "runs", "art", "--json").stdout)["runs"]
    empty = cli(home, "run", "import", "art", str(bundle), check=False)
    assert empty.returncode == 1 and "holds no trained LoRA" in empty.stderr
    manifest = zipfile.ZipFile(bundle).read(next(n for n in zipfile.ZipFile(bundle).namelist()
                                                 if n.endswith("/bundle.json")))
    for evil in ("../art.safetensors", "b/../../art.safetensors", "/tmp/art.safetensors", "b/output/a\x01.png"):
        path = tmp_path / "evil.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("b/bundle.json", manifest)
            zf.writestr("b/output/art.safetensors", b"x")
            zf.writestr(zipfile.ZipInfo(evil), b"x")
        out = cli(home, "run", "import", "art", str(path), check=False)
        assert out.returncode == 1 and "unsafe entry" in out.stderr, (evil, out.stderr)
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w") as zf:
        zf.writestr("b/bundle.json", manifest)
        zf.writestr("b/output/art.safetensors", b"not a safetensors file")
    out = cli(home, "run", "import", "art", str(damaged), check=False)
    assert out.returncode == 1 and "not a safetensors file" in out.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    out = cli(home, "run", "import", "art", str(plain), check=False)
    assert out.returncode == 1 and "not a Train Style bundle" in out.stderr
    assert json.loads(cli(home, "runs", "art", "--json").stdout)["runs"] == runs_before  # nothing half-imported


def test_api_export_and_confined_import(tmp_path, dry_run):
    home, _, run = dry_run
    client, _ = make_client(tmp_path)  # its home is tmp_path/home, where the dry run is
    r = client.post(f"/train-style/v1/projects/art/runs/{run}/export", json={})
    assert r.status_code == 200, r.text
    path = Path(r.json()["path"])
    assert path.parent == home / "art" / "exports" and zipfile.is_zipfile(path)
    outside = tmp_path / "outside" / "b.zip"
    outside.parent.mkdir()
    shutil.copy(path, outside)
    r = client.post("/train-style/v1/projects/art/runs/import", json={"path": str(outside)})
    assert r.status_code == 403 and "outside the allowed folders" in r.json()["detail"]
    r = client.post("/train-style/v1/projects/art/runs/import", json={"path": str(path)})
    assert r.status_code == 400 and "holds no trained LoRA" in r.json()["detail"]
    assert client.post("/train-style/v1/projects/art/runs/nope/export").status_code == 404
