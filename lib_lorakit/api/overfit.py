"""Copy check: `POST /train-style/v1/projects/{name}/overfit` (as `python -m lib_lorakit overfit … --json`).

    POST /projects/{name}/overfit   a job: `{"samples": FOLDER or [FILES], "threshold": F|null,
                                    "descriptor": "sscd|clip|perceptual", "embedder": SPEC|null}`;
                                    poll `/jobs/{id}`: its result is the report

The samples must lie inside the server's allowed folders (403 otherwise, before any job starts); a local SSCD
model (`sscd:PATH`) too, or in the models folder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body

from ..judge.memorise import OverfitRequest
from ..studio import Studio


def add_routes(r: APIRouter, studio: Studio, guard: Callable) -> None:
    @r.post("/projects/{name}/overfit")
    def start(name: str, body: Any = Body(...)) -> dict:
        """Start the check (`{"job": …}`): poll `/jobs/{id}`, cancel with `/jobs/{id}/cancel`."""
        request = guard(lambda: OverfitRequest.from_dict(body))
        return {"job": studio.judge.start_overfit(name, request).to_dict()}
