"""`/projects/{name}/buckets`: the bucket preview (as `python -m lib_lorakit buckets NAME --json`).

GET takes the settings as query parameters (typed by their declaration), POST as a JSON object; both go through
`BucketRequest.from_dict`, which refuses unknown names and bad values by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Request

from ..crop.bucket_preview import BucketRequest
from ..studio import Studio


def add_routes(r: APIRouter, studio: Studio, guard: Callable) -> None:
    @r.get("/projects/{name}/buckets")
    def buckets_get(name: str, request: Request) -> dict:
        """Query: resolution, enable_bucket, min_bucket_reso, max_bucket_reso, bucket_reso_steps,
        bucket_no_upscale, detect; each left out comes from the latest run or the defaults."""
        query = dict(request.query_params)
        req = guard(lambda: BucketRequest.from_dict(query, text=True))
        return guard(lambda: studio.buckets(name, req).to_dict())

    @r.post("/projects/{name}/buckets")
    def buckets_post(name: str, body: Any = Body(default={})) -> dict:
        req = guard(lambda: BucketRequest.from_dict(body))
        return guard(lambda: studio.buckets(name, req).to_dict())
