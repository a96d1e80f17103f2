"""The sorter's vocabulary and its state on disk: class names, the Apply request and its report, predictions, and
the labels kept by image key (shared by the sorter service, `sorter.py`, and Apply, `apply.py`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from ..errors import InvalidName, LorakitError, NotFound
from ..fsutil import atomic_write_json, read_json
from ..paths import check_name
from ..project import MAX_REPEATS, Project, image_key
from ..schema import Field, Schema, text_list

STATE_DIR = "sorter"
MAX_CLASSES = 64
MAX_CLASS_CHARS = 60
INTO = ("concepts", "reg", "discard", "tags")
_CLASS_BAD = re.compile(r"[,\x00-\x1f\x7f/\\:*?\"<>|]")

SORT_SCHEMA = Schema(noun="sort option", groups=(("sort", "Sort"),), fields=(
    Field(name="into", type=str, default="concepts", choices=INTO, group="sort", label="Apply into",
          reason="concepts: copy each image into the concept named after its class; reg: into a regularisation set; "
                 "discard: move it to the project's trash; tags: add the class name to its caption."),
    Field(name="min_confidence", type=float, default=0.0, minimum=0.0, maximum=1.0, group="sort",
          label="Least confidence", reason="Images predicted with less confidence are left where they are."),
    Field(name="move", type=bool, default=False, group="sort", label="Move",
          reason="Move the training copies instead of copying them (the originals never move)."),
    Field(name="repeats", type=int, default=0, minimum=0, maximum=MAX_REPEATS, group="sort", label="Repeats",
          reason="Repeats of a class concept made by Apply; 0 keeps an existing concept's and gives a new one 1."),
    Field(name="dry_run", type=bool, default=False, group="sort", label="Dry run",
          reason="Show what Apply would do and change nothing."),
))


def check_class(name: Any) -> str:
    """A class name: short text that can be a caption tag and (once `/` and the like are replaced) a folder."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidName(f"A class name is text, got {name!r}.")
    name = " ".join(name.split())
    if len(name) > MAX_CLASS_CHARS:
        raise InvalidName(f"The class name {name[:20]!r}… is {len(name)} characters long; the limit is "
                          f"{MAX_CLASS_CHARS}.")
    if "," in name or any(ord(c) < 32 for c in name):
        raise InvalidName(f"The class name {name!r} holds a comma or a control character; it must be one tag.")
    check_name(concept_of_class(name), what="concept name made from the class")
    return name


def concept_of_class(name: str) -> str:
    """The concept (folder) a class files into: `3/4 view` → `3-4 view`."""
    return _CLASS_BAD.sub("-", name).strip(" .")


label_key = image_key  # the project's one per-image key


# --- requests and results -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApplyRequest:
    into: str = "concepts"
    min_confidence: float = 0.0
    move: bool = False
    repeats: int = 0
    dry_run: bool = False
    classes: Optional[tuple[str, ...]] = None  # only these classes; None: every class

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApplyRequest:
        if not isinstance(data, Mapping):
            raise LorakitError(f"Expected the apply options as an object, got {type(data).__name__}.")
        options = dict(data)
        classes = options.pop("classes", None)
        if classes is not None:
            classes = text_list(classes, "classes", "class names")
        chosen = SORT_SCHEMA.from_dict(options)
        if chosen["move"] and chosen["into"] in ("tags", "discard"):
            raise LorakitError(f"move: only with into concepts or reg (into {chosen['into']} moves nothing).")
        return cls(**chosen, classes=None if classes is None else tuple(check_class(c) for c in classes))


@dataclass(frozen=True)
class Prediction:
    image: str
    cls: str
    confidence: float
    label: Optional[str] = None  # the user's label, which Apply follows

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "class": self.cls, "confidence": round(self.confidence, 6), "label": self.label}


@dataclass
class TrainReport:
    classes: list[str]
    cv_accuracy: Optional[float]
    examples: dict[str, int]
    embedder: str
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in self.examples.items())
        cv = "not enough examples to cross-validate (2 a class at least)" if self.cv_accuracy is None else \
            f"cross-validated accuracy {self.cv_accuracy:.0%}"
        return f"Trained on {sum(self.examples.values())} example(s) ({counts}); {cv}."


@dataclass
class ApplyReport:
    into: str
    dry_run: bool
    applied: list[dict[str, Any]] = field(default_factory=list)  # image, class, confidence, to
    skipped: list[dict[str, str]] = field(default_factory=list)  # image, reason
    step: str = ""  # the id `sort undo` takes back ("" for tags: the caption history holds those)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- state --------------------------------------------------------------------------------------------------------

class SortState:
    """Classes, labels and the classifier of one project. Writers hold the project's lock."""

    def __init__(self, project: Project):
        self.project = project
        self.folder = project.state_dir / STATE_DIR

    def _labels_file(self) -> dict[str, Any]:
        try:
            data = read_json(self.folder / "labels.json", default={}) or {}
        except ValueError as e:
            raise LorakitError(f"{self.folder / 'labels.json'} is damaged ({e}); fix or delete it.") from e
        if not isinstance(data, dict):
            raise LorakitError(f"{self.folder / 'labels.json'} does not hold an object; fix or delete it.")
        return {"classes": [str(c) for c in data.get("classes", [])],
                "labels": {str(k): str(v) for k, v in dict(data.get("labels", {})).items()}}

    def classes(self) -> list[str]:
        return self._labels_file()["classes"]

    def labels(self, images: Sequence[str]) -> dict[str, str]:
        """Current image path → class, for the labels whose image is among `images`."""
        stored = self._labels_file()["labels"]
        return {i: stored[label_key(i)] for i in images if label_key(i) in stored}

    def set_classes(self, classes: Sequence[str]) -> list[str]:
        with self.project.lock():
            data = self._labels_file()
            data["classes"] = list(dict.fromkeys(check_class(c) for c in classes))
            if len(data["classes"]) > MAX_CLASSES:
                raise LorakitError(f"{len(data['classes'])} classes; the sorter takes at most {MAX_CLASSES}.")
            gone = set(data["labels"].values()) - set(data["classes"])
            data["labels"] = {k: v for k, v in data["labels"].items() if v not in gone}
            atomic_write_json(self.folder / "labels.json", data)
            return data["classes"]

    def set_labels(self, changes: Mapping[str, Optional[str]]) -> None:
        """image → class (None removes the label); every class must exist."""
        with self.project.lock():
            data = self._labels_file()
            for image, cls in changes.items():
                if cls is None:
                    data["labels"].pop(label_key(image), None)
                else:
                    data["labels"][label_key(image)] = self.known_class(cls, data["classes"])
            atomic_write_json(self.folder / "labels.json", data)

    def rekey(self, moved: Callable[[str], str]) -> None:
        """Labels of a renamed concept move with it (image_state.rename_concept, under the project's lock)."""
        data = self._labels_file()
        if data["labels"]:
            data["labels"] = {moved(k): v for k, v in data["labels"].items()}
            atomic_write_json(self.folder / "labels.json", data)

    def known_class(self, cls: str, classes: Optional[Sequence[str]] = None) -> str:
        classes = self.classes() if classes is None else classes
        name = " ".join(str(cls).split())
        if name not in classes:
            have = ", ".join(repr(c) for c in classes) or "none yet"
            raise NotFound(f"No class {name!r} in the sorter of {self.project.name!r} (classes: {have}). Add it "
                           f"first: sort {self.project.name} classes add {name!r}.")
        return name
