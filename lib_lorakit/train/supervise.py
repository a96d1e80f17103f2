"""The process that watches one training run: `python -m lib_lorakit.train.supervise RUN_DIR`.

It starts sd-scripts (without a shell, in its own process group), tees its output to `train.log`, turns the
output into progress and writes `run.json` atomically as it goes. It runs in its own session, so it and the
training outlive a page reload or a restart of the webui; whoever starts again reads `run.json`.
SIGTERM/SIGINT mean Stop: the trainer's group is terminated, then killed after a grace period; files already
saved stay. A stop that comes while sd-scripts writes a LoRA file or a training state waits for that save to
finish (at most STOP_SAVE_WAIT_S, then it stops anyway) and says so: a state cut in half cannot be resumed from.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .. import clock, procs
from ..errors import LorakitError
from ..fsutil import atomic_write_json, read_json
from ..tomlio import read_toml
from .progress import LogReader, Save, advice_for
from .states import check_state, safetensors_problem, state_folders

STOP_GRACE_S = 30.0
WRITE_INTERVAL_S = 0.5
# How long a stop waits for a save in progress (TRAIN_STYLE_STOP_SAVE_WAIT_S): a LoRA's state with its optimizer
# is written in seconds even for SDXL; a save that takes longer than this is stuck.
STOP_SAVE_WAIT_S = float(os.environ.get("TRAIN_STYLE_STOP_SAVE_WAIT_S") or 120)
RECENT_WRITE_NS = 2_000_000_000  # a state folder written this recently and still incomplete is being saved


class Supervisor:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.spec = read_json(self.run_dir / "launch.json")
        self.state = read_json(self.run_dir / "run.json", default={}) or {}
        self.reader = LogReader()
        for point in _val_points(self.state.get("val_losses")):  # a resumed run keeps its earlier checks
            self.reader.add_validation(*point)
        self.child: subprocess.Popen | None = None
        self.stop_requested = False
        self.stop_note = ""  # what the stop waited for, for the verdict
        self._save_state: bool | None = None
        self._last_write = 0.0
        self._lock = threading.Lock()  # the stop thread writes run.json too
        self._stopper: threading.Thread | None = None

    # 1. start the trainer in a group of its own
    def start(self) -> None:
        env = {**os.environ, **self.spec.get("env", {})}
        for key in self.spec.get("unset", []):
            env.pop(key, None)
        self.child = procs.start(self.spec["argv"], env=env, cwd=self.spec["cwd"])
        self.state.update(state="running", supervisor_pid=os.getpid(), pid=self.child.pid, started=clock.now_iso())
        self.write(force=True)

    # 2. read, tee and parse until the trainer closes its output
    def pump(self) -> None:
        with open(self.run_dir / "train.log", "ab") as log:
            procs.pump(self.child.stdout, on_line=self._on_line, tee=log)

    def _on_line(self, line: str) -> None:
        self.reader.feed_line(line)
        self.write()

    # 3. the verdict: exit 0 AND the final file present
    def finish(self) -> None:
        rc = self.child.wait()
        final = Path(self.spec["output_dir"]) / f"{self.spec['output_name']}.safetensors"
        self.state.update(returncode=rc, finished=clock.now_iso())
        self.state.pop("notice", None)
        if self.stop_requested and not (rc == 0 and final.is_file()):  # not one that finished while the stop waited
            self.state.update(state="stopped", error="Stopped by the user. Files saved before the stop are kept."
                              + (f" {self.stop_note}" if self.stop_note else ""))
        elif rc == 0 and final.is_file():
            self.state.update(state="succeeded", error="")
        else:
            why = ("sd-scripts exited normally but saved no LoRA" if rc == 0
                   else f"sd-scripts exited with code {rc}")
            self.state.update(state="failed", error=why, advice=advice_for(self.reader.tail))
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        with self._lock:
            self._write(force)

    def _write(self, force: bool) -> None:
        now_s = clock.monotonic()
        if not force and now_s - self._last_write < WRITE_INTERVAL_S:
            return
        self._last_write = now_s
        out = Path(self.spec["output_dir"])
        name = self.spec["output_name"]
        self.state.update(
            progress=self.reader.progress.to_dict(), losses=self.reader.losses[-5000:],
            val_losses=self.reader.val_losses[-5000:],
            log_tail=self.reader.tail[-40:],
            files=sorted(p.name for p in out.glob(f"{name}*.safetensors")) if out.is_dir() else [],
            samples=sorted(p.relative_to(out).as_posix() for p in (out / "sample").glob("*.png"))
            if (out / "sample").is_dir() else [])
        atomic_write_json(self.run_dir / "run.json", self.state)

    def request_stop(self, *_: object) -> None:
        """Stop (signal handler): at once, or once the save sd-scripts is writing has finished."""
        if self.stop_requested or self.child is None:
            return
        self.stop_requested = True
        # not a daemon: the supervisor stays until the trainer's group is gone, even after the verdict is written
        self._stopper = threading.Thread(target=self._stop_after_save, name="stop-after-save")
        self._stopper.start()

    def _stop_after_save(self) -> None:
        saving = self.saving()
        if saving is not None:
            what = saving.describe()
            with self._lock:
                self.state["notice"] = (f"Stop requested while sd-scripts saves {what}: waiting for the save to "
                                        f"finish (at most {STOP_SAVE_WAIT_S:.0f} s) so that it is not left "
                                        "incomplete.")
                self._write(force=True)
            deadline = clock.monotonic() + STOP_SAVE_WAIT_S
            while saving is not None and clock.monotonic() < deadline and self.child.poll() is None:
                time.sleep(0.2)
                saving = self.saving()
            if self.child.poll() is not None:
                return  # it ended by itself meanwhile
            self.stop_note = (f"sd-scripts was still saving {what} after {STOP_SAVE_WAIT_S:.0f} s and was stopped "
                              "anyway: that save is incomplete, and Resume skips it." if saving is not None else
                              f"The stop waited for sd-scripts to finish saving {what}.")
        procs.stop_group(self.child, grace_s=STOP_GRACE_S)

    def saving(self) -> Save | None:
        """The save in progress: the one sd-scripts' output announced and that is not on disk whole yet, or else a
        state folder written in the last moments and still incomplete (its announcement may still be in the pipe)."""
        out = Path(self.spec["output_dir"])
        current = self.reader.saving
        if current is not None and current.kind == "model" and current.path and not self._expects_state():
            return None if not safetensors_problem(out / Path(current.path).name) else current
        if current is not None:
            return current
        now = time.time_ns()
        for folder in state_folders(out):
            if now - _newest_mtime_ns(folder) < RECENT_WRITE_NS and not check_state(folder).complete:
                return Save("state", str(folder))
        return None

    def _expects_state(self) -> bool:
        """Whether a state save follows each model save (`save_state` in the run's arguments)."""
        if self._save_state is None:
            self._save_state = bool(_arg(self.run_dir / "args.toml", "save_state"))
        return self._save_state


def _val_points(value: object) -> list[tuple[int, int, float]]:
    """run.json's (epoch, step, loss) validation points, those of the right kind."""
    if not isinstance(value, list):
        return []
    return [(int(p[0]), int(p[1]), float(p[2])) for p in value if isinstance(p, list) and len(p) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in p)]


def _newest_mtime_ns(folder: Path) -> int:
    """When the folder or a file in it last changed (a file being written keeps moving its mtime)."""
    times = []
    try:
        entries = list(folder.iterdir())
    except OSError:  # removed meanwhile (sd-scripts drops old states)
        return 0
    for path in (folder, *entries):
        try:
            times.append(path.stat().st_mtime_ns)
        except OSError:
            continue
    return max(times, default=0)


def _arg(path: Path, key: str) -> object:
    """One key of the flattened arguments TOML (None when absent or unreadable)."""
    try:
        sections = read_toml(path)
    except (OSError, ValueError, LorakitError):  # the stop goes through whatever the file holds
        return None
    flat = {k: v for body in sections.values() if isinstance(body, dict) for k, v in body.items()}
    return flat.get(key, sections.get(key))


def main(argv: list[str]) -> int:
    sup = Supervisor(Path(argv[0]))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, sup.request_stop)
    try:
        sup.start()
    except OSError as e:
        sup.state.update(state="failed", error=f"Could not start the trainer: {e}", finished=clock.now_iso())
        sup.write(force=True)
        return 1
    sup.pump()
    sup.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
