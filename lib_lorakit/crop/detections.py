"""Detections kept by content: a face/head detector's boxes per training copy, keyed by the copy's sha256 and by
which detectors answered, so the Crop panel's *Find cut faces* and `buckets --detect` pay for detection once per
picture, not on every redraw. Detection runs on a thread per core (onnxruntime, OpenCV and Pillow release the GIL).

    .lorakit/detections.json   {"version": 1, "detectors": {"<chain members>": {"<sha256>": {"detector",
                                "boxes": [[kind, left, top, right, bottom, score], ...]}}}}

A different set of detectors (a model downloaded since) is a different key: its answers are made afresh. Images a
detector could not read are not kept (they are tried again next time, with their reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..detect import Box, Detection, detect_image
from ..fsutil import atomic_write_json, read_json
from ..procs import usable_cores
from ..project import Project

CACHE_FILE = "detections.json"
CACHE_VERSION = 1
MOST_KEPT = 20_000  # pictures per detector set; the oldest answers go first beyond it


def detector_key(detector: Any) -> str:
    """What answers depend on: the chain's members in order, or the detector's name."""
    members = getattr(detector, "detectors", None)
    if members:
        return "+".join(getattr(d, "name", type(d).__name__) for d in members)
    return getattr(detector, "name", type(detector).__name__)


def detect_many(project: Project, detector: Any, items: Sequence[tuple[str, str]], *,
                workers: int | None = None) -> dict[str, Detection]:
    """`items`: (project-relative image, its sha256 — "" when unknown). Answers by image, from the cache where the
    same picture was analysed by the same detectors, else by running `detector` (on a thread per core)."""
    key = detector_key(detector)
    cache = _load(project)
    known = cache.setdefault(key, {})
    out: dict[str, Detection] = {}
    todo = []
    for image, sha in items:
        hit = known.get(sha) if sha else None
        if hit is not None:
            out[image] = _from_json(hit)
        else:
            todo.append((image, sha))
    if not todo:
        return out
    with ThreadPoolExecutor(max_workers=workers or usable_cores()) as pool:
        found = list(pool.map(lambda item: detect_image(detector, project.root / item[0]), todo))
    for (image, sha), detection in zip(todo, found, strict=True):
        out[image] = detection
        if sha and not detection.skipped:
            known[sha] = _to_json(detection)
    with project.lock():
        fresh = _load(project)  # another process may have added answers meanwhile: keep them
        merged = {**fresh.get(key, {}), **known}
        fresh[key] = dict(list(merged.items())[-MOST_KEPT:])
        atomic_write_json(project.state_dir / CACHE_FILE, {"version": CACHE_VERSION, "detectors": fresh})
    return out


def _load(project: Project) -> dict[str, dict[str, Any]]:
    try:
        data = read_json(project.state_dir / CACHE_FILE, default={}) or {}
    except ValueError:  # a damaged cache is only a cache: start again
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("detectors"),
                                                                                           dict):
        return {}
    return {str(k): v for k, v in data["detectors"].items() if isinstance(v, dict)}


def _to_json(detection: Detection) -> dict[str, Any]:
    return {"detector": detection.detector,
            "boxes": [[b.kind, b.left, b.top, b.right, b.bottom, b.score] for b in detection.boxes]}


def _from_json(data: Any) -> Detection:
    boxes = tuple(Box(kind=str(b[0]), left=float(b[1]), top=float(b[2]), right=float(b[3]), bottom=float(b[4]),
                      score=float(b[5])) for b in data.get("boxes", ()) if isinstance(b, list) and len(b) == 6)
    return Detection(boxes=boxes, detector=str(data.get("detector", "")))


