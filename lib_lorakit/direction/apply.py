"""Apply the sorter's classes: plan what goes where, do it, and take the last Apply back.

A copy into a class concept is a new training copy (a hard link where possible) with its caption, recorded in the
importer's records under the same original and given the source's derivation steps, so that re-deriving it later
starts from the original like any other copy. A "move" and a discard put the old training copy and its caption under
`.lorakit/trash/sort-<step>/`, from where `undo` brings them back. Originals are never touched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import clock
from ..errors import NotFound
from ..fsutil import atomic_copy, atomic_write_json, read_json
from ..images import CAPTION_SUFFIXES
from ..project import CONCEPT_FOLDER, KIND_FOLDERS, Project
from .sort_state import STATE_DIR, ApplyReport, ApplyRequest, Prediction, SortState, concept_of_class

log = logging.getLogger(__name__)


def _now() -> str:
    return clock.now_iso()


def _step_id() -> str:
    import secrets

    return f"{clock.stamp()}-{secrets.token_hex(3)}"


def plan(project: Project, predictions: Sequence[Prediction], req: ApplyRequest, report: ApplyReport) -> list[dict]:
    """What Apply would do with each image (also the dry run's answer); skipped images get their reason."""
    kind = "reg" if req.into == "reg" else "dataset"
    existing = {c.name: c for c in project.concepts(kind)}
    captions = _captions(project) if req.into == "tags" else {}
    moves = []
    for p in predictions:
        cls = p.label or p.cls
        confidence = 1.0 if p.label else p.confidence
        if req.classes and cls not in req.classes:
            continue
        if confidence < req.min_confidence:
            report.skipped.append({"image": p.image, "reason": f"confidence {confidence:.2f} is below "
                                                             f"{req.min_confidence:.2f}"})
            continue
        to = _destination(p.image, cls, req, kind, existing, captions)
        if to.startswith("!"):
            report.skipped.append({"image": p.image, "reason": to[1:]})
            continue
        move = {"image": p.image, "class": cls, "confidence": round(confidence, 6), "to": to}
        report.applied.append(move)
        moves.append(move)
    return moves


def _destination(image: str, cls: str, req: ApplyRequest, kind: str, existing: dict, captions: dict) -> str:
    """Where an image goes (`!reason` when it stays)."""
    if req.into == "discard":
        return "trash"
    if req.into == "tags":
        from ..captions.tags import tag_key

        record = captions.get(image)
        if record is None or not record.readable:
            return "!its caption cannot be read" if record is not None else "!not a training image"
        if tag_key(cls) in {tag_key(t) for t in record.tags}:
            return "!its caption already has the tag"
        return "caption"
    concept = concept_of_class(cls)
    parts = image.split("/")
    here = CONCEPT_FOLDER.match(parts[1]) if len(parts) == 3 else None
    if here and here.group(2) == concept and parts[0] == KIND_FOLDERS[kind]:
        return f"!already in {parts[0]}/{parts[1]}"
    repeats = req.repeats or (existing[concept].repeats if concept in existing else 1)
    return f"{KIND_FOLDERS[kind]}/{repeats}_{concept}"


def _captions(project: Project) -> dict:
    from ..captions.store import CaptionStore

    return {r.image: r for r in CaptionStore(project).records(kind="dataset")}


def execute(project: Project, moves: list[dict], req: ApplyRequest, report: ApplyReport) -> None:
    if req.into == "tags":
        _add_tags(project, moves)
        return
    step = _step_id()
    done: dict[str, Any] = {"id": step, "time": _now(), "into": req.into, "made": [], "trashed": []}
    trash = project.state_dir / "trash" / f"sort-{step}"
    try:
        if req.into == "discard":
            for m in moves:
                done["trashed"] += _to_trash(project, m["image"], trash)
        else:
            _file_into_concepts(project, moves, req, done, trash)
    finally:
        if done["made"] or done["trashed"]:
            atomic_write_json(project.state_dir / STATE_DIR / "applied" / f"{step}.json", done)
            report.step = step


def _file_into_concepts(project: Project, moves: list[dict], req: ApplyRequest, done: dict, trash: Path) -> None:
    kind = "reg" if req.into == "reg" else "dataset"
    state = SortState(project)
    relabel: dict[str, str | None] = {}
    before = {c.name for c in project.concepts(kind)}
    done["created"] = []
    for m in moves:
        concept = project.ensure_concept(concept_of_class(m["class"]), req.repeats or None, kind)
        if concept.name not in before and concept.relpath not in done["created"]:
            done["created"].append(concept.relpath)
        source = m["image"]
        made = _copy_training_image(project, source, concept.folder)
        done["made"].append(made)
        m["to"] = made
        if req.move:
            done["trashed"] += _to_trash(project, source, trash)
            relabel[source] = None
            label = state.labels([source]).get(source)
            if label:
                relabel[made] = label
                done.setdefault("labels", {})[source] = label
    if relabel:
        state.set_labels(relabel)


def _copy_training_image(project: Project, source: str, folder: Path) -> str:
    """A new training copy of `source` in `folder` (with its caption, import record and derivation steps)."""
    from ..dataset.importer import link_or_copy
    from ..paths import safe_file_stem

    src = project.root / source
    if not src.is_file():
        raise NotFound(f"No image {source!r} in project {project.name!r} any more.")
    with project.lock():
        taken = {p.stem.lower() for p in folder.iterdir()}
        stem = safe_file_stem(src.stem)
        candidate, n = stem, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{stem}-{n}"
        dst = folder / (candidate + src.suffix)
        link_or_copy(src, dst)
        for suffix in CAPTION_SUFFIXES:
            caption = src.with_suffix(suffix)
            if caption.is_file() and not caption.is_symlink():
                atomic_copy(caption, dst.with_suffix(suffix))
        made = dst.relative_to(project.root).as_posix()
        _record_copy(project, source, made)
    _copy_steps(project, source, made)
    return made


def _record_copy(project: Project, source: str, made: str) -> None:
    """The importer's record of the source, again for the new copy (same original); nothing if it has none."""
    from ..dataset.importer import _Records  # the importer's own reader and writer of its records

    records = _Records(project)
    for key, rec in list(records.data.items()):
        if isinstance(rec, dict) and rec.get("image") == source:
            folder_kind, concept_folder = made.split("/")[:2]
            concept = CONCEPT_FOLDER.match(concept_folder).group(2)
            name = key.rsplit("/", 1)[-1]
            records.put(f"{folder_kind}/{concept}/{rec.get('sha256', '')}/{name}",
                        {**rec, "image": made, "imported": _now()})
            records.save()
            return


def _copy_steps(project: Project, source: str, made: str) -> None:
    """Give the copy the source's crop and flip, so that re-deriving it from the original keeps them."""
    try:
        from ..crop.derive import StepsChange, set_steps, steps_of
    except ImportError:  # the derivation is not part of this installation
        return
    steps = steps_of(project, source)
    if steps.empty:
        return
    report = set_steps(project, {made: StepsChange(crop=steps.crop, fill=steps.fill, flip=steps.flip,
                                                   mode=steps.mode or None)},
                       label=f"Sort: {made} keeps the crop and flip of {source}", op={"op": "sort-copy"})
    if report.skipped:
        log.warning("the copy %s could not take the steps of %s: %s", made, source, report.skipped[0].reason)


def _to_trash(project: Project, image: str, trash: Path) -> list[list[str]]:
    """Move a training copy and its caption under `trash`; [[where it was, where it is]] for undo."""
    moved = []
    src = project.root / image
    for f in [src] + [src.with_suffix(s) for s in CAPTION_SUFFIXES]:
        if f.is_file() or f.is_symlink():
            rel = f.relative_to(project.root).as_posix()
            dest = trash / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)
            moved.append([rel, dest.relative_to(project.root).as_posix()])
    return moved


def _add_tags(project: Project, moves: list[dict]) -> None:
    from ..captions.store import CaptionStore
    from ..captions.tags import join_tags

    store = CaptionStore(project)
    records = {r.image: r for r in store.records(kind="dataset")}
    changes = {m["image"]: join_tags([*records[m["image"]].tags, m["class"]]) for m in moves}
    store.apply(changes, label=f"Sort: the class as a tag on {len(changes)} caption(s)",
                op={"op": "sort-tags", "images": sorted(changes)})


def undo_last(project: Project) -> dict[str, Any]:
    """Take back the last Apply into concepts, reg or discard: its copies go to the trash, what it moved comes back.
    (An Apply into tags is undone with the captions' own undo.)"""
    folder = project.state_dir / STATE_DIR / "applied"
    with project.lock():
        steps = sorted(folder.glob("*.json")) if folder.is_dir() else []
        for path in reversed(steps):
            done = read_json(path) or {}
            if not done.get("undone"):
                break
        else:
            raise NotFound("Nothing to undo: no Apply of the sorter into concepts, reg or discard is recorded "
                           "(tags are undone with `caption undo`).")
        trash = project.state_dir / "trash" / f"sort-undo-{done['id']}"
        removed = []
        for made in done.get("made", []):
            if (project.root / made).exists():
                _to_trash(project, made, trash)
                removed.append(made)
        restored = []
        for was, now in done.get("trashed", []):
            if (project.root / now).exists() and not (project.root / was).exists():
                (project.root / was).parent.mkdir(parents=True, exist_ok=True)
                os.replace(project.root / now, project.root / was)
                restored.append(was)
        if done.get("labels"):  # labels a move carried along go back with their images
            state = SortState(project)
            state.set_labels({**{m: None for m in removed}, **done["labels"]})
        for folder in done.get("created", []):  # a concept the Apply made goes when nothing else is in it
            target = project.root / folder
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
        atomic_write_json(path, {**done, "undone": _now()})
    return {"step": done["id"], "removed": removed, "restored": restored}
