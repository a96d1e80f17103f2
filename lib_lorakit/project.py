"""A project: one folder holding a user's originals, the training dataset, runs and evaluations.

    <home>/<name>/project.toml      settings (name, created, trigger words, base model, notes, …)
                  originals/        byte-for-byte copies of what the user imported; never modified
                  dataset/<N>_<concept>/   training copies and captions, in sd-scripts' layout
                  reg/<N>_<class>/  regularisation images
                  runs/  eval/      training runs and evaluations (later steps)
                  .lorakit/         Train Style's own state: index cache, import records, jobs, trash
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from . import clock
from .errors import AlreadyExists, InvalidName, LorakitError, NotFound
from .fsutil import process_lock, readable_name
from .images import DEFAULT_MAX_PIXELS, PIL_HARD_LIMIT
from .paths import check_name
from .schema import Field, Schema
from .tomlio import read_toml, write_toml

PROJECT_FILE = "project.toml"
STATE_DIR = ".lorakit"
ConceptKind = Literal["dataset", "reg"]
KIND_FOLDERS: dict[str, str] = {"dataset": "dataset", "reg": "reg"}
CONCEPT_FOLDER = re.compile(r"^(\d+)_(.+)$")
MAX_REPEATS = 10_000
MAX_TRIGGER_CHARS = 100  # a trigger is a word or a short phrase, first in every caption
MAX_TRIGGER_WORDS = 20
LOCK_FILE = "lock"  # in .lorakit/: held while a process changes the project's layout or its records
LOCK_TIMEOUT_S = 600.0


# The project's settings besides its name, creation time and trigger words, declared once: project.toml's
# validation, `project set KEY=VALUE` and the defaults below come from it.
PROJECT_SCHEMA = Schema(noun="project setting", groups=(("project", "Project"),), fields=(
    Field(name="base_model", type=str, default="", group="project", label="Base model",
          reason="The checkpoint this project trains on by default (a name or a path); empty: choose at training."),
    Field(name="notes", type=str, default="", group="project", label="Notes", reason="Free text for you."),
    Field(name="resolution", type=int, default=512, minimum=64, maximum=4096, group="project", label="Resolution",
          reason="The training size the dataset is prepared and checked for: 512 for SD1, 1024 for SDXL."),
    Field(name="caption_extension", type=str, default=".txt", choices=(".txt", ".caption"), group="project",
          label="Caption extension", reason="The file next to each image that holds its caption."),
    Field(name="max_image_pixels", type=int, default=DEFAULT_MAX_PIXELS, minimum=1, maximum=PIL_HARD_LIMIT,
          group="project", label="Largest image (pixels)",
          reason="Images with more pixels are refused at import (a decompression bomb guard)."),
    Field(name="near_duplicate_distance", type=int, default=6, minimum=0, maximum=32, group="project",
          label="Near-duplicate distance",
          reason="Images whose perceptual hashes differ in at most this many bits count as near duplicates."),
    Field(name="background", type=str, default="#ffffff", group="project", label="Background colour",
          reason="The colour transparent images are flattened onto, like '#ffffff'."),
))
_PROJECT = PROJECT_SCHEMA.defaults()


@dataclass(frozen=True)
class ProjectSettings:
    """What `project.toml` holds. The field list is the schema: `from_dict` validates against it."""

    name: str
    created: str = ""
    trigger_words: tuple[str, ...] = ()
    base_model: str = _PROJECT["base_model"]
    notes: str = _PROJECT["notes"]
    resolution: int = _PROJECT["resolution"]
    caption_extension: str = _PROJECT["caption_extension"]
    max_image_pixels: int = _PROJECT["max_image_pixels"]
    near_duplicate_distance: int = _PROJECT["near_duplicate_distance"]
    background: str = _PROJECT["background"]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LorakitError(f"project.toml: unknown setting(s) {', '.join(unknown)}; "
                               f"allowed: {', '.join(sorted(known))}")
        if "name" not in data:
            raise LorakitError("project.toml: the setting 'name' is missing")
        d = dict(data)
        if "trigger_words" in d:
            words = _expect(d["trigger_words"], (list, tuple), "trigger_words", "a list of strings")
            d["trigger_words"] = tuple(words)
        s = cls(**d)
        s.validate()
        return s

    def validate(self) -> None:
        check_name(self.name, what="project name")
        if len(self.trigger_words) > MAX_TRIGGER_WORDS:
            raise LorakitError(f"trigger_words: {len(self.trigger_words)} given; the limit is {MAX_TRIGGER_WORDS}")
        for i, w in enumerate(self.trigger_words):
            _expect(w, str, f"trigger_words[{i}]", "a string")
            if len(w) > MAX_TRIGGER_CHARS:
                raise LorakitError(f"trigger_words[{i}]: {len(w):,} characters long; the limit is "
                                   f"{MAX_TRIGGER_CHARS} (a trigger is a word or a short phrase)")
        _expect(self.created, str, "created", "a string")
        PROJECT_SCHEMA.validate({f.name: getattr(self, f.name) for f in PROJECT_SCHEMA.fields})
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", str(self.background)):
            raise LorakitError(f"background: expected a colour like '#ffffff', got {self.background!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trigger_words"] = list(self.trigger_words)
        return d

    @classmethod
    def parse_assignment(cls, text: str) -> tuple[str, Any]:
        """`key=value` from a command line, typed by the field's default (lists are comma-separated)."""
        key, sep, raw = text.partition("=")
        key = key.strip()
        defaults = {f.name: f.default for f in fields(cls)}
        if not sep or key not in defaults or key in ("name", "created"):
            editable = ", ".join(k for k in defaults if k not in ("name", "created"))
            raise LorakitError(f"{text!r}: expected KEY=VALUE with KEY one of {editable}")
        if key in PROJECT_SCHEMA:
            return key, PROJECT_SCHEMA[key].parse(raw)
        return key, tuple(w.strip() for w in raw.split(",") if w.strip())  # trigger_words

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        h = self.background.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _expect(value: Any, kind: type, path: str, wanted: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise LorakitError(f"{path}: expected {wanted}, got {value!r}")
    return value


@dataclass(frozen=True)
class Concept:
    """One `<repeats>_<name>` folder under `dataset/` (a concept) or `reg/` (a regularisation set)."""

    name: str
    repeats: int
    kind: ConceptKind
    folder: Path = field(compare=False)

    @property
    def folder_name(self) -> str:
        return self.folder.name

    @property
    def relpath(self) -> str:
        return f"{KIND_FOLDERS[self.kind]}/{self.folder.name}"


def image_key(image: str) -> str:
    """What per-image state (crop steps, direction and sort labels, import records) is kept under:
    `dataset/10_cats/a.png` → `dataset/cats/a`, so a change of repeats (the folder's number) or of the file's
    extension (a letterbox writes PNG) keeps it; a rename of the concept moves it (image_state.py). A path of
    another shape is its own key."""
    parts = image.split("/")
    match = CONCEPT_FOLDER.match(parts[1]) if len(parts) == 3 else None
    return f"{parts[0]}/{match.group(2)}/{Path(parts[2]).stem}" if match else image


def concept_folder_name(name: str, repeats: int) -> str:
    check_name(name, what="concept name")
    check_repeats(repeats)
    return f"{repeats}_{name}"


def check_repeats(repeats: Any) -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        raise InvalidName(f"repeats: expected an integer from 1 to {MAX_REPEATS}, got {repeats!r}")
    return repeats


_project_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()


class Project:
    """A project folder. Cheap to construct; reads the disk on each call so several windows stay in step."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not (self.root / PROJECT_FILE).is_file():
            raise NotFound(f"No project at {self.root} (it has no {PROJECT_FILE}).")

    # --- settings ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.root.name

    @property
    def settings(self) -> ProjectSettings:
        return ProjectSettings.from_dict(read_toml(self.root / PROJECT_FILE))

    def update_settings(self, **changes: Any) -> ProjectSettings:
        with self.lock():
            new = ProjectSettings.from_dict({**self.settings.to_dict(), **changes})
            write_toml(self.root / PROJECT_FILE, new.to_dict())
            return new

    @contextmanager
    def lock(self) -> Iterator[None]:
        """This project's lock, for threads and for other processes (the webui, the app and the command line side by
        side), held by work that changes the project's layout or its records (imports, concepts, settings, index).
        Re-entrant within a thread."""
        root = self.root.resolve()
        with _locks_guard:
            thread_lock = _project_locks.setdefault(str(root), threading.RLock())
        busy = (f"Another Train Style process (the webui, the app or the command line) has been changing project "
                f"{self.name!r} for {LOCK_TIMEOUT_S / 60:.0f} minutes; try again when it has finished.")
        with thread_lock, process_lock(root / STATE_DIR / LOCK_FILE, timeout=LOCK_TIMEOUT_S, busy=busy):
            yield

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    # --- concepts ---------------------------------------------------------------------------------------------
    def concepts(self, kind: ConceptKind | None = None) -> list[Concept]:
        kinds = [kind] if kind else list(KIND_FOLDERS)
        found = []
        for k in kinds:
            for folder, match in self._numbered_folders(k):
                found.append(Concept(name=match.group(2), repeats=int(match.group(1)), kind=k, folder=folder))
        return found

    def stray_folders(self) -> list[str]:
        """Folders under dataset/ and reg/ that sd-scripts would skip because they lack the `N_` prefix."""
        stray = []
        for sub in KIND_FOLDERS.values():
            base = self.root / sub
            if base.is_dir():
                stray += [f"{sub}/{p.name}" for p in sorted(base.iterdir())
                          if p.is_dir() and not p.name.startswith(".") and not CONCEPT_FOLDER.match(p.name)]
        return stray

    def _numbered_folders(self, kind: ConceptKind) -> Iterator[tuple[Path, re.Match]]:
        base = self.root / KIND_FOLDERS[kind]
        if not base.is_dir():
            return
        matches = [(p, CONCEPT_FOLDER.match(p.name)) for p in base.iterdir() if p.is_dir()]
        yield from sorted(((p, m) for p, m in matches if m), key=lambda pm: (pm[1].group(2).lower(), pm[0].name))

    def concept(self, name: str, kind: ConceptKind = "dataset") -> Concept:
        for c in self.concepts(kind):
            if c.name == name:
                return c
        have = ", ".join(c.name for c in self.concepts(kind)) or "none yet"
        label = "regularisation set" if kind == "reg" else "concept"
        raise NotFound(f"No {label} named {name!r} in project {self.name!r} (have: {have}).")

    def add_concept(self, name: str, repeats: int = 1, kind: ConceptKind = "dataset") -> Concept:
        folder_name = concept_folder_name(name, repeats)
        with self.lock():
            if any(c.name == name for c in self.concepts(kind)):
                raise AlreadyExists(f"Project {self.name!r} already has a {kind} folder named {name!r}.")
            folder = self.root / KIND_FOLDERS[kind] / folder_name
            folder.mkdir(parents=True)
            return Concept(name=name, repeats=repeats, kind=kind, folder=folder)

    def ensure_concept(self, name: str, repeats: int | None = None, kind: ConceptKind = "dataset") -> Concept:
        """The concept `name`, made with `repeats` (1 when None) if new; an existing one gets `repeats` if given."""
        if repeats is not None:
            check_repeats(repeats)
        with self.lock():  # two imports into a new concept at once make it once
            try:
                c = self.concept(name, kind)
            except NotFound:
                return self.add_concept(name, 1 if repeats is None else repeats, kind)
            if repeats is not None and repeats != c.repeats:
                c = self.set_repeats(name, repeats, kind)
            return c

    def rename_concept(self, old: str, new: str, kind: ConceptKind = "dataset") -> Concept:
        with self.lock():
            c = self.concept(old, kind)
            if old == new:
                return c
            if any(x.name == new for x in self.concepts(kind)):
                raise AlreadyExists(f"Project {self.name!r} already has a {kind} folder named {new!r}.")
            return self._move(c, concept_folder_name(new, c.repeats))

    def set_repeats(self, name: str, repeats: int, kind: ConceptKind = "dataset") -> Concept:
        with self.lock():
            c = self.concept(name, kind)
            return c if repeats == c.repeats else self._move(c, concept_folder_name(name, repeats))

    def _move(self, c: Concept, folder_name: str) -> Concept:
        target = c.folder.parent / folder_name
        if target.exists():
            raise AlreadyExists(f"{c.relpath} cannot become {target.name}: that folder exists.")
        c.folder.rename(target)
        m = CONCEPT_FOLDER.match(folder_name)
        return Concept(name=m.group(2), repeats=int(m.group(1)), kind=c.kind, folder=target)

    def remove_concept(self, name: str, kind: ConceptKind = "dataset") -> Path:
        """Move the folder into the project's trash (originals stay); return where it went."""
        with self.lock():
            c = self.concept(name, kind)
            stamp = clock.stamp(micro=True)
            trash = self.state_dir / "trash" / f"{stamp}_{kind}_{c.folder.name}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(c.folder), str(trash))
            return trash


@dataclass(frozen=True)
class ProjectListing:
    """One line of the projects list; `problem` says why its project.toml cannot be read (then the rest is empty)."""

    name: str
    created: str = ""
    trigger_words: tuple[str, ...] = ()
    problem: str = ""

    @classmethod
    def of(cls, project: Project) -> ProjectListing:
        name = readable_name(project.name)
        try:
            s = project.settings
        except (LorakitError, OSError, ValueError) as e:  # ValueError: a file that is not UTF-8
            return cls(name=name, problem=readable_name(f"broken: {e}"))
        return cls(name=name, created=s.created, trigger_words=s.trigger_words)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "created": self.created, "trigger_words": list(self.trigger_words)}
        if self.problem:
            d["broken"] = self.problem
        return d


class Workspace:
    """The projects home: a folder of project folders."""

    def __init__(self, home: Path):
        self.home = Path(home)

    def list(self) -> list[Project]:
        if not self.home.is_dir():
            return []
        return [Project(p) for p in sorted(self.home.iterdir(), key=lambda p: p.name.lower())
                if (p / PROJECT_FILE).is_file()]

    def listing(self) -> list[ProjectListing]:
        """Every project with its settings' summary; one whose project.toml is damaged is listed as broken, so the
        others stay reachable."""
        return [ProjectListing.of(p) for p in self.list()]

    def open(self, name: str) -> Project:
        check_name(name, what="project name")
        path = self.home / name
        if not (path / PROJECT_FILE).is_file():
            have = ", ".join(p.name for p in self.list()) or "none yet"
            raise NotFound(f"No project named {name!r} in {self.home} (have: {have}).")
        return Project(path)

    def create(self, name: str, **settings: Any) -> Project:
        check_name(name, what="project name")
        created = clock.now_iso()
        s = ProjectSettings.from_dict({"name": name, "created": created, **settings})
        path = self.home / name
        if path.exists():
            raise AlreadyExists(f"A project or folder named {name!r} already exists in {self.home}.")
        for sub in ("originals", "dataset", "reg", "runs", "eval", STATE_DIR):
            (path / sub).mkdir(parents=True, exist_ok=True)
        write_toml(path / PROJECT_FILE, s.to_dict())
        return Project(path)
