"""The undo history of derivation steps (crop, flip, later sort): one step per operation, as for captions.

    .lorakit/derive-history/<id>.json   label, time, the operation, undone or not, and per image key its
                                        steps before and after (None: no record)

Semantics are the caption store's: undo takes back the newest step not undone, redo re-applies the step undone
last, and a new step drops the undone ones (the redo tail). Ids are never reused. Callers hold the project's lock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import clock
from ..errors import LorakitError, NotFound
from ..fsutil import atomic_write_json, read_json
from ..project import Project

HISTORY_DIR = "derive-history"
HISTORY_LIMIT = 200


@dataclass(frozen=True)
class DeriveStep:
    """One undo step. `changes` maps an image key to {"before": …, "after": …} (opaque JSON to this module)."""

    id: str
    label: str
    time: str
    op: dict[str, Any]
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    undone: bool = False

    def to_dict(self, *, with_changes: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "label": self.label, "time": self.time, "op": self.op,
                             "images": len(self.changes), "undone": self.undone}
        if with_changes:
            d["changes"] = self.changes
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeriveStep:
        return cls(id=str(data["id"]), label=str(data["label"]), time=str(data["time"]), op=dict(data["op"]),
                   changes=dict(data.get("changes") or {}), undone=bool(data.get("undone", False)))


class DeriveHistory:
    """The steps of one project, on disk. Cheap to construct; every call reads the disk."""

    def __init__(self, project: Project):
        self.folder = project.state_dir / HISTORY_DIR

    def record(self, *, label: str, op: Mapping[str, Any], changes: Mapping[str, Mapping[str, Any]]) -> DeriveStep:
        """Add a step (after dropping the redo tail); returns it."""
        new_id = f"{self._next_id():06d}"  # before the tail goes, so ids are never reused
        self._drop_redo_tail()
        step = DeriveStep(id=new_id, label=label, time=_now(), op=dict(op),
                          changes={k: dict(v) for k, v in changes.items()})
        self._write(step)
        self._trim()
        return step

    def last_done(self) -> DeriveStep:
        for step in self._steps(newest_first=True):
            if not step.undone:
                return step
        raise NotFound("Nothing to undo: no crop or flip is recorded for this project.")

    def first_undone(self) -> DeriveStep:
        """The step undone last (undone steps are always the newest; the oldest of them was undone last)."""
        undone: list[DeriveStep] = []
        for step in self._steps(newest_first=True):
            if not step.undone:
                break
            undone.append(step)
        if not undone:
            raise NotFound("Nothing to redo: no undone crop or flip follows the current state.")
        return undone[-1]

    def mark(self, step: DeriveStep, *, undone: bool) -> DeriveStep:
        marked = DeriveStep(id=step.id, label=step.label, time=step.time, op=step.op, changes=step.changes,
                            undone=undone)
        self._write(marked)
        return marked

    def get(self, step_id: str) -> DeriveStep:
        path = self.folder / f"{step_id}.json"
        data = read_json(path) if step_id.isdigit() else None
        if data is None:
            raise NotFound(f"No crop history step {step_id!r} (the history keeps the newest {HISTORY_LIMIT}).")
        return DeriveStep.from_dict(data)

    def annotate(self, step_id: str, **op: Any) -> DeriveStep:
        """Add to a step's operation what became known after it was recorded (the caption step of its tag)."""
        step = self.get(step_id)
        marked = DeriveStep(id=step.id, label=step.label, time=step.time, op={**step.op, **op},
                            changes=step.changes, undone=step.undone)
        self._write(marked)
        return marked

    def list(self, limit: int = 20) -> list[DeriveStep]:
        return self._steps(newest_first=True)[:limit]

    # --- files ------------------------------------------------------------------------------------------------
    def _write(self, step: DeriveStep) -> None:
        atomic_write_json(self.folder / f"{step.id}.json", {"version": 1, **step.to_dict(with_changes=True)})

    def _files(self) -> list[Path]:
        try:
            names = [n for n in os.listdir(self.folder) if n.endswith(".json") and n[:-5].isdigit()]
        except FileNotFoundError:
            return []
        return sorted((self.folder / n for n in names), key=lambda p: int(p.stem))

    def _steps(self, *, newest_first: bool) -> list[DeriveStep]:
        files = self._files()
        out = []
        for path in reversed(files) if newest_first else files:
            try:
                data: Optional[dict] = read_json(path)
            except ValueError as e:
                raise LorakitError(f"The crop history step {path} is damaged ({e}); delete that file.") from e
            if data is not None:
                out.append(DeriveStep.from_dict(data))
        return out

    def _next_id(self) -> int:
        files = self._files()
        return int(files[-1].stem) + 1 if files else 1

    def _drop_redo_tail(self) -> None:
        for step in self._steps(newest_first=True):
            if not step.undone:
                break
            (self.folder / f"{step.id}.json").unlink(missing_ok=True)

    def _trim(self) -> None:
        files = self._files()
        for path in files[:max(0, len(files) - HISTORY_LIMIT)]:
            path.unlink(missing_ok=True)


def _now() -> str:
    return clock.now_iso()
