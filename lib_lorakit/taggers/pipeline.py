"""Tagging many images: parallel decoders keep the model busy, and their number is found by measurement.

Three kinds of thread share one run:
- decoders open each image (through `open_training_image`, JPEGs optionally decoded at reduced scale) and run
  every tagger's `prepare`; their results wait in a bounded queue, so memory stays at a few batches however many
  images there are;
- the model thread stacks batches, runs each tagger's `predict`, and sizes the decoder pool: every window of
  ~0.3 s it tells `DecoderSizing` how many images went through and how long it waited for decoded ones, and
  starts or retires decoders as told (more while the model waits for images, fewer when they only compete with
  it for cores), so a cheap model on a CPU and a fast GPU both run at the decode limit;
- the calling thread receives the outcomes and calls `on_result` and `progress` (so slow caption writing never
  holds up the model).
Pillow and onnxruntime release the GIL while they work, so threads suffice. The tags are exactly those of a
plain loop (decode, pad, resize, predict) whatever the number of decoders.

A bad image (corrupt, truncated, empty, too large) becomes an outcome with its reason; the others go on. Which
images to tag (skipping captioned ones, say) is the caller's business: this module writes nothing.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from ..images import DEFAULT_MAX_PIXELS, ImageProblem, open_training_image, read_header
from ..procs import usable_cores
from ..progress import ProgressFn
from .base import ImageTags, Tagger

log = logging.getLogger(__name__)

GPU_BATCH = 8
CPU_BATCH = 1  # where a CPU run starts: a model that takes seconds an image (a ViT) stays at one image a batch
CPU_MOST_BATCH = 8  # ... and a cheap one grows its batches up to this (onnxruntime's per-call cost is then shared)
BATCH_TARGET_S = 0.05  # on a CPU, batches grow while one takes less than this (progress and cancel stay prompt)
DRAFT_FACTOR = 2  # JPEGs are decoded at no less than twice the model's input size before the bicubic resize
_POLL = 0.05  # seconds between looks at `cancel` while waiting
OUTCOMES_AHEAD = 128  # batches of outcomes the model may run ahead of a slow `on_result` (caption writing)

# Decoder sizing (see DecoderSizing)
WINDOW_S = 0.3  # a measurement window lasts at least this long ...
WINDOW_BATCHES = 2  # ... and holds at least this many batches
SETTLE = 2  # windows at one count make one measurement
STARVED = 0.05  # the model waited for images more than this share of a window: the feed is the limit
GAIN = 0.05  # a decoder more is kept when the throughput rose by at least this share
LOSS = 0.03  # a decoder fewer is kept when the throughput fell by at most this share
MAX_REST = 64  # windows between two tries of a change that did not pay: 4, 8, 16 … this many


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
    workers: int  # the most decoders that ran at once
    batch_size: int
    worker_counts: tuple[int, ...] = ()  # decoders at the start and after each measurement window


@dataclass
class _Prepared:
    item: TagItem
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    problem: str = ""


_WORKER_DONE = object()  # a decoder has stopped (feed exhausted, retired or stopping)
_MODEL_DONE = object()  # the model thread has stopped; nothing follows


def default_workers(devices: Iterable[str], *, cpus: int | None = None) -> int:
    """How many decoding threads to start with; `DecoderSizing` then adds or removes them by measurement.

    On a GPU the model is fast and decoding is the bottleneck: one decoder per core. On a CPU it depends on the
    model (a ViT-B/16 at 448 px: ~1–2 s an image on 2 cores against ~30 ms to decode a photo; a small model:
    less than the decode), so one per core up to four, from where measurement moves it either way.
    """
    cpus = cpus or usable_cores()
    if all(d.upper().startswith("CPU") for d in devices):
        return max(1, min(cpus, 4))
    return max(1, cpus)


def most_workers(*, cpus: int | None = None) -> int:
    """The most decoders sizing may start: twice the cores (a decoder also waits for the disk), at least 2."""
    return max(2, min(64, 2 * (cpus or usable_cores())))


def default_batch_size(devices: Iterable[str]) -> int:
    return CPU_BATCH if all(d.upper().startswith("CPU") for d in devices) else GPU_BATCH


# --- sizing the decoder pool ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeedWindow:
    """What the model thread saw during one measurement window."""

    seconds: float  # how long the window lasted
    images: int  # images that went through the model (or failed to decode) in it
    waiting: float  # seconds the model thread spent waiting for decoded images

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class DecoderSizing:
    """How many decoders to run, found by trying: pure logic, fed one `FeedWindow` at a time.

    A measurement is the mean of `SETTLE` windows at one count (one window alone is too noisy on a busy machine).
    While the model waits for images (more than `STARVED` of the time) it tries more decoders, and keeps them if
    the throughput rises by `GAIN`; fewer are tried while it waits only when there are more decoders than cores
    (fewer decoders cannot feed a waiting model faster unless they were fighting over cores, and each such try
    costs a measurement at a lower rate); otherwise (the model is the limit, or more decoders did not pay) it tries
    fewer, and keeps that if the model is still fed or the throughput falls by less than `LOSS`, since idle
    decoders only take cores, cache and memory from the model. A change that did not pay is undone and not tried
    again for 4, 8, 16 … `MAX_REST` windows, so the count follows a machine whose load changes without costing
    much when it does not. The first window (queues filling, the model warming up) is not a measurement.
    """

    def __init__(self, start: int, *, most: int, least: int = 1, cores: int | None = None):
        if not 1 <= least <= most:
            raise ValueError(f"expected 1 <= least <= most, got least={least!r}, most={most!r}")
        self.least, self.most = least, most
        self.cores = cores or usable_cores()
        self.count = min(most, max(least, start))
        self._seen: list[FeedWindow] = []  # windows at the current count, not yet used up
        self._trial: tuple[int, float] | None = None  # (count before the change being judged, its rate)
        self._rest = {+1: 0, -1: 0}  # windows before that direction may be tried again
        self._patience = {+1: 2 * SETTLE, -1: 2 * SETTLE}
        self._warm = False

    def observe(self, window: FeedWindow) -> int:
        """Take one window's measurements; return how many decoders should run during the next one."""
        if not self._warm:
            self._warm = True
            return self.count
        if self._trial is None:
            for direction in self._rest:
                self._rest[direction] = max(0, self._rest[direction] - 1)
        self._seen.append(window)
        if len(self._seen) < SETTLE:
            return self.count
        seen, self._seen = self._seen, self._seen[1:]  # sliding: the newer windows count again next time
        seconds = sum(w.seconds for w in seen)
        rate = sum(w.images for w in seen) / seconds if seconds > 0 else 0.0
        starved = sum(w.waiting for w in seen) > STARVED * seconds
        if self._trial is not None:
            self._judge(rate, starved)
            return self.count
        for direction in self._directions(starved):
            target = self.count + direction * max(1, self.count // 4)
            if self.least <= target <= self.most and not self._rest[direction]:
                self._trial, self.count, self._seen = (self.count, rate), target, []
                break
        return self.count

    def _directions(self, starved: bool) -> tuple[int, ...]:
        if not starved:
            return (-1,)
        return (+1, -1) if self.count > self.cores else (+1,)

    def _judge(self, rate: float, starved: bool) -> None:
        before, before_rate = self._trial
        self._trial = None
        direction = +1 if self.count > before else -1
        if direction > 0:
            kept = rate >= before_rate * (1 + GAIN)
        else:  # fewer decoders that still keep the model fed are kept whatever the noise in the rate
            kept = not starved or rate >= before_rate * (1 - LOSS)
        if kept:  # and going straight back is what was just found worse: that waits too
            self._patience[direction] = 2 * SETTLE
            self._rest[-direction] = max(self._rest[-direction], self._patience[-direction])
            return
        self.count, self._seen = before, []
        self._rest[direction] = self._patience[direction]
        self._patience[direction] = min(MAX_REST, 2 * self._patience[direction])


# --- the run --------------------------------------------------------------------------------------------------

def tag_images(items: Sequence[TagItem], taggers: Union[Mapping[str, Tagger], Sequence[Tagger]], *,
               batch_size: int | None = None, workers: int | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS, background: tuple[int, int, int] = (255, 255, 255),
               reduced_jpeg_decode: bool = False, progress: ProgressFn | None = None,
               cancel: threading.Event | None = None,
               on_result: Callable[[TagOutcome], None] | None = None) -> TagRunReport:
    """Run every tagger on every image; each image's outcome goes to `on_result` as soon as it is known
    (in completion order, not input order), called in the calling thread like `progress`.

    `taggers` maps the name outcomes use (e.g. "wd14") to a Tagger; a plain list is keyed by each `name`.
    `batch_size` defaults to what suits the device (see `default_batch_size`); on a CPU, batches then double
    while one takes under half of `BATCH_TARGET_S` (up to `CPU_MOST_BATCH`), so a cheap model shares
    onnxruntime's per-call cost and a ViT stays at one image a batch. `workers` fixes the number of
    decoders; left out, it starts at `default_workers` and follows `DecoderSizing`.
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
    if batch < 1 or (workers is not None and workers < 1):
        raise ValueError(f"batch_size and workers must be at least 1, got {batch_size!r} and {workers!r}")
    sizing = None if workers is not None else DecoderSizing(default_workers(devices.values()),
                                                            most=most_workers())
    grow = batch_size is None and batch == CPU_BATCH  # a CPU run with the batch left to us: grown by measurement
    device = next(iter(devices.values())) if len(devices) == 1 else "; ".join(f"{k}: {d}" for k, d in
                                                                              devices.items())
    draft_side = _draft_side(named.values()) if reduced_jpeg_decode else None
    # 2. the feed (decoders → model thread) and the delivery of outcomes here
    run = _Run(items=list(items), taggers=named, limits=limits, batch=batch, progress=progress, cancel=cancel,
               on_result=on_result, max_pixels=max_pixels, background=background, draft_side=draft_side,
               sizing=sizing, most_batch=CPU_MOST_BATCH if grow else batch)
    run.decoders.resize(workers if sizing is None else sizing.count)
    model = threading.Thread(target=run.model_loop, name="tagger-model", daemon=True)
    model.start()
    try:
        run.deliver()
    finally:
        run.shut_down(model)
    if run.error is not None:
        raise run.error
    seconds = run.finished - run.started
    log.info("tagged %d of %d images in %.1f s on %s (%d failed%s; decoders %s)", run.done, len(run.items),
             seconds, device, len(run.failed), ", cancelled" if run.cancelled else "",
             "→".join(map(str, _runs_of(run.counts))))
    return TagRunReport(total=len(run.items), done=run.done, failed=run.failed, cancelled=run.cancelled,
                        seconds=seconds, images_per_second=run.done / seconds if seconds > 0 else 0.0,
                        device=device, workers=max(run.counts), batch_size=run.largest or batch,
                        worker_counts=tuple(run.counts))


def _runs_of(counts: list[int]) -> list[int]:
    """1, 1, 2, 2, 2, 3 → 1, 2, 3 (for the log)."""
    return [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]]


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


class _Decoders:
    """The decoding threads of one run; the model thread grows or shrinks them to a target count. A decoder
    retires between two images when there are more than the target."""

    def __init__(self, work: Callable[[], None]):
        self._work = work
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.target = 0
        self.running = 0

    def resize(self, count: int) -> None:
        with self._lock:
            self.target = count
            missing = max(0, count - self.running)
            self.running += missing
        for _ in range(missing):
            t = threading.Thread(target=self._work, name=f"tagger-decode-{len(self.threads)}", daemon=True)
            self.threads.append(t)
            t.start()

    def retire(self) -> bool:
        """Asked by a decoder between images: True when it should stop (and it is then no longer counted)."""
        with self._lock:
            if self.running > self.target:
                self.running -= 1
                return True
            return False

    def left(self) -> None:
        """A decoder stopped for another reason (feed exhausted, run stopping)."""
        with self._lock:
            self.running -= 1


class _Run:
    """The state one `tag_images` call shares between its decoders, its model thread and the calling thread."""

    def __init__(self, *, items: list[TagItem], taggers: dict[str, Tagger], limits: dict[str, int], batch: int,
                 progress: ProgressFn | None, cancel: threading.Event | None,
                 on_result: Callable[[TagOutcome], None] | None, max_pixels: int,
                 background: tuple[int, int, int], draft_side: int | None, sizing: DecoderSizing | None,
                 most_batch: int | None = None):
        self.items, self.taggers, self.limits, self.batch = items, taggers, limits, batch
        self.most_batch = max(batch, most_batch or batch)  # above `batch`: grown while batches are quick
        self.largest = 0  # the largest batch predicted (the report's batch size)
        self.progress, self.cancel, self.on_result = progress, cancel, on_result
        self.max_pixels, self.background, self.draft_side = max_pixels, background, draft_side
        self.sizing = sizing
        self.queue: queue.Queue = queue.Queue(maxsize=2 * self.most_batch + 2)  # a couple of batches ahead
        self.outcomes: queue.Queue = queue.Queue(maxsize=OUTCOMES_AHEAD)
        self.stop = threading.Event()
        self.decoders = _Decoders(self.work)
        self._feed = iter(items)
        self._feed_lock = threading.Lock()
        self.exhausted = False
        self.done = 0
        self.failed: list[tuple[str, str]] = []
        self.cancelled = False
        self.error: BaseException | None = None
        self.counts: list[int] = []
        self.started = self.finished = time.perf_counter()

    # --- decoders -----------------------------------------------------------------------------------------------

    def work(self) -> None:
        """One decoding thread: take the next image, decode and prepare it, hand it over; stop when told."""
        retired = False
        try:
            while not self.stop.is_set():
                if self.decoders.retire():
                    retired = True
                    return
                with self._feed_lock:
                    item = next(self._feed, None)
                    if item is None:
                        self.exhausted = True
                if item is None or not self._put(self._prepare_safely(item)):
                    return
        finally:
            if not retired:
                self.decoders.left()
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
        return _put_unless(self.queue, message, self.stop)

    # --- the model thread ---------------------------------------------------------------------------------------

    def model_loop(self) -> None:
        try:
            self._consume()
        except BaseException as e:  # re-raised in the calling thread
            self.error = e
            self.stop.set()
        finally:
            _put_unless(self.outcomes, _MODEL_DONE, None)

    def _consume(self) -> None:
        """Collect prepared images into batches and predict them until the decoders are done or the run stops;
        between batches, measure and resize the decoder pool."""
        pending: list[_Prepared] = []
        exited = 0
        window = _Window()
        self.counts.append(self.decoders.target)
        while not self.stop.is_set():
            waited = time.perf_counter()
            try:
                message = self.queue.get(timeout=_POLL)
            except queue.Empty:
                window.waiting += time.perf_counter() - waited
                continue
            window.waiting += time.perf_counter() - waited
            if message is _WORKER_DONE:
                exited += 1
                if exited == len(self.decoders.threads) and (self.exhausted or self.stop.is_set()):
                    break
                if exited == len(self.decoders.threads):  # never expected: none left, images left
                    self.decoders.resize(max(1, self.decoders.target))
                continue
            if message.problem:
                self._send([TagOutcome(key=message.item.key, tags=None, problem=message.problem)])
                window.images += 1
            else:
                pending.append(message)
                if len(pending) >= self.batch:
                    self._predict(pending)
                    window.images += len(pending)
                    pending = []
            window = self._measure(window)
        if pending and not self.stop.is_set():
            self._predict(pending)

    def _measure(self, window: _Window) -> _Window:
        """At the end of a window, let the sizing policy set the number of decoders for the next one."""
        seconds = time.perf_counter() - window.started
        if self.sizing is None or seconds < WINDOW_S or window.images < WINDOW_BATCHES * self.batch:
            return window
        count = self.sizing.observe(FeedWindow(seconds=seconds, images=window.images, waiting=window.waiting))
        if count != self.decoders.target and not self.exhausted:
            self.decoders.resize(count)
        self.counts.append(self.decoders.target)
        return _Window()

    def _predict(self, prepared: list[_Prepared]) -> None:
        began = time.perf_counter()
        self.largest = max(self.largest, len(prepared))
        self._predict_batch(prepared)
        if self.batch < self.most_batch and time.perf_counter() - began < BATCH_TARGET_S / 2:
            self.batch = min(self.most_batch, 2 * self.batch)  # quick batches: share the per-call cost more

    def _predict_batch(self, prepared: list[_Prepared]) -> None:
        found: list[dict[str, ImageTags]] = [{} for _ in prepared]
        for key, tagger in self.taggers.items():
            inputs = [p.inputs[key] for p in prepared]
            stacked = np.stack(inputs) if len(inputs) > 1 else inputs[0][None]  # one image: a view, no copy
            for start in range(0, len(prepared), self.limits[key]):
                if self.stop.is_set():
                    return
                tags = tagger.predict(stacked[start:start + self.limits[key]])
                for i, image_tags in enumerate(tags, start=start):
                    found[i][key] = image_tags
        self._send([TagOutcome(key=p.item.key, tags=tags) for p, tags in zip(prepared, found, strict=True)])

    def _send(self, outcomes: list[TagOutcome]) -> None:
        _put_unless(self.outcomes, outcomes, self.stop)

    # --- the calling thread -------------------------------------------------------------------------------------

    def deliver(self) -> None:
        """Hand each outcome to `on_result` and report progress, until the model thread is done or `cancel`
        (outcomes not yet handed over are then dropped, like the images not yet tagged)."""
        while True:
            if self.cancel is not None and self.cancel.is_set():
                self.cancelled = True
                return
            try:
                message = self.outcomes.get(timeout=_POLL)
            except queue.Empty:
                continue
            if message is _MODEL_DONE:
                return
            for outcome in message:
                if outcome.tags is None:
                    self.failed.append((outcome.key, outcome.problem))
                else:
                    self.done += 1
                if self.on_result is not None:
                    self.on_result(outcome)
            self.finished = time.perf_counter()
            self._report(message)

    def _report(self, outcomes: list[TagOutcome]) -> None:
        if self.progress is None:
            return
        last = outcomes[-1]
        name = Path(last.key).name
        message = f"tagged {name}" if last.tags is not None else f"skipped {name}: {last.problem}"
        seconds = time.perf_counter() - self.started
        rate = f" ({self.done / seconds:.1f} images/s)" if self.done and seconds > 0 else ""
        self.progress(self.done + len(self.failed), len(self.items), message + rate)

    def shut_down(self, model: threading.Thread) -> None:
        """Stop the model thread and the decoders and wait for them, emptying the queues so that none stays
        blocked on a full one."""
        self.stop.set()
        threads = [model, *self.decoders.threads]
        while any(t.is_alive() for t in threads):
            for q in (self.queue, self.outcomes):
                try:
                    while True:
                        q.get_nowait()
                except queue.Empty:
                    pass
            for t in threads:
                t.join(timeout=_POLL)


class _Window:
    """One measurement window as the model thread accumulates it."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.images = 0
        self.waiting = 0.0


def _put_unless(q: queue.Queue, message: object, stop: threading.Event | None) -> bool:
    """Put `message` on `q`, waiting while it is full; False (dropped) once `stop` is set."""
    while stop is None or not stop.is_set():
        try:
            q.put(message, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False

