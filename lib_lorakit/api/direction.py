"""Direction routes of the HTTP API, under `/train-style/v1/projects/{name}/direction/`.

Bodies are JSON objects read by the core's own `from_dict` (the CLI's reading and messages); an embedder's files
must lie inside the allowed folders (the service resolves them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, HTTPException

from ..direction.service import EstimateRequest, LabelRequest, NormaliseRequest
from ..direction.settings import DIRECTION_SCHEMA
from ..studio import Studio


def _split_wait(body: Any) -> tuple[Any, bool]:
    if not isinstance(body, dict):
        return body, False  # from_dict refuses it with its own words
    options = dict(body)
    wait = options.pop("wait", False)
    if not isinstance(wait, bool):
        raise HTTPException(status_code=400, detail=f"wait: expected true or false, got {type(wait).__name__}")
    return options, wait


def add_routes(r: APIRouter, studio: Studio, guard: Callable) -> None:
    direction = studio.direction
    base = "/projects/{name}/direction"

    @r.post(base + "/estimate")
    def estimate(name: str, body: Any = Body(default={})) -> dict:
        """Estimate as a background job (`{"job": …}`; poll /jobs/ID), or with `"wait": true` answer the estimate:
        `{"images": [{"image", "direction", "confidence", "reason", …}], "groups", "skipped"}`."""
        options, wait = _split_wait(body)
        req = guard(lambda: EstimateRequest.from_dict(options))
        if wait:
            return guard(lambda: direction.estimate(name, req)).to_dict()
        return {"job": guard(lambda: direction.start_estimate(name, req)).to_dict()}

    @r.get(base + "/estimate")
    def last_estimate(name: str) -> dict:
        """The estimate kept by the last estimate (and updated by normalise): `{}` before the first."""
        return guard(lambda: direction.last_estimate(name))

    @r.get(base + "/labels")
    def labels(name: str) -> dict:
        return guard(lambda: direction.labels(name))

    @r.post(base + "/labels")
    def label(name: str, body: Any = Body(...)) -> dict:
        """`{"images": [...], "label": "left|right|front|away|never-flip|may-flip|unlabel"}`; answers every label."""
        return guard(lambda: direction.label(name, LabelRequest.from_dict(body)))

    @r.post(base + "/normalise")
    def normalise(name: str, body: Any = Body(default={})) -> dict:
        """`{"to": "left", "images": [...], "dry_run": true}` → `{"flipped", "kept", "unsafe", "captions", …}`."""
        return guard(lambda: direction.normalise(name, NormaliseRequest.from_dict(body))).to_dict()

    @r.get(base + "/settings")
    def settings(name: str) -> dict:
        return {"values": guard(lambda: direction.settings(name)).to_dict(), "fields": DIRECTION_SCHEMA.describe()}

    @r.put(base + "/settings")
    def update_settings(name: str, body: Any = Body(...)) -> dict:
        """Changed settings by name (`{"swap_words": "left:right, east:west"}`); answers them all."""
        if not isinstance(body, dict):
            raise HTTPException(status_code=400, detail="expected an object of direction settings")
        return {"values": guard(lambda: direction.update_settings(name, body)).to_dict()}
