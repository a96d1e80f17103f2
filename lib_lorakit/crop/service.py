"""Crop a selection of training images: plan boxes with a mode (modes.py), then apply them through one
derivation (derive.py) as one undo step; a dry run plans only.

`CropRequest.from_dict` is the one way the CLI, the API and the tab describe a crop. `run_crop` returns the
`CropReport` all three show: `{"changed": [{"image", "mode", "box", "size", "masked"}], "skipped": [{"image",
"reason"}]}`, boxes in the original's pixels.

Letterbox with `fraction` F < 1 pads only that share of the selection and crops the rest (smart, falling back to
centre): seeds/002 found ~5 % of generations show the border when every image is padded, fewer with regular crops
mixed in. Which images are padded is decided by a hash of their names, so a rerun picks the same ones. The optional
`tag` (e.g. `letterboxed`) is added to the captions of padded images, and taken from the selected images that are
no longer padded, as one caption undo step, so users can put it in the negative prompt.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from PIL import Image

from ..errors import LorakitError, NotFound
from ..images import IMAGE_SUFFIXES, ImageProblem, open_training_image
from ..progress import ProgressFn
from ..project import KIND_FOLDERS, Project
from ..schema import text_list
from . import derive as dv
from . import modes
from .history import DeriveHistory

CROP_MODES = ("smart", "letterbox", "center", "reset", "manual")
MAX_IMAGES = 100_000
HISTORY_LOOKBACK = 200  # caption steps looked at to find a crop's tag step
Progress = Optional[ProgressFn]


@dataclass(frozen=True)
class CropRequest:
    """What to crop and how. `images` (project-relative paths) or `concept` select; neither: every dataset image.
    `aspect`: `square`, `bucket` (each image's sd-scripts bucket at the project's resolution) or `W:H`. `fill`:
    white, edge, blur or #rrggbb (letterbox). `fraction`: the share of the selection letterbox pads. `box`:
    manual's box. `tag`: a caption tag for padded images ("" for none)."""

    mode: str
    images: tuple[str, ...] = ()
    concept: str = ""
    aspect: str = "square"
    fill: str = "white"
    fraction: float = 1.0
    box: Optional[tuple[int, int, int, int]] = None
    tag: str = ""
    dry_run: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CropRequest:
        """Validate plain data (CLI arguments, a JSON body, a form); a bad field is named with what was allowed."""
        if not isinstance(data, Mapping):
            raise LorakitError(f"crop: expected an object with 'mode' and its options, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in set(data) - set(known))
        if unknown:
            raise LorakitError(f"crop: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
        d = {k: v for k, v in data.items() if v is not None}
        mode = d.get("mode")
        if mode not in CROP_MODES:
            raise LorakitError(f"mode: expected one of {', '.join(CROP_MODES)}, got {mode!r}")
        images = text_list(d.get("images", ()), "images", "image paths")
        if len(images) > MAX_IMAGES:
            raise LorakitError(f"images: {len(images):,} given; at most {MAX_IMAGES:,} at once")
        for key in ("concept", "aspect", "fill", "tag"):
            if key in d and not isinstance(d[key], str):
                raise LorakitError(f"{key}: expected text, got {d[key]!r}")
        aspect = d.get("aspect", "square") or "square"
        if aspect != "bucket":
            modes.parse_aspect(aspect)
        fill = dv.check_fill(d.get("fill", "white") or "white")
        fraction = d.get("fraction", 1.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1 \
                or math.isnan(fraction):
            raise LorakitError(f"fraction: expected a number above 0 and at most 1 (the share of images padded), "
                               f"got {fraction!r}")
        box = d.get("box")
        if mode == "manual":
            if box is None:
                raise LorakitError("box: manual mode needs a box [left, top, right, bottom] in the original's pixels")
            box = dv.check_box(box, "box")
        elif box is not None:
            raise LorakitError(f"box: only manual mode takes a box (mode is {mode})")
        tag = str(d.get("tag", "")).strip()
        if "," in tag or "\n" in tag:
            raise LorakitError(f"tag: expected one caption tag without commas, got {tag!r}")
        dry_run = d.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise LorakitError(f"dry_run: expected true or false, got {dry_run!r}")
        return cls(mode=mode, images=tuple(images), concept=d.get("concept", ""), aspect=aspect, fill=fill,
                   fraction=float(fraction), box=box, tag=tag, dry_run=dry_run)


@dataclass(frozen=True)
class CropItem:
    image: str
    mode: str
    box: Optional[tuple[int, int, int, int]]
    size: tuple[int, int]
    masked: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"image": self.image, "mode": self.mode, "box": list(self.box) if self.box else None,
                             "size": list(self.size), "masked": self.masked}
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class CropReport:
    changed: list[CropItem] = field(default_factory=list)
    skipped: list[dv.Skipped] = field(default_factory=list)
    step: str = ""  # the crop's undo step ("" for a dry run or when nothing changed)
    caption_step: str = ""  # the caption undo step that added or removed `tag`
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"changed": [c.to_dict() for c in self.changed], "skipped": [s.to_dict() for s in self.skipped],
                "step": self.step, "caption_step": self.caption_step, "dry_run": self.dry_run}

    def summary(self) -> str:
        verb = "would change" if self.dry_run else "changed"
        masked = sum(c.masked for c in self.changed)
        text = f"{len(self.changed)} image(s) {verb} ({masked} padded), {len(self.skipped)} skipped"
        return text + ("; `crop PROJECT undo` takes it back" if self.step else "")


# --- selection ----------------------------------------------------------------------------------------------------
def select_images(project: Project, request: CropRequest) -> list[str]:
    """The images a request names: its `images`, else its concept's, else every dataset image."""
    if request.images:
        return list(dict.fromkeys(request.images))
    concepts = project.concepts("dataset")
    if request.concept:
        concepts = [project.concept(request.concept, "dataset")]
    out = []
    for c in concepts:
        out += [f"{KIND_FOLDERS[c.kind]}/{c.folder.name}/{name}" for name in sorted(os.listdir(c.folder))
                if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
                and (c.folder / name).is_file()]
    if not out:
        where = f"concept {request.concept!r}" if request.concept else f"project {project.name!r}"
        raise NotFound(f"No training images in {where}: import some first.")
    return out


def padded_share(images: Sequence[str], fraction: float) -> set[str]:
    """The images letterbox pads when only `fraction` of them should be: the same ones on every run."""
    if fraction >= 1:
        return set(images)
    ranked = sorted(images, key=lambda i: hashlib.sha256(i.split("/", 2)[-1].encode("utf-8", "surrogatepass"))
                    .hexdigest())
    return set(ranked[:round(fraction * len(ranked))])


# --- planning -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    item: CropItem
    change: dv.StepsChange


def _aspect_for(request: CropRequest, size: tuple[int, int], resolution: int) -> modes.Aspect:
    if request.aspect != "bucket":
        return modes.parse_aspect(request.aspect)
    from .buckets import Bucketer, BucketSettings

    placed = _bucketer(resolution, BucketSettings, Bucketer).place(*size)
    if placed.problem:
        raise LorakitError(f"no sd-scripts bucket: {placed.problem}")
    w, h = placed.bucket
    g = math.gcd(w, h)
    return modes.Aspect(w // g, h // g)


_bucketers: dict[int, Any] = {}


def _bucketer(resolution: int, settings_cls: Any, bucketer_cls: Any) -> Any:
    if resolution not in _bucketers:
        _bucketers[resolution] = bucketer_cls(settings_cls(resolution=(resolution, resolution)))
    return _bucketers[resolution]


def _plan_one(project: Project, image: str, request: CropRequest, *, pad: bool,
              detector: Optional[Callable[[Path], Sequence[Any]]]) -> _Plan:
    size = dv.original_size(project, image)
    width, height = size
    if request.mode == "reset":
        return _Plan(CropItem(image, "reset", None, size, False), dv.StepsChange(reset_crop=True))
    aspect = _aspect_for(request, size, project.settings.resolution)
    mode, note = request.mode, ""
    if mode == "manual":
        box = modes.manual_box(width, height, request.box or (0, 0, 0, 0))
    elif mode == "letterbox" and pad:
        box = modes.letterbox_box(width, height, aspect)
    elif mode == "center":
        box = modes.center_box(width, height, aspect)
    else:  # smart, or the letterbox share that is cropped
        found = detector(dv.original_path(project, image)) if detector else ()
        box, placed = modes.smart_box(width, height, aspect, found)
        mode, note = ("smart", "") if placed else ("center", "no subject found: centred")
    if box == (0, 0, width, height):  # the whole picture: no crop at all (a JPEG stays byte for byte)
        return _Plan(CropItem(image, mode, box, size, False, note), dv.StepsChange(reset_crop=True, fill=request.fill))
    masked = box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height
    change = dv.StepsChange(crop=box, fill=request.fill, mode=mode)
    return _Plan(CropItem(image, mode, box, (box[2] - box[0], box[3] - box[1]), masked, note), change)


def make_detector(models_dir: Path) -> Optional[Callable[[Path], Sequence[Any]]]:
    """Subject boxes of an original, from the default detector chain (lib_lorakit.detect); None when that package
    cannot be used (smart crop then centres)."""
    try:
        from ..detect import default_detector, detect_image
        from ..detect.models import detectors_folder
    except ImportError:
        return None
    chain = default_detector(detectors_folder(models_dir))
    lock = threading.Lock()  # one model session, used by one plan at a time

    def find(path: Path) -> Sequence[Any]:
        loaded = open_training_image(path)
        if isinstance(loaded, ImageProblem):
            return ()
        with lock:
            return detect_image(chain, loaded.image).boxes

    return find


# --- running ------------------------------------------------------------------------------------------------------
def run_crop(project: Project, request: CropRequest, *,
             detector: Optional[Callable[[Path], Sequence[Any]]] = None, workers: Optional[int] = None,
             progress: Progress = None, cancel: Optional[threading.Event] = None) -> CropReport:
    """Plan every selected image, then (unless a dry run) derive them all as one undo step."""
    # 1. the selection, and which of it letterbox pads
    images = select_images(project, request)
    padded = padded_share(images, request.fraction) if request.mode == "letterbox" else set()
    report = CropReport(dry_run=request.dry_run)
    # 2. a box per image (a bad one is skipped with its reason)
    plans: dict[str, _Plan] = {}
    for i, image in enumerate(images):
        if cancel is not None and cancel.is_set():
            break
        if progress:
            progress(i, len(images) * (1 if request.dry_run else 2), f"planning {image}")
        try:
            plans[image] = _plan_one(project, image, request, pad=image in padded, detector=detector)
        except LorakitError as e:
            if request.images and len(request.images) == 1:
                raise type(e)(f"{image}: {e}") from e  # NotFound stays NotFound (404 over HTTP)
            report.skipped.append(dv.Skipped(image, str(e)))
    if request.dry_run or not plans:
        report.changed = [p.item for p in plans.values()]
        return report
    # 3. one derivation, one undo step
    offset = len(images)
    derived = dv.set_steps(project, {i: p.change for i, p in plans.items()}, _label(request, len(plans)),
                           op={"op": "crop", **_op(request)}, workers=workers, cancel=cancel,
                           progress=(lambda d, t, m: progress(offset + d, offset + t, m)) if progress else None)
    report.step = derived.step
    report.skipped += derived.skipped
    now = {d.previous: d for d in derived.derived}
    for image, plan in plans.items():
        if image in now:
            report.changed.append(CropItem(now[image].image, plan.item.mode, plan.item.box, now[image].size,
                                           now[image].masked, plan.item.note))
    # 4. the caption tag for padded images
    if request.tag and report.changed:
        report.caption_step = _tag_captions(project, request.tag, report.changed)
        if report.step and report.caption_step:  # undoing the crop undoes its tag too
            DeriveHistory(project).annotate(report.step, caption_step=report.caption_step)
    return report


def undo_crop(project: Project) -> dv.DeriveReport:
    """Undo the newest crop/flip step, and the caption step of its tag when that is still the newest caption
    change (a caption edited since is left to `caption undo`)."""
    report = dv.undo(project)
    caption = DeriveHistory(project).get(report.step).op.get("caption_step")
    if caption:
        from ..captions.store import CaptionStore

        store = CaptionStore(project)
        newest = next((h for h in store.history(limit=HISTORY_LOOKBACK) if not h.undone), None)
        if newest is not None and newest.id == caption:
            report.caption_step = store.undo().id
    return report


def redo_crop(project: Project) -> dv.DeriveReport:
    """Redo the crop/flip step undone last, and its tag's caption step when that is the next caption redo."""
    report = dv.redo(project)
    caption = DeriveHistory(project).get(report.step).op.get("caption_step")
    if caption:
        from ..captions.store import CaptionStore

        store = CaptionStore(project)
        undone = []
        for h in store.history(limit=HISTORY_LOOKBACK):
            if not h.undone:
                break
            undone.append(h)
        if undone and undone[-1].id == caption:
            report.caption_step = store.redo().id
    return report


def _label(request: CropRequest, count: int) -> str:
    what = {"reset": "Reset the crop of", "letterbox": "Letterbox", "smart": "Smart-crop", "center": "Centre-crop",
            "manual": "Crop"}[request.mode]
    aspect = "" if request.mode in ("reset", "manual") else f" to {request.aspect}"
    return f"{what} {count} image(s){aspect}"


def _op(request: CropRequest) -> dict[str, Any]:
    return {"mode": request.mode, "aspect": request.aspect, "fill": request.fill, "fraction": request.fraction,
            "box": list(request.box) if request.box else None, "tag": request.tag}


def _tag_captions(project: Project, tag: str, items: Sequence[CropItem]) -> str:
    """Add `tag` to padded images' captions and take it from the others of the selection: one caption undo step."""
    from ..captions.ops import CaptionOp, plan
    from ..captions.store import CaptionStore

    store = CaptionStore(project)
    records = store.records()
    triggers = project.settings.trigger_words
    changes: dict[str, str] = {}
    for op, chosen in (("add", [c.image for c in items if c.masked]), ("remove", [c.image for c in items
                                                                                 if not c.masked])):
        if chosen:
            changes.update(plan(records, CaptionOp(op=op, tags=(tag,), images=tuple(chosen)), trigger_words=triggers))
    padded = sum(c.masked for c in items)
    step = store.apply(changes, label=f"Tag {padded} letterboxed image(s) {tag!r}",
                       op={"op": "crop_tag", "tag": tag})
    return step.id


class CropService:
    """Crop for one Host: what the Studio hands the tab, the CLI and the API (`Studio.crop`)."""

    def __init__(self, host: Any):
        self.host = host

    def _project(self, name: str) -> Project:
        from ..project import Workspace

        return Workspace(self.host.projects_home()).open(name)

    def detector(self, request: CropRequest) -> Optional[Callable[[Path], Sequence[Any]]]:
        """The subject finder smart crop (and letterbox's cropped share) uses; none for the other modes."""
        if request.mode == "smart" or (request.mode == "letterbox" and request.fraction < 1):
            return make_detector(self.host.models_dir())
        return None

    def crop(self, name: str, request: CropRequest, *, progress: Progress = None,
             cancel: Optional[threading.Event] = None) -> CropReport:
        """Plan (a dry run) or apply `request` on project `name`."""
        project = self._project(name)
        return run_crop(project, request, detector=self.detector(request), progress=progress, cancel=cancel)

    def start(self, name: str, request: CropRequest) -> Any:
        """The same crop as a background job (progress, cancel; its report is the job's result)."""
        from ..jobs import job_manager

        self._project(name)

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self.crop(name, request, progress=progress, cancel=cancel).to_dict()

        return job_manager(self.host.projects_home()).start(
            kind="crop", project=name, title=f"{_label(request, len(request.images) or 0)} in {name}".replace(
                " 0 image(s)", ""), work=work)

    def undo(self, name: str) -> dv.DeriveReport:
        return undo_crop(self._project(name))

    def redo(self, name: str) -> dv.DeriveReport:
        return redo_crop(self._project(name))

    def history(self, name: str, limit: int = 20) -> list[Any]:
        return dv.history(self._project(name), limit)

    def flip(self, name: str, images: Sequence[str], on: bool) -> dv.DeriveReport:
        return dv.flip(self._project(name), images, on)

    def steps(self, name: str, image: str) -> dv.Steps:
        return dv.steps_of(self._project(name), image)

    def original(self, name: str, image: str, *, side: int) -> tuple[Image.Image, tuple[int, int]]:
        """The upright original `image` is derived from, decoded to at least `side` pixels a side where that is
        cheaper, and its full size (the pixels crop boxes are measured in)."""
        project = self._project(name)
        size = dv.original_size(project, image)
        loaded = open_training_image(dv.original_path(project, image), max_pixels=project.settings.max_image_pixels,
                                     draft=(side, side))
        if isinstance(loaded, ImageProblem):
            raise LorakitError(f"{image}: its original cannot be read ({loaded.reason}).")
        return loaded.image, size
