"""Crop/letterbox derivation: images per second on every core against a one-core loop, in the same process.

    python bench/bench_derive.py [--images 48] [--width 768] [--height 512]

Imports smooth JPEGs into a fresh project, then letterboxes them all to a square (decode the original, pad with a
blurred fill under alpha 0, encode an RGBA PNG, atomic replace, index entry) with one worker, then with one per core,
resetting in between. Both runs write byte-identical files (checked).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_lorakit.crop import derive as dv  # noqa: E402
from lib_lorakit.crop import modes  # noqa: E402
from lib_lorakit.dataset.importer import import_paths  # noqa: E402
from lib_lorakit.project import Workspace  # noqa: E402


def smooth(seed: int, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.stack([np.cos(x / rng.uniform(20, 90) + rng.uniform(0, 6)) + np.sin(y / rng.uniform(20, 90))
                    for _ in range(3)], axis=-1)
    return np.uint8((out - out.min()) / (np.ptp(out) or 1) * 255)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--fill", default="blur")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for i in range(args.images):
            Image.fromarray(smooth(i, args.width, args.height)).save(src / f"{i:04d}.jpg", quality=92)
        project = Workspace(Path(tmp) / "home").create("bench")
        report = import_paths(project, [str(src)], [Path(tmp)], concept="art")
        box = modes.letterbox_box(args.width, args.height, modes.Aspect(1, 1))
        pad = {i.image: dv.StepsChange(crop=box, fill=args.fill) for i in report.imported}
        rates, digests = {}, {}
        for workers in (1, cores):
            start = time.perf_counter()
            done = dv.set_steps(project, pad, "letterbox", workers=workers)
            seconds = time.perf_counter() - start
            assert not done.skipped, done.skipped[:3]
            rates[workers], digests[workers] = len(done.derived) / seconds, digest(project.concept("art").folder)
            dv.set_steps(project, {d.image: dv.StepsChange(reset_crop=True) for d in done.derived}, "reset")
        assert digests[1] == digests[cores], "one core and every core wrote different files"
        print(f"{args.images} images {args.width}×{args.height} letterboxed to {box[2] - box[0]}×"
              f"{box[3] - box[1]} (fill {args.fill}), {cores} core(s)")
        print(f"one-core loop : {rates[1]:7.1f} images/s")
        print(f"every core    : {rates[cores]:7.1f} images/s  ({rates[cores] / rates[1]:.2f}×)")


if __name__ == "__main__":
    main()
