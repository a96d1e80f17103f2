"""How much the index cache saves: a re-scan of an unchanged project against a scan that reads every image.

    python bench/bench_index.py [--images 200] [--size 768]

Prints seconds and the ratio (cold / cached), both measured in this process on the same project.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_lorakit.dataset.index import DatasetIndex  # noqa: E402
from lib_lorakit.dataset.report import build_report  # noqa: E402
from lib_lorakit.project import Workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Workspace(Path(tmp)).create("bench")
        concept = project.add_concept("art", 1)
        rng = np.random.default_rng(0)
        for i in range(args.images):
            pixels = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(concept.folder / f"{i:05d}.jpg", quality=90)
        cold, warm = [], []
        for _ in range(args.repeat):
            DatasetIndex(project).file.unlink(missing_ok=True)
            t = time.perf_counter()
            build_report(project)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            build_report(project)
            warm.append(time.perf_counter() - t)
        c, w = min(cold), min(warm)
        print(f"{args.images} images of {args.size}px: full scan {c:.3f} s, cached re-scan {w:.4f} s, "
              f"ratio {c / w:.0f}x")


if __name__ == "__main__":
    main()
