"""OpenCV's bundled Haar cascades (frontal and profile faces) where `cv2` imports: no download needed.

The webui ships opencv-python with the cascades in `cv2.data.haarcascades`; OpenCV 5's wheels ship none, and then
this detector is left out of the chain with the reason. A cascade gives no probability, only how many neighbouring
windows agreed; the score is n / (n + 5): 0.5 at the usual acceptance of five neighbours, towards 1 beyond.
Profiles are looked for, in the picture and in its mirror image (the cascade knows one side only), when no frontal
face is found.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from . import Box
from .yolo import nms

log = logging.getLogger(__name__)

CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_profileface.xml")
WORK_SIDE = 480  # pictures are searched at most this large (faces are big enough there; time grows with pixels)
MIN_FACE_FRACTION = 0.06  # the smallest face looked for, as a part of the picture's shorter side
MIN_NEIGHBOURS = 5


def cascade_unavailable() -> str | None:
    """Why the cascades cannot run here, or None when they can."""
    try:
        import cv2
    except ImportError:
        return "OpenCV (cv2) is not installed, so its face cascades are not used"
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder or not all((Path(folder) / name).is_file() for name in CASCADES):
        return (f"this OpenCV ({getattr(cv2, '__version__', '?')}) ships no Haar cascades "
                f"({', '.join(CASCADES)}), so they are not used")
    return None


class CascadeDetector:
    """Faces by OpenCV's Haar cascades, as `face` boxes, best first. Needs cv2 (see `cascade_unavailable`)."""

    name = "opencv-cascade"

    def __init__(self) -> None:
        import cv2

        folder = Path(cv2.data.haarcascades)
        self._cv2 = cv2
        self._frontal = cv2.CascadeClassifier(str(folder / CASCADES[0]))
        self._profile = cv2.CascadeClassifier(str(folder / CASCADES[1]))
        if self._frontal.empty() or self._profile.empty():
            raise RuntimeError(f"OpenCV could not load its cascades from {folder}")
        self._lock = threading.Lock()  # a CascadeClassifier is not documented as safe to share between threads

    def detect(self, image: Image.Image) -> list[Box]:
        grey = image.convert("L")
        scale = min(1.0, WORK_SIDE / max(grey.size))
        if scale < 1:
            grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                               Image.Resampling.BILINEAR)
        pixels = self._cv2.equalizeHist(np.asarray(grey, dtype=np.uint8))
        side = max(12, round(min(pixels.shape) * MIN_FACE_FRACTION))
        found = []  # (left, top, right, bottom, neighbours) in the picture's pixels
        with self._lock:
            for cascade, mirrored in ((self._frontal, False), (self._profile, False), (self._profile, True)):
                if found and cascade is self._profile:
                    break
                source = pixels[:, ::-1].copy() if mirrored else pixels
                rects, counts = cascade.detectMultiScale2(source, scaleFactor=1.1, minNeighbors=MIN_NEIGHBOURS,
                                                          minSize=(side, side))
                for (x, y, w, h), n in zip(rects, counts, strict=True):
                    if mirrored:
                        x = source.shape[1] - x - w
                    found.append((x / scale, y / scale, (x + w) / scale, (y + h) / scale, float(n)))
        if not found:
            return []
        table = np.asarray(found, dtype=np.float64)
        scores = table[:, 4] / (table[:, 4] + MIN_NEIGHBOURS)
        return [Box(kind="face", left=float(table[i, 0]), top=float(table[i, 1]), right=float(table[i, 2]),
                    bottom=float(table[i, 3]), score=float(scores[i]))
                for i in nms(table[:, :4], scores, iou=0.3)]
