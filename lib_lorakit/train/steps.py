"""The step calculator: how many steps a run takes, how often each image is seen, and what looks far off.

sd-scripts counts an epoch as the batches of its dataset: every training image × its folder's repeats, plus,
when regularisation sets exist, as many regularisation images as training images (they are cycled or cut to
match, `DreamBoothDataset.__init__`). It then rounds up per bucket (`make_buckets`: ceil(bucket size / batch))
and divides by gradient accumulation and the number of processes, rounding up (`train_network.py`). We do not
know the buckets before sd-scripts makes them, so `steps_per_epoch` is ceil(images / batch): exact at batch 1
or with one bucket, and at most one step short per extra bucket otherwise (`steps_per_epoch_max` gives the
bound when the bucket count is known).

The rules of thumb come from the users (images × repeats of 200–400 per epoch, about 10 epochs) and from
seeds/002 (200–300 steps per image on small sets, about 50 per image in the thousands). Thresholds are named
constants below; a value outside a target band is a note (`info`), one "far off" it is a `warning`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional

from ..errors import LorakitError
from ..project import Concept, Project
from .validation import split_concept

# what sd-scripts globs in a subset folder (library/train_util.py IMAGE_EXTENSIONS, without the optional avif)
SD_SCRIPTS_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})

# images × repeats per epoch (users' rule) and how far off counts as a warning
EPOCH_IMAGES_TARGET = (200, 400)
EPOCH_IMAGES_FAR = (100, 800)
# epochs (users' rule: about 10)
EPOCHS_TARGET = (8, 12)
EPOCHS_FAR = (4, 25)
# seeds/002: 200–300 steps per image for small sets (~75 images), about 50 per image in the thousands
STEPS_PER_IMAGE_SMALL = (200, 300)
STEPS_PER_IMAGE_LARGE = (30, 80)
SMALL_SET, LARGE_SET = 100, 1000
FAR_FACTOR = 2.0  # steps per image more than this factor outside its band is a warning

Level = Literal["info", "warning"]


@dataclass(frozen=True)
class ConceptCount:
    """One concept folder: its image count and repeats; `is_reg` for a regularisation set."""

    images: int
    repeats: int
    is_reg: bool = False
    name: str = ""


@dataclass(frozen=True)
class StepWarning:
    """A rule of thumb the plan breaks: a stable `code` for tests and the UI, and a sentence for the user."""

    code: str
    level: Level
    message: str


@dataclass(frozen=True)
class StepPlan:
    """The step maths of one run.

    `steps_per_image` is how often each training image is seen (images × repeats × epochs / images): the
    guides' "steps per image", which they count at batch 1.
    """

    train_images: int
    epoch_images: int
    reg_epoch_images: int
    batch_size: int
    gradient_accumulation_steps: int
    epochs: int
    steps_per_epoch: int
    steps_per_epoch_max: int
    total_steps: int
    steps_per_image: float
    warnings: tuple[StepWarning, ...]
    note: str
    validation_images: int = 0  # held out of the training concepts by validation_split (validation.py)

    def codes(self) -> list[str]:
        return [w.code for w in self.warnings]


APPROXIMATION_NOTE = ("sd-scripts rounds up per aspect-ratio bucket, so with batch > 1 and several buckets an "
                      "epoch can take up to one more step per extra bucket.")


def plan_steps(concepts: Iterable[ConceptCount | tuple[int, int]], *, epochs: int | None = 10,
               max_train_steps: int | None = None, batch_size: int = 1, gradient_accumulation_steps: int = 1,
               num_processes: int = 1, buckets: int = 1, validation_split: float = 0.0) -> StepPlan:
    """Steps per epoch and in all for concepts given as ConceptCount or `(images, repeats)` pairs.

    `epochs` wins over `max_train_steps` as in sd-scripts; with `epochs=None` the run lasts `max_train_steps`
    and the epochs are what sd-scripts would report (rounded up). With `validation_split` the training concepts
    count only the images sd-scripts trains on (validation.split_concept).
    """
    counts = [c if isinstance(c, ConceptCount) else ConceptCount(images=c[0], repeats=c[1]) for c in concepts]
    _check_inputs(counts, epochs, max_train_steps, batch_size, gradient_accumulation_steps, num_processes, buckets)
    splits = [split_concept(c.images, validation_split) for c in counts if not c.is_reg]
    counts = [c if c.is_reg else replace(c, images=split_concept(c.images, validation_split).train) for c in counts]
    train = [c for c in counts if not c.is_reg]
    epoch_images = sum(c.images * c.repeats for c in train)
    reg_images = reg_epoch_images(epoch_images, [c for c in counts if c.is_reg])
    batches = math.ceil((epoch_images + reg_images) / batch_size)
    extra = buckets - 1 if batch_size > 1 and batches else 0
    per_epoch = _updates(batches, gradient_accumulation_steps, num_processes)
    per_epoch_max = _updates(batches + extra, gradient_accumulation_steps, num_processes)
    if epochs is not None:
        total, run_epochs = epochs * per_epoch, epochs
    else:
        total = max_train_steps or 0
        run_epochs = math.ceil(total / per_epoch) if per_epoch else 0
    train_images = sum(c.images for c in train)
    views = epoch_images / train_images * (total / per_epoch) if train_images and per_epoch else 0.0
    plan = StepPlan(train_images=train_images, epoch_images=epoch_images, reg_epoch_images=reg_images,
                    batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
                    epochs=run_epochs, steps_per_epoch=per_epoch, steps_per_epoch_max=per_epoch_max,
                    total_steps=total, steps_per_image=round(views, 2), warnings=(), note=APPROXIMATION_NOTE,
                    validation_images=sum(s.validation for s in splits))
    return _with_warnings(plan, counts)


def _updates(batches: int, accumulation: int, processes: int) -> int:
    return math.ceil(batches / processes / accumulation)


def _check_inputs(counts: Sequence[ConceptCount], epochs: int | None, max_train_steps: int | None,
                  batch_size: int, accumulation: int, processes: int, buckets: int) -> None:
    for i, c in enumerate(counts):
        if c.images < 0 or c.repeats < 1:
            raise LorakitError(f"concepts[{i}]: expected images ≥ 0 and repeats ≥ 1, got {c.images} and {c.repeats}")
    for name, value in (("batch_size", batch_size), ("gradient_accumulation_steps", accumulation),
                        ("num_processes", processes), ("buckets", buckets)):
        if value < 1:
            raise LorakitError(f"{name}: expected an integer ≥ 1, got {value}")
    if epochs is None and max_train_steps is None:
        raise LorakitError("Set max_train_epochs or max_train_steps.")
    if (epochs is not None and epochs < 1) or (max_train_steps is not None and max_train_steps < 1):
        raise LorakitError(f"epochs and max_train_steps: expected ≥ 1, got {epochs} and {max_train_steps}")


def reg_epoch_images(train_epoch_images: int, reg: Sequence[ConceptCount]) -> int:
    """Regularisation images per epoch as sd-scripts counts them: whole images (with their repeats) in order
    until the training count is reached, then one more view each, round after round, until it is matched."""
    total = sum(c.images * c.repeats for c in reg)
    if not total or not train_epoch_images:
        return 0
    n = 0
    for c in reg:
        need = train_epoch_images - n
        if need <= c.images * c.repeats:
            return n + math.ceil(need / c.repeats) * c.repeats
        n += c.images * c.repeats
    return train_epoch_images


def steps_per_image_band(train_images: int) -> tuple[float, float]:
    """seeds/002's steps-per-image band for a set of this size: 200–300 up to 100 images, 30–80 from 1,000,
    geometric in between."""
    if train_images <= SMALL_SET:
        return STEPS_PER_IMAGE_SMALL
    if train_images >= LARGE_SET:
        return STEPS_PER_IMAGE_LARGE
    t = math.log(train_images / SMALL_SET) / math.log(LARGE_SET / SMALL_SET)
    lo = STEPS_PER_IMAGE_SMALL[0] ** (1 - t) * STEPS_PER_IMAGE_LARGE[0] ** t
    hi = STEPS_PER_IMAGE_SMALL[1] ** (1 - t) * STEPS_PER_IMAGE_LARGE[1] ** t
    return round(lo, 1), round(hi, 1)


def _with_warnings(plan: StepPlan, counts: Sequence[ConceptCount]) -> StepPlan:
    if plan.train_images == 0:
        found = [StepWarning("no_images", "warning", "No training images: add images to a concept folder.")]
    else:
        found = [*_band("epoch_images", plan.epoch_images, EPOCH_IMAGES_TARGET, EPOCH_IMAGES_FAR,
                        "images × repeats per epoch", "users' rule: 200–400; change the repeats"),
                 *_band("epochs", plan.epochs, EPOCHS_TARGET, EPOCHS_FAR, "epochs", "users' rule: about 10"),
                 *_steps_per_image(plan), *_reg_notes(plan, counts)]
        if plan.batch_size > plan.epoch_images + plan.reg_epoch_images:
            found.append(StepWarning("batch_larger_than_epoch", "warning",
                                     f"Batch size {plan.batch_size} is larger than an epoch "
                                     f"({plan.epoch_images + plan.reg_epoch_images} images): lower it."))
    return StepPlan(**{**plan.__dict__, "warnings": tuple(found)})


def _band(code: str, value: float, target: tuple[float, float], far: tuple[float, float], what: str,
          rule: str) -> list[StepWarning]:
    lo, hi = target
    if lo <= value <= hi:
        return []
    side = "low" if value < lo else "high"
    level: Level = "warning" if value < far[0] or value > far[1] else "info"
    word = "few" if side == "low" else "many"
    return [StepWarning(f"{code}_{side}", level, f"{what[0].upper()}{what[1:]}: {value:g}, too {word} ({rule}; "
                                                 f"target {lo:g}–{hi:g}).")]


def _steps_per_image(plan: StepPlan) -> list[StepWarning]:
    """Too many views per image is a warning when far off (overcooking); too few only a note, since seeds/002
    counted full DreamBooth runs and LoRAs learn in fewer steps."""
    lo, hi = steps_per_image_band(plan.train_images)
    v = plan.steps_per_image
    rule = f"seeds/002: {lo:g}–{hi:g} steps per image for {plan.train_images} images"
    if v > hi:
        level: Level = "warning" if v > hi * FAR_FACTOR else "info"
        return [StepWarning("steps_per_image_high", level,
                            f"Each image is seen {v:g} times ({rule}): it may overcook; use fewer epochs or "
                            "repeats, and pick an earlier epoch if samples look crisp.")]
    if v < lo:
        return [StepWarning("steps_per_image_low", "info",
                            f"Each image is seen {v:g} times ({rule}, counted for DreamBooth; LoRAs need fewer).")]
    return []


def _reg_notes(plan: StepPlan, counts: Sequence[ConceptCount]) -> list[StepWarning]:
    reg_total = sum(c.images * c.repeats for c in counts if c.is_reg)
    if not reg_total:
        return []
    notes = [StepWarning("reg_doubles_epoch", "info", f"Regularisation sets add {plan.reg_epoch_images} images "
                         "to every epoch: as many as the training images.")]
    if reg_total > plan.epoch_images:
        notes.append(StepWarning("reg_unused", "info", f"{reg_total - plan.reg_epoch_images} of {reg_total} "
                                 "regularisation images × repeats are not used (sd-scripts uses only as many "
                                 "as the training images)."))
    elif reg_total < plan.epoch_images:
        notes.append(StepWarning("reg_reused", "info", "Regularisation images are fewer than the training images: "
                                 "sd-scripts shows them more than once per epoch."))
    return notes


def count_images(folder: Path) -> int:
    """Images sd-scripts would train on in `folder`: its own extension list, all lower or all upper case (it globs
    `*.png` and `*.PNG`, so `.Png` is skipped on Linux); sub-folders are not searched."""
    if not Path(folder).is_dir():
        return 0
    suffixes = SD_SCRIPTS_IMAGE_SUFFIXES | {s.upper() for s in SD_SCRIPTS_IMAGE_SUFFIXES}
    return sum(1 for p in Path(folder).iterdir() if p.is_file() and p.suffix in suffixes)


def project_counts(project: Project, concepts: Optional[Sequence[str]] = None) -> list[ConceptCount]:
    """Every concept and regularisation set of `project` (only the named concepts when `concepts` is given; see
    `select_concepts`), counted, in the order the dataset TOML lists them."""

    return [ConceptCount(images=count_images(c.folder), repeats=c.repeats, is_reg=c.kind == "reg", name=c.name)
            for c in select_concepts(project, concepts)]


def plan_project(project: Project, settings: Mapping[str, Any], *, num_processes: int = 1,
                 concepts: Optional[Sequence[str]] = None) -> StepPlan:
    """The step plan of `project` under validated `settings` (epochs, steps, batch size, accumulation)."""
    return plan_steps(project_counts(project, concepts), epochs=settings["max_train_epochs"],
                      max_train_steps=settings["max_train_steps"], batch_size=settings["train_batch_size"],
                      gradient_accumulation_steps=settings["gradient_accumulation_steps"],
                      num_processes=num_processes, validation_split=settings.get("validation_split") or 0.0)


def select_concepts(project: Project, names: Sequence[str] | None = None) -> list[Concept]:
    """The project's concepts a run trains: all when `names` is None, else the dataset concepts named (by name,
    `art`, or folder, `10_art`), in the project's order. Regularisation sets are kept either way: the filter
    chooses what is learnt, not what it is regularised against."""
    concepts = project.concepts()
    if names is None:
        return concepts
    wanted = [str(n).strip() for n in names if str(n).strip()]
    train = [c for c in concepts if c.kind == "dataset"]
    unknown = [n for n in wanted if not any(n in (c.name, c.folder_name) for c in train)]
    if unknown or not wanted:
        have = ", ".join(c.name for c in train) or "none yet"
        what = f"no concept named {', '.join(map(repr, unknown))}" if unknown else "no concept chosen"
        raise LorakitError(f"Project {project.name!r} has {what} (have: {have}).")
    return [c for c in concepts if c.kind == "reg" or c.name in wanted or c.folder_name in wanted]
