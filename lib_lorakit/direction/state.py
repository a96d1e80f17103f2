"""What Direction keeps in a project, under `.lorakit/direction/`:

    labels.json       the user's labels and "never flip" marks
    settings.json     the direction settings (DIRECTION_SCHEMA)
    estimates.json    the last estimate (which embedder, and per image its direction), for the panel and Normalise

A label is stored in the original's orientation: when the training copy is mirrored (a flip step), the label of
the copy is the mirror of the stored one, so labels stay true through Normalise, undo and redo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

from ..errors import LorakitError
from ..fsutil import atomic_write_json, read_json
from ..project import Project, image_key
from .estimate import DIRECTIONS, MIRROR
from .settings import DirectionSettings


def flipped_now(project: Project, images: Iterable[str]) -> set[str]:
    """The images whose training copy is mirrored now (a flip in their derivation steps); the records are read
    once for all of them."""
    from ..crop import derive

    records = derive._load_records(project)  # one read, not one per image (derive.steps_of reads per call)
    out = set()
    for image in images:
        record = records.get(label_key(image))
        if record and derive.Steps.from_dict(record.get("steps")).flip:
            out.add(image)
    return out


label_key = image_key  # the project's one per-image key


class DirectionState:
    """Labels, marks, settings and the last estimate of one project. Writers hold the project's lock."""

    def __init__(self, project: Project):
        self.project = project
        self.folder = project.state_dir / "direction"

    def _path(self, name: str) -> Path:
        return self.folder / name

    def _read(self, name: str) -> dict[str, Any]:
        try:
            data = read_json(self._path(name), default={})
        except ValueError as e:
            raise LorakitError(f"{self._path(name)} is not valid JSON ({e}); fix or delete it.") from e
        if not isinstance(data, dict):
            raise LorakitError(f"{self._path(name)} does not hold an object; fix or delete it.")
        return data

    # --- settings ---------------------------------------------------------------------------------------------------
    def settings(self) -> DirectionSettings:
        return DirectionSettings.from_dict(self._read("settings.json"))

    def update_settings(self, changes: Mapping[str, Any]) -> DirectionSettings:
        with self.project.lock():
            new = DirectionSettings.from_dict({**self.settings().values, **changes})
            atomic_write_json(self._path("settings.json"), new.to_dict())
            return new

    # --- labels -----------------------------------------------------------------------------------------------------
    def stored_labels(self) -> tuple[dict[str, str], set[str]]:
        """(label key → label in the original's orientation, label keys marked never flip)."""
        data = self._read("labels.json")
        labels = {str(k): str(v) for k, v in (data.get("labels") or {}).items() if v in DIRECTIONS}
        return labels, {str(i) for i in data.get("never_flip") or ()}

    def labels_now(self, images: Iterable[str]) -> dict[str, str]:
        """The labels of the training copies as they are now (mirrored where the copy is flipped)."""
        stored, _ = self.stored_labels()
        held = [i for i in images if label_key(i) in stored]
        mirrored = flipped_now(self.project, held)
        return {i: MIRROR[stored[label_key(i)]] if i in mirrored else stored[label_key(i)] for i in held}

    def never_flip(self, images: Iterable[str]) -> set[str]:
        _, never = self.stored_labels()
        return {i for i in images if label_key(i) in never}

    def set_labels(self, images: Iterable[str], label: str) -> None:
        """`label` (a direction of the copy as it is now, `never-flip`, `may-flip` or `unlabel`) for `images`."""
        with self.project.lock():
            labels, never = self.stored_labels()
            images = list(images)
            mirrored = flipped_now(self.project, images) if label in DIRECTIONS else set()
            for image in images:
                key = label_key(image)
                if label in DIRECTIONS:
                    labels[key] = MIRROR[label] if image in mirrored else label
                elif label == "unlabel":
                    labels.pop(key, None)
                elif label == "never-flip":
                    never.add(key)
                elif label == "may-flip":
                    never.discard(key)
            atomic_write_json(self._path("labels.json"), {"version": 1, "labels": dict(sorted(labels.items())),
                                                          "never_flip": sorted(never)})

    def rekey(self, moved: Callable[[str], str]) -> None:
        """Labels and marks of a renamed concept move with it (image_state.rename_concept, under the lock)."""
        labels, never = self.stored_labels()
        if not labels and not never:
            return
        atomic_write_json(self._path("labels.json"), {
            "version": 1, "labels": dict(sorted((moved(k), v) for k, v in labels.items())),
            "never_flip": sorted(moved(k) for k in never)})

    # --- the last estimate ------------------------------------------------------------------------------------------
    def last_estimate(self) -> Optional[dict[str, Any]]:
        data = self._read("estimates.json")
        return data or None

    def save_estimate(self, data: Mapping[str, Any]) -> None:
        with self.project.lock():
            atomic_write_json(self._path("estimates.json"), dict(data))
