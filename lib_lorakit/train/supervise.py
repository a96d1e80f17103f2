"""The process that watches one training run: `python -m lib_lorakit.train.supervise RUN_DIR`.

It starts sd-scripts (without a shell, in its own process group), tees its output to `train.log`, turns the
output into progress and writes `run.json` atomically as it goes. It runs in its own session, so it and the
training outlive a page reload or a restart of the webui; whoever starts again reads `run.json`.
SIGTERM/SIGINT mean Stop: the trainer's group is terminated, then killed after a grace period; files already
saved stay.
"""

from __future__ import annotations

import codecs
import datetime as _dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..fsutil import atomic_write_json, read_json
from .progress import LogReader, advice_for

STOP_GRACE_S = 30.0
WRITE_INTERVAL_S = 0.5


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Supervisor:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.spec = read_json(self.run_dir / "launch.json")
        self.state = read_json(self.run_dir / "run.json", default={}) or {}
        self.reader = LogReader()
        self.child: subprocess.Popen | None = None
        self.stop_requested = False
        self._last_write = 0.0

    # 1. start the trainer in a group of its own
    def start(self) -> None:
        env = {**os.environ, **self.spec.get("env", {})}
        for key in self.spec.get("unset", []):
            env.pop(key, None)
        self.child = subprocess.Popen(self.spec["argv"], cwd=self.spec["cwd"], env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.state.update(state="running", supervisor_pid=os.getpid(), pid=self.child.pid, started=now())
        self.write(force=True)

    # 2. read, tee and parse until the trainer closes its output
    def pump(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with open(self.run_dir / "train.log", "ab") as log:
            fd = self.child.stdout.fileno()
            while chunk := os.read(fd, 65536):
                log.write(chunk)
                log.flush()
                self.reader.feed(decoder.decode(chunk))
                self.write()
            self.reader.feed(decoder.decode(b"", final=True))
            self.reader.flush()

    # 3. the verdict: exit 0 AND the final file present
    def finish(self) -> None:
        rc = self.child.wait()
        final = Path(self.spec["output_dir"]) / f"{self.spec['output_name']}.safetensors"
        self.state.update(returncode=rc, finished=now())
        if self.stop_requested:
            self.state.update(state="stopped", error="Stopped by the user. Files saved before the stop are kept.")
        elif rc == 0 and final.is_file():
            self.state.update(state="succeeded", error="")
        else:
            why = ("sd-scripts exited normally but saved no LoRA" if rc == 0
                   else f"sd-scripts exited with code {rc}")
            self.state.update(state="failed", error=why, advice=advice_for(self.reader.tail))
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        now_s = time.monotonic()
        if not force and now_s - self._last_write < WRITE_INTERVAL_S:
            return
        self._last_write = now_s
        out = Path(self.spec["output_dir"])
        name = self.spec["output_name"]
        self.state.update(
            progress=self.reader.progress.to_dict(), losses=self.reader.losses[-5000:],
            log_tail=self.reader.tail[-40:],
            files=sorted(p.name for p in out.glob(f"{name}*.safetensors")) if out.is_dir() else [],
            samples=sorted(p.relative_to(out).as_posix() for p in (out / "sample").glob("*.png"))
            if (out / "sample").is_dir() else [])
        atomic_write_json(self.run_dir / "run.json", self.state)

    def request_stop(self, *_: object) -> None:
        if self.stop_requested or self.child is None:
            return
        self.stop_requested = True
        _signal_group(self.child.pid, signal.SIGTERM)
        threading.Timer(STOP_GRACE_S, _signal_group, args=(self.child.pid, signal.SIGKILL)).start()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str]) -> int:
    sup = Supervisor(Path(argv[0]))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, sup.request_stop)
    try:
        sup.start()
    except OSError as e:
        sup.state.update(state="failed", error=f"Could not start the trainer: {e}", finished=now())
        sup.write(force=True)
        return 1
    sup.pump()
    sup.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
