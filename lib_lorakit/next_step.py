"""Where a project stands and what to do next, in the words every panel shows, and a cheap stamp that changes
when the project does (the panels compare it to redraw only when something changed).

The counts come from the caption store, which lists what sd-scripts will train on (the top-level images of each
concept folder and the caption it would read), so the Dataset, Captions and Train panels say the same numbers.
Repeats are proposed from the step calculator's rule of thumb: images × repeats of 200–400 per epoch
(`train.steps.EPOCH_IMAGES_TARGET`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from .captions.store import CaptionRecord, CaptionStore
from .dataset.balance import RepeatChange
from .project import KIND_FOLDERS, MAX_REPEATS, PROJECT_FILE, Project
from .train.runner import RunSnapshot
from .train.steps import EPOCH_IMAGES_TARGET

EPOCH_IMAGES_GOAL = sum(EPOCH_IMAGES_TARGET) // 2  # the middle of the band: 300


@dataclass(frozen=True)
class ConceptStatus:
    name: str
    images: int
    repeats: int
    captioned: int


@dataclass(frozen=True)
class ProjectStatus:
    """The training concepts of a project (regularisation sets aside), counted as sd-scripts will see them."""

    project: str
    concepts: tuple[ConceptStatus, ...]
    trigger_words: tuple[str, ...]

    @property
    def images(self) -> int:
        return sum(c.images for c in self.concepts)

    @property
    def captioned(self) -> int:
        return sum(c.captioned for c in self.concepts)

    @property
    def epoch_images(self) -> int:
        return sum(c.images * c.repeats for c in self.concepts)


@dataclass(frozen=True)
class NextStep:
    """`summary` says where the project stands ("14 images, 0 captioned"), `action` what to do next; `done` is
    True when this panel's part is finished and the action points at the next panel."""

    summary: str
    action: str
    done: bool = False

    @property
    def text(self) -> str:
        return f"{self.summary} — {self.action}" if self.summary else self.action


def project_status(project: Project, records: Optional[Sequence[CaptionRecord]] = None) -> ProjectStatus:
    """Counts per training concept; pass the caption records when already read (the Captions panel has them)."""
    rows = CaptionStore(project).records("dataset") if records is None else records
    counts: dict[str, list[int]] = {}
    for r in rows:
        if r.kind == "dataset":
            images, captioned = counts.setdefault(r.concept, [0, 0])
            counts[r.concept] = [images + 1, captioned + (1 if r.exists and r.tags else 0)]
    concepts = tuple(ConceptStatus(name=c.name, repeats=c.repeats, images=counts.get(c.name, [0, 0])[0],
                                   captioned=counts.get(c.name, [0, 0])[1]) for c in project.concepts("dataset"))
    return ProjectStatus(project=project.name, concepts=concepts, trigger_words=project.settings.trigger_words)


# --- repeats ---------------------------------------------------------------------------------------------------------
def proposed_repeats(images: int, other_epoch_images: int = 0) -> int:
    """The repeats that bring a concept of `images` images, beside `other_epoch_images` from the other concepts,
    nearest the middle of 200–400 images × repeats per epoch; 1 when the others already fill an epoch."""
    if images <= 0:
        return 1
    return min(MAX_REPEATS, max(1, round((EPOCH_IMAGES_GOAL - other_epoch_images) / images)))


def in_band(epoch_images: int) -> bool:
    return EPOCH_IMAGES_TARGET[0] <= epoch_images <= EPOCH_IMAGES_TARGET[1]


def propose_repeats(status: ProjectStatus) -> list[RepeatChange]:
    """New repeats for every training concept that bring an epoch near 300 images × repeats, keeping the concepts'
    weights to each other (all repeats scaled by one factor); empty when the epoch is already in the band or no
    change would bring it closer."""
    filled = [c for c in status.concepts if c.images]
    total = status.epoch_images
    if not filled or in_band(total):
        return []
    if len(filled) == 1:
        new = {filled[0].name: proposed_repeats(filled[0].images)}
    else:
        new = {c.name: min(MAX_REPEATS, max(1, round(c.repeats * EPOCH_IMAGES_GOAL / total))) for c in filled}
    plan = [RepeatChange(concept=c.name, images=c.images, repeats=c.repeats, new_repeats=new[c.name])
            for c in filled]
    after = sum(c.new_steps for c in plan)
    if abs(after - EPOCH_IMAGES_GOAL) >= abs(total - EPOCH_IMAGES_GOAL):
        return []
    return plan


# --- the panels' next steps -----------------------------------------------------------------------------------------
def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _epoch(status: ProjectStatus) -> str:
    if len(status.concepts) == 1:
        c = status.concepts[0]
        word = "repeat" if c.repeats == 1 else "repeats"
        return f"{_images(c.images)} × {c.repeats} {word} = {c.images * c.repeats}"
    return f"{status.epoch_images} images × repeats"


def _captioned(status: ProjectStatus) -> str:
    return f"{_images(status.images)}, {status.captioned} captioned"


def dataset_next(status: Optional[ProjectStatus]) -> NextStep:
    if status is None:
        return NextStep("", "Create a project: type its name above and press Create project.")
    if not status.images:
        return NextStep("No images yet", "drop images (and their .txt captions, if any) on the box below, or type "
                                         "a folder, then press Import.")
    plan = propose_repeats(status)
    if plan:
        after = sum(c.new_steps for c in plan)
        what = f"{plan[0].new_repeats} repeats" if len(plan) == 1 else "new repeats"
        return NextStep(f"{_epoch(status)} per epoch; the step guide wants {EPOCH_IMAGES_TARGET[0]}–"
                        f"{EPOCH_IMAGES_TARGET[1]}", f"press Use proposed repeats ({what}: {after} per epoch).")
    if status.captioned < status.images:
        return NextStep(_captioned(status), "tag them in the Captions tab.")
    return NextStep(f"{_images(status.images)}, all captioned, {status.epoch_images} per epoch",
                    "check the captions in the Captions tab, then train in the Train tab.", done=True)


def captions_next(status: Optional[ProjectStatus]) -> NextStep:
    if status is None:
        return NextStep("", "Choose or create a project above.")
    if not status.images:
        return NextStep("No images yet", "import some in the Dataset tab.")
    missing = status.images - status.captioned
    if status.captioned == 0:
        return NextStep(_captioned(status), "tag them: press Tag images.")
    if missing:
        return NextStep(_captioned(status), f"tag the other {missing}: press Tag images (captioned images are left "
                                            "as they are).")
    if not status.trigger_words:
        return NextStep(f"All {_images(status.images)} captioned, no trigger word",
                        "set one below (it goes first in every caption), then press Check captions.")
    return NextStep(f"All {_images(status.images)} captioned",
                    "press Check captions, then train in the Train tab.", done=True)


def crop_next(status: Optional[ProjectStatus], *, cut: int = 0, heads_cut: Optional[int] = None) -> NextStep:
    """The Crop panel's line: `cut` images lose a part to sd-scripts' centre crop into their buckets; `heads_cut`
    of them a detected face or head (None: not looked for)."""
    if status is None:
        return NextStep("", "Choose or create a project above.")
    if not status.images:
        return NextStep("No images yet", "import some in the Dataset tab.")
    if heads_cut:
        heads = "1 head would be cut" if heads_cut == 1 else f"{heads_cut} heads would be cut"
        return NextStep(f"{heads} by sd-scripts' centre crop",
                        "smart-crop them (or letterbox them): press Choose the cut images, Preview, then Apply.")
    if not cut:
        return NextStep(f"Every one of the {_images(status.images)} fits its bucket whole",
                        "nothing is cut away; go on to the Direction tab.", done=True)
    trimmed = f"{cut} of {_images(status.images)} trimmed by sd-scripts' centre crop"
    if heads_cut is None:
        return NextStep(trimmed, "tick Find cut faces and press Show buckets to see whether a head is cut.")
    return NextStep(f"{trimmed}, no face or head cut", "crop more if you like, or go on to the Direction tab.",
                    done=True)


def direction_next(status: Optional[ProjectStatus], counts: Optional[dict[str, int]] = None) -> NextStep:
    """The Direction panel's line: `counts` are the images per direction (left, right, front, away, unknown) the
    last estimate and the user's labels give (None: not estimated yet)."""
    if status is None:
        return NextStep("", "Choose or create a project above.")
    if not status.images:
        return NextStep("No images yet", "import some in the Dataset tab.")
    if counts is None:
        return NextStep(f"{_images(status.images)}, directions not estimated yet",
                        "press Estimate (label a few first, if you like: click pictures, then Faces left/right).")
    left, right = counts.get("left", 0), counts.get("right", 0)
    shown = ", ".join(f"{n} {'face ' + d if d in ('left', 'right') else d}" for d, n in counts.items() if n)
    if left and left == right:
        return NextStep(shown, "as many face left as right: choose the side under Face, then press Preview and "
                               "Apply.")
    if left and right:
        few, side = (left, "left") if left < right else (right, "right")
        return NextStep(shown, f"normalise them: press Preview, then Apply (the {few} facing {side} are "
                               "mirrored, their captions' left/right swapped).")
    if counts.get("unknown", 0) and not (left or right):
        return NextStep(shown, "label a few images (click them, then Faces left/right), then press Re-estimate.")
    return NextStep(shown or "No direction found", "every side view faces one way; caption the gaze (suggestions "
                                                   "below), then go on to the Train tab.", done=True)


def train_next(status: Optional[ProjectStatus], latest: Optional[RunSnapshot] = None) -> NextStep:
    if status is None:
        return NextStep("", "Choose or create a project above.")
    if latest is not None and latest.state in ("queued", "starting", "running"):
        return NextStep(f"Run {latest.id} is {latest.state}", "follow it below; Stop keeps what it has saved.")
    if not status.images:
        return NextStep("No training images", "import some in the Dataset tab.")
    if status.captioned < status.images:
        summary = (_captioned(status) if not status.captioned
                   else f"{status.images - status.captioned} of {_images(status.images)} have no caption")
        return NextStep(summary, "tag them in the Captions tab (without a caption sd-scripts trains an image on "
                                 "its folder's name).")
    if propose_repeats(status):
        return NextStep(f"{_epoch(status)} per epoch",
                        f"the step guide wants {EPOCH_IMAGES_TARGET[0]}–{EPOCH_IMAGES_TARGET[1]}: press Use "
                        "proposed repeats in the Dataset tab, or raise max train epochs in the Train tab's Basics.")
    if latest is not None and latest.state == "succeeded":
        return NextStep(f"Run {latest.id} succeeded", "press Register to put its LoRAs in the webui's Lora "
                                                      "folder, or train again with other settings.", done=True)
    if latest is not None and latest.state in ("failed", "interrupted", "stopped"):
        return NextStep(f"Run {latest.id} {latest.state}", "read its box below, then press Resume or Train.")
    return NextStep(f"{_captioned(status)}, {status.epoch_images} per epoch",
                    "choose a preset and a base model, press Check, then Train.")


def results_next(status: Optional[ProjectStatus], latest: Optional[RunSnapshot] = None, saved: int = 0,
                 grid: Optional[dict] = None) -> NextStep:
    """The Results panel's line: `latest` is the newest run that saved files (`saved` of them), `grid` the newest
    grid of the project as `EvalService.list` gives it (None: no grid yet)."""
    if status is None:
        return NextStep("", "Choose or create a project above.")
    if latest is None or not saved:
        return NextStep("No saved LoRA yet", "train in the Train tab; every epoch it saves can be compared here.")
    files = f"{saved} file" if saved == 1 else f"{saved} files"
    if grid is not None and grid.get("state") in ("queued", "running"):
        return NextStep(f"Grid {grid.get('id')} is being made", "follow it below; Cancel keeps what it made.")
    if grid is not None and grid.get("state") == "interrupted" and grid.get("run") == latest.id:
        return NextStep(f"Grid {grid.get('id')} was interrupted", "pick it below and press Resume.")
    if grid is not None and grid.get("state") == "done" and grid.get("run") == latest.id:
        return NextStep(f"Grid {grid.get('id')} is made", "pick the best cell and press Use this cell: its weight "
                                                          "becomes the card's preferred weight.", done=True)
    if latest.active:
        return NextStep(f"Run {latest.id} is {latest.state}, {files} saved so far",
                        "make a grid of what it saved, or wait for it to finish.")
    return NextStep(f"Run {latest.id} saved {files}", "make a grid to pick one: choose the weights and prompts, "
                                                      "then press Make grid.")


# --- the change stamp -----------------------------------------------------------------------------------------------
def change_stamp(project: Project) -> str:
    """A short string that changes when an image or caption is added, replaced or removed in a concept folder, a
    concept folder is made, renamed or removed, project.toml is saved, or a run folder appears.

    Every write of Train Style renames a temporary file into place, which updates the folder's modification time;
    so the stamp is one `stat` per concept folder, cheap enough to poll. Run progress is left out (the run box
    follows a run on its own), so a training run does not make the panels redraw every second.
    """
    root = str(project.root)
    paths = [os.path.join(root, PROJECT_FILE), root, os.path.join(root, "runs")]
    for sub in KIND_FOLDERS.values():
        base = os.path.join(root, sub)
        paths.append(base)
        try:
            with os.scandir(base) as it:
                paths += sorted(e.path for e in it if not e.name.startswith("."))
        except OSError:
            continue
    h = hashlib.blake2b(digest_size=8)
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_mtime_ns}\0{st.st_size}\0{st.st_ino}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"{p}\0-\n".encode("utf-8", "surrogateescape"))
    return f"{project.name}:{h.hexdigest()}"
