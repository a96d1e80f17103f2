"""A subject box from edges and contrast alone: no download, no cv2 (the last link of the chain).

The webui's focal-point crop looks for where a picture is busy (corners, local entropy) and centres on it. Here the
same idea gives a box: on a small copy of the picture, each pixel's saliency is its edge strength (gradient
magnitude) plus how far its colour is from the background (the median colour of the picture's border), smoothed
over a neighbourhood; the box spans the central `MASS` of that saliency along each axis. A busy subject on a plain
background gives a tight box; a picture busy everywhere gives a box close to the whole picture and a low score;
a featureless picture gives none.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import Box

WORK_SIDE = 128  # the analysis runs on a copy this large on its longer side
MASS = 0.9  # the share of saliency the box holds (5 % cut on each side of each axis)
FLAT = 2.0  # below this mean saliency (0–255 scale) a picture has nothing to find


class SaliencyDetector:
    """The region where the picture is busiest: one `salient` box, or none for a featureless picture. Its score is
    how concentrated the saliency is: 1 − the box's share of the picture."""

    name = "saliency"

    def detect(self, image: Image.Image) -> list[Box]:
        width, height = image.size
        scale = min(1.0, WORK_SIDE / max(width, height))
        small = image.convert("RGB")
        if scale < 1:
            small = small.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                 Image.Resampling.BILINEAR)
        saliency = saliency_map(np.asarray(small, dtype=np.float32))
        if saliency.mean() < FLAT:
            return []
        left, right = _span(saliency.sum(axis=0))
        top, bottom = _span(saliency.sum(axis=1))
        sx, sy = width / small.width, height / small.height
        box = Box(kind="salient", left=left * sx, top=top * sy, right=right * sx, bottom=bottom * sy, score=0.0)
        share = (box.width * box.height) / (width * height)
        return [Box(kind="salient", left=box.left, top=box.top, right=box.right, bottom=box.bottom,
                    score=round(max(0.0, 1.0 - share), 4))]


def saliency_map(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel saliency of an `[H, W, 3]` float picture (0–255): edge strength plus distance from the border's
    median colour, each smoothed over a window an eighth of the shorter side."""
    grey = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    gy, gx = np.gradient(grey)
    edges = np.hypot(gx, gy)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    contrast = np.linalg.norm(rgb - background, axis=2) / np.sqrt(3)
    radius = max(1, min(grey.shape) // 16)
    return _box_blur(edges, radius) + _box_blur(contrast, radius)


def _box_blur(a: np.ndarray, radius: int) -> np.ndarray:
    """The mean over a (2r+1)² window (edges replicated), through summed-area tables."""
    padded = np.pad(a, radius + 1, mode="edge")
    table = padded.cumsum(axis=0).cumsum(axis=1)
    k = 2 * radius + 1
    total = table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]
    return total[: a.shape[0], : a.shape[1]] / (k * k)


def _span(profile: np.ndarray) -> tuple[float, float]:
    """Where the central MASS of a non-negative profile lies, in pixel edges (start, end)."""
    cumulative = np.cumsum(profile, dtype=np.float64)
    total = cumulative[-1]
    cut = (1 - MASS) / 2 * total
    start = int(np.searchsorted(cumulative, cut, side="right"))
    end = int(np.searchsorted(cumulative, total - cut, side="left")) + 1
    return float(start), float(max(end, start + 1))
