"""Stop and resume that survive a save (issue 9, item 4).

sd-scripts writes a state file by file (train_state.json first); a process killed mid-save leaves a folder Resume
must not pick. Here: which folders are complete (real zips, real safetensors, truncated copies, nothing ever
unpickled), which one Resume takes and what it says, the supervisor waiting for a save before it stops (real
processes: tests/fake_saving_trainer.py saves slowly), the bound on that wait, and sd-scripts' own order of saving
and removing states.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from pathlib import Path

import pytest
from fake_saving_trainer import safetensors_bytes, torch_zip
from test_security_train import evil_ckpt_bytes

from lib_lorakit.errors import LorakitError
from lib_lorakit.host import StandaloneHost
from lib_lorakit.tomlio import read_toml, write_toml
from lib_lorakit.train.environment import TrainerEnvironment
from lib_lorakit.train.progress import LogReader
from lib_lorakit.train.runner import Runs, RunSpec
from lib_lorakit.train.service import TrainingService
from lib_lorakit.train.states import check_state, choose_state
from lib_lorakit.ui.render_train import run_html

HERE = Path(__file__).resolve().parent
SD_SCRIPTS = HERE.parent / "sd-scripts"


def write_state(folder: Path, step: int, *, optimizer: bytes | None = None) -> Path:
    """A state folder as accelerate writes it, in its order (train_state.json first)."""
    folder.mkdir(parents=True)
    (folder / "train_state.json").write_text(json.dumps({"current_epoch": 1, "current_step": step}))
    (folder / "model.safetensors").write_bytes(safetensors_bytes())
    (folder / "optimizer.bin").write_bytes(torch_zip(5000) if optimizer is None else optimizer)
    (folder / "scheduler.bin").write_bytes(torch_zip(10))
    (folder / "random_states_0.pkl").write_bytes(torch_zip(20))
    return folder


def test_a_state_is_complete_only_with_every_file_whole(tmp_path):
    whole = write_state(tmp_path / "demo-step00000002-state", 2)
    assert check_state(whole).complete and check_state(whole).step == 2
    cases = {
        "optimizer.bin is truncated": lambda f: (f / "optimizer.bin").write_bytes(torch_zip(5000)[:3000]),
        "scheduler.bin is missing": lambda f: (f / "scheduler.bin").unlink(),
        "random_states_0.pkl is missing": lambda f: (f / "random_states_0.pkl").unlink(),
        "random_states_0.pkl is empty": lambda f: (f / "random_states_0.pkl").write_bytes(b""),
        "model.safetensors is truncated": lambda f: (f / "model.safetensors").write_bytes(safetensors_bytes()[:-9]),
        "train_state.json cannot be read": lambda f: (f / "train_state.json").write_text("{"),
        "optimizer.bin is not a torch archive": lambda f: (f / "optimizer.bin").write_bytes(_zip_without_pickle()),
    }
    for i, (problem, damage) in enumerate(cases.items()):
        folder = write_state(tmp_path / f"case{i}-state", 4)
        damage(folder)
        assert problem in check_state(folder).problem, (problem, check_state(folder))
    # the folder: train_state.json beside a truncated optimizer.bin, the rest never written
    killed = tmp_path / "killed-state"
    killed.mkdir()
    (killed / "train_state.json").write_text(json.dumps({"current_step": 4}))
    (killed / "model.safetensors").write_bytes(safetensors_bytes())
    (killed / "optimizer.bin").write_bytes(torch_zip(5000)[:1000])
    assert "optimizer.bin is truncated" in check_state(killed).problem


def _zip_without_pickle() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", b"not torch")
    return buf.getvalue()


def test_a_folder_mixing_two_saves_is_incomplete(tmp_path):
    """A later run killed mid-save in the same folder leaves the old optimizer.bin behind a new train_state.json."""
    folder = write_state(tmp_path / "demo-step00000004-state", 4)
    old = time.time() - 600
    for name in ("optimizer.bin", "scheduler.bin"):
        os.utime(folder / name, (old, old))
    assert "older than train_state.json" in check_state(folder).problem


def test_checking_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", evil_ckpt_bytes(marker))
    folder = write_state(tmp_path / "evil-state", 2, optimizer=buf.getvalue())
    (folder / "random_states_0.pkl").write_bytes(evil_ckpt_bytes(marker))  # a bare pickle, as old accelerate wrote
    assert check_state(folder).complete
    assert not marker.exists()


def make_run(project, *, states: dict[int, str]) -> tuple[Runs, str]:
    """A stopped run whose folder holds states at the given steps ("whole" or "killed")."""
    runs = Runs(project)
    run_dir = runs.new_dir("demo")
    write_toml(run_dir / "args.toml", {"model": {"pretrained_model_name_or_path": "m.safetensors"},
                                       "saving": {"output_dir": str(run_dir), "output_name": "demo",
                                                  "save_state": True}})
    snap = runs.create(run_dir, RunSpec(argv=("true",), cwd=str(run_dir), output_name="demo"), files={}, meta={})
    runs.mark(snap.id, "stopped", error="Stopped by the user.")
    for step, kind in states.items():
        folder = write_state(run_dir / f"demo-step{step:08d}-state", step)
        if kind == "killed":
            (folder / "optimizer.bin").write_bytes(torch_zip(5000)[:2000])
            (folder / "scheduler.bin").unlink()
            (folder / "random_states_0.pkl").unlink()
    return runs, snap.id


def service_for(tmp_path: Path, home: Path) -> TrainingService:
    host = StandaloneHost(home=home, lora=tmp_path / "lora", models=tmp_path / "models")
    return TrainingService(host, trainer=TrainerEnvironment(tmp_path / "venv", tmp_path / "sd"))


def test_resume_takes_the_newest_complete_state_and_says_which_and_why(tmp_path, workspace, project):
    runs, run_id = make_run(project, states={2: "whole", 4: "killed"})
    snap = service_for(tmp_path, workspace.home).resume(project, run_id, queue=False)
    args = read_toml(snap.dir / "args.toml")
    assert args["resume"] == str(snap.dir / "demo-step00000002-state") and args["skip_until_initial_step"] is True
    assert snap.state == "queued" and snap.meta["resumed_from"] == "demo-step00000002-state"
    note = snap.meta["resume_note"]
    assert "demo-step00000002-state (step 2)" in note and "skipped demo-step00000004-state" in note
    assert "optimizer.bin is truncated" in note
    assert "skipped demo-step00000004-state" in run_html(snap)  # the tab shows it


def test_resume_with_only_interrupted_saves_refuses_with_their_reasons(tmp_path, workspace, project):
    runs, run_id = make_run(project, states={2: "killed"})
    with pytest.raises(LorakitError, match="no complete saved state.*demo-step00000002-state: optimizer.bin"):
        service_for(tmp_path, workspace.home).resume(project, run_id, queue=False)
    assert "resume" not in read_toml(runs.dir(run_id) / "args.toml")
    assert choose_state(runs.dir(run_id)).state is None


def test_the_log_reader_follows_saves_in_the_recorded_run():
    reader = LogReader()
    seen = []
    text = (HERE / "data" / "sd_scripts_lora_run.log").read_text(errors="replace")
    for line in text.replace("\r", "\n").split("\n"):
        reader.feed_line(line)
        if line.startswith(("Optimizer state saved", "Random states saved", "saving checkpoint", "model saved")):
            seen.append((line.split(" in ")[0].split(":")[0], reader.saving and reader.saving.kind))
    assert seen[:3] == [("saving checkpoint", "model"), ("Optimizer state saved", "state"),
                        ("Random states saved", None)]
    assert seen[-2:] == [("saving checkpoint", "model"), ("model saved.", None)]


def test_a_run_resumed_past_an_epoch_counts_from_where_it_resumed():
    """sd-scripts v0.10.1 restarts its global step after skipped epochs (resumed at step 4 of 6 with 3 batches an
    epoch: its bar runs 0/5, 1/5, 2/5 and training ends with the epochs); the run is at 6 of 6 nonetheless."""
    reader = LogReader()
    for line in ("  num batches per epoch / 1epochのバッチ数: 3", "skipping 4 steps / 4ステップをスキップします",
                 "skipping epoch 1 because initial_step (multiplied) is 4",
                 "steps:   0%|          | 0/5 [00:00<?, ?it/s]",
                 "steps:  20%|##        | 1/5 [00:02<00:08,  2.00s/it, avr_loss=0.5]",
                 "steps:  40%|####      | 2/5 [00:04<00:06,  2.00s/it, avr_loss=0.4]"):
        reader.feed_line(line)
    assert (reader.progress.step, reader.progress.total) == (6, 6)
    assert [s for s, _ in reader.losses] == [5, 6]


# --- the supervisor: a stop during a save, on real processes ------------------------------------------------------
def start_saving_run(project, save_seconds: float):
    runs = Runs(project)
    run_dir = runs.new_dir("saves")
    write_toml(run_dir / "args.toml", {"saving": {"save_state": True}})
    spec = RunSpec(argv=(sys.executable, str(HERE / "fake_saving_trainer.py"), str(run_dir), "demo",
                         str(save_seconds), "4", "6"), cwd=str(run_dir), output_name="demo")
    snap = runs.create(run_dir, spec, files={}, meta={})
    runs.start(snap.id)
    return runs, snap


def wait_for_log(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_a_stop_during_a_state_save_waits_for_it_and_says_so(project):
    runs, snap = start_saving_run(project, save_seconds=3)
    wait_for_log(snap.dir / "train.log", "Saving current state to")
    wait_for_log(snap.dir / "train.log", "step00000004-state/train_state.json")  # the slow save has begun
    runs.stop(snap.id)
    notices = set()
    deadline = time.monotonic() + 60
    while (current := runs.get(snap.id)).active and time.monotonic() < deadline:
        notices.add(current.notice)
        time.sleep(0.05)
    final = runs.get(snap.id)
    assert final.state == "stopped", final
    assert "waited for sd-scripts to finish saving the training state demo-step00000004-state" in final.error
    assert any("waiting for the save to finish" in n for n in notices)
    assert final.notice == ""
    assert check_state(snap.dir / "demo-step00000004-state").complete  # not cut in half
    assert "demo.safetensors" not in final.files  # it stopped after the save, before the end


def test_a_save_that_outlasts_the_bound_is_stopped_and_resume_skips_it(project, tmp_path, workspace, monkeypatch):
    monkeypatch.setenv("TRAIN_STYLE_STOP_SAVE_WAIT_S", "1")  # the supervisor process reads it
    runs, snap = start_saving_run(project, save_seconds=60)
    wait_for_log(snap.dir / "train.log", "step00000004-state/train_state.json")
    runs.stop(snap.id)
    final = runs.wait(snap.id, timeout=60)
    assert final.state == "stopped" and "was still saving" in final.error and "Resume skips it" in final.error
    assert not check_state(snap.dir / "demo-step00000004-state").complete
    resumed = service_for(tmp_path, workspace.home).resume(project, snap.id, queue=False)
    assert resumed.meta["resumed_from"] == "demo-step00000002-state"
    assert "skipped demo-step00000004-state: optimizer.bin is truncated" in resumed.meta["resume_note"]


def test_a_stop_outside_a_save_is_at_once(project):
    runs, snap = start_saving_run(project, save_seconds=30)
    wait_for_log(snap.dir / "train.log", "Random states saved in")  # the step-2 save is over
    wait_for_log(snap.dir / "train.log", "3/6")
    runs.stop(snap.id)
    final = runs.wait(snap.id, timeout=20)
    assert final.state == "stopped" and "waited" not in final.error
    assert not (snap.dir / "demo-step00000004-state").exists()


# --- sd-scripts removes an old state only after the new one is saved -----------------------------------------------
@pytest.mark.skipif(not (SD_SCRIPTS / "library" / "train_util.py").is_file(), reason="needs the sd-scripts submodule")
def test_sd_scripts_saves_the_new_state_before_removing_an_old_one():
    """So `save_last_n_*_state` ≥ 1 never leaves a run without a complete state: when a save is cut, the older
    state is still there (read from the pinned sources, as a future sd-scripts could reorder it)."""
    tree = ast.parse((SD_SCRIPTS / "library" / "train_util.py").read_text(encoding="utf-8"))
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    for name in ("save_and_remove_state_on_epoch_end", "save_and_remove_state_stepwise"):
        calls = [c for c in ast.walk(functions[name]) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)]
        save = min(c.lineno for c in calls if c.func.attr == "save_state")
        remove = min(c.lineno for c in calls if c.func.attr == "rmtree")
        assert save < remove, name
