"""Judge a LoRA: does it copy its training images, how strong is the style, does it still follow a prompt.

The shared types every part of issue 12 codes against. Nothing here loads a model or touches the network.

Three parts:

* **Copy detection** (`judge/descriptors.py`, `judge/memorise.py`): a `Descriptor` is an `embed.Embedder` (so the
  project's embedding store caches the training side by content hash) with a copy threshold in its own units.
  `sscd` — Meta's SSCD disc_mixup ResNet-50 copy-detection descriptor (the memorisation studies' standard; cosine
  ≥ 0.5 marks a replica), downloaded once as TorchScript into the models folder; `clip` — the project's CLIP
  embedder; `perceptual` — a descriptor computed from the pixels that needs no download (the fallback).
  Comparison is one matrix product: `nearest(samples, training)`.
* **Scores** (`judge/scores.py`, `judge/service.py`): a grid made by `evaluate.service.EvalService` (epoch × weight ×
  prompt × seed, its cells on disk) is scored cell by cell — copying, style strength, adherence — and a cell is
  recommended. The result is `eval/<grid id>/judge.json` beside the grid's report.json (layout below).
* **Autopilot** (`lib_lorakit/autopilot/`): folder → tag → audit → train → register → grid → judge → card.

`judge.json` (written atomically after each stage; the front ends show it as it stands):

    {"grid": ID, "run": RUN, "project": NAME, "state": "running|done|failed|cancelled|interrupted", "error": "",
     "request": {...JudgeRequest.to_dict()},
     "descriptor": {"name": "sscd|clip|perceptual", "id": EMBEDDER_ID, "threshold": 0.5,
                    "unit": "cosine similarity of SSCD descriptors", "fallback": "" or why another was used},
     "embedder": CLIP EMBEDDER ID (strength, adherence), "training_images": N, "skipped": [[image, reason]],
     "baseline": {"weight": "0", "clip_score": F, "similarity_to_training": F, "training_self_similarity": F},
     "cells": [{"epoch": LABEL, "weight": "0.8", "copy_rate": F, "strength": F, "adherence": F | null,
                "clip_score": F | null, "diversity": F,
                "samples": [{"cell": INDEX, "image": "eval/ID/cells/0003.png", "prompt": TEXT,
                             "kind": "caption" | "off", "seed": N, "nearest": "dataset/1_x/a.png",
                             "similarity": F, "copy": BOOL}]}],
     "epochs": [{"epoch": LABEL, "weight": "1", "copy_rate": F, "diversity": F, "copies": N, "samples": N}],
     "first_copying_epoch": LABEL | null,
     "recommendation": {"epoch": LABEL, "weight": F, "goal": "style|character", "reasons": [TEXT, ...],
                        "scores": {"strength": F, "adherence": F, "copy_rate": F}} | null,
     "why_none": TEXT (when recommendation is null), "elapsed_s": F}

Units: `similarity` and `threshold` are cosine similarities of the descriptor named (−1…1); `copy_rate` a share
0…1; `strength` the share of the way from the base model (weight 0: 0.0) to the training images themselves (1.0),
measured as mean CLIP cosine to the training set's centroid; `adherence` the cell's CLIP score (mean cosine of each
off-dataset sample with its own prompt) divided by the base model's (1.0 = follows prompts as well as without the
LoRA); `diversity` the mean pairwise cosine distance among the cell's samples (descriptor space).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from ..embed import Embedder

DESCRIPTORS = ("sscd", "clip", "perceptual")
DEFAULT_DESCRIPTOR = "sscd"


@runtime_checkable
class Descriptor(Embedder, Protocol):
    """A copy-detection descriptor: an Embedder (float32, L2-normalised rows) that knows its copy threshold."""

    id: str  # the store key: names the model and its weights
    name: str  # one of DESCRIPTORS (or a test's)
    threshold: float  # cosine similarity at or above which a sample counts as a copy
    unit: str  # the threshold's unit in words, e.g. "cosine similarity of SSCD descriptors"


@dataclass(frozen=True)
class SampleMatch:
    """One sample compared with the training images: its nearest one and how close."""

    image: str  # as given (a path the user gave, or project-relative for a grid's cell)
    nearest: str  # project-relative path of the nearest training image
    similarity: float
    copy: bool

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "nearest": self.nearest, "similarity": round(float(self.similarity), 4),
                "copy": bool(self.copy)}


@dataclass(frozen=True)
class OverfitReport:
    """`overfit PROJECT --samples DIR`: every sample's nearest training image, the share that are copies."""

    samples: list[SampleMatch]
    copy_rate: float
    descriptor: str  # the descriptor's name (sscd, clip, perceptual)
    descriptor_id: str
    threshold: float
    unit: str
    diversity: Optional[float] = None  # mean pairwise cosine distance among the samples (None for fewer than 2)
    training_images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image as given, reason): unreadable samples
    fallback: str = ""  # why the descriptor asked for was not used ("" when it was)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": [s.to_dict() for s in self.samples], "copy_rate": round(float(self.copy_rate), 4),
                "descriptor": self.descriptor, "descriptor_id": self.descriptor_id,
                "threshold": self.threshold, "unit": self.unit,
                "diversity": None if self.diversity is None else round(float(self.diversity), 4),
                "training_images": self.training_images,
                "skipped": [[i, r] for i, r in self.skipped], "fallback": self.fallback}


def nearest(samples: np.ndarray, training: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each sample row, the index of the most similar training row and that cosine similarity: one matrix
    product (rows are L2-normalised). Empty training → ValueError."""
    samples = np.asarray(samples, dtype=np.float32)
    training = np.asarray(training, dtype=np.float32)
    if training.ndim != 2 or len(training) == 0:
        raise ValueError("no training vectors to compare with")
    if len(samples) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    sims = samples @ training.T
    idx = np.argmax(sims, axis=1)
    return idx, sims[np.arange(len(samples)), idx]


def diversity(vectors: np.ndarray) -> Optional[float]:
    """Mean pairwise cosine distance (1 − cosine) among L2-normalised rows; None for fewer than two."""
    v = np.asarray(vectors, dtype=np.float32)
    n = len(v)
    if n < 2:
        return None
    sims = v @ v.T
    off = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return float(1.0 - off)


def copy_rate(similarities: Sequence[float], threshold: float) -> float:
    """The share of similarities at or above the threshold (0 for none)."""
    sims = list(similarities)
    return (sum(1 for s in sims if s >= threshold) / len(sims)) if sims else 0.0
