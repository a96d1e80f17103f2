"""The caption files of a project, read as sd-scripts reads them and written with an undo history.

sd-scripts reads, for each image directly inside a `<N>_<name>` folder of `dataset/` or `reg/`, the file with
the same stem and the project's caption extension; a missing caption silently becomes the folder's class token,
and a caption with the other extension (`.caption` for `.txt`) is never read. `CaptionStore.records` reports
exactly that, per image.

Every write goes through `CaptionStore.apply`, which records what each file held before and after in
`.lorakit/captions/history/`, so any batch operation, an edit or a whole tagging run is one undo step:

    history/<id>/entry.json        label, time, the operation, settings changed, undone or not
    history/<id>/files-0000.json   per caption: its text before (None: it did not exist) and after
                 files-0001.json   … one more file per batch appended to the entry (a tagging run)

A caption that was not UTF-8 keeps its exact bytes in the history (base64), so undo restores them byte for byte.

Caption files are read only as regular files inside the project, never through a symbolic link, and at most
`MAX_CAPTION_FILE_BYTES` (see `read_caption_bytes`); a caption that is not read carries its `problem` and is
never overwritten by an operation. Every text written passes `clean_caption_text` and `check_caption_length`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from .. import clock
from ..dataset.captions_io import (
    CaptionRefused,
    check_caption_length,
    clean_caption_text,
    decode_caption,
    read_caption_bytes,
    read_caption_text,
)
from ..errors import InvalidName, LorakitError, NotFound, PathNotAllowed
from ..fsutil import NothingWritten, atomic_write_bytes, atomic_write_json, process_lock, read_json, replace_files
from ..images import CAPTION_SUFFIXES, IMAGE_SUFFIXES
from ..project import CONCEPT_FOLDER, KIND_FOLDERS, ConceptKind, Project, ProjectSettings
from .tags import split_tags

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 200  # entries kept; the oldest are dropped beyond this
HISTORY_VERSION = 1


@dataclass(frozen=True)
class CaptionRecord:
    """One training image and the caption sd-scripts would read for it.

    `image` and `caption` are project-relative with forward slashes; `caption` carries the project's caption
    extension whether or not it exists. `other_ext` is True when only a caption with the other extension exists
    (sd-scripts will not read it). `text` is the decoded, trimmed caption ("" when it does not exist). `problem`
    says why an existing caption was not read (a link, not a regular file, too long); its text is then "".
    """

    image: str
    caption: str
    concept: str
    kind: ConceptKind
    text: str
    tags: tuple[str, ...]
    exists: bool
    encoding: str
    other_ext: bool
    problem: str = ""

    @property
    def readable(self) -> bool:
        return not self.problem

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tags"] = list(self.tags)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaptionRecord:
        return cls(image=str(data["image"]), caption=str(data["caption"]), concept=str(data["concept"]),
                   kind=data["kind"], text=str(data["text"]), tags=tuple(data["tags"]), exists=bool(data["exists"]),
                   encoding=str(data["encoding"]), other_ext=bool(data["other_ext"]),
                   problem=str(data.get("problem") or ""))


@dataclass(frozen=True)
class HistoryEntry:
    """One undo step. `files` counts the captions it changed; `settings` maps a project setting to its
    `{"before", "after"}`. `conflicts` lists the images an undo or redo left alone because their caption was
    edited since; `written` is how many captions the call that returned this entry wrote (0 in listings).
    `id` is "" when an `apply` changed nothing and so recorded nothing."""

    id: str
    label: str
    time: str
    op: dict[str, Any]
    files: int
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    undone: bool = False
    conflicts: tuple[str, ...] = ()
    written: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conflicts"] = list(self.conflicts)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryEntry:
        return cls(id=str(data["id"]), label=str(data["label"]), time=str(data["time"]), op=dict(data["op"]),
                   files=int(data["files"]), settings=dict(data.get("settings") or {}),
                   undone=bool(data.get("undone", False)), conflicts=tuple(data.get("conflicts") or ()),
                   written=int(data.get("written", 0)))


@dataclass
class _FileChange:
    """What one caption held before an entry (exact bytes) and what the entry wrote."""

    image: str
    before: Optional[bytes]
    after: str

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"image": self.image, "after": self.after}
        if self.before is None:
            d["before"] = None
        else:
            try:
                d["before"] = self.before.decode("utf-8")
            except UnicodeDecodeError:
                d["before_b64"] = base64.b64encode(self.before).decode("ascii")
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> _FileChange:
        if "before_b64" in d:
            before: Optional[bytes] = base64.b64decode(d["before_b64"])
        else:
            before = None if d.get("before") is None else str(d["before"]).encode("utf-8")
        return cls(image=str(d["image"]), before=before, after=str(d["after"]))


_CACHED_CHARS = 2_000  # captions are a few hundred characters; longer ones are split each time, not kept


def _tags_of(text: str) -> tuple[str, ...]:
    """Splitting dominates loading 10,000 captions; unchanged captions are split once per process."""
    return _cached_tags(text) if len(text) <= _CACHED_CHARS else tuple(split_tags(text))


@lru_cache(maxsize=1 << 16)
def _cached_tags(text: str) -> tuple[str, ...]:
    return tuple(split_tags(text))


def caption_bytes(text: str) -> bytes:
    """What a caption file holds for `text`: UTF-8, one trailing newline (as the importer writes them)."""
    text = text.strip()
    return (text + "\n").encode("utf-8") if text else b""


class CaptionStore:
    """Reads a project's captions and changes them with undo. Cheap to construct; every call reads the disk."""

    def __init__(self, project: Project):
        self.project = project
        self.history_dir = project.state_dir / "captions" / "history"

    # --- reading ------------------------------------------------------------------------------------------------
    def records(self, kind: ConceptKind | None = None, concept: str | None = None) -> list[CaptionRecord]:
        """Every image sd-scripts trains on (top-level images of each concept folder, hidden files ignored) with
        its caption, concept by concept, files in name order. `concept` names a concept (or reg set)."""
        ext = self.project.settings.caption_extension
        concepts = [c for c in self.project.concepts(kind) if concept is None or c.name == concept]
        if concept is not None and not concepts:
            have = ", ".join(sorted({c.name for c in self.project.concepts(kind)})) or "none yet"
            raise NotFound(f"No concept named {concept!r} in project {self.project.name!r} (have: {have}).")
        out: list[CaptionRecord] = []
        for c in concepts:
            out += self._folder_records(c.folder, f"{KIND_FOLDERS[c.kind]}/{c.folder.name}", c.name, c.kind, ext)
        return out

    def record(self, image: str) -> CaptionRecord:
        """The record of one image (project-relative path)."""
        folder, name = self._check_image(image)
        kind = "dataset" if folder.startswith("dataset/") else "reg"
        match = next((c for c in self.project.concepts(kind) if c.relpath == folder), None)
        if match is None:
            raise NotFound(f"{image!r} is not in a concept folder of project {self.project.name!r}.")
        ext = self.project.settings.caption_extension
        rows = self._folder_records(match.folder, folder, match.name, match.kind, ext)
        found = [r for r in rows if r.image == image]
        if not found:
            raise NotFound(f"No image {image!r} in project {self.project.name!r}.")
        return found[0]

    def _folder_records(self, folder: Path, rel: str, concept: str, kind: ConceptKind,
                        ext: str) -> list[CaptionRecord]:
        try:
            with os.scandir(folder) as it:
                entries = [(e.name, e.is_file(), e.is_dir(follow_symlinks=False)) for e in it
                           if not e.name.startswith(".")]
        except FileNotFoundError:
            return []
        files = {name for name, is_file, _ in entries if is_file}
        present = {name for name, _, is_dir in entries if not is_dir}  # a caption that is a link or a FIFO exists too
        outside = None if self._inside(str(folder)) else \
            f"{rel} leads outside the project (a link); Train Style reads captions only inside the project."
        other = next(s for s in CAPTION_SUFFIXES if s != ext)
        out = []
        for name in sorted(files):
            stem, dot, suffix = name.rpartition(".")
            if not dot or "." + suffix.lower() not in IMAGE_SUFFIXES:
                continue
            caption_name = stem + ext
            exists = caption_name in present
            text, encoding, problem = "", "", ""
            if exists:
                read, encoding, problem = ("", "unreadable", outside) if outside else _read_text(folder / caption_name)
                text = read or ""
            out.append(CaptionRecord(image=f"{rel}/{name}", caption=f"{rel}/{caption_name}", concept=concept,
                                     kind=kind, text=text, tags=_tags_of(text) if text else (), exists=exists,
                                     encoding=encoding, other_ext=not exists and stem + other in present,
                                     problem=problem))
        return out

    def _inside(self, folder: str) -> bool:
        """Whether `folder`, links resolved, lies inside the project (a concept folder may be a link elsewhere)."""
        root = os.path.realpath(self.project.root)
        return os.path.realpath(folder).startswith(root + os.sep)

    def other_extension_text(self, image: str) -> Optional[str]:
        """The text of the caption with the other extension (the one sd-scripts will not read), if there is one
        that can be read (see `read_caption_bytes`)."""
        folder, name = self._check_image(image)
        ext = self.project.settings.caption_extension
        other = next(s for s in CAPTION_SUFFIXES if s != ext)
        if not self._inside(str(self.project.root / folder)):
            return None
        text, _, problem = _read_text(self.project.root / folder / (name.rpartition(".")[0] + other))
        return None if problem else text

    # --- writing ------------------------------------------------------------------------------------------------
    def apply(self, changes: Mapping[str, str], *, label: str, op: Mapping[str, Any], entry: str | None = None,
              settings: Mapping[str, Any] | None = None) -> HistoryEntry:
        """Write new caption texts (image path → text) and record one undo step.

        Only captions whose text differs are written (UTF-8, atomically). `settings` are project settings that
        belong to the operation (the trigger op sets `trigger_words`); they are changed and undone with it.
        `entry` appends to an existing step instead (a tagging run writing batch after batch): a file the step
        already holds keeps its first "before". A new step discards the steps undone before it (the redo tail).
        """
        with self._locked():
            writes = self._changed(changes)
            setting_changes = self._setting_changes(settings or {})
            if entry is None and not writes and not setting_changes:
                return HistoryEntry(id="", label=label, time=clock.now_iso(), op=dict(op), files=0)
            header = self._record(writes, setting_changes, label=label, op=op, entry=entry)
            try:
                self._write_all({path: caption_bytes(change.after) for path, change in writes.items()})
            except NothingWritten:
                if entry is None:  # a step that changed nothing would make the next undo a no-op
                    shutil.rmtree(self.history_dir / header["id"], ignore_errors=True)
                raise
            if setting_changes:
                self.project.update_settings(**{k: v["after"] for k, v in setting_changes.items()})
            if entry is None:
                self._trim()
            return replace(HistoryEntry.from_dict(header), written=len(writes))

    def adopt_other_extension(self, images: Iterable[str] | None = None) -> HistoryEntry:
        """Copy captions that only exist with the other extension into the project's extension (one undo step),
        so sd-scripts reads them. `images` limits it to those images; the other files are left in place."""
        wanted = None if images is None else set(images)
        changes = {}
        for r in self.records():
            if r.other_ext and (wanted is None or r.image in wanted):
                text = self.other_extension_text(r.image)
                if text is not None:
                    changes[r.image] = text
        ext = self.project.settings.caption_extension
        return self.apply(changes, label=f"Use captions as {ext}", op={"op": "adopt_other_extension"})

    def _changed(self, changes: Mapping[str, str]) -> dict[str, _FileChange]:
        """Caption path → change, for the images whose caption text would differ."""
        ext = self.project.settings.caption_extension
        root = str(self.project.root)
        folders: dict[str, set[str]] = {}
        images_of: dict[str, str] = {}
        out: dict[str, _FileChange] = {}
        texts: dict[str, str] = {}
        for image, raw in changes.items():
            if not isinstance(raw, str):
                raise LorakitError(f"{image}: expected the caption as text, got {type(raw).__name__}")
            folder, name = self._check_image(image)
            text = check_caption_length(clean_caption_text(raw), what=f"The caption of {image}")
            if folder not in folders:
                folders[folder] = self._names(folder)
                if not self._inside(os.path.join(root, folder)):
                    raise PathNotAllowed(f"{folder} leads outside the project (a link); Train Style writes "
                                         "captions only inside the project.")
            if name not in folders[folder]:
                raise NotFound(f"No image {image!r} in project {self.project.name!r}.")
            caption = f"{folder}/{name.rpartition('.')[0]}{ext}"
            if caption in images_of and texts[images_of[caption]] != text:
                raise LorakitError(f"{images_of[caption]!r} and {image!r} share the caption file {caption!r} "
                                   "(sd-scripts reads it for both); give them the same text, or rename one image.")
            images_of[caption], texts[image] = image, text
            try:
                before = _read_bytes(os.path.join(root, caption))
            except CaptionRefused as e:
                raise CaptionRefused(f"The caption of {image} is not changed: {e} Or delete it, then try "
                                     "again.") from e
            if _same(before, caption_bytes(text)):
                continue
            out[caption] = _FileChange(image=image, before=before, after=text)
        return out

    def _names(self, folder: str) -> set[str]:
        try:
            with os.scandir(self.project.root / folder) as it:
                return {e.name for e in it}
        except FileNotFoundError:
            return set()

    def _check_image(self, image: str) -> tuple[str, str]:
        """(concept folder, file name) of a project-relative image path, refusing anything sd-scripts does not
        read or that leaves the project."""
        parts = str(image).split("/")
        if (not _encodable(str(image)) or len(parts) != 3 or parts[0] not in KIND_FOLDERS.values()
                or not CONCEPT_FOLDER.match(parts[1])
                or parts[2] in ("", ".", "..") or parts[2].startswith(".") or "\\" in image
                or os.path.splitext(parts[2])[1].lower() not in IMAGE_SUFFIXES):
            raise InvalidName(f"{image!r}: expected an image path like 'dataset/10_name/picture.png' inside the "
                              "project")
        return f"{parts[0]}/{parts[1]}", parts[2]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """This project's lock for threads, and a lock file for other processes (the CLI beside the webui)."""
        with self.project.lock(), process_lock(self.history_dir.parent / "lock"):
            yield

    def _write_all(self, files: Mapping[str, Optional[bytes]]) -> None:
        """Write (bytes) or delete (None) project-relative files; see `replace_files`."""
        root = str(self.project.root)
        replace_files({os.path.join(root, rel): data for rel, data in files.items()})

    def _setting_changes(self, settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        if not settings:
            return {}
        current = self.project.settings.to_dict()
        out = {}
        for key, value in settings.items():
            if key not in current or key in ("name", "created"):
                raise LorakitError(f"settings: {key!r} is not a project setting a caption operation can change")
            after = list(value) if isinstance(value, (list, tuple)) else value
            if after != current[key]:
                out[key] = {"before": current[key], "after": after}
        # validated now, before any caption is written
        ProjectSettings.from_dict({**current, **{k: v["after"] for k, v in out.items()}})
        return out

    # --- the history ------------------------------------------------------------------------------------------
    def _record(self, writes: Mapping[str, _FileChange], settings: dict[str, dict[str, Any]], *, label: str,
                op: Mapping[str, Any], entry: str | None) -> dict[str, Any]:
        """Write the history step (synced) before any caption changes; return its header."""
        if entry is None:
            folder = self.history_dir / f"{self._next_id():06d}"  # before the tail goes, so ids are never reused
            self._discard_redo_tail()
            header: dict[str, Any] = {"version": HISTORY_VERSION, "id": folder.name, "label": label,
                                      "time": clock.now_iso(), "op": dict(op), "files": 0, "settings": {},
                                      "undone": False, "conflicts": [], "chunks": 0}
            recorded: set[str] = set()
        else:
            folder = self._entry_dir(entry)
            header = self._header(folder)
            if header["undone"]:
                raise LorakitError(f"History step {entry} ({header['label']}) was undone; start a new step.")
            recorded = _recorded_files(folder, header["chunks"])
        if writes:
            chunk = {"files": {path: change.to_json() for path, change in writes.items()}}
            # compact: a 10,000-file step is a few MB, and indenting it would double the time spent here
            atomic_write_bytes(folder / f"files-{header['chunks']:04d}.json",
                               json.dumps(chunk, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
            header["chunks"] += 1
        recorded |= set(writes)
        _remember_recorded(folder, header["chunks"], recorded)
        header["files"] = len(recorded)
        for key, change in settings.items():
            header["settings"].setdefault(key, {"before": change["before"]})["after"] = change["after"]
        atomic_write_json(folder / "entry.json", header)
        return header

    def history(self, limit: int = 20) -> list[HistoryEntry]:
        """The newest `limit` steps, newest first (undone ones included, marked)."""
        out = []
        for folder in self._entry_dirs(newest_first=True):
            if len(out) >= limit:
                break
            header = self._header(folder, missing_ok=True)
            if header is not None:
                out.append(HistoryEntry.from_dict(header))
        return out

    def undo(self, *, force: bool = False, dry_run: bool = False) -> HistoryEntry:
        """Restore what the newest step not yet undone changed. A caption edited since that step (its text is no
        longer what the step wrote) is a conflict: it is left as it is and listed in `conflicts`, unless
        `force`. `dry_run` reports the same without changing anything."""
        with self._locked():
            folder = next((f for f in self._entry_dirs(newest_first=True) if self._is_undone(f) is False), None)
            if folder is None:
                raise NotFound("Nothing to undo: no caption change is recorded for this project.")
            return self._move(folder, undo=True, force=force, dry_run=dry_run)

    def redo(self, *, force: bool = False, dry_run: bool = False) -> HistoryEntry:
        """Apply again the step undone last. A caption edited since the undo is a conflict, as for `undo`."""
        with self._locked():
            # Undone steps are always the newest ones; the oldest of them was undone last.
            undone: list[Path] = []
            for folder in self._entry_dirs(newest_first=True):
                state = self._is_undone(folder)
                if state is False:
                    break
                if state:
                    undone.append(folder)
            if not undone:
                raise NotFound("Nothing to redo: no undone caption change follows the current state.")
            return self._move(undone[-1], undo=False, force=force, dry_run=dry_run)

    def _move(self, folder: Path, *, undo: bool, force: bool, dry_run: bool) -> HistoryEntry:
        """Take a step back (undo) or forward (redo)."""
        header = self._header(folder)
        changes = _load_changes(folder, header["chunks"])
        writes: dict[str, Optional[bytes]] = {}
        conflicts: list[str] = []
        root = str(self.project.root)
        for path, change in sorted(changes.items()):
            try:
                current = _read_bytes(os.path.join(root, path))
            except CaptionRefused:  # a link or an odd file took the caption's place: not ours to judge
                current = _REFUSED
            source, target = (caption_bytes(change.after), change.before) if undo else \
                (change.before, caption_bytes(change.after))
            if _same(current, target):
                continue
            if _same(current, source) or force:
                writes[path] = target
            else:
                conflicts.append(change.image)
        setting_writes, setting_conflicts = self._settings_move(header["settings"], undo=undo, force=force)
        conflicts += setting_conflicts
        header = {**header, "undone": undo, "conflicts": conflicts}
        if not dry_run:
            self._write_all(writes)
            if setting_writes:
                self.project.update_settings(**setting_writes)
            atomic_write_json(folder / "entry.json", header)
        return replace(HistoryEntry.from_dict(header), written=len(writes))

    def _settings_move(self, settings: Mapping[str, Mapping[str, Any]], *, undo: bool,
                       force: bool) -> tuple[dict[str, Any], list[str]]:
        current = self.project.settings.to_dict()
        writes, conflicts = {}, []
        for key, change in settings.items():
            source, target = (change["after"], change["before"]) if undo else (change["before"], change["after"])
            if current.get(key) == target:
                continue
            if current.get(key) == source or force:
                writes[key] = target
            else:
                conflicts.append(f"project.toml:{key}")
        return writes, conflicts

    def _entry_dirs(self, *, newest_first: bool = False) -> list[Path]:
        try:
            with os.scandir(self.history_dir) as it:
                dirs = [Path(e.path) for e in it if e.is_dir() and e.name.isdigit()]
        except FileNotFoundError:
            return []
        return sorted(dirs, key=lambda p: int(p.name), reverse=newest_first)

    def _entry_dir(self, entry: str) -> Path:
        folder = self.history_dir / str(entry)
        if not str(entry).isdigit() or not (folder / "entry.json").is_file():
            raise NotFound(f"No caption history step {entry!r} in project {self.project.name!r} (it may have been "
                           f"dropped: the history keeps the newest {HISTORY_LIMIT}).")
        return folder

    def _header(self, folder: Path, *, missing_ok: bool = False) -> Optional[dict[str, Any]]:
        try:
            header = read_json(folder / "entry.json")
        except ValueError as e:
            raise LorakitError(f"The caption history step {folder} is damaged ({e}); delete that folder.") from e
        if header is None and not missing_ok:
            raise NotFound(f"No caption history step at {folder}.")
        return header

    def _is_undone(self, folder: Path) -> Optional[bool]:
        header = self._header(folder, missing_ok=True)
        return None if header is None else bool(header["undone"])

    def _next_id(self) -> int:
        dirs = self._entry_dirs()
        return int(dirs[-1].name) + 1 if dirs else 1

    def _discard_redo_tail(self) -> None:
        """A new step after undo drops the undone steps (editor semantics) and any step left half-written."""
        for folder in self._entry_dirs(newest_first=True):
            if self._is_undone(folder) is False:
                break
            shutil.rmtree(folder, ignore_errors=True)

    def _trim(self) -> None:
        dirs = self._entry_dirs()
        for folder in dirs[:max(0, len(dirs) - HISTORY_LIMIT)]:
            shutil.rmtree(folder, ignore_errors=True)


def _read_text(path: Path) -> tuple[Optional[str], str, str]:
    """(the caption's text, None when there is no file; its encoding; why it was not read, "" when it was)."""
    try:
        decoded = read_caption_text(path)
        if decoded is None:
            return None, "", ""
    except (LorakitError, OSError) as e:
        logger.warning("Caption %s not read: %s", path, e)
        return "", "unreadable", str(e) if isinstance(e, LorakitError) else f"{path.name} cannot be read: {e}"
    return decoded.text, decoded.encoding, ""


def _read_bytes(path: str) -> Optional[bytes]:
    """A caption file's exact bytes, None when there is none; CaptionRefused for a file that is not read."""
    try:
        return read_caption_bytes(path)
    except OSError as e:
        raise CaptionRefused(f"{os.path.basename(path)} cannot be read: {e.strerror or e}.") from e


_REFUSED = b"\0refused"  # stands for a caption file that is not read (compared by identity: never "the same")


def _encodable(path: str) -> bool:
    """Whether `path` can name a file here: no NUL, no character the file system's encoding cannot hold."""
    try:
        os.fsencode(path)
    except UnicodeError:
        return False
    return "\0" not in path


def _same(current: Optional[bytes], expected: Optional[bytes]) -> bool:
    """Whether a caption file holds what a step expects: same existence and the same text once decoded and trimmed
    (an editor adding a final newline is not an edit)."""
    if current is _REFUSED or expected is _REFUSED:
        return False
    if current is None or expected is None:
        return current is None and expected is None
    return current == expected or decode_caption(current).text == decode_caption(expected).text


def _load_changes(folder: Path, chunks: int) -> dict[str, _FileChange]:
    """Merge a step's batches: a file's first "before" and last "after" win."""
    merged: dict[str, _FileChange] = {}
    for n in range(chunks):
        data = read_json(folder / f"files-{n:04d}.json", default={}) or {}
        for path, d in data.get("files", {}).items():
            change = _FileChange.from_json(d)
            if path in merged:
                merged[path].after = change.after
            else:
                merged[path] = change
    return merged


# Files recorded per step, so a tagging run appending its 150th batch does not re-read the first 149.
_recorded_cache: dict[str, tuple[int, set[str]]] = {}


def _recorded_files(folder: Path, chunks: int) -> set[str]:
    cached = _recorded_cache.get(str(folder))
    if cached and cached[0] == chunks:
        return set(cached[1])
    return set(_load_changes(folder, chunks))


def _remember_recorded(folder: Path, chunks: int, files: set[str]) -> None:
    if len(_recorded_cache) > 16:
        _recorded_cache.clear()
    _recorded_cache[str(folder)] = (chunks, set(files))
