"""The bucket preview of a project: for each training image its sd-scripts bucket, resized size and the part that
survives the centre crop; a histogram; optionally `SUBJECT_CUT` findings where a detected face or head is cut.

Sizes come from the dataset index (nothing is decoded unless `detect` asks for detection). Unset settings come from
the project's latest run (the values its preset resolved to), else the project's resolution and sd-scripts'
bucket defaults. The CLI (`buckets`), the API (`/projects/{name}/buckets`) and the Crop panel build a
`BucketRequest` with `from_dict` and call `Studio.buckets`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, Optional

from ..errors import LorakitError
from ..fsutil import read_json
from ..project import CONCEPT_FOLDER, KIND_FOLDERS, Project
from ..schema import Field, InvalidSettings, Schema
from .buckets import BucketCount, Bucketer, BucketSettings, Placement, histogram

log = logging.getLogger(__name__)

SETTING_NAMES = ("resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                 "bucket_no_upscale")
SUBJECT_KINDS = ("face", "head")
CUT_TOLERANCE_PX = 1.0  # detector boxes are this loose: a box poking out by less is not called cut
SEEDS_002 = ("seeds/002: centre crops cut heads off and push subjects to the side, and a model trained on them "
             "draws subjects out of frame")


def _declared() -> tuple[Field, ...]:
    """The training options' own declarations of the bucket settings (one source of truth), all optional here."""
    from ..train.options import SCHEMA as TRAINING

    return tuple(replace(TRAINING[name], default=None, optional=True) for name in SETTING_NAMES)


BUCKET_SCHEMA = Schema(noun="bucket setting", groups=(("dataset", "Dataset and buckets"),), fields=(
    *_declared(),
    Field(name="detect", type=bool, default=False, group="dataset", label="Find cut faces",
          reason="Run the face/head detector on every image and report SUBJECT_CUT where the crop cuts one "
                 "(decodes each image: slower)."),
))


@dataclass(frozen=True)
class BucketRequest:
    """What to preview; a setting left None comes from the latest run or the defaults."""

    resolution: Optional[int] = None
    enable_bucket: Optional[bool] = None
    min_bucket_reso: Optional[int] = None
    max_bucket_reso: Optional[int] = None
    bucket_reso_steps: Optional[int] = None
    bucket_no_upscale: Optional[bool] = None
    detect: bool = False

    @classmethod
    def from_dict(cls, data: Any, *, text: bool = False) -> BucketRequest:
        """Plain data (JSON body, CLI flags); `text=True` types string values by their declaration (a URL's query).
        Unknown names and bad values are refused, each named."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise LorakitError(f"buckets: expected an object of settings (e.g. {{\"resolution\": 512}}), got "
                               f"{type(data).__name__}")
        values = _typed(data) if text else dict(data)
        return cls(**BUCKET_SCHEMA.validate(values, path="buckets"))

    def overrides(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SETTING_NAMES if getattr(self, name) is not None}


def _typed(data: Mapping[str, Any]) -> dict[str, Any]:
    """Text values typed by their declaration; every problem named (under `buckets.`) and raised together."""
    out, problems = {}, []
    for key, value in data.items():
        try:
            out[key] = BUCKET_SCHEMA[key].parse(value) if key in BUCKET_SCHEMA and isinstance(value, str) else value
        except InvalidSettings as e:
            problems += [BUCKET_SCHEMA.at("buckets", p) for p in e.problems]
    if problems:
        raise InvalidSettings(problems)
    return out


_TWO_DIGITS = (2, 2, 2, 2)


class ImageBucket(NamedTuple):  # a tuple: made once per image, ten thousand at a time
    image: str  # project-relative
    placement: Placement
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        p = self.placement
        return {"image": self.image, "width": p.width, "height": p.height, "bucket": list(p.bucket),
                "resized": list(p.resized), "visible": list(map(round, p.visible, _TWO_DIGITS))}


@dataclass(frozen=True)
class SubjectCut:
    """A detected face or head that the bucket's centre crop cuts (partly or wholly)."""

    image: str
    kind: str
    box: tuple[float, float, float, float]
    score: float
    cut_fraction: float  # share of the box's area outside the visible region
    bucket: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        pct = round(self.cut_fraction * 100)
        return {"code": "SUBJECT_CUT", "severity": "warning", "image": self.image, "kind": self.kind,
                "box": [round(v, 1) for v in self.box], "score": round(self.score, 3),
                "cut_fraction": round(self.cut_fraction, 3),
                "message": f"{self.image}: sd-scripts' centre crop into its {self.bucket[0]}×{self.bucket[1]} bucket "
                           f"cuts away {pct}% of the {self.kind}.",
                "why": SEEDS_002 + ".",
                "fix": "Smart-crop the image around the subject or letterbox it (crop PROJECT smart|letterbox "
                       "IMAGE), so the whole head stays in the training picture."}


@dataclass
class BucketReport:
    project: str
    settings: BucketSettings
    source: str  # where the settings came from
    notes: list[str]
    images: list[ImageBucket]
    skipped: list[tuple[str, str]]  # (image, reason)
    findings: Optional[list[SubjectCut]] = None  # only when detection was asked for
    detection: dict[str, Any] = field(default_factory=dict)  # detector name, notes, images it could not read

    def histogram(self) -> list[BucketCount]:
        return histogram((i.placement, i.repeats) for i in self.images)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = {
            "project": self.project,
            "settings": {"resolution": list(s.resolution), "enable_bucket": s.enable_bucket,
                         "min_bucket_reso": s.min_bucket_reso, "max_bucket_reso": s.max_bucket_reso,
                         "bucket_reso_steps": s.bucket_reso_steps, "bucket_no_upscale": s.bucket_no_upscale,
                         "source": self.source, "notes": list(self.notes)},
            "buckets": [i.to_dict() for i in self.images],
            "histogram": [b.to_dict() for b in self.histogram()],
            "skipped": [{"image": image, "reason": reason} for image, reason in self.skipped]}
        if self.findings is not None:
            out["findings"] = [f.to_dict() for f in self.findings]
            out["detection"] = self.detection
        return out


def subject_cut(visible: Sequence[float], boxes: Iterable[Any], *, image: str = "",
                bucket: tuple[int, int] = (0, 0), kinds: Sequence[str] = SUBJECT_KINDS) -> list[SubjectCut]:
    """The boxes (anything with kind, left, top, right, bottom, score: `detect.Box` or alike) of `kinds` that lie
    partly or wholly outside `visible` (left, top, right, bottom in the same pixels), beyond CUT_TOLERANCE_PX."""
    vl, vt, vr, vb = visible
    t = CUT_TOLERANCE_PX
    found = []
    for box in boxes:
        if box.kind not in kinds or box.right <= box.left or box.bottom <= box.top:
            continue
        if box.left >= vl - t and box.top >= vt - t and box.right <= vr + t and box.bottom <= vb + t:
            continue
        inside_w = max(0.0, min(box.right, vr) - max(box.left, vl))
        inside_h = max(0.0, min(box.bottom, vb) - max(box.top, vt))
        area = (box.right - box.left) * (box.bottom - box.top)
        found.append(SubjectCut(image=image, kind=box.kind, box=(box.left, box.top, box.right, box.bottom),
                                score=float(box.score), cut_fraction=1.0 - inside_w * inside_h / area,
                                bucket=bucket))
    return found


def resolve_settings(project: Project, request: BucketRequest) -> tuple[BucketSettings, str]:
    """The request's settings over the latest run's over the defaults, and where they came from in words."""
    from ..train.options import SCHEMA as TRAINING

    values: dict[str, Any] = {name: TRAINING[name].default for name in SETTING_NAMES}
    values["resolution"] = side = project.settings.resolution
    # sd-scripts' defaults (256–1024) refuse a resolution outside them: a small test project (64 px) or a large
    # one (1536 px) gets bucket limits that hold its resolution, as the presets for such sizes set them
    values["min_bucket_reso"] = min(values["min_bucket_reso"], side)
    values["max_bucket_reso"] = max(values["max_bucket_reso"], side)
    source = "the project's resolution and sd-scripts' bucket defaults"
    run = latest_run_settings(project)
    if run is not None:
        run_id, preset, settings = run
        values.update(settings)
        source = f"run {run_id}" + (f" (preset {preset})" if preset else "")
    given = request.overrides()
    if given:
        values.update(given)
        source += ", with " + ", ".join(f"{k}={v}" for k, v in given.items())
    side = values["resolution"]
    return BucketSettings(resolution=(side, side), enable_bucket=values["enable_bucket"],
                          min_bucket_reso=values["min_bucket_reso"], max_bucket_reso=values["max_bucket_reso"],
                          bucket_reso_steps=values["bucket_reso_steps"],
                          bucket_no_upscale=values["bucket_no_upscale"]), source


def latest_run_settings(project: Project) -> Optional[tuple[str, str, dict[str, Any]]]:
    """(run id, preset, its bucket settings) of the newest run whose record holds valid ones; None without."""
    runs = project.root / "runs"
    if not runs.is_dir():
        return None
    for run_dir in sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True):
        try:
            meta = (read_json(run_dir / "run.json", default={}) or {}).get("meta") or {}
            settings = {k: v for k, v in (meta.get("settings") or {}).items() if k in SETTING_NAMES}
            if settings:
                return run_dir.name, str(meta.get("preset") or ""), BUCKET_SCHEMA.validate(settings)
        except (ValueError, AttributeError, OSError, LorakitError) as e:  # a damaged record: try the one before
            log.info("run %s: its bucket settings cannot be read (%s)", run_dir.name, e)
    return None


def sd_scripts_repeats(path: str) -> tuple[int, str]:
    """(repeats, "") for an image sd-scripts reads (directly inside `dataset|reg/<N>_<name>/`), else (0, why)."""
    parts = path.split("/")
    match = CONCEPT_FOLDER.match(parts[1]) if len(parts) == 3 and parts[0] in KIND_FOLDERS.values() else None
    if match is None:
        return 0, ("sd-scripts does not read it: it is not directly inside a <repeats>_<name> folder of dataset/ "
                   "or reg/")
    return int(match.group(1)), ""


def place_entries(entries: Iterable[Any], bucketer: Bucketer) -> tuple[list[ImageBucket], list[tuple[str, str]]]:
    """Index entries (path, width, height, problem) placed, and those sd-scripts will not train on with why."""
    images, skipped, trained = [], [], []
    folders: dict[str, tuple[int, str]] = {}  # an image's folder decides: asked once per folder
    for entry in entries:
        folder = entry.path.rpartition("/")[0]
        if folder not in folders:
            folders[folder] = sd_scripts_repeats(entry.path)
        repeats, why = folders[folder]
        if entry.problem or why:
            skipped.append((entry.path, entry.problem or why))
        else:
            trained.append((entry, repeats))
    placements = bucketer.place_many([(entry.width, entry.height) for entry, _ in trained])
    for (entry, repeats), placement in zip(trained, placements, strict=True):
        if placement.problem:
            skipped.append((entry.path, placement.problem))
        else:
            images.append(ImageBucket(image=entry.path, placement=placement, repeats=repeats))
    return images, skipped


def bucket_preview(project: Project, request: BucketRequest, *, models_dir: Optional[Path] = None,
                   detector: Any = None) -> BucketReport:
    """The preview (see the module's docstring). `detector` (anything with `detect(image)`) is used when given;
    with `request.detect` and none given, the default chain from the detector store in `models_dir` (the host's
    models folder; nothing is downloaded)."""
    from ..dataset.index import DatasetIndex

    # 1. settings, checked as sd-scripts checks them
    settings, source = resolve_settings(project, request)
    bucketer = Bucketer(settings)
    # 2. every indexed image placed (sizes from the index; only new or changed files are read)
    entries = DatasetIndex(project).scan()
    images, skipped = place_entries(entries, bucketer)
    report = BucketReport(project=project.name, settings=bucketer.settings, source=source,
                          notes=list(bucketer.notes), images=images, skipped=skipped)
    # 3. optionally, faces and heads the crop cuts
    if request.detect or detector is not None:
        _find_cuts(project, report, detector=detector, models_dir=models_dir,
                   shas={e.path: e.sha256 for e in entries})
    return report


def _find_cuts(project: Project, report: BucketReport, *, detector: Any, models_dir: Optional[Path],
               shas: Mapping[str, str]) -> None:
    from ..detect import default_detector
    from ..detect.models import detectors_folder
    from .detections import detect_many

    if detector is None:
        # no models folder given: the chain still has its fallbacks that need no model
        detector = default_detector(detectors_folder(models_dir or project.state_dir / "models"), download=False)
    report.findings, unread, notes = [], [], set(getattr(detector, "notes", ()) or ())
    cut = [item for item in report.images if item.placement.cut]  # where nothing is cut away, nothing is found
    found = detect_many(project, detector, [(item.image, shas.get(item.image, "")) for item in cut])
    for item in cut:
        detection = found[item.image]
        notes.update(detection.notes)
        if detection.skipped:
            unread.append({"image": item.image, "reason": detection.reason})
            continue
        report.findings += subject_cut(item.placement.visible, detection.boxes, image=item.image,
                                       bucket=item.placement.bucket)
    report.detection = {"detector": getattr(detector, "name", type(detector).__name__), "analysed": len(cut),
                        "notes": sorted(notes), "skipped": unread}
