"""The autopilot: `/train-style/v1/projects/{name}/autopilot…` (as `python -m lib_lorakit autopilot … --json`).

    POST /projects/{name}/autopilot               a chain as a job: a JSON object for `AutopilotRequest.from_dict`
                                                  (`folder`, `preset`, `base_model`, `trigger`, `accept_warnings`,
                                                  `pause_after`, `tag`, `overrides`, `judge`, …); the project is
                                                  created when missing; the folder must lie in the allowed folders
    GET  /projects/{name}/autopilot               every chain, newest first
    GET  /projects/{name}/autopilot/{id}          one chain's record: its steps with state, progress and results
    POST /projects/{name}/autopilot/{id}/resume   go on from the first unfinished step, as a job; optional body
                                                  `{"accept_warnings": true, "pause_after": STEP}`

Cancel a chain through its job (`/jobs/{job}/cancel`): a run it trains is stopped, its saved files kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from fastapi import APIRouter, Body, HTTPException

from ..autopilot.service import AutopilotRequest
from ..studio import Studio

RESUME_KEYS = ("accept_warnings", "pause_after")


def _resume_body(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail=f"expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(RESUME_KEYS))
    if unknown:
        raise HTTPException(status_code=400, detail=f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                                    f"allowed: {', '.join(RESUME_KEYS)}")
    if not isinstance(body.get("accept_warnings", False), bool):
        raise HTTPException(status_code=400, detail="accept_warnings: expected true or false")
    if not isinstance(body.get("pause_after", ""), str):
        raise HTTPException(status_code=400, detail="pause_after: expected a step's name or \"\"")
    return body


def add_routes(r: APIRouter, studio: Studio, guard: Callable) -> None:
    base = "/projects/{name}/autopilot"

    @r.post(base, status_code=201)
    def start(name: str, body: Any = Body(...)) -> dict:
        """Start a chain (`{"chain": record, "job": job}`): poll `…/autopilot/{id}` or `/jobs/{job}`."""
        request = guard(lambda: AutopilotRequest.from_dict(body))
        record, job = studio.autopilot.start(name, request)
        return {"chain": record, "job": job.to_dict()}

    @r.get(base)
    def chains(name: str) -> dict:
        return {"chains": studio.autopilot.list(name)}

    @r.get(base + "/{chain_id}")
    def show(name: str, chain_id: str) -> dict:
        return studio.autopilot.show(name, chain_id)

    @r.post(base + "/{chain_id}/resume")
    def resume(name: str, chain_id: str, body: Optional[Any] = Body(None)) -> dict:
        data = _resume_body(body)
        record, job = studio.autopilot.start_resume(name, chain_id, accept_warnings=data.get("accept_warnings"),
                                                    pause_after=data.get("pause_after"))
        return {"chain": record, "job": job.to_dict()}
