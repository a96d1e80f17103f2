"""The training queue: one run at a time on the GPU, in the order the user chose, kept on disk.

`tick()` does one step of the scheduling and is safe to call from anywhere (a worker thread in the webui or
the app, the CLI's `--wait` loop): if nothing runs, it frees the GPU of the webui's model and starts the next
queued run; when the queue is empty and the last run has ended, it gives the model back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import gpu_use
from ..errors import LorakitError, NotFound
from ..fsutil import atomic_write_json, read_json
from ..host import Host
from ..project import Workspace
from .registration import register_run
from .runner import Runs, RunSnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueEntry:
    project: str
    run: str

    def to_dict(self) -> dict:
        return {"project": self.project, "run": self.run}


class TrainQueue:
    def __init__(self, host: Host, unload_model: bool = True,
                 on_finished: Optional[Callable[[QueueEntry, RunSnapshot], None]] = None):
        self.host = host
        self.unload_model = unload_model
        self.on_finished = on_finished  # called once for each run the queue started, when it has ended
        self.file = Path(host.projects_home()) / ".train-queue.json"
        self._lock = threading.RLock()

    # --- the order ----------------------------------------------------------------------------------------------
    def entries(self) -> list[QueueEntry]:
        data = read_json(self.file, default={}) or {}
        return [QueueEntry(**e) for e in data.get("order", [])]

    def _save(self, entries: list[QueueEntry], **extra: object) -> None:
        data = read_json(self.file, default={}) or {}
        data.update(order=[e.to_dict() for e in entries], **extra)
        atomic_write_json(self.file, data)

    def add(self, project: str, run: str) -> None:
        with self._lock:
            entries = self.entries()
            if QueueEntry(project, run) not in entries:
                entries.append(QueueEntry(project, run))
            self._save(entries)

    def remove(self, project: str, run: str) -> None:
        with self._lock:
            self._save([e for e in self.entries() if e != QueueEntry(project, run)])

    def move(self, project: str, run: str, offset: int) -> None:
        """Move a waiting run up (negative) or down (positive) the queue."""
        with self._lock:
            entries = self.entries()
            entry = QueueEntry(project, run)
            if entry not in entries:
                raise NotFound(f"Run {run} of {project} is not in the queue.")
            i = entries.index(entry)
            j = max(0, min(len(entries) - 1, i + offset))
            entries.insert(j, entries.pop(i))
            self._save(entries)

    def listing(self) -> list[dict]:
        """The queue in order, each entry with its run's state (entries whose run is gone are left out)."""
        rows = []
        for entry in self.entries():
            try:
                rows.append({**entry.to_dict(), "state": self.snapshot(entry).state})
            except LorakitError as e:  # the next tick drops it from the queue (and says so)
                log.debug("Train Style queue: not listing run %s of %s: %s", entry.run, entry.project, e)
                continue
        return rows

    def stop(self, project: str, run: str) -> RunSnapshot:
        """Stop a run (or cancel it while it waits) and take it out of the queue."""
        with self._lock:
            snap = Runs(Workspace(self.host.projects_home()).open(project)).stop(run)
            self.remove(project, run)
            return snap

    def snapshot(self, entry: QueueEntry) -> RunSnapshot:
        return Runs(Workspace(self.host.projects_home()).open(entry.project)).get(entry.run)

    def training_message(self) -> Optional[str]:
        """Why the GPU is taken, if a queued run is training now (shown when the webui tries to generate)."""
        for entry in self.entries():
            try:
                snap = self.snapshot(entry)
            except LorakitError as e:
                log.debug("Train Style queue: run %s of %s cannot be read: %s", entry.run, entry.project, e)
                continue
            if snap.state in ("starting", "running"):
                p = snap.progress
                return (f"Train Style is training on this GPU (project {entry.project}, run {entry.run}, step "
                        f"{p.get('step', 0)}/{p.get('total', '?')}). Generate when it has finished, or stop the "
                        "run in the Train Style tab.")
        return None

    # --- scheduling ---------------------------------------------------------------------------------------------
    def tick(self) -> Optional[RunSnapshot]:
        """Start the next run if none is active; give the GPU back when all is done. Returns the active run."""
        with self._lock:
            self._report_finished()
            pending: list[QueueEntry] = []
            ready: list[QueueEntry] = []
            for entry in self.entries():
                try:
                    snap = self.snapshot(entry)
                except LorakitError as e:  # NotFound too: the project or run was deleted
                    log.warning("Train Style queue: dropped run %s of %s from the queue: %s", entry.run,
                                entry.project, e)
                    continue
                if snap.state in ("starting", "running"):
                    return snap
                if snap.state == "queued":
                    blocked = self._dependency(entry, snap)
                    if blocked == "wait":
                        pending.append(entry)  # stays in line, not startable yet
                    elif blocked:
                        Runs(Workspace(self.host.projects_home()).open(entry.project)).mark(
                            entry.run, "failed", error=blocked, advice="Resume the run it waits for (or train it "
                            "again); then Resume this one, which never started, to queue it again.")
                    else:
                        pending.append(entry)
                        ready.append(entry)
            self._save(pending)
            if ready:
                return self._start(ready[0])
            if (read_json(self.file, default={}) or {}).get("model_unloaded"):
                self.host.reload_model()
                self._save(pending, model_unloaded=False)
            return None

    def _dependency(self, entry: QueueEntry, snap: RunSnapshot) -> str:
        """For a run with `depends_on` in its meta (e.g. stage 2 of a differential training): "" when it may
        start (that run succeeded), "wait" while that run is still queued or training, else why it never will."""
        dep = snap.meta.get("depends_on")
        if not dep:
            return ""
        try:
            other = Runs(Workspace(self.host.projects_home()).open(entry.project)).get(dep)
        except LorakitError:
            return f"Run {entry.run} waits for run {dep}, which no longer exists; it did not start."
        if other.state == "succeeded":
            return ""
        if other.state == "queued" and QueueEntry(entry.project, dep) not in self.entries():
            return (f"Run {entry.run} did not start: it needs run {dep} to succeed first, and that run was taken "
                    "out of the queue before it started.")
        if other.active:
            return "wait"
        return (f"Run {entry.run} did not start: it needs run {dep} to succeed first, and that run is "
                f"{other.state}" + (f" ({other.error})" if other.error else "") + ".")

    def _report_finished(self) -> None:
        data = read_json(self.file, default={}) or {}
        still = []
        for item in data.get("started", []):
            entry = QueueEntry(**item)
            try:
                snap = self.snapshot(entry)
            except LorakitError as e:
                log.warning("Train Style queue: run %s of %s ended but cannot be read, so it is not registered: %s",
                            entry.run, entry.project, e)
                continue
            if snap.active:
                still.append(item)
            elif self.on_finished is not None:
                try:
                    self.on_finished(entry, snap)
                except LorakitError as e:
                    log.warning("Train Style: after run %s: %s", entry.run, e)
        if still != data.get("started", []):
            self._save(self.entries(), started=still)

    def _start(self, entry: QueueEntry) -> RunSnapshot:
        busy = getattr(self.host, "busy", lambda: None)()
        if busy:
            raise LorakitError(f"Training waits: {busy}")
        with gpu_use.training_may_start():  # not while a grid or other images are generated in this process
            return self._start_now(entry)

    def _start_now(self, entry: QueueEntry) -> RunSnapshot:
        runs = Runs(Workspace(self.host.projects_home()).open(entry.project))
        if self.unload_model and not (read_json(self.file, default={}) or {}).get("model_unloaded"):
            freed = self.host.unload_model()
            self._save(self.entries(), model_unloaded=True)
            if freed is not None:  # said in the webui's console and at the top of the run's train.log
                log.info("%s", freed.message())
                with open(runs.dir(entry.run) / "train.log", "a", encoding="utf-8") as run_log:  # a log: appended
                    run_log.write(freed.message() + "\n")
        log.info("Train Style: starting run %s of %s", entry.run, entry.project)
        snap = runs.start(entry.run)
        started = (read_json(self.file, default={}) or {}).get("started", [])
        self._save(self.entries(), started=[*started, entry.to_dict()])
        return snap


class QueueWorker:
    """A daemon thread calling `tick()` every few seconds (one per process)."""

    def __init__(self, queue: TrainQueue, interval: float = 2.0):
        self.queue = queue
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="train-style-queue", daemon=True)

    def start(self) -> QueueWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.queue.tick()
            except LorakitError as e:
                log.info("Train Style queue: %s", e)
            except Exception:  # the worker must survive a bad run folder
                log.exception("Train Style queue failed")


_workers: dict[str, QueueWorker] = {}


def ensure_worker(host: Host) -> QueueWorker:
    """One queue worker per projects home in this process (the webui re-runs its start-up hooks on reload)."""
    key = str(Path(host.projects_home()).resolve())
    worker = _workers.get(key)
    if worker is None or not worker._thread.is_alive():
        worker = _workers[key] = QueueWorker(TrainQueue(host, on_finished=register_finished(host))).start()
    return worker


def register_finished(host: Host) -> Callable[[QueueEntry, RunSnapshot], None]:
    """After a run: put every LoRA it saved (also when stopped) into the Lora folder with cards."""
    def register(entry: QueueEntry, snap: RunSnapshot) -> None:
        if not snap.files:
            return
        register_run(host, Workspace(host.projects_home()).open(entry.project), entry.run)
        log.info("Train Style: registered %d LoRA file(s) of run %s", len(snap.files), entry.run)
    return register
