"""Runs: folders under `<project>/runs/<id>/` holding everything about one training.

    launch.json   the pure description: argv, env, cwd, output dir and name (what `supervise` executes)
    run.json      state, pids, progress, losses, validation losses, files, samples, error and advice (written by
                  `supervise`)
    train.log     sd-scripts' complete output
    *.toml, sample_prompts.txt, <name>*.safetensors, sample/…

Starting a run spawns the supervisor in its own session; everything else reads files, so any process (the
tab after a reload, the CLI, a restarted webui) sees the same run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import clock, procs
from ..display import Display, run_display
from ..errors import LorakitError, NotFound
from ..fsutil import atomic_write_json, atomic_write_text, pid_alive, read_json
from ..project import Project
from .validation import MemorisingSign, memorising_sign

ACTIVE = ("queued", "starting", "running")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunSpec:
    """A launch, fully described: nothing about it is decided later."""

    argv: tuple[str, ...]
    cwd: str
    output_name: str
    env: dict[str, str] = field(default_factory=dict)  # set over the supervisor's environment
    unset: tuple[str, ...] = ()  # removed from it (e.g. PYTHONPATH pointing at the webui's packages)

    def to_dict(self, output_dir: Path) -> dict:
        return {"argv": list(self.argv), "cwd": self.cwd, "env": dict(self.env), "unset": list(self.unset),
                "output_dir": str(output_dir), "output_name": self.output_name}


@dataclass(frozen=True)
class RunSnapshot:
    id: str
    project: str
    dir: Path
    state: str
    progress: dict
    files: list[str]
    samples: list[str]
    error: str
    advice: str
    log_tail: list[str]
    losses: list[list[float]]
    meta: dict
    notice: str = ""  # what the supervisor is doing now that the user should know (e.g. a stop waiting for a save)
    val_losses: list[list[float]] = field(default_factory=list)  # [epoch, step, validation loss] per check

    @property
    def memorising(self) -> Optional[MemorisingSign]:
        """Validation loss rising while training loss falls (validation.py), or None."""
        return memorising_sign(self.losses, self.val_losses, self.files)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_dict(self) -> dict:
        return {"id": self.id, "project": self.project, "dir": str(self.dir), "state": self.state,
                "progress": self.progress, "files": self.files, "samples": self.samples, "error": self.error,
                "advice": self.advice, "log_tail": self.log_tail, "meta": self.meta, "notice": self.notice,
                "display": self.display.to_dict(), "val_losses": self.val_losses,
                "memorising": sign.to_dict() if (sign := self.memorising) else None}

    @property
    def display(self) -> Display:
        """The words the page shows for this run (state, steps, time left, the line under the bar)."""
        return run_display(self.state, self.progress)


def new_run_id(label: str) -> str:
    return f"{clock.stamp()}-{re.sub(r'[^A-Za-z0-9_-]+', '-', label).strip('-')[:40] or 'run'}"


class Runs:
    """The runs of one project."""

    def __init__(self, project: Project):
        self.project = project
        self.root = project.root / "runs"

    def new_dir(self, label: str) -> Path:
        """A fresh, empty run folder (its path goes into the TOMLs as the output folder)."""
        run_id = new_run_id(label)
        run_dir = self.root / run_id
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = self.root / f"{run_id}-{n}"
        run_dir.mkdir(parents=True)
        return run_dir

    def create(self, run_dir: Path, spec: RunSpec, *, files: dict[str, str], meta: dict) -> RunSnapshot:
        """Write the run's inputs (TOMLs and others from `files`) and mark it queued; nothing starts."""
        for name, text in files.items():
            atomic_write_text(run_dir / name, text)
        atomic_write_json(run_dir / "launch.json", spec.to_dict(run_dir))
        atomic_write_json(run_dir / "run.json", {"id": run_dir.name, "project": self.project.name,
                                                 "state": "queued", "meta": meta, "created": clock.now_iso()})
        return self.get(run_dir.name)

    def dir(self, run_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", run_id or ""):
            raise NotFound(f"No run {run_id!r} in project {self.project.name!r}.")
        path = self.root / run_id
        if not (path / "run.json").is_file():
            raise NotFound(f"No run {run_id!r} in project {self.project.name!r}.")
        return path

    def get(self, run_id: str) -> RunSnapshot:
        """The run as its run.json says; a run.json that cannot be read, or holds values of the wrong kind, gives
        a run in state "damaged" whose error says what is wrong (so one such folder never hides the others)."""
        run_dir = self.dir(run_id)
        try:
            data = _reconcile(run_dir, _record(run_dir))
        except LorakitError as e:
            data = {"state": DAMAGED, "error": str(e)}
        data, problems = _checked(data)
        if problems:
            data.update(state=DAMAGED, error=f"Run {run_id}'s record (run.json) is damaged: {'; '.join(problems)}. "
                        "Delete the run's folder, or repair the file.")
        return RunSnapshot(id=run_dir.name, project=self.project.name, dir=run_dir, state=data["state"],
                           progress=data["progress"], files=data["files"], samples=data["samples"],
                           error=data["error"], advice=data["advice"], log_tail=data["log_tail"],
                           losses=data["losses"], meta=data["meta"], notice=data["notice"],
                           val_losses=data["val_losses"])

    def list(self) -> list[RunSnapshot]:
        if not self.root.is_dir():
            return []
        ids = sorted((p.name for p in self.root.iterdir() if (p / "run.json").is_file()), reverse=True)
        return [self.get(i) for i in ids if re.fullmatch(r"[A-Za-z0-9_-]+", i)]

    def start(self, run_id: str) -> RunSnapshot:
        """Spawn the supervisor for a queued run; returns at once."""
        run_dir = self.dir(run_id)
        data = _record(run_dir)
        if data.get("state") not in ("queued", "stopped", "failed", "interrupted"):
            raise LorakitError(f"Run {run_id} is {data.get('state')}; only a queued run can start.")
        data.update(state="starting", error="", advice="", launched=clock.now_iso())
        atomic_write_json(run_dir / "run.json", data)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
        with open(run_dir / "supervisor.log", "ab") as log:
            proc = procs.start([sys.executable, "-m", "lib_lorakit.train.supervise", run_dir], env=env, cwd=run_dir,
                               stdout=log)
        data.update(supervisor_pid=proc.pid)
        atomic_write_json(run_dir / "run.json", data)
        _CHILDREN[proc.pid] = proc  # reaped in _reconcile so no zombie lingers in a long-lived server
        return self.get(run_id)

    def stop(self, run_id: str) -> RunSnapshot:
        """Ask the supervisor to stop the trainer (TERM, then KILL after a grace period); saved files stay."""
        run_dir = self.dir(run_id)
        data = _record(run_dir)
        pid = _pid(data)
        if data.get("state") == "queued":
            data.update(state="stopped", error="Removed from the queue before it started.", finished=clock.now_iso())
            atomic_write_json(run_dir / "run.json", data)
        elif data.get("state") in ACTIVE and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        return self.get(run_id)

    def launch(self, run_id: str) -> dict:
        """The launch description (argv, cwd, env, output) of a run."""
        return read_json(self.dir(run_id) / "launch.json")

    def mark(self, run_id: str, state: str, **fields: str) -> None:
        """Set a run's state by hand (e.g. "draft" for a dry run that must not be started by the queue), with
        `error`/`advice` when it fails without having started."""
        path = self.dir(run_id) / "run.json"
        data = _record(path.parent)
        data["state"] = state
        data.update(fields)
        if state in ("failed", "stopped"):
            data.setdefault("finished", clock.now_iso())
        atomic_write_json(path, data)

    def wait(self, run_id: str, timeout: float | None = None, poll: float = 0.5) -> RunSnapshot:
        deadline = None if timeout is None else clock.monotonic() + timeout
        while True:
            snap = self.get(run_id)
            if not snap.active or (deadline is not None and clock.monotonic() > deadline):
                return snap
            time.sleep(poll)


_CHILDREN: dict[int, subprocess.Popen] = {}
DAMAGED = "damaged"


def _record(run_dir: Path) -> dict:
    """run.json as a dict; LorakitError when it is not readable JSON holding an object."""
    try:
        data = read_json(run_dir / "run.json", default={})
    except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise LorakitError(f"Run {run_dir.name}'s record (run.json) cannot be read ({type(e).__name__}). Delete "
                           "the run's folder, or repair the file.") from e
    if not isinstance(data, dict):
        raise LorakitError(f"Run {run_dir.name}'s record (run.json) holds a {type(data).__name__}, not an object. "
                           "Delete the run's folder, or repair the file.")
    return data


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _texts(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _names_in_run(v: object, folder: str = "") -> bool:
    """A list of the run's own files: plain names (`folder/name` with a folder), never a path leading out (the tab
    shows and registers them)."""
    def ok(x: object) -> bool:
        if not isinstance(x, str) or not x.startswith(folder):
            return False
        name = x[len(folder):]
        return bool(name) and not name.startswith(".") and not any(c in name for c in "/\\\x00")

    return isinstance(v, list) and all(ok(x) for x in v)


# run.json's fields: (default, check, what a valid value is). The tab, the CLI and the API read these without
# further checks, so a value of another kind is replaced by the default and the run shown as damaged.
_FIELDS = {
    "state": ("?", lambda v: isinstance(v, str), "a text"),
    "progress": ({}, lambda v: isinstance(v, dict) and all(v.get(k) is None or _is_number(v.get(k)) for k in
                                                           ("step", "total", "epoch", "epochs", "loss", "eta_s")),
                 "an object of numbers"),
    "files": ([], _names_in_run, "a list of file names in the run's folder"),
    "samples": ([], lambda v: _names_in_run(v, "sample/"), "a list of sample/<file name>"),
    "error": ("", lambda v: isinstance(v, str), "a text"),
    "advice": ("", lambda v: isinstance(v, str), "a text"),
    "log_tail": ([], _texts, "a list of texts"),
    "losses": ([], lambda v: isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 and
                                                          all(_is_number(x) for x in p) for p in v),
               "a list of [step, loss] pairs"),
    "val_losses": ([], lambda v: isinstance(v, list) and all(isinstance(p, list) and len(p) == 3 and
                                                              all(_is_number(x) for x in p) for p in v),
                   "a list of [epoch, step, validation loss] triples"),
    "meta": ({}, lambda v: isinstance(v, dict), "an object"),
    "notice": ("", lambda v: isinstance(v, str), "a text"),
}
# the run's meta (written by TrainingService.create_run, differential, requeue and bundle import)
META_FIELDS = {
    "preset": (lambda v: isinstance(v, str), "a text"),
    "base_model": (lambda v: isinstance(v, str), "a text"),
    "base_arch": (lambda v: isinstance(v, str), "a text"),
    "trigger_words": (_texts, "a list of texts"),
    "steps": (lambda v: isinstance(v, dict), "an object"),
    "settings": (lambda v: isinstance(v, dict), "an object"),
    "concepts": (_texts, "a list of texts"),
    "accelerate": (lambda v: isinstance(v, dict), "an object"),
    "base_weights": (lambda v: isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 and
                                                            isinstance(p[0], str) and _is_number(p[1]) for p in v),
                     "a list of [file, multiplier] pairs"),
    "depends_on": (lambda v: isinstance(v, str), "a text"),
    "warnings": (_texts, "a list of texts"),
    "differential": (lambda v: isinstance(v, dict), "an object"),
    "imported": (lambda v: isinstance(v, dict), "an object"),
    "resumed_from": (lambda v: isinstance(v, str), "a text"),
    "resume_note": (lambda v: isinstance(v, str), "a text"),
    "extra_args": (lambda v: isinstance(v, dict), "an object"),
}


def meta_problems(meta: object) -> list[str]:
    """What is wrong with a run's meta (`meta.warnings: expected a list of texts, got 5`); [] when nothing."""
    if not isinstance(meta, dict):
        return [f"meta: expected an object, got {_shown(meta)}"]
    return [f"meta.{key}: expected {what}, got {_shown(meta[key])}" for key, (ok, what) in META_FIELDS.items()
            if key in meta and not ok(meta[key])]


def _checked(data: dict) -> tuple[dict, list[str]]:
    """run.json's fields, each of its kind (a wrong one replaced by its default), and the problems found."""
    out: dict = {}
    problems: list[str] = []
    for key, (default, ok, what) in _FIELDS.items():
        value = data.get(key, default)
        if ok(value):
            out[key] = value
        else:
            out[key] = default
            problems.append(f"{key}: expected {what}, got {_shown(value)}")
    bad_meta = meta_problems(out["meta"])
    if bad_meta:
        problems += bad_meta
        out["meta"] = {k: v for k, v in out["meta"].items() if k not in META_FIELDS or META_FIELDS[k][0](v)}
    return out, problems


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__} ({len(text)} characters)"


def _reconcile(run_dir: Path, data: dict) -> dict:
    """A run that says it is active but whose supervisor is gone died unwatched: mark it and say why."""
    pid = _pid(data)
    if pid in _CHILDREN and _CHILDREN[pid].poll() is not None:
        _CHILDREN.pop(pid)
    if data.get("state") in ("starting", "running") and pid and not pid_alive(pid):
        data = _record(run_dir) or data  # it may have just written its verdict
        if data.get("state") in ("starting", "running"):
            tail = _log_tail(run_dir / "train.log")
            if len(tail) <= 1:  # nothing from sd-scripts yet (the queue's unload note may stand first): say why
                tail += _log_tail(run_dir / "supervisor.log")
            data.update(state="interrupted", finished=clock.now_iso(), log_tail=tail,
                        error="The training process ended while nobody was watching (the computer or the "
                              "webui stopped?). Files saved before that are kept; Resume continues from the "
                              "last saved state if there is one.")
            atomic_write_json(run_dir / "run.json", data)
    return data


def _pid(data: dict) -> int | None:
    """The supervisor's process id, only when it is one (never 0, -1 or a group: Stop signals it)."""
    pid = data.get("supervisor_pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 1 else None


def _log_tail(path: Path, lines: int = 40) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return [ln for ln in procs.split_lines(data) if ln.strip()][-lines:]
