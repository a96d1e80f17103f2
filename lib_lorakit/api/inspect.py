"""PNG Info over HTTP: `POST /inspect?name=FILE` with the image's bytes as the body (capped at the reader's own
limit), `GET /inspect?path=…` for a file on the server (inside the allowed folders, the Lora folder or the projects
home). Both answer what `inspect FILE --json` prints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from .. import websec
from ..evaluate.pnginfo import MAX_FILE_BYTES
from ..studio import Studio


def add_routes(r: APIRouter, studio: Studio, guard: Any) -> None:
    @r.get("/inspect")
    def inspect_path(path: str) -> dict:
        """How an image on the server was made, with its LoRAs resolved."""
        return studio.inspect(path).to_dict()

    async def inspect_upload(request: Request, name: str = "upload") -> dict:
        """How the image sent as the body was made (raw bytes, any content type)."""
        data = await request.body()
        return (await run_in_threadpool(lambda: studio.inspect_upload(data, name=name[:255] or "upload"))).to_dict()

    # its own route class: the same policy as every route, a body cap an image fits in (the API's is 1 MiB)
    upload_class = websec.guarded_route_class(r.route_class.policy, max_body=MAX_FILE_BYTES)
    r.add_api_route("/inspect", inspect_upload, methods=["POST"], route_class_override=upload_class)
