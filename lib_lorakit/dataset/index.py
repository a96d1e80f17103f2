"""A cache of what each training image is, so that re-scanning an unchanged project costs only `stat` calls.

Entries are keyed on the project-relative path and trusted while the file's size and mtime are unchanged.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from ..fsutil import atomic_write_json, read_json
from ..images import IMAGE_SUFFIXES, ImageProblem, open_training_image, perceptual_hash
from ..project import KIND_FOLDERS, Project

INDEX_VERSION = 1
Progress = Optional[Callable[[int, int, str], None]]


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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe_file(project: Project, path: Path) -> IndexEntry:
    """Read one training image fully: size, format, hashes, or the problem that stops it."""
    st = path.stat()
    rel = path.relative_to(project.root).as_posix()
    loaded = open_training_image(path, max_pixels=project.settings.max_image_pixels)
    if isinstance(loaded, ImageProblem):
        return IndexEntry(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns, problem=loaded.reason)
    return IndexEntry(path=rel, size=st.st_size, mtime_ns=st.st_mtime_ns, width=loaded.width, height=loaded.height,
                      format=loaded.source_format, sha256=file_sha256(path),
                      phash=f"{perceptual_hash(loaded.image):016x}")


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
        atomic_write_json(self.file, {"version": INDEX_VERSION,
                                      "entries": {k: asdict(v) for k, v in sorted(entries.items())}})

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

    def scan(self, progress: Progress = None) -> list[IndexEntry]:
        """Every image's entry, computing only those whose file is new or changed since the last scan."""
        with self.project.lock():
            cached = self._load()
            files = self.image_files()
            fresh: dict[str, IndexEntry] = {}
            changed = len(cached) != len(files)
            for i, path in enumerate(files):
                rel = path.relative_to(self.project.root).as_posix()
                st = path.stat()
                old = cached.get(rel)
                if old and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
                    fresh[rel] = old
                    continue
                fresh[rel] = describe_file(self.project, path)
                changed = True
                if progress:
                    progress(i + 1, len(files), rel)
            if changed or set(fresh) != set(cached):
                self._save(fresh)
            return list(fresh.values())
