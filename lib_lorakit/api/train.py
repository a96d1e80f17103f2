"""Training routes of the HTTP API (mounted with the others under `/train-style/v1/`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from fastapi import APIRouter, Body

from ..studio import Studio
from ..train.door import TrainingDoor
from ..websec import StrictBody


class ExportBody(StrictBody):
    include_model: bool = False


class ImportBody(StrictBody):
    path: str  # a trained bundle on the server (.zip or folder) inside the allowed folders


class QueueMove(StrictBody):
    project: str
    run: str
    offset: int


# A training request's body is plain JSON, read by TrainRequest.from_dict / DifferentialRequest.from_dict (the same
# reading as the CLI's and the tab's): a 400 names each bad field, an unknown key included; the route class caps it
# at websec.MAX_BODY_BYTES. Its keys: train.service.REQUEST_KEYS (+ differential.DIFFERENTIAL_KEYS).
REQUEST_BODY = Body(..., description="preset, base_model, overrides, extra_args, output_name, samples, "
                    "without_trigger, accept_missing_captions, dry_run and the multi-GPU settings by name")


def add_routes(r: APIRouter, studio: Studio, guard: Optional[Callable] = None) -> None:
    """The training routes on `r` (the route class maps errors; `guard` is kept for the old signature, unused)."""
    def door() -> TrainingDoor:
        # a request is not the machine's user: only listed or confined .safetensors models (train.model_path)
        return studio.training(local_user=False)

    @r.get("/presets")
    def presets() -> dict:
        return {"presets": [p.to_dict() for p in door().presets()]}

    @r.post("/projects/{name}/train/plan")
    def plan(name: str, body: Any = REQUEST_BODY) -> dict:
        return door().plan(name, body).to_dict()

    @r.post("/projects/{name}/train", status_code=201)
    def train(name: str, body: Any = REQUEST_BODY) -> dict:
        return door().train(name, body).snapshot.to_dict()

    @r.post("/projects/{name}/train/differential", status_code=201)
    def train_differential(name: str, body: Any = REQUEST_BODY) -> dict:
        """Stage 1 (a base LoRA on `stage1_concepts`) and stage 2 (the targets with it merged in), queued."""
        return door().train_differential(name, body).runs.to_dict()

    @r.get("/projects/{name}/runs")
    def runs(name: str) -> dict:
        return {"runs": [s.to_dict() for s in door().runs(name)]}

    @r.get("/projects/{name}/runs/{run_id}")
    def run(name: str, run_id: str) -> dict:
        return door().run(name, run_id).to_dict()

    @r.post("/projects/{name}/runs/{run_id}/stop")
    def stop(name: str, run_id: str) -> dict:
        return door().stop(name, run_id).to_dict()

    @r.post("/projects/{name}/runs/{run_id}/resume")
    def resume(name: str, run_id: str) -> dict:
        return door().resume(name, run_id).to_dict()

    @r.post("/projects/{name}/runs/{run_id}/register")
    def register(name: str, run_id: str) -> dict:
        return {"registered": [d.to_dict() for d in door().register(name, run_id)]}

    @r.post("/projects/{name}/runs/{run_id}/export")
    def export(name: str, run_id: str, body: Optional[ExportBody] = None) -> dict:
        """A bundle to train the run on another machine, written into the project's exports/ folder."""
        path = door().export(name, run_id, include_model=bool(body and body.include_model))
        return {"path": str(path), "size": path.stat().st_size}

    @r.post("/projects/{name}/runs/import", status_code=201)
    def import_run(name: str, body: ImportBody) -> dict:
        """The LoRAs of a trained bundle (a server path inside the allowed folders) as a new run."""
        return door().import_bundle(name, body.path).to_dict()

    @r.get("/queue")
    def queue() -> dict:
        return {"queue": door().queue_listing()}

    @r.post("/queue/move")
    def move(body: QueueMove) -> dict:
        return {"queue": door().queue_move(body.project, body.run, body.offset)}
