"""Validation loss: which images sd-scripts holds out, and what the validation curve says about memorising.

sd-scripts v0.10.1 (`train_util.split_train_val`) splits each training concept on its own: its n image paths,
sorted, then shuffled with validation_seed, are cut into the first ceil(n × (1 − s)) for training and the last
round(n × s) for validation. Those two parts overlap when they add up to more than n (3 images at 0.5: 2 and 2),
and a small concept may hold out nothing (round(n × s) = 0). Regularisation sets are never split. Validation runs
after every epoch on the held-out images (each once, at 4 fixed timesteps) and prints its average as
`val_epoch_avg_loss` (train_network.py); `progress.LogReader` turns that into (epoch, step, loss) points.

The sign of memorising: the validation loss turns up for two checks or more in a row after its lowest point while
the training loss keeps falling. The epoch of that lowest point is the last good one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

RISES_TO_FLAG = 2  # consecutive checks with a higher validation loss than the one before
SPLIT_STEP = 0.01  # the finest split suggested when a split holds out nothing


@dataclass(frozen=True)
class ConceptSplit:
    """One training concept under a split: images trained on, validated on, and in both."""

    name: str
    images: int
    train: int
    validation: int
    overlap: int

    @property
    def held_out(self) -> int:
        """Validation images that are not trained on: the only ones whose loss says anything."""
        return self.validation - self.overlap


@dataclass(frozen=True)
class SplitPlan:
    split: float
    concepts: tuple[ConceptSplit, ...]

    @property
    def train(self) -> int:
        return sum(c.train for c in self.concepts)

    @property
    def held_out(self) -> int:
        return sum(c.held_out for c in self.concepts)

    @property
    def overlap(self) -> int:
        return sum(c.overlap for c in self.concepts)

    @property
    def images(self) -> int:
        return sum(c.images for c in self.concepts)


def split_concept(images: int, split: float, name: str = "") -> ConceptSplit:
    """How sd-scripts splits one concept of `images` images (the same float arithmetic, so the same counts)."""
    if not split or images <= 0:
        return ConceptSplit(name=name, images=images, train=images, validation=0, overlap=0)
    train = math.ceil(images * (1 - split))
    validation = round(images * split)
    return ConceptSplit(name=name, images=images, train=train, validation=validation,
                        overlap=max(0, train + validation - images))


def plan_split(concepts: Sequence[tuple[str, int]], split: float) -> SplitPlan:
    """The split of the training concepts, given as (name, images) pairs (regularisation sets left out)."""
    return SplitPlan(split=split, concepts=tuple(split_concept(n, split, name) for name, n in concepts))


def smallest_working_split(concepts: Sequence[tuple[str, int]]) -> Optional[float]:
    """The smallest split (in steps of 0.01) that holds out at least one image and keeps one to train on, with no
    image in both parts if there is such a split."""
    plans = [plan_split(concepts, round(k * SPLIT_STEP, 2)) for k in range(1, round(1 / SPLIT_STEP))]
    working = [p for p in plans if p.held_out and p.train]
    clean = [p for p in working if not p.overlap]
    return (clean or working)[0].split if working else None


@dataclass(frozen=True)
class SplitProblem:
    """What is wrong with a split for the dataset at hand (`error` blocks the run)."""

    code: str
    severity: str
    message: str
    fix: str


def split_problems(concepts: Sequence[tuple[str, int]], split: float) -> list[SplitProblem]:
    """Why `split` cannot measure a validation loss on these training concepts, in words; [] when it can (or is
    off)."""
    if not split:
        return []
    plan = plan_split(concepts, split)
    if plan.images == 0:
        return []  # no images at all: the plan says so already
    if plan.train == 0:
        return [SplitProblem("VALIDATION_SPLIT_NO_TRAINING", "error", f"validation_split {split:g} holds out all "
                             f"{plan.images} training images: sd-scripts would train on none.",
                             "Use a split below 1, e.g. 0.1, or 0 to train without validation.")]
    smallest = smallest_working_split(concepts)
    better = (f"Use validation_split {smallest:g} (the smallest that holds images out cleanly here)"
              if smallest is not None else "Add images to the concepts")
    if plan.held_out == 0:
        how = "; ".join(f"{c.name or 'a concept'}: {c.images} image(s), {c.validation} held out, "
                        f"{c.overlap} of them also trained on" for c in plan.concepts if c.images)
        return [SplitProblem("VALIDATION_SPLIT_NO_IMAGES", "error", f"validation_split {split:g} leaves no "
                             f"validation image that is not also trained on ({how}; sd-scripts holds out "
                             "round(n × split) of each concept's n images and trains on ceil(n × (1 − split))).",
                             f"{better}, or set 0 to train without validation.")]
    if plan.overlap:
        both = ", ".join(f"{c.name or 'a concept'} {c.overlap}" for c in plan.concepts if c.overlap)
        return [SplitProblem("VALIDATION_SPLIT_OVERLAP", "warning", f"validation_split {split:g}: {plan.overlap} "
                             f"validation image(s) are also trained on ({both}: sd-scripts trains on "
                             "ceil(n × (1 − split)) and validates on round(n × split) of n images); "
                             f"{plan.held_out} are held out cleanly.", f"{better}, or accept a noisier validation "
                             "loss.")]
    return []


# --- the curve -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemorisingSign:
    """Validation loss rising after its lowest point while training loss falls; `file` is that epoch's LoRA."""

    since_epoch: int
    rises: int
    val_from: float
    val_to: float
    train_from: float
    train_to: float
    file: Optional[str]

    @property
    def message(self) -> str:
        n = self.since_epoch
        saved = (f"the epoch-{n} file ({self.file}) is the last before it" if self.file else
                 f"the epoch-{n} file is the last before it, but none was saved at epoch {n} (save_every_n_epochs)")
        return (f"Validation loss has risen since epoch {n} ({self.val_from:.4g} → {self.val_to:.4g} over "
                f"{self.rises} checks) while training loss kept falling ({self.train_from:.4g} → "
                f"{self.train_to:.4g}): the model is starting to memorise; {saved}.")

    def to_dict(self) -> dict:
        return {"code": "VALIDATION_LOSS_RISING", "since_epoch": self.since_epoch, "rises": self.rises,
                "val_loss": [self.val_from, self.val_to], "train_loss": [self.train_from, self.train_to],
                "file": self.file, "message": self.message}


def memorising_sign(losses: Sequence[Sequence[float]], val_losses: Sequence[Sequence[float]],
                    files: Sequence[str] = ()) -> Optional[MemorisingSign]:
    """The sign in a run's curves: `losses` are (step, training loss), `val_losses` (epoch, step, validation loss),
    `files` the run's saved LoRA files (sd-scripts names an epoch's `<name>-<epoch:06d>.safetensors`)."""
    points = [(int(e), float(s), float(v)) for e, s, v in val_losses if v == v]  # v == v drops NaN
    if len(points) < RISES_TO_FLAG + 1:
        return None
    best = min(range(len(points)), key=lambda i: points[i][2])
    rises = 0
    while best + rises + 1 < len(points) and points[best + rises + 1][2] > points[best + rises][2]:
        rises += 1
    if rises < RISES_TO_FLAG:
        return None
    last = points[best + rises]
    train_from, train_to = _train_at(losses, points[best][1]), _train_at(losses, last[1])
    if train_from is None or train_to is None or not train_to < train_from:
        return None
    epoch = points[best][0]
    file = next((f for f in files if f.endswith(f"-{epoch:06d}.safetensors")), None)
    return MemorisingSign(since_epoch=epoch, rises=rises, val_from=points[best][2], val_to=last[2],
                          train_from=train_from, train_to=train_to, file=file)


def _train_at(losses: Sequence[Sequence[float]], step: float) -> Optional[float]:
    """The training loss sd-scripts showed last at or before `step`."""
    before = [float(v) for s, v in losses if s <= step and v == v]
    return before[-1] if before else None
