"""Training routes of the HTTP API (mounted with the others under `/train-style/v1/`)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter

from .paths import resolve_inside
from .studio import Studio
from .train import differential
from .train import presets as _presets
from .train.bundle import export_run, import_bundle
from .train.config import SampleSettings
from .train.differential import DifferentialRequest
from .train.distributed import ACCELERATE_SCHEMA, AccelerateOptions
from .train.options import SCHEMA, InvalidOption, parse_set
from .train.queue import TrainQueue
from .train.runner import Runs
from .train.service import TrainingService, TrainRequest, default_trainer
from .websec import StrictBody


class TrainBody(StrictBody):  # an undeclared field is refused by name: a misspelt option never trains without it
    preset: str
    base_model: str
    overrides: dict[str, Any] = {}
    # sd-scripts arguments beyond the declared options, checked by sd-scripts' parser; paths only inside the
    # allowed folders, nothing that moves the output (train.extra_args)
    extra_args: dict[str, Any] = {}
    output_name: Optional[str] = None
    samples: list[str] = []
    accept_missing_captions: bool = False
    dry_run: bool = False
    # multi-GPU / multi-node (train.distributed.AccelerateOptions): processes per machine, this machine's GPUs, …
    num_processes: int = ACCELERATE_SCHEMA["num_processes"].default
    gpu_ids: str = ACCELERATE_SCHEMA["gpu_ids"].default
    num_machines: int = ACCELERATE_SCHEMA["num_machines"].default
    machine_rank: int = ACCELERATE_SCHEMA["machine_rank"].default
    main_process_ip: str = ACCELERATE_SCHEMA["main_process_ip"].default
    main_process_port: Optional[int] = ACCELERATE_SCHEMA["main_process_port"].default

    def accelerate(self) -> AccelerateOptions:
        return AccelerateOptions.from_settings({f.name: getattr(self, f.name) for f in ACCELERATE_SCHEMA.fields})


class ExportBody(StrictBody):
    include_model: bool = False


class ImportBody(StrictBody):
    path: str  # a trained bundle on the server (.zip or folder) inside the allowed folders


class DifferentialBody(TrainBody):
    target_concepts: list[str]
    stage1_concepts: list[str] = []  # empty: every concept that is not a target
    stage1_overrides: dict[str, Any] = {}


class QueueMove(StrictBody):
    project: str
    run: str
    offset: int


def add_routes(r: APIRouter, studio: Studio, guard) -> None:
    host = studio.host

    def service() -> TrainingService:
        # a request is not the machine's user: only listed or confined .safetensors models (train.model_path)
        return TrainingService(host, trainer=default_trainer(host), local_user=False)

    def parsed(values: dict[str, Any]) -> dict[str, Any]:
        """The overrides typed (text as `--set` types it) and checked; all problems at once, each naming
        `overrides.<option>`."""
        problems: list[str] = []
        typed: dict[str, Any] = {}
        for k, v in values.items():
            try:
                typed[k] = next(iter(parse_set([f"{k}={v}"]).values())) if isinstance(v, str) else v
            except InvalidOption as e:
                problems += [SCHEMA.at("overrides", p) for p in e.problems]
        try:
            checked = SCHEMA.validate(typed, path="overrides")
        except InvalidOption as e:
            problems += e.problems
        if problems:
            raise InvalidOption(problems)
        return checked

    def request(name: str, body: TrainBody) -> TrainRequest:
        overrides = parsed(body.overrides)
        return TrainRequest(project=name, preset=body.preset, base_model=body.base_model, overrides=overrides,
                            extra_args=body.extra_args,
                            output_name=body.output_name, accept_missing_captions=body.accept_missing_captions,
                            samples=SampleSettings(prompts=tuple(body.samples)) if body.samples else None,
                            dry_run=body.dry_run, accelerate=body.accelerate())

    @r.get("/presets")
    def presets() -> dict:
        return {"presets": [p.to_dict() for p in _presets.presets(host.projects_home() / "presets")]}

    @r.post("/projects/{name}/train/plan")
    def plan(name: str, body: TrainBody) -> dict:
        return guard(lambda: service().plan(studio.project(name), request(name, body)).to_dict())

    @r.post("/projects/{name}/train", status_code=201)
    def train(name: str, body: TrainBody) -> dict:
        def go() -> dict:
            project = studio.project(name)
            snap = service().create_run(project, request(name, body), queue=not body.dry_run)
            if body.dry_run:
                Runs(project).mark(snap.id, "draft")
            return Runs(project).get(snap.id).to_dict()
        return guard(go)

    @r.post("/projects/{name}/train/differential", status_code=201)
    def train_differential(name: str, body: DifferentialBody) -> dict:
        """Stage 1 (a base LoRA on `stage1_concepts`) and stage 2 (the targets with it merged in), queued."""
        def go() -> dict:
            project = studio.project(name)
            req = DifferentialRequest(
                project=name, preset=body.preset, base_model=body.base_model,
                target_concepts=tuple(body.target_concepts), stage1_concepts=tuple(body.stage1_concepts),
                overrides=parsed(body.overrides), stage1_overrides=parsed(body.stage1_overrides),
                extra_args=body.extra_args,
                output_name=body.output_name, accept_missing_captions=body.accept_missing_captions,
                samples=SampleSettings(prompts=tuple(body.samples)) if body.samples else None, dry_run=body.dry_run,
                accelerate=body.accelerate())
            made = differential.create(service(), project, req, queue=not body.dry_run)
            runs = Runs(project)
            if body.dry_run:
                for snap in (made.stage1, made.stage2):
                    runs.mark(snap.id, "draft")
            return {"stage1": runs.get(made.stage1.id).to_dict(), "stage2": runs.get(made.stage2.id).to_dict()}
        return guard(go)

    @r.get("/projects/{name}/runs")
    def runs(name: str) -> dict:
        return guard(lambda: {"runs": [s.to_dict() for s in Runs(studio.project(name)).list()]})

    @r.get("/projects/{name}/runs/{run_id}")
    def run(name: str, run_id: str) -> dict:
        return guard(lambda: Runs(studio.project(name)).get(run_id).to_dict())

    @r.post("/projects/{name}/runs/{run_id}/stop")
    def stop(name: str, run_id: str) -> dict:
        return guard(lambda: TrainQueue(host).stop(name, run_id).to_dict())

    @r.post("/projects/{name}/runs/{run_id}/resume")
    def resume(name: str, run_id: str) -> dict:
        return guard(lambda: service().resume(studio.project(name), run_id).to_dict())

    @r.post("/projects/{name}/runs/{run_id}/register")
    def register(name: str, run_id: str) -> dict:
        return guard(lambda: {"registered": [d.to_dict() for d in
                                             service().register(studio.project(name), run_id)]})

    @r.post("/projects/{name}/runs/{run_id}/export")
    def export(name: str, run_id: str, body: Optional[ExportBody] = None) -> dict:
        """A bundle to train the run on another machine, written into the project's exports/ folder."""
        def go() -> dict:
            path = export_run(studio.project(name), run_id, include_model=bool(body and body.include_model))
            return {"path": str(path), "size": path.stat().st_size}
        return guard(go)

    @r.post("/projects/{name}/runs/import", status_code=201)
    def import_run(name: str, body: ImportBody) -> dict:
        """The LoRAs of a trained bundle (a server path inside the allowed folders) as a new run."""
        def go() -> dict:
            project = studio.project(name)
            path = resolve_inside(body.path, [*host.allowed_roots(), project.root])
            return import_bundle(project, path).to_dict()
        return guard(go)

    @r.get("/queue")
    def queue() -> dict:
        return {"queue": TrainQueue(host).listing()}

    @r.post("/queue/move")
    def move(body: QueueMove) -> dict:
        guard(lambda: TrainQueue(host).move(body.project, body.run, body.offset))
        return queue()
