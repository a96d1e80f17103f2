"""Bucket assignment for 10,000 indexed images (issue 10: under 0.5 s), against a straightforward loop.

    python bench/bench_buckets.py [--images 10000] [--repeat 5]

Index entries are fabricated, in two mixes: "distinct" (every size different: 300–6000 px sides, aspects 1:4 to
4:1, the worst case) and "typical" (two thirds from a dozen common sizes — generators' and cameras' outputs — the
rest distinct, as in a scraped or generated dataset).

Timed, with sd-scripts' defaults for 512 and the SDXL presets' settings:
- the preview step: what the preview does after reading the index — each entry placed (bucket, resized size,
  visible part) and its JSON row made, the images sd-scripts skips named, and the histogram;
- placement alone: bucket, resized size and visible part for every image.
The baseline does the same the straightforward way: per image, its folder's repeats by regex, every bucket's
aspect-ratio error and the first smallest (sd-scripts' `select_bucket` without numpy), the covering size, the crop
and the row. Both must agree. Making the rows (dicts and lists, and the garbage collector they wake) costs about as
much as placing, so the whole step gains less than placement alone.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_lorakit.crop.bucket_preview import place_entries  # noqa: E402
from lib_lorakit.crop.buckets import Bucketer, BucketSettings, bucket_resolutions, histogram  # noqa: E402
from lib_lorakit.dataset.index import IndexEntry  # noqa: E402

COMMON = [(512, 768), (768, 512), (512, 512), (832, 1216), (1216, 832), (1024, 1024), (896, 1152), (3024, 4032),
          (4032, 3024), (1920, 1080), (1080, 1920), (2048, 1536)]


def entries(n: int, *, common: float, seed: int = 0) -> list[IndexEntry]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if rng.random() < common:
            w, h = rng.choice(COMMON)
        else:
            side = int(2 ** rng.uniform(math.log2(300), math.log2(6000)))
            aspect = 2 ** rng.uniform(-2, 2)
            w, h = (side, max(1, round(side / aspect))) if aspect >= 1 else (max(1, round(side * aspect)), side)
        out.append(IndexEntry(path=f"dataset/{1 + i % 7}_concept{i % 7}/{i:05d}.png", size=0, mtime_ns=0,
                              width=w, height=h))
    return out


def ours(items: list[IndexEntry], settings: BucketSettings) -> tuple[list[dict], list[tuple]]:
    images, skipped = place_entries(items, Bucketer(settings))
    assert not skipped
    hist = histogram((i.placement, i.repeats) for i in images)
    return [i.to_dict() for i in images], [(b.bucket, b.images, b.count) for b in hist]


def ours_placed(items: list[IndexEntry], settings: BucketSettings) -> list[tuple]:
    return [(p.bucket, p.resized, p.visible) for p in Bucketer(settings).place_many([(e.width, e.height)
                                                                                  for e in items])]


def place_one(sizes: list[tuple[int, int]], w: int, h: int) -> tuple:
    """sd-scripts' select_bucket and centre crop for one image, without numpy: every bucket's error, the first
    smallest, the covering size, the crop, the part of the original kept."""
    aspect = w / h
    if (w, h) in sizes:
        bucket = (w, h)
    else:
        errors = [abs(bw / bh - aspect) for bw, bh in sizes]
        bucket = sizes[errors.index(min(errors))]
    scale = bucket[1] / h if aspect > bucket[0] / bucket[1] else bucket[0] / w
    rw, rh = int(w * scale + 0.5), int(h * scale + 0.5)
    left, top = (rw - bucket[0]) // 2, (rh - bucket[1]) // 2
    return bucket, (rw, rh), (left * w / rw, top * h / rh, (left + bucket[0]) * w / rw, (top + bucket[1]) * h / rh)


def baseline_placed(items: list[IndexEntry], settings: BucketSettings) -> list[tuple]:
    s = settings
    sizes = bucket_resolutions(s.resolution, s.min_bucket_reso, s.max_bucket_reso, s.bucket_reso_steps)
    return [place_one(sizes, e.width, e.height) for e in items]


def baseline(items: list[IndexEntry], settings: BucketSettings) -> tuple[list[dict], list[tuple]]:
    s = settings
    sizes = bucket_resolutions(s.resolution, s.min_bucket_reso, s.max_bucket_reso, s.bucket_reso_steps)
    rows, images, counts = [], {}, {}
    for e in items:
        repeats = int(re.match(r"^(\d+)_(.+)$", e.path.split("/")[1]).group(1))
        w, h = e.width, e.height
        bucket, (rw, rh), visible = place_one(sizes, w, h)
        rows.append({"image": e.path, "width": w, "height": h, "bucket": list(bucket), "resized": [rw, rh],
                     "visible": [round(v, 2) for v in visible]})
        images[bucket] = images.get(bucket, 0) + 1
        counts[bucket] = counts.get(bucket, 0) + repeats
    return rows, [(b, images[b], counts[b]) for b in sorted(images)]


def best_of(repeat: int, fn, *args) -> tuple[float, float]:
    """The best (CPU seconds of this process, wall seconds) of `repeat` runs. The work is single-threaded, so on an
    idle machine the two agree; on a shared one (other processes on the cores) CPU time is the fair figure."""
    cpu, wall = [], []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn(*args)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(cpu), min(wall)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    worst = 0.0
    for mix, common in (("distinct", 0.0), ("typical", 2 / 3)):
        items = entries(args.images, common=common)
        print(f"{mix}: {args.images:,} indexed images, {len({(e.width, e.height) for e in items}):,} distinct sizes")
        for label, settings in (("SD1 512, 256-1024/64", BucketSettings()),
                                ("SDXL 1024, 512-2048/64", BucketSettings(resolution=(1024, 1024),
                                                                          min_bucket_reso=512, max_bucket_reso=2048))):
            assert ours(items, settings) == baseline(items, settings)
            assert ours_placed(items, settings) == baseline_placed(items, settings)
            (c_ours, w_ours), (c_base, w_base) = (best_of(args.repeat, ours, items, settings),
                                                  best_of(args.repeat, baseline, items, settings))
            (c_place, _), (c_loop, _) = (best_of(args.repeat, ours_placed, items, settings),
                                         best_of(args.repeat, baseline_placed, items, settings))
            worst = max(worst, c_ours)
            print(f"  {label}: preview step {c_ours:.3f} s CPU ({w_ours:.3f} s wall), straightforward loop "
                  f"{c_base:.3f} s CPU ({w_base:.3f} s wall): {c_base / c_ours:.1f}×; placement alone "
                  f"{c_place:.3f} s against {c_loop:.3f} s: {c_loop / c_place:.1f}×")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"target: under 0.5 s for 10,000 images: {'met' if worst < 0.5 else 'NOT met'} (slowest {worst:.3f} s CPU; "
          f"load average {load:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
