"""Image embeddings, shared: one store per project keyed by content hash + embedder + variant.

Direction, Sort and the semantic near-duplicate finding read vectors from here. Importing this package loads
no model and touches no network: `embedder_from_spec` builds an embedder whose weights load on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol, Union, runtime_checkable

import numpy as np

from ..progress import ProgressFn

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..project import Project

Progress = Optional[ProgressFn]
Cancel = Optional[Union[threading.Event, Callable[[], bool]]]  # an Event (as jobs pass) or a function


@runtime_checkable
class Embedder(Protocol):
    """One image (and optionally text) embedding model. Vectors are float32, L2-normalised, one row per input."""

    id: str  # stable across runs: names the model and its weights (part of the store's key)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray: ...
    def embed_texts(self, texts: list[str]) -> np.ndarray | None: ...  # None: no text tower


@dataclass(frozen=True)
class EmbeddingTable:
    """The vectors of a set of project images, in the order of `images` (project-relative paths)."""

    images: list[str]
    vectors: np.ndarray  # len(images) × d, float32, L2-normalised
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)

    def vector(self, image: str) -> np.ndarray:
        return self.vectors[self.images.index(image)]


def embedder_from_spec(spec: str, models_root: Path, *, download: bool = True) -> Embedder:
    """An embedder from `MODEL[:PRETRAINED]` (open_clip) or `path/to/config.json:path/to/weights`."""
    from .models import embedder_from_spec as _impl

    return _impl(spec, models_root, download=download)


def embed_project(project: Project, embedder: Embedder, images: list[str] | None = None, *, flipped: bool = False,
                  progress: Progress = None, cancel: Cancel = None) -> EmbeddingTable:
    """The embeddings of `images` (default: every training image), computing only those not yet stored.

    `flipped=True` embeds each image mirrored left-right (a separate variant in the store)."""
    from .store import fill

    return fill(project, embedder, images, flipped=flipped, progress=progress, cancel=cancel)[0]
