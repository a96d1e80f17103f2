"""The training door: everything the CLI, the HTTP API and the Train panel do with training, as one object.

`Studio.training(local_user=…)` hands one out, bound to the Host and to who is calling: the command line runs with
its user's own rights (`local_user=True`: any model file, a pickle with a warning); a web request or the tab does
not (only listed or confined .safetensors models, see model_path). A front end parses its input into plain data,
makes one call here and formats the result; requests are built by `TrainRequest.from_dict` /
`DifferentialRequest.from_dict`, so the three agree on what is valid and word their errors alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from ..host import Host
from ..paths import resolve_inside
from ..project import Project, Workspace
from ..results.registry import Registered
from . import differential
from . import presets as _presets
from .bundle import export_run, import_bundle
from .differential import DifferentialRequest, DifferentialRuns
from .environment import DoctorReport, TrainerEnvironment
from .queue import TrainQueue, ensure_worker
from .runner import Runs, RunSnapshot
from .service import TrainingService, TrainPlan, TrainRequest, default_trainer


@dataclass(frozen=True)
class CreatedRun:
    """A run made by `train`: its snapshot, the plan it was made from and its command line."""

    snapshot: RunSnapshot
    plan: TrainPlan
    argv: list[str]


@dataclass(frozen=True)
class CreatedDifferential:
    runs: DifferentialRuns
    plans: tuple[TrainPlan, TrainPlan]
    argv: tuple[list[str], list[str]]


Start = Literal["worker", "now", "later"]


class TrainingDoor:
    """Training, presets and results for one caller. `start` says how a queued run starts: "worker" through this
    process's queue worker at once (the tab), "now" with one queue tick of its own (the CLI, a one-shot process),
    "later" when the app's worker next looks (the API)."""

    def __init__(self, host: Host, *, local_user: bool = False, trainer_python: Optional[str] = None,
                 tokenizer_cache_dir: Optional[Path] = None, start: Start = "later"):
        self.host = host
        self.local_user = local_user
        self.trainer: TrainerEnvironment = default_trainer(host, trainer_python)
        self.service = TrainingService(host, trainer=self.trainer, tokenizer_cache_dir=tokenizer_cache_dir,
                                       local_user=local_user)
        self.start = start

    # --- requests ---------------------------------------------------------------------------------------------------
    def _project(self, name: str) -> Project:
        return Workspace(self.host.projects_home()).open(name)

    def plan(self, name: str, data: Mapping[str, Any]) -> TrainPlan:
        """The settings, step maths and preflight findings of the request `data` (see TrainRequest.from_dict)."""
        return self.service.plan(self._project(name), TrainRequest.from_dict(data, project=name))

    def plan_differential(self, name: str, data: Mapping[str, Any]) -> tuple[TrainPlan, TrainPlan]:
        return differential.plan(self.service, self._project(name), DifferentialRequest.from_dict(data, project=name))

    def train(self, name: str, data: Mapping[str, Any]) -> CreatedRun:
        """A run of project `name`, queued and started when its turn comes; a dry run is written as a draft."""
        project = self._project(name)
        req = TrainRequest.from_dict(data, project=name)
        plan = self.service.plan(project, req)
        snap = self.service.create_run(project, req, queue=not req.dry_run, plan=plan)
        runs = Runs(project)
        if req.dry_run:
            runs.mark(snap.id, "draft")
        else:
            self.tick()
        return CreatedRun(snapshot=runs.get(snap.id), plan=plan, argv=list(runs.launch(snap.id)["argv"]))

    def train_differential(self, name: str, data: Mapping[str, Any]) -> CreatedDifferential:
        """Stage 1 and stage 2, stage 2 waiting for stage 1 (train.differential); a dry run writes both as drafts."""
        project = self._project(name)
        req = DifferentialRequest.from_dict(data, project=name)
        plans = differential.plan(self.service, project, req)
        made = differential.create(self.service, project, req, queue=not req.dry_run)
        runs = Runs(project)
        if req.dry_run:
            for snap in (made.stage1, made.stage2):
                runs.mark(snap.id, "draft")
        else:
            self.tick()
        made = DifferentialRuns(runs.get(made.stage1.id), runs.get(made.stage2.id))
        argv = (list(runs.launch(made.stage1.id)["argv"]), list(runs.launch(made.stage2.id)["argv"]))
        return CreatedDifferential(runs=made, plans=plans, argv=argv)

    # --- runs -------------------------------------------------------------------------------------------------------
    def runs(self, name: str) -> list[RunSnapshot]:
        return Runs(self._project(name)).list()

    def run(self, name: str, run_id: str) -> RunSnapshot:
        return Runs(self._project(name)).get(run_id)

    def wait(self, name: str, run_id: str, timeout: Optional[float] = None) -> RunSnapshot:
        return Runs(self._project(name)).wait(run_id, timeout=timeout)

    def stop(self, name: str, run_id: str) -> RunSnapshot:
        self._project(name)
        return self.queue.stop(name, run_id)

    def resume(self, name: str, run_id: str) -> RunSnapshot:
        """A stopped, failed or interrupted run queued again from its newest complete state."""
        snap = self.service.resume(self._project(name), run_id)
        self.tick()
        return self.run(name, snap.id)

    def register(self, name: str, run_id: str) -> list[Registered]:
        return self.service.register(self._project(name), run_id)

    def export(self, name: str, run_id: str, *, out: Optional[Path] = None, include_model: bool = False) -> Path:
        """A bundle to train the run on another machine (default: into the project's exports/ folder)."""
        return export_run(self._project(name), run_id, out=out, include_model=include_model)

    def import_bundle(self, name: str, path: str | Path, *, uploaded: bool = False) -> RunSnapshot:
        """A trained bundle's LoRAs as a new run. A path a caller who is not the machine's user names must lie in
        the allowed folders or the project; `uploaded`: a file the server received (the panel's drop box)."""
        project = self._project(name)
        if not self.local_user and not uploaded:
            path = resolve_inside(str(path), [*self.host.allowed_roots(), project.root])
        return import_bundle(project, Path(path))

    # --- the queue --------------------------------------------------------------------------------------------------
    @property
    def queue(self) -> TrainQueue:
        return TrainQueue(self.host)  # its order lives in a file: any instance sees and changes the same queue

    def tick(self) -> Optional[RunSnapshot]:
        """Start the next queued run if none is running, as `start` says (the worker also looks every few seconds);
        "worker" ticks the worker's own queue, whose lock keeps one start at a time."""
        if self.start == "later":
            return None
        return (ensure_worker(self.host).queue if self.start == "worker" else self.queue).tick()

    def queue_listing(self) -> list[dict]:
        return self.queue.listing()

    def queue_move(self, name: str, run_id: str, offset: int) -> list[dict]:
        self.queue.move(name, run_id, offset)
        return self.queue.listing()

    # --- presets ----------------------------------------------------------------------------------------------------
    @property
    def presets_dir(self) -> Path:
        return self.service.presets_dir()

    def presets(self) -> list[_presets.PresetInfo]:
        return _presets.presets(self.presets_dir)

    def preset(self, name: str) -> _presets.Preset:
        return _presets.get_preset(name, self.presets_dir)

    def preset_settings(self, name: str, overrides: Optional[Mapping[str, Any]] = None) -> _presets.ResolvedSettings:
        return _presets.resolve(name, overrides, user_dir=self.presets_dir)

    def save_preset(self, name: str, *, source: str, overrides: Mapping[str, Any], summary: str = "",
                    override_source: str = "overrides") -> Path:
        """`source` with `overrides` saved as the user's preset `name`; the file written."""
        settings = _presets.resolve(source, overrides, user_dir=self.presets_dir, override_source=override_source)
        return _presets.save_resolved(self.presets_dir, name, settings, summary=summary)

    # --- the trainer ------------------------------------------------------------------------------------------------
    def trainer_report(self, *, refresh: bool = False) -> DoctorReport:
        return self.service.trainer_report(refresh=refresh)

