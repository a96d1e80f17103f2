"""`/projects/{name}/reg/generate`: a regularisation set made by the Host's generator, as a job (as
`python -m lib_lorakit reg NAME generate CLASS --json`).

POST a JSON object for `RegRequest.from_dict` (`class_name`, `prompt`, `count`, `negative`, `repeats`, `seed`,
`steps`, `cfg`, `sampler`, `resolution`); the answer is `{"job": …, "plan": …}`: poll `/jobs/{id}`, cancel with
`/jobs/{id}/cancel`. `webui_url` is refused here: the server connects to no address sent to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body

from ..evaluate.reg import RegRequest
from ..studio import Studio


def add_routes(r: APIRouter, studio: Studio, guard: Callable) -> None:
    @r.post("/projects/{name}/reg/generate")
    def generate(name: str, body: Any = Body(default={})) -> dict:
        request = guard(lambda: RegRequest.from_dict(body))
        plan = guard(lambda: studio.reg.plan(name, request))
        job = guard(lambda: studio.reg.start(name, request))
        return {"job": job.to_dict(), "plan": plan.to_dict()}
