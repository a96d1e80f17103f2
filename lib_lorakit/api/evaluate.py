"""Grids and cards: `/train-style/v1/projects/{name}/eval/…` (as `python -m lib_lorakit grid|card … --json`).

    POST /projects/{name}/eval                  a grid as a job: a JSON object for `GridRequest.from_dict` (`run`,
                                                `prompts`, `checkpoints`, `seeds`, `epochs`, `weights`, …)
    GET  /projects/{name}/eval                  every grid, newest first
    GET  /projects/{name}/eval/{id}             one grid's report (cells with their images once made)
    POST /projects/{name}/eval/{id}/resume      the cells a cancelled or interrupted grid lacks, as a job
    GET  /projects/{name}/eval/{id}/grid.png    the grid picture; …/cells/NNNN.png a cell's
    POST /projects/{name}/eval/card             `{"run", "weight", "epoch", "grid", "unregister_others"}`

The server generates with its own Host's generator only: it connects to no webui address sent to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import FileResponse

from ..evaluate.service import GridRequest
from ..studio import Studio

CARD_KEYS = ("run", "weight", "epoch", "grid", "unregister_others")


def _card_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail=f"expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(CARD_KEYS))
    if unknown:
        raise HTTPException(status_code=400, detail=f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                                    f"allowed: {', '.join(CARD_KEYS)}")
    for key in ("run",):
        if not isinstance(body.get(key), str):
            raise HTTPException(status_code=400, detail=f"{key}: expected a run id")
    for key in ("epoch", "grid"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise HTTPException(status_code=400, detail=f"{key}: expected a text or null")
    if not isinstance(body.get("unregister_others", False), bool):
        raise HTTPException(status_code=400, detail="unregister_others: expected true or false")
    return body


def add_routes(r: APIRouter, studio: Studio, guard: Callable) -> None:
    evaluate = studio.evaluate
    base = "/projects/{name}/eval"

    @r.post(base)
    def start(name: str, body: Any = Body(...)) -> dict:
        """Start a grid (`{"job": …, "cells": N}`): poll `/jobs/{id}`, cancel with `/jobs/{id}/cancel`."""
        request = guard(lambda: GridRequest.from_dict(body))
        plan = evaluate.plan(name, request)
        return {"job": evaluate.start(name, request).to_dict(), "cells": plan.size}

    @r.get(base)
    def grids(name: str) -> dict:
        return {"grids": evaluate.list(name)}

    @r.post(base + "/card")
    def card(name: str, body: Any = Body(...)) -> dict:
        """The chosen file's card: preferred weight, a note naming the grid; the others unregistered if asked."""
        data = _card_body(body)
        epoch: Optional[str] = data.get("epoch")
        return evaluate.choose(name, data["run"], weight=data.get("weight"), epoch=epoch, grid=data.get("grid"),
                               unregister_others=data.get("unregister_others", False)).to_dict()

    @r.get(base + "/{grid_id}")
    def show(name: str, grid_id: str) -> dict:
        return evaluate.show(name, grid_id)

    @r.post(base + "/{grid_id}/resume")
    def resume(name: str, grid_id: str) -> dict:
        return {"job": evaluate.start_resume(name, grid_id).to_dict()}

    @r.get(base + "/{grid_id}/grid.png")
    def grid_png(name: str, grid_id: str) -> FileResponse:
        return FileResponse(evaluate.image(name, grid_id, "grid.png"), media_type="image/png")

    @r.get(base + "/{grid_id}/cells/{file}")
    def cell_png(name: str, grid_id: str, file: str) -> FileResponse:
        return FileResponse(evaluate.image(name, grid_id, f"cells/{file}"), media_type="image/png")
