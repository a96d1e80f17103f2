"""Does a folder of generated images copy the training images? `overfit PROJECT --samples DIR`.

Every sample is compared with every training image by a copy-detection descriptor (judge/descriptors.py): the
training side comes from the project's embedding store (cached by content, so a second check computes nothing
there), the samples are decoded and described by the same pipeline (taggers/pipeline.py: parallel decoders, batches,
a bad file becomes a reason and the rest goes on), and the comparison is one matrix product (`judge.nearest`).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..embed import Embedder, EmbeddingTable
from ..errors import LorakitError, NotFound, PathNotAllowed
from ..host import Host, resolve_server_path
from ..images import IMAGE_SUFFIXES
from ..jobs import JobState, job_manager
from ..paths import resolve_inside
from ..progress import CancelFlag, ProgressFn
from ..project import Project, Workspace
from ..schema import InvalidSettings
from . import DEFAULT_DESCRIPTOR, DESCRIPTORS, Descriptor, OverfitReport, SampleMatch, copy_rate, diversity, nearest

MAX_SAMPLES = 5000  # images one check takes (a 6 × 7 grid × 8 samples is 336)
MAX_DEPTH = 2  # a samples folder is read this deep: the folder and its subfolders (a grid keeps cells/ inside)
REQUEST_KEYS = ("samples", "threshold", "descriptor", "embedder")


@dataclass(frozen=True)
class OverfitRequest:
    """`samples`: a folder (read `MAX_DEPTH` deep) or a list of image files; `threshold`: None for the descriptor's
    own; `descriptor`: sscd, clip, perceptual (or sscd:/path/to/model.pt); `embedder`: the CLIP model for `clip`
    (MODEL:PRETRAINED; None: the project's default)."""

    samples: Union[str, tuple[str, ...]]
    threshold: Optional[float] = None
    descriptor: str = DEFAULT_DESCRIPTOR
    embedder: Optional[str] = None

    @classmethod
    def from_dict(cls, data: Any) -> OverfitRequest:
        if not isinstance(data, Mapping):
            raise InvalidSettings([f"overfit: expected an object, got {type(data).__name__}"])
        problems = [f"{k}: unknown field; allowed: {', '.join(REQUEST_KEYS)}" for k in data if k not in REQUEST_KEYS]
        samples = _samples(data.get("samples"), problems)
        threshold = _threshold(data.get("threshold"), problems)
        descriptor = data.get("descriptor", DEFAULT_DESCRIPTOR)
        if descriptor in (None, ""):
            descriptor = DEFAULT_DESCRIPTOR
        if not isinstance(descriptor, str) or not (descriptor in DESCRIPTORS or descriptor.startswith("sscd:")):
            problems.append(f"descriptor: expected one of {', '.join(DESCRIPTORS)} (or sscd:/path/to/model.pt), "
                            f"got {descriptor!r}")
        embedder = data.get("embedder")
        if embedder is not None and (not isinstance(embedder, str) or not embedder.strip() or len(embedder) > 4096):
            problems.append(f"embedder: expected a CLIP model spec (MODEL:PRETRAINED) or null, got {embedder!r:.60}")
        if problems:
            raise InvalidSettings(problems)
        return cls(samples=samples, threshold=threshold, descriptor=descriptor,
                   embedder=embedder.strip() if embedder else None)

    def to_dict(self) -> dict[str, Any]:
        samples = self.samples if isinstance(self.samples, str) else list(self.samples)
        return {"samples": samples, "threshold": self.threshold, "descriptor": self.descriptor,
                "embedder": self.embedder}


def _samples(value: Any, problems: list[str]) -> Union[str, tuple[str, ...]]:
    if isinstance(value, str) and value.strip() and "\x00" not in value:
        return value
    if isinstance(value, (list, tuple)) and value and len(value) <= MAX_SAMPLES and all(
            isinstance(v, str) and v.strip() and "\x00" not in v for v in value):
        return tuple(value)
    shown = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else repr(value)[:60]
    problems.append(f"samples: expected a folder or a list of 1 to {MAX_SAMPLES:,} image files, got {shown}")
    return ()


def _threshold(value: Any, problems: list[str]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            not -1.0 <= value <= 1.0:
        problems.append(f"threshold: expected a cosine similarity from -1 to 1 (or null: the descriptor's own), "
                        f"got {value!r}")
        return None
    return float(value)


# --- the check --------------------------------------------------------------------------------------------------

def check_samples(project: Project, sample_paths: Sequence[Path], descriptor: Descriptor, *,
                  threshold: Optional[float] = None, shown_as: Optional[Sequence[str]] = None,
                  progress: Optional[ProgressFn] = None, cancel: Optional[CancelFlag] = None) -> OverfitReport:
    """Each sample's nearest training image by `descriptor` and whether it is a copy (similarity ≥ `threshold`,
    default the descriptor's own). `shown_as`: what the report calls each sample (default: its path as given)."""
    shown = [str(p) for p in sample_paths] if shown_as is None else [str(s) for s in shown_as]
    if len(shown) != len(sample_paths):
        raise ValueError("shown_as must name every sample")
    limit = float(descriptor.threshold if threshold is None else threshold)
    training, vectors, skipped = _describe_both(project, sample_paths, descriptor, progress=progress, cancel=cancel)
    judged = [i for i in range(len(sample_paths)) if i in vectors]
    rows = np.stack([vectors[i] for i in judged]) if judged else np.zeros((0, training.vectors.shape[1]),
                                                                           dtype=np.float32)
    idx, sims = nearest(rows, training.vectors)  # one matrix product
    matches = [SampleMatch(image=shown[i], nearest=training.images[int(j)], similarity=float(s),
                           copy=bool(s >= limit)) for i, j, s in zip(judged, idx, sims, strict=True)]
    return OverfitReport(samples=matches, copy_rate=copy_rate([m.similarity for m in matches], limit),
                         descriptor=descriptor.name, descriptor_id=descriptor.id, threshold=limit,
                         unit=descriptor.unit, diversity=diversity(rows), training_images=len(training.images),
                         skipped=[(shown[i], reason) for i, reason in skipped])


def _describe_both(project: Project, sample_paths: Sequence[Path], descriptor: Descriptor, *,
                   progress: Optional[ProgressFn], cancel: Optional[CancelFlag]) -> tuple[EmbeddingTable,
                                                                                         dict[int, np.ndarray],
                                                                                         list[tuple[int, str]]]:
    """The training images' descriptors (from the store, computing what it lacks) and the samples'; the model
    stays loaded between the two and is unloaded after."""
    from ..embed.store import fill

    kept = _KeepLoaded(descriptor)
    try:
        training, _ = fill(project, kept, progress=_phase(progress, "training images"), cancel=cancel)
        if not training.images:
            raise LorakitError(f"Project {project.name!r} has no training images to compare the samples with"
                               + (f" ({len(training.skipped)} could not be read)" if training.skipped else "")
                               + ". Import images into a concept first.")
        vectors, skipped = describe_samples(project, sample_paths, kept, progress=_phase(progress, "samples"),
                                            cancel=cancel)
    finally:
        unload = getattr(descriptor, "unload", None)
        if callable(unload):
            unload()
    return training, vectors, skipped


def describe_samples(project: Project, paths: Sequence[Path], descriptor: Embedder, *,
                     progress: Optional[ProgressFn] = None,
                     cancel: Optional[CancelFlag] = None) -> tuple[dict[int, np.ndarray], list[tuple[int, str]]]:
    """The descriptor of each readable sample (by its index in `paths`) and (index, reason) for the others, decoded
    exactly as the store decodes training images (same modes, size limit, background, reduced JPEG decode)."""
    from ..embed.store import CPU_EMBED_BATCH, GPU_EMBED_BATCH, REDUCED_DECODE, _EmbedModel
    from ..taggers.pipeline import TagItem, default_batch_size, tag_images

    if not paths:
        return {}, []
    model = _EmbedModel(descriptor, flipped=False)
    batch = CPU_EMBED_BATCH if default_batch_size([model.device]) == 1 else GPU_EMBED_BATCH
    vectors: dict[int, np.ndarray] = {}

    def take(outcome: Any) -> None:
        if outcome.tags is not None:
            vectors[int(outcome.key)] = outcome.tags["embed"]

    settings = project.settings
    run = tag_images([TagItem(path=Path(p), key=str(i)) for i, p in enumerate(paths)], {"embed": model},
                     batch_size=min(batch, model.batch_limit), max_pixels=settings.max_image_pixels,
                     background=settings.background_rgb, reduced_jpeg_decode=REDUCED_DECODE,
                     progress=_described(progress), cancel=_Cancel(cancel) if cancel is not None else None,
                     on_result=take)
    failed = {int(key): reason for key, reason in run.failed}
    skipped = [(i, failed.get(i, "not judged: the check was cancelled")) for i in range(len(paths))
               if i not in vectors]
    return vectors, skipped


class _KeepLoaded:
    """The descriptor without its `unload`, so that the pipeline's end does not drop the model between the two
    halves of one check."""

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "unload":
            raise AttributeError(name)
        return getattr(self._inner, name)


class _Cancel:
    def __init__(self, flag: Any):
        self.flag = flag

    def is_set(self) -> bool:
        return bool(self.flag.is_set() if hasattr(self.flag, "is_set") else self.flag())


def _phase(progress: Optional[ProgressFn], what: str) -> Optional[ProgressFn]:
    if progress is None:
        return None
    return lambda done, total, message: progress(done, total, f"{what}: {message}")


def _described(progress: Optional[ProgressFn]) -> Optional[ProgressFn]:
    if progress is None:
        return None
    return lambda done, total, message: progress(done, total, message.replace("tagged ", "described ", 1))


# --- from a request ---------------------------------------------------------------------------------------------

def overfit(host: Host, name: str, request: OverfitRequest, *, descriptor: Optional[Descriptor] = None,
            local_user: bool = False, progress: Optional[ProgressFn] = None,
            cancel: Optional[CancelFlag] = None) -> OverfitReport:
    """`check_samples` for a request: the samples (a folder or files) inside the Host's allowed folders unless
    `local_user` (the machine's own user, at the CLI); the descriptor the request names, or the perceptual one
    with the reason when SSCD cannot be had. `descriptor` replaces the request's (tests)."""
    project = Workspace(host.projects_home()).open(name)
    paths, shown = sample_files(host, request.samples, local_user=local_user)
    fallback = ""
    if descriptor is None:
        descriptor, fallback = request_descriptor(host, request, local_user=local_user)
    report = check_samples(project, paths, descriptor, threshold=request.threshold, shown_as=shown,
                           progress=progress, cancel=cancel)
    return dataclasses.replace(report, fallback=fallback) if fallback else report


def start_overfit(host: Host, name: str, request: OverfitRequest, *,
                  descriptor: Optional[Descriptor] = None) -> JobState:
    """`overfit` as a job (progress, cancel; the report is its result). The samples are checked before it starts,
    so a folder outside the allowed ones is refused at once."""
    Workspace(host.projects_home()).open(name)
    paths, _ = sample_files(host, request.samples, local_user=False)
    if descriptor is None:
        _local_model(host, request.descriptor)

    def work(progress: ProgressFn, cancel: threading.Event) -> dict:
        return overfit(host, name, request, descriptor=descriptor, progress=progress, cancel=cancel).to_dict()

    return job_manager(host.projects_home()).start(kind="overfit", project=name, work=work,
                                                   title=f"Copy check of {len(paths)} image(s) against {name}")


def request_descriptor(host: Host, request: OverfitRequest, *, local_user: bool = False) -> tuple[Descriptor, str]:
    """The request's descriptor and the fallback reason ("" when it is the one asked for). A web request's
    `sscd:PATH` must lie inside the allowed folders or the models folder."""
    from .descriptors import resolve_descriptor

    name = request.descriptor if local_user else _local_model(host, request.descriptor)
    kind = name.partition(":")[0]
    clip = None
    if kind == "clip":
        from ..embed.models import DEFAULT_EMBEDDER
        from ..embed.service import EmbedService

        clip = EmbedService(host).embedder(request.embedder or DEFAULT_EMBEDDER)
    return resolve_descriptor(name, models_root=_models_root(host), clip_embedder=clip)


def _models_root(host: Host) -> Path:
    return host.models_dir() / "train-style"


def _local_model(host: Host, descriptor: str) -> str:
    """A web request's descriptor with its local model file (`sscd:PATH`) checked to lie inside the allowed
    folders or the models folder."""
    kind, sep, local = descriptor.partition(":")
    if not sep:
        return descriptor
    return f"{kind}:{resolve_inside(local, [*host.allowed_roots(), _models_root(host)])}"


def sample_files(host: Host, samples: Union[str, Sequence[str]], *,
                 local_user: bool = False) -> tuple[list[Path], list[str]]:
    """The sample image files and how the report names each (as given: the path the user typed for a file, the
    folder as typed joined with the file's place inside it). A folder is read `MAX_DEPTH` deep, images only, sorted;
    more than `MAX_SAMPLES` images is an error that says so."""
    given = [samples] if isinstance(samples, str) else list(samples)
    roots = None if local_user else host.allowed_roots()
    paths: list[Path] = []
    shown: list[str] = []
    for raw in given:
        target = Path(raw).expanduser() if local_user else resolve_server_path(host, raw)
        if target.is_dir():
            for found in _images_in(target):
                if roots is not None:  # a link inside the folder must not lead out of the allowed ones
                    resolve_inside(found, roots)
                paths.append(found)
                shown.append(str(Path(raw) / found.relative_to(target)))
        elif target.is_file():
            paths.append(target)
            shown.append(raw)
        else:
            raise NotFound(f"No folder or file at {raw}.")
        if len(paths) > MAX_SAMPLES:
            raise LorakitError(f"More than {MAX_SAMPLES:,} sample images were found in {raw}; one check takes at "
                               "most that many. Point it at a smaller folder.")
    if not paths:
        raise NotFound(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(given)}.")
    return paths, shown


def _images_in(folder: Path, depth: int = 0) -> list[Path]:
    found: list[Path] = []
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise PathNotAllowed(f"The folder {folder} cannot be read ({e.strerror or e}).") from e
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            found.append(entry)
        elif entry.is_dir() and not entry.is_symlink() and depth + 1 < MAX_DEPTH:
            found.extend(_images_in(entry, depth + 1))
        if len(found) > MAX_SAMPLES:
            break
    return found
