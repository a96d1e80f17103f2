"""Sort and embedding routes of the HTTP API: `/train-style/v1/projects/{name}/sort/…` and `…/embed`.

Bodies are JSON objects read by the core's own `from_dict` (the CLI's reading and messages); files an embedder or a
Teachable Machine model names must lie inside the allowed folders (the services resolve them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, HTTPException

from ..direction.sorter import ApplyRequest
from ..embed.service import EmbedRequest
from ..studio import Studio


def _options(body: Any, *flags: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the body without `flags`, the flags' values); a body that is not an object is refused here."""
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail=f"expected a JSON object, got {type(body).__name__}")
    options = dict(body)
    return options, {f: options.pop(f) for f in flags if f in options}


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise HTTPException(status_code=400, detail=f"{name}: expected true or false, got {type(value).__name__}")
    return value


def _names(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HTTPException(status_code=400, detail=f"{what}: expected a list of texts")
    return value


def add_routes(r: APIRouter, studio: Studio, guard: Callable) -> None:
    sorter, embeddings = studio.sorter, studio.embeddings
    base = "/projects/{name}/sort"

    @r.post("/projects/{name}/embed")
    def embed(name: str, body: Any = Body(default={})) -> dict:
        """Fill the embedding store as a job (`{"job": …}`), or with `"wait": true` answer the report."""
        options, flags = _options(body, "wait")
        req = guard(lambda: EmbedRequest.from_dict(options))
        if _flag(flags.get("wait", False), "wait"):
            return guard(lambda: embeddings.embed(name, req)).to_dict()
        return {"job": guard(lambda: embeddings.start_embed(name, req)).to_dict()}

    @r.get(base)
    def status(name: str) -> dict:
        """`{"classes", "labels": {image: class}, "classifier": {kind, classes, embedder, cv_accuracy, …} | null}`."""
        return guard(lambda: sorter.status(name))

    @r.post(base + "/classes")
    def classes(name: str, body: Any = Body(...)) -> dict:
        """`{"add": [...], "remove": [...]}` → `{"classes": [...]}`."""
        options, _ = _options(body)
        unknown = sorted(set(options) - {"add", "remove"})
        if unknown:
            raise HTTPException(status_code=400, detail=f"unknown field(s) {', '.join(unknown)}; known: add, remove")
        if "add" in options:
            guard(lambda: sorter.add_classes(name, _names(options["add"], "add")))
        if "remove" in options:
            guard(lambda: sorter.remove_classes(name, _names(options["remove"], "remove")))
        return {"classes": guard(lambda: sorter.classes(name))}

    @r.post(base + "/labels")
    def labels(name: str, body: Any = Body(...)) -> dict:
        """`{"class": "blurry", "images": [...]}` (`"class": null` unlabels) → `{"labels": {image: class}}`."""
        options, _ = _options(body)
        unknown = sorted(set(options) - {"class", "images"})
        if unknown or "images" not in options:
            raise HTTPException(status_code=400, detail="expected {\"class\": NAME or null, \"images\": [...]}")
        cls = options.get("class")
        if cls is not None and not isinstance(cls, str):
            raise HTTPException(status_code=400, detail=f"class: expected a text or null, got {type(cls).__name__}")
        return {"labels": guard(lambda: sorter.label(name, cls, _names(options["images"], "images")))}

    @r.post(base + "/train")
    def train(name: str, body: Any = Body(default={})) -> dict:
        """`{"embedder": SPEC, "wait": true}` → `{"classes", "cv_accuracy", "examples", …}`; without wait a job."""
        options, flags = _options(body, "wait")
        embedder = options.pop("embedder", "") or ""
        if options or not isinstance(embedder, str):
            raise HTTPException(status_code=400, detail="expected {\"embedder\": SPEC, \"wait\": true|false}")
        if _flag(flags.get("wait", False), "wait"):
            return guard(lambda: sorter.train(name, embedder=embedder)).to_dict()
        return {"job": guard(lambda: sorter.start_train(name, embedder=embedder)).to_dict()}

    @r.post(base + "/predict")
    def predict(name: str, body: Any = Body(default={})) -> dict:
        """`{"wait": true}` → `{"images": [{"image", "class", "confidence", "label"}]}`, least certain first."""
        options, flags = _options(body, "wait")
        if options:
            raise HTTPException(status_code=400, detail="expected {\"wait\": true|false}")
        if _flag(flags.get("wait", False), "wait"):
            return {"images": [p.to_dict() for p in guard(lambda: sorter.predict(name))]}
        return {"job": guard(lambda: sorter.start_predict(name)).to_dict()}

    @r.post(base + "/apply")
    def apply(name: str, body: Any = Body(default={})) -> dict:
        """`{"into": "concepts|reg|discard|tags", "min_confidence", "classes", "move", "repeats", "dry_run"}`."""
        req = guard(lambda: ApplyRequest.from_dict(body))
        return guard(lambda: sorter.apply(name, req)).to_dict()

    @r.post(base + "/undo")
    def undo(name: str) -> dict:
        return guard(lambda: sorter.undo(name))

    @r.post(base + "/teachable")
    def teachable(name: str, body: Any = Body(...)) -> dict:
        """`{"model": "…/model_unquant.tflite", "labels": "…/labels.txt"}` (server paths inside the allowed
        folders) → `{"classes": [...]}`."""
        options, _ = _options(body)
        if set(options) != {"model", "labels"} or not all(isinstance(v, str) for v in options.values()):
            raise HTTPException(status_code=400, detail="expected {\"model\": PATH, \"labels\": PATH}")
        return {"classes": guard(lambda: sorter.import_teachable(name, options["model"], options["labels"]))}
