"""`/projects/{name}/crop`: crop, letterbox, reset (as `python -m lib_lorakit crop NAME MODE --json`).

POST a JSON object for `CropRequest.from_dict` (`mode`, `images`, `concept`, `aspect`, `fill`, `fraction`, `box`,
`tag`, `dry_run`); `/crop/preview` is the same request as a dry run; `"background": true` runs it as a job.
`/crop/undo` and `/crop/redo` take a crop or flip step back or forward; GET `/crop/history` lists the steps, and
GET `/crop/steps?image=…` one image's steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Body

from ..crop.service import CropRequest
from ..errors import LorakitError
from ..studio import Studio


def _request(body: Any, *, dry_run: bool | None = None) -> tuple[CropRequest, bool]:
    if not isinstance(body, Mapping):
        raise LorakitError(f"crop: expected a JSON object, got {type(body).__name__}")
    data = dict(body)
    background = data.pop("background", False)
    if not isinstance(background, bool):
        raise LorakitError(f"background: expected true or false, got {background!r}")
    if dry_run is not None:
        data["dry_run"] = dry_run
    return CropRequest.from_dict(data), background


def add_routes(r: APIRouter, studio: Studio, guard: Callable) -> None:
    @r.post("/projects/{name}/crop")
    def crop(name: str, body: Any = Body(default={})) -> dict:
        request, background = guard(lambda: _request(body))
        if background:
            return {"job": guard(lambda: studio.crop.start(name, request)).to_dict()}
        return guard(lambda: studio.crop.crop(name, request).to_dict())

    @r.post("/projects/{name}/crop/preview")
    def preview(name: str, body: Any = Body(default={})) -> dict:
        request, _ = guard(lambda: _request(body, dry_run=True))
        return guard(lambda: studio.crop.crop(name, request).to_dict())

    @r.post("/projects/{name}/crop/undo")
    def undo(name: str) -> dict:
        return guard(lambda: studio.crop.undo(name).to_dict())

    @r.post("/projects/{name}/crop/redo")
    def redo(name: str) -> dict:
        return guard(lambda: studio.crop.redo(name).to_dict())

    @r.get("/projects/{name}/crop/history")
    def history(name: str) -> dict:
        return {"history": [s.to_dict() for s in guard(lambda: studio.crop.history(name))]}

    @r.get("/projects/{name}/crop/steps")
    def steps(name: str, image: str) -> dict:
        return {"image": image, "steps": guard(lambda: studio.crop.steps(name, image)).to_dict()}
