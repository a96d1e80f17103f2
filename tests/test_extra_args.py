"""Extra sd-scripts arguments (issue 9, items 2 and 3): any argument the selected sd-scripts accepts, checked by its
own parser before launch; and, from the tab and the API, never a way out of the folders a run may read or write.

The parser is sd-scripts' code path (`setup_parser()` of the run's script, `parse_known_args`, run by the trainer's
python in the sd-scripts folder); in CI the sd-scripts folder is a stand-in whose train_network.py declares a few of
sd-scripts' real arguments with argparse. The last test runs the real sd-scripts where its environment exists.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from test_api import make_client
from test_host import write_safetensors
from test_security_train import SD1, make_project, runs_of
from test_trainer_adopt import hand_made_trainer, run_cli

from lib_lorakit.project import Workspace
from lib_lorakit.tomlio import read_toml
from lib_lorakit.train.environment import TrainerEnvironment
from lib_lorakit.train.extra_args import check_with_sd_scripts

ROOT = Path(__file__).resolve().parents[1]
API = "/train-style/v1"

STAND_IN_PARSER = textwrap.dedent('''
    """sd-scripts' train_network.setup_parser, a few of its real arguments (tests/test_extra_args.py)."""
    import argparse


    def setup_parser():
        p = argparse.ArgumentParser()
        p.add_argument("--tokenizer_cache_dir", type=str, default=None)
        p.add_argument("--vae", type=str, default=None)
        p.add_argument("--network_weights", type=str, default=None)
        p.add_argument("--vae_batch_size", type=int, default=1)
        p.add_argument("--huber_c", type=float, default=0.1)
        p.add_argument("--masked_loss", action="store_true")
        p.add_argument("--network_args", type=str, default=None, nargs="*")
        p.add_argument("--loss_type", type=str, default="l2", choices=["l1", "l2", "huber", "smooth_l1"])
        p.add_argument("--metadata_thumbnail", type=str, default=None)
        p.add_argument("--output_dir", type=str, default=None)
        p.add_argument("--logging_dir", type=str, default=None)
        p.add_argument("--log_prefix", type=str, default=None)
        p.add_argument("--log_with", type=str, default=None, choices=["tensorboard", "wandb", "all"])
        p.add_argument("--sample_prompts", type=str, default=None)
        p.add_argument("--dataset_class", type=str, default=None)
        p.add_argument("--caption_extention", type=str, default=None)
        return p
''')


@pytest.fixture
def trainer(tmp_path):
    """(python, sd-scripts folder) of a working trainer whose sd-scripts parser is the stand-in."""
    python, sd_scripts, _ = hand_made_trainer(tmp_path / "trainer")
    (sd_scripts / "train_network.py").write_text(STAND_IN_PARSER)
    return python, sd_scripts


def flat(path: Path) -> dict:
    return {k: v for body in read_toml(path).values() if isinstance(body, dict) for k, v in body.items()}


def model_file(tmp_path: Path) -> Path:
    model = tmp_path / "models" / "Stable-diffusion" / "base.safetensors"
    model.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(model, SD1)
    return model


# --- the command line -------------------------------------------------------------------------------------------
def test_cli_passes_undeclared_arguments_typed_by_sd_scripts(tmp_path, trainer):
    python, sd_scripts = trainer
    home = tmp_path / "home"
    make_project(home)
    tokenizers = tmp_path / "tokenizers"
    tokenizers.mkdir()
    out = run_cli(home, "train", "demo", "--preset", "style-sd15-lora", "--base-model", str(model_file(tmp_path)),
                  "--trainer-python", str(python), "--dry-run", "--json",
                  "--set", f"tokenizer_cache_dir={tokenizers}", "--set", "vae_batch_size=4",
                  "--set", "masked_loss=true", "--set", "network_args=rank_dropout=0.1",
                  "--set", "network_args=module_dropout=0.1", "--set", "max_train_epochs=3",
                  env={"TRAIN_STYLE_SD_SCRIPTS": str(sd_scripts)})
    assert out.returncode == 0, out.stderr
    run_dir = home / "demo" / "runs" / json.loads(out.stdout)["run"]
    args = read_toml(run_dir / "args.toml")
    assert args["extra"] == {"tokenizer_cache_dir": str(tokenizers), "vae_batch_size": 4, "masked_loss": True}
    assert "tokenizer_cache_dir" not in args["model"]  # one key, in one place (sd-scripts flattens the sections)
    assert args["network"]["network_args"][-2:] == ["rank_dropout=0.1", "module_dropout=0.1"]
    assert flat(run_dir / "args.toml")["max_train_epochs"] == 3
    assert read_toml(run_dir / "args.toml")["extra"]["vae_batch_size"] == 4


def test_cli_names_an_unknown_or_invalid_argument_and_makes_no_run(tmp_path, trainer):
    python, sd_scripts = trainer
    home = tmp_path / "home"
    make_project(home)
    model = model_file(tmp_path)
    env = {"TRAIN_STYLE_SD_SCRIPTS": str(sd_scripts)}
    base = ["train", "demo", "--preset", "style-sd15-lora", "--base-model", str(model), "--trainer-python",
            str(python)]
    out = run_cli(home, *base, "--set", "vae_batch_sise=4", env=env)
    assert out.returncode == 1
    assert "unknown sd-scripts argument 'vae_batch_sise' (did you mean vae_batch_size?)" in out.stderr
    out = run_cli(home, *base, "--set", "vae_batch_size=four", "--set", "loss_type=l3", env=env)
    assert out.returncode == 1
    assert "vae_batch_size: invalid int value: 'four'" in out.stderr and "loss_type: invalid choice" in out.stderr
    out = run_cli(home, *base, "--set", f"output_dir={tmp_path}", env=env)
    assert out.returncode == 1 and "output_dir: set by Train Style for every run" in out.stderr
    assert runs_of(home / "demo") == []


def test_the_command_line_may_name_any_file(tmp_path, trainer):
    python, sd_scripts = trainer
    home = tmp_path / "home"
    make_project(home)
    elsewhere = tmp_path / "big-drive" / "vae.safetensors"
    elsewhere.parent.mkdir()
    write_safetensors(elsewhere, ["decoder.conv_in.weight"])
    out = run_cli(home, "train", "demo", "--preset", "style-sd15-lora", "--base-model", str(model_file(tmp_path)),
                  "--trainer-python", str(python), "--dry-run", "--json", "--set", f"vae={elsewhere}",
                  "--set", f"logging_dir={tmp_path / 'tb'}", env={"TRAIN_STYLE_SD_SCRIPTS": str(sd_scripts)})
    assert out.returncode == 0, out.stderr
    extra = read_toml(home / "demo" / "runs" / json.loads(out.stdout)["run"] / "args.toml")["extra"]
    assert extra == {"vae": str(elsewhere), "logging_dir": str(tmp_path / "tb")}


# --- the API: confined ------------------------------------------------------------------------------------------
@pytest.fixture
def api(tmp_path, trainer, monkeypatch):
    python, sd_scripts = trainer
    monkeypatch.setenv("TRAIN_STYLE_TRAINER_PYTHON", str(python))
    monkeypatch.setenv("TRAIN_STYLE_SD_SCRIPTS", str(sd_scripts))
    client, host = make_client(tmp_path)
    make_project(host.projects_home())
    return client, host, model_file(tmp_path)


def test_api_extra_args_are_checked_by_sd_scripts_and_written_typed(tmp_path, api):
    client, host, model = api
    tokenizers = host.projects_home() / "tokenizers"
    tokenizers.mkdir()
    vae = tmp_path / "models" / "VAE" / "vae.safetensors"
    vae.parent.mkdir(parents=True)
    write_safetensors(vae, ["decoder.conv_in.weight"])
    body = {"preset": "style-sd15-lora", "base_model": str(model), "dry_run": True,
            "extra_args": {"tokenizer_cache_dir": str(tokenizers), "vae": str(vae), "vae_batch_size": 2,
                           "huber_c": "0.25", "masked_loss": True, "network_args": ["rank_dropout=0.1"]}}
    r = client.post(f"{API}/projects/demo/train", json=body)
    assert r.status_code == 201, r.text
    run_dir = Path(r.json()["dir"])
    extra = read_toml(run_dir / "args.toml")["extra"]
    assert extra == {"tokenizer_cache_dir": str(tokenizers.resolve()), "vae": str(vae.resolve()),
                     "vae_batch_size": 2, "huber_c": 0.25, "masked_loss": True}
    assert r.json()["meta"]["extra_args"]["huber_c"] == 0.25
    r = client.post(f"{API}/projects/demo/train/plan", json={**body, "extra_args": {"no_such_arg": 1}})
    assert r.status_code == 200 and r.json()["blocked"]
    assert "unknown sd-scripts argument 'no_such_arg'" in json.dumps(r.json()["findings"])


ESCAPES = {
    # model files sd-scripts loads: the base model's rule
    "vae": "/etc/passwd",
    "network_weights": "{outside}/lora.safetensors",
    "base_weights": ["{outside}/lora.safetensors"],
    # other files and folders it reads: inside the models or allowed folders only
    "tokenizer_cache_dir": "/etc",
    "metadata_thumbnail": "{models}/../outside/secret.png",
    "sample_prompts": "{outside}/prompts.txt",
    "log_tracker_config": "/etc/passwd",
    "some_new_cache_dir": "/etc",  # a name sd-scripts may add later: judged as a path by its name
    # where the run writes or sends its output
    "logging_dir": "{home}/logs",
    "log_prefix": "../../../../tmp/x",
    "console_log_file": "{home}/log.txt",
    "log_with": "wandb",
    "huggingface_repo_id": "someone/leak",
    "offload_optimizer_nvme_path": "{home}",
    # code sd-scripts imports
    "dataset_class": "os.system",
    # set by Train Style for every run
    "output_dir": "{home}",
    "output_name": "x",
    "pretrained_model_name_or_path": "{models}/Stable-diffusion/base.safetensors",
    "config_file": "{outside}/args.toml",
    "dataset_config": "{outside}/dataset.toml",
    "resume": "{outside}/state",
    "train_data_dir": "{outside}",
    "caption_extention": ".txt",
    "save_model_as": "ckpt",
    # a path under another name
    "network_args": ["preset=/etc/passwd"],
    "huber_c": "/etc/passwd",
    # declared options belong in overrides
    "learning_rate": 1,
}


def test_api_extra_args_cannot_leave_the_allowed_folders(tmp_path, api):
    client, host, model = api
    outside = tmp_path / "outside"
    outside.mkdir()
    write_safetensors(outside / "lora.safetensors", ["lora_unet_x.lora_up.weight"])
    (outside / "secret.png").write_bytes(b"\x89PNG")
    link = tmp_path / "models" / "VAE" / "innocent.safetensors"  # not a listed checkpoint: its target counts
    link.parent.mkdir()
    link.symlink_to(outside / "lora.safetensors")
    fill = {"outside": str(outside), "models": str(tmp_path / "models"), "home": str(host.projects_home())}
    for name, raw in [*ESCAPES.items(), ("network_weights", str(link))]:  # a link in the models folder too
        value = [v.format(**fill) for v in raw] if isinstance(raw, list) else (
            raw.format(**fill) if isinstance(raw, str) else raw)
        body = {"preset": "style-sd15-lora", "base_model": str(model), "dry_run": True, "extra_args": {name: value}}
        r = client.post(f"{API}/projects/demo/train", json=body)
        assert r.status_code in (400, 403), (name, r.text)
        assert name in r.json()["detail"], (name, r.text)
        plan = client.post(f"{API}/projects/demo/train/plan", json=body).json()
        refused = [f for f in plan["findings"] if f["code"] == "EXTRA_ARG_REFUSED"]
        assert plan["blocked"] and refused and refused[0]["message"].startswith(name), (name, plan)
    assert runs_of(host.projects_home() / "demo") == []
    # the same arguments inside the allowed folders are taken
    inside = host.projects_home() / "prompts.txt"
    inside.write_text("a cat\n")
    body = {"preset": "style-sd15-lora", "base_model": str(model), "dry_run": True,
            "extra_args": {"sample_prompts": str(inside), "loss_type": "huber"}}
    r = client.post(f"{API}/projects/demo/train", json=body)
    assert r.status_code == 201, r.text
    assert read_toml(Path(r.json()["dir"]) / "args.toml")["extra"]["sample_prompts"] == str(inside.resolve())


def test_stage2_of_a_two_stage_run_keeps_its_base_weights(tmp_path, api):
    client, host, model = api
    project = Workspace(host.projects_home()).open("demo")
    project.add_concept("hero", 1)
    body = {"preset": "style-sd15-lora", "base_model": str(model), "dry_run": True, "target_concepts": ["hero"],
            "accept_missing_captions": True,
            "extra_args": {"base_weights": [str(tmp_path / "models" / "Stable-diffusion" / "base.safetensors")]}}
    r = client.post(f"{API}/projects/demo/train/differential", json=body)
    assert r.status_code == 400 and "base_weights: set by Train Style for this run" in r.json()["detail"], r.text


# --- the real sd-scripts, where its environment exists ---------------------------------------------------------
REAL_VENV = Path(os.environ.get("TRAIN_STYLE_TRAINER_VENV", "/nonexistent"))


@pytest.mark.skipif(not ((REAL_VENV / "bin" / "python").exists() and (ROOT / "sd-scripts" / "train_network.py")
                         .is_file()), reason="needs TRAIN_STYLE_TRAINER_VENV and the sd-scripts submodule")
@pytest.mark.parametrize("script", ["train_network.py", "sdxl_train_network.py"])
def test_the_real_sd_scripts_parser_types_and_names(tmp_path, script):
    env = TrainerEnvironment(REAL_VENV, ROOT / "sd-scripts")
    checked = check_with_sd_scripts(env, script, {
        "tokenizer_cache_dir": str(tmp_path), "vae_batch_size": "4", "masked_loss": "true", "huber_c": "x",
        "network_args": ["rank_dropout=0.1"], "vae_batch_sise": "2", "loss_type": "l3"},
        cache_file=tmp_path / "cache.json")
    assert checked.values == {"tokenizer_cache_dir": str(tmp_path), "vae_batch_size": 4, "masked_loss": True,
                              "network_args": ["rank_dropout=0.1"]}
    (unknown,) = checked.unknown
    assert unknown.startswith("unknown sd-scripts argument 'vae_batch_sise' (did you mean vae_batch_size")
    assert {i.split(":")[0] for i in checked.invalid} == {"huber_c", "loss_type"}
