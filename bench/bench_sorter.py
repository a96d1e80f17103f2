"""How fast the sorter trains and predicts on cached embeddings.

    python bench/bench_sorter.py [--examples 1000] [--dim 512] [--classes 5] [--predict 10000] [--repeat 5]

TRAIN: a real project of --examples small images, every one labelled, whose embeddings are already in the store
(written as the store writes them, under a stand-in embedder's id, so no model runs): `SortService.train` end to end
(index scan, store read, labels, ridge fit, cross-validation, temperature, save) and the classifier's `train` alone,
against a straightforward baseline on the same vectors: multinomial logistic regression by plain gradient descent
(500 steps) with the same 5-fold cross-validation. Targets: under 1 s for 1,000 embeddings.
PREDICT: --predict embeddings through the saved classifier, against a per-image loop (scores and softmax one
vector at a time). Target: under 0.2 s for 10,000.
Best of --repeat; CPU and wall seconds (the machine may be shared). Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_lorakit.dataset.index import DatasetIndex  # noqa: E402
from lib_lorakit.direction import classifier as linear  # noqa: E402
from lib_lorakit.direction.sorter import SortService  # noqa: E402
from lib_lorakit.embed.store import EmbeddingStore  # noqa: E402
from lib_lorakit.host import StandaloneHost  # noqa: E402
from lib_lorakit.project import Workspace  # noqa: E402


class CachedOnly:
    """An embedder that is never asked for anything: every vector is in the store."""

    id = "bench/cached-only"
    device = "CPU"

    def embed_images(self, images):
        raise AssertionError("the bench's embeddings are all cached")

    def embed_texts(self, texts):
        return None


def synthetic(n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, n)
    x = centres[y] * 0.15 + rng.standard_normal((n, dim)) / np.sqrt(dim) * 4
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def make_project(home: Path, x: np.ndarray, y: np.ndarray, classes: int) -> SortService:
    project = Workspace(home).create("bench")
    folder = project.add_concept("bench", 1).folder
    for i in range(len(x)):
        Image.new("RGB", (8, 8), (i % 256, (i // 256) % 256, 7)).save(folder / f"{i:05d}.png")
    entries = {e.path: e for e in DatasetIndex(project).scan()}
    images = [f"dataset/1_bench/{i:05d}.png" for i in range(len(x))]
    EmbeddingStore(project, CachedOnly.id).add({entries[p].sha256: x[i] for i, p in enumerate(images)})
    service = SortService(StandaloneHost(home=home, lora=home / "lora", models=home / "models"))
    names = [f"class {c}" for c in range(classes)]
    service.add_classes("bench", names)
    for c in range(classes):
        service.label("bench", names[c], [p for i, p in enumerate(images) if y[i] == c])
    return service


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, its result)."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        w, c = time.perf_counter() - w, time.process_time() - c
        if w < best:
            best, cpu = w, c
    return best, cpu, out


def baseline_logistic(x: np.ndarray, y: np.ndarray, k: int, steps: int = 500, lr: float = 0.5) -> float:
    """What one writes first: softmax regression by plain gradient descent, 5-fold cross-validated."""
    folds = np.arange(len(y)) % 5
    right = 0
    for f in range(5):
        tr, te = folds != f, folds == f
        w, b = np.zeros((x.shape[1], k)), np.zeros(k)
        onehot = np.eye(k)[y[tr]]
        for _ in range(steps):
            z = x[tr] @ w + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = (p - onehot) / tr.sum()
            w -= lr * (x[tr].T @ g + 1e-3 * w)
            b -= lr * g.sum(0)
        right += int(((x[te] @ w + b).argmax(1) == y[te]).sum())
    return right / len(y)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--predict", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    x, y = synthetic(args.examples, args.dim, args.classes)
    names = tuple(f"class {c}" for c in range(args.classes))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        service = make_project(Path(tmp) / "home", x, y, args.classes)
        # 1. training
        wall, cpu, report = timed(lambda: service.train("bench", embedder_obj=CachedOnly()), args.repeat)
        core, core_cpu, trained = timed(lambda: linear.train(x, y, names), args.repeat)
        base, base_cpu, base_acc = timed(lambda: baseline_logistic(x, y, args.classes), 1)
        print(f"train {args.examples} cached embeddings ({args.dim}-d, {args.classes} classes):")
        print(f"  SortService.train end to end   {wall:7.3f} s wall ({cpu:.3f} s CPU)  cv accuracy "
              f"{report.cv_accuracy:.3f}   target < 1 s: {'ok' if wall < 1 else 'MISSED'}")
        print(f"  classifier.train alone         {core:7.3f} s wall ({core_cpu:.3f} s CPU)")
        print(f"  baseline: gradient descent     {base:7.3f} s wall ({base_cpu:.3f} s CPU)  cv accuracy "
              f"{base_acc:.3f}   ratio {base / core:.1f}×")
        ok &= wall < 1
        # 2. prediction
        model = trained.model
        many = np.repeat(x, -(-args.predict // len(x)), axis=0)[:args.predict]
        fast, fast_cpu, _ = timed(lambda: model.predict(many), args.repeat)

        def loop() -> list[int]:
            out = []
            for v in many:
                s = v @ model.weights + model.bias
                p = np.exp(s - s.max())
                out.append(int((p / p.sum()).argmax()))
            return out

        slow, slow_cpu, _ = timed(loop, 1)
        print(f"predict {args.predict} embeddings:")
        print(f"  LinearClassifier.predict       {fast:7.3f} s wall ({fast_cpu:.3f} s CPU)   target < 0.2 s: "
              f"{'ok' if fast < 0.2 else 'MISSED'}")
        print(f"  baseline: one vector at a time {slow:7.3f} s wall ({slow_cpu:.3f} s CPU)   ratio {slow / fast:.0f}×")
        ok &= fast < 0.2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
