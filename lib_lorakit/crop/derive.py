"""One derivation for every training copy: a training image is made from its original by recorded steps.

    original ──orient (as the importer does)──▶ crop or pad to a box ──▶ flip ──▶ dataset/<N>_<concept>/<stem>.<ext>

The steps live per image in `.lorakit/derive.json`, keyed by `<dataset|reg>/<concept name>/<file stem>` (so a
change of repeats, which renames the folder, or of the file's extension keeps them), with the original they start
from and its upright size. Every change re-derives the copy from the ORIGINAL, never from the current copy, so
repeated edits never lose quality, and the same steps always give the same bytes. An image without steps is
today's copy: a hard link to the original when the importer kept it byte for byte, else the same PNG the importer
writes.

- The box is in the upright original's pixels and may reach past its edges: that part is padding, written as
  alpha 0 over the fill colour (white, the edge pixels, a blurred copy, or #rrggbb) in an RGBA PNG, so that
  sd-scripts' `alpha_mask` leaves it out of the loss while the VAE still sees the fill colour.
- A copy is always replaced through a temporary file and a rename: replacing a hard link never touches the
  original. When the extension changes (JPEG → PNG for alpha) the old file goes; the caption, named by the stem,
  stays with its image; the import records and the index follow.
- Every operation is one undo step (`history.py`); undo and redo re-derive from the recorded steps.
- Many images are derived on a pool of threads, one per core (Pillow's decoders, resamplers and encoders release
  the GIL).

An image that was never imported through Train Style (or whose copy was edited by hand since its import) has its
current file kept under `originals/` the first time a step is set, and becomes its own original.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from ..errors import InvalidName, LorakitError, NotFound
from ..fsutil import atomic_copy, atomic_save_image, atomic_write_bytes, read_json
from ..images import FORMAT_SUFFIXES, IMAGE_SUFFIXES, ImageProblem, describe_image, open_training_image, read_header
from ..procs import usable_cores
from ..progress import ProgressFn
from ..project import CONCEPT_FOLDER, KIND_FOLDERS, Project, image_key
from .history import DeriveHistory, DeriveStep

STATE_FILE = "derive.json"
IMPORT_RECORDS = "imports.json"  # the importer's records (dataset/importer.py RECORDS_FILE)
STATE_VERSION = 1
FILL_NAMES = ("white", "edge", "blur")
# how a copy with steps is saved: fast PNG (the encoder dominates a derivation; a training copy is read, not
# kept), near-lossless JPEG, lossless WebP. A copy without steps is the importer's (its PNG: compress_level 4).
SAVE_ARGS: dict[str, dict[str, Any]] = {".png": {"compress_level": 1}, ".jpg": {"quality": 95, "subsampling": 0},
                                        ".webp": {"lossless": True}}
IMPORT_PNG_ARGS = {"compress_level": 4}  # dataset/importer.py: a converted copy without steps is byte-identical
EDITED_AFTER_IMPORT_S = 60  # a copy modified this long after its import was edited by hand: it is kept as it is
Box = tuple[int, int, int, int]
Progress = Optional[ProgressFn]
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def check_fill(value: Any, name: str = "fill") -> str:
    """`white`, `edge`, `blur` or a colour `#rrggbb` (lower-cased)."""
    if isinstance(value, str) and (value in FILL_NAMES or _COLOUR.fullmatch(value)):
        return value.lower()
    raise LorakitError(f"{name}: expected one of {', '.join(FILL_NAMES)} or a colour like '#ffffff', got {value!r}")


def check_box(value: Any, name: str = "box") -> Box:
    """Four integers left, top, right, bottom with right > left and bottom > top."""
    if (not isinstance(value, (list, tuple)) or len(value) != 4
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
        raise LorakitError(f"{name}: expected four whole numbers [left, top, right, bottom], got {value!r}")
    left, top, right, bottom = value
    if right <= left or bottom <= top:
        raise LorakitError(f"{name}: {list(value)} is empty: right must exceed left and bottom must exceed top")
    return left, top, right, bottom


@dataclass(frozen=True)
class Steps:
    """How a training copy is made from its original: `crop` box (None: the whole picture), the `fill` of padding,
    a horizontal `flip`; `mode` names the crop mode that chose the box (for display)."""

    crop: Optional[Box] = None
    fill: str = "white"
    flip: bool = False
    mode: str = ""

    @property
    def empty(self) -> bool:
        return self.crop is None and not self.flip

    def padded(self, width: int, height: int) -> bool:
        """Whether the box reaches past an original of this (upright) size."""
        if self.crop is None:
            return False
        left, top, right, bottom = self.crop
        return left < 0 or top < 0 or right > width or bottom > height

    def to_dict(self) -> dict[str, Any]:
        return {"crop": list(self.crop) if self.crop else None, "fill": self.fill, "flip": self.flip,
                "mode": self.mode}

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> Steps:
        if not data:
            return cls()
        crop = data.get("crop")
        return cls(crop=check_box(crop, "crop") if crop is not None else None,
                   fill=check_fill(data.get("fill", "white")), flip=bool(data.get("flip", False)),
                   mode=str(data.get("mode") or ""))


@dataclass(frozen=True)
class StepsChange:
    """A change to an image's steps: a new `crop` box, `reset_crop` (back to the whole picture), a `fill`, a
    `flip` (True/False), the `mode` to show; None leaves that part as it is."""

    crop: Optional[Box] = None
    reset_crop: bool = False
    fill: Optional[str] = None
    flip: Optional[bool] = None
    mode: Optional[str] = None

    def apply(self, steps: Steps) -> Steps:
        crop = None if self.reset_crop else (check_box(self.crop, "crop") if self.crop is not None else steps.crop)
        mode = "" if self.reset_crop and self.mode is None else (steps.mode if self.mode is None else self.mode)
        return Steps(crop=crop, fill=check_fill(self.fill) if self.fill is not None else steps.fill,
                     flip=steps.flip if self.flip is None else bool(self.flip), mode=mode if crop else "")


@dataclass(frozen=True)
class ImageRef:
    """A training image: `key` names it in the records (`dataset/<concept>/<stem>`), `rel` is its current path."""

    key: str
    rel: str
    path: Path
    kind: str
    concept: str


@dataclass(frozen=True)
class Derived:
    """A copy derived: its path now (`image`) and before (`previous`, differs when the extension changed)."""

    image: str
    previous: str
    size: tuple[int, int]
    masked: bool
    steps: Steps
    entry: Any = field(default=None, compare=False, repr=False)  # its dataset index entry (dataset/index.py)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "previous": self.previous, "size": list(self.size), "masked": self.masked,
                "steps": self.steps.to_dict()}


@dataclass(frozen=True)
class Skipped:
    image: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"image": self.image, "reason": self.reason}


@dataclass
class DeriveReport:
    """What an operation did: `step` is its undo step's id ("" when nothing changed)."""

    step: str = ""
    label: str = ""
    derived: list[Derived] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    caption_step: str = ""  # the caption step undone or redone with it (a letterbox tag), if any

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "label": self.label, "derived": [d.to_dict() for d in self.derived],
                "skipped": [s.to_dict() for s in self.skipped], "caption_step": self.caption_step}


# --- naming images ------------------------------------------------------------------------------------------------
def ref_of(project: Project, image: str) -> ImageRef:
    """The training image at the project-relative path `image` (`dataset/10_name/picture.png`)."""
    parts = str(image).split("/")
    bad = (len(parts) != 3 or parts[0] not in KIND_FOLDERS.values() or not CONCEPT_FOLDER.match(parts[1])
           or parts[2].startswith(".") or "\\" in str(image) or "\0" in str(image)
           or os.path.splitext(parts[2])[1].lower() not in IMAGE_SUFFIXES)
    if bad:
        raise InvalidName(f"{image!r}: expected an image path like 'dataset/10_name/picture.png' inside the project")
    path = project.root / image
    root = os.path.realpath(project.root)
    if not os.path.realpath(path.parent).startswith(root + os.sep):
        raise InvalidName(f"{image!r}: its folder leads outside the project (a link); Train Style derives training "
                          "copies only inside the project.")
    if path.is_symlink():  # never read through (nor adopted as an original from) a link put in the dataset
        raise InvalidName(f"{image!r} is a symbolic link; Train Style derives only regular files in the project.")
    if not path.is_file():
        raise NotFound(f"No image {image!r} in project {project.name!r}.")
    concept = CONCEPT_FOLDER.match(parts[1]).group(2)
    kind = next(k for k, v in KIND_FOLDERS.items() if v == parts[0])
    return ImageRef(key=image_key(image), rel=image, path=path, kind=kind, concept=concept)


def ref_of_key(project: Project, key: str) -> ImageRef:
    """The image a records key names, wherever its concept folder (repeats) and extension are now."""
    folder_kind, concept, stem = key.split("/", 2)
    kind = next(k for k, v in KIND_FOLDERS.items() if v == folder_kind)
    folder = project.concept(concept, kind).folder  # type: ignore[arg-type]
    for name in sorted(os.listdir(folder)):
        if Path(name).stem == stem and Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
            return ref_of(project, f"{folder_kind}/{folder.name}/{name}")
    raise NotFound(f"No image {stem!r} in {folder_kind}/{folder.name} of project {project.name!r} any more.")


# --- the records --------------------------------------------------------------------------------------------------
def _load_records(project: Project) -> dict[str, dict[str, Any]]:
    try:
        data = read_json(project.state_dir / STATE_FILE, default=None)
    except ValueError as e:
        raise LorakitError(f"{project.state_dir / STATE_FILE} is damaged ({e}); move it aside (the crops and flips "
                           "recorded in it are then forgotten) and try again.") from e
    if not data:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise LorakitError(f"{project.state_dir / STATE_FILE} is damaged (not the expected object); move it aside.")
    return data["images"]


def _save_records(project: Project, records: Mapping[str, Mapping[str, Any]]) -> None:
    import json

    data = {"version": STATE_VERSION, "images": dict(sorted(records.items()))}
    atomic_write_bytes(project.state_dir / STATE_FILE, json.dumps(data, ensure_ascii=False, indent=1).encode())


def rekey(project: Project, moved: Callable[[str], str]) -> None:
    """Records keyed by a renamed concept move with it (image_state.rename_concept, under the project's lock)."""
    records = _load_records(project)
    renamed = {moved(key): record for key, record in records.items()}
    if renamed != records:
        _save_records(project, renamed)


def steps_of(project: Project, image: str) -> Steps:
    """The steps recorded for `image` (none: an empty `Steps`)."""
    ref = ref_of(project, image)
    record = _load_records(project).get(ref.key)
    return Steps.from_dict(record["steps"]) if record else Steps()


def masked_concepts(project: Project) -> set[tuple[str, str]]:
    """(kind, concept name) of the concepts holding padded images: their subsets need `alpha_mask`."""
    out = set()
    for key, record in _load_records(project).items():
        steps = Steps.from_dict(record.get("steps"))
        if steps.padded(int(record.get("width", 0)), int(record.get("height", 0))):
            folder_kind, concept, _ = key.split("/", 2)
            out.add((next(k for k, v in KIND_FOLDERS.items() if v == folder_kind), concept))
    return out


def original_size(project: Project, image: str) -> tuple[int, int]:
    """The upright size of `image`'s original (what crop boxes are measured in)."""
    ref = ref_of(project, image)
    record = _load_records(project).get(ref.key)
    if record:
        return int(record["width"]), int(record["height"])
    header = read_header(original_path(project, image))  # nothing is written until a step is set
    if isinstance(header, ImageProblem):
        raise LorakitError(f"its original cannot be read: {header.reason}")
    return header.width, header.height


def original_path(project: Project, image: str) -> Path:
    """The file `image` is derived from (its original, or itself until a step is set on an unimported file)."""
    ref = ref_of(project, image)
    record = _load_records(project).get(ref.key)
    if record:
        return project.root / record["original"]
    found = _ImportIndex(project).original(ref)
    return project.root / found if found else ref.path


class _ImportIndex:
    """The importer's records by (kind folder, concept, stem): which original each copy came from, and when."""

    def __init__(self, project: Project):
        self.project = project
        self._by_stem: Optional[dict[tuple[str, str, str], tuple[str, str, str]]] = None

    def _load(self) -> dict[tuple[str, str, str], tuple[str, str, str]]:
        if self._by_stem is None:
            try:
                data = read_json(self.project.state_dir / IMPORT_RECORDS, default={}) or {}
            except ValueError:
                data = {}
            self._by_stem = {}
            for key, rec in data.items() if isinstance(data, dict) else ():
                parts = str(key).split("/", 2)
                if len(parts) == 3 and isinstance(rec, dict) and rec.get("image") and rec.get("original"):
                    stem = Path(str(rec["image"])).stem
                    self._by_stem[(parts[0], parts[1], stem)] = (str(rec["original"]), str(rec.get("imported", "")),
                                                                 key)
        return self._by_stem

    def original(self, ref: ImageRef) -> Optional[str]:
        found = self._load().get(tuple(ref.key.split("/", 2)))  # type: ignore[arg-type]
        if not found or not (self.project.root / found[0]).is_file():
            return None
        original, imported, _ = found
        if _edited_since(ref.path, self.project.root / original, imported):
            return None
        return original

    def record_key(self, ref: ImageRef) -> Optional[str]:
        found = self._load().get(tuple(ref.key.split("/", 2)))  # type: ignore[arg-type]
        return found[2] if found else None


def _edited_since(copy: Path, original: Path, imported: str) -> bool:
    """Whether the copy was changed by hand after its import (then it, not the original, is what the user wants)."""
    try:
        if os.path.samefile(copy, original):
            return False
        when = _dt.datetime.fromisoformat(imported).timestamp()
    except (OSError, ValueError):
        return False
    return copy.stat().st_mtime > when + EDITED_AFTER_IMPORT_S


def _new_record(project: Project, ref: ImageRef, imports: _ImportIndex) -> dict[str, Any]:
    """A record for an image without one: its original (the import's, or its own file kept under originals/)."""
    original = imports.original(ref) or _adopt(project, ref.path)
    header = read_header(project.root / original)
    if isinstance(header, ImageProblem):
        raise LorakitError(f"its original {original} cannot be read: {header.reason}")
    return {"original": original, "width": header.width, "height": header.height, "steps": Steps().to_dict()}


def _adopt(project: Project, path: Path) -> str:
    """Keep the current file under originals/ (once per content) and return its project-relative path."""
    from ..dataset.index import file_sha256

    header = read_header(path)
    if isinstance(header, ImageProblem):
        raise LorakitError(f"it cannot be read: {header.reason}")
    name = f"{file_sha256(path)[:24]}{FORMAT_SUFFIXES.get(header.format, path.suffix.lower())}"
    dest = project.root / "originals" / name
    if not dest.exists():
        atomic_copy(path, dest)
    return f"originals/{name}"


# --- rendering ----------------------------------------------------------------------------------------------------
@dataclass
class Rendered:
    """A derived picture ready to save; `link`: the original itself is the copy (no steps, kept byte for byte)."""

    image: Optional[Image.Image]
    suffix: str
    masked: bool
    size: tuple[int, int]
    link: bool = False
    save_args: dict[str, Any] = field(default_factory=dict)


def render(original: Path, steps: Steps, *, background: tuple[int, int, int] = (255, 255, 255),
           max_pixels: Optional[int] = None) -> Union[Rendered, ImageProblem]:
    """The training copy `steps` make of `original` (pure: nothing is written)."""
    limit = {"max_pixels": max_pixels} if max_pixels else {}
    if steps.empty:  # today's copy: the file itself, or the importer's PNG of it
        facts = describe_image(original, background=background, **limit)
        if isinstance(facts, ImageProblem):
            return facts
        if facts.keep_bytes_suffix:
            return Rendered(image=None, suffix=facts.keep_bytes_suffix, masked=False,
                            size=(facts.width, facts.height), link=True)
        return Rendered(image=facts.image, suffix=".png", masked=False, size=(facts.width, facts.height),
                        save_args=IMPORT_PNG_ARGS)
    loaded = open_training_image(original, background=background, **limit)
    if isinstance(loaded, ImageProblem):
        return loaded
    img, masked = loaded.image, False
    if steps.crop is not None:
        img, masked = crop_or_pad(img, steps.crop, steps.fill)
    if steps.flip:
        img = ImageOps.mirror(img)
    suffix = ".png" if masked else (loaded.keep_bytes_suffix or ".png")
    return Rendered(image=img, suffix=suffix, masked=masked, size=img.size, save_args=SAVE_ARGS.get(suffix, {}))


def crop_or_pad(img: Image.Image, box: Box, fill: str) -> tuple[Image.Image, bool]:
    """`img` cut to `box`; where the box reaches past the picture, padding of `fill` with alpha 0 (RGBA)."""
    width, height = img.size
    left, top, right, bottom = box
    if left >= 0 and top >= 0 and right <= width and bottom <= height:
        return img.crop(box), False
    inner = (max(left, 0), max(top, 0), min(right, width), min(bottom, height))
    if inner[2] <= inner[0] or inner[3] <= inner[1]:
        raise LorakitError(f"crop box {list(box)} lies outside the {width}×{height} picture")
    part = img.crop(inner)
    at = (inner[0] - left, inner[1] - top)
    size = (right - left, bottom - top)
    canvas = _fill_canvas(part, size, at, fill)
    canvas.paste(part, at)
    alpha = Image.new("L", size, 0)
    alpha.paste(255, (*at, at[0] + part.width, at[1] + part.height))
    canvas.putalpha(alpha)
    return canvas, True


def _fill_canvas(part: Image.Image, size: tuple[int, int], at: tuple[int, int], fill: str) -> Image.Image:
    """The padding's colour under alpha 0: what the VAE sees there."""
    if fill == "edge":
        pads = ((at[1], size[1] - at[1] - part.height), (at[0], size[0] - at[0] - part.width), (0, 0))
        return Image.fromarray(np.pad(np.asarray(part.convert("RGB")), pads, mode="edge"), "RGB")
    if fill == "blur":  # blurred small (an eighth), then scaled up to cover the canvas: as soft, ~50× cheaper
        small = part.resize((max(1, part.width // 8), max(1, part.height // 8)), Image.BILINEAR)
        small = small.filter(ImageFilter.GaussianBlur(max(1, max(size) // 320)))
        scale = max(size[0] / small.width, size[1] / small.height)
        cover = small.resize((max(size[0], round(small.width * scale)), max(size[1], round(small.height * scale))),
                             Image.BILINEAR)
        x, y = (cover.width - size[0]) // 2, (cover.height - size[1]) // 2
        return cover.crop((x, y, x + size[0], y + size[1]))
    colour = (255, 255, 255) if fill == "white" else tuple(int(fill[i:i + 2], 16) for i in (1, 3, 5))
    return Image.new("RGB", size, colour)  # type: ignore[arg-type]


# --- writing ------------------------------------------------------------------------------------------------------
def _place(project: Project, ref: ImageRef, rendered: Rendered, original: Path) -> Path:
    """Replace the copy with `rendered` (through a temporary file and a rename); its path now."""
    target = ref.path.with_suffix(rendered.suffix)
    if target != ref.path and os.path.lexists(target):
        raise LorakitError(f"{target.name} already exists beside {ref.path.name} (both would have the caption "
                           f"{ref.path.stem}.*): rename or remove one, then try again.")
    if rendered.link:
        if not (target.exists() and os.path.samefile(target, original)):
            from ..dataset.importer import link_or_copy

            tmp = target.parent / f".derive.{os.getpid()}-{secrets.token_hex(6)}{rendered.suffix}"
            link_or_copy(original, tmp)
            os.replace(tmp, target)
    else:
        atomic_save_image(rendered.image, target, **rendered.save_args)
    if target != ref.path:
        ref.path.unlink()
    return target


def _derive_one(project: Project, ref: ImageRef, record: Mapping[str, Any], steps: Steps,
                settings: Any, cancel: Optional[threading.Event]) -> Union[Derived, Skipped]:
    if cancel is not None and cancel.is_set():
        return Skipped(ref.rel, "cancelled")
    original = project.root / record["original"]
    rendered = render(original, steps, background=settings.background_rgb, max_pixels=settings.max_image_pixels)
    if isinstance(rendered, ImageProblem):
        return Skipped(ref.rel, f"its original {record['original']} cannot be read: {rendered.reason}")
    try:
        target = _place(project, ref, rendered, original)
    except LorakitError as e:
        return Skipped(ref.rel, str(e))
    except OSError as e:
        return Skipped(ref.rel, f"the copy could not be written: {e.strerror or e}")
    from ..dataset.index import describe_file  # the index entry, on this worker too (a decode and a hash)

    return Derived(image=target.relative_to(project.root).as_posix(), previous=ref.rel, size=rendered.size,
                   masked=rendered.masked, steps=steps, entry=describe_file(project, target))


def _derive_all(project: Project, jobs: Sequence[tuple[ImageRef, Mapping[str, Any], Steps]], *,
                workers: Optional[int], progress: Progress,
                cancel: Optional[threading.Event]) -> list[Union[Derived, Skipped]]:
    """Derive every job, in order, on `workers` threads (default: one per core)."""
    settings = project.settings
    count = max(1, min(len(jobs), workers or usable_cores()))
    results: list[Union[Derived, Skipped]] = []

    def one(job: tuple[ImageRef, Mapping[str, Any], Steps]) -> Union[Derived, Skipped]:
        return _derive_one(project, *job, settings, cancel)

    if count == 1:
        mapped: Iterable[Union[Derived, Skipped]] = map(one, jobs)
        for i, result in enumerate(mapped):
            results.append(result)
            if progress:
                progress(i + 1, len(jobs), result.image)
        return results
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="derive") as pool:
        for i, result in enumerate(pool.map(one, jobs)):
            results.append(result)
            if progress:
                progress(i + 1, len(jobs), result.image)
    return results



# --- the public operations ----------------------------------------------------------------------------------------
def set_steps(project: Project, changes: Mapping[str, StepsChange], label: str, *,
              op: Optional[Mapping[str, Any]] = None, workers: Optional[int] = None, progress: Progress = None,
              cancel: Optional[threading.Event] = None) -> DeriveReport:
    """Change the steps of images (project-relative path → change), re-derive them from their originals and record
    one undo step. Images that cannot be changed are skipped with the reason; the others go ahead."""
    with project.lock():
        records = _load_records(project)
        imports = _ImportIndex(project)
        jobs, skipped = [], []
        for image, change in changes.items():
            try:
                ref = ref_of(project, image)
                record = records.get(ref.key) or _new_record(project, ref, imports)
                steps = change.apply(Steps.from_dict(record["steps"]))
                _check_canvas(project, ref, steps, record)
            except LorakitError as e:
                skipped.append(Skipped(str(image), str(e)))
                continue
            jobs.append((ref, record, steps))
        report = _commit(project, records, jobs, imports, label=label, op=op or {"op": "steps"}, workers=workers,
                         progress=progress, cancel=cancel)
        report.skipped[:0] = skipped
        return report


def _check_canvas(project: Project, ref: ImageRef, steps: Steps, record: Mapping[str, Any]) -> None:
    if steps.crop is None:
        return
    left, top, right, bottom = steps.crop
    width, height = int(record["width"]), int(record["height"])
    if right <= 0 or bottom <= 0 or left >= width or top >= height:
        raise LorakitError(f"crop box {list(steps.crop)} lies outside the {width}×{height} picture")
    limit = project.settings.max_image_pixels
    if (right - left) * (bottom - top) > limit:
        raise LorakitError(f"crop box {list(steps.crop)} makes a picture of {(right - left) * (bottom - top):,} "
                           f"pixels, above the limit of {limit:,} (setting: largest image)")


def _commit(project: Project, records: dict[str, dict[str, Any]],
            jobs: Sequence[tuple[ImageRef, Mapping[str, Any], Steps]], imports: _ImportIndex, *, label: str,
            op: Mapping[str, Any], workers: Optional[int], progress: Progress,
            cancel: Optional[threading.Event], history: bool = True) -> DeriveReport:
    """Derive the jobs, then record what was derived (records, one history step, import records, index)."""
    results = _derive_all(project, jobs, workers=workers, progress=progress, cancel=cancel)
    report = DeriveReport(label=label)
    changes: dict[str, dict[str, Any]] = {}
    moved: dict[str, str] = {}
    for (ref, record, steps), result in zip(jobs, results, strict=True):
        if isinstance(result, Skipped):
            report.skipped.append(result)
            continue
        report.derived.append(result)
        before = Steps.from_dict(record["steps"]).to_dict()
        records[ref.key] = {**record, "steps": steps.to_dict()}
        if before != steps.to_dict():
            changes[ref.key] = {"before": before, "after": steps.to_dict()}
        if result.image != result.previous:
            moved[result.previous] = result.image
    _save_records(project, records)
    if history and changes:
        report.step = DeriveHistory(project).record(label=label, op=op, changes=changes).id
    if moved:
        _follow_moves(project, moved, imports)
    if report.derived:
        from ..dataset.index import DatasetIndex  # a copy whose name changed is dropped by the next scan

        DatasetIndex(project).add([d.entry for d in report.derived])
    return report


def _follow_moves(project: Project, moved: Mapping[str, str], imports: _ImportIndex) -> None:
    """Import records name the copy by path: a copy whose extension changed is recorded under its new name, so
    importing the same file again finds it (instead of adding it a second time)."""
    path = project.state_dir / IMPORT_RECORDS
    try:
        data = read_json(path, default=None)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    changed = False
    for old, new in moved.items():
        key = imports.record_key(ref_of(project, new))
        if key and isinstance(data.get(key), dict) and Path(str(data[key].get("image", ""))).stem == Path(old).stem:
            data[key] = {**data[key], "image": f"{Path(str(data[key]['image'])).parent.as_posix()}/{Path(new).name}"}
            changed = True
    if changed:
        from ..dataset.index import compact_json

        atomic_write_bytes(path, compact_json(data))


def flip(project: Project, images: Iterable[str], on: bool, *, label: Optional[str] = None,
         workers: Optional[int] = None, progress: Progress = None,
         cancel: Optional[threading.Event] = None) -> DeriveReport:
    """Mirror images left to right (`on`), or undo that mirroring (`on=False`), as one undo step."""
    images = list(images)
    text = label or f"{'Flip' if on else 'Unflip'} {len(images)} image(s)"
    return set_steps(project, {i: StepsChange(flip=on) for i in images}, text,
                     op={"op": "flip", "on": on}, workers=workers, progress=progress, cancel=cancel)


def derive(project: Project, image: str) -> Derived:
    """Re-derive one copy from its original and its recorded steps (none recorded: today's plain copy)."""
    with project.lock():
        records = _load_records(project)
        ref = ref_of(project, image)
        record = records.get(ref.key) or _new_record(project, ref, _ImportIndex(project))
        steps = Steps.from_dict(record["steps"])
        report = _commit(project, records, [(ref, record, steps)], _ImportIndex(project), label="derive",
                         op={"op": "derive"}, workers=1, progress=None, cancel=None, history=False)
    if report.skipped:
        raise LorakitError(f"{image}: {report.skipped[0].reason}")
    return report.derived[0]


def undo(project: Project, *, workers: Optional[int] = None) -> DeriveReport:
    """Take back the newest crop/flip step not undone: its images get their steps from before it, re-derived.
    An image whose steps changed since that step is left as it is and reported."""
    with project.lock():
        history = DeriveHistory(project)
        step = history.last_done()
        report = _move(project, step, back=True, workers=workers)
        history.mark(step, undone=True)
        return report


def redo(project: Project, *, workers: Optional[int] = None) -> DeriveReport:
    """Apply again the crop/flip step undone last."""
    with project.lock():
        history = DeriveHistory(project)
        step = history.first_undone()
        report = _move(project, step, back=False, workers=workers)
        history.mark(step, undone=False)
        return report


def history(project: Project, limit: int = 20) -> list[DeriveStep]:
    return DeriveHistory(project).list(limit)


def _move(project: Project, step: DeriveStep, *, back: bool, workers: Optional[int]) -> DeriveReport:
    records = _load_records(project)
    imports = _ImportIndex(project)
    jobs, skipped = [], []
    for key, change in sorted(step.changes.items()):
        source, target = (change["after"], change["before"]) if back else (change["before"], change["after"])
        record = records.get(key)
        current = Steps.from_dict(record["steps"] if record else None).to_dict()
        try:
            ref = ref_of_key(project, key)
        except (LorakitError, OSError) as e:
            skipped.append(Skipped(key, str(e)))
            continue
        if current != Steps.from_dict(source).to_dict():
            skipped.append(Skipped(ref.rel, "changed since this step: left as it is"))
            continue
        try:
            record = record or _new_record(project, ref, imports)
        except LorakitError as e:
            skipped.append(Skipped(ref.rel, str(e)))
            continue
        jobs.append((ref, record, Steps.from_dict(target)))
    report = _commit(project, records, jobs, imports, label=step.label, op=step.op, workers=workers, progress=None,
                     cancel=None, history=False)
    report.step = step.id
    report.skipped[:0] = skipped
    return report
