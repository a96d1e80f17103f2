"""How fast a project is embedded: process to process, `python -m lib_lorakit embed` against a straightforward
per-image script, with a cheap model of the same interface (the tests' tiny open_clip, 32 px input), so that what is
measured is the feed: reading, decoding and preprocessing the images.

    python bench/bench_embed.py [--images 1000] [--repeat 3] [--cache DIR]

The images are JPEGs of 1024×768 (quality 92; bench_tagger's photos), imported into a project before the clock
starts. The script (NAIVE_EMBEDDER below) opens each file with PIL, applies open_clip's own preprocessing and runs
the model one image at a time. Ours runs the tagging pipeline: decoder threads, JPEGs decoded at reduced scale while
still ≥ 2× the model's input, batches. Runs are interleaved (a change in the machine's load hits both alike); prints
best and median wall times, their ratio (target ≥ 2×), and the smallest cosine similarity between the two sets of
vectors (the reduced decode moves them slightly; a mismatch of images would show as a low value). Exits 1 when the
vectors disagree (cosine < 0.99).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from bench_tagger import child_env, make_e2e_images, timed_run  # noqa: E402

NAIVE_EMBEDDER = '''\
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, sys.argv[5])
from lib_lorakit.torchvision_shim import ensure_torchvision_importable  # open_clip needs torchvision here

ensure_torchvision_importable()
import open_clip

config, weights, folder, out = sys.argv[1:5]
open_clip.add_model_config(config)
model, _, preprocess = open_clip.create_model_and_transforms(Path(config).stem, pretrained=weights)
model.eval()
rows = []
with torch.no_grad():
    for path in sorted(Path(folder).glob("*.jpg")):
        x = preprocess(Image.open(path).convert("RGB"))[None]
        rows.append(torch.nn.functional.normalize(model.encode_image(x), dim=-1)[0].numpy())
np.save(out, np.stack(rows))
'''


def tiny_model(cache: Path) -> tuple[Path, Path]:
    from tiny_clip import TINY_MODEL, register_tiny_clip, save_tiny_checkpoint

    folder = cache / "tiny-clip"
    register_tiny_clip(folder)
    weights = folder / "tiny.pt"
    if not weights.is_file():
        save_tiny_checkpoint(weights)
    return folder / f"{TINY_MODEL}.json", weights


def ours_vectors(home: Path) -> np.ndarray:
    from lib_lorakit.embed.store import stored_table
    from lib_lorakit.project import Workspace

    project = Workspace(home).open("bench")
    images = sorted(p.relative_to(project.root).as_posix() for p in (project.root / "dataset").rglob("*.jpg"))
    table = stored_table(project, images)
    assert table is not None and table.images == images, "the store does not hold every image"
    return table.vectors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "train-style-bench")
    args = ap.parse_args()
    config, weights = tiny_model(args.cache)
    photos = make_e2e_images(args.cache / f"e2e-jpegs-{args.images}", args.images)
    cli, env = [sys.executable, "-m", "lib_lorakit"], child_env(args.cache)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        for step in (["project", "new", "bench"], ["import", "bench", str(photos)]):
            timed_run([*cli, "--home", str(home), *step], cwd=ROOT, env=env)
        dataset = home / "bench" / "dataset" / "1_bench"
        script, naive_out = tmp / "naive_embedder.py", tmp / "naive.npy"
        script.write_text(NAIVE_EMBEDDER)
        print(f"{args.images} JPEGs of 1024×768, the tiny open_clip (32 px); {os.cpu_count()} cores; load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        runs: dict[str, list[tuple[float, float]]] = {"naive": [], "ours": []}
        for _ in range(args.repeat):
            wall, cpu, _ = timed_run([sys.executable, str(script), str(config), str(weights), str(dataset),
                                      str(naive_out), str(ROOT)], env=env)
            runs["naive"].append((wall, cpu))
            shutil.rmtree(home / "bench" / ".lorakit" / "embeddings", ignore_errors=True)
            wall, cpu, _ = timed_run([*cli, "--home", str(home), "embed", "bench", "--embedder",
                                      f"{config}:{weights}", "--json"], cwd=ROOT, env=env)
            runs["ours"].append((wall, cpu))
        mine, theirs = ours_vectors(home), np.load(naive_out)
    labels = {"naive": "(a) the per-image script (PIL, one by one)", "ours": "(b) python -m lib_lorakit embed"}
    for key, label in labels.items():
        walls = [w for w, _ in runs[key]]
        print(f"  {label:<46} best {min(walls):6.2f} s ({args.images / min(walls):6.1f} img/s)  median "
              f"{statistics.median(walls):6.2f} s  runs {' '.join(f'{w:.2f}' for w in walls)}  CPU "
              f"{statistics.median(c for _, c in runs[key]):.1f} s")
    best = min(w for w, _ in runs["naive"]) / min(w for w, _ in runs["ours"])
    median = statistics.median(w for w, _ in runs["naive"]) / statistics.median(w for w, _ in runs["ours"])
    cosine = float((mine * theirs).sum(axis=1).min())
    print(f"  ratio (a ÷ b): best {best:.2f}×, median {median:.2f}×  (target ≥ 2×)")
    print(f"  vectors: smallest cosine between the two {cosine:.5f} over {len(mine)} images")
    return 0 if cosine >= 0.99 and len(mine) == len(theirs) == args.images else 1


if __name__ == "__main__":
    sys.exit(main())
