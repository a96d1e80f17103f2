"""The HTTP API under `/train-style/v1/`, mounted by the webui glue and by the standalone app.

Routes answer JSON only. Every route goes through one route class (websec.guarded_route_class): the web policy,
a capped body, and one map from the exception family to HTTP statuses (websec.ERROR_STATUS: a bad request 400, a
path outside the allowed folders 403, not found 404, a name taken 409), so a route only calls the Studio and raises;
errors carry the same text the tab and the CLI show. A module that adds routes (`add_routes(r, studio, guard)`) just
uses the router.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Optional, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request

from .. import websec
from ..host import Host
from ..studio import Studio
from ..websec import StrictBody, WebPolicy

PREFIX = websec.API_PREFIX
_doctor_lock = threading.Lock()  # the check starts the trainer's python: not twice at once


class NewProject(StrictBody):
    name: str


class ImportRequest(StrictBody):
    paths: list[str]
    concept: str = ""
    repeats: Optional[int] = None
    reg: bool = False
    background: bool = False


T = TypeVar("T")


def call(fn: Callable[[], T]) -> T:
    """`fn()`. What route modules once wrapped their work in; the route class maps errors now (kept for
    `add_routes(r, studio, guard)`, whose `guard` is this)."""
    return fn()


def make_router(host: Host, authorize: Optional[Callable[[Request], None]] = None,
                policy: Optional[WebPolicy] = None) -> APIRouter:
    """Routes bound to `host`; `authorize(request)` may raise HTTPException (a login check).

    Every route checks `policy` (default: any Host, only the app's own origin) before its body is read, takes at
    most websec.MAX_BODY_BYTES, answers a bad body with a 400 that names the field and an error it raises by
    websec.ERROR_STATUS (the route class does all of it; a route only calls the Studio).
    """
    studio = Studio(host)
    deps = [Depends(authorize)] if authorize else []
    r = APIRouter(prefix=PREFIX, dependencies=deps, route_class=websec.guarded_route_class(policy or WebPolicy()),
                  default_response_class=websec.SafeJSONResponse)

    @r.get("/projects")
    def list_projects() -> dict:
        """Every project; one whose project.toml cannot be read is listed with `broken` (why), not an error."""
        return {"projects": [p.to_dict() for p in studio.listing()]}

    @r.post("/projects", status_code=201)
    def create_project(body: NewProject) -> dict:
        project = studio.create_project(body.name)
        return {"name": project.name}

    @r.get("/projects/{name}/report")
    def report(name: str) -> dict:
        return studio.report(name).to_dict()

    @r.post("/projects/{name}/import")
    def import_(name: str, body: ImportRequest) -> dict:
        kind = "reg" if body.reg else "dataset"
        if body.background:
            job = studio.start_import(name, paths=body.paths, concept=body.concept, repeats=body.repeats, kind=kind)
            return {"job": job.to_dict()}
        return studio.import_paths(name, body.paths, concept=body.concept, repeats=body.repeats,
                                   kind=kind).to_dict()

    @r.get("/lora-info")
    def lora_info(path: str) -> dict:
        """How a LoRA on the server was made; only inside the allowed folders and the Lora folder."""
        return studio.lora_info(path).to_dict()

    @r.get("/settings")
    def settings_() -> dict:
        """Every declared setting by schema (name, type, default, range or choices, reason, group, label): what a
        client needs to build a form, and what the routes check."""
        return settings_catalog()

    @r.get("/doctor")
    def doctor_() -> dict:
        """The whole set-up checked (as `python -m lib_lorakit doctor --json`); one check runs at a time."""
        if not _doctor_lock.acquire(blocking=False):
            raise HTTPException(409, "A set-up check is already running; ask again when it has finished.")
        try:
            return studio.doctor().to_dict()
        finally:
            _doctor_lock.release()

    @r.get("/jobs")
    def jobs(project: Optional[str] = None) -> dict:
        return {"jobs": [j.to_dict() for j in studio.jobs.list(project)]}

    @r.get("/jobs/{job_id}")
    def job(job_id: str) -> dict:
        return studio.jobs.get(job_id).to_dict()

    @r.post("/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict:
        return studio.jobs.cancel(job_id).to_dict()

    from . import autopilot as api_autopilot
    from . import buckets as api_buckets
    from . import captions as api_captions
    from . import crop as api_crop
    from . import direction as api_direction
    from . import evaluate as api_evaluate
    from . import inspect as api_inspect
    from . import judge as api_judge
    from . import overfit as api_overfit
    from . import reg as api_reg
    from . import sort as api_sort
    from . import train as api_train

    api_train.add_routes(r, studio, call)
    api_captions.add_routes(r, studio, call)
    api_direction.add_routes(r, studio, call)
    api_sort.add_routes(r, studio, call)
    api_buckets.add_routes(r, studio, call)
    api_crop.add_routes(r, studio, call)
    api_evaluate.add_routes(r, studio, call)
    api_inspect.add_routes(r, studio, call)
    api_reg.add_routes(r, studio, call)
    api_autopilot.add_routes(r, studio, call)
    api_overfit.add_routes(r, studio, call)
    api_judge.add_routes(r, studio, call)
    return r


def settings_catalog() -> dict:
    from ..autopilot.service import AUTOPILOT_SCHEMA
    from ..captions.audit import AUDIT_SCHEMA
    from ..captions.service import TAG_SCHEMA
    from ..direction.sorter import SORT_SCHEMA
    from ..embed.service import EMBED_SCHEMA
    from ..evaluate.reg import REG_SCHEMA
    from ..evaluate.service import GRID_SCHEMA
    from ..judge.service import JUDGE_SCHEMA
    from ..project import PROJECT_SCHEMA
    from ..train.distributed import ACCELERATE_SCHEMA
    from ..train.options import SCHEMA as TRAINING

    schemas = {"training": TRAINING, "tagging": TAG_SCHEMA, "audit": AUDIT_SCHEMA, "multi_gpu": ACCELERATE_SCHEMA,
               "project": PROJECT_SCHEMA, "embeddings": EMBED_SCHEMA, "sort": SORT_SCHEMA,
               "reg": REG_SCHEMA, "grid": GRID_SCHEMA, "judge": JUDGE_SCHEMA, "autopilot": AUTOPILOT_SCHEMA}
    return {key: {"noun": s.noun, "groups": [{"key": k, "title": t} for k, t in s.groups], "fields": s.describe()}
            for key, s in schemas.items()}


def mount(app: FastAPI, host: Host, authorize: Optional[Callable[[Request], None]] = None,
          policy: Optional[WebPolicy] = None) -> None:
    """Add the routes to `app`, replacing ours from an earlier mount (the webui re-runs this on "Reload UI")."""
    app.router.routes = [rt for rt in app.router.routes if not getattr(rt, "path", "").startswith(PREFIX)]
    app.include_router(make_router(host, authorize, policy))
