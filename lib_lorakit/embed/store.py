"""The embedding store of a project: vectors keyed by the training copy's content hash, per embedder and variant.

    .lorakit/embeddings/<key>/meta.json            {"embedder": id, "variant": "plain"|"flipped", "dim": d}
                              chunk-<stamp>.npz    arrays `hashes` (sha256 hex) and `vectors` (n × d float32)

A run appends one chunk every few dozen images (each written atomically), so a cancelled or killed run keeps what it
finished and the next run computes only the rest; many chunks are merged into one from time to time. Two processes
filling one store at once at worst compute an image twice. Arrays are read with `allow_pickle=False`.

Vectors are computed by the tagging pipeline (taggers/pipeline.py): decoding threads feed batches to the model.
JPEGs decode at reduced scale when still at least twice the model's input (`REDUCED_DECODE`): a vector then depends
on the file alone (the same file always gives the same vector), and a large photo decodes several times faster.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from ..dataset.index import DatasetIndex, IndexEntry
from ..errors import LorakitError, NotFound
from ..fsutil import atomic_write_bytes, atomic_write_json, read_json
from ..project import Project
from . import Cancel, EmbeddingTable, Progress

log = logging.getLogger(__name__)

STORE_DIR = "embeddings"
Variant = str  # "plain" | "flipped"
FLUSH_EVERY = 64  # images per chunk ...
FLUSH_AFTER_S = 5.0  # ... or fewer, when computing them took this long
MERGE_AT = 16  # chunks in a store from which they are merged into one
CPU_EMBED_BATCH = 16  # amortises the model call's overhead (tiny model: 14 → 2 ms an image); ViT-B/32: ~1 s a batch
GPU_EMBED_BATCH = 32
REDUCED_DECODE = True


@dataclass
class EmbedStats:
    """What one fill of the store did, for the report."""

    computed: int = 0
    reused: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    images_per_second: float = 0.0
    device: str = ""
    failed: list[tuple[str, str]] = field(default_factory=list)


class EmbeddingStore:
    """One embedder's vectors (of one variant) for one project."""

    def __init__(self, project: Project, embedder_id: str, variant: Variant = "plain"):
        if variant not in ("plain", "flipped"):
            raise LorakitError(f"variant: expected 'plain' or 'flipped', got {variant!r}")
        self.project, self.embedder_id, self.variant = project, embedder_id, variant
        key = hashlib.sha256(f"{embedder_id}\n{variant}".encode()).hexdigest()[:20]
        self.folder = project.state_dir / STORE_DIR / key

    @classmethod
    def all(cls, project: Project) -> list[EmbeddingStore]:
        """Every store the project has, whatever embedder made it."""
        base = project.state_dir / STORE_DIR
        found = []
        for folder in sorted(base.iterdir()) if base.is_dir() else []:
            meta = _read_meta(folder)
            if meta:
                found.append(cls(project, meta["embedder"], meta["variant"]))
        return found

    def load(self) -> dict[str, np.ndarray]:
        """Content hash → vector for everything stored (a damaged chunk is skipped with a warning)."""
        vectors: dict[str, np.ndarray] = {}
        for chunk in self._chunks():
            try:
                with np.load(chunk, allow_pickle=False) as data:
                    hashes, rows = data["hashes"], data["vectors"]
                if rows.ndim != 2 or len(hashes) != len(rows):
                    raise ValueError("the arrays do not match")
            except (OSError, ValueError, KeyError) as e:
                log.warning("skipped the damaged embedding file %s: %s", chunk, e)
                continue
            vectors.update(zip((str(h) for h in hashes), rows.astype(np.float32, copy=False), strict=True))
        return vectors

    def add(self, vectors: dict[str, np.ndarray]) -> None:
        """Append a chunk (atomically); merge the chunks when there are many."""
        if not vectors:
            return
        rows = np.stack(list(vectors.values())).astype(np.float32)
        if not (self.folder / "meta.json").is_file():
            atomic_write_json(self.folder / "meta.json", {"embedder": self.embedder_id, "variant": self.variant,
                                                          "dim": int(rows.shape[1])})
        self._write_chunk(list(vectors), rows)
        if len(self._chunks()) >= MERGE_AT:
            self._merge()

    def _write_chunk(self, hashes: list[str], rows: np.ndarray, *, name: str = "") -> Path:
        buffer = io.BytesIO()
        np.savez(buffer, hashes=np.array(hashes, dtype="<U64"), vectors=rows)
        path = self.folder / (name or f"chunk-{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(3)}.npz")
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def _chunks(self) -> list[Path]:
        return sorted(self.folder.glob("chunk-*.npz")) if self.folder.is_dir() else []

    def _merge(self) -> None:
        with self.project.lock():
            old = self._chunks()
            if len(old) < MERGE_AT:
                return
            merged = self.load()
            keep = self._write_chunk(list(merged), np.stack(list(merged.values())))
            for chunk in old:
                if chunk != keep:
                    chunk.unlink(missing_ok=True)


def _read_meta(folder: Path) -> Optional[dict[str, Any]]:
    try:
        meta = read_json(folder / "meta.json")
    except ValueError:
        return None
    ok = isinstance(meta, dict) and isinstance(meta.get("embedder"), str) and meta.get("variant") in ("plain",
                                                                                                      "flipped")
    return meta if ok else None


# --- filling the store ------------------------------------------------------------------------------------------

class _EmbedModel:
    """An Embedder in the shape the tagging pipeline runs (prepare in the decoders, predict on batches)."""

    name = "embed"

    def __init__(self, embedder: Any, *, flipped: bool):
        self.embedder, self.flipped = embedder, flipped
        self.device = str(getattr(embedder, "device", "CPU"))
        self.batch_limit = int(getattr(embedder, "batch_limit", 32))
        self.input_size = getattr(embedder, "input_size", None) if REDUCED_DECODE else None
        self._split = callable(getattr(embedder, "prepare", None)) and callable(getattr(embedder, "embed_prepared",
                                                                                        None))

    def prepare(self, image: Image.Image) -> np.ndarray:
        if self.flipped:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self._split:
            return self.embedder.prepare(image)
        holder = np.empty((), dtype=object)  # an embedder without the split gets the images themselves
        holder[()] = image
        return holder

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        found = self.embedder.embed_prepared(batch) if self._split else self.embedder.embed_images(list(batch))
        found = np.asarray(found, dtype=np.float32)
        if found.ndim != 2 or len(found) != len(batch):
            raise LorakitError(f"The embedder {self.embedder.id} returned {found.shape} for {len(batch)} images.")
        return list(found)

    def unload(self) -> None:
        unload = getattr(self.embedder, "unload", None)
        if callable(unload):
            unload()


class _CancelEvent:
    """`cancel` as the pipeline wants it (an object with is_set) from an Event or a plain function."""

    def __init__(self, cancel: Cancel):
        self._cancel = cancel

    def is_set(self) -> bool:
        c = self._cancel
        if c is None:
            return False
        return bool(c.is_set() if hasattr(c, "is_set") else c())


def select_images(project: Project, entries: dict[str, IndexEntry], images: Optional[list[str]]) -> list[str]:
    """The images asked for (default: every training image under dataset/), each checked to be in the project."""
    if images is None:
        return [p for p in entries if p.startswith("dataset/")]
    wanted = [str(i).replace("\\", "/").removeprefix("./") for i in images]
    missing = [i for i in wanted if i not in entries]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise NotFound(f"Not images of project {project.name!r}: {shown}. Give paths inside the project, such as "
                       "dataset/1_concept/image.png.")
    return list(dict.fromkeys(wanted))


def fill(project: Project, embedder: Any, images: Optional[list[str]] = None, *, flipped: bool = False,
         progress: Progress = None, cancel: Cancel = None,
         entries: Optional[dict[str, IndexEntry]] = None) -> tuple[EmbeddingTable, EmbedStats]:
    """`embed_project` with the numbers of the run (see embed/__init__.py); `entries`: the index, if the caller has
    just scanned it."""
    from ..taggers.pipeline import TagItem, default_batch_size, tag_images

    # 1. which images, by content; what the store already holds
    entries = entries if entries is not None else {e.path: e for e in DatasetIndex(project).scan()}
    chosen = select_images(project, entries, images)
    skipped = [(i, entries[i].problem) for i in chosen if entries[i].problem]
    readable = [i for i in chosen if not entries[i].problem]
    store = EmbeddingStore(project, embedder.id, "flipped" if flipped else "plain")
    have = store.load()
    todo: dict[str, str] = {}  # sha → one image holding it
    for image in readable:
        sha = entries[image].sha256
        if sha not in have:
            todo.setdefault(sha, image)
    stats = EmbedStats(reused=len(readable) - sum(1 for i in readable if entries[i].sha256 in todo))
    # 2. the pipeline, flushing a chunk every few dozen images
    if todo:
        model = _EmbedModel(embedder, flipped=flipped)
        batch = CPU_EMBED_BATCH if default_batch_size([model.device]) == 1 else GPU_EMBED_BATCH
        flusher = _Flusher(store, have)
        try:
            run = tag_images([TagItem(path=project.root / image, key=sha) for sha, image in todo.items()],
                             {"embed": model}, batch_size=min(batch, model.batch_limit),
                             max_pixels=project.settings.max_image_pixels,
                             background=project.settings.background_rgb, reduced_jpeg_decode=REDUCED_DECODE,
                             progress=_embedding_words(progress),
                             cancel=_CancelEvent(cancel) if cancel is not None else None,
                             on_result=flusher.take)
        finally:
            flusher.flush()
            model.unload()
        stats.computed, stats.cancelled, stats.device = flusher.count, run.cancelled, run.device
        stats.seconds, stats.images_per_second = run.seconds, run.images_per_second
        stats.failed = list(run.failed)
    # 3. the table, in the order asked
    failed = dict(stats.failed)
    skipped += [(i, failed[entries[i].sha256]) for i in readable if entries[i].sha256 in failed]
    done = [i for i in readable if entries[i].sha256 in have]
    reported = {i for i, _ in skipped}
    skipped += [(i, "not embedded: the run was cancelled") for i in readable
                if entries[i].sha256 not in have and i not in reported]
    dim = next(iter(have.values())).shape[0] if have else 0
    vectors = np.stack([have[entries[i].sha256] for i in done]) if done else np.zeros((0, dim), dtype=np.float32)
    return EmbeddingTable(images=done, vectors=vectors, skipped=skipped), stats


def _embedding_words(progress: Progress) -> Progress:
    """The pipeline's progress lines speak of tagging; the user asked for embeddings."""
    if progress is None:
        return None
    return lambda done, total, message: progress(done, total, message.replace("tagged ", "embedded ", 1))


class _Flusher:
    """Collects vectors as the pipeline delivers them and appends them to the store in chunks."""

    def __init__(self, store: EmbeddingStore, have: dict[str, np.ndarray]):
        self.store, self.have = store, have
        self.pending: dict[str, np.ndarray] = {}
        self.count = 0
        self.last = time.monotonic()
        self._lock = threading.Lock()

    def take(self, outcome: Any) -> None:
        if outcome.tags is None:
            return
        self.pending[outcome.key] = outcome.tags["embed"]
        self.count += 1
        if len(self.pending) >= FLUSH_EVERY or time.monotonic() - self.last >= FLUSH_AFTER_S:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self.pending = self.pending, {}
            self.last = time.monotonic()
            if pending:
                self.store.add(pending)
                self.have.update(pending)


def stored_table(project: Project, images: list[str], *, variant: Variant = "plain") -> Optional[EmbeddingTable]:
    """The stored vectors of `images` from the store that holds most of them; None when no store holds any.
    Loads no model: for findings that appear only when embeddings exist."""
    entries = {e.path: e for e in DatasetIndex(project).scan()}
    best: Optional[EmbeddingTable] = None
    for store in EmbeddingStore.all(project):
        if store.variant != variant:
            continue
        have = store.load()
        found = [i for i in images if i in entries and entries[i].sha256 in have]
        if found and (best is None or len(found) > len(best.images)):
            best = EmbeddingTable(images=found, vectors=np.stack([have[entries[i].sha256] for i in found]))
    return best
