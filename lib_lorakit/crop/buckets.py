"""Aspect-ratio buckets exactly as sd-scripts v0.10.1 makes them, from image sizes alone (nothing is decoded).

sd-scripts (`library/train_util.py`: `BucketManager`, `trim_and_resize_if_required`; `library/model_util.py`:
`make_bucket_resolutions`) gives every training image a bucket (the size it is trained at), resizes it so that it
covers the bucket and cuts the overhang away around the centre. This module reproduces that arithmetic, float for
float, so the preview shows the very pixels training will see:

- buckets on (the default): a fixed list of bucket sizes of about `resolution²` pixels, sides from
  `min_bucket_reso` to `max_bucket_reso` in multiples of `bucket_reso_steps`; an image goes to the one whose aspect
  ratio is closest to its own (the first in sorted order on a tie), or to its own size when that is in the list;
- `bucket_no_upscale`: an image larger than `resolution²` pixels is shrunk to about that area (sides rounded to
  steps), a smaller one keeps its size; its bucket is then its size rounded down to steps;
- buckets off: one bucket, `resolution` itself.

`min/max_bucket_reso` are moved to multiples of `bucket_reso_steps` first (down and up), as sd-scripts does.
It imports neither torch nor sd-scripts; tests compare it with sd-scripts' own code.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from ..errors import LorakitError

Size = tuple[int, int]  # width, height
CHUNK = 8192  # sizes placed together: a chunk × buckets table of float64 stays a few MB


@dataclass(frozen=True)
class BucketSettings:
    """The dataset settings that decide buckets (names as in sd-scripts' dataset TOML)."""

    resolution: Size = (512, 512)  # width, height
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False

    def effective(self) -> tuple[BucketSettings, list[str]]:
        """The settings as sd-scripts ends up using them, and notes on what it changed; a combination it refuses
        raises LorakitError naming the setting."""
        width, height = self.resolution
        if width < 1 or height < 1:
            raise LorakitError(f"resolution: expected a positive size, got {width}×{height}")
        if not self.enable_bucket:
            return self, []
        step, lo, hi = self.bucket_reso_steps, self.min_bucket_reso, self.max_bucket_reso
        if step < 1:
            raise LorakitError(f"bucket_reso_steps: expected an integer ≥ 1, got {step}")
        notes = []
        if lo % step:
            notes.append(f"min_bucket_reso {lo} is not a multiple of bucket_reso_steps {step}: sd-scripts uses "
                         f"{lo - lo % step}")
            lo -= lo % step
        if hi % step:
            notes.append(f"max_bucket_reso {hi} is not a multiple of bucket_reso_steps {step}: sd-scripts uses "
                         f"{hi + step - hi % step}")
            hi += step - hi % step
        if min(width, height) < lo:
            raise LorakitError(f"min_bucket_reso: expected at most the resolution's shorter side "
                               f"{min(width, height)}, got {lo}; lower it or raise the resolution")
        if max(width, height) > hi:
            raise LorakitError(f"max_bucket_reso: expected at least the resolution's longer side "
                               f"{max(width, height)}, got {hi}; raise it or lower the resolution")
        if step % 64:
            fits = "fits SDXL only" if step % 32 == 0 else "fits neither"
            notes.append(f"bucket_reso_steps {step}: sd-scripts' SD1/SD2 trainer needs a multiple of 64 and its SDXL "
                         f"trainer a multiple of 32, so {step} {fits}")
        if self.bucket_no_upscale:  # checked all the same, but then each image makes its own bucket
            notes = [n for n in notes if n.startswith("bucket_reso_steps")] + [
                "min_bucket_reso and max_bucket_reso do not matter without upscaling: each image's bucket is its "
                "own size rounded down to bucket_reso_steps"]
        return replace(self, min_bucket_reso=lo, max_bucket_reso=hi), notes


class Placement(NamedTuple):
    """Where one image lands: its bucket, the size it is resized to, the offset of the centre crop inside that
    resized picture, and `visible`, the part of the original (its pixels: left, top, right, bottom) that
    survives. `problem` says why sd-scripts cannot train on it (then the sizes are zero). A named tuple: one is
    made per distinct image size, tens of thousands at a time."""

    width: int
    height: int
    bucket: Size = (0, 0)
    resized: Size = (0, 0)
    crop: Size = (0, 0)  # left, top of the bucket inside the resized picture
    visible: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    problem: str = ""

    @property
    def cut(self) -> bool:
        """Whether the centre crop cuts anything away."""
        return not self.problem and self.resized != self.bucket


def bucket_resolutions(resolution: Size, min_side: int, max_side: int, step: int) -> list[Size]:
    """The fixed bucket sizes for `resolution` (sd-scripts' `make_bucket_resolutions`), sorted: the square of the
    same area, and for each width from `min_side` to `max_side` the tallest height in steps that keeps the area at
    most `resolution`'s (capped at `max_side`), with its transpose."""
    area = resolution[0] * resolution[1]
    side = math.isqrt(area) // step * step  # equals flooring the float square root: no integer is that close to it
    sizes = {(side, side)}
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, area // width // step * step)
        if height >= min_side:
            sizes.update(((width, height), (height, width)))
    return sorted(sizes)


class Bucketer:
    """Places images of any size for one set of settings; sizes seen before are answered from a cache."""

    def __init__(self, settings: BucketSettings):
        self.settings, self.notes = settings.effective()
        s = self.settings
        if not s.enable_bucket:
            self.sizes = [s.resolution]
        elif not s.bucket_no_upscale:
            self.sizes = bucket_resolutions(s.resolution, s.min_bucket_reso, s.max_bucket_reso, s.bucket_reso_steps)
        else:
            self.sizes = []  # each image makes its own bucket
        self._size_set = set(self.sizes)
        # aspect ratios sorted, each with the first bucket (in sorted-size order) that has it: a tie goes there
        first: dict[float, int] = {}
        for i, (w, h) in enumerate(self.sizes):
            first.setdefault(w / h, i)
        self._ratios = sorted(first)
        self._first = [first[r] for r in self._ratios]
        self._cache: dict[Size, Placement] = {}

    def place(self, width: int, height: int) -> Placement:
        key = (width, height)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._place(width, height)
        return found

    def place_many(self, sizes: Sequence[Size]) -> list[Placement]:
        """`place` for many sizes: the sizes not seen before are placed together, in numpy's float64 (the same
        IEEE operations as one by one, and the same first-smallest `argmin` as sd-scripts), in chunks."""
        new = [size for size in dict.fromkeys(sizes) if size not in self._cache]
        plain = self.sizes and not (self.settings.enable_bucket and self.settings.bucket_no_upscale)
        for start in range(0, len(new), CHUNK):
            chunk = new[start:start + CHUNK]
            placed = _place_chunk(chunk, self.sizes) if plain else [None] * len(chunk)
            for size, placement in zip(chunk, placed, strict=True):
                self._cache[size] = placement or self._place(*size)
        return [self._cache[size] for size in sizes]

    def _place(self, width: int, height: int) -> Placement:
        if width < 1 or height < 1:
            return Placement(width, height, problem=f"the image has no pixels ({width}×{height})")
        if self.settings.enable_bucket and self.settings.bucket_no_upscale:
            chosen = self._own_bucket(width, height)
            if isinstance(chosen, str):
                return Placement(width, height, problem=chosen)
            bucket, resized = chosen
        else:
            bucket = key if (key := (width, height)) in self._size_set else self._closest(width / height)
            resized = _cover(width, height, bucket)
        return _centre_crop(width, height, bucket, resized)

    def _closest(self, aspect: float) -> Size:
        """The bucket whose aspect ratio is closest to `aspect`; on a tie the first in sorted order (as numpy's
        argmin over sd-scripts' sorted list). Rounded differences grow with distance, so the closest ratios are
        next to `aspect` in sorted order; equal ones further out are taken in too."""
        ratios = self._ratios
        at = bisect.bisect_left(ratios, aspect)
        lo, hi = max(at - 1, 0), min(at, len(ratios) - 1)
        best = min(abs(ratios[lo] - aspect), abs(ratios[hi] - aspect))
        while lo > 0 and abs(ratios[lo - 1] - aspect) == best:
            lo -= 1
        while hi < len(ratios) - 1 and abs(ratios[hi + 1] - aspect) == best:
            hi += 1
        index = min(self._first[i] for i in range(lo, hi + 1) if abs(ratios[i] - aspect) == best)
        return self.sizes[index]

    def _own_bucket(self, width: int, height: int) -> tuple[Size, Size] | str:
        """Without upscaling: shrink to about resolution² pixels when larger, then round the sides down to steps."""
        s = self.settings
        step, area, aspect = s.bucket_reso_steps, s.resolution[0] * s.resolution[1], width / height
        resized: Size = (width, height)
        if width * height > area:
            ideal_w = math.sqrt(area * aspect)
            ideal_h = area / ideal_w
            by_w = _to_steps(ideal_w, step)  # sides in steps, starting from the width, then from the height
            h_of_w = _to_steps(by_w / aspect, step)
            by_h = _to_steps(ideal_h, step)
            w_of_h = _to_steps(by_h * aspect, step)
            if h_of_w == 0 or by_h == 0:
                return (f"too narrow for buckets: {width}×{height} shrunk to about {s.resolution[0]}×"
                        f"{s.resolution[1]} pixels leaves a side under bucket_reso_steps ({step} px), where "
                        "sd-scripts fails (division by zero); crop or pad it to a less extreme shape")
            if abs(by_w / h_of_w - aspect) < abs(w_of_h / by_h - aspect):
                resized = (by_w, _half_up(by_w / aspect))
            else:
                resized = (_half_up(by_h * aspect), by_h)
        bucket = (resized[0] - resized[0] % step, resized[1] - resized[1] % step)
        if 0 in bucket:
            return (f"a side of {resized[0]}×{resized[1]} is under bucket_reso_steps ({step} px): its bucket "
                    f"would be {bucket[0]}×{bucket[1]}, which sd-scripts cannot train on; enlarge or remove it")
        return bucket, resized


def _place_chunk(chunk: Sequence[Size], buckets: Sequence[Size]) -> list[Placement | None]:
    """Placements against fixed `buckets`, vectorised; None where the one-by-one path must answer (no pixels)."""
    import numpy as np

    wh = np.array(chunk, dtype=np.int64).reshape(-1, 2)
    ok = (wh > 0).all(axis=1)
    w, h = np.where(ok, wh[:, 0], 1), np.where(ok, wh[:, 1], 1)
    aspect = w / h
    table = np.array(buckets, dtype=np.int64)
    index = np.abs(table[:, 0] / table[:, 1] - aspect[:, None]).argmin(axis=1)
    own = {size: i for i, size in enumerate(buckets)}
    exact = np.array([own.get(size, -1) for size in chunk], dtype=np.int64)
    index = np.where(exact >= 0, exact, index)  # an image of a bucket's very size goes there
    bw, bh = table[index, 0], table[index, 1]
    scale = np.where(aspect > bw / bh, bh / h, bw / w)
    rw, rh = np.floor(w * scale + 0.5).astype(np.int64), np.floor(h * scale + 0.5).astype(np.int64)
    ok &= (rw >= bw) & (rh >= bh)
    left, top = (rw - bw) // 2, (rh - bh) // 2
    visible = np.stack([left * w / rw, top * h / rh, (left + bw) * w / rw, (top + bh) * h / rh], axis=1)
    rows = zip(ok.tolist(), chunk, bw.tolist(), bh.tolist(), rw.tolist(), rh.tolist(), left.tolist(), top.tolist(),
               visible.tolist(), strict=True)
    return [Placement(size[0], size[1], bucket=(bw_, bh_), resized=(rw_, rh_), crop=(l_, t_), visible=tuple(v))
            if good else None for good, size, bw_, bh_, rw_, rh_, l_, t_, v in rows]


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _to_steps(x: float, step: int) -> int:
    rounded = _half_up(x)
    return rounded - rounded % step


def _cover(width: int, height: int, bucket: Size) -> Size:
    """The size that covers `bucket` with the image's aspect: the side that is relatively shorter fits exactly."""
    if width / height > bucket[0] / bucket[1]:
        scale = bucket[1] / height
    else:
        scale = bucket[0] / width
    return _half_up(width * scale), _half_up(height * scale)


def _centre_crop(width: int, height: int, bucket: Size, resized: Size) -> Placement:
    """The overhang of the resized picture cut away around the centre (the left/top share rounded down), and the
    part of the original that stays, in its own pixels."""
    if resized[0] < bucket[0] or resized[1] < bucket[1]:
        return Placement(width, height, problem=f"resized to {resized[0]}×{resized[1]}, smaller than its bucket "
                                                f"{bucket[0]}×{bucket[1]}: sd-scripts would stop with an error")
    left, top = (resized[0] - bucket[0]) // 2, (resized[1] - bucket[1]) // 2
    rw, rh = resized  # integer products, one rounding each: whole pixels stay whole, the edges stay inside
    visible = (left * width / rw, top * height / rh, (left + bucket[0]) * width / rw, (top + bucket[1]) * height / rh)
    return Placement(width, height, bucket=bucket, resized=resized, crop=(left, top), visible=visible)


@dataclass(frozen=True)
class BucketCount:
    """One bucket of the histogram: how many images it holds and how many it is trained on per epoch (images ×
    their folder's repeats, what sd-scripts prints as its bucket's count)."""

    bucket: Size
    images: int
    count: int

    def to_dict(self) -> dict:
        return {"bucket": list(self.bucket), "images": self.images, "count": self.count}


def histogram(placed: Iterable[tuple[Placement, int]]) -> list[BucketCount]:
    """Buckets in sd-scripts' order (sorted by size) from (placement, repeats) pairs; unplaceable images are left
    out."""
    images: dict[Size, int] = {}
    counts: dict[Size, int] = {}
    for placement, repeats in placed:
        if placement.problem:
            continue
        images[placement.bucket] = images.get(placement.bucket, 0) + 1
        counts[placement.bucket] = counts.get(placement.bucket, 0) + repeats
    return [BucketCount(bucket=b, images=images[b], count=counts[b]) for b in sorted(images)]
