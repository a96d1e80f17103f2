"""Non-destructive import: the user's files are only read; originals are kept byte for byte; training copies
are normalised (upright, RGB, one frame) into `dataset/<N>_<concept>/` with their captions.

Every file gets a verdict: imported, already in the project, or skipped with a reason. One bad file never
stops the rest.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

from ..errors import LorakitError, PathNotAllowed
from ..fsutil import atomic_copy, atomic_save_image, atomic_write_json, atomic_write_text, read_json
from ..images import CAPTION_SUFFIXES, ImageProblem, describe_unsupported, open_training_image, perceptual_hash
from ..paths import resolve_inside, safe_file_stem
from ..project import ConceptKind, Project
from .captions_io import decode_caption
from .duplicates import DuplicateGroup, find_duplicates
from .index import DatasetIndex, IndexEntry, file_sha256

IGNORED_FILES = {"thumbs.db", "desktop.ini", "ehthumbs.db"}
RECORDS_FILE = "imports.json"


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


Progress = Optional[Callable[[int, int, str], None]]


@dataclass(frozen=True)
class ImportSource:
    """One file to import: where it is, how to name it to the user, and caption files that belong to it."""

    path: Path
    display: str
    captions: tuple[Path, ...] = ()


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
    """Expand files and folders (recursively) into import sources; every path must lie inside `roots`."""
    sources: list[ImportSource] = []
    skipped: list[Verdict] = []
    for raw in paths:
        shown = os.path.abspath(os.path.expanduser(str(raw)))
        try:
            resolve_inside(raw, roots)
        except PathNotAllowed as e:
            skipped.append(Verdict(shown, str(e)))
            continue
        except (OSError, RuntimeError) as e:
            skipped.append(Verdict(shown, _os_reason(e)))
            continue
        _walk(Path(shown), shown, roots, sources, skipped, visited=set())
    return sources, skipped


def _walk(path: Path, shown: str, roots: Sequence[Path], sources: list[ImportSource], skipped: list[Verdict],
          visited: set[tuple[int, int]]) -> None:
    try:
        st = os.stat(path)  # follows symlinks; a loop raises ELOOP
    except OSError as e:
        skipped.append(Verdict(shown, _os_reason(e, is_link=os.path.islink(path))))
        return
    if os.path.islink(path):
        try:
            resolve_inside(path, roots)
        except PathNotAllowed:
            skipped.append(Verdict(shown, "a symbolic link that points outside the allowed folders"))
            return
    if stat.S_ISDIR(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if key in visited:
            skipped.append(Verdict(shown, "symbolic link loop: this folder was already visited"))
            return
        visited.add(key)
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            skipped.append(Verdict(shown, _os_reason(e)))
            return
        caption_names = {n for n in names if n.lower().endswith(CAPTION_SUFFIXES)}
        for name in names:
            if name.startswith(".") or name.lower() in IGNORED_FILES or name in caption_names:
                continue
            _walk(path / name, os.path.join(shown, name), roots, sources, skipped, visited)
        return
    if not stat.S_ISREG(st.st_mode):
        skipped.append(Verdict(shown, "not a regular file (a device, pipe or socket)"))
        return
    reason = describe_unsupported(path)
    if reason:
        skipped.append(Verdict(shown, reason))
        return
    sources.append(ImportSource(path=path, display=shown, captions=_caption_files(path)))


def _caption_files(image: Path) -> tuple[Path, ...]:
    found = []
    for suffix in CAPTION_SUFFIXES:
        for candidate in (image.with_suffix(suffix), image.with_suffix(suffix.upper())):
            if candidate.is_file() and candidate not in found:
                found.append(candidate)
                break
    return tuple(found)


def sources_from_uploads(files: Sequence[tuple[Path, str]]) -> list[ImportSource]:
    """Uploaded files (temporary path, original name): captions are paired with images by file stem."""
    captions: dict[str, list[Path]] = {}
    images = []
    for path, name in files:
        if name.lower().endswith(CAPTION_SUFFIXES):
            captions.setdefault(Path(name).stem, []).append(Path(path))
        else:
            images.append((Path(path), name))
    return [ImportSource(path=p, display=name, captions=tuple(sorted(captions.get(Path(name).stem, []),
                                                                      key=lambda c: c.suffix != ".txt")))
            for p, name in images]


def _os_reason(e: BaseException, is_link: bool = False) -> str:
    if isinstance(e, OSError):
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        if e.errno == errno.ENOENT:
            return "broken symbolic link (its target does not exist)" if is_link else "no such file or folder"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "permission denied: the file cannot be read"
        return f"cannot read: {e.strerror or e}"
    if isinstance(e, RuntimeError):  # pathlib's resolve() on a loop in old Pythons
        return "symbolic link loop"
    return str(e)


# --- importing ------------------------------------------------------------------------------------------------

def import_sources(project: Project, sources: Sequence[ImportSource], *, concept: str = "", repeats: int | None = None,
                   kind: ConceptKind = "dataset", progress: Progress = None,
                   cancel: CancelToken | None = None) -> ImportReport:
    """Import `sources` into one concept of `project` (created if new; named after the project if empty)."""
    # 1. the target folder
    name = concept or project.name
    target = project.ensure_concept(name, repeats, kind)
    report = ImportReport()
    records = _Records(project)
    new_entries: list[IndexEntry] = []
    # 2. one file at a time: copy the original, decode, write the training copy and caption
    for i, source in enumerate(sources):
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            break
        if progress:
            progress(i, len(sources), source.display)
        try:
            with project.lock():
                entry = _import_one(project, source, target.folder, records, report)
        except (OSError, LorakitError) as e:
            report.skipped.append(Verdict(source.display, _os_reason(e)))
            continue
        if entry:
            new_entries.append(entry)
    records.save()
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


def _import_one(project: Project, source: ImportSource, folder: Path, records: _Records,
                report: ImportReport) -> IndexEntry | None:
    settings = project.settings
    # a. copy and hash the original in one read of the user's file
    original, sha = _keep_original(project, source.path)
    key = records.key(sha, Path(source.display).name, folder)
    previous = records.get(key)
    # the concept's folder may have been renamed since (new repeats): look for the copy where it is now
    existing = folder / Path(previous["image"]).name if previous else None
    if existing and existing.is_file():
        report.already.append(ImportedImage(source=source.display, image=existing.relative_to(project.root).as_posix(),
                                            width=previous.get("width", 0), height=previous.get("height", 0)))
        return None
    # b. decode and normalise
    loaded = open_training_image(original, max_pixels=settings.max_image_pixels, background=settings.background_rgb)
    if isinstance(loaded, ImageProblem):
        _forget_original(project, original, records)
        report.skipped.append(Verdict(source.display, loaded.reason))
        return None
    # c. the training copy, then its caption
    stem = _free_stem(folder, safe_file_stem(source.path.stem), settings.caption_extension)
    if loaded.keep_bytes_suffix:
        copy = folder / (stem + loaded.keep_bytes_suffix)
        atomic_copy(original, copy)
    else:
        copy = folder / (stem + ".png")
        atomic_save_image(loaded.image, copy, compress_level=4)
    rel = copy.relative_to(project.root).as_posix()
    _import_caption(source, folder / (stem + settings.caption_extension), report)
    for note in loaded.notes:
        report.warnings.append(Verdict(source.display, note))
    imported = ImportedImage(source=source.display, image=rel, width=loaded.width, height=loaded.height,
                             notes=tuple(loaded.notes))
    report.imported.append(imported)
    records.put(key, {"sha256": sha, "source": source.display,
                      "original": original.relative_to(project.root).as_posix(), "image": rel,
                      "width": loaded.width, "height": loaded.height,
                      "imported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    st = copy.stat()
    return IndexEntry(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns, width=loaded.width, height=loaded.height,
                      format=loaded.source_format, sha256=file_sha256(copy) if not loaded.keep_bytes_suffix else sha,
                      phash=f"{perceptual_hash(loaded.image):016x}")


def _keep_original(project: Project, path: Path) -> tuple[Path, str]:
    """Copy `path` into originals/ named by its content hash (once per content); return the copy and the hash."""
    originals = project.root / "originals"
    originals.mkdir(exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".import.", dir=originals)
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as inp:
            for chunk in iter(lambda: inp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = h.hexdigest()
        final = originals / f"{sha[:24]}{path.suffix.lower()[:6]}"
        if final.exists():
            os.unlink(tmp)
        else:
            os.replace(tmp, final)
        return final, sha
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _forget_original(project: Project, original: Path, records: _Records) -> None:
    """Drop the original copy of a file that turned out unusable, unless another import still refers to it."""
    rel = original.relative_to(project.root).as_posix()
    if not any(r.get("original") == rel for r in records.all()):
        original.unlink(missing_ok=True)


def _free_stem(folder: Path, stem: str, caption_ext: str) -> str:
    taken = {p.stem.lower() for p in folder.iterdir()} if folder.is_dir() else set()
    candidate, n = stem, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def _import_caption(source: ImportSource, dest: Path, report: ImportReport) -> None:
    if not source.captions:
        return
    chosen = source.captions[0]
    if len(source.captions) > 1:
        report.warnings.append(Verdict(source.display, f"both {', '.join(c.name for c in source.captions)} exist: "
                                                       f"{chosen.name} was used"))
    try:
        data = chosen.read_bytes()
    except OSError as e:
        report.warnings.append(Verdict(source.display, f"caption {chosen.name} could not be read: {_os_reason(e)}"))
        return
    caption = decode_caption(data)
    if caption.fallback:
        report.warnings.append(Verdict(source.display, f"caption {chosen.name} is not UTF-8: decoded as "
                                                       f"{caption.encoding} and saved as UTF-8; check accents"))
    atomic_write_text(dest, caption.text + "\n")


class _Records:
    """What was imported from where, so that importing the same files again adds nothing twice."""

    def __init__(self, project: Project):
        self.project = project
        self.file = project.state_dir / RECORDS_FILE
        try:
            self.data: dict[str, dict] = read_json(self.file, default={}) or {}
        except ValueError as e:
            raise LorakitError(f"{self.file} is damaged ({e}); move it aside to import again (files already "
                               "imported would then be imported a second time).") from e
        self.dirty = False

    def key(self, sha: str, name: str, folder: Path) -> str:
        kind = folder.parent.name
        concept = folder.name.split("_", 1)[1]
        return f"{kind}/{concept}/{sha}/{name}"

    def get(self, key: str) -> dict | None:
        return self.data.get(key)

    def put(self, key: str, record: dict) -> None:
        self.data[key] = record
        self.dirty = True

    def all(self) -> list[dict]:
        return list(self.data.values())

    def save(self) -> None:
        if self.dirty:
            atomic_write_json(self.file, self.data)
            self.dirty = False


def import_paths(project: Project, paths: Iterable[str], roots: Sequence[Path], **kwargs) -> ImportReport:
    """Collect files and folders inside `roots` and import them; see `import_sources` for the options."""
    sources, skipped = collect_sources(paths, roots)
    report = import_sources(project, sources, **kwargs)
    report.skipped[:0] = skipped
    return report


def remove_copies(project: Project, images: Iterable[str]) -> list[str]:
    """Move training copies (and their captions) to the project's trash; originals stay. Returns what moved."""
    moved = []
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
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
