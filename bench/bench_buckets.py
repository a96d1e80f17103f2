"""Bucket assignment for 10,000 indexed images (issue 10: under 0.5 s), against a straightforward loop.

    python bench/bench_buckets.py [--images 10000] [--repeat 5]

Index entries are fabricated, in two mixes: "distinct" (every size different: 300–6000 px sides, aspects 1:4 to
4:1, the worst case) and "typical" (two thirds from a dozen common sizes — generators' and cameras' outputs — the
rest distinct, as in a scraped or generated dataset). Timed: what the preview does after reading the index — each
entry placed (bucket, resized size, visible part) and its row made, the images sd-scripts skips named, and the
histogram — with sd-scripts' defaults for 512 and the SDXL presets' settings. The baseline does the same the
straightforward way: per image, its folder's repeats by regex, every bucket's aspect-ratio error and the first
smallest (sd-scripts' `select_bucket` without numpy), the covering size, the crop and the row. Both must agree.
"""

from __future__ import annotations

import argparse
import math
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


def baseline(items: list[IndexEntry], settings: BucketSettings) -> tuple[list[dict], list[tuple]]:
    s = settings
    sizes = bucket_resolutions(s.resolution, s.min_bucket_reso, s.max_bucket_reso, s.bucket_reso_steps)
    rows, images, counts = [], {}, {}
    for e in items:
        repeats = int(re.match(r"^(\d+)_(.+)$", e.path.split("/")[1]).group(1))
        w, h = e.width, e.height
        aspect = w / h
        if (w, h) in sizes:
            bucket = (w, h)
        else:
            errors = [abs(bw / bh - aspect) for bw, bh in sizes]
            bucket = sizes[errors.index(min(errors))]
        scale = bucket[1] / h if aspect > bucket[0] / bucket[1] else bucket[0] / w
        rw, rh = int(w * scale + 0.5), int(h * scale + 0.5)
        left, top = (rw - bucket[0]) // 2, (rh - bucket[1]) // 2
        visible = [left * w / rw, top * h / rh, (left + bucket[0]) * w / rw, (top + bucket[1]) * h / rh]
        rows.append({"image": e.path, "width": w, "height": h, "bucket": list(bucket), "resized": [rw, rh],
                     "visible": [round(v, 2) for v in visible]})
        images[bucket] = images.get(bucket, 0) + 1
        counts[bucket] = counts.get(bucket, 0) + repeats
    return rows, [(b, images[b], counts[b]) for b in sorted(images)]


def best_of(repeat: int, fn, *args) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


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
            t_ours = best_of(args.repeat, ours, items, settings)
            t_base = best_of(args.repeat, baseline, items, settings)
            worst = max(worst, t_ours)
            print(f"  {label}: {t_ours:.3f} s; straightforward loop {t_base:.3f} s: {t_base / t_ours:.1f}× faster")
    print(f"target: under 0.5 s for 10,000 images: {'met' if worst < 0.5 else 'NOT met'} (slowest {worst:.3f} s)")


if __name__ == "__main__":
    main()
