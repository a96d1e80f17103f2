"""Non-destructive import: the user's files are only read; originals are kept byte for byte; training copies
are normalised (upright, RGB, one frame) into `dataset/<N>_<concept>/` with their captions.

Every file gets a verdict: imported, already in the project, or skipped with a reason. One bad file never
stops the rest.

Confinement: a folder is walked where it really is (symbolic links resolved), and every file, folder and caption
found is checked against the allowed roots again; captions are read only from regular files, never through a link,
and only up to `MAX_CAPTION_FILE_BYTES`.

Concurrency: each file is read, hashed and decoded into `.lorakit/staging/` without any lock, by a pool of threads
(twice the cores and two more; Pillow, hashlib and file I/O release the GIL), and taken back in the order of the
sources; every few files, under the project's lock (threads and processes), the import records are re-read, the
staged files that no other import has recorded meanwhile are placed, and the records are written back. Two imports
of the same folder at once thus add each file once. Commits are spaced so that they take at most a tenth of the
time however large the records grow.

One read, one decode: the user's file is copied into staging and hashed in the same read; the copy is decoded once
for orientation, normalisation and the perceptual hash (`images.describe_image`: a JPEG kept as it is is decoded at
reduced scale, since only the hash needs its pixels). A training copy that equals the original byte for byte is a
hard link to it (a copy where the file system has no links). Nothing in Train Style writes a training copy in
place: every edit replaces it through a temporary file and a rename (fsutil), so an edit never reaches the original
(a test walks the code for writes by name).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

from .. import clock
from ..errors import LorakitError, PathNotAllowed
from ..fsutil import (
    atomic_copy,
    atomic_save_image,
    atomic_write_bytes,
    atomic_write_text,
    create_temp,
    pid_alive,
    read_json,
    readable_name,
)
from ..images import (
    CAPTION_SUFFIXES,
    FORMAT_SUFFIXES,
    ImageProblem,
    describe_image,
    describe_unsupported,
)
from ..paths import resolve_inside, safe_file_stem
from ..procs import usable_cores
from ..progress import ProgressFn
from ..project import KIND_FOLDERS, ConceptKind, Project
from .captions_io import CaptionRefused, CaptionTooLong, read_caption_text
from .duplicates import DuplicateGroup, find_duplicates
from .index import DatasetIndex, IndexEntry, compact_json, file_sha256

IGNORED_FILES = {"thumbs.db", "desktop.ini", "ehthumbs.db"}
RECORDS_FILE = "imports.json"
STAGING_DIR = "staging"  # in .lorakit/: files read and decoded, waiting to be placed under the project's lock
COMMIT_EVERY = 32  # staged files placed and recorded per hold of the lock
COMMIT_AFTER_S = 2.0  # ... or fewer, when staging them took this long
COMMIT_SHARE = 0.1  # ... but no sooner than ten times as long as the last one worked (records grow with imports)
STAGE_AHEAD = 4  # files staged ahead of the one being taken back, per staging thread
OUTSIDE = "outside the allowed folders"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class CancelToken(Protocol):
    def is_set(self) -> bool: ...




@dataclass(frozen=True)
class ImportSource:
    """One file to import: where it is, how to name it to the user, and caption files that belong to it.
    `display` is text that can be written anywhere (see `readable_name`); its last part names the copy."""

    path: Path
    display: str
    captions: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return Path(self.display).name


@dataclass(frozen=True)
class ImportedImage:
    source: str
    image: str
    width: int
    height: int
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"source": self.source, "image": self.image, "width": self.width, "height": self.height,
                "notes": list(self.notes)}


@dataclass(frozen=True)
class Verdict:
    """A file that was not imported (`reason`) or a note about one that was (`message`)."""

    source: str
    text: str


@dataclass
class ImportReport:
    imported: list[ImportedImage] = field(default_factory=list)
    already: list[ImportedImage] = field(default_factory=list)
    skipped: list[Verdict] = field(default_factory=list)
    warnings: list[Verdict] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        """True when something is in the project afterwards: new images, or ones imported before."""
        return bool(self.imported or self.already)

    def to_dict(self) -> dict:
        return {
            "imported": [i.to_dict() for i in self.imported],
            "already": [i.to_dict() for i in self.already],
            "skipped": [{"source": v.source, "reason": v.text} for v in self.skipped],
            "warnings": [{"source": v.source, "message": v.text} for v in self.warnings],
            "duplicates": [g.to_dict() for g in self.duplicates],
            "cancelled": self.cancelled,
        }

    def summary(self) -> str:
        parts = [f"{len(self.imported)} imported"]
        if self.already:
            parts.append(f"{len(self.already)} already in the project")
        parts.append(f"{len(self.skipped)} skipped")
        if self.warnings:
            parts.append(f"{len(self.warnings)} warnings")
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate groups")
        return ", ".join(parts) + (" (cancelled)" if self.cancelled else "")


# --- finding the files ----------------------------------------------------------------------------------------

def collect_sources(paths: Iterable[str], roots: Sequence[Path]) -> tuple[list[ImportSource], list[Verdict]]:
    """Expand files and folders (recursively) into import sources; every path must lie inside `roots`.

    Each path is resolved (symbolic links and `..` followed as the system follows them), checked, and then walked
    where it resolved to; every entry found is resolved and checked again."""
    sources: list[ImportSource] = []
    skipped: list[Verdict] = []
    for raw in paths:
        shown = readable_name(os.path.abspath(os.path.expanduser(str(raw))))
        try:
            real = resolve_inside(raw, roots)
        except PathNotAllowed as e:
            skipped.append(Verdict(shown, readable_name(str(e))))
            continue
        except (OSError, RuntimeError) as e:
            skipped.append(Verdict(shown, _os_reason(e)))
            continue
        captions = _captions_beside(real.parent, real.name, _caption_names(real.parent)) if real.is_file() else ()
        _walk(real, readable_name(str(real)), roots, sources, skipped, visited=set(), captions=captions)
    return sources, skipped


def _walk(real: Path, shown: str, roots: Sequence[Path], sources: list[ImportSource], skipped: list[Verdict],
          visited: set[tuple[int, int]], *, is_link: bool = False, captions: tuple[Path, ...] = (),
          parent: Path | None = None) -> None:
    """Collect the file or folder `real` (resolved, inside the roots), shown to the user as `shown`; `captions`
    are the caption files beside the name it was found by, if it is a file."""
    try:
        st = os.stat(real)
    except OSError as e:
        skipped.append(Verdict(shown, _os_reason(e, is_link=is_link)))
        return
    if stat.S_ISDIR(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if key in visited:
            loop = parent is not None and (real == parent or real in parent.parents)
            skipped.append(Verdict(shown, "symbolic link loop: this folder was already visited" if loop else
                                   "a link to a folder already imported from: its files are not imported twice"))
            return
        visited.add(key)
        try:
            names = sorted(os.listdir(real))
        except OSError as e:
            skipped.append(Verdict(shown, _os_reason(e)))
            return
        caption_names = _caption_names(real, names)
        for name in names:
            if name.startswith(".") or name.lower() in IGNORED_FILES or name in caption_names:
                continue
            _walk_entry(real, name, os.path.join(shown, readable_name(name)), caption_names, roots, sources, skipped,
                        visited)
        return
    if not stat.S_ISREG(st.st_mode):
        skipped.append(Verdict(shown, "not a regular file (a device, pipe or socket)"))
        return
    reason = describe_unsupported(Path(shown))
    if reason:
        skipped.append(Verdict(shown, reason))
        return
    sources.append(ImportSource(path=real, display=shown, captions=captions))


def _walk_entry(folder: Path, name: str, shown: str, caption_names: set[str], roots: Sequence[Path],
                sources: list[ImportSource], skipped: list[Verdict], visited: set[tuple[int, int]]) -> None:
    """One entry of a folder being walked: resolved and checked against the roots before anything reads it."""
    path = folder / name
    try:
        is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        real = path.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a link loop, before Python 3.13
        skipped.append(Verdict(shown, _os_reason(e)))
        return
    try:
        resolve_inside(real, roots)
    except PathNotAllowed:  # the reason names nothing about where the link leads
        skipped.append(Verdict(shown, f"a symbolic link that points {OUTSIDE}" if is_link else OUTSIDE))
        return
    _walk(real, shown, roots, sources, skipped, visited, is_link=is_link,
          captions=_captions_beside(folder, name, caption_names), parent=folder)


def _caption_names(folder: Path, names: Sequence[str] | None = None) -> set[str]:
    """The names in `folder` that caption files have (read later by `read_caption_bytes`' rules)."""
    if names is None:
        try:
            names = os.listdir(folder)
        except OSError:
            return set()
    return {n for n in names if n.lower().endswith(CAPTION_SUFFIXES)}


def _captions_beside(folder: Path, name: str, caption_names: set[str]) -> tuple[Path, ...]:
    """The caption files of the image called `name` in `folder`: `.txt` first, then `.caption` (either case)."""
    stem = Path(name).stem
    found = (next((c for c in (stem + suffix, stem + suffix.upper()) if c in caption_names), None)
             for suffix in CAPTION_SUFFIXES)
    return tuple(folder / c for c in found if c)


def sources_from_uploads(files: Sequence[tuple[Path, str]]) -> list[ImportSource]:
    """Uploaded files (temporary path, original name): captions are paired with images by file stem. Their names
    are judged when imported, as a folder import judges them."""
    captions: dict[str, list[Path]] = {}
    images = []
    for path, name in files:
        if name.lower().endswith(CAPTION_SUFFIXES):
            captions.setdefault(Path(name).stem, []).append(Path(path))
        else:
            images.append((Path(path), name))
    return [ImportSource(path=p, display=readable_name(name),
                         captions=tuple(sorted(captions.get(Path(name).stem, []), key=lambda c: c.suffix != ".txt")))
            for p, name in images]


def _os_reason(e: BaseException, is_link: bool = False) -> str:
    if isinstance(e, OSError):
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if e.errno == errno.ENOENT:
            return "broken symbolic link (its target does not exist)" if is_link else "no such file or folder"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "permission denied: the file cannot be read"
        return f"cannot read: {readable_name(e.strerror or str(e))}"
    if isinstance(e, RuntimeError):  # pathlib's resolve() on a loop in old Pythons
        return "symbolic link loop"
    return readable_name(str(e))


# --- importing ------------------------------------------------------------------------------------------------

def import_sources(project: Project, sources: Sequence[ImportSource], *, concept: str = "", repeats: int | None = None,
                   kind: ConceptKind = "dataset", progress: Optional[ProgressFn] = None,
                   cancel: CancelToken | None = None) -> ImportReport:
    """Import `sources` into one concept of `project` (created if new; named after the project if empty)."""
    # 1. the target folder and what was imported before
    target = project.ensure_concept(concept or project.name, repeats, kind)
    batch = _Batch(project, target.name, kind, _Records(project))
    report = ImportReport()
    new_entries: list[IndexEntry] = []
    # 2. files read and decoded into the staging folder by a pool of threads, taken back in the sources' order;
    #    every few, placed and recorded under the lock
    try:
        with _StagingPool(batch, sources) as pool:
            for i, (source, staged) in enumerate(pool):
                if cancel is not None and cancel.is_set():
                    report.cancelled = True
                    staged.discard()
                    break
                if progress:
                    progress(i, len(sources), source.display)
                staged.merge_into(report)
                batch.add(staged.staged)
                if batch.due():
                    new_entries += batch.commit(report)
        new_entries += batch.commit(report)
    finally:
        batch.discard()
    if progress:
        progress(len(sources), len(sources), "checking for duplicates")
    # 3. duplicates that involve what was just imported
    index = DatasetIndex(project)
    index.add(new_entries)
    everything = [e for e in index.scan() if not e.problem]
    touched = {i.image for i in report.imported}
    report.duplicates = [g for g in find_duplicates([(e.path, e.sha256, e.phash_int) for e in everything],
                                                    project.settings.near_duplicate_distance)
                         if touched.intersection(g.images)]
    return report


@dataclass
class _Staged:
    """A file read, hashed and decoded, waiting in the staging folder to be placed."""

    source: ImportSource
    sha: str
    original_tmp: str
    original_name: str  # <hash><suffix of the detected format>
    copy_tmp: str  # the converted training copy; "" when the original itself is kept (linked when placed)
    copy_suffix: str
    copy_sha: str
    width: int
    height: int
    format: str
    phash: str
    notes: tuple[str, ...]
    caption: Optional[str]

    def discard(self) -> None:
        for tmp in (self.original_tmp, self.copy_tmp):
            if tmp:
                _unlink_quietly(tmp)


@dataclass
class _StageResult:
    """What staging one source gave: the staged file (None if it goes no further) and its verdicts, which are
    added to the import's report in the sources' order."""

    staged: Optional[_Staged]
    verdicts: ImportReport

    def merge_into(self, report: ImportReport) -> None:
        report.skipped += self.verdicts.skipped
        report.already += self.verdicts.already
        report.warnings += self.verdicts.warnings

    def discard(self) -> None:
        if self.staged is not None:
            self.staged.discard()


def _stage_one(batch: _Batch, source: ImportSource) -> _StageResult:
    """Stage one source (in a pool thread): a file that cannot be read becomes a verdict, not an error."""
    verdicts = ImportReport()
    try:
        return _StageResult(_stage(batch, source, verdicts), verdicts)
    except (OSError, LorakitError) as e:
        verdicts.skipped.append(Verdict(source.display, _os_reason(e)))
        return _StageResult(None, verdicts)


class _StagingPool:
    """Stages sources in a pool of threads, a bounded number ahead, and gives them back in the sources' order.
    Leaving the `with` block (done, cancelled or failed) waits for the threads and discards what was staged but
    not taken back."""

    def __init__(self, batch: _Batch, sources: Sequence[ImportSource], workers: int | None = None):
        self.batch, self.sources = batch, sources
        self.workers = workers or staging_workers()
        self.pending: deque[tuple[ImportSource, Future]] = deque()
        self.executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> _StagingPool:
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="import-stage")
        return self

    def __iter__(self) -> Iterator[tuple[ImportSource, _StageResult]]:
        upcoming = iter(self.sources)
        while True:
            while len(self.pending) < STAGE_AHEAD * self.workers:
                source = next(upcoming, None)
                if source is None:
                    break
                self.pending.append((source, self.executor.submit(_stage_one, self.batch, source)))
            if not self.pending:
                return
            source, future = self.pending.popleft()
            yield source, future.result()

    def __exit__(self, *exc: object) -> None:
        for _, future in self.pending:
            future.cancel()
        self.executor.shutdown(wait=True)
        for _, future in self.pending:
            if not future.cancelled() and future.exception() is None:
                future.result().discard()
        self.pending.clear()


def staging_workers() -> int:
    """Threads that stage files: twice the cores and two more, since each waits for the disk as long as it
    decodes (every original is fsynced before it is recorded: ~30 ms on a busy disk)."""
    return min(32, 2 * usable_cores() + 2)


def _stage(batch: _Batch, source: ImportSource, report: ImportReport) -> Optional[_Staged]:
    """Read `source` into the staging folder and decode it; None (with the verdict in `report`) if it goes no
    further."""
    # a. names the folder walk refuses are refused here too (an upload named .svg or .html)
    reason = describe_unsupported(Path(source.name))
    if reason:
        report.skipped.append(Verdict(source.display, reason))
        return None
    # b. the original, copied and hashed in one read of the user's file
    original_tmp, sha = _copy_in(batch.staging, source.path)
    copy_tmp = ""
    try:
        already = batch.already(sha, source)
        if already:
            report.already.append(already)
            _unlink_quietly(original_tmp)
            return None
        # c. decode what was copied; the original is named by the format found in it, not by its name
        settings = batch.settings
        facts = describe_image(Path(original_tmp), max_pixels=settings.max_image_pixels,
                               background=settings.background_rgb)
        if isinstance(facts, ImageProblem) or facts.format not in FORMAT_SUFFIXES:
            report.skipped.append(Verdict(source.display, facts.reason if isinstance(facts, ImageProblem) else
                                          f"the content is {facts.format}, not an image format Train "
                                          "Style imports"))
            _unlink_quietly(original_tmp)
            return None
        # d. the training copy: the original itself when it can be kept byte for byte (a second link to it, made
        #    when it is placed); else converted, and staged too
        suffix = facts.keep_bytes_suffix or ".png"
        if not facts.keep_bytes_suffix:
            copy_tmp = os.path.join(batch.staging, f".import.{os.getpid()}-{secrets.token_hex(8)}{suffix}")
            atomic_save_image(facts.image, Path(copy_tmp), compress_level=4)
        caption = _read_caption(source, report)
        return _Staged(source=source, sha=sha, original_tmp=original_tmp,
                       original_name=f"{sha[:24]}{FORMAT_SUFFIXES[facts.format]}", copy_tmp=copy_tmp,
                       copy_suffix=suffix, copy_sha=sha if facts.keep_bytes_suffix else file_sha256(Path(copy_tmp)),
                       width=facts.width, height=facts.height, format=facts.format, phash=f"{facts.phash:016x}",
                       notes=tuple(facts.notes), caption=caption)
    except BaseException:
        _unlink_quietly(original_tmp)
        if copy_tmp:
            _unlink_quietly(copy_tmp)
        raise


def link_or_copy(src: Path, dst: Path) -> None:
    """Make the new name `dst` the same file as `src`: a hard link (made at once, and refused if `dst` exists), or
    a copy where the file system has none (another device, FAT, some network shares). Whoever changes either later
    must replace it (write elsewhere, rename over it), never write into it: fsutil's atomic writers all do.

    A linked file is made read-only: an image editor that saves in place into the training copy would otherwise
    write into the original. (Not on Windows, where a read-only file cannot be renamed over.)"""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES):
            raise
        atomic_copy(src, dst)
        return
    if os.name != "nt":
        os.chmod(dst, stat.S_IMODE(os.stat(dst).st_mode) & ~0o222)


def _copy_in(staging: str, path: Path) -> tuple[str, str]:
    """Copy the user's file `path` into `staging`, hashing it in the same read; (temporary copy, sha256). The file
    is opened without following a link put in its place since it was checked, and must be a regular file."""
    h = hashlib.sha256()
    out_fd, tmp = create_temp(staging, prefix=".import.")
    try:
        with os.fdopen(out_fd, "wb") as out:
            in_fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
            with os.fdopen(in_fd, "rb") as inp:
                if not stat.S_ISREG(os.fstat(in_fd).st_mode):
                    raise LorakitError("not a regular file (a device, pipe or socket)")
                for chunk in iter(lambda: inp.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return tmp, h.hexdigest()
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _read_caption(source: ImportSource, report: ImportReport) -> Optional[str]:
    """The text of the source's caption file, or None (with a warning when there was one that could not be used:
    the image is then imported without it)."""
    if not source.captions:
        return None
    chosen = source.captions[0]
    shown = readable_name(chosen.name)
    if len(source.captions) > 1:
        names = ", ".join(readable_name(c.name) for c in source.captions)
        report.warnings.append(Verdict(source.display, f"both {names} exist: {shown} was used"))
    try:
        caption = read_caption_text(chosen)
    except CaptionTooLong as e:
        report.warnings.append(Verdict(source.display, f"{e} The image was imported without it."))
        return None
    except CaptionRefused as e:
        report.warnings.append(Verdict(source.display, f"caption {e} The image was imported without it."))
        return None
    if caption is None:
        report.warnings.append(Verdict(source.display, f"caption {shown} disappeared before it was read; the image "
                                                       "was imported without it"))
        return None
    if caption.fallback:
        report.warnings.append(Verdict(source.display, f"caption {shown} is not UTF-8: decoded as "
                                                       f"{caption.encoding} and saved as UTF-8; check accents"))
    return caption.text


class _Batch:
    """Staged files of one import, placed and recorded together under the project's lock."""

    def __init__(self, project: Project, concept: str, kind: ConceptKind, records: _Records):
        self.project, self.concept, self.kind, self.records = project, concept, kind, records
        self.settings = project.settings
        self.staging = str(project.state_dir / STAGING_DIR)
        os.makedirs(self.staging, exist_ok=True)
        _clear_stale(self.staging)
        self.folder = project.concept(concept, kind).folder
        self.items: list[_Staged] = []
        self.started = time.monotonic()
        self.committed = time.monotonic()  # when the last commit ended, and how long it took
        self.commit_cost = 0.0

    def add(self, staged: Optional[_Staged]) -> None:
        if staged is not None:
            if not self.items:
                self.started = time.monotonic()
            self.items.append(staged)

    def due(self) -> bool:
        now = time.monotonic()
        enough = len(self.items) >= COMMIT_EVERY or (bool(self.items) and now - self.started >= COMMIT_AFTER_S)
        return enough and now - self.committed >= self.commit_cost / COMMIT_SHARE

    def already(self, sha: str, source: ImportSource) -> Optional[ImportedImage]:
        """The copy of this file made by an earlier import, as far as the records read last say (a hint that saves
        decoding it again; `commit` decides)."""
        previous = self.records.get(self.records.key(sha, source.name, self.kind, self.concept))
        existing = self.folder / Path(previous["image"]).name if previous else None
        if not (existing and existing.is_file()):
            return None
        return ImportedImage(source=source.display, image=existing.relative_to(self.project.root).as_posix(),
                             width=previous.get("width", 0), height=previous.get("height", 0))

    def commit(self, report: ImportReport) -> list[IndexEntry]:
        """Place the staged files nobody has imported meanwhile and record them; return their index entries."""
        if not self.items:
            return []
        items, self.items = self.items, []
        try:
            with self.project.lock():
                began = time.monotonic()
                try:
                    return self._place(items, report)
                finally:
                    self.commit_cost = time.monotonic() - began  # the work under the lock, not the wait for it
        except (OSError, LorakitError) as e:  # the lock was not had in time, the records are damaged, a full disk
            why = _os_reason(e) if isinstance(e, OSError) else readable_name(str(e))
            report.skipped += [Verdict(s.source.display, why) for s in items]
            return []
        finally:
            for s in items:
                s.discard()
            self.committed = time.monotonic()

    def _place(self, items: list[_Staged], report: ImportReport) -> list[IndexEntry]:
        # 1. what the other imports recorded meanwhile, and where the concept is now (its repeats may have changed)
        self.records.reload()
        self.folder = folder = self.project.ensure_concept(self.concept, None, self.kind).folder
        taken = {p.stem.lower() for p in folder.iterdir()}
        # 2. names for the new files, recorded before they are placed (a record without its copy is imported again)
        planned: dict[str, tuple[_Staged, Path]] = {}
        for s in items:
            key = self.records.key(s.sha, s.source.name, self.kind, self.concept)
            earlier = self.already(s.sha, s.source) or (
                _as_imported(s, planned[key][1], self.project) if key in planned else None)
            if earlier:
                report.already.append(earlier)
                continue
            stem = _free_stem(taken, safe_file_stem(Path(s.source.name).stem))
            copy = folder / (stem + s.copy_suffix)
            planned[key] = (s, copy)
            self.records.put(key, {
                "sha256": s.sha, "source": s.source.display, "original": f"originals/{s.original_name}",
                "image": copy.relative_to(self.project.root).as_posix(), "width": s.width, "height": s.height,
                "imported": clock.now_iso()})
        self.records.save()
        # 3. the files: original, training copy, caption
        entries = []
        for key, (s, copy) in planned.items():
            try:
                original = _place_original(self.project, s)
                if s.copy_tmp:
                    os.replace(s.copy_tmp, copy)
                else:
                    link_or_copy(original, copy)
                if s.caption is not None:
                    atomic_write_text(copy.with_suffix(self.settings.caption_extension), s.caption + "\n")
            except OSError as e:
                self.records.drop(key)
                report.skipped.append(Verdict(s.source.display, _os_reason(e)))
                continue
            report.imported.append(_as_imported(s, copy, self.project))
            report.warnings += [Verdict(s.source.display, note) for note in s.notes]
            st = copy.stat()
            entries.append(IndexEntry(path=copy.relative_to(self.project.root).as_posix(), size=st.st_size,
                                      mtime_ns=st.st_mtime_ns, width=s.width, height=s.height, format=s.format,
                                      sha256=s.copy_sha, phash=s.phash))
        self.records.save()
        return entries

    def discard(self) -> None:
        for s in self.items:
            s.discard()
        self.items = []


def _clear_stale(staging: str) -> None:
    """Remove what imports that died (killed, a power cut) left in the staging folder: `.import.<pid>-…` files of
    processes no longer running."""
    for name in os.listdir(staging):
        pid = name[len(".import."):].split("-", 1)[0]
        if name.startswith(".import.") and pid.isdigit() and not pid_alive(int(pid)):
            _unlink_quietly(os.path.join(staging, name))


def _as_imported(s: _Staged, copy: Path, project: Project) -> ImportedImage:
    return ImportedImage(source=s.source.display, image=copy.relative_to(project.root).as_posix(), width=s.width,
                         height=s.height, notes=s.notes)


def _place_original(project: Project, s: _Staged) -> Path:
    """Keep the staged original under originals/ (once per content: an existing copy is never touched); its path."""
    originals = project.root / "originals"
    originals.mkdir(exist_ok=True)
    final = originals / s.original_name
    if not final.exists():
        os.replace(s.original_tmp, final)
    return final


def _free_stem(taken: set[str], stem: str) -> str:
    """`stem`, or `stem-2`, `stem-3`… whichever no file in the folder has; the name found is then taken."""
    candidate, n = stem, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}-{n}"
    taken.add(candidate.lower())
    return candidate


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _Records:
    """What was imported from where, so that importing the same files again adds nothing twice. Read again (when
    the file changed) and written only under the project's lock."""

    def __init__(self, project: Project):
        self.project = project
        self.file = project.state_dir / RECORDS_FILE
        self.data: dict[str, dict] = {}
        self.seen: tuple[int, int, int] | None = None
        self.dirty = False
        self.reload()

    def reload(self) -> None:
        """Read the records again if another import has written them since they were read."""
        try:
            st = os.stat(self.file)
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            seen = None
        if seen is not None and seen == self.seen:
            return
        try:
            data = read_json(self.file, default={}) or {}
        except ValueError as e:
            raise LorakitError(f"{self.file} is damaged ({e}); move it aside to import again (files already "
                               "imported would then be imported a second time).") from e
        if not isinstance(data, dict):
            raise LorakitError(f"{self.file} is damaged (not a JSON object); move it aside to import again.")
        self.data, self.seen, self.dirty = data, seen, False

    @staticmethod
    def key(sha: str, name: str, kind: ConceptKind, concept: str) -> str:
        return f"{KIND_FOLDERS[kind]}/{concept}/{sha}/{name}"

    def get(self, key: str) -> dict | None:
        return self.data.get(key)

    def put(self, key: str, record: dict) -> None:
        self.data[key] = record
        self.dirty = True

    def drop(self, key: str) -> None:
        if self.data.pop(key, None) is not None:
            self.dirty = True

    def save(self) -> None:
        if self.dirty:
            atomic_write_bytes(self.file, compact_json(self.data))
            st = os.stat(self.file)
            self.seen = (st.st_ino, st.st_size, st.st_mtime_ns)
            self.dirty = False


def rename_concept_records(project: Project, moved: Callable[[str], str], old_folder: str, new_folder: str) -> None:
    """After a concept's rename (under the project's lock): records keyed by the old name move to the new one, and
    the copy each names is in the new folder (image_state.rename_concept)."""
    records = _Records(project)
    for key in list(records.data):
        new_key = moved(key)
        if new_key == key:
            continue
        record = dict(records.data[key])
        parts = str(record.get("image", "")).split("/")
        if len(parts) == 3 and parts[1] == old_folder:
            record["image"] = f"{parts[0]}/{new_folder}/{parts[2]}"
        records.drop(key)
        records.put(new_key, record)
    records.save()


def import_paths(project: Project, paths: Iterable[str], roots: Sequence[Path], **kwargs) -> ImportReport:
    """Collect files and folders inside `roots` and import them; see `import_sources` for the options."""
    sources, skipped = collect_sources(paths, roots)
    report = import_sources(project, sources, **kwargs)
    report.skipped[:0] = skipped
    return report


def remove_copies(project: Project, images: Iterable[str]) -> list[str]:
    """Move training copies (and their captions) to the project's trash; originals stay. Returns what moved."""
    moved = []
    stamp = clock.stamp(micro=True)
    trash = project.state_dir / "trash" / stamp
    for rel in images:
        path = resolve_inside(project.root / rel, [project.root / "dataset", project.root / "reg"])
        if not path.is_file():
            continue
        for f in [path] + [path.with_suffix(s) for s in CAPTION_SUFFIXES if path.with_suffix(s).is_file()]:
            dest = trash / f.relative_to(project.root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), str(dest))
        moved.append(rel)
    return moved
