"""Caption routes of the HTTP API: tagging, operations with preview and undo, edits, frequencies, the audit.

Tag and op bodies are JSON objects validated by the core's own `from_dict` (the same schema and messages as the CLI;
anything else, a list included, is refused there); the edit body is a StrictBody.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from fastapi import APIRouter, Body, Query
from pydantic import StrictStr

from ..captions.ops import CaptionOp
from ..captions.service import TagRequest
from ..errors import LorakitError
from ..studio import Studio
from ..websec import StrictBody


class CaptionEdit(StrictBody):
    image: StrictStr  # dataset/…/x.png
    text: StrictStr


def _split_flag(body: Any, flag: str) -> tuple[Any, bool]:
    """(the options without `flag`, the flag): a body that is not an object is left for from_dict to refuse."""
    if not isinstance(body, dict):
        return body, False
    options = dict(body)
    value = options.pop(flag, False)
    if not isinstance(value, bool):
        raise LorakitError(f"{flag}: expected true or false, got {type(value).__name__}")
    return options, value


def add_routes(r: APIRouter, studio: Studio, guard: Optional[Callable] = None) -> None:
    """The caption routes on `r` (the route class maps errors; `guard` is kept for the old signature, unused)."""
    captions = studio.captions

    @r.post("/projects/{name}/tag")
    def tag(name: str, body: Any = Body(default={})) -> dict:
        """Tag as a background job (`{"job": …}`; poll /jobs/ID), or with `"wait": true` answer the report."""
        options, wait = _split_flag(body, "wait")
        req = TagRequest.from_dict(options)
        if wait:
            return captions.tag(name, req).to_dict()
        return {"job": captions.start_tag(name, req).to_dict()}

    @r.get("/projects/{name}/captions")
    def records(name: str, concept: Optional[str] = None, with_all: list[str] = Query(default=[]),
                without: list[str] = Query(default=[]), with_any: list[str] = Query(default=[])) -> dict:
        found = captions.records(name, concept=concept, with_all=with_all, without=without, with_any=with_any)
        return {"captions": [rec.to_dict() for rec in found]}

    @r.put("/projects/{name}/captions")
    def edit(name: str, body: CaptionEdit) -> dict:
        return captions.edit(name, body.image, body.text).to_dict()

    @r.post("/projects/{name}/captions/ops")
    def op(name: str, body: Any = Body(...)) -> dict:
        """An operation (`{"op": "prune", "tags": [...]}`, see CaptionOp); `"preview": true` changes nothing."""
        options, preview = _split_flag(body, "preview")
        parsed = CaptionOp.from_dict(options)
        if preview:
            return {"changes": [d.to_dict() for d in captions.preview(name, parsed)]}
        return captions.apply(name, parsed).to_dict()

    @r.post("/projects/{name}/captions/undo")
    def undo(name: str, force: bool = False) -> dict:
        return captions.undo(name, force=force).to_dict()

    @r.post("/projects/{name}/captions/redo")
    def redo(name: str, force: bool = False) -> dict:
        return captions.redo(name, force=force).to_dict()

    @r.get("/projects/{name}/captions/history")
    def history(name: str, limit: int = 20) -> dict:
        return {"history": [s.to_dict() for s in captions.history(name, limit)]}

    @r.get("/projects/{name}/tags")
    def tags(name: str, concept: Optional[str] = None, with_all: list[str] = Query(default=[]),
             without: list[str] = Query(default=[]), with_any: list[str] = Query(default=[])) -> dict:
        rows = captions.frequency(name, concept=concept, with_all=with_all, without=without, with_any=with_any)
        return {"tags": [row.to_dict() for row in rows]}

    @r.get("/projects/{name}/check")
    def check(name: str, dominant_threshold: Optional[float] = None, low_variety_threshold: Optional[float] = None,
              max_tokens: Optional[int] = None) -> dict:
        """The caption audit; a threshold left out is AUDIT_SCHEMA's default."""
        return captions.audit(name, dominant_threshold=dominant_threshold,
                              low_variety_threshold=low_variety_threshold, max_tokens=max_tokens).to_dict()
