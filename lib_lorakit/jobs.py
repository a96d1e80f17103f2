"""Long work in the background, with progress and cancel, its state kept on disk.

A job runs in a thread of this process and writes `<home>/.jobs/<id>.json` as it goes, so a page reload or a
restart of the server finds it again. A job file that says "running" but whose process is gone is reported as
interrupted: the work it did is kept (imports are idempotent, so running it again finishes it).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from . import clock
from .display import job_display
from .errors import LorakitError, NotFound
from .fsutil import atomic_write_json, pid_alive, read_json
from .progress import ProgressFn

log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")
# Jobs started by this process. A job file naming our pid but absent here was left by an earlier process that
# had the same pid (common in containers), so it is not running.
_STARTED_HERE: set[str] = set()
_JOB_ID = re.compile(r"[0-9a-zA-Z]{1,64}")  # ours are 12 hex digits; anything else names no job file


@dataclass
class JobState:
    id: str
    kind: str
    project: str
    title: str
    state: str = "queued"  # queued | running | done | failed | cancelled | interrupted
    done: int = 0
    total: int = 0
    message: str = ""
    result: Optional[dict] = None
    error: str = ""
    pid: int = field(default_factory=os.getpid)
    started: str = ""
    finished: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        """The job as JSON, with the words the page shows (`display`, made by lib_lorakit/display.py)."""
        return {**asdict(self), "display": job_display(self).to_dict()}


def _now() -> str:
    # microseconds: jobs are listed newest first, and two can start within one second
    return clock.now_iso(timespec="microseconds")


class JobManager:
    """Runs jobs in threads; every state change is written atomically to the jobs folder."""

    def __init__(self, folder: Path, min_write_interval: float = 0.25):
        self.folder = Path(folder)
        self.min_write_interval = min_write_interval
        self._cancel: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, *, kind: str, project: str, title: str,
              work: Callable[[ProgressFn, threading.Event], dict]) -> JobState:
        """Start `work(progress, cancel)` in a thread; its returned dict becomes the job's result."""
        job = JobState(id=uuid.uuid4().hex[:12], kind=kind, project=project, title=title, started=_now())
        cancel = threading.Event()
        with self._lock:
            self._cancel[job.id] = cancel
            _STARTED_HERE.add(job.id)
        self._write(job)
        thread = threading.Thread(target=self._run, args=(job, work, cancel), name=f"train-style-{kind}-{job.id}",
                                  daemon=True)
        self._threads[job.id] = thread
        thread.start()
        return job

    def _run(self, job: JobState, work: Callable[[ProgressFn, threading.Event], dict],
             cancel: threading.Event) -> None:
        job.state = "running"
        self._write(job)
        last = [0.0]

        def progress(done: int, total: int, message: str) -> None:
            job.done, job.total, job.message = done, total, message
            now = clock.monotonic()
            if now - last[0] >= self.min_write_interval:
                last[0] = now
                self._write(job)

        try:
            job.result = work(progress, cancel)
            job.state = "cancelled" if cancel.is_set() else "done"
            job.message = "cancelled" if cancel.is_set() else "finished"
        except LorakitError as e:
            job.state, job.error = "failed", str(e)
        except Exception as e:  # a bug must not leave the job "running" forever
            log.exception("Train Style job %s failed", job.id)
            job.state, job.error = "failed", f"{type(e).__name__}: {e}"
        finally:
            job.finished = _now()
            self._write(job)

    def _write(self, job: JobState) -> None:
        atomic_write_json(self.folder / f"{job.id}.json", asdict(job))  # the fields only: display is derived

    def get(self, job_id: str) -> JobState:
        if not _JOB_ID.fullmatch(job_id):
            raise NotFound(f"No job {job_id[:80]!r}.")
        data = read_json(self.folder / f"{job_id}.json")
        if data is None:
            raise NotFound(f"No job {job_id!r}.")
        return self._revive(JobState(**data))

    def _revive(self, job: JobState) -> JobState:
        orphaned = job.active and (job.id not in _STARTED_HERE if job.pid == os.getpid() else not pid_alive(job.pid))
        if orphaned:
            job.state = "interrupted"
            job.error = ("The server stopped while this job was running. What it finished is kept; run it again "
                         "to complete it.")
            job.finished = job.finished or _now()
            self._write(job)
        return job

    def list(self, project: str | None = None, limit: int = 20) -> list[JobState]:
        if not self.folder.is_dir():
            return []
        jobs = []
        for p in self.folder.glob("*.json"):
            try:
                data = read_json(p)
                if data and (project is None or data.get("project") == project):
                    jobs.append(self._revive(JobState(**data)))
            except (ValueError, TypeError, AttributeError) as e:  # a damaged job file hides no other job
                log.warning("Train Style: skipped the damaged job file %s: %s", p.name, e)
        return sorted(jobs, key=lambda j: j.started, reverse=True)[:limit]

    def cancel(self, job_id: str) -> JobState:
        job = self.get(job_id)
        event = self._cancel.get(job_id)
        if event is None and job.active:
            raise LorakitError("This job belongs to another process and cannot be cancelled from here.")
        if event:
            event.set()
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> JobState:
        thread = self._threads.get(job_id)
        if thread:
            thread.join(timeout)
        return self.get(job_id)


_managers: dict[str, JobManager] = {}


def job_manager(home: Path) -> JobManager:
    """One manager per projects home, shared by the UI and the API (and kept across a webui "Reload UI")."""
    key = str(Path(home).resolve())
    if key not in _managers:
        _managers[key] = JobManager(Path(home) / ".jobs")
    return _managers[key]
