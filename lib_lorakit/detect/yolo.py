"""YOLOv8-format ONNX detectors through onnxruntime (the anime face/head models published for datasets, YOLO-face).

The format (Ultralytics' ONNX export, also YOLO11's): input `[N, 3, H, W]` float 0–1 RGB, the picture scaled to
fit and padded (letterboxed) with grey 114; output `[N, 4 + classes, anchors]`: centre x, centre y, width, height
in the padded input's pixels, then one score per class (already sigmoid). Sizes fixed in the file are used as they
are; a file with free sizes gets the picture scaled so its longer side is `max_side`, each side padded up to a
multiple of 32 (the network's stride). Boxes above `threshold` go through per-class non-maximum suppression and
back to the picture's pixels. Class names come from `labels.json` beside the model (a JSON list, deepghs' layout):
a class whose name holds "head" gives `head` boxes, "face" `face` boxes; without the file every class is `kind`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import LorakitError
from . import Box

log = logging.getLogger(__name__)

STRIDE = 32
PAD_GREY = 114


@dataclass(frozen=True)
class Letterbox:
    """How a picture was placed in the model's input: scaled on each axis, then shifted by the padding."""

    scale_x: float
    scale_y: float
    pad_left: float
    pad_top: float
    width: int  # the input's size
    height: int

    def undo(self, xyxy: np.ndarray) -> np.ndarray:
        """Corners in the input's pixels → corners in the picture's pixels."""
        out = np.asarray(xyxy, dtype=np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_left) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_top) / self.scale_y
        return out


def letterbox(image: Image.Image, *, size: tuple[int | None, int | None],
              max_side: int) -> tuple[np.ndarray, Letterbox]:
    """The model's input for one picture (`[1, 3, H, W]` float32 0–1) and how it was placed.

    `size` is the input's (width, height) where the model fixes it, None where it is free."""
    width, height = image.size
    fixed_w, fixed_h = size
    box_w, box_h = fixed_w or max_side, fixed_h or max_side
    scale = min(box_w / width, box_h / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    in_w = fixed_w or -(-new_w // STRIDE) * STRIDE
    in_h = fixed_h or -(-new_h // STRIDE) * STRIDE
    pad_left, pad_top = (in_w - new_w) // 2, (in_h - new_h) // 2
    canvas = Image.new("RGB", (in_w, in_h), (PAD_GREY,) * 3)
    resized = image if (new_w, new_h) == (width, height) else image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas.paste(resized, (pad_left, pad_top))
    data = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    # the scale actually applied on each axis, after rounding to whole pixels
    placement = Letterbox(scale_x=new_w / width, scale_y=new_h / height, pad_left=pad_left, pad_top=pad_top,
                          width=in_w, height=in_h)
    return np.ascontiguousarray(data), placement


def decode(output: np.ndarray, *, kinds: Sequence[str | None], threshold: float, iou: float,
           placement: Letterbox, image_size: tuple[int, int]) -> list[Box]:
    """Boxes from one image's raw output `[4 + classes, anchors]` (the transposed layout is accepted too): the best
    class with a kind of each anchor at or above `threshold`, per-class NMS, undone letterbox,
    clipped to the picture, best first."""
    out = np.asarray(output, dtype=np.float32)
    if out.ndim != 2:
        raise LorakitError(f"expected one image's YOLO output shaped [4 + classes, anchors], got {list(out.shape)}")
    channels = 4 + len(kinds)
    if out.shape[0] != channels and out.shape[1] == channels:
        out = out.T
    if out.shape[0] != channels:
        raise LorakitError(f"the YOLO output has {out.shape[0]} rows per anchor, expected {channels} (4 box values "
                           f"and {len(kinds)} class scores): the model and its labels.json do not match")
    scores = np.where(np.array([k is not None for k in kinds])[:, None], out[4:], -np.inf)  # unwanted classes out
    best = scores.argmax(axis=0)
    conf = scores[best, np.arange(scores.shape[1])]
    keep = np.flatnonzero(conf >= threshold)
    if keep.size == 0:
        return []
    cx, cy, w, h = out[:4, keep]
    xyxy = placement.undo(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1))
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, image_size[0])
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, image_size[1])
    boxes = []
    for cls in np.unique(best[keep]):
        mine = np.flatnonzero(best[keep] == cls)
        for i in nms(xyxy[mine], conf[keep][mine], iou=iou):
            left, top, right, bottom = (float(v) for v in xyxy[mine][i])
            if right > left and bottom > top:
                boxes.append(Box(kind=kinds[int(cls)], left=left, top=top, right=right, bottom=bottom,
                                 score=float(conf[keep][mine][i])))
    return sorted(boxes, key=lambda b: -b.score)


def nms(xyxy: np.ndarray, scores: np.ndarray, *, iou: float) -> list[int]:
    """Greedy non-maximum suppression: indices of the boxes kept, best first; a box overlapping a kept one by more
    than `iou` (intersection over union) is dropped."""
    order = list(np.argsort(-scores, kind="stable"))
    areas = (xyxy[:, 2] - xyxy[:, 0]).clip(0) * (xyxy[:, 3] - xyxy[:, 1]).clip(0)
    kept: list[int] = []
    while order:
        i, rest = order[0], np.asarray(order[1:], dtype=np.int64)
        kept.append(int(i))
        if rest.size == 0:
            break
        w = (np.minimum(xyxy[i, 2], xyxy[rest, 2]) - np.maximum(xyxy[i, 0], xyxy[rest, 0])).clip(0)
        h = (np.minimum(xyxy[i, 3], xyxy[rest, 3]) - np.maximum(xyxy[i, 1], xyxy[rest, 1])).clip(0)
        overlap = w * h / np.maximum(areas[i] + areas[rest] - w * h, 1e-9)
        order = [int(j) for j in rest[overlap <= iou]]
    return kept


def kinds_from_labels(labels: Sequence[str], *, default: str) -> list[str | None]:
    """The Box kind of each class: "head" or "face" when the name says so, None (ignored) otherwise; a model of
    one class is `default` whatever its name."""
    if len(labels) == 1:
        name = labels[0].lower()
        return ["head" if "head" in name else "face" if "face" in name else default]
    return ["head" if "head" in n.lower() else "face" if "face" in n.lower() else None for n in labels]


def read_labels(path: Path) -> list[str] | None:
    """The class names in a `labels.json` (a JSON list of strings); None when there is no such file."""
    if not path.is_file():
        return None
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LorakitError(f"Cannot read the class names in {path} ({e}): delete its folder to download the "
                           "model again, or write a JSON list such as [\"face\"] there.") from e
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise LorakitError(f"{path} must hold a JSON list of class names such as [\"head\"], got {labels!r}")
    return labels


@dataclass(frozen=True)
class _Session:
    session: Any
    input_name: str
    size: tuple[int | None, int | None]  # (width, height) where the file fixes them
    device: str


class YoloDetector:
    """One YOLOv8-format ONNX model as a `Detector`. The session is created on first use (CUDA when onnxruntime
    offers it, else CPU, as for the taggers); `detect` may be called from several threads."""

    def __init__(self, model: Path, *, kind: str = "face", threshold: float = 0.25, iou: float = 0.7,
                 max_side: int = 640, providers: Sequence[str] | None = None, name: str | None = None):
        model = Path(model)
        self.path = model / "model.onnx" if model.is_dir() else model
        self.name = name or f"yolo:{self.path.parent.name}"
        labels = read_labels(self.path.parent / "labels.json")
        self.kinds = kinds_from_labels(labels, default=kind) if labels else None
        self.default_kind = kind
        self.threshold, self.iou, self.max_side = threshold, iou, max_side
        self._providers = tuple(providers) if providers else None
        self._lock = threading.Lock()
        self._session: _Session | None = None

    @property
    def device(self) -> str:
        return self._load().device

    def detect(self, image: Image.Image) -> list[Box]:
        if image.mode != "RGB":
            image = image.convert("RGB")
        model = self._load()
        data, placement = letterbox(image, size=model.size, max_side=self.max_side)
        output = np.asarray(model.session.run(None, {model.input_name: data})[0])
        if output.ndim != 3 or output.shape[0] != 1:
            raise LorakitError(f"{self.path} is not a YOLOv8-format detector: its output is shaped "
                               f"{list(output.shape)}, expected [1, 4 + classes, anchors]")
        # without labels.json the standard layout [1, 4 + classes, anchors] is assumed
        kinds = self.kinds or [self.default_kind] * (output.shape[1] - 4 if output.shape[1] > 4 else 0)
        return decode(output[0], kinds=kinds, threshold=self.threshold, iou=self.iou, placement=placement,
                      image_size=image.size)

    def unload(self) -> None:
        with self._lock:
            self._session = None

    def _load(self) -> _Session:
        with self._lock:
            if self._session is None:
                self._session = _open_session(self.path, self._providers)
                log.info("detector %s loaded on %s", self.name, self._session.device)
            return self._session


def _open_session(path: Path, providers: Sequence[str] | None) -> _Session:
    try:
        import onnxruntime as ort
    except ImportError:
        raise LorakitError("The face/head detectors need onnxruntime: install onnxruntime (or onnxruntime-gpu) "
                           "into the Python that runs Train Style.") from None
    from ..taggers.wd14 import _default_providers

    options = ort.SessionOptions()
    # idle onnxruntime threads would otherwise spin and take the cores the image decoders need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    chosen = list(providers or _default_providers(ort.get_available_providers()))
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as e:  # onnxruntime raises its own pybind error types for bad and missing files
        raise LorakitError(f"Cannot load the detector {path} ({_first_line(e)}). The file may be incomplete or not "
                           f"an ONNX model: delete {path.parent} to download it again.") from e
    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    if len(shape) != 4 or shape[1] != 3:
        raise LorakitError(f"{path} is not a YOLOv8-format detector: its input is shaped {shape}, expected "
                           "[batch, 3, height, width]")
    fixed = [s if isinstance(s, int) and s > 0 else None for s in shape[2:]]
    first = session.get_providers()[0]
    device = {"CUDAExecutionProvider": "CUDA (onnxruntime-gpu)", "CPUExecutionProvider": "CPU (onnxruntime)"}.get(
        first, f"{first.removesuffix('ExecutionProvider')} (onnxruntime)")
    return _Session(session=session, input_name=inp.name, size=(fixed[1], fixed[0]), device=device)


def _first_line(e: BaseException) -> str:
    text = (str(e) or type(e).__name__).strip().splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."
