"""The judge: `/train-style/v1/projects/{name}/judge` and `…/eval/{id}/judge` (as `python -m lib_lorakit judge …
--json`).

    POST /projects/{name}/judge                 a job: the judge's grid made, then judged; body: `JudgeRequest`'s
                                                fields (`goal`, `descriptor`, `weights`, `prompts`, …) and `run`
    GET  /projects/{name}/judge                 the judged grids, newest first
    POST /projects/{name}/eval/{id}/judge       a job: a grid made before, judged; body: `JudgeRequest`'s fields
    GET  /projects/{name}/eval/{id}/judge       judge.json as it stands
    POST /projects/{name}/eval/{id}/judge/apply the recommendation into the card (preferred weight, reasons)

Poll `/jobs/{id}` and cancel with `/jobs/{id}/cancel`; the report is judge.json (layout: `judge/__init__.py`). The
server generates with its own Host's generator only, and loads an embedder only from its allowed or models folders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body

from ..judge.service import JudgeRequest
from ..schema import InvalidSettings
from ..studio import Studio


def _run_and_request(body: Any) -> tuple[str, JudgeRequest]:
    if not isinstance(body, dict):
        raise InvalidSettings([f"judge: expected an object, got {type(body).__name__}"])
    data = dict(body)
    run = data.pop("run", None)
    problems = [] if isinstance(run, str) and run else [f"run: expected a run id, got {run!r:.60}"]
    try:
        request = JudgeRequest.from_dict(data)
    except InvalidSettings as e:
        raise InvalidSettings(problems + list(e.problems)) from None
    if problems:
        raise InvalidSettings(problems)
    return run, request


def add_routes(r: APIRouter, studio: Studio, guard: Callable) -> None:
    judge = studio.judge

    @r.post("/projects/{name}/judge")
    def start_run(name: str, body: Any = Body(...)) -> dict:
        """Make the judge's grid and judge it (`{"job": …}`)."""
        run, request = guard(lambda: _run_and_request(body))
        return {"job": judge.start_run(name, run, request).to_dict()}

    @r.get("/projects/{name}/judge")
    def judged(name: str) -> dict:
        return {"judged": judge.list(name)}

    @r.post("/projects/{name}/eval/{grid_id}/judge")
    def start_judge(name: str, grid_id: str, body: Any = Body(default=None)) -> dict:
        """Judge a grid made before (`{"job": …}`)."""
        request = guard(lambda: JudgeRequest.from_dict(body))
        return {"job": judge.start_judge(name, grid_id, request).to_dict()}

    @r.get("/projects/{name}/eval/{grid_id}/judge")
    def show(name: str, grid_id: str) -> dict:
        return judge.show(name, grid_id)

    @r.post("/projects/{name}/eval/{grid_id}/judge/apply")
    def apply(name: str, grid_id: str) -> dict:
        return judge.apply(name, grid_id).to_dict()
