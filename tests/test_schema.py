"""Settings declared once (lib_lorakit/schema.py): the audit thresholds and the training options reach the CLI's
--help, its argument checks, the HTTP API and plain-data validation from the one declaration."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lib_lorakit import api
from lib_lorakit.captions.audit import AUDIT_SCHEMA, AuditSettings
from lib_lorakit.errors import LorakitError
from lib_lorakit.host import StandaloneHost
from lib_lorakit.schema import InvalidSettings
from lib_lorakit.train import options
from lib_lorakit.train.distributed import AccelerateOptions

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib_lorakit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_help_shows_each_thresholds_reason_and_declared_default():
    out = _cli("check", "--help").stdout
    for field in ("dominant_threshold", "low_variety_threshold", "max_tokens"):
        f = AUDIT_SCHEMA[field]
        assert "--" + field.replace("_", "-") in out
        assert f"default {f.default}" in " ".join(out.split())
    assert "learned as part of the trigger" in " ".join(out.split())


def test_cli_refuses_an_out_of_range_threshold_naming_it():
    r = _cli("check", "demo", "--dominant-threshold", "1.5")
    assert r.returncode == 2
    assert "dominant_threshold: expected a number from 0.01 to 1, got 1.5" in r.stderr


def test_the_audit_defaults_are_the_declared_ones():
    assert AuditSettings().dominant_threshold == AUDIT_SCHEMA["dominant_threshold"].default == 0.6
    assert AuditSettings().max_tokens == AUDIT_SCHEMA["max_tokens"].default == 75


def test_api_check_validates_thresholds_through_the_declaration(tmp_path):
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models")
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    assert client.post("/train-style/v1/projects", json={"name": "demo"}).status_code == 201
    r = client.get("/train-style/v1/projects/demo/check", params={"max_tokens": 0})
    assert r.status_code == 400
    assert "max_tokens: expected an integer from 1 to 1000, got 0" in r.text
    assert client.get("/train-style/v1/projects/demo/check").status_code == 200


def test_from_dict_names_the_bad_field_with_its_path_and_all_problems_at_once():
    with pytest.raises(InvalidSettings) as e:
        options.SCHEMA.from_dict({"learning_rate": "fast", "netwrk_dim": 4}, path="overrides")
    text = str(e.value)
    assert "overrides.learning_rate: expected a number from 0 to 10, got 'fast'" in text
    assert "overrides: unknown option 'netwrk_dim' (did you mean network_dim" in text


def test_argparse_arguments_from_the_declaration_type_and_check_values():
    parser = argparse.ArgumentParser()
    options.SCHEMA.add_arguments(parser, names=("learning_rate", "network_dim", "enable_bucket"))
    values = options.SCHEMA.from_namespace(parser.parse_args(["--learning-rate", "2e-4", "--enable-bucket", "no"]))
    assert values["learning_rate"] == 2e-4 and values["enable_bucket"] is False and values["network_dim"] == 16
    with pytest.raises(SystemExit):
        parser.parse_args(["--network-dim", "0"])


def test_toml_table_leaves_out_none_and_uses_toml_keys():
    table = options.SCHEMA.to_toml({"train_batch_size": 2, "clip_skip": None})
    assert table == {"batch_size": 2}


def test_multi_gpu_flags_come_from_the_declaration_and_are_checked_by_it():
    out = " ".join(_cli("train", "--help").stdout.split())
    assert "--num-processes N One training process per GPU" in out
    assert "--main-process-port N The main machine's port" in out
    r = _cli("train", "demo", "--preset", "style-sd15-lora", "--base-model", "x.safetensors", "--num-processes", "65")
    assert r.returncode == 2 and "num_processes: expected an integer from 1 to 64, got 65" in r.stderr
    with pytest.raises(LorakitError, match="Multi-GPU settings: main_process_port: expected an integer from 1"):
        AccelerateOptions.from_settings({"main_process_port": 0})
    assert AccelerateOptions.from_settings({"num_processes": 2}) == AccelerateOptions(num_processes=2)


def test_tagging_defaults_are_declared_once_and_reach_the_cli():
    from lib_lorakit.captions.service import TAG_SCHEMA, TagRequest
    from lib_lorakit.taggers.clip import ClipOptions
    from lib_lorakit.taggers.wd14 import WD14Options

    req, wd14, clip = TagRequest(), WD14Options(), ClipOptions()
    assert req.general_threshold == wd14.general_threshold == TAG_SCHEMA["general_threshold"].default == 0.35
    assert req.character_threshold == wd14.character_threshold == TAG_SCHEMA["character_threshold"].default
    assert req.clip_model == clip.model and req.clip_top_k == clip.top_k == TAG_SCHEMA["clip_top_k"].default
    out = " ".join(_cli("tag", "--help").stdout.split())
    assert "--general-threshold X A general tag is written when the model is at least this sure" in out
    assert "default 0.35" in out
    r = _cli("tag", "demo", "--batch", "300")
    assert r.returncode == 2 and "batch: expected an integer from 0 to 256, got 300" in r.stderr
    with pytest.raises(LorakitError, match="clip_top_k: expected an integer from 1 to 100, got 0"):
        TagRequest.from_dict({"clip_top_k": 0})


def test_project_settings_are_declared_once(tmp_path):
    from lib_lorakit.project import PROJECT_SCHEMA, ProjectSettings

    assert ProjectSettings(name="p").resolution == PROJECT_SCHEMA["resolution"].default == 512
    assert ProjectSettings.parse_assignment("near_duplicate_distance=9") == ("near_duplicate_distance", 9)
    with pytest.raises(LorakitError, match="near_duplicate_distance: expected an integer from 0 to 32, got 'x'"):
        ProjectSettings.parse_assignment("near_duplicate_distance=x")
    with pytest.raises(LorakitError, match="resolution: expected an integer from 64 to 4096, got 32"):
        ProjectSettings.from_dict({"name": "p", "resolution": 32})


def test_api_train_plan_names_each_bad_override_by_its_path(tmp_path):
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models")
    app = FastAPI()
    api.mount(app, host)
    client = TestClient(app)
    assert client.post("/train-style/v1/projects", json={"name": "demo"}).status_code == 201
    body = {"preset": "style-sd15-lora", "base_model": "x.safetensors",
            "overrides": {"learning_rate": "fast", "network_dim": 0, "epoch": "3"}}
    r = client.post("/train-style/v1/projects/demo/train/plan", json=body)
    assert r.status_code == 400
    assert "overrides.learning_rate: expected a number from 0 to 10, got 'fast'" in r.text
    assert "overrides.network_dim: expected an integer from 1 to 1024, got 0" in r.text
    assert "epoch" not in r.text  # an old name given as text is typed as its option, not refused


def test_api_lists_every_declared_setting_for_forms(tmp_path):
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models")
    app = FastAPI()
    api.mount(app, host)
    data = TestClient(app).get("/train-style/v1/settings").json()
    training = {f["name"]: f for f in data["training"]["fields"]}
    assert training["learning_rate"]["reason"].startswith("Step size")
    assert training["network_dim"]["minimum"] == 1 and training["network_dim"]["type"] == "int"
    assert [g["title"] for g in data["training"]["groups"]][:2] == ["Basics", "Network"]
    audit = {f["name"]: f["default"] for f in data["audit"]["fields"]}
    assert audit["dominant_threshold"] == 0.6 and audit["max_tokens"] == 75
    assert {"tagging", "multi_gpu", "project", "grid", "judge", "autopilot"} <= set(data)
    judge = {f["name"]: f for f in data["judge"]["fields"]}
    assert judge["max_copy_rate"]["default"] == 0.1 and judge["goal"]["default"] == "style"
