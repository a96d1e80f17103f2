"""What every tagger shares: one protocol, typed results, and the options that turn scores into a caption.

A tagger splits its work in two so that the pipeline can keep the model busy: `prepare` turns one decoded
image into the model's input (CPU work, run in parallel workers, no model needed), `predict` runs the model on
a stacked batch of prepared inputs. Heavy libraries (onnxruntime, torch, open_clip) are imported on first use
inside the tagger, never at import time of this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

# Where a tag came from. WD14: "general", "character", "rating"; CLIP: the vocabulary file's category
# ("style", "medium", "lighting", "colour", "camera angle", "shot distance", "gaze", …).
Category = str
TaggerName = Literal["wd14", "clip", "deepbooru", "webui-clip"]


@dataclass(frozen=True)
class TagScore:
    tag: str          # as it will be written (underscores already spaces; `\\(` escaping is the combiner's choice)
    score: float      # the model's confidence, 0–1 (CLIP: the softmax over its category)
    category: Category


@dataclass(frozen=True)
class ImageTags:
    """The tags one tagger found on one image, already thresholded and ordered."""

    tags: tuple[TagScore, ...]

    @property
    def names(self) -> list[str]:
        return [t.tag for t in self.tags]


@runtime_checkable
class Tagger(Protocol):
    """One model. `prepare` is pure CPU work and thread-safe; `predict` takes `np.stack` of prepared inputs."""

    name: str           # e.g. "wd-vit-tagger-v3" or "ViT-L-14/openai"
    device: str         # what runs the model, for the user: "CUDA (onnxruntime-gpu)", "CPU", …
    batch_limit: int    # the largest batch the model accepts (1 for models fixed to batch 1)

    def prepare(self, image: Image.Image) -> np.ndarray: ...
    def predict(self, batch: np.ndarray) -> list[ImageTags]: ...
    def unload(self) -> None: ...
