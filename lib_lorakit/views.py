"""What the Dataset and Captions panels show of a project, each read in one call (`Studio.dataset_view`,
`Studio.caption_view`), so a panel's handler only formats: the counts, the gallery's thumbnails, the next step and the
change stamp come from the same reading the CLI and the API make."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .captions.ops import TagCount, filter_records, frequency
from .captions.service import CaptionService
from .captions.store import CaptionRecord, HistoryEntry
from .dataset.index import DatasetIndex, IndexEntry
from .dataset.report import DatasetReport, build_report
from .dataset.thumbs import thumbnail
from .next_step import ProjectStatus, change_stamp, project_status
from .project import Project

GALLERY_LIMIT = 120  # images a gallery shows; thumbnails are made for these only


@dataclass(frozen=True)
class Thumb:
    image: str  # project-relative path of the training image
    file: Path  # its cached thumbnail


@dataclass(frozen=True)
class DatasetView:
    report: DatasetReport
    thumbs: list[Thumb]  # of the first GALLERY_LIMIT images the report lists, those that could be read
    status: ProjectStatus
    stamp: str  # taken before reading: a change made meanwhile shows at the next sync


@dataclass(frozen=True)
class CaptionView:
    records: list[CaptionRecord]  # every caption of the project
    shown: list[CaptionRecord]  # those the concept and tag filters keep
    thumbs: list[Thumb]  # of the shown images (the first GALLERY_LIMIT), those that could be read
    frequency: list[TagCount]  # the tags of the chosen concept (all images without one), tag filters aside
    history: list[HistoryEntry]  # the newest caption changes
    trigger_words: tuple[str, ...]
    concepts: list[str]
    status: ProjectStatus
    stamp: str  # taken before reading, as DatasetView's


def thumbnails(project: Project, images: Iterable[str], *, entries: Optional[Sequence[IndexEntry]] = None,
               limit: int = GALLERY_LIMIT) -> list[Thumb]:
    """Thumbnails of the first `limit` of `images` (made on first use); an unreadable image is left out."""
    by_path = {e.path: e for e in (DatasetIndex(project).scan() if entries is None else entries)}
    thumbs = []
    for i, image in enumerate(images):
        if i >= limit:
            break
        e = by_path.get(image)
        file = thumbnail(project, image, e.sha256) if e and not e.problem else None
        if file:
            thumbs.append(Thumb(image=image, file=file))
    return thumbs


def dataset_view(project: Project, *, limit: int = GALLERY_LIMIT) -> DatasetView:
    stamp = change_stamp(project)
    report = build_report(project)
    thumbs = thumbnails(project, [e.path for e in report.entries], entries=report.entries, limit=limit)
    return DatasetView(report=report, thumbs=thumbs, status=project_status(project), stamp=stamp)


def caption_view(captions: CaptionService, name: str, *, concept: Optional[str] = None, with_all: Sequence[str] = (),
                 without: Sequence[str] = (), with_any: Sequence[str] = (), history: int = 10,
                 limit: int = GALLERY_LIMIT) -> CaptionView:
    project = captions.project(name)
    stamp = change_stamp(project)
    every = captions.records(name)  # read once; the filters and the table work on it in memory
    in_concept = filter_records(every, concept=concept or None)
    shown = filter_records(in_concept, with_all=with_all, without=without, with_any=with_any)
    return CaptionView(records=every, shown=shown, thumbs=thumbnails(project, [r.image for r in shown], limit=limit),
                       frequency=frequency(in_concept), history=captions.history(name, history),
                       trigger_words=project.settings.trigger_words, concepts=sorted({r.concept for r in every}),
                       status=project_status(project, every), stamp=stamp)
