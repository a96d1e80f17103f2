"""The dataset report: what sd-scripts will see, per concept, and what deserves a look before training."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..images import CAPTION_SUFFIXES, IMAGE_SUFFIXES
from ..progress import ProgressFn
from ..project import Project
from .duplicates import DuplicateGroup, find_duplicates
from .index import DatasetIndex, IndexEntry

# Short-side bands, in pixels, for the resolution histogram.
RESOLUTION_BANDS = ((0, "< 512"), (512, "512–767"), (768, "768–1023"), (1024, "1024–1535"), (1536, "≥ 1536"))


def resolution_band(width: int, height: int) -> str:
    short = min(width, height)
    label = RESOLUTION_BANDS[0][1]
    for lower, name in RESOLUTION_BANDS:
        if short >= lower:
            label = name
    return label


@dataclass
class ConceptReport:
    name: str
    kind: str
    repeats: int
    folder: str
    images: int = 0
    resolutions: dict[str, int] = field(default_factory=dict)
    small_images: list[str] = field(default_factory=list)
    missing_captions: list[str] = field(default_factory=list)
    extension_mismatches: list[str] = field(default_factory=list)
    orphan_captions: list[str] = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)
    nested_images: list[str] = field(default_factory=list)  # in subfolders, which sd-scripts does not read

    @property
    def images_x_repeats(self) -> int:
        return self.images * self.repeats

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "repeats": self.repeats, "folder": self.folder,
                "images": self.images, "images_x_repeats": self.images_x_repeats, "resolutions": self.resolutions,
                "small_images": self.small_images, "missing_captions": self.missing_captions,
                "extension_mismatches": self.extension_mismatches, "orphan_captions": self.orphan_captions,
                "unreadable": self.unreadable, "nested_images": self.nested_images}


@dataclass
class DatasetReport:
    project: str
    resolution: int
    caption_extension: str
    concepts: list[ConceptReport]
    duplicates: list[DuplicateGroup]
    stray_folders: list[str]
    entries: list[IndexEntry]

    @property
    def total_images(self) -> int:
        return sum(c.images for c in self.concepts if c.kind == "dataset")

    @property
    def images_x_repeats(self) -> int:
        return sum(c.images_x_repeats for c in self.concepts if c.kind == "dataset")

    def to_dict(self) -> dict:
        return {"project": self.project, "resolution": self.resolution, "caption_extension": self.caption_extension,
                "total_images": self.total_images, "images_x_repeats": self.images_x_repeats,
                "concepts": [c.to_dict() for c in self.concepts],
                "duplicates": [g.to_dict() for g in self.duplicates], "stray_folders": self.stray_folders}


def build_report(project: Project, progress: Optional[ProgressFn] = None) -> DatasetReport:
    """Scan the project (cached) and gather the per-concept figures and findings."""
    settings = project.settings
    entries = DatasetIndex(project).scan(progress=progress)
    by_folder: dict[str, list[IndexEntry]] = {}
    for e in entries:
        by_folder.setdefault(e.path.rsplit("/", 1)[0], []).append(e)
    concepts = []
    for c in project.concepts():
        report = ConceptReport(name=c.name, kind=c.kind, repeats=c.repeats, folder=c.relpath)
        _fill(report, project.root / c.relpath, by_folder, settings.resolution, settings.caption_extension)
        concepts.append(report)
    readable = [e for e in entries if not e.problem]
    duplicates = find_duplicates([(e.path, e.sha256, e.phash_int) for e in readable],
                                 settings.near_duplicate_distance)
    return DatasetReport(project=project.name, resolution=settings.resolution,
                         caption_extension=settings.caption_extension, concepts=concepts, duplicates=duplicates,
                         stray_folders=project.stray_folders(), entries=entries)


def _fill(report: ConceptReport, folder: Path, by_folder: dict[str, list[IndexEntry]], resolution: int,
          caption_ext: str) -> None:
    rows = by_folder.get(report.folder, [])
    report.nested_images = sorted(e.path for key, group in by_folder.items() if key.startswith(report.folder + "/")
                                  for e in group)
    other_ext = [s for s in CAPTION_SUFFIXES if s != caption_ext]
    bands: Counter[str] = Counter()
    image_stems = set()
    for e in sorted(rows, key=lambda e: e.path):
        path = folder.parent.parent / e.path
        image_stems.add(path.with_suffix("").as_posix())
        if e.problem:
            report.unreadable.append({"image": e.path, "reason": e.problem})
            continue
        report.images += 1
        bands[resolution_band(e.width, e.height)] += 1
        if min(e.width, e.height) < resolution:
            report.small_images.append(e.path)
        if not path.with_suffix(caption_ext).is_file():
            if any(path.with_suffix(s).is_file() for s in other_ext):
                report.extension_mismatches.append(e.path)
            else:
                report.missing_captions.append(e.path)
    report.resolutions = {name: bands[name] for _, name in RESOLUTION_BANDS if bands[name]}
    if folder.is_dir():
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() in CAPTION_SUFFIXES and p.with_suffix("").as_posix() not in image_stems \
                    and p.suffix.lower() not in IMAGE_SUFFIXES:
                report.orphan_captions.append(p.relative_to(folder.parent.parent).as_posix())
