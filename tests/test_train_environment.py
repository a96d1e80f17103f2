"""The trainer environment: resumable setup (with a fake pip), the doctor's probe, the sd-scripts checkout.

Tests marked with the real trainer need TRAIN_STYLE_TRAINER_VENV (or /work/trainer/venv) made by `setup_trainer`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from lib_lorakit.errors import Cancelled, LorakitError
from lib_lorakit.train import environment as tenv
from lib_lorakit.train.environment import (
    PINNED_SD_SCRIPTS,
    SetupFailed,
    TrainerEnvironment,
    check_submodule,
    doctor,
    install_torchvision_shim,
    run_logged,
    setup_trainer,
    torchvision_for,
)

REPO = Path(__file__).resolve().parents[1]
REAL_VENV = Path(os.environ.get("TRAIN_STYLE_TRAINER_VENV", "/work/trainer/venv"))

FAKE_PIP = textwrap.dedent("""
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_PIP_CALLS"], "a") as f:
        f.write(json.dumps({"args": args, "cwd": os.getcwd()}) + "\\n")
    print("Collecting " + " ".join(a for a in args if not a.startswith("-")))
    sys.stdout.write("progress 1\\rprogress 2\\r\\n")
    failing = [n for n in os.environ.get("FAKE_PIP_FAIL", "").split(",") if n]
    if any(a.split("=")[0] in failing or a in failing for a in args):
        print("ERROR: fake failure", file=sys.stderr)
        sys.exit(1)
    print("Successfully installed")
""")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake sd-scripts folder and a fake pip that records its calls; returns a function running setup."""
    sd = tmp_path / "sd-scripts"
    sd.mkdir()
    (sd / "requirements.txt").write_text("accelerate==1.6.0\n-e .\n")
    pip = tmp_path / "fake_pip.py"
    pip.write_text(FAKE_PIP)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_PIP_CALLS", str(calls))
    lines: list[str] = []

    def run(**kw):
        kw.setdefault("torch_version", "2.13.0")
        return setup_trainer(tmp_path / "venv", sd, log=lines.append, pip_command=[sys.executable, str(pip)],
                             venv_args=("--without-pip",), **kw)

    run.calls = lambda: [json.loads(x) for x in calls.read_text().splitlines()] if calls.exists() else []
    run.lines, run.sd, run.venv = lines, sd, tmp_path / "venv"
    return run


def test_torchvision_matches_torch():
    assert torchvision_for("2.13.0") == "0.28.0"
    assert torchvision_for("2.1.2+cu121") == "0.16.2"
    assert torchvision_for("2.4") == "0.19.0"
    assert torchvision_for("1.13.1") is None
    assert torchvision_for("nightly") is None


def test_setup_runs_every_step_in_order_then_skips_them(fake):
    report = fake()
    assert report.ran == ("venv", "torch", "sd-scripts", "extras", "optional:dadaptation", "optional:bitsandbytes",
                          "torchvision")
    assert report.warnings == ()
    assert report.env.python.exists() and report.env.setup_complete()
    calls = fake.calls()
    installs = [[a for a in c["args"] if not a.startswith("--")] for c in calls]
    assert installs[0][:3] == ["install", "torch==2.13.0", "torchvision==0.28.0"]
    assert "requirements.txt" in installs[1] and Path(calls[1]["cwd"]) == fake.sd  # `-e .` needs sd-scripts as cwd
    assert "lycoris-lora==3.4.0" in installs[2]
    assert [i[1] for i in installs[3:]] == ["dadaptation", "bitsandbytes"]
    constraints = fake.venv / tenv.CONSTRAINTS_FILE
    assert constraints.read_text().splitlines() == ["torch==2.13.0", "torchvision==0.28.0"]
    assert all(c["args"][c["args"].index("-c") + 1] == str(constraints) for c in calls)
    # output is streamed line by line, carriage returns split, and teed to the log file
    assert "progress 1" in fake.lines and "progress 2" in fake.lines
    assert "progress 2" in (fake.venv / tenv.LOG_FILE).read_text()
    assert any(line.startswith("$ ") and "torch==2.13.0" in line for line in fake.lines)

    again = fake()
    assert again.ran == () and len(again.skipped) == 7
    assert len(fake.calls()) == len(calls)  # nothing installed twice


def test_failed_step_is_resumed_and_finished_steps_are_not_repeated(fake, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_FAIL", "lycoris-lora")
    with pytest.raises(SetupFailed, match="installing extras") as info:
        fake()
    assert isinstance(info.value, LorakitError)
    assert "ERROR: fake failure" in str(info.value)  # the log's tail travels with the error
    state = json.loads((fake.venv / tenv.STATE_FILE).read_text())
    assert {k: v["status"] for k, v in state["steps"].items()} == {
        "venv": "done", "torch": "done", "sd-scripts": "done", "extras": "failed"}
    assert not TrainerEnvironment(fake.venv, fake.sd).setup_complete()

    monkeypatch.delenv("FAKE_PIP_FAIL")
    n = len(fake.calls())
    report = fake()
    assert report.skipped == ("venv", "torch", "sd-scripts")
    assert report.ran[0] == "extras"
    assert len(fake.calls()) == n + 3  # extras and the two optional packages


def test_optional_failures_are_warnings(fake, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_FAIL", "bitsandbytes")
    report = fake()
    assert report.env.setup_complete()
    assert len(report.warnings) == 1 and "bitsandbytes" in report.warnings[0]
    assert any("warning: optional package bitsandbytes" in line for line in fake.lines)
    monkeypatch.delenv("FAKE_PIP_FAIL")
    assert fake().ran == ("optional:bitsandbytes",)  # a failed optional package is tried again


def test_changed_requirements_or_torch_rerun_their_steps(fake):
    fake()
    (fake.sd / "requirements.txt").write_text("accelerate==1.7.0\n-e .\n")
    assert fake().ran == ("sd-scripts",)
    ran = fake(torch_version="2.12.1").ran
    assert ran == ("torch", "sd-scripts", "torchvision")  # the constraints changed too
    assert "torchvision==0.27.1" in fake.calls()[-2]["args"]


def test_a_deleted_venv_starts_over(fake):
    fake()
    fake.venv.joinpath("bin", "python").unlink()
    assert fake().ran[0] == "venv" and len(fake().skipped) == 7


def test_setup_reports_progress_and_cancels(fake):
    seen = []
    fake(progress=lambda done, total, msg: seen.append((done, total)))
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        fake(cancel=cancel)


def test_missing_sd_scripts_is_a_clear_error(tmp_path):
    with pytest.raises(LorakitError, match="git submodule update --init --recursive"):
        setup_trainer(tmp_path / "venv", tmp_path / "nothing", torch_version="2.13.0", log=print)


def test_run_logged_cancel_stops_the_process_group(tmp_path):
    cancel = threading.Event()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if line == "started":
            cancel.set()

    script = "import time; print('started', flush=True); time.sleep(60)"
    with pytest.raises(Cancelled):
        run_logged([sys.executable, "-c", script], log=log, log_file=tmp_path / "x.log", cancel=cancel)
    assert "started" in lines and "cancelled" in (tmp_path / "x.log").read_text()


def test_torchvision_shim_is_importable_and_inert_without_torchvision(tmp_path):
    files = install_torchvision_shim(tmp_path)
    assert [f.name for f in files] == [f"{tenv.SHIM_NAME}.py", f"{tenv.SHIM_NAME}.pth"]
    assert files[1].read_text() == f"import {tenv.SHIM_NAME}\n"
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import {tenv.SHIM_NAME} as s; "
            "import importlib.util; print(importlib.util.find_spec('torchvision') is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("True", "False")
    assert "Library(\"torchvision\", \"DEF\")" in files[0].read_text()


# --- doctor -------------------------------------------------------------------------------------------------

def _venv_with_current_python(tmp_path: Path) -> TrainerEnvironment:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return TrainerEnvironment(venv, REPO / "sd-scripts")


def test_doctor_on_a_python_without_torch_names_the_problems_and_fixes(tmp_path):
    env = _venv_with_current_python(tmp_path)
    report = doctor(env, repo_root=REPO)
    assert report.python_version == ".".join(map(str, sys.version_info[:3]))
    assert report.torch_version is None and not report.ok
    torch_problem = next(p for p in report.problems if "torch does not import" in p.what)
    assert torch_problem.severity == "error" and "pip install torch" in torch_problem.fix
    assert any("lycoris-lora" in p.what and "lycoris-lora==3.4.0" in p.fix for p in report.problems)
    assert any("bitsandbytes" in p.what and p.severity == "warning" for p in report.problems)
    assert report.attention == "none" and not report.cuda_available
    data = report.to_dict()
    assert data["ok"] is False and json.dumps(data)


def test_doctor_without_a_venv(tmp_path):
    report = doctor(TrainerEnvironment(tmp_path / "none", tmp_path / "sd-scripts"), repo_root=tmp_path)
    assert not report.ok
    assert "does not exist" in report.problems[0].what
    assert any("git submodule update --init --recursive" in p.fix for p in report.problems)


def test_report_from_probe_reads_a_gpu_machine(tmp_path):
    facts = {"python": "3.10.14", "torch": "2.4.1+cu121", "cuda": True, "sdpa": True, "device": "NVIDIA H100",
             "vram_total_mb": 81000, "vram_free_mb": 80000, "torchvision_ok": True, "bitsandbytes_ok": True,
             "packages": {"lycoris-lora": "3.4.0", "xformers": "0.0.28", "library": "0.0.0"}}
    env = TrainerEnvironment(tmp_path, tmp_path)
    report = tenv.report_from_probe(facts, env=env, problems=[], python=str(env.python))
    assert report.ok and report.problems == ()
    assert (report.device_name, report.vram_total_mb, report.attention) == ("NVIDIA H100", 81000, "xformers")

    small = tenv.report_from_probe({**facts, "vram_total_mb": 4096, "packages": {"lycoris-lora": "4.0.0",
                                                                                 "library": "0.0.0"}},
                                   env=env, problems=[], python="p")
    assert small.ok and {p.severity for p in small.problems} == {"warning"}
    whats = " ".join(p.what for p in small.problems)
    assert "4096 MB" in whats and "4.0.0" in whats and small.attention == "sdpa"

    # sd-scripts' scripts find `library` from their own folder, where Train Style runs them: a venv made without
    # `-e .` still trains, so it is a warning
    no_library = tenv.report_from_probe({**facts, "packages": {}}, env=env, problems=[], python="p")
    assert no_library.ok and any("-e ." in p.what and p.severity == "warning" for p in no_library.problems)
    broken = tenv.report_from_probe({**facts, "diffusers_ok": False, "diffusers_error": "ImportError: x"}, env=env,
                                    problems=[], python="p")
    assert not broken.ok and any("diffusers" in p.what and p.code == "TRAINER_PACKAGES" for p in broken.problems)


# --- the sd-scripts checkout ------------------------------------------------------------------------------------

def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def superproject(tmp_path: Path):
    """A repository whose `sd-scripts` gitlink pins the first commit of a small sub-repository."""
    sub = tmp_path / "upstream"
    sub.mkdir()
    _git(sub, "init", "-q")
    (sub / "a.txt").write_text("1")
    _git(sub, "add", "a.txt")
    _git(sub, "commit", "-qm", "one")
    first = _git(sub, "rev-parse", "HEAD")
    (sub / "a.txt").write_text("2")
    _git(sub, "commit", "-qam", "two")
    root = tmp_path / "ext"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "x.txt").write_text("x")
    _git(root, "add", "x.txt")
    _git(root, "update-index", "--add", "--cacheinfo", f"160000,{first},sd-scripts")
    _git(root, "commit", "-qm", "pin")
    return root, sub, first


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_check_submodule(superproject, tmp_path):
    root, sub, first = superproject
    assert tenv.pinned_commit(root) == first
    msg = check_submodule(root)
    assert "missing" in msg and f'cd "{root}" && git submodule update --init --recursive' in msg
    (root / "sd-scripts").mkdir()  # an uninitialised submodule is an empty folder
    assert "missing" in check_submodule(root)
    (root / "sd-scripts").rmdir()
    _git(tmp_path, "clone", "-q", str(sub), str(root / "sd-scripts"))
    msg = check_submodule(root)  # the clone is at the second commit
    assert f"needs {first[:12]}" in msg and "git submodule update --init --recursive" in msg
    _git(root / "sd-scripts", "checkout", "-q", first)
    assert check_submodule(root) is None
    # outside a git checkout (a zip download) the constant is the reference
    assert tenv.pinned_commit(tmp_path / "upstream" / "nowhere") == PINNED_SD_SCRIPTS


def test_this_repository_pins_the_documented_release():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    assert tenv.pinned_commit(REPO) == PINNED_SD_SCRIPTS


# --- the real trainer ------------------------------------------------------------------------------------------

@pytest.mark.skipif(not (REAL_VENV / "bin" / "python").exists(),
                    reason=f"no trainer venv at {REAL_VENV} (set TRAIN_STYLE_TRAINER_VENV; made by setup_trainer)")
def test_doctor_on_the_real_trainer():
    report = doctor(TrainerEnvironment(REAL_VENV, REPO / "sd-scripts"), repo_root=REPO)
    assert report.torch_version and report.torchvision_ok, report.problems
    assert report.lycoris_version == "3.4.0" and report.sdpa_available
    assert report.packages["transformers"] == "4.54.1" and report.packages["library"]
    assert all(p.severity == "warning" for p in report.problems if "sd-scripts" not in p.what), report.problems


@pytest.mark.skipif(not (REAL_VENV / "bin" / "python").exists() or not os.environ.get("LORAKIT_CLIP_BPE"),
                    reason="needs the trainer venv and LORAKIT_CLIP_BPE=<open_clip>/bpe_simple_vocab_16e6.txt.gz")
def test_builder_makes_the_offline_tokenizer_sd_scripts_loads(tmp_path):
    py = REAL_VENV / "bin" / "python"
    subprocess.run([str(py), str(REPO / "tests" / "sd15_builder.py"), str(tmp_path), "--tokenizer-only"],
                   check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    code = ("import sys; from library.strategy_sd import SdTokenizeStrategy as S; "
            "t = S(False, None, tokenizer_cache_dir=sys.argv[1]).tokenizer; print(t('a photo of a cat')['input_ids'])")
    out = subprocess.run([str(py), "-c", code, str(tmp_path / "tokenizers")], check=True, capture_output=True,
                         text=True, cwd=REPO / "sd-scripts", env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip().splitlines()[-1] == "[49406, 320, 1125, 539, 320, 2368, 49407]"
