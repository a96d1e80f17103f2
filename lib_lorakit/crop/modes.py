"""Crop modes as pure planners: from an original's upright size (and subjects found in it) to a box.

Boxes are (left, top, right, bottom) in the original's pixels; a letterbox box reaches past the edges (padding).
Nothing here reads or writes files: `service.py` plans with these, then applies the boxes through `derive.py`.

- center: the largest box of the aspect, centred (what a plain crop does, and what cuts heads off: seeds/002);
- smart: the same size, placed around the subject: the whole head in frame with headroom above it, and more of
  the body below rather than the eyes in the middle (seeds/002: "It's best to crop where more of the body is
  visible"); without a subject, centred;
- letterbox ("up-crop", seeds/002): the smallest box of the aspect holding the whole picture, centred; the rest is
  padding;
- manual: a box given by the user, which must lie inside the picture.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from ..errors import LorakitError

Box = tuple[int, int, int, int]
HEADROOM = 0.25  # of the head's height, kept free above it
FACE_TO_HEAD = 0.45  # a face box starts at the brows: the head's top lies this share of the face's height above
SUBJECT_KINDS = ("head", "face")
_RATIO = re.compile(r"^\s*(\d{1,5})\s*[:x/]\s*(\d{1,5})\s*$")
MAX_RATIO = 8  # aspects beyond 8:1 are refused: no training bucket is that thin


class Subject(Protocol):
    """A detected box (brief C's detect.Box): kind, left, top, right, bottom, score."""

    kind: str
    left: float
    top: float
    right: float
    bottom: float
    score: float


@dataclass(frozen=True)
class Aspect:
    width: int
    height: int

    @property
    def ratio(self) -> float:
        return self.width / self.height

    def text(self) -> str:
        return f"{self.width}:{self.height}"


def parse_aspect(text: Any, name: str = "aspect") -> Aspect:
    """`square`, or `W:H` with whole positive numbers (`3:4`, `16x9`)."""
    if text == "square":
        return Aspect(1, 1)
    m = _RATIO.match(text) if isinstance(text, str) else None
    if not m:
        raise LorakitError(f"{name}: expected 'square', 'bucket' or W:H such as 2:3, got {text!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if w == 0 or h == 0:
        raise LorakitError(f"{name}: {text!r} has a zero side; both numbers of W:H must be at least 1 (e.g. 2:3)")
    if max(w / h, h / w) > MAX_RATIO:
        raise LorakitError(f"{name}: {text!r} is thinner than {MAX_RATIO}:1; choose a less extreme aspect")
    return Aspect(w, h)


def _fit(width: int, height: int, aspect: Aspect) -> tuple[int, int]:
    """The largest size of `aspect` inside width × height."""
    if width * aspect.height > height * aspect.width:  # wider than the aspect: the full height
        return max(1, min(width, round(height * aspect.ratio))), height
    return width, max(1, min(height, round(width / aspect.ratio)))


def center_box(width: int, height: int, aspect: Aspect) -> Box:
    cw, ch = _fit(width, height, aspect)
    left, top = (width - cw) // 2, (height - ch) // 2
    return left, top, left + cw, top + ch


def letterbox_box(width: int, height: int, aspect: Aspect) -> Box:
    """The smallest box of `aspect` that holds the whole picture, centred (the whole picture when it already has
    that aspect to the pixel)."""
    if width * aspect.height > height * aspect.width:
        ch = max(height, round(width / aspect.ratio))
        pad = (ch - height) // 2
        return 0, -pad, width, ch - pad
    cw = max(width, round(height * aspect.ratio))
    pad = (cw - width) // 2
    return -pad, 0, cw - pad, height


def manual_box(width: int, height: int, box: Sequence[int]) -> Box:
    """A box the user drew; it must lie inside the picture (padding is letterbox's job)."""
    left, top, right, bottom = box
    if right <= left or bottom <= top:
        raise LorakitError(f"box: {list(box)} is empty: right must exceed left and bottom must exceed top")
    if left < 0 or top < 0 or right > width or bottom > height:
        raise LorakitError(f"box: {list(box)} reaches outside the {width}×{height} picture (0, 0, {width}, {height}); "
                           "draw it inside, or use letterbox to pad")
    return int(left), int(top), int(right), int(bottom)


def subject_of(found: Sequence[Subject]) -> Optional[tuple[float, float, float, float]]:
    """The box to keep: every head or face scoring at least half the best one's score, together; a face's box is
    raised to where the head begins. None when nothing was found."""
    subjects = [s for s in found if getattr(s, "kind", "") in SUBJECT_KINDS]
    if not subjects:
        return None
    best = max(s.score for s in subjects)
    kept = [s for s in subjects if s.score >= best / 2]
    boxes = []
    for s in kept:
        top = s.top - FACE_TO_HEAD * (s.bottom - s.top) if s.kind == "face" else s.top
        boxes.append((s.left, top, s.right, s.bottom))
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def smart_box(width: int, height: int, aspect: Aspect, found: Sequence[Subject]) -> tuple[Box, bool]:
    """(box, whether a subject placed it): the centre crop's size, moved so the subject's head is in frame with
    headroom and the rest of the box shows what lies below it."""
    subject = subject_of(found)
    cw, ch = _fit(width, height, aspect)
    if subject is None:
        salient = [s for s in found if getattr(s, "kind", "") == "salient"]
        if not salient:
            return center_box(width, height, aspect), False
        s = max(salient, key=lambda b: b.score)  # no head to keep: the salient region in the middle
        left = _clamp(round((s.left + s.right) / 2 - cw / 2), 0, width - cw)
        top = _clamp(round((s.top + s.bottom) / 2 - ch / 2), 0, height - ch)
        return (left, top, left + cw, top + ch), True
    s_left, s_top, s_right, s_bottom = subject
    # horizontally: centred on the subject
    left = _clamp(round((s_left + s_right) / 2 - cw / 2), 0, width - cw)
    # vertically: the head's top, less the headroom, at the top of the box; more body below, not eyes centred
    head = s_bottom - s_top
    if head + HEADROOM * head <= ch:
        top = _clamp(round(s_top - HEADROOM * head), 0, height - ch)
    else:  # a head taller than the box: keep its middle
        top = _clamp(round((s_top + s_bottom) / 2 - ch / 2), 0, height - ch)
    return (left, top, left + cw, top + ch), True


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))
