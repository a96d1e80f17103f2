"""The sorter (the "teachable machine"): classes the user names, a few labelled examples each, a small classifier on
image embeddings, predictions with their confidence, and Apply, which files images into class concepts,
regularisation sets or a discard set, or adds the class as a caption tag.

Kept in the project under `.lorakit/sorter/`:

    labels.json        {"classes": [...], "labels": {"dataset/<concept>/<stem>": class}}   (a change of repeats or of
                       the file's extension keeps a label, as the derivation records do)
    classifier.json    the trained classifier (classes, embedder, cross-validated accuracy) naming its .npy array, or
                       a Teachable Machine model (kind "teachable", its files in teachable/)
    applied/<id>.json  what each Apply made, so that `undo` can take it back

Nothing under `originals/` is touched: a copy into a class concept is a new training copy (a hard link where the
training copy is one), recorded in the importer's records with the same original, and given the same derivation
steps; "move" is such a copy followed by moving the old training copy to the project's trash.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import clock
from ..errors import LorakitError, NotFound
from ..fsutil import atomic_write_json
from ..jobs import JobState, ProgressFn, job_manager
from ..project import Project
from . import classifier as linear
from .apply import execute, plan, undo_last
from .sort_state import (  # noqa: F401 (the sorter's vocabulary, also imported from here)
    INTO,
    MAX_CLASS_CHARS,
    MAX_CLASSES,
    SORT_SCHEMA,
    STATE_DIR,
    ApplyReport,
    ApplyRequest,
    Prediction,
    SortState,
    TrainReport,
    check_class,
    concept_of_class,
    label_key,
)

# --- the service --------------------------------------------------------------------------------------------------

class SortService:
    """The sorter of the projects of one Host; the CLI, the API and the panel call only this."""

    def __init__(self, host: Any):
        from ..embed.service import EmbedService

        self.host = host
        self.embeddings = EmbedService(host)

    def project(self, name: str) -> Project:
        return self.embeddings.project(name)

    def _index(self, project: Project) -> dict[str, Any]:
        from ..dataset.index import DatasetIndex

        return {e.path: e for e in DatasetIndex(project).scan()}

    def _images(self, project: Project, index: Optional[dict[str, Any]] = None) -> list[str]:
        return [p for p in (index if index is not None else self._index(project)) if p.startswith("dataset/")]

    # --- classes and labels ---
    def classes(self, name: str) -> list[str]:
        return SortState(self.project(name)).classes()

    def add_classes(self, name: str, classes: Sequence[str]) -> list[str]:
        state = SortState(self.project(name))
        return state.set_classes([*state.classes(), *classes])

    def remove_classes(self, name: str, classes: Sequence[str]) -> list[str]:
        state = SortState(self.project(name))
        drop = {state.known_class(c) for c in classes}
        return state.set_classes([c for c in state.classes() if c not in drop])

    def label(self, name: str, cls: Optional[str], images: Sequence[str]) -> dict[str, str]:
        """Label images with a class (None: unlabel them); every image must be a training image of the project."""
        project = self.project(name)
        known = set(self._images(project))
        wanted = [str(i).replace("\\", "/").removeprefix("./") for i in images]
        if not wanted:
            raise LorakitError("Name at least one image to label (project-relative, e.g. dataset/1_x/a.png).")
        missing = [i for i in wanted if i not in known]
        if missing:
            raise NotFound(f"Not training images of {name!r}: {', '.join(repr(m) for m in missing[:5])}. Give paths "
                           "inside the project, such as dataset/1_concept/image.png.")
        state = SortState(project)
        state.set_labels({i: cls for i in wanted})
        return state.labels(wanted)

    def labels(self, name: str) -> dict[str, str]:
        project = self.project(name)
        return SortState(project).labels(self._images(project))

    # --- train and predict ---
    def train(self, name: str, *, embedder: str = "", progress: Any = None,
              cancel: Optional[threading.Event] = None, embedder_obj: Any = None) -> TrainReport:
        """Embed the labelled images (what is missing), fit the classifier, cross-validate it, save it."""
        from ..embed.models import DEFAULT_EMBEDDER
        from ..embed.store import fill

        project = self.project(name)
        state = SortState(project)
        index = self._index(project)
        labels = state.labels(self._images(project, index))
        classes = [c for c in state.classes() if c in set(labels.values())]
        if len(classes) < 2:
            raise LorakitError(f"The sorter of {name!r} needs labelled examples of at least two classes; it has "
                               f"{len(labels)} label(s) in {len(classes)} class(es). Label a few images of each: "
                               f"sort {name} label CLASS IMAGE...")
        spec = embedder or DEFAULT_EMBEDDER
        model = embedder_obj if embedder_obj is not None else self.embeddings.embedder(spec)
        table, _ = fill(project, model, list(labels), progress=progress, cancel=cancel, entries=index)
        if cancel is not None and cancel.is_set():
            raise LorakitError("Training was cancelled while embedding the examples; what was embedded is kept.")
        y = np.array([classes.index(labels[i]) for i in table.images])
        trained = linear.train(table.vectors, y, tuple(classes))
        linear.store_classifier(state.folder, trained.model, {
            "embedder_spec": spec, "embedder": model.id, "cv_accuracy": trained.cv_accuracy,
            "temperature": trained.temperature, "examples": len(y),
            "trained": clock.now_iso()})
        counts = {c: int((y == k).sum()) for k, c in enumerate(classes)}
        return TrainReport(classes=classes, cv_accuracy=trained.cv_accuracy, examples=counts, embedder=model.id,
                           skipped=[{"image": i, "reason": r} for i, r in table.skipped])

    def predict(self, name: str, images: Optional[Sequence[str]] = None, *, progress: Any = None,
                cancel: Optional[threading.Event] = None, embedder_obj: Any = None) -> list[Prediction]:
        """Every training image's class and confidence, the least certain first."""
        project = self.project(name)
        state = SortState(project)
        index = self._index(project)
        chosen = self._images(project, index) if images is None else list(images)
        model, info = linear.read_classifier(state.folder)
        if info.get("kind") == "teachable":
            from .tflite import predict_teachable

            found = predict_teachable(project, state.folder / "teachable", chosen)
        elif model is None:
            raise NotFound(f"The sorter of {name!r} is not trained yet: label a few images of each class, then "
                           f"sort {name} train.")
        else:
            from ..embed.store import fill

            embedder = embedder_obj if embedder_obj is not None else self.embeddings.embedder(info["embedder_spec"])
            table, _ = fill(project, embedder, chosen, progress=progress, cancel=cancel, entries=index)
            best, confidence = model.predict(table.vectors)
            found = [(i, model.classes[b], float(c)) for i, b, c in zip(table.images, best, confidence, strict=True)]
        labels = state.labels(chosen)
        out = [Prediction(image=i, cls=c, confidence=p, label=labels.get(i)) for i, c, p in found]
        return sorted(out, key=lambda p: (p.confidence, p.image))

    def import_teachable(self, name: str, model_file: str, labels_file: str, *, uploaded: bool = False) -> list[str]:
        """Use a Teachable Machine export (model_unquant.tflite + labels.txt) as the project's classifier; its
        labels become the classes. Named files must lie inside the allowed folders, unless `uploaded` (files this
        server received by upload, in its temporary folder: the tab's upload box)."""
        from ..paths import resolve_inside
        from .tflite import install_teachable

        project = self.project(name)
        roots = self.host.allowed_roots()
        state = SortState(project)
        model, labels = ((Path(model_file), Path(labels_file)) if uploaded
                         else (resolve_inside(model_file, roots), resolve_inside(labels_file, roots)))
        classes = install_teachable(model, labels, state.folder / "teachable")
        state.set_classes(list(dict.fromkeys([*state.classes(), *classes])))
        atomic_write_json(state.folder / "classifier.json", {"kind": "teachable", "classes": classes})
        return classes

    def status(self, name: str) -> dict[str, Any]:
        """Classes, labels and what the saved classifier is (for the panel and `GET …/sort`)."""
        project = self.project(name)
        state = SortState(project)
        _, info = linear.read_classifier(state.folder)
        keep = ("kind", "classes", "embedder", "cv_accuracy", "examples", "trained")
        return {"classes": state.classes(), "labels": state.labels(self._images(project)),
                "classifier": {k: info[k] for k in keep if k in info} or None}

    def start_train(self, name: str, *, embedder: str = "") -> JobState:
        """`train` as a background job (embedding the examples can take a while)."""
        self.project(name)

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self.train(name, embedder=embedder, progress=progress, cancel=cancel).to_dict()

        return job_manager(self.host.projects_home()).start(kind="sort-train", project=name,
                                                            title=f"Train the sorter of {name}", work=work)

    def start_predict(self, name: str) -> JobState:
        """`predict` as a background job; its result is `{"images": [...]}`."""
        self.project(name)

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            found = self.predict(name, progress=progress, cancel=cancel)
            return {"images": [p.to_dict() for p in found]}

        return job_manager(self.host.projects_home()).start(kind="sort-predict", project=name,
                                                            title=f"Sort the images of {name}", work=work)

    # --- apply ---
    def apply(self, name: str, req: ApplyRequest, *, predictions: Optional[list[Prediction]] = None,
              embedder_obj: Any = None) -> ApplyReport:
        """File every image by its label, or else by its prediction when confident enough (see ApplyRequest)."""
        project = self.project(name)
        state = SortState(project)
        if req.classes:
            for c in req.classes:
                state.known_class(c)
        found = predictions if predictions is not None else self.predict(name, embedder_obj=embedder_obj)
        report = ApplyReport(into=req.into, dry_run=req.dry_run)
        moves = plan(project, found, req, report)
        if not req.dry_run and moves:
            execute(project, moves, req, report)
        return report

    def undo(self, name: str) -> dict[str, Any]:
        return undo_last(self.project(name))
