"""How fast `import` goes, process to process: the whole CLI command against a straightforward script.

    python bench/bench_import.py [--images 600] [--repeat 3] [--cache DIR]

(a) a one-process script that copies each file, hashes it (sha256) and decodes it once (below, NAIVE);
(b) `python -m lib_lorakit import PROJECT FOLDER` into a new project (made before the clock starts): originals
    copied, hashed and fsynced, each picture decoded once for orientation, modes and the perceptual hash,
    training copies linked, records, index and duplicate check; a JPEG kept as it is is decoded at reduced
    scale, for its perceptual hash only (lib_lorakit/images.py, describe_image).
Both run on the same JPEGs (1024×768, quality 92, textured; cached in --cache), interleaved, --repeat times each;
the best and the median times are printed with their ratio (a ÷ b: above 1 means the import is faster than the
script). Then checks what (b) made: every source imported once, training copies byte-identical to the sources and
hard links of their originals, perceptual hashes those of a reduced decode (and how far from a full decode's
they are). Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_tagger import child_env, make_photo, timed_run  # noqa: E402

from lib_lorakit.dataset.index import DatasetIndex  # noqa: E402
from lib_lorakit.images import hamming, open_training_image, perceptual_hash  # noqa: E402
from lib_lorakit.project import Project  # noqa: E402

NAIVE = '''\
import hashlib, shutil, sys
from pathlib import Path
from PIL import Image
source, target = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(source.glob("*.jpg")):
    shutil.copyfile(path, target / path.name)
    digest = hashlib.sha256((target / path.name).read_bytes()).hexdigest()
    with Image.open(target / path.name) as image:
        image.load()
'''


def make_images(folder: Path, n: int) -> list[Path]:
    """n JPEGs of 1024×768 (kept between runs: making them takes longer than importing them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo_{i:04d}.jpg" for i in range(n)]
    if not all(p.is_file() for p in paths):
        print(f"making {n} JPEGs in {folder} ...", flush=True)
        rng = np.random.default_rng(0)
        for p in paths:
            tmp = p.with_suffix(".tmp")
            make_photo(rng, 1024, 768).save(tmp, format="JPEG", quality=92)
            os.replace(tmp, p)
    return paths


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lib_lorakit", *args]


def run_naive(script: Path, images: Path, out: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the script."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    wall, cpu, _ = timed_run([sys.executable, str(script), str(images), str(out)], env=env)
    return wall, cpu


def run_ours(home: Path, images: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the import into a new project (made before the clock starts)."""
    shutil.rmtree(home, ignore_errors=True)
    timed_run(cli("--home", str(home), "project", "new", "bench"), cwd=ROOT, env=env)
    wall, cpu, _ = timed_run(cli("--home", str(home), "import", "bench", str(images)), cwd=ROOT, env=env)
    return wall, cpu


def reduced_phash(path: Path) -> int:
    """The perceptual hash as the import makes it for a JPEG it keeps: from a decode at 1/8 scale (or the least
    reduction leaving both sides ≥ 64 px)."""
    with Image.open(path) as im:
        im.draft("RGB", (64, 64))
        im.load()
        return perceptual_hash(im)


def check(home: Path, sources: list[Path]) -> tuple[list[str], str]:
    """What the import made, against the sources: (problems, a note on the perceptual hashes)."""
    project = Project(home / "bench")
    problems = []
    copies = sorted(project.concept("bench").folder.glob("*.jpg"))
    if len(copies) != len(sources):
        problems.append(f"{len(copies)} training copies for {len(sources)} sources")
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sources}
    entries = {Path(e.path).name: e for e in DatasetIndex(project).scan()}
    for copy in copies:
        sha = hashlib.sha256(copy.read_bytes()).hexdigest()
        original = project.root / "originals" / f"{sha[:24]}.jpg"
        if sha != digest.get(copy.name):
            problems.append(f"{copy.name}: not byte-identical to its source")
        elif not original.is_file() or not os.path.samefile(copy, original):
            problems.append(f"{copy.name}: not a link of {original.name}")
        elif entries[copy.name].sha256 != sha:
            problems.append(f"{copy.name}: indexed with another sha256")
    moved = []
    sample = sources[:: max(1, len(sources) // 100)]  # a hundred of them
    for source in sample:
        entry = entries.get(source.name)
        if entry is None or entry.phash != f"{reduced_phash(source):016x}":
            problems.append(f"{source.name}: perceptual hash is not that of a reduced decode")
            continue
        full = perceptual_hash(open_training_image(source).image)
        moved.append(hamming(full, entry.phash_int))
    note = (f"perceptual hashes (reduced decode) differ from a full decode's on {sum(d > 0 for d in moved)} of "
            f"{len(moved)} sampled images, by at most {max(moved, default=0)} of 64 bits")
    return problems, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; best and median are printed")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "train-style-bench-import")
    args = ap.parse_args()
    sources = make_images(args.cache / f"jpegs-{args.images}", args.images)
    images = sources[0].parent
    size = sum(p.stat().st_size for p in sources) / 1e6
    print(f"{len(sources)} JPEGs of 1024×768 ({size:.0f} MB); {os.cpu_count()} cores; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    runs: dict[str, list[tuple[float, float]]] = {"naive": [], "ours": []}
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "naive_import.py"
        script.write_text(NAIVE)
        env = child_env(args.cache)
        for _ in range(args.repeat):  # interleaved, so that a change in the machine's load hits both alike
            runs["naive"].append(run_naive(script, images, tmp / "naive", env))
            runs["ours"].append(run_ours(tmp / "home", images, env))
        problems, note = check(tmp / "home", sources)
    n = len(sources)
    labels = {"naive": "(a) copy + sha256 + decode, one process", "ours": "(b) python -m lib_lorakit import"}
    times = {key: [wall for wall, _ in value] for key, value in runs.items()}
    for key, label in labels.items():
        best, median = min(times[key]), statistics.median(times[key])
        print(f"  {label:<42} best {best:6.2f} s ({n / best:5.0f} img/s)  median {median:6.2f} s "
              f"({n / median:5.0f} img/s)  runs {' '.join(f'{t:.2f}' for t in times[key])}  "
              f"CPU {statistics.median(cpu for _, cpu in runs[key]):.1f} s")
    print(f"  ratio (a ÷ b): best {min(times['naive']) / min(times['ours']):.2f}×, median "
          f"{statistics.median(times['naive']) / statistics.median(times['ours']):.2f}×  (target ≥ 1×); load "
          f"average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems[:20]))
        sys.exit(1)
    print(f"  checked: {n} training copies byte-identical to their sources and linked to their originals; {note}")


if __name__ == "__main__":
    main()
