"""Tagging many images: parallel decoders keep the model busy.

Worker threads open each image (through `open_training_image`, JPEGs decoded at reduced scale when the model
only needs a small copy) and run every tagger's `prepare`; the results wait in a bounded queue, so memory stays
at a few batches however many images there are. The calling thread stacks batches and runs each tagger's
`predict`. Pillow and onnxruntime release the GIL while they work, so threads suffice.

A bad image (corrupt, truncated, empty, too large) becomes an outcome with its reason; the others go on. Which
images to tag (skipping captioned ones, say) is the caller's business: this module writes nothing.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from ..images import DEFAULT_MAX_PIXELS, ImageProblem, open_training_image, read_header
from .base import ImageTags, Tagger

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
GPU_BATCH = 8
CPU_BATCH = 1  # on a CPU batching gains nothing measurable and makes cancelling and progress coarse
DRAFT_FACTOR = 2  # JPEGs are decoded at no less than twice the model's input size before the bicubic resize
_POLL = 0.05  # seconds between looks at `cancel` while waiting


@dataclass(frozen=True)
class TagItem:
    """One image to tag; `key` is how the caller recognises its outcome (e.g. the dataset-relative path)."""

    path: Path
    key: str


@dataclass(frozen=True)
class TagOutcome:
    """What became of one image: tags per tagger, or `problem` saying why it could not be tagged."""

    key: str
    tags: dict[str, ImageTags] | None
    problem: str = ""


@dataclass(frozen=True)
class TagRunReport:
    total: int
    done: int
    failed: list[tuple[str, str]]  # (key, reason)
    cancelled: bool
    seconds: float  # from the first image to the last outcome (model loading not included)
    images_per_second: float
    device: str
    workers: int
    batch_size: int


@dataclass
class _Prepared:
    item: TagItem
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    problem: str = ""


_WORKER_DONE = object()


def default_workers(devices: Iterable[str], *, cpus: int | None = None) -> int:
    """How many decoding threads to start.

    On a GPU the model is fast and decoding is the bottleneck: one decoder per core. The model thread mostly
    waits (for the GPU or for decoded images) and needs about 1 ms of CPU an image against ~35 ms for a decoder,
    so keeping a core free for it would only idle that core (on 2 cores: 1.3× instead of 2.1× the plain loop).
    On a CPU the model is the bottleneck by far (WD14 ViT-B/16 at 448 px: ~1–2 s an image on 2 cores against
    ~30 ms to decode a photo), so one decoder keeps it fed; more would only compete with onnxruntime, which
    splits each operation across all cores and waits for the slowest. Large machines get one per 8 cores.
    """
    cpus = cpus or _cpu_count()
    if all(d.upper().startswith("CPU") for d in devices):
        return max(1, cpus // 8)
    return max(1, cpus)


def default_batch_size(devices: Iterable[str]) -> int:
    return CPU_BATCH if all(d.upper().startswith("CPU") for d in devices) else GPU_BATCH


def tag_images(items: Sequence[TagItem], taggers: Union[Mapping[str, Tagger], Sequence[Tagger]], *,
               batch_size: int | None = None, workers: int | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS, background: tuple[int, int, int] = (255, 255, 255),
               reduced_jpeg_decode: bool = False, progress: Progress | None = None,
               cancel: threading.Event | None = None,
               on_result: Callable[[TagOutcome], None] | None = None) -> TagRunReport:
    """Run every tagger on every image; each image's outcome goes to `on_result` as soon as it is known
    (in completion order, not input order).

    `taggers` maps the name outcomes use (e.g. "wd14") to a Tagger; a plain list is keyed by each `name`.
    `batch_size` and `workers` default to what suits the device (see `default_batch_size`, `default_workers`).
    `reduced_jpeg_decode` lets JPEGs decode at 1/2–1/8 scale when still ≥ 2× the model's input size: ~1.4×
    faster on photos, but scores move by up to ~0.005 against a full decode, so a tag sitting right at a
    threshold can come or go and near-equal tags can swap places. It is off by default (a caption must not
    depend on how fast it was made): the tags are then exactly those of a plain full decode, pad and resize.
    Worker count never changes a tag; batch size can only through onnxruntime's own rounding (~1e-6 on a
    ViT-B between batch 1 and 4), i.e. practically never.
    `cancel` stops feeding at once; images already tagged keep their outcomes, the rest get none.
    """
    # 1. the models: loading happens here, in the caller's thread, so its errors surface before any work
    named = dict(taggers) if isinstance(taggers, Mapping) else {t.name: t for t in taggers}
    if not named or len(named) < len(taggers):
        raise ValueError(f"tag_images needs at least one tagger, each under its own name; got {list(taggers)!r}")
    devices = {key: t.device for key, t in named.items()}
    limits = {key: max(1, t.batch_limit) for key, t in named.items()}
    batch = batch_size if batch_size is not None else default_batch_size(devices.values())
    n_workers = workers if workers is not None else default_workers(devices.values())
    if batch < 1 or n_workers < 1:
        raise ValueError(f"batch_size and workers must be at least 1, got {batch_size!r} and {workers!r}")
    device = next(iter(devices.values())) if len(devices) == 1 else "; ".join(f"{k}: {d}" for k, d in
                                                                              devices.items())
    draft_side = _draft_side(named.values()) if reduced_jpeg_decode else None
    # 2. the feed: workers decode and prepare into a bounded queue
    run = _Run(items=list(items), taggers=named, limits=limits, batch=batch, progress=progress, cancel=cancel,
               on_result=on_result, max_pixels=max_pixels, background=background, draft_side=draft_side)
    started = time.perf_counter()
    threads = [threading.Thread(target=run.work, name=f"tagger-decode-{i}", daemon=True) for i in range(n_workers)]
    for t in threads:
        t.start()
    # 3. the model: batches are predicted here until every worker has finished or the user cancels
    try:
        run.consume(n_workers)
    finally:
        run.shut_down(threads)
    seconds = time.perf_counter() - started
    log.info("tagged %d of %d images in %.1f s on %s (%d failed%s)", run.done, len(run.items), seconds, device,
             len(run.failed), ", cancelled" if run.cancelled else "")
    return TagRunReport(total=len(run.items), done=run.done, failed=run.failed, cancelled=run.cancelled,
                        seconds=seconds, images_per_second=run.done / seconds if seconds > 0 else 0.0,
                        device=device, workers=n_workers, batch_size=batch)


def _draft_side(taggers: Iterable[Tagger]) -> int | None:
    """The side JPEGs may be reduced towards: twice the largest model input; None when a tagger does not say
    its input size (then JPEGs are decoded in full)."""
    sides = [getattr(t, "input_size", None) for t in taggers]
    if any(not isinstance(s, int) or s <= 0 for s in sides):
        return None
    return DRAFT_FACTOR * max(sides)


def draft_request(path: Path, side: int) -> tuple[int, int] | None:
    """Pillow's `draft` size for a JPEG so that its longer side decodes to at least `side` pixels.

    Asked as a square of the shorter side's share: Pillow reduces while both sides stay at least the request,
    which is then the same whichever way the file is stored (EXIF rotation swaps width and height).
    """
    header = read_header(path)
    if isinstance(header, ImageProblem) or header.format not in ("JPEG", "MPO"):
        return None
    long_side, short_side = max(header.width, header.height), min(header.width, header.height)
    if long_side < 2 * side:  # no reduction possible: decode as usual
        return None
    q = max(1, math.ceil(short_side * side / long_side))
    return q, q


class _Run:
    """The state one `tag_images` call shares between its workers and the thread that runs the models."""

    def __init__(self, *, items: list[TagItem], taggers: dict[str, Tagger], limits: dict[str, int], batch: int,
                 progress: Progress | None, cancel: threading.Event | None,
                 on_result: Callable[[TagOutcome], None] | None, max_pixels: int,
                 background: tuple[int, int, int], draft_side: int | None):
        self.items, self.taggers, self.limits, self.batch = items, taggers, limits, batch
        self.progress, self.cancel, self.on_result = progress, cancel, on_result
        self.max_pixels, self.background, self.draft_side = max_pixels, background, draft_side
        self.queue: queue.Queue = queue.Queue(maxsize=2 * batch + 2)  # a couple of batches ahead, no more
        self.stop = threading.Event()
        self._feed = iter(items)
        self._feed_lock = threading.Lock()
        self.done = 0
        self.failed: list[tuple[str, str]] = []
        self.cancelled = False
        self._started = time.perf_counter()

    # --- workers ------------------------------------------------------------------------------------------------

    def work(self) -> None:
        """One decoding thread: take the next image, decode and prepare it, hand it over; stop when told."""
        try:
            while not self.stop.is_set():
                with self._feed_lock:
                    item = next(self._feed, None)
                if item is None or not self._put(self._prepare_safely(item)):
                    return
        finally:
            self._put(_WORKER_DONE)  # always: the model thread counts these to know the feed has ended

    def _prepare_safely(self, item: TagItem) -> _Prepared:
        try:
            return self._prepare(item)
        except Exception as e:  # one image must never stop the run: it fails alone, with the cause logged
            log.warning("%s could not be prepared for tagging", item.path, exc_info=True)
            return _Prepared(item=item, problem=f"could not be prepared for tagging ({type(e).__name__}: {e})")

    def _prepare(self, item: TagItem) -> _Prepared:
        draft = draft_request(item.path, self.draft_side) if self.draft_side else None
        loaded = open_training_image(item.path, max_pixels=self.max_pixels, background=self.background,
                                     draft=draft)
        if isinstance(loaded, ImageProblem):
            return _Prepared(item=item, problem=loaded.reason)
        return _Prepared(item=item, inputs={key: t.prepare(loaded.image) for key, t in self.taggers.items()})

    def _put(self, message: object) -> bool:
        """Hand a message to the model thread; False when the run is stopping (the message is dropped)."""
        while not self.stop.is_set():
            try:
                self.queue.put(message, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    # --- the model thread ---------------------------------------------------------------------------------------

    def consume(self, n_workers: int) -> None:
        """Collect prepared images into batches and predict them until the workers are done or `cancel`."""
        pending: list[_Prepared] = []
        finished = 0
        while finished < n_workers:
            if self._cancel_requested():
                return
            try:
                message = self.queue.get(timeout=_POLL)
            except queue.Empty:
                continue
            if message is _WORKER_DONE:
                finished += 1
            elif message.problem:
                self._fail(message.item, message.problem)
            else:
                pending.append(message)
                if len(pending) >= self.batch:
                    self._predict(pending)
                    pending = []
        if pending and not self._cancel_requested():
            self._predict(pending)

    def _predict(self, prepared: list[_Prepared]) -> None:
        found: list[dict[str, ImageTags]] = [{} for _ in prepared]
        for key, tagger in self.taggers.items():
            stacked = np.stack([p.inputs[key] for p in prepared])
            for start in range(0, len(prepared), self.limits[key]):
                if self._cancel_requested():
                    return
                tags = tagger.predict(stacked[start:start + self.limits[key]])
                for i, image_tags in enumerate(tags, start=start):
                    found[i][key] = image_tags
        for p, tags in zip(prepared, found, strict=True):
            self.done += 1
            self._emit(TagOutcome(key=p.item.key, tags=tags))
        self._report(f"tagged {prepared[-1].item.path.name}")

    def _fail(self, item: TagItem, reason: str) -> None:
        self.failed.append((item.key, reason))
        self._emit(TagOutcome(key=item.key, tags=None, problem=reason))
        self._report(f"skipped {item.path.name}: {reason}")

    def _emit(self, outcome: TagOutcome) -> None:
        if self.on_result is not None:
            self.on_result(outcome)

    def _report(self, message: str) -> None:
        if self.progress is None:
            return
        seconds = time.perf_counter() - self._started
        rate = f" ({self.done / seconds:.1f} images/s)" if self.done and seconds > 0 else ""
        self.progress(self.done + len(self.failed), len(self.items), message + rate)

    def _cancel_requested(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
        return self.cancelled

    def shut_down(self, threads: list[threading.Thread]) -> None:
        """Stop the workers and wait for them, emptying the queue so none stays blocked on a full one."""
        self.stop.set()
        while any(t.is_alive() for t in threads):
            try:
                while True:
                    self.queue.get_nowait()
            except queue.Empty:
                pass
            for t in threads:
                t.join(timeout=_POLL)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
