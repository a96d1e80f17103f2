"""The default chain: ONNX models present (or downloaded) → OpenCV cascades → saliency (see `default_detector`).

For kinds ("head", "face") the order is: anime heads, anime faces, photo faces, OpenCV's cascades, saliency. The
first detector that finds anything answers for an image. A model that is missing, cannot be downloaded, or whose
runtime is absent is left out and named in the chain's notes with what to do; building the chain never raises for
those. A download that failed is not tried again in the same process (an offline machine would otherwise wait on
the network for every crop).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..errors import LorakitError
from . import ChainDetector, Detector
from .models import KNOWN_DETECTORS, DetectorModel, detector_folder, resolve_detector

log = logging.getLogger(__name__)

MODEL_KINDS = ("head", "face")
_failed_downloads: dict[Path, str] = {}  # folder → the message of the download that failed, this process
_detectors: dict[tuple, Detector] = {}  # (folder, key, mtime, size) → detector, this process
_failed_lock = threading.Lock()  # guards both


def build_chain(models_root: Path, *, download: bool, kinds: tuple[str, ...]) -> ChainDetector:
    """Every detector that can run here for `kinds`, best first; the others are named in `notes` with why."""
    unknown = [k for k in kinds if k not in MODEL_KINDS]
    if unknown or not kinds:
        raise LorakitError(f"kinds: expected one or more of {', '.join(MODEL_KINDS)}, got {list(kinds)!r}")
    detectors: list[Detector] = []
    notes: list[str] = []
    for kind in kinds:
        for model in (m for m in KNOWN_DETECTORS.values() if m.kind == kind):
            detector, note = _onnx_detector(model, Path(models_root), download=download)
            if detector is not None:
                detectors.append(detector)
            else:
                notes.append(note)
    detector, note = _cascade_detector()
    if detector is not None:
        detectors.append(detector)
    else:
        notes.append(note)
    from .saliency import SaliencyDetector

    detectors.append(SaliencyDetector())
    for note in notes:
        log.info("detector chain: %s", note)
    return ChainDetector(detectors=detectors, notes=notes)


def _onnx_detector(model: DetectorModel, models_root: Path, *, download: bool) -> tuple[Detector | None, str]:
    """The model as a detector, or None and why not (missing, download failed, onnxruntime absent)."""
    folder = detector_folder(model, models_root)
    with _failed_lock:
        failed = _failed_downloads.get(folder)
    if failed and download:
        return None, f"{failed} (not tried again until Train Style restarts)"
    try:
        resolve_detector(model, models_root, download=download)
    except LorakitError as e:
        if download:
            with _failed_lock:
                _failed_downloads[folder] = str(e)
        return None, str(e)
    try:
        import onnxruntime  # noqa: F401  (only whether it imports)
    except ImportError:
        return None, (f"The {model.title} {model.subfolder} is in {folder} but onnxruntime is not installed: "
                      "install onnxruntime (or onnxruntime-gpu) to use it.")
    try:
        return _cached_yolo(model, folder), ""
    except (LorakitError, OSError) as e:  # an unreadable labels.json, a file removed meanwhile
        return None, str(e)


def _cached_yolo(model: DetectorModel, folder: Path) -> Detector:
    """One detector (and so one onnxruntime session) per model file for the process, so chains built per job or
    per request do not load the model again; a file replaced on disk gets a new one."""
    from .yolo import YoloDetector

    stat = (folder / "model.onnx").stat()
    key = (folder.resolve(), model.key, stat.st_mtime_ns, stat.st_size)
    with _failed_lock:
        detector = _detectors.get(key)
    if detector is None:
        detector = YoloDetector(folder, kind=model.kind, threshold=model.threshold, max_side=model.max_side,
                                name=model.key)
        with _failed_lock:
            detector = _detectors.setdefault(key, detector)
    return detector


def release_detectors() -> None:
    """Drop the cached detectors and their sessions (memory); the next chain loads them again."""
    with _failed_lock:
        _detectors.clear()


def _cascade_detector() -> tuple[Detector | None, str]:
    from .cascade import CascadeDetector, cascade_unavailable

    why = cascade_unavailable()
    if why:
        return None, f"OpenCV cascades: {why}."
    try:
        return CascadeDetector(), ""
    except Exception as e:  # cv2 raises its own error type for a cascade file it cannot parse
        return None, f"OpenCV cascades: could not be loaded ({type(e).__name__}: {e})."


def forget_failed_downloads() -> None:
    """Let the next chain try the downloads that failed earlier (after the user fixed the network)."""
    with _failed_lock:
        _failed_downloads.clear()
