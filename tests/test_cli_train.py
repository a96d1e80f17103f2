"""Training from the command line, up to the point where sd-scripts would start (real training: test_train_real)."""

from __future__ import annotations

import json

from PIL import Image
from test_cli import cli
from test_host import TEXT_ENCODERS, write_safetensors

from lib_lorakit.tomlio import read_toml


def make_project(home, tmp_path, captions: bool = True):
    cli(home, "project", "new", "art", "--trigger", "zkstyle")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (96, 96), (60 * i, 100, 200)).save(src / f"{i}.png")
        if captions:
            (src / f"{i}.txt").write_text(f"zkstyle, shape {i}")
    cli(home, "import", "art", str(src), "--concept", "art", "--repeats", "10")
    model = tmp_path / "models" / "base.safetensors"
    model.parent.mkdir()
    write_safetensors(model, ["model.diffusion_model.out.0.weight", TEXT_ENCODERS["SD1"]])
    return model


def test_presets_are_listed_with_base_and_network(tmp_path):
    data = json.loads(cli(tmp_path / "home", "presets", "--json").stdout)
    names = {p["name"]: p for p in data["presets"]}
    assert names["style-sd15-loha"]["network"] == "LoHa" and names["style-sdxl-lora"]["base"] == "SDXL"


def test_dry_run_writes_the_tomls_and_prints_the_command(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    out = cli(home, "train", "art", "--preset", "style-sd15-loha", "--base-model", str(model), "--set",
              "max_train_steps=40", "--dry-run", "--json")
    data = json.loads(out.stdout)
    argv = data["argv"]
    assert argv[1:3] == ["-m", "accelerate.commands.launch"] and "train_network.py" in argv
    sections = read_toml(tmp_path / "home" / "art" / "runs" / data["run"] / "args.toml")
    args = {k: v for section in sections.values() for k, v in section.items()}  # sd-scripts flattens sections
    dataset = read_toml(tmp_path / "home" / "art" / "runs" / data["run"] / "dataset.toml")
    assert args["max_train_steps"] == 40 and args["caption_extension"] == ".txt"
    assert args["network_module"] == "lycoris.kohya" and "algo=loha" in args["network_args"]
    (subset,) = dataset["datasets"][0]["subsets"]
    assert subset["num_repeats"] == 10 and subset["image_dir"].endswith("dataset/10_art")
    assert "30 images × repeats per epoch" in out.stderr  # the step maths shown before anything runs
    runs = json.loads(cli(home, "runs", "art", "--json").stdout)["runs"]
    assert [(r["id"], r["state"]) for r in runs] == [(data["run"], "draft")]


def test_preflight_blocks_with_the_fix(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path, captions=False)
    out = cli(home, "train", "art", "--preset", "style-sdxl-lora", "--base-model", str(model), "--dry-run",
              check=False)
    assert out.returncode == 1
    assert "is an SD1 model but preset style-sdxl-lora is for SDXL" in out.stderr
    assert "3 training images have no caption" in out.stderr
    bad = cli(home, "train", "art", "--preset", "style-sd15-lora", "--base-model", str(model), "--set",
              "network_dim=0", "--dry-run", check=False)
    assert bad.returncode == 1 and "network_dim" in bad.stderr


def test_save_a_preset_then_train_with_it(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    cli(home, "presets", "save", "mine", "--from", "style-sd15-loha", "--set", "network_dim=12", "--set",
        "max_train_epochs=6")
    shown = json.loads(cli(home, "presets", "show", "mine", "--json").stdout)["settings"]
    dim = next(r for r in shown if r["name"] == "network_dim")
    assert dim["value"] == 12 and "--set" in dim["source"]
    conv = next(r for r in shown if r["name"] == "conv_dim")
    assert conv["value"] == 4 and "seeds/003" in conv["source"]  # the preset it came from still speaks
    assert "mine" in {p["name"] for p in json.loads(cli(home, "presets", "--json").stdout)["presets"]}
    again = cli(home, "presets", "save", "style-sd15-loha", "--from", "mine", check=False)
    assert again.returncode == 1 and "built-in" in again.stderr
    data = json.loads(cli(home, "train", "art", "--preset", "mine", "--base-model", str(model), "--dry-run",
                          "--json").stdout)
    sections = read_toml(tmp_path / "home" / "art" / "runs" / data["run"] / "args.toml")
    args = {k: v for section in sections.values() for k, v in section.items()}
    assert args["network_dim"] == 12 and args["max_train_epochs"] == 6


def test_queue_lists_and_reorders(tmp_path):
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    ids = []
    for _ in range(2):  # without a trainer the runs stay queued, which is what this test needs
        out = cli(home, "train", "art", "--preset", "style-sd15-lora", "--base-model", str(model), "--json",
                  check=False)
        assert out.returncode == 1 and "trainer environment is not set up" in out.stderr
    from test_runner import make_run

    from lib_lorakit.host import StandaloneHost
    from lib_lorakit.project import Workspace
    from lib_lorakit.train.queue import TrainQueue

    project = Workspace(home).open("art")
    queue = TrainQueue(StandaloneHost(home=home, lora=home / "L", models=home / "M"))
    for _ in range(2):
        _, snap = make_run(project, "success")
        queue.add("art", snap.id)
        ids.append(snap.id)
    listed = json.loads(cli(home, "queue", "--json").stdout)["queue"]
    assert [r["run"] for r in listed] == ids and {r["state"] for r in listed} == {"queued"}
    moved = json.loads(cli(home, "queue", "up", "art", ids[1], "--json").stdout)["queue"]
    assert [r["run"] for r in moved] == ids[::-1]


def test_bucket_steps_sd_scripts_would_refuse_are_refused_before_the_run(tmp_path):
    # sd-scripts v0.10.1 stops SD1 training on bucket steps that are not multiples of 64, after loading the model
    home = tmp_path / "home"
    model = make_project(home, tmp_path)
    out = cli(home, "train", "art", "--preset", "style-sd15-lora", "--base-model", str(model), "--set",
              "bucket_reso_steps=32", "--set", "min_bucket_reso=256", "--dry-run", check=False)
    assert out.returncode == 1
    assert "bucket_reso_steps 32" in out.stderr and "multiple of 64" in out.stderr
    fine = cli(home, "train", "art", "--preset", "style-sd15-lora", "--base-model", str(model), "--set",
               "bucket_reso_steps=128", "--set", "min_bucket_reso=256", "--set", "max_bucket_reso=1024", "--dry-run",
               check=False)
    assert "BUCKET_STEPS" not in fine.stderr and "bucket_reso_steps 128" not in fine.stderr, fine.stderr
