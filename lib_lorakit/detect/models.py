"""The face/head detector models Train Style knows, and where they are kept.

Each is a YOLOv8-format ONNX model published on Hugging Face with a `labels.json` beside it, kept in
`<models>/train-style/detectors/<folder>/` (the same store and download rules as the taggers: taggers/models.py).
Defaults, chosen for crop quality at CPU speed (the "s" size; "n" is faster, "m"/"l" sharper):
- anime heads: deepghs/anime_head_detection `head_detect_v2.0_s` — the whole head, hair included, also seen from
  behind, which is what a crop must keep in frame (imgutils' default level; threshold 0.3 as there);
- anime faces: deepghs/anime_face_detection `face_detect_v1.4_s` (the newest of that repo; threshold 0.25);
- photo faces: deepghs/yolo-face `yolov8n-face` (YOLOv8n trained on WIDER FACE; threshold 0.25). Its YOLOv10
  siblings use another output layout and are not read here.
Each takes images of any size (longer side scaled to 640, as published).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..taggers.models import hub_page, local_names, missing_files, resolve_model

DETECTOR_FILES = ("model.onnx", "labels.json")


@dataclass(frozen=True)
class DetectorModel:
    """A known detector: its Hub repository and subfolder, what it finds, and its score threshold."""

    key: str  # the name users give ("anime-head")
    title: str  # how messages name it
    kind: str  # "head" | "face"
    repo: str
    subfolder: str  # the model's folder inside the repository; also its folder in the store
    threshold: float
    max_side: int = 640

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(f"{self.subfolder}/{name}" for name in DETECTOR_FILES)

    @property
    def page(self) -> str:
        return hub_page(self.repo, self.files)


KNOWN_DETECTORS: dict[str, DetectorModel] = {m.key: m for m in (
    DetectorModel(key="anime-head", title="anime head detector", kind="head", repo="deepghs/anime_head_detection",
                  subfolder="head_detect_v2.0_s", threshold=0.3),
    DetectorModel(key="anime-face", title="anime face detector", kind="face", repo="deepghs/anime_face_detection",
                  subfolder="face_detect_v1.4_s", threshold=0.25),
    DetectorModel(key="photo-face", title="photo face detector", kind="face", repo="deepghs/yolo-face",
                  subfolder="yolov8n-face", threshold=0.25),
)}


def detectors_folder(models_dir: Path) -> Path:
    """The store's detector folder inside the host's models folder (beside `train-style/taggers`)."""
    return Path(models_dir) / "train-style" / "detectors"


def detector_folder(model: DetectorModel, models_root: Path) -> Path:
    """Where `model` is kept in the detector store `models_root` (whether or not it is there yet)."""
    return Path(models_root) / model.subfolder


def resolve_detector(model: DetectorModel, models_root: Path, *, download: bool) -> Path:
    """The folder holding `model`'s files, downloaded there first when missing and `download` is true; a
    LorakitError that says which files to place where otherwise."""
    return resolve_model(repo=model.repo, files=model.files, folder=detector_folder(model, models_root),
                         download=download, what=f"{model.title} {model.subfolder}")


def present_detectors(models_root: Path) -> dict[str, Path]:
    """The known detectors whose files are all in the store (key → folder), for the doctor and the UI."""
    return {key: detector_folder(m, models_root) for key, m in KNOWN_DETECTORS.items()
            if not missing_files(detector_folder(m, models_root), m.files)}


def incomplete_detectors(models_root: Path) -> dict[str, list[str]]:
    """Known detectors whose folder exists but lacks some files (an interrupted copy by hand): key → missing."""
    out = {}
    for key, m in KNOWN_DETECTORS.items():
        folder = detector_folder(m, models_root)
        missing = missing_files(folder, m.files)
        if folder.is_dir() and missing and len(missing) < len(local_names(m.files)):
            out[key] = missing
    return out


@dataclass(frozen=True)
class StoreReport:
    """What the doctor says of the detector store: a one-line summary, problems with their fixes, facts."""

    summary: str
    problems: tuple[tuple[str, str], ...]  # (what, fix)
    facts: dict


def store_report(models_root: Path) -> StoreReport:
    """Which known detectors are in the store, which are incomplete, and which fallbacks run here."""
    from .cascade import cascade_unavailable

    present = present_detectors(models_root)
    try:
        import onnxruntime  # noqa: F401  (only whether it imports)
        onnx_ok = True
    except ImportError:
        onnx_ok = False
    cascade_why = cascade_unavailable()
    problems = []
    for key, missing in incomplete_detectors(models_root).items():
        model, folder = KNOWN_DETECTORS[key], detector_folder(KNOWN_DETECTORS[key], models_root)
        problems.append((f"The {model.title} folder {folder} lacks {' and '.join(missing)}.",
                         f"Delete {folder} (it downloads again on first use) or place "
                         f"{' and '.join(DETECTOR_FILES)} from {model.page} there."))
    if present and not onnx_ok:
        problems.append(("onnxruntime is not installed in this Python: the detector models cannot run.",
                         "Install onnxruntime (or onnxruntime-gpu) into the Python that runs Train Style."))
    fallbacks = ["saliency"] if cascade_why else ["OpenCV cascades", "saliency"]
    models = ", ".join(present) or "no model yet (they download on first smart crop)"
    return StoreReport(summary=f"{models} in {models_root}; fallback: {', then '.join(fallbacks)}",
                       problems=tuple(problems),
                       facts={"store": str(models_root), "models": {k: str(v) for k, v in present.items()},
                              "onnxruntime": onnx_ok, "cascades": cascade_why is None})
