"""Trainer environments adopted, not only made (issue 9, item 3).

An sd-scripts environment made elsewhere (kohya_ss, by hand: no `lorakit-setup.json`) is ready when the doctor's
probe says it works; the probe is cached per interpreter (path and mtime) and its site-packages, under the projects
home; our own setup's record only says what our setup still has to do. The "hand-made" trainer here is the stand-in
of tests/fake_trainer_env.py without its setup record, behind a python that counts the probes it answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fake_trainer_env import build_fake_trainer
from test_host import TEXT_ENCODERS, write_safetensors
from test_security_train import make_project

from lib_lorakit.host import StandaloneHost
from lib_lorakit.project import Workspace
from lib_lorakit.train.environment import (
    PROBE_MARK,
    REQUIRED_STEPS,
    STATE_FILE,
    ProbeCache,
    TrainerEnvironment,
    cached_report,
)
from lib_lorakit.train.service import TrainingService, TrainRequest
from lib_lorakit.ui.render_train import trainer_html

ROOT = Path(__file__).resolve().parents[1]
SD1 = ["model.diffusion_model.out.0.weight", TEXT_ENCODERS["SD1"]]

COUNTING = """#!{real}
import os, sys
argv = sys.argv[1:]
if argv[:1] == ["-c"] and len(argv) > 1 and argv[1].startswith({mark!r}):
    with open({calls!r}, "a") as f:
        f.write("probe\\n")
os.execv({target!r}, [{target!r}, *argv])
"""


def hand_made_trainer(folder: Path, *, target: Path | None = None) -> tuple[Path, Path, Path]:
    """(python, sd-scripts folder, probe log) of an environment made without our setup: no setup record."""
    fake = build_fake_trainer(folder / "replay", delay=0.002)
    python = folder / "kohya" / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    calls = folder / "probes.log"
    python.write_text(COUNTING.format(real=sys.executable, mark=PROBE_MARK, calls=str(calls),
                                      target=str(target or fake)))
    python.chmod(0o755)
    assert not (python.parent.parent / STATE_FILE).exists()
    return python, folder / "replay" / "sd-scripts", calls


def probes(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def run_cli(home: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "TRAIN_STYLE_CONFIG": str(home / "no-config.toml"), **env}
    return subprocess.run([sys.executable, "-m", "lib_lorakit", "--home", str(home), *args], env=full,
                          capture_output=True, text=True, timeout=300)


def test_train_uses_an_environment_the_doctor_accepts(tmp_path):
    """The issue's report: `trainer doctor --trainer-python X` says it works, then `train --trainer-python X` must
    train (it said "The trainer environment is not set up")."""
    home = tmp_path / "home"
    make_project(home)
    model = tmp_path / "models" / "base.safetensors"
    model.parent.mkdir()
    write_safetensors(model, SD1)
    python, sd_scripts, calls = hand_made_trainer(tmp_path / "trainer")
    env = {"TRAIN_STYLE_SD_SCRIPTS": str(sd_scripts)}
    doctor = run_cli(home, "trainer", "doctor", "--trainer-python", str(python), env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    out = run_cli(home, "train", "demo", "--preset", "style-sd15-lora", "--base-model", str(model),
                  "--trainer-python", str(python), "--set", "max_train_steps=4", "--wait", "--json", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "not set up" not in out.stderr
    final = json.loads(out.stdout)["final"]
    assert final["state"] == "succeeded" and "demo.safetensors" in final["files"]
    assert probes(calls) == 1  # the doctor probed; train used its answer (cached under the projects home)
    cache = json.loads((home / ".cache" / "trainer-probe.json").read_text())
    assert list(cache) == [os.path.abspath(python)]


def service(tmp_path: Path, python: Path, sd_scripts: Path) -> TrainingService:
    host = StandaloneHost(home=tmp_path / "home", lora=tmp_path / "lora", models=tmp_path / "models")
    return TrainingService(host, trainer=TrainerEnvironment(python.parent.parent, sd_scripts))


def test_the_probe_is_cached_until_the_interpreter_or_its_packages_change(tmp_path):
    python, sd_scripts, calls = hand_made_trainer(tmp_path / "trainer")
    svc = service(tmp_path, python, sd_scripts)
    assert svc.trainer_report().ok and svc.trainer_report().ok
    assert probes(calls) == 1
    later = time.time() + 5
    os.utime(python, (later, later))  # the interpreter was replaced (e.g. a new python in the venv)
    assert svc.trainer_report().ok and probes(calls) == 2
    site = Path(json.loads((tmp_path / "home" / ".cache" / "trainer-probe.json").read_text())
                [os.path.abspath(python)]["facts"]["purelib"])
    (site / "new_package").mkdir()  # pip installed something
    assert svc.trainer_report().ok and probes(calls) == 3
    assert svc.trainer_report(refresh=True).ok and probes(calls) == 4  # Check trainer / trainer doctor
    # another interpreter has its own entry
    other, _, other_calls = hand_made_trainer(tmp_path / "other")
    assert service(tmp_path, other, sd_scripts).trainer_report().ok and probes(other_calls) == 1
    assert svc.trainer_report().ok and probes(calls) == 4


def plan(svc: TrainingService, project_name: str = "demo", dry_run: bool = False):
    models = Path(svc.host.models_dir())
    models.mkdir(parents=True, exist_ok=True)
    write_safetensors(models / "base.safetensors", SD1)
    project = Workspace(svc.host.projects_home()).open(project_name)
    return svc.plan(project, TrainRequest(project=project_name, preset="style-sd15-lora",
                                          base_model=str(models / "base.safetensors"), dry_run=dry_run))


def errors(p) -> dict[str, str]:
    return {f.code: f.message for f in p.findings if f.severity == "error"}


def test_readiness_is_the_probe_not_our_setup_record(tmp_path):
    make_project(tmp_path / "home")
    # a complete setup record does not make a broken interpreter ready
    broken, sd_scripts, _ = hand_made_trainer(tmp_path / "broken", target=Path("/bin/false"))
    steps = {name: {"status": "done", "fingerprint": "x"} for name in REQUIRED_STEPS}
    (broken.parent.parent / STATE_FILE).write_text(json.dumps({"steps": steps}))
    assert TrainerEnvironment(broken.parent.parent, sd_scripts).setup_complete()
    found = errors(plan(service(tmp_path, broken, sd_scripts)))
    assert "TRAINER_BROKEN" in found and "not set up" not in " ".join(found.values())
    # a record of a setup that never finished does not refuse an environment that works
    working, sd_scripts, _ = hand_made_trainer(tmp_path / "working")
    (working.parent.parent / STATE_FILE).write_text(json.dumps({"steps": {"venv": {"status": "done"}}}))
    assert not TrainerEnvironment(working.parent.parent, sd_scripts).setup_complete()
    p = plan(service(tmp_path, working, sd_scripts))
    assert not p.blocked, p.findings


def test_an_environment_without_torch_is_refused_with_the_doctors_reason(tmp_path):
    make_project(tmp_path / "home")
    venv = tmp_path / "plain" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)  # this test runner's python has no torch
    sd_scripts = tmp_path / "sd-scripts"
    sd_scripts.mkdir()
    (sd_scripts / "train_network.py").write_text("")
    p = plan(service(tmp_path, venv / "bin" / "python", sd_scripts))
    found = errors(p)
    assert "torch does not import" in found["TRAINER_TORCH"] and "TRAINER_MISSING" not in found
    # a dry run only warns: it starts nothing
    assert not plan(service(tmp_path, venv / "bin" / "python", sd_scripts), dry_run=True).blocked


def test_the_tab_says_what_the_last_probe_found_without_probing(tmp_path):
    python, sd_scripts, calls = hand_made_trainer(tmp_path / "trainer")
    env = TrainerEnvironment(python.parent.parent, sd_scripts)
    cache = ProbeCache.under(tmp_path / "home")
    assert cached_report(env, cache) is None and probes(calls) == 0
    assert "an existing environment" in trainer_html(env, None)
    service(tmp_path, python, sd_scripts).trainer_report()
    html = trainer_html(env, cached_report(env, cache, repo_root=ROOT))
    assert 'id="train_style_trainer_ready"' in html and str(python) in html and probes(calls) == 1
    ours = TrainerEnvironment(tmp_path / "home" / ".trainer" / "venv", sd_scripts)
    assert "is not set up" in trainer_html(ours, cached_report(ours, cache))
