"""The autopilot: import a folder, tag, audit, plan, train, register, judge, and write the recommendation on the card.

Every step is an existing Studio call; this module only strings them together and remembers where the chain is.
The chain's record is `<project>/autopilot/<id>.json` (`Chain.to_dict`), rewritten atomically whenever a step
starts, reports progress (at most every half second) or ends. Steps that are done are never done again:
`resume` (after a failure, a cancel or a restart) and `continue` (after `pause_after`) start at the first step that
is not done. The training step records its run's id as soon as the run exists, so a chain that is resumed follows
that run: it waits for it while it trains, and resumes it through the TrainingDoor (from its last saved state)
when it was stopped, failed or interrupted; it never trains from zero again.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import clock
from ..errors import LorakitError, NotFound
from ..fsutil import atomic_write_json, pid_alive, read_json
from ..jobs import JobState, job_manager
from ..progress import CancelFlag, ProgressFn
from ..schema import Field, InvalidSettings, Schema

log = logging.getLogger(__name__)

STEPS = ("import", "tag", "audit", "plan", "train", "register", "judge", "card")
STEP_TITLES = {"import": "Import the folder", "tag": "Tag the images", "audit": "Audit the captions",
               "plan": "Plan the training", "train": "Train", "register": "Register the LoRA",
               "judge": "Judge: grid and scores", "card": "Recommendation on the card"}
ACTIVE = ("queued", "running")
FINISHED_STEP = ("done", "skipped")
POLL_S = 1.0  # how often the training step looks at its run
WRITE_EVERY_S = 0.5  # progress rewrites the record at most this often
_ID = re.compile(r"[0-9a-f]{12}")
_RUNNING_HERE: set[str] = set()  # chains this process is driving (a "running" record of another is interrupted)

AUTOPILOT_SCHEMA = Schema(noun="autopilot setting", fields=(
    Field("folder", str, "", group="chain", label="Folder",
          reason="the folder of images (and captions beside them) to import"),
    Field("preset", str, "", group="chain", label="Preset", reason="the training preset"),
    Field("base_model", str, "", group="chain", label="Base model", reason="the checkpoint to train on"),
    Field("trigger", str, "", group="chain", label="Trigger word",
          reason="added to the project's trigger words (and so to every caption) before tagging"),
    Field("concept", str, "", group="chain", label="Concept",
          reason="the concept folder the images go into; empty: the project's name"),
    Field("repeats", int, None, minimum=1, maximum=10_000, group="chain", label="Repeats",
          reason="the concept's repeats; none: 1 for a new concept"),
    Field("accept_warnings", bool, False, group="chain", label="Accept audit warnings",
          reason="go past the audit's warnings (its errors always stop the chain)"),
    Field("retag", bool, False, group="chain", label="Tag captioned images too",
          reason="also tag images that already have a caption (undo restores them)"),
    Field("pause_after", str, "", choices=("", *STEPS), group="chain", label="Pause after",
          reason="stop after this step so you can look and edit; continue goes on"),
), groups=(("chain", "Autopilot"),))
# plain data handed to TagRequest, TrainRequest (its overrides and extra sd-scripts arguments) and JudgeRequest
NESTED = ("tag", "overrides", "extra_args", "judge")


@dataclass(frozen=True)
class AutopilotRequest:
    """What the chain does: the folder, the preset and base model, and the settings each step takes
    (`tag`: TagRequest's fields, `overrides`: the preset's options, `extra_args`: further sd-scripts arguments,
    `judge`: JudgeRequest's)."""

    folder: str
    preset: str
    base_model: str
    trigger: str = ""
    concept: str = ""
    repeats: Optional[int] = None
    accept_warnings: bool = False
    retag: bool = False
    pause_after: str = ""
    tag: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    extra_args: Mapping[str, Any] = field(default_factory=dict)
    judge: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> AutopilotRequest:
        """The request from plain data (the CLI's flags, the API's body, the panel's fields); every problem named by
        its field, all at once."""
        if not isinstance(data, Mapping):
            raise InvalidSettings([f"autopilot: expected an object of settings, got {type(data).__name__}"])
        problems: list[str] = []
        scalars = {k: v for k, v in data.items() if k not in NESTED}
        try:
            values = AUTOPILOT_SCHEMA.from_dict(scalars)
        except InvalidSettings as e:
            problems, values = list(e.problems), {}
        for key in ("folder", "preset", "base_model"):
            if not isinstance(scalars.get(key), str) or not scalars[key].strip():
                problems.append(f"{key}: required, {AUTOPILOT_SCHEMA[key].reason}")
        nested = {}
        for key in NESTED:
            nested[key] = data.get(key) or {}
            if not isinstance(nested[key], Mapping):
                problems.append(f"{key}: expected an object of settings, got {type(nested[key]).__name__}")
                nested[key] = {}
        problems += _step_problems(nested, retag=values.get("retag", False))
        if problems:
            raise InvalidSettings(problems)
        return cls(**values, **{k: dict(v) for k, v in nested.items()})

    def tag_data(self) -> dict[str, Any]:
        return {**dict(self.tag), "overwrite": self.retag}

    def train_data(self) -> dict[str, Any]:
        return {"preset": self.preset, "base_model": self.base_model, "overrides": dict(self.overrides),
                "extra_args": dict(self.extra_args)}

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in AUTOPILOT_SCHEMA.fields},
                **{k: dict(getattr(self, k)) for k in NESTED}}


def _step_problems(nested: Mapping[str, Mapping[str, Any]], *, retag: bool) -> list[str]:
    """The steps' own requests built once now, so a bad tagging, training or judge setting is refused, by its field,
    before anything is imported."""
    from ..captions.service import TagRequest
    from ..judge.service import JudgeRequest
    from ..train.service import TrainRequest

    train = {"preset": "checked-later", "base_model": "checked-later", "overrides": dict(nested["overrides"]),
             "extra_args": dict(nested["extra_args"])}
    problems: list[str] = []
    for key, build in (("tag", lambda: TagRequest.from_dict({**nested["tag"], "overwrite": retag})),
                       ("overrides", lambda: TrainRequest.from_dict(train, project="autopilot")),
                       ("judge", lambda: JudgeRequest.from_dict(dict(nested["judge"])))):
        try:
            build()
        except InvalidSettings as e:  # the training request names its own fields (overrides.x, extra_args.x)
            problems += [p if p.startswith(key) or key == "overrides" else f"{key}.{p}" for p in e.problems]
        except LorakitError as e:
            problems.append(str(e) if str(e).startswith(f"{key}:") else f"{key}: {e}")
    return problems


@dataclass
class Step:
    """One step of a chain as the record holds it. `result` is what the step produced (counts, the run id, the
    grid id, the findings that stopped it); `state`: pending | running | done | skipped | failed | cancelled |
    interrupted."""

    name: str
    state: str = "pending"
    done: int = 0
    total: int = 0
    message: str = ""
    result: dict = field(default_factory=dict)
    error: str = ""
    started: str = ""
    finished: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": STEP_TITLES[self.name], "state": self.state, "done": self.done,
                "total": self.total, "message": self.message, "result": dict(self.result), "error": self.error,
                "started": self.started, "finished": self.finished}


@dataclass
class Chain:
    """A chain's record: `state` is queued | running | paused | done | failed | cancelled | interrupted."""

    id: str
    project: str
    request: AutopilotRequest
    steps: list[Step]
    state: str = "queued"
    error: str = ""
    job: str = ""
    pid: int = 0
    created: str = ""
    updated: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def next_step(self) -> Optional[Step]:
        return next((s for s in self.steps if s.state not in FINISHED_STEP), None)

    def to_dict(self) -> dict[str, Any]:
        current = self.next_step()
        return {"id": self.id, "project": self.project, "state": self.state, "error": self.error,
                "request": self.request.to_dict(), "steps": [s.to_dict() for s in self.steps],
                "current": current.name if current else None,
                "finished_steps": sum(s.state in FINISHED_STEP for s in self.steps), "total_steps": len(self.steps),
                "job": self.job, "pid": self.pid, "created": self.created, "updated": self.updated}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Chain:
        steps = [Step(**{k: v for k, v in s.items() if k != "title"}) for s in d["steps"]]
        request = AutopilotRequest(**{k: v for k, v in d["request"].items()})
        return cls(id=d["id"], project=d["project"], request=request, steps=steps, state=d["state"],
                   error=d.get("error", ""), job=d.get("job", ""), pid=int(d.get("pid") or 0),
                   created=d.get("created", ""), updated=d.get("updated", ""))


@dataclass(frozen=True)
class Outcome:
    """What a step function hands back: its result, and `stop` (why the chain cannot go on) or `skipped`."""

    result: dict
    stop: str = ""
    skipped: bool = False


class AutopilotService:
    """Chains of one Host's projects. `local_user` (the CLI's own user) may import from any folder and train from any
    model file; the tab and the API may not (the Studio's and the TrainingDoor's own confinement)."""

    def __init__(self, studio: Any):
        """`studio`: the lib_lorakit.studio.Studio that hands itself in (Studio.autopilot) — the one door every step
        goes through; the chain sits above it and does not import it."""
        self.host = studio.host
        self.studio = studio

    # --- records -----------------------------------------------------------------------------------------------------
    def _folder(self, name: str) -> Path:
        return self.studio.project(name).root / "autopilot"

    def _path(self, name: str, chain_id: str) -> Path:
        if not isinstance(chain_id, str) or not _ID.fullmatch(chain_id):
            raise NotFound(f"No autopilot chain {str(chain_id)[:80]!r} in project {name!r}.")
        path = self._folder(name) / f"{chain_id}.json"
        if not path.is_file():
            raise NotFound(f"No autopilot chain {chain_id!r} in project {name!r} (`autopilot {name} show` lists "
                           "them).")
        return path

    def _save(self, chain: Chain) -> None:
        chain.updated = clock.now_iso(timespec="microseconds")
        atomic_write_json(self._folder(chain.project) / f"{chain.id}.json", chain.to_dict())

    def _load(self, name: str, chain_id: str) -> Chain:
        path = self._path(name, chain_id)
        try:
            chain = Chain.from_dict(read_json(path))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LorakitError(f"Autopilot chain {chain_id}'s record ({path.name}) is damaged ({e}); delete it and "
                               "start the chain again (finished steps such as the import and the run are kept in "
                               "the project).") from None
        return self._revive(chain)

    def _revive(self, chain: Chain) -> Chain:
        """A record that says running whose process is gone (or this process, which is not driving it) was cut off
        by a restart: it reads interrupted, and so does its running step."""
        mine = chain.pid == os.getpid()
        if chain.active and ((mine and chain.id not in _RUNNING_HERE) or (not mine and not pid_alive(chain.pid))):
            chain.state = "interrupted"
            chain.error = ("The process running this chain stopped (a restart?). Finished steps are kept; resume "
                           "goes on from the first unfinished one.")
            for s in chain.steps:
                if s.state == "running":
                    s.state = "interrupted"
            self._save(chain)
        return chain

    def show(self, name: str, chain_id: Optional[str] = None) -> dict:
        """A chain's record (the newest chain of the project when `chain_id` is None)."""
        return self._load(name, chain_id or self._newest(name)).to_dict()

    def list(self, name: str) -> list[dict]:
        """The project's chains, newest first."""
        folder = self._folder(name)
        chains = []
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                chains.append(self._load(name, p.stem).to_dict())
            except LorakitError as e:  # a damaged record hides no other chain
                chains.append({"id": p.stem, "project": name, "state": "damaged", "error": str(e), "steps": []})
        return sorted(chains, key=lambda c: c.get("created", ""), reverse=True)

    def _newest(self, name: str) -> str:
        chains = self.list(name)
        if not chains:
            raise NotFound(f"Project {name!r} has no autopilot chain yet: start one with a folder, a preset and a "
                           "base model.")
        return chains[0]["id"]

    # --- starting ----------------------------------------------------------------------------------------------------
    def create(self, name: str, request: AutopilotRequest, *, local_user: bool = False) -> Chain:
        """A new chain's record, its project made when missing and the trigger word added; the folder is checked
        against the allowed folders first (the CLI's own user may name any)."""
        if not local_user:
            self.studio.check_server_paths([request.folder])
        if request.judge.get("embedder"):  # a file outside the allowed folders: refused now, not after training
            self.studio.embeddings.embedder(request.judge["embedder"])
        if name not in {p.name for p in self.studio.projects()}:
            self.studio.create_project(name)
        if request.trigger:
            words = self.studio.settings(name).trigger_words
            if request.trigger not in words:
                self.studio.update_settings(name, trigger_words=(request.trigger, *words))
        now = clock.now_iso(timespec="microseconds")
        chain = Chain(id=uuid.uuid4().hex[:12], project=name, request=request, steps=[Step(s) for s in STEPS],
                      created=now, pid=os.getpid())
        _RUNNING_HERE.add(chain.id)  # queued here: not read as interrupted before its drive begins
        self._save(chain)
        return chain

    def run(self, name: str, request: AutopilotRequest, *, local_user: bool = False,
            progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None) -> dict:
        """The whole chain here and now (the command line); its record."""
        chain = self.create(name, request, local_user=local_user)
        return self._drive(chain, local_user=local_user, progress=progress, cancel=cancel)

    def start(self, name: str, request: AutopilotRequest) -> tuple[dict, JobState]:
        """The chain as a job (the tab and the API): its record and the job (progress over the steps, cancel)."""
        chain = self.create(name, request)
        return self._as_job(chain, "Autopilot")

    def resume(self, name: str, chain_id: Optional[str] = None, *, accept_warnings: Optional[bool] = None,
               pause_after: Optional[str] = None, local_user: bool = False, progress: Optional[ProgressFn] = None,
               cancel: Optional[CancelFlag] = None) -> dict:
        """Go on from the first unfinished step of a paused, failed, cancelled or interrupted chain, here and now;
        `accept_warnings`/`pause_after` change the request for the rest of the chain."""
        chain = self._resumable(name, chain_id, accept_warnings=accept_warnings, pause_after=pause_after)
        return self._drive(chain, local_user=local_user, progress=progress, cancel=cancel)

    def start_resume(self, name: str, chain_id: Optional[str] = None, *, accept_warnings: Optional[bool] = None,
                     pause_after: Optional[str] = None) -> tuple[dict, JobState]:
        """`resume` as a job."""
        chain = self._resumable(name, chain_id, accept_warnings=accept_warnings, pause_after=pause_after)
        return self._as_job(chain, "Autopilot (resumed)")

    def _resumable(self, name: str, chain_id: Optional[str], *, accept_warnings: Optional[bool],
                   pause_after: Optional[str]) -> Chain:
        chain = self._load(name, chain_id or self._newest(name))
        if chain.active:
            raise LorakitError(f"Autopilot chain {chain.id} is {chain.state}; wait for it, or cancel its job first.")
        if chain.state == "done":
            raise LorakitError(f"Autopilot chain {chain.id} is done; start a new one to train again.")
        changes: dict[str, Any] = {}
        if accept_warnings is not None:
            changes["accept_warnings"] = accept_warnings
        if pause_after is not None:
            changes["pause_after"] = pause_after
        if changes:
            chain.request = AutopilotRequest.from_dict({**chain.request.to_dict(), **changes})
        chain.state, chain.error, chain.pid = "queued", "", os.getpid()
        _RUNNING_HERE.add(chain.id)
        self._save(chain)
        return chain

    def _as_job(self, chain: Chain, title: str) -> tuple[dict, JobState]:
        """The chain driven in a job's thread; its record here is taken before the thread touches it."""
        ready = threading.Event()

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            ready.wait(30)  # the job's id is in the record before the drive's first save
            return self._drive(chain, local_user=False, progress=progress, cancel=cancel)

        try:
            job = job_manager(self.host.projects_home()).start(
                kind="autopilot", project=chain.project, work=work,
                title=f"{title}: {chain.request.folder} → {chain.request.preset} ({chain.project})")
        except BaseException:
            _RUNNING_HERE.discard(chain.id)  # never driven: a later look reads it interrupted, and resume works
            raise
        chain.job = job.id
        self._save(chain)
        record = chain.to_dict()
        ready.set()
        return record, job

    # --- driving -----------------------------------------------------------------------------------------------------
    def _drive(self, chain: Chain, *, local_user: bool, progress: Optional[ProgressFn],
               cancel: Optional[CancelFlag]) -> dict:
        """Run the chain's unfinished steps in order, saving the record at every change; the record at the end."""
        _RUNNING_HERE.add(chain.id)
        chain.state, chain.error, chain.pid = "running", "", os.getpid()
        self._save(chain)
        ctx = _Context(self, chain, local_user=local_user, progress=progress, cancel=cancel)
        try:
            chain.state = ctx.steps()
        except Exception as e:  # a bug must not leave the chain "running" forever
            log.exception("Train Style autopilot %s failed", chain.id)
            chain.state, chain.error = "failed", f"{type(e).__name__}: {e}"
        finally:
            _RUNNING_HERE.discard(chain.id)
            self._save(chain)
        return chain.to_dict()


class _Context:
    """One drive of a chain: the step functions, the progress they report and the record they keep."""

    def __init__(self, service: AutopilotService, chain: Chain, *, local_user: bool,
                 progress: Optional[ProgressFn], cancel: Optional[CancelFlag]):
        self.service, self.chain, self.studio = service, chain, service.studio
        self.name, self.request = chain.project, chain.request
        self.local_user = local_user
        self.outer_progress, self.cancel = progress, cancel or threading.Event()
        self._last_write = 0.0
        self._door = None

    @property
    def door(self):
        """The TrainingDoor for this caller: the CLI ticks the queue itself, the app's worker does it elsewhere."""
        if self._door is None:
            self._door = self.studio.training(local_user=self.local_user,
                                              start="now" if self.local_user else "worker")
        return self._door

    def save(self) -> None:
        self.service._save(self.chain)

    # 1. the steps in order: each done one is skipped; a stop, a failure or a cancel ends the drive
    def steps(self) -> str:
        functions: dict[str, Callable[[Step], Outcome]] = {
            "import": self.import_, "tag": self.tag, "audit": self.audit, "plan": self.plan, "train": self.train,
            "register": self.register, "judge": self.judge, "card": self.card}
        for step in self.chain.steps:
            if step.state in FINISHED_STEP:
                continue
            if self.cancel.is_set():
                return "cancelled"
            state = self.one(step, functions[step.name])
            if state != "done":
                return state
            if self.request.pause_after == step.name and self.chain.next_step() is not None:
                return "paused"
        return "done"

    def one(self, step: Step, function: Callable[[Step], Outcome]) -> str:
        """Run one step and record how it ended; the chain's state after it ("done" to go on)."""
        step.state, step.error, step.started, step.finished = "running", "", clock.now_iso(), ""
        step.done, step.total, step.message = 0, 0, ""
        self.save()
        self.report(step)
        try:
            outcome = function(step)
        except LorakitError as e:
            if self.cancel.is_set():  # the work stopped at the cancel (errors.Cancelled or what it caused)
                step.state = "cancelled"
            else:
                step.state, step.error = "failed", str(e)
                self.chain.error = f"{STEP_TITLES[step.name]}: {e}"
        else:
            step.result = {**step.result, **outcome.result}
            if outcome.stop:
                step.state, step.error = "failed", outcome.stop
                self.chain.error = f"{STEP_TITLES[step.name]}: {outcome.stop}"
            elif self.cancel.is_set():
                step.state = "cancelled"
            else:
                step.state = "skipped" if outcome.skipped else "done"
        step.finished = clock.now_iso()
        self.save()
        self.report(step)
        return {"failed": "failed", "cancelled": "cancelled"}.get(step.state, "done")

    def report(self, step: Step) -> None:
        """The job's progress over the steps, the step's message beside it."""
        if self.outer_progress is not None:
            finished = sum(s.state in FINISHED_STEP for s in self.chain.steps)
            detail = f" ({step.message})" if step.message else ""
            self.outer_progress(finished, len(self.chain.steps), f"{STEP_TITLES[step.name]}: {step.state}{detail}")

    def progress_of(self, step: Step) -> ProgressFn:
        """A step's own `progress`: kept in the record (written at most every WRITE_EVERY_S)."""
        def progress(done: int, total: int, message: str) -> None:
            step.done, step.total, step.message = done, total, message
            now = clock.monotonic()
            if now - self._last_write >= WRITE_EVERY_S:
                self._last_write = now
                self.save()
                self.report(step)
        return progress

    # 2. the step functions: one Studio call each (training: start or resume its run, then follow it)
    def import_(self, step: Step) -> Outcome:
        # Studio.import_paths confines the folder to the Host's allowed roots (the CLI's Host allows any)
        req = self.request
        report = self.studio.import_paths(self.name, [req.folder], concept=req.concept, repeats=req.repeats,
                                          progress=self.progress_of(step), cancel=self.cancel)
        result = {"imported": len(report.imported), "already": len(report.already),
                  "skipped": [[v.source, v.text] for v in report.skipped[:50]], "summary": report.summary()}
        if not report.ok and not report.cancelled:
            return Outcome(result, stop=f"nothing could be imported from {req.folder}" +
                           (" (the reasons are listed)" if report.skipped else ": no image files were found"))
        return Outcome(result)

    def tag(self, step: Step) -> Outcome:
        from ..captions.service import TagRequest

        report = self.studio.captions.tag(self.name, TagRequest.from_dict(self.request.tag_data()),
                                          progress=self.progress_of(step), cancel=self.cancel)
        result = {"tagged": len(report.tagged), "already": len(report.already), "failed": report.failed[:50],
                  "summary": report.summary(), "entry": report.entry}
        return Outcome(result)

    def audit(self, step: Step) -> Outcome:
        report = self.studio.captions.audit(self.name)
        errors = [f.to_dict() for f in report.findings if f.severity == "error"]
        warnings = [f.to_dict() for f in report.findings if f.severity == "warning"]
        result = {"errors": errors, "warnings": warnings, "accepted_warnings": bool(warnings) and
                  self.request.accept_warnings}
        if errors:
            return Outcome(result, stop=f"{len(errors)} error(s) in the captions: " + _findings_text(errors) +
                           ". Fix them (the Captions tab's audit has a fix for each), then resume.")
        if warnings and not self.request.accept_warnings:
            return Outcome(result, stop=f"{len(warnings)} warning(s): " + _findings_text(warnings) +
                           ". Fix them, or accept them (accept warnings) and resume.")
        return Outcome(result)

    def plan(self, step: Step) -> Outcome:
        plan = self.door.plan(self.name, self.request.train_data())
        result = {"findings": [f.to_dict() for f in plan.findings], "base_arch": plan.base_arch,
                  "total_steps": plan.steps.total_steps, "epochs": plan.steps.epochs}
        errors = [f for f in plan.findings if f.severity == "error"]
        if errors:
            return Outcome(result, stop="the training plan is blocked: " + "; ".join(
                f.message + (f" Fix: {f.fix}" if f.fix else "") for f in errors))
        return Outcome(result)

    def train(self, step: Step) -> Outcome:
        run_id = step.result.get("run")
        if not run_id:
            made = self.door.train(self.name, self.request.train_data())
            step.result["run"] = run_id = made.snapshot.id
            self.save()  # recorded before anything else: a restart now follows this run
        else:
            self._resume_run(step, run_id)
        snap = self._follow(step, run_id)
        if snap.state == "succeeded":
            return Outcome({"files": list(snap.files)})
        if self.cancel.is_set():
            return Outcome({})
        return Outcome({}, stop=f"run {run_id} {snap.state}: {snap.error or 'see its log'}" +
                       (f" Advice: {snap.advice}" if snap.advice else "") + " Resume goes on from its last saved "
                       "state.")

    def _resume_run(self, step: Step, run_id: str) -> None:
        """A recorded run that stopped, failed or was interrupted goes on from its last saved state (the door's
        resume); one that trains or waits is followed as it is."""
        snap = self.door.run(self.name, run_id)
        if snap.state in ("stopped", "failed", "interrupted"):
            self.door.resume(self.name, run_id)
            step.result["resumed"] = int(step.result.get("resumed", 0)) + 1
            self.save()

    def _follow(self, step: Step, run_id: str):
        """Wait for the run, its progress in the step; a cancel stops the run (its saved files stay)."""
        progress = self.progress_of(step)
        stopping = False
        while True:
            self.door.tick()
            snap = self.door.run(self.name, run_id)
            if not snap.active:
                return snap
            if self.cancel.is_set() and not stopping:
                self.door.stop(self.name, run_id)
                stopping = True
            p = snap.progress or {}
            progress(int(p.get("step") or 0), int(p.get("total") or 0), snap.display.text)
            time.sleep(POLL_S)

    def register(self, step: Step) -> Outcome:
        run_id = self.chain.step("train").result["run"]
        done = self.door.register(self.name, run_id)
        return Outcome({"run": run_id, "registered": [r.to_dict() for r in done]})

    def judge(self, step: Step) -> Outcome:
        """The judge's grid and scores. A grid this step began before a cancel or a restart is finished (only the
        cells it lacks are made) and judged; it is not made again."""
        from ..judge.service import JudgeRequest

        run_id = self.chain.step("train").result["run"]
        request = JudgeRequest.from_dict(dict(self.request.judge))
        grids = [g for g in self.studio.evaluate.list(self.name) if g.get("run") == run_id]
        if "grids_before" not in step.result:  # the first attempt: the run's grids made before it are not ours
            step.result["grids_before"] = [g["id"] for g in grids]
            self.save()
        ours = [g for g in grids if g["id"] not in step.result["grids_before"]]
        progress, generator = self.progress_of(step), self._generator(run_id)
        if ours:
            grid = ours[0]["id"]  # newest first
            if ours[0].get("state") != "done":
                self.studio.evaluate.resume(self.name, grid, generator=generator, progress=progress,
                                            cancel=self.cancel)
                if self.cancel.is_set():
                    return Outcome({"grid": grid, "run": run_id, "state": "cancelled"})
            report = self.studio.judge.judge(self.name, grid, request, progress=progress, cancel=self.cancel)
        else:
            report = self.studio.judge.run(self.name, run_id, request, generator=generator, progress=progress,
                                           cancel=self.cancel)
        result = {"grid": report.get("grid"), "run": run_id, "state": report.get("state"),
                  "recommendation": report.get("recommendation"), "why_none": report.get("why_none", ""),
                  "first_copying_epoch": report.get("first_copying_epoch")}
        if report.get("state") not in ("done", "cancelled"):
            return Outcome(result, stop=f"the judge ended {report.get('state')}: {report.get('error') or '?'}")
        return Outcome(result)

    def _generator(self, run_id: str):
        """The Host's own generator (the webui's: None lets the judge take it); standalone, sd-scripts' gen_img.py
        with the run's base model as the checkpoint: what the LoRA was trained on, whatever else the models folder
        holds."""
        if getattr(self.studio.host, "generator", None) is not None:
            return None
        from ..evaluate.sd_scripts_gen import standalone_generator

        base = self.door.run(self.name, run_id).meta.get("base_model") or None
        return standalone_generator(self.studio.host, default_checkpoint=base, local_user=self.local_user)

    def card(self, step: Step) -> Outcome:
        judged = self.chain.step("judge").result
        if not judged.get("recommendation"):
            return Outcome({"why_none": judged.get("why_none") or "the judge recommended no epoch and weight"},
                           skipped=True)
        choice = self.studio.judge.apply(self.name, judged["grid"])
        return Outcome(choice.to_dict())


def _findings_text(findings: list[dict], limit: int = 5) -> str:
    shown = [f"{f['code']} ({f['detail']})" for f in findings[:limit]]
    more = f" and {len(findings) - limit} more" if len(findings) > limit else ""
    return "; ".join(shown) + more
