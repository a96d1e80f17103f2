"""The words a person reads about a job or a training run, made once, here.

The panels draw them, the jobs and runs JSON carry them (`"display"`), and the page script writes them into the page
as they are: no front end formats a percent, a duration or a state word of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Optional, Protocol

RUN_ACTIVE = ("queued", "starting", "running")
JOB_ACTIVE = ("queued", "running")
RUN_STATE_WORDS = {"queued": "Queued", "starting": "Starting", "running": "Training", "succeeded": "Finished",
                   "failed": "Failed", "stopped": "Stopped", "interrupted": "Interrupted", "damaged": "Damaged",
                   "draft": "Draft (a dry run, never started)"}
JOB_STATE_WORDS = {"queued": "waiting", "running": "running", "done": "done", "failed": "failed",
                   "cancelled": "cancelled", "interrupted": "interrupted"}


@dataclass(frozen=True)
class Display:
    """What the page shows for one job or run: `text` is the line under the bar, `percent` the bar's width."""

    state: str
    progress: str
    eta: str
    percent: int
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


class JobLike(Protocol):
    title: str
    state: str
    done: int
    total: int
    message: str


def duration(seconds: Optional[float]) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on; "–" when unknown."""
    if seconds is None:
        return "–"
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def time_left(seconds: Optional[float]) -> str:
    """A remaining time as a person says it: "about 40 s left", "about 2 min left", "about 1 h 05 min left"."""
    if seconds is None:
        return ""
    s = max(0, round(seconds))
    if s < 60:
        return f"about {s} s left"
    minutes = round(s / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60:02d} min left"


def percent(done: float, total: float) -> int:
    """done/total as a whole percent in 0–100 (0 without a total)."""
    if not total or total <= 0:
        return 0
    return max(0, min(100, round(100 * done / total)))


def run_display(state: str, progress: Mapping) -> Display:
    """A run's state word, step count, time left and line, from its state and progress (run.json)."""
    p = progress or {}
    step, total = p.get("step") or 0, p.get("total") or 0
    word = RUN_STATE_WORDS.get(state, state)
    epoch = f"epoch {p.get('epoch') or 0} of {p['epochs']}" if p.get("epochs") else ""
    if state == "running" and epoch:
        word, epoch = f"{word} — {epoch}", ""  # said once: in the state while it trains, after it otherwise
    shown = 100 if state == "succeeded" else percent(step, total)
    steps = f"step {step}/{total} · {shown} %" if total else ""
    eta = time_left(p.get("eta_s")) if state in RUN_ACTIVE else ""
    loss = f"loss {p['loss']:.4f}" if p.get("loss") is not None else ""
    return Display(state=word, progress=steps, eta=eta, percent=shown,
                   text=" · ".join(x for x in (word, epoch, steps, loss, eta) if x))


def job_display(job: JobLike) -> Display:
    """A background job's line: "Import: running — 3/10 · 30 % · copying"; a finished job's bar is full."""
    active = job.state in JOB_ACTIVE
    word = JOB_STATE_WORDS.get(job.state, job.state)
    shown = percent(job.done, job.total) if active else 100
    steps = f"{job.done}/{job.total} · {shown} %" if active and job.total else ""
    detail = " · ".join(x for x in (steps, job.message if steps else "") if x)
    return Display(state=word, progress=steps, eta="", percent=shown,
                   text=f"{job.title}: {word}" + (f" — {detail}" if detail else ""))
