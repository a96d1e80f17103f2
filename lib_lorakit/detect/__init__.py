"""Where the subject is: face and head detectors behind one Protocol, for smart crop and `SUBJECT_CUT`.

A detector takes an upright RGB picture and returns boxes in that picture's pixels. `default_detector` builds the
chain the crop uses: the ONNX models already in the models folder (anime head, anime face, photo face; downloaded
there on first use when `download` is true), then OpenCV's bundled Haar cascades where `cv2` imports, then a
saliency box that needs neither. The chain answers with the first detector that finds anything; building it never
raises for a missing model or package, it records why each was left out in `notes`.
Importing this package loads no model and imports neither onnxruntime nor cv2.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, Union, runtime_checkable

from PIL import Image

log = logging.getLogger(__name__)

KINDS = ("face", "head", "salient")
DECODE_SIDE = 640  # a file is decoded no smaller than this on either side: the models look at 640 at most


@dataclass(frozen=True)
class Box:
    """One thing found: its kind, its corners in pixels of the image given to `detect`, and how sure (0–1)."""

    kind: str  # "face" | "head" | "salient"
    left: float
    top: float
    right: float
    bottom: float
    score: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    def to_dict(self) -> dict:
        return {"kind": self.kind, "box": [self.left, self.top, self.right, self.bottom], "score": self.score}


@runtime_checkable
class Detector(Protocol):
    """Finds faces/heads (or the salient region) in an upright RGB picture; boxes best first."""

    name: str

    def detect(self, image: Image.Image) -> list[Box]: ...


@dataclass(frozen=True)
class Detection:
    """What a detector made of one image: its boxes (best first), which detector answered, and — when there are
    none because the image could not be read or analysed — why."""

    boxes: tuple[Box, ...] = ()
    detector: str = ""
    reason: str | None = None  # set when the image was skipped
    notes: tuple[str, ...] = ()  # e.g. which detectors of a chain were unavailable

    @property
    def skipped(self) -> bool:
        return self.reason is not None


@dataclass
class ChainDetector:
    """Asks each detector in turn and answers with the first that finds anything.

    A detector that fails on an image (a broken model file, an image too odd for it) is logged, noted and passed
    over, so one bad model never stops a crop.
    """

    detectors: Sequence[Detector]
    notes: list[str] = field(default_factory=list)  # why detectors were left out when the chain was built
    name: str = "chain"

    def detect(self, image: Image.Image) -> list[Box]:
        return list(self.run(image).boxes)

    def run(self, image: Image.Image) -> Detection:
        """The first non-empty answer, with the chain's notes and those of detectors that failed on this image."""
        notes = list(self.notes)
        for detector in self.detectors:
            try:
                boxes = detector.detect(image)
            except Exception as e:  # a detector's failure on one image must not stop the others: say why
                log.warning("detector %s failed: %s", detector.name, e, exc_info=True)
                notes.append(f"{detector.name} failed on this image: {_why(e)}")
                continue
            if boxes:
                return Detection(boxes=tuple(boxes), detector=detector.name, notes=tuple(notes))
        return Detection(detector=self.name, notes=tuple(notes))


def default_detector(models_root: Path, *, download: bool = False,
                     kinds: Sequence[str] = ("head", "face")) -> ChainDetector:
    """The chain for `kinds`: ONNX models present in `models_root` (the detector store,
    `detect.models.detectors_folder(host.models_dir())`; downloaded there when `download`), then OpenCV's cascades
    where cv2 imports, then saliency. Never raises for a missing model: the reason goes in `notes`. Build it once
    per job: its `detect`/`run` may be called from several threads."""
    from .chain import build_chain

    return build_chain(Path(models_root), download=download, kinds=tuple(kinds))


def detect_image(detector: Detector, source: Union[Path, Image.Image]) -> Detection:
    """Run `detector` on a file (opened the one way images are opened here, upright) or a picture; boxes are in
    that picture's pixels. An image that cannot be read or analysed gives a Detection with its `reason`, never an
    exception. A JPEG file is decoded at reduced scale (both sides still at least `DECODE_SIDE`: the detectors
    look at less) and its boxes scaled back to the full picture."""
    from ..images import ImageProblem, open_training_image

    name = getattr(detector, "name", type(detector).__name__)
    scale = (1.0, 1.0)
    if isinstance(source, Image.Image):
        image = source
    else:
        loaded = open_training_image(Path(source), draft=(DECODE_SIDE, DECODE_SIDE))
        if isinstance(loaded, ImageProblem):
            return Detection(detector=name, reason=loaded.reason)
        image = loaded.image
        if loaded.full_size[0] and loaded.full_size != image.size:
            scale = (loaded.full_size[0] / image.width, loaded.full_size[1] / image.height)
    if image.width < 1 or image.height < 1:
        return Detection(detector=name, reason="the image is empty (0 pixels)")
    if image.mode != "RGB":
        image = image.convert("RGB")
    run = getattr(detector, "run", None)
    try:
        result = run(image) if callable(run) else Detection(boxes=tuple(detector.detect(image)), detector=name)
    except Exception as e:  # any detector's failure on one image becomes that image's reason
        log.warning("detector %s failed: %s", name, e, exc_info=True)
        return Detection(detector=name, reason=f"the detector {name} could not analyse it: {_why(e)}")
    if scale == (1.0, 1.0):
        return result
    return replace(result, boxes=tuple(_scaled(b, *scale) for b in result.boxes))


def _scaled(box: Box, sx: float, sy: float) -> Box:
    return Box(kind=box.kind, left=box.left * sx, top=box.top * sy, right=box.right * sx, bottom=box.bottom * sy,
               score=box.score)


def _why(e: BaseException) -> str:
    """An error for a user: our own messages whole (they say what to do), others by type and first line."""
    from ..errors import LorakitError

    return str(e) if isinstance(e, LorakitError) else f"{type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = (str(e) or type(e).__name__).strip().splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."


__all__ = ["KINDS", "Box", "ChainDetector", "Detection", "Detector", "default_detector", "detect_image"]
