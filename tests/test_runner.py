"""The runner as a black box on real processes: a supervisor process, a trainer process replaying a recorded
sd-scripts log, signals to process groups, and the files they leave."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from lib_lorakit.train.progress import LogReader
from lib_lorakit.train.runner import Runs, RunSpec

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "data" / "sd_scripts_lora_run.log"
LOG = RECORDED if RECORDED.is_file() else HERE / "data" / "synthetic_lora_run.log"


def make_run(project, mode: str, delay: float = 0.01):
    runs = Runs(project)
    run_dir = runs.new_dir(f"test-{mode}")
    spec = RunSpec(argv=(sys.executable, str(HERE / "fake_trainer.py"), mode, str(LOG), str(run_dir), "demo",
                         str(delay)), cwd=str(run_dir), output_name="demo")
    snap = runs.create(run_dir, spec, files={"args.toml": "# test\n"}, meta={"preset": "test"})
    return runs, snap


def wait_until_running(runs: Runs, run_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while runs.get(run_id).state != "running" and time.monotonic() < deadline:
        time.sleep(0.1)


def expected_progress() -> LogReader:
    reader = LogReader()
    reader.feed(LOG.read_bytes().decode("utf-8", "replace"))
    reader.flush()
    return reader


def test_a_successful_run_reports_progress_files_and_the_log(project):
    runs, snap = make_run(project, "success")
    assert snap.state == "queued" and (snap.dir / "args.toml").is_file()
    runs.start(snap.id)
    final = runs.wait(snap.id, timeout=60)
    want = expected_progress()
    assert final.state == "succeeded", final
    assert final.progress["step"] == final.progress["total"] == want.progress.total > 0
    assert final.progress["loss"] == want.progress.loss
    assert "demo.safetensors" in final.files
    assert (snap.dir / "train.log").read_bytes() == LOG.read_bytes()  # teed byte for byte, \r included
    assert [s for s, _ in final.losses] == [s for s, _ in want.losses]


def test_a_crash_is_failed_with_the_log_tail_and_advice(project):
    runs, snap = make_run(project, "crash")
    runs.start(snap.id)
    final = runs.wait(snap.id, timeout=60)
    assert final.state == "failed" and "exited with code 1" in final.error
    assert "out of memory" in final.advice and "train_batch_size" in final.advice
    assert any("OutOfMemoryError" in line for line in final.log_tail)


def test_exit_zero_without_the_final_file_is_a_failure(project):
    runs, snap = make_run(project, "nofile")
    runs.start(snap.id)
    final = runs.wait(snap.id, timeout=60)
    assert final.state == "failed" and "saved no LoRA" in final.error


def test_stop_terminates_the_trainer_group_and_keeps_saved_files(project):
    runs, snap = make_run(project, "hang")
    runs.start(snap.id)
    wait_until_running(runs, snap.id)
    time.sleep(0.5)
    import json

    trainer_pid = json.loads((snap.dir / "run.json").read_text())["pid"]
    runs.stop(snap.id)
    final = runs.wait(snap.id, timeout=60)
    assert final.state == "stopped" and "kept" in final.error
    with pytest.raises(ProcessLookupError):
        os.kill(trainer_pid, 0)
    assert all((snap.dir / f).is_file() for f in final.files)


def test_a_run_whose_supervisor_died_unwatched_is_marked_interrupted(project):
    runs, snap = make_run(project, "hang")
    runs.start(snap.id)
    wait_until_running(runs, snap.id)
    while not ((snap.dir / "train.log").is_file() and (snap.dir / "train.log").stat().st_size):  # output first
        time.sleep(0.05)
    import json

    state = json.loads((snap.dir / "run.json").read_text())
    os.kill(state["supervisor_pid"], signal.SIGKILL)  # as if the machine or webui died
    os.killpg(state["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while Runs(project).get(snap.id).state == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    again = Runs(project).get(snap.id)  # a fresh reader, as after a restart
    assert again.state == "interrupted" and "nobody was watching" in again.error
    assert again.log_tail


def test_reattach_from_another_process_sees_live_progress(project):
    runs, snap = make_run(project, "success", delay=0.06)
    runs.start(snap.id)
    seen = set()
    total = expected_progress().progress.total
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = Runs(project).get(snap.id)  # a fresh reader each time, as another process would be
        seen.add((s.state, s.progress.get("step")))
        if not s.active or any(state == "running" and step and step < total for state, step in seen):
            break
        time.sleep(0.05)
    midway = {step for state, step in seen if state == "running" and step and step < total}
    assert midway, seen  # progress was visible while it ran, not only at the end
    runs.stop(snap.id)  # seen: no need to wait for the rest of the fake run
    while Runs(project).get(snap.id).active and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_supervisor_that_died_before_sd_scripts_spoke_shows_its_own_log(tmp_path):
    import json
    import subprocess

    from lib_lorakit.train.runner import _reconcile

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("Train Style unloaded the webui's model before training: RAM 6 GB -> 1 GB\n")
    (run_dir / "supervisor.log").write_text("Traceback (most recent call last):\nOSError: no space left on device\n")
    data = {"state": "starting", "supervisor_pid": gone.pid}
    (run_dir / "run.json").write_text(json.dumps(data))
    seen = _reconcile(run_dir, data)
    assert seen["state"] == "interrupted"
    assert "OSError: no space left on device" in seen["log_tail"] and seen["log_tail"][0].startswith("Train Style")
