"""How fast copies are found: the issue's grid of 6 epochs × 7 weights × 8 samples (336 images) against 200 training
images, in one process.

    python bench/bench_judge.py [--training 200] [--samples 336] [--repeat 2]

1. Descriptor extraction for all 536 images, (a) one image at a time (PIL opens it, the descriptor gets a list of
   one; with the TorchScript model on every fourth image only, its time scaled up, to keep the bench short) against
   (b) ours (`judge.memorise.describe_samples`: the tagging pipeline's decoder threads and batches),
   with the perceptual descriptor (numpy, no model) and a small TorchScript model in SSCD's contract
   (tests/tiny_sscd.py, 320 px input, random weights). The two sets of vectors must agree (cosine ≥ 0.999).
2. Comparison of 336 samples with 200 training descriptors: (a) a Python loop of per-pair cosines against (b) one
   matrix product (`judge.nearest`); the nearest indices must be the same.
3. The whole check (`check_samples`) with the perceptual descriptor, cold (the store empty) and warm (the training
   side from the store).
Images are 512 px drawings (tests/test_judge_descriptors.drawing): training PNGs, samples JPEGs (quality 90), one in
eight a near-copy. Runs of (a) and (b) alternate; best and median wall times and their ratios are printed. Exits 1
when the two ways disagree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from PIL import Image  # noqa: E402
from test_judge_descriptors import drawing, near_copies  # noqa: E402
from tiny_sscd import save_tiny_sscd  # noqa: E402

from lib_lorakit.judge import descriptors as d  # noqa: E402
from lib_lorakit.judge import nearest  # noqa: E402
from lib_lorakit.judge.memorise import check_samples, describe_samples  # noqa: E402
from lib_lorakit.project import Project, Workspace  # noqa: E402


def make_images(folder: Path, *, training: int, samples: int) -> tuple[Project, list[Path], list[Path]]:
    project = Workspace(folder / "home").create("bench")
    concept = project.add_concept("bench", 1)
    train_paths = []
    for i in range(training):
        path = concept.folder / f"t{i:04d}.png"
        drawing(i, 512).save(path)
        train_paths.append(path)
    out = folder / "samples"
    out.mkdir()
    sample_paths = []
    for i in range(samples):
        im = near_copies(drawing(i % training, 512))["crop90"] if i % 8 == 0 else drawing(10_000 + i, 512)
        path = out / f"s{i:04d}.jpg"
        im.save(path, quality=90)
        sample_paths.append(path)
    return project, train_paths, sample_paths


def one_at_a_time(desc, paths: list[Path]) -> np.ndarray:
    rows = []
    for path in paths:
        with Image.open(path) as im:
            rows.append(desc.embed_images([im.convert("RGB")])[0])
    return np.stack(rows)


def ours(project: Project, desc, paths: list[Path]) -> np.ndarray:
    vectors, skipped = describe_samples(project, paths, desc)
    assert not skipped, skipped
    return np.stack([vectors[i] for i in range(len(paths))])


def loop_nearest(samples: np.ndarray, training: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx, best = [], []
    for s in samples:
        sims = [float(np.dot(s, t) / (np.linalg.norm(s) * np.linalg.norm(t))) for t in training]
        j = int(np.argmax(sims))
        idx.append(j)
        best.append(sims[j])
    return np.array(idx), np.array(best)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def show(label: str, walls: list[float], count: int, unit: str = "img/s") -> None:
    print(f"  {label:<52} best {min(walls):7.3f} s ({count / min(walls):8.1f} {unit})  median "
          f"{statistics.median(walls):7.3f} s")


def compare(name: str, a: Callable[[], np.ndarray], b: Callable[[], np.ndarray], count: int,
            repeat: int, *, pick: Optional[list[int]] = None) -> bool:
    """(a) and (b) alternately; ratios of images per second ((a) may run on the images `pick` only)."""
    pick = list(range(count)) if pick is None else pick
    count_a = len(pick)
    runs: dict[str, list[float]] = {"a": [], "b": []}
    out: dict[str, np.ndarray] = {}
    for _ in range(repeat):
        for key, fn in (("a", a), ("b", b)):
            wall, out[key] = timed(fn)
            runs[key].append(wall)
    show(f"(a) {name}: one at a time" + (f" ({count_a} of them)" if count_a < count else ""), runs["a"], count_a)
    show(f"(b) {name}: ours (decoders + batches)", runs["b"], count)
    cosine = float((out["a"] * out["b"][pick]).sum(axis=1).min())
    scale = count / count_a  # (a)'s time for every image
    print(f"      ratio (a ÷ b, per image): best {scale * min(runs['a']) / min(runs['b']):.2f}×, median "
          f"{scale * statistics.median(runs['a']) / statistics.median(runs['b']):.2f}×; smallest cosine a·b "
          f"{cosine:.5f}")
    return cosine >= 0.999


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--training", type=int, default=200)
    ap.add_argument("--samples", type=int, default=336)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline", type=int, default=134,
                    help="images the one-at-a-time TorchScript run takes (every k-th; its time is scaled up)")
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        project, train_paths, sample_paths = make_images(tmp, training=args.training, samples=args.samples)
        every = train_paths + sample_paths
        print(f"{args.samples} samples × {args.training} training images (512 px); {os.cpu_count()} cores; load "
              f"average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        print("1. descriptor extraction, all", len(every), "images")
        perceptual = d.PerceptualDescriptor()
        ok &= compare("perceptual", lambda: one_at_a_time(perceptual, every),
                      lambda: ours(project, perceptual, every), len(every), args.repeat)
        tiny = d.descriptor_from_name(f"sscd:{save_tiny_sscd(tmp / 'tiny.pt')}", models_root=tmp / "models")
        pick = list(range(0, len(every), max(1, len(every) // args.baseline)))[:args.baseline]
        few = [every[i] for i in pick]
        ok &= compare("tiny TorchScript (SSCD contract, 320 px)", lambda: one_at_a_time(tiny, few),
                      lambda: ours(project, tiny, every), len(every), args.repeat, pick=pick)

        print(f"2. comparison, {args.samples} × {args.training} pairs (perceptual, {perceptual.dim} dimensions)")
        vectors = ours(project, perceptual, every)
        train_v, sample_v = vectors[:len(train_paths)], vectors[len(train_paths):]
        pairs = args.samples * args.training
        loop = [timed(lambda: loop_nearest(sample_v, train_v)) for _ in range(args.repeat)]
        matrix = [timed(lambda: nearest(sample_v, train_v)) for _ in range(args.repeat)]
        show("(a) a Python loop of per-pair cosines", [w for w, _ in loop], pairs, "pairs/s")
        show("(b) one matrix product (judge.nearest)", [w for w, _ in matrix], pairs, "pairs/s")
        same = np.array_equal(loop[0][1][0], matrix[0][1][0])
        print(f"      ratio (a ÷ b): best {min(w for w, _ in loop) / min(w for w, _ in matrix):.0f}×; "
              f"the same nearest images: {same}")
        ok &= same

        print("3. the whole check (check_samples, perceptual)")
        store = project.state_dir / "embeddings"
        for label in ("cold: the training side computed", "warm: the training side from the store"):
            if label.startswith("cold"):
                shutil.rmtree(store, ignore_errors=True)
            wall, report = timed(lambda: check_samples(project, sample_paths, perceptual))
            print(f"  {label:<52} {wall:7.3f} s  ({report.copy_rate:.0%} copies: "
                  f"{sum(m.copy for m in report.samples)} of {len(report.samples)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
