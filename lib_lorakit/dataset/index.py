"""A cache of what each training image is, so that re-scanning an unchanged project costs only `stat` calls.

Entries are keyed on the project-relative path and trusted while the file's size and mtime are unchanged. New and
changed files are described by a pool of threads (decoding releases the GIL), each from one read and one decode.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from ..fsutil import atomic_write_bytes, read_json
from ..images import IMAGE_SUFFIXES, ImageProblem, describe_image
from ..procs import usable_cores
from ..progress import ProgressFn
from ..project import KIND_FOLDERS, Project

INDEX_VERSION = 2  # 2: perceptual hashes of JPEGs kept as they are come from a reduced decode (images.describe_image)


@dataclass(frozen=True)
class IndexEntry:
    path: str  # project-relative, with forward slashes
    size: int
    mtime_ns: int
    width: int = 0
    height: int = 0
    format: str = ""
    sha256: str = ""
    phash: str = ""  # 16 hex digits
    problem: str = ""  # why the file can't be read, if it can't

    @property
    def phash_int(self) -> int:
        return int(self.phash, 16) if self.phash else 0


def compact_json(data: object) -> bytes:
    """JSON on one line, for state files that grow with the dataset (index, import records): Python's C encoder
    writes 60,000 entries in a fraction of a second, where the indented form takes its pure-Python one and ~4×
    as long. Lone surrogates (names that are not UTF-8) are kept exactly, as `\\u` escapes."""
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe_file(project: Project, path: Path, *, max_pixels: int | None = None) -> IndexEntry:
    """Read one training image: size, format, hashes, or the problem that stops it."""
    st = path.stat()
    rel = path.relative_to(project.root).as_posix()
    facts = describe_image(path, max_pixels=max_pixels or project.settings.max_image_pixels)
    if isinstance(facts, ImageProblem):
        return IndexEntry(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns, problem=facts.reason)
    return IndexEntry(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns, width=facts.width, height=facts.height,
                      format=facts.format, sha256=file_sha256(path), phash=f"{facts.phash:016x}")


class DatasetIndex:
    """The index of every image under `dataset/` and `reg/`, cached in `.lorakit/index.json`."""

    def __init__(self, project: Project):
        self.project = project
        self.file = project.state_dir / "index.json"

    def _load(self) -> dict[str, IndexEntry]:
        try:
            data = read_json(self.file, default={}) or {}
        except ValueError:  # a damaged cache is rebuilt, never fatal
            return {}
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
            return {}
        try:
            return {k: IndexEntry(**v) for k, v in data.get("entries", {}).items()}
        except (TypeError, AttributeError):
            return {}

    def _save(self, entries: dict[str, IndexEntry]) -> None:
        atomic_write_bytes(self.file, compact_json({"version": INDEX_VERSION,
                                                    "entries": {k: asdict(v) for k, v in sorted(entries.items())}}))

    def image_files(self) -> list[Path]:
        files = []
        for sub in KIND_FOLDERS.values():
            base = self.project.root / sub
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files += [Path(dirpath) / f for f in sorted(filenames)
                          if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
        return files

    def add(self, entries: list[IndexEntry]) -> None:
        """Record entries computed elsewhere (the importer already decoded these files)."""
        with self.project.lock():
            cached = self._load()
            cached.update({e.path: e for e in entries})
            self._save(cached)

    def scan(self, progress: Optional[ProgressFn] = None) -> list[IndexEntry]:
        """Every image's entry, computing only those whose file is new or changed since the last scan."""
        with self.project.lock():
            cached = self._load()
            files = self.image_files()
            fresh: dict[str, IndexEntry] = {}
            stale: list[Path] = []
            for path in files:
                rel = path.relative_to(self.project.root).as_posix()
                st = path.stat()
                old = cached.get(rel)
                if old and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
                    fresh[rel] = old
                else:
                    stale.append(path)
            for i, entry in enumerate(self._describe(stale)):
                fresh[entry.path] = entry
                if progress:
                    progress(i + 1, len(stale), entry.path)
            if stale or set(fresh) != set(cached):
                self._save(fresh)
            return [fresh[p.relative_to(self.project.root).as_posix()] for p in files]

    def _describe(self, paths: list[Path]) -> Iterator[IndexEntry]:
        """`describe_file` for each path, in order, on as many threads as there are cores."""
        if len(paths) < 2:
            yield from (describe_file(self.project, p) for p in paths)
            return
        max_pixels = self.project.settings.max_image_pixels
        with ThreadPoolExecutor(max_workers=min(len(paths), usable_cores()), thread_name_prefix="index") as pool:
            yield from pool.map(lambda p: describe_file(self.project, p, max_pixels=max_pixels), paths)

