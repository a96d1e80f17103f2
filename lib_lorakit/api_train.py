"""Training routes of the HTTP API (mounted with the others under `/train-style/v1/`)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter
from pydantic import BaseModel

from .studio import Studio
from .train import presets as _presets
from .train.config import SampleSettings
from .train.options import parse_set, validate
from .train.queue import TrainQueue
from .train.runner import Runs
from .train.service import TrainingService, TrainRequest, default_trainer


class TrainBody(BaseModel):
    preset: str
    base_model: str
    overrides: dict[str, Any] = {}
    output_name: Optional[str] = None
    samples: list[str] = []
    accept_missing_captions: bool = False
    dry_run: bool = False


class QueueMove(BaseModel):
    project: str
    run: str
    offset: int


def add_routes(r: APIRouter, studio: Studio, guard) -> None:
    host = studio.host

    def service() -> TrainingService:
        return TrainingService(host, trainer=default_trainer(host))

    def request(name: str, body: TrainBody) -> TrainRequest:
        overrides = validate({k: (parse_set([f"{k}={v}"])[k] if isinstance(v, str) else v)
                              for k, v in body.overrides.items()})
        return TrainRequest(project=name, preset=body.preset, base_model=body.base_model, overrides=overrides,
                            output_name=body.output_name, accept_missing_captions=body.accept_missing_captions,
                            samples=SampleSettings(prompts=tuple(body.samples)) if body.samples else None,
                            dry_run=body.dry_run)

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

    @r.get("/projects/{name}/runs")
    def runs(name: str) -> dict:
        return guard(lambda: {"runs": [s.to_dict() for s in Runs(studio.project(name)).list()]})

    @r.get("/projects/{name}/runs/{run_id}")
    def run(name: str, run_id: str) -> dict:
        return guard(lambda: Runs(studio.project(name)).get(run_id).to_dict())

    @r.post("/projects/{name}/runs/{run_id}/stop")
    def stop(name: str, run_id: str) -> dict:
        def go() -> dict:
            snap = Runs(studio.project(name)).stop(run_id)
            TrainQueue(host).remove(name, run_id)
            return snap.to_dict()
        return guard(go)

    @r.post("/projects/{name}/runs/{run_id}/resume")
    def resume(name: str, run_id: str) -> dict:
        return guard(lambda: service().resume(studio.project(name), run_id).to_dict())

    @r.post("/projects/{name}/runs/{run_id}/register")
    def register(name: str, run_id: str) -> dict:
        return guard(lambda: {"registered": [d.to_dict() for d in
                                             service().register(studio.project(name), run_id)]})

    @r.get("/queue")
    def queue() -> dict:
        return {"queue": [e.to_dict() for e in TrainQueue(host).entries()]}

    @r.post("/queue/move")
    def move(body: QueueMove) -> dict:
        guard(lambda: TrainQueue(host).move(body.project, body.run, body.offset))
        return queue()
