"""Direction through the one door: estimate which way each subject faces, label, normalise with caption swap.

The tab, the CLI and the API build an `EstimateRequest`, `LabelRequest` or `NormaliseRequest` from plain data
(`from_dict` names a bad field) and call one `DirectionService` method (`Studio.direction`).

Normalise mirrors the images that face the minority side (or the chosen ones) through the derivation
(`crop.derive.flip`, one crop/flip undo step), then swaps the direction words in their captions through the caption
store (one caption undo step). Images marked "never flip", tagged with a flip-unsafe tag, or whose caption cannot
be read are left alone and reported with the reason. Originals are never touched: a flip re-derives the training
copy from its original.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..captions.store import CaptionRecord, CaptionStore
from ..captions.tags import tag_key
from ..errors import LorakitError, NotFound
from ..host import Host
from ..jobs import JobState, ProgressFn, job_manager
from ..paths import resolve_inside
from ..project import Project, Workspace
from .estimate import DIRECTIONS, MIRROR, UNKNOWN, Estimate, Evidence, combine
from .settings import DirectionSettings
from .state import DirectionState, flipped_now
from .swap import swap_words, unsafe_tags

LABELS = (*DIRECTIONS, "never-flip", "may-flip", "unlabel")
NO_EMBEDDER = "none"
GAZE_TAGS = frozenset({"looking at viewer", "looking to the side", "looking away", "looking back", "looking down",
                       "looking up", "looking left", "looking right", "looking to the left", "looking to the right",
                       "looking afar", "looking ahead", "looking at another", "closed eyes", "eyes closed"})
GAZE_SUGGESTIONS = {"left": ("looking to the side", "looking at viewer", "looking ahead"),
                    "right": ("looking to the side", "looking at viewer", "looking ahead"),
                    "front": ("looking at viewer", "looking away", "looking down"),
                    "away": ("looking away", "looking back"),
                    UNKNOWN: ("looking at viewer", "looking to the side", "looking away")}


# --- requests -------------------------------------------------------------------------------------------------------
def _read(cls: type, data: Any, what: str) -> dict[str, Any]:
    """Plain data checked against the dataclass's fields: strings, booleans, lists of strings (or one string)."""
    if not isinstance(data, Mapping):
        raise LorakitError(f"{what}: expected an object of options, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        raise LorakitError(f"{what}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        default = known[key].default
        if isinstance(default, tuple) or key == "images":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise LorakitError(f"{what}.{key}: expected a list of image paths, got {type(value).__name__}")
            out[key] = tuple(dict.fromkeys(value))
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise LorakitError(f"{what}.{key}: expected true or false, got {value!r}")
            out[key] = value
        else:
            if not isinstance(value, str):
                raise LorakitError(f"{what}.{key}: expected text, got {type(value).__name__}")
            out[key] = value.strip()
    return out


def _check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise LorakitError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class EstimateRequest:
    """`embedder`: `MODEL[:PRETRAINED]` or `config.json:weights` (empty: the default model, fetched on first use;
    `none`: no embeddings, so only labels, tags and detectors count). `detector`: also use face/head boxes."""

    embedder: str = ""
    images: tuple[str, ...] = ()
    concept: str = ""
    detector: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EstimateRequest:
        return cls(**_read(cls, data, "estimate"))


@dataclass(frozen=True)
class LabelRequest:
    """A direction of the training copies as they are now, or `never-flip` / `may-flip` / `unlabel`."""

    images: tuple[str, ...] = ()
    label: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelRequest:
        req = cls(**_read(cls, data, "label"))
        _check_choice(req.label, LABELS, "label.label")
        if not req.images:
            raise LorakitError("label.images: name at least one image (e.g. dataset/1_cat/a.png)")
        return req


@dataclass(frozen=True)
class NormaliseRequest:
    """`to`: the side every subject should face (empty: the one most already face). `images`: flip exactly these
    instead of the minority. `embedder`: as for estimate (None: the one the last estimate used)."""

    to: str = ""
    images: tuple[str, ...] = ()
    embedder: Optional[str] = None
    dry_run: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormaliseRequest:
        req = cls(**_read(cls, data, "normalise"))
        if req.to:
            _check_choice(req.to, ("left", "right"), "normalise.to")
        return req


# --- results --------------------------------------------------------------------------------------------------------
@dataclass
class EstimateReport:
    images: list[Estimate] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"image", "reason"}: could not be embedded/read
    embedder: str = ""
    notes: list[str] = field(default_factory=list)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {d: [] for d in (*DIRECTIONS, UNKNOWN)}
        for e in self.images:
            out[e.direction].append(e.image)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"images": [e.to_dict() for e in self.images], "groups": self.groups(), "skipped": self.skipped,
                "embedder": self.embedder, "notes": self.notes}

    def summary(self) -> str:
        counts = ", ".join(f"{len(v)} {k}" for k, v in self.groups().items() if v)
        return f"{len(self.images)} image(s): {counts or 'none'}" + (
            f"; {len(self.skipped)} skipped (each with its reason)" if self.skipped else "") + "."


@dataclass
class NormaliseReport:
    to: str
    flipped: list[str] = field(default_factory=list)  # mirrored now (or unmirrored: they had been flipped)
    kept: list[str] = field(default_factory=list)
    unsafe: list[dict[str, str]] = field(default_factory=list)  # {"image", "reason"}
    captions: list[dict[str, str]] = field(default_factory=list)  # {"image", "before", "after"}
    suggestions: list[dict[str, Any]] = field(default_factory=list)  # {"image", "direction", "tags"}: not applied
    flip_step: str = ""  # the crop/flip undo step
    caption_step: str = ""  # the caption undo step
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.to, "flipped": self.flipped, "kept": self.kept, "unsafe": self.unsafe,
                "captions": self.captions, "suggestions": self.suggestions, "flip_step": self.flip_step,
                "caption_step": self.caption_step, "dry_run": self.dry_run}

    def summary(self) -> str:
        flip, swap = ("Would flip", "would swap") if self.dry_run else ("Flipped", "swapped")
        text = (f"{flip} {len(self.flipped)} image(s) to face {self.to} and {swap} direction words in "
                f"{len(self.captions)} caption(s); kept {len(self.kept)}")
        if self.unsafe:
            text += f"; {len(self.unsafe)} left alone as unsafe to flip (each with its reason)"
        if self.flipped and not self.dry_run:
            text += ". Undo: `crop undo` for the images and `caption undo` for the captions"
        return text + "."


# --- the service ----------------------------------------------------------------------------------------------------
class DirectionService:
    """Direction work on the projects of one Host."""

    def __init__(self, host: Host):
        self.host = host

    def project(self, name: str) -> Project:
        return Workspace(self.host.projects_home()).open(name)

    @property
    def models_root(self) -> Path:
        return self.host.models_dir() / "train-style" / "clip"  # shared with the CLIP tagger

    # --- settings and labels ----------------------------------------------------------------------------------------
    def settings(self, name: str) -> DirectionSettings:
        return DirectionState(self.project(name)).settings()

    def update_settings(self, name: str, changes: Mapping[str, Any]) -> DirectionSettings:
        return DirectionState(self.project(name)).update_settings(changes)

    def label(self, name: str, req: LabelRequest) -> dict[str, Any]:
        """Store the label (or mark) for each image; answers every label and mark now held."""
        project = self.project(name)
        _check_images(project, req.images)
        state = DirectionState(project)
        state.set_labels(req.images, req.label)
        return self.labels(name)

    def labels(self, name: str) -> dict[str, Any]:
        project = self.project(name)
        state = DirectionState(project)
        images = [r.image for r in _records(project)]
        return {"labels": state.labels_now(images), "never_flip": sorted(state.never_flip(images))}

    # --- estimate ---------------------------------------------------------------------------------------------------
    def estimate(self, name: str, req: EstimateRequest, *, progress: Optional[ProgressFn] = None,
                 cancel: Optional[threading.Event] = None, embedder: Any = None) -> EstimateReport:
        """Estimate every training image's direction (or the request's images, or a concept's) and keep the result
        for the panel and Normalise. `embedder` replaces the model the request names (tests, benchmarks)."""
        project = self.project(name)
        records = _records(project, concept=req.concept or None)
        if req.images:
            _check_images(project, req.images, records)
            records = [r for r in records if r.image in set(req.images)]
        report = self._estimate(project, records, req.embedder, detector=req.detector, progress=progress,
                                cancel=cancel, embedder=embedder)
        state = DirectionState(project)
        rows = {e.image: e.to_dict() for e in report.images}
        last = state.last_estimate() or {}
        if (req.images or req.concept) and last.get("embedder") == report.embedder:  # a part re-estimated
            present = {r.image for r in _records(project)}
            rows = {**{r["image"]: r for r in last.get("images", ()) if r.get("image") in present}, **rows}
        state.save_estimate({"embedder": report.embedder, "detector": req.detector, "images": list(rows.values())})
        return report

    def last_estimate(self, name: str) -> dict[str, Any]:
        """The estimate kept by the last `estimate` (and updated by `normalise`), for the panel: empty if none."""
        return DirectionState(self.project(name)).last_estimate() or {}

    def start_estimate(self, name: str, req: EstimateRequest) -> JobState:
        """The same estimate as a background job with progress and cancel (the tab and the API use this)."""
        self.project(name)

        def work(progress: ProgressFn, cancel: threading.Event) -> dict:
            return self.estimate(name, req, progress=progress, cancel=cancel).to_dict()

        return job_manager(self.host.projects_home()).start(kind="direction", project=name,
                                                            title=f"Estimate directions in {name}", work=work)

    def _estimate(self, project: Project, records: Sequence[CaptionRecord], spec: str, *, detector: bool,
                  progress: Optional[ProgressFn], cancel: Optional[threading.Event],
                  embedder: Any = None) -> EstimateReport:
        # 1. what is known without models: labels and tags
        state = DirectionState(project)
        images = [r.image for r in records]
        all_images = [r.image for r in _records(project)]
        labels = state.labels_now(all_images)
        evidence = Evidence(images=images, labels=labels, tags={r.image: r.tags for r in records})
        report = EstimateReport(embedder=spec if embedder is None else getattr(embedder, "id", "given"))
        # 2. embeddings of these images and of the labelled ones (the few-shot classifier learns from those)
        if embedder is not None or spec.lower() != NO_EMBEDDER:
            model = embedder if embedder is not None else self._embedder(spec)
            wanted = list(dict.fromkeys([*images, *(i for i in all_images if i in labels)]))
            self._embed(project, model, wanted, evidence, report, progress=progress, cancel=cancel)
        # 3. face and head boxes
        if detector:
            self._detect(project, images, evidence, report)
        report.images = combine(evidence)
        return report

    def _embedder(self, spec: str) -> Any:
        """The embedder a spec names; a file in it must lie inside the allowed folders (the API's callers)."""
        from ..embed import embedder_from_spec
        from ..embed.models import parse_spec

        model, pretrained, config = parse_spec(spec)
        roots = [*self.host.allowed_roots(), self.models_root]
        if config is not None:
            spec = f"{resolve_inside(str(config), roots)}:{resolve_inside(pretrained, roots)}"
        elif "/" in pretrained or "\\" in pretrained:
            spec = f"{model}:{resolve_inside(pretrained, roots)}"
        return embedder_from_spec(spec, self.models_root)

    @staticmethod
    def _embed(project: Project, model: Any, images: list[str], evidence: Evidence, report: EstimateReport, *,
               progress: Optional[ProgressFn], cancel: Optional[threading.Event]) -> None:
        from ..embed import embed_project

        stop = cancel.is_set if cancel is not None else None
        plain = embed_project(project, model, images, progress=progress, cancel=stop)
        mirrored = embed_project(project, model, images, flipped=True, progress=progress, cancel=stop)
        both = [i for i in plain.images if i in set(mirrored.images)]
        evidence.embedded = both
        if both:
            evidence.vectors = np.stack([plain.vector(i) for i in both])
            evidence.flipped = np.stack([mirrored.vector(i) for i in both])
        evidence.embed_texts = getattr(model, "embed_texts", None)
        reasons = dict(plain.skipped) | dict(mirrored.skipped)
        report.skipped += [{"image": i, "reason": r} for i, r in reasons.items()]

    def _detect(self, project: Project, images: list[str], evidence: Evidence, report: EstimateReport) -> None:
        from ..detect import default_detector, detect_image
        from ..detect.models import detectors_folder

        root = detectors_folder(self.host.models_dir())
        chains = [default_detector(root, kinds=(kind,)) for kind in ("head", "face")]
        boxes: dict[str, list[Any]] = {}
        for image in images:
            for chain in chains:
                found = detect_image(chain, project.root / image)
                boxes.setdefault(image, []).extend(b for b in found.boxes if b.kind in ("head", "face"))
        evidence.boxes = boxes

    # --- normalise --------------------------------------------------------------------------------------------------
    def normalise(self, name: str, req: NormaliseRequest, *, embedder: Any = None) -> NormaliseReport:
        """Flip the minority (or the chosen images) to face `req.to`, swapping their captions' direction words."""
        # 1. the estimate, re-fit with today's labels
        project = self.project(name)
        state = DirectionState(project)
        settings = state.settings()
        records = _records(project)
        if not records:
            raise NotFound(f"Project {name!r} has no training images yet; import some first.")
        last = state.last_estimate() or {}
        spec = req.embedder if req.embedder is not None else str(last.get("embedder") or NO_EMBEDDER)
        if req.images:
            _check_images(project, req.images, records)
        estimates = self._estimate(project, records, spec, detector=bool(last.get("detector")), progress=None,
                                   cancel=None, embedder=embedder).images
        # 2. which way, and which images turn
        by_image = {r.image: r for r in records}
        never = state.never_flip(by_image)
        fixed = [e.direction for e in estimates if (e.labelled or e.confidence >= settings.min_confidence)
                 and _unsafe_reason(by_image[e.image], e.image in never, settings)]
        if req.to or not req.images:
            target = req.to or _majority(estimates, settings.min_confidence, fixed)
        else:  # the chosen images are flipped whichever way the others face
            target = "the other way"
        chosen = set(req.images) if req.images else {
            e.image for e in estimates
            if e.direction == MIRROR[target] and (e.labelled or e.confidence >= settings.min_confidence)}
        report = NormaliseReport(to=target, dry_run=req.dry_run)
        flip: list[str] = []
        for image in sorted(chosen):
            reason = _unsafe_reason(by_image[image], image in never, settings)
            if reason:
                report.unsafe.append({"image": image, "reason": reason})
            else:
                flip.append(image)
        # 3. captions, then the flips and the swaps (one undo step each)
        triggers = project.settings.trigger_words
        changes = {i: swap_words(by_image[i].text, settings.swap_pairs, keep=triggers) for i in flip}
        changes = {i: t for i, t in changes.items() if t != by_image[i].text}
        report.captions = [{"image": i, "before": by_image[i].text, "after": t} for i, t in changes.items()]
        report.flipped = flip
        if flip and not req.dry_run:
            self._apply(project, flip, changes, report)
        done = set(report.flipped) | {u["image"] for u in report.unsafe}
        report.kept = [e.image for e in estimates if e.image not in done]
        # 4. what to caption next: the gaze (seeds/002), suggested only
        now = {e.image: (MIRROR[e.direction] if e.image in set(report.flipped) else e.direction) for e in estimates}
        report.suggestions = _gaze_suggestions(records, now)
        if not req.dry_run:
            _remember(state, estimates, set(report.flipped), spec, last)
        return report

    @staticmethod
    def _apply(project: Project, flip: list[str], changes: Mapping[str, str], report: NormaliseReport) -> None:
        from ..crop import derive

        mirrored = flipped_now(project, flip)
        on = [i for i in flip if i not in mirrored]
        off = [i for i in flip if i in mirrored]
        derived, steps = {}, []
        for images, state in ((on, True), (off, False)):
            if images:
                result = derive.flip(project, images, state, label=f"Direction: face {report.to}")
                steps.append(result.step)
                derived.update({d.previous: d.image for d in result.derived})
                report.unsafe += [{"image": s.image, "reason": f"could not be flipped: {s.reason}"}
                                  for s in result.skipped]
        report.flipped = [i for i in flip if i in derived]
        report.flip_step = ", ".join(s for s in steps if s)
        swaps = {derived[i]: t for i, t in changes.items() if i in derived}
        report.captions = [c for c in report.captions if c["image"] in derived]
        if swaps:
            label = f"Swap direction words in {len(swaps)} flipped caption(s)"
            entry = CaptionStore(project).apply(swaps, label=label, op={"op": "direction_swap",
                                                                        "images": sorted(swaps)})
            report.caption_step = entry.id


# --- helpers --------------------------------------------------------------------------------------------------------
def _records(project: Project, concept: Optional[str] = None) -> list[CaptionRecord]:
    return CaptionStore(project).records(kind="dataset", concept=concept)


def _check_images(project: Project, images: Sequence[str], records: Optional[Sequence[CaptionRecord]] = None) -> None:
    known = {r.image for r in (records if records is not None else _records(project))}
    missing = [i for i in images if i not in known]
    if missing:
        example = next(iter(sorted(known)), "dataset/1_name/picture.png")
        raise NotFound(f"Not a training image of project {project.name!r}: {', '.join(missing[:5])}"
                       f"{' …' if len(missing) > 5 else ''}. Name images by their path in the project, like "
                       f"{example!r}.")


def _majority(estimates: Sequence[Estimate], min_confidence: float, fixed: Sequence[str] = ()) -> str:
    """The side most sure estimates face; on a tie, the side of the images that cannot be flipped (`fixed`)."""
    sure = [e.direction for e in estimates if e.labelled or e.confidence >= min_confidence]
    left, right = sure.count("left"), sure.count("right")
    if left == right:
        left, right = list(fixed).count("left"), list(fixed).count("right")
    if left == right:
        raise LorakitError(f"As many images face left as right (at least {min_confidence:.0%} sure): choose the side "
                           "every subject should face (Normalise to left or right in the tab, --to left|right in the "
                           "command line)"
                           + ("" if sure.count("left") else ", or label a few images first"))
    return "left" if left > right else "right"


def _unsafe_reason(record: CaptionRecord, never: bool, settings: DirectionSettings) -> str:
    if never:
        return "marked never flip"
    if not record.readable:
        return f"its caption could not be read, so its direction words could not be swapped ({record.problem})"
    found = unsafe_tags(record.tags, settings.flip_unsafe)
    if found:
        return (f"tagged {', '.join(repr(t) for t in found)}: mirrored, it would show that on the wrong side or "
                f"backwards (the flip-unsafe list is the direction setting flip_unsafe)")
    return ""


def _gaze_suggestions(records: Sequence[CaptionRecord], direction: Mapping[str, str]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        if r.image in direction and not {tag_key(t) for t in r.tags} & GAZE_TAGS:
            d = direction[r.image]
            out.append({"image": r.image, "direction": d, "tags": list(GAZE_SUGGESTIONS[d])})
    return out


def _remember(state: DirectionState, estimates: Sequence[Estimate], flipped: set[str], spec: str,
              last: Mapping[str, Any]) -> None:
    """The saved estimate, with the flipped images' directions mirrored (they face the other way now)."""
    rows = []
    for e in estimates:
        row = e.to_dict()
        if e.image in flipped:
            row["direction"] = MIRROR[e.direction]
            row["probabilities"] = {MIRROR[k]: v for k, v in row["probabilities"].items()}
        rows.append(row)
    state.save_estimate({"embedder": spec, "detector": bool(last.get("detector")), "images": rows})
