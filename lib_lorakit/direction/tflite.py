"""Google Teachable Machine image models (TensorFlow Lite export: `model_unquant.tflite` + `labels.txt`) as the
sorter's classifier, run through LiteRT (`ai-edge-litert`), which is installed on first use with a message saying so.

Teachable Machine's image models take one 224 × 224 RGB image scaled to [-1, 1] (a centre square, resized) and give
one probability per line of `labels.txt` (`0 Class 1`, `1 Class 2`, …). The shapes are checked against the labels
when the model is installed, so a mismatched pair is refused with the reason, not mis-sorted.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from .. import procs
from ..errors import LorakitError, NotFound
from ..fsutil import atomic_copy
from ..project import Project

log = logging.getLogger(__name__)

PACKAGE = "ai-edge-litert"
MODEL_FILE = "model_unquant.tflite"
LABELS_FILE = "labels.txt"
MAX_LABELS_BYTES = 1 << 20
MAX_MODEL_BYTES = 1 << 30
PIP_TIMEOUT_S = 900  # installing LiteRT downloads one wheel of a few MB


def parse_labels(text: str) -> list[str]:
    """`0 Class 1` lines → `Class 1` (the leading index is Teachable Machine's; a line without one is kept whole)."""
    labels = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        labels.append(rest.strip() if head.isdigit() and rest.strip() else line)
    if len(labels) < 2:
        raise LorakitError(f"{LABELS_FILE} names {len(labels)} class(es); a classifier needs at least two.")
    return labels


def interpreter_class(*, install: bool = True, runner: Optional[Callable[..., Any]] = None) -> Any:
    """LiteRT's Interpreter, installing `ai-edge-litert` into this Python first when it is missing."""
    try:
        return importlib.import_module("ai_edge_litert.interpreter").Interpreter
    except ImportError:
        if not install:
            raise LorakitError(_manual()) from None
    log.warning("Installing %s (LiteRT) to read Teachable Machine models; this happens once.", PACKAGE)
    done = (runner or _pip)([sys.executable, "-m", "pip", "install", PACKAGE])
    if done.returncode != 0:
        tail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise LorakitError(f"Installing {PACKAGE} failed ({tail[0]}). " + _manual())
    importlib.invalidate_caches()
    try:
        return importlib.import_module("ai_edge_litert.interpreter").Interpreter
    except ImportError as e:
        raise LorakitError(f"{PACKAGE} was installed but cannot be imported ({e}). " + _manual()) from e


def _pip(argv: list[str]) -> procs.Captured:
    """pip, without a shell, in a process group of its own, stopped with its children after PIP_TIMEOUT_S."""
    try:
        return procs.run_captured(argv, env=os.environ, timeout_s=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return procs.Captured(returncode=-1, stdout="", stderr=f"pip did not finish in {PIP_TIMEOUT_S} s")


def _manual() -> str:
    return (f"Teachable Machine models need LiteRT: run `{Path(sys.executable).name} -m pip install {PACKAGE}` in the "
            "Python environment Train Style runs in (it has wheels for Linux, macOS and Windows on x86-64 and arm64).")


class TeachableModel:
    """One exported model and its labels, checked against each other."""

    def __init__(self, folder: Path, *, interpreter: Any = None):
        model, labels = Path(folder) / MODEL_FILE, Path(folder) / LABELS_FILE
        if not model.is_file() or not labels.is_file():
            raise NotFound(f"No Teachable Machine model in {folder}: it needs {MODEL_FILE} and {LABELS_FILE}.")
        self.labels = parse_labels(_read_labels(labels))
        self.interpreter = interpreter or interpreter_class()(model_path=str(model))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._check()

    def _check(self) -> None:
        shape = tuple(int(s) for s in self.input["shape"])
        if len(shape) != 4 or shape[3] != 3:
            raise LorakitError(f"The model takes input of shape {shape}; a Teachable Machine image model takes "
                               "[1, height, width, 3]. Export the image project as TensorFlow Lite, floating point.")
        out = tuple(int(s) for s in self.output["shape"])
        if out[-1] != len(self.labels):
            raise LorakitError(f"The model gives {out[-1]} scores but {LABELS_FILE} names {len(self.labels)} classes "
                               f"({', '.join(self.labels)}): the two files come from different exports.")

    def probabilities(self, image: Image.Image) -> np.ndarray:
        """Teachable Machine's preprocessing (centre square, resize, scale to [-1, 1]) and one forward pass."""
        _, height, width, _ = (int(s) for s in self.input["shape"])
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.convert("RGB").crop((left, top, left + side, top + side)).resize((width, height),
                                                                                        Image.Resampling.BILINEAR)
        x = np.asarray(square, dtype=np.float32)[None]
        if np.dtype(self.input["dtype"]) == np.uint8:  # a quantised export takes the pixels as they are
            x = x.astype(np.uint8)
        else:
            x = x / 127.5 - 1.0
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        scores = np.asarray(self.interpreter.get_tensor(self.output["index"]), dtype=np.float32).reshape(-1)
        if np.dtype(self.output["dtype"]) == np.uint8:
            scores = scores / 255.0
        total = float(scores.sum())
        return scores / total if total > 0 else scores


def _read_labels(path: Path) -> str:
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise LorakitError(f"{path} is {path.stat().st_size:,} bytes: too large for a labels file.")
    return path.read_bytes().decode("utf-8", errors="replace")


def install_teachable(model_file: Path, labels_file: Path, folder: Path, *, interpreter: Any = None) -> list[str]:
    """Check the pair (the model loads, its output matches the labels), then keep copies in `folder`; the labels."""
    for f in (model_file, labels_file):
        if not Path(f).is_file():
            raise NotFound(f"No file {f}.")
    if Path(model_file).stat().st_size > MAX_MODEL_BYTES:
        raise LorakitError(f"{model_file} is larger than a Teachable Machine model can be.")
    staging = folder.with_name(folder.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    atomic_copy(Path(model_file), staging / MODEL_FILE)
    atomic_copy(Path(labels_file), staging / LABELS_FILE)
    try:
        labels = TeachableModel(staging, interpreter=interpreter).labels
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return labels


def predict_teachable(project: Project, folder: Path, images: list[str],
                      *, interpreter: Optional[Any] = None) -> list[tuple[str, str, float]]:
    """(image, class, confidence) of each readable image by the installed Teachable Machine model."""
    from ..images import ImageProblem, open_training_image

    model = TeachableModel(folder, interpreter=interpreter)
    settings = project.settings
    found = []
    for image in images:
        loaded = open_training_image(project.root / image, max_pixels=settings.max_image_pixels,
                                     background=settings.background_rgb)
        if isinstance(loaded, ImageProblem):
            continue
        p = model.probabilities(loaded.image)
        best = int(p.argmax())
        found.append((image, model.labels[best], float(p[best])))
    return found
