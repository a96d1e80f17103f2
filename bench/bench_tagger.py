"""How fast WD14 tagging goes: process to process, then the same JPEGs and the same model three ways in one process.

    python bench/bench_tagger.py [--e2e-images 400] [--e2e-repeat 3] [--e2e-only]
                                 [--images 48] [--compute-images 4] [--skip-compute] [--batch 8] [--workers N]

END TO END (first): the whole command `python -m lib_lorakit tag PROJECT --model FOLDER` against a straightforward
per-image script (NAIVE_TAGGER below: open, pad, resize, `session.run`, threshold, write the caption) on the same
JPEGs (1024×768, quality 92, the training copies of a project the bench makes before the clock starts), with the
FEED model (below), interleaved --e2e-repeat times; prints the best and median times and their ratio (target
≥ 2×) and checks that every caption the command wrote equals the script's; exits 1 otherwise.

IN ONE PROCESS (then):
(a) a straightforward loop: open with PIL, pad and resize, `session.run` one image at a time, default
    onnxruntime options;
(b) sd-scripts' `finetune/tag_images_by_wd14_tagger.py` as a subprocess, where an sd-scripts checkout
    (the submodule, or TRAIN_STYLE_SD_SCRIPTS) and a Python with its dependencies (TRAIN_STYLE_TRAINER_VENV)
    exist; its start-up (imports, model load) is measured on an empty folder and subtracted;
(c) ours: `lib_lorakit.taggers.pipeline.tag_images`.

Two random-weight models with the WD14 v3 interface (448×448×3 BGR in, 10,861 sigmoid outputs):
FEED, an average pool and one matrix (what a fast GPU sees: decoding and preprocessing dominate), and
COMPUTE, the real ViT-B/16 shapes (patch 16, dim 768, 12 blocks, 12 heads, MLP 3072), ~157 GFLOPs an image.
Both are cached (--cache). Checks that (a) and (c) give identical tags for every image; exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_lorakit.taggers.pipeline import TagItem, default_workers, tag_images  # noqa: E402
from lib_lorakit.taggers.wd14 import WD14Options, WD14Tagger  # noqa: E402

SIZE, N_TAGS, N_RATINGS, N_CHARACTERS = 448, 10_861, 4, 2_800
REPO = "SmilingWolf/wd-vit-tagger-v3"  # the name sd-scripts is told; the files are ours


# --- images -------------------------------------------------------------------------------------------------------

def make_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A textured picture: smooth colour fields, shapes with edges, and grain (JPEG-realistic, not flat)."""
    small = (max(8, width // 16), max(8, height // 16))
    y, x = np.mgrid[0:small[1], 0:small[0]] / max(small)
    field = np.zeros((*x.shape, 3))
    for c in range(3):
        for _ in range(3):
            fx, fy, phase = rng.uniform(0.5, 6), rng.uniform(0.5, 6), rng.uniform(0, 6.3)
            field[..., c] += np.cos(2 * np.pi * (fx * x + fy * y) + phase)
    field = (field - field.min()) / (np.ptp(field) or 1) * 200 + 25
    image = Image.fromarray(field.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(40, width // 3)), y0 + int(rng.integers(40, height // 3))]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    grain = rng.normal(0, 10, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8))


def make_images(folder: Path, n: int, seed: int) -> list[Path]:
    """Half portrait 1024×1365, half landscape 2048×1536, JPEG quality 92."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = (1024, 1365) if i % 2 == 0 else (2048, 1536)
        path = folder / f"img_{i:04d}.jpg"
        make_photo(rng, w, h).save(path, quality=92)
        paths.append(path)
    return paths


# --- models -------------------------------------------------------------------------------------------------------

def tag_names() -> list[tuple[str, int]]:
    """Ratings first, then general, then character tags, as in SmilingWolf's selected_tags.csv."""
    ratings = [("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9)]
    n_general = N_TAGS - N_RATINGS - N_CHARACTERS
    return (ratings + [(f"tag_{i:05d}", 0) for i in range(n_general)]
            + [(f"character_{i:04d}_(series)", 4) for i in range(N_CHARACTERS)])


def write_csv(path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (name, cat) in enumerate(tag_names()):
            w.writerow([i, name, cat, 1000])


def _save(model, path: Path) -> None:
    import onnx

    model.ir_version = 8
    onnx.checker.check_model(model)
    tmp = path.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def build_feed_model(path: Path) -> None:
    """[N,448,448,3] → 32×32 average pool → [N,588] → matrix → sigmoid [N,10861]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    grid = SIZE // 32
    feats = grid * grid * 3
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in (
        ("blocks", np.asarray([0, grid, 32, grid, 32, 3], np.int64)),
        ("flat", np.asarray([0, feats], np.int64)),
        ("scale", np.asarray([1 / 255.0], np.float32)),
        ("centre", np.asarray([0.5], np.float32)),
        ("w", rng.normal(0, 0.35, (feats, N_TAGS)).astype(np.float32)),
        ("b", rng.normal(-8.0, 1.0, N_TAGS).astype(np.float32)))]
    nodes = [helper.make_node("Reshape", ["input", "blocks"], ["x6"]),
             helper.make_node("ReduceMean", ["x6"], ["pooled"], axes=[2, 4], keepdims=0),
             helper.make_node("Reshape", ["pooled", "flat"], ["f255"]),
             helper.make_node("Mul", ["f255", "scale"], ["f01"]),
             helper.make_node("Sub", ["f01", "centre"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["fw"]),
             helper.make_node("Add", ["fw", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["output"])]
    graph = helper.make_graph(nodes, "feed", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["N", SIZE, SIZE, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", N_TAGS])], inits)
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def build_vit_model(path: Path, *, patch: int = 16, dim: int = 768, depth: int = 12, heads: int = 12,
                    mlp: int = 3072) -> None:
    """ViT-B/16 at 448 with random weights: patch embedding, 12 pre-norm blocks, mean pool, tag head."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits, nodes = [], []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(name: str, shape: tuple[int, ...], std: float = 0.02) -> str:
        return const(name, rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def layer_norm(x: str, name: str) -> str:
        return node("LayerNormalization", [x, const(f"{name}.g", np.ones(dim, np.float32)),
                                           const(f"{name}.b", np.zeros(dim, np.float32))], f"{name}.out",
                    axis=-1, epsilon=1e-6)

    def linear(x: str, name: str, n_in: int, n_out: int) -> str:
        y = node("MatMul", [x, weight(f"{name}.w", (n_in, n_out))], f"{name}.mm")
        return node("Add", [y, const(f"{name}.b", np.zeros(n_out, np.float32))], f"{name}.out")

    tokens = (SIZE // patch) ** 2
    hd = dim // heads
    x = node("Transpose", ["input"], "nchw", perm=[0, 3, 1, 2])
    x = node("Mul", [x, const("inv127", np.asarray([1 / 127.5], np.float32))], "scaled")
    x = node("Sub", [x, const("one", np.asarray([1.0], np.float32))], "normed")
    x = node("Conv", [x, weight("patch.w", (dim, 3, patch, patch)), const("patch.b", np.zeros(dim, np.float32))],
             "patches", strides=[patch, patch])
    x = node("Reshape", [x, const("to_seq", np.asarray([0, dim, tokens], np.int64))], "seq_t")
    x = node("Transpose", [x], "seq", perm=[0, 2, 1])
    x = node("Add", [x, weight("pos", (1, tokens, dim))], "x0")
    split = const("qkv_shape", np.asarray([0, 0, 3, heads, hd], np.int64))
    merge = const("merge_shape", np.asarray([0, 0, dim], np.int64))
    inv_sqrt = const("inv_sqrt", np.asarray([1 / np.sqrt(hd)], np.float32))
    sqrt_half, half, one = (const("sqrt_half", np.asarray([np.sqrt(0.5)], np.float32)),
                            const("half", np.asarray([0.5], np.float32)), "one")
    for i in range(depth):
        b = f"blk{i}"
        qkv = linear(layer_norm(x, f"{b}.ln1"), f"{b}.qkv", dim, 3 * dim)
        qkv = node("Transpose", [node("Reshape", [qkv, split], f"{b}.qkv5")], f"{b}.qkvT", perm=[2, 0, 3, 1, 4])
        q, k, v = (node("Gather", [qkv, const(f"{b}.i{j}", np.asarray(j, np.int64))], f"{b}.{n}", axis=0)
                   for j, n in enumerate("qkv"))
        att = node("MatMul", [q, node("Transpose", [k], f"{b}.kT", perm=[0, 1, 3, 2])], f"{b}.qk")
        att = node("Softmax", [node("Mul", [att, inv_sqrt], f"{b}.qks")], f"{b}.att", axis=-1)
        y = node("Transpose", [node("MatMul", [att, v], f"{b}.av")], f"{b}.avT", perm=[0, 2, 1, 3])
        y = linear(node("Reshape", [y, merge], f"{b}.merged"), f"{b}.proj", dim, dim)
        x = node("Add", [x, y], f"{b}.res1")
        h = linear(layer_norm(x, f"{b}.ln2"), f"{b}.fc1", dim, mlp)
        erf = node("Erf", [node("Mul", [h, sqrt_half], f"{b}.hs")], f"{b}.erf")
        h = node("Mul", [node("Mul", [h, half], f"{b}.hh"), node("Add", [erf, one], f"{b}.erf1")], f"{b}.gelu")
        x = node("Add", [x, linear(h, f"{b}.fc2", mlp, dim)], f"{b}.res2")
    pooled = node("ReduceMean", [layer_norm(x, "final_ln")], "pooled", axes=[1], keepdims=0)
    pooled = layer_norm(pooled, "pool_ln")  # unit-scale features, so the head's spread is known
    logits = node("MatMul", [pooled, weight("head.w", (dim, N_TAGS), std=2 / np.sqrt(dim))], "head")
    logits = node("Add", [logits, const("head.b", np.full(N_TAGS, -6.0, np.float32))], "logits")
    node("Sigmoid", [logits], "output")
    graph = helper.make_graph(nodes, "vit_b16_448", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                   ["N", SIZE, SIZE, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", N_TAGS])], inits)
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def model_folder(cache: Path, kind: str) -> Path:
    """`<cache>/<kind>/SmilingWolf_wd-vit-tagger-v3/` holding model.onnx + selected_tags.csv: sd-scripts looks
    for `<model_dir>/<repo_id with / as _>/` and downloads nothing when it exists."""
    folder = cache / kind / REPO.replace("/", "_")
    if not (folder / "model.onnx").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"building the {kind} model into {folder} ...", flush=True)
        (build_feed_model if kind == "feed" else build_vit_model)(folder / "model.onnx")
    if not (folder / "selected_tags.csv").is_file():
        write_csv(folder / "selected_tags.csv")
    return folder


# --- end to end: the CLI command against a ten-line script ---------------------------------------------------------

NAIVE_TAGGER = '''\
import csv, sys
from pathlib import Path
import numpy as np, onnxruntime as ort
from PIL import Image
model, images, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rows = list(csv.reader(open(model / "selected_tags.csv", encoding="utf-8")))[1:]
names, categories = [r[1].replace("_", " ") for r in rows], np.array([int(r[2]) for r in rows])
session = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"])
size, feed = session.get_inputs()[0].shape[1], session.get_inputs()[0].name
for path in sorted(images.glob("*.jpg")):
    image = Image.open(path).convert("RGB")
    square = Image.new("RGB", (max(image.size),) * 2, (255, 255, 255))
    square.paste(image, ((square.width - image.width) // 2, (square.height - image.height) // 2))
    x = np.asarray(square.resize((size, size), Image.BICUBIC), np.float32)[None, :, :, ::-1]
    p = session.run(None, {feed: np.ascontiguousarray(x)})[0][0]
    keep = [i for c, t in ((4, 0.85), (0, 0.35))
            for i in sorted(np.flatnonzero((categories == c) & (p >= t)), key=lambda i: (-p[i], i))]
    (out / (path.stem + ".txt")).write_text(", ".join(names[i] for i in keep) + "\\n", encoding="utf-8")
'''


def make_e2e_images(folder: Path, n: int) -> Path:
    """n JPEGs of 1024×768 (kept in the cache: making them takes longer than tagging them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo_{i:04d}.jpg" for i in range(n)]
    if not all(p.is_file() for p in paths):
        print(f"making {n} JPEGs in {folder} ...", flush=True)
        rng = np.random.default_rng(7)
        for p in paths:
            make_photo(rng, 1024, 768).save(p.with_suffix(".tmp"), format="JPEG", quality=92)
            os.replace(p.with_suffix(".tmp"), p)
    return folder


def child_env(cache: Path) -> dict[str, str]:
    """The environment both commands run in: Python's usual bytecode cache (in the bench's cache folder), even
    where PYTHONDONTWRITEBYTECODE is set, so that neither pays for compiling its modules on every start (an
    installed package, like numpy, has its bytecode already)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(cache / "pycache")}


def timed_run(cmd: list[str], **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds of the child, the finished process)."""
    before = os.times()
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - t
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system), done


def end_to_end(args) -> bool:
    """The CLI command against NAIVE_TAGGER, process to process; True when their captions are identical."""
    model = model_folder(args.cache, "feed")
    images = make_e2e_images(args.cache / f"e2e-jpegs-{args.e2e_images}", args.e2e_images)
    cli, env = [sys.executable, "-m", "lib_lorakit"], child_env(args.cache)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        for step in (["project", "new", "bench"], ["import", "bench", str(images)]):
            timed_run([*cli, "--home", str(home), *step], cwd=ROOT, env=env)
        dataset = home / "bench" / "dataset" / "1_bench"
        script, out = tmp / "naive_tagger.py", tmp / "naive"
        script.write_text(NAIVE_TAGGER)
        print(f"\nEND TO END: {args.e2e_images} JPEGs of 1024×768, the FEED model; {os.cpu_count()} cores; load "
              f"average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        runs: dict[str, list[tuple[float, float]]] = {"naive": [], "ours": []}
        trace = ""
        for _ in range(args.e2e_repeat):  # interleaved: a change in the machine's load hits both alike
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            wall, cpu, _ = timed_run([sys.executable, str(script), str(model), str(dataset), str(out)], env=env)
            runs["naive"].append((wall, cpu))
            for caption in dataset.glob("*.txt"):
                caption.unlink()
            wall, cpu, done = timed_run([*cli, "--home", str(home), "tag", "bench", "--model", str(model)], cwd=ROOT,
                                     env=env)
            runs["ours"].append((wall, cpu))
            trace = next((line for line in done.stderr.splitlines() if "decoders" in line), trace)
        same = [p.name for p in sorted(out.glob("*.txt"))
                if (dataset / p.name).is_file() and (dataset / p.name).read_text().strip() == p.read_text().strip()]
    n = args.e2e_images
    labels = {"naive": "(a) the ten-line script (PIL, default session)", "ours": "(b) python -m lib_lorakit tag"}
    for key, label in labels.items():
        walls = [w for w, _ in runs[key]]
        best, median = min(walls), statistics.median(walls)
        print(f"  {label:<48} best {best:6.2f} s ({n / best:5.1f} img/s)  median {median:6.2f} s  "
              f"runs {' '.join(f'{w:.2f}' for w in walls)}  CPU {statistics.median(c for _, c in runs[key]):.1f} s")
    best = min(w for w, _ in runs["naive"]) / min(w for w, _ in runs["ours"])
    median = statistics.median(w for w, _ in runs["naive"]) / statistics.median(w for w, _ in runs["ours"])
    print(f"  ratio (a ÷ b): best {best:.2f}×, median {median:.2f}×  (target ≥ 2×); load average now "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if trace:
        print(f"  last run: {trace.strip()}")
    ok = len(same) == n
    print(f"  captions: {'IDENTICAL' if ok else 'DIFFERENT'} on {len(same)}/{n} images")
    return ok


# --- (a) the straightforward loop ---------------------------------------------------------------------------------

def naive_loop(folder: Path, paths: list[Path]) -> tuple[float, dict[str, list[tuple[str, float]]]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = tag_names()
    cats = np.asarray([c for _, c in rows])
    names = [n.replace("_", " ") for n, _ in rows]
    found = {}
    t = time.perf_counter()
    for path in paths:
        image = Image.open(path).convert("RGB")
        side = max(image.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        x = np.asarray(square.resize((SIZE, SIZE), Image.BICUBIC), np.float32)[:, :, ::-1][None]
        probs = session.run(None, {"input": np.ascontiguousarray(x)})[0][0]
        chars = [i for i in np.flatnonzero((cats == 4) & (probs >= 0.85))]
        general = [i for i in np.flatnonzero((cats == 0) & (probs >= 0.35))]
        order = sorted(chars, key=lambda i: (-probs[i], i)) + sorted(general, key=lambda i: (-probs[i], i))
        found[path.name] = [(names[i], float(probs[i])) for i in order]
    return time.perf_counter() - t, found


# --- (c) ours -----------------------------------------------------------------------------------------------------

def ours(folder: Path, paths: list[Path], *, batch: int | None, workers: int | None,
         reduced: bool = False) -> tuple[float, dict[str, list[tuple[str, float]]], str]:
    tagger = WD14Tagger(folder, WD14Options())
    _ = tagger.device  # load outside the timing, as for (a)
    found: dict[str, list[tuple[str, float]]] = {}

    def keep(outcome) -> None:
        assert outcome.tags is not None, outcome.problem
        found[outcome.key] = [(t.tag, t.score) for t in outcome.tags["wd14"].tags]

    t = time.perf_counter()
    report = tag_images([TagItem(path=p, key=p.name) for p in paths], {"wd14": tagger}, batch_size=batch,
                        workers=workers, reduced_jpeg_decode=reduced, on_result=keep)
    seconds = time.perf_counter() - t
    assert report.done == len(paths), report
    return seconds, found, f"batch {report.batch_size}, {report.workers} worker(s), {report.device}"


# --- (b) sd-scripts -----------------------------------------------------------------------------------------------

def sd_scripts_setup() -> tuple[Path, Path] | str:
    """(sd-scripts root, python) or the reason (b) is skipped."""
    root = Path(os.environ.get("TRAIN_STYLE_SD_SCRIPTS") or ROOT / "sd-scripts")
    script = root / "finetune" / "tag_images_by_wd14_tagger.py"
    if not script.is_file():
        return f"no sd-scripts checkout with {script.relative_to(root)} at {root} (set TRAIN_STYLE_SD_SCRIPTS)"
    venv = os.environ.get("TRAIN_STYLE_TRAINER_VENV")
    if not venv:
        return "TRAIN_STYLE_TRAINER_VENV is not set (a venv with sd-scripts' requirements and onnxruntime)"
    python = Path(venv) / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import torch, onnx, onnxruntime, cv2"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{python} lacks a dependency: {probe.stderr.strip().splitlines()[-1] if probe.stderr else '?'}"
    return root, python


def sd_scripts_run(setup: tuple[Path, Path], model_dir: Path, images: Path, out: Path, *, batch: int,
                   workers: int | None) -> tuple[float, float | None]:
    """(wall seconds, seconds inside its tagging loop from its own tqdm rate, or None if not printed)."""
    root, python = setup
    # v0.10.1 crashes (UnboundLocalError: character_tags, in run_batch) as soon as a character tag of a
    # SmilingWolf-format model passes its threshold: character tags are switched off for it (threshold > 1)
    cmd = [str(python), "finetune/tag_images_by_wd14_tagger.py", str(images), "--onnx", "--repo_id", REPO,
           "--model_dir", str(model_dir), "--batch_size", str(batch), "--general_threshold", "0.35",
           "--character_threshold", "1.01", "--remove_underscore", "--output_path", str(out)]
    if workers:
        cmd += ["--max_data_loader_n_workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"sd-scripts failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, _tqdm_seconds(done.stderr)


_TQDM_END = re.compile(r"(\d+)/(\d+) \[[^\]]*?,\s*([\d.]+)(it/s|s/it)\]")


def _tqdm_seconds(stderr: str) -> float | None:
    """The loop's own time: iterations ÷ tqdm's final rate (its elapsed field has only 1 s resolution)."""
    found = [m for line in re.split(r"[\r\n]", stderr) for m in _TQDM_END.finditer(line)]
    if not found:
        return None
    done, _, rate, unit = found[-1].groups()
    return int(done) / float(rate) if unit == "it/s" else int(done) * float(rate)


def sd_scripts_rows(setup, model_dir: Path, image_dir: Path, n: int, tmp: Path, batch: int, workers: int,
                    ours_found: dict, repeat: int) -> list[tuple[str, float, str]]:
    """sd-scripts as shipped (batch 1) and with its batch and DataLoader workers, timed by its own tagging loop
    (tqdm's rate: the model load and imports, ~7 s here, would swamp 48 images); best of `repeat`."""
    rows = []
    for b, w in ((1, None), (batch, workers)):
        out = tmp / f"sd_{b}_{w}.json"
        runs = [sd_scripts_run(setup, model_dir, image_dir, out, batch=b, workers=w) for _ in range(repeat)]
        loop = min((inner for _, inner in runs if inner), default=None)
        total = min(wall for wall, _ in runs)
        tags = {Path(k).name: v["tags"].split(", ") for k, v in json.loads(out.read_text()).items()}
        same = sum(set(tags.get(k, [])) == {t for t, _ in v if not t.startswith("character ")}
                   for k, v in ours_found.items())
        how = "its tagging loop" if loop else "whole run (no tqdm rate found)"
        rows.append((f"(b) sd-scripts --batch_size {b}" + (f" --max_data_loader_n_workers {w}" if w else ""),
                     loop or total,
                     f"{how}; {total:.1f} s with start-up; general tags as (a) on {same}/{n} (its resize is cv2's)"))
    return rows


# --- the run ------------------------------------------------------------------------------------------------------

def compare(naive: dict, mine: dict, label: str) -> bool:
    """True when every image has the same tags in the same order; prints how close the rest came."""
    same_order = [k for k in naive if [t for t, _ in naive[k]] == [t for t, _ in mine.get(k, [])]]
    same_set = [k for k in naive if {t for t, _ in naive[k]} == {t for t, _ in mine.get(k, [])}]
    diffs = [abs(score - dict(mine.get(k, []))[tag]) for k in naive for tag, score in naive[k]
             if tag in dict(mine.get(k, []))]
    tags = sum(len(v) for v in naive.values())
    n = len(naive)
    verdict = "IDENTICAL" if len(same_order) == n else "DIFFERENT"
    print(f"  tags {label}: {verdict}: same tags in the same order on {len(same_order)}/{n} images, same set on "
          f"{len(same_set)}/{n} ({tags / max(1, n):.0f} tags an image; largest score difference "
          f"{max(diffs, default=0):.2g})")
    for k in [k for k in naive if k not in same_set][:3]:
        a, b = {t for t, _ in naive[k]}, {t for t, _ in mine.get(k, [])}
        print(f"    {k}: only naive {sorted(a - b)[:5]}, only ours {sorted(b - a)[:5]}")
    return len(same_order) == n


def table(n: int, rows: list[tuple[str, float, str]]) -> None:
    base = rows[0][1]
    for label, seconds, note in rows:
        print(f"  {label:<58} {seconds:7.2f} s {n / seconds:7.2f} img/s {base / seconds:5.2f}x  {note}")


def section(title: str, folder: Path, paths: list[Path], args, tmp: Path, sd_setup, *, compute: bool) -> bool:
    """Time (a), (b), (c) on one model (best of --repeat, interleaved); True when (c) with full decoding gives
    exactly the naive loop's tags."""
    print(f"\n{title}: {len(paths)} images")
    if not compute:
        print("  ours runs with a GPU's defaults here (batch 8, one decoder per core): this model stands in for one")
    batch, workers = (None, None) if compute else (args.batch, args.workers)  # compute: ours' CPU defaults
    labels = {False: "(c) ours (default: full JPEG decode)", True: "(c) ours, reduced JPEG decode (option)"}
    best: dict[str, float] = {}
    found: dict[str, dict] = {}
    how: dict[str, str] = {}
    for _ in range(args.compute_repeat if compute else args.repeat):
        seconds, found["naive"] = naive_loop(folder, paths)
        best["naive"] = min(seconds, best.get("naive", seconds))
        for reduced, label in labels.items():
            seconds, result, how[label] = ours(folder, paths, batch=batch, workers=workers, reduced=reduced)
            assert found.setdefault(label, result) == result, "ours gave different tags on a repeat"
            best[label] = min(seconds, best.get(label, seconds))
    rows = [("(a) naive loop (PIL, batch 1, default session)", best["naive"], "")]
    rows += [(label, best[label], how[label]) for label in labels.values()]
    if isinstance(sd_setup, str) or (compute and not args.compute_sd_scripts):
        reason = sd_setup if isinstance(sd_setup, str) else "not run on the compute model (--compute-sd-scripts)"
        print(f"  (b) sd-scripts skipped: {reason}")
    else:
        rows[1:1] = sd_scripts_rows(sd_setup, folder.parent, paths[0].parent, len(paths), tmp, args.batch,
                                    args.workers, found["naive"], args.compute_repeat if compute else args.repeat)
    table(len(paths), rows)
    exact = compare(found["naive"], found[labels[False]], "ours (full decode) vs naive")
    compare(found["naive"], found[labels[True]], "ours (reduced decode) vs naive")
    return exact


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--e2e-images", type=int, default=400, help="JPEGs for the end-to-end comparison")
    ap.add_argument("--e2e-repeat", type=int, default=3, help="runs of each in the end-to-end comparison")
    ap.add_argument("--e2e-only", action="store_true", help="only the end-to-end comparison")
    ap.add_argument("--skip-e2e", action="store_true", help="only the in-process comparisons")
    ap.add_argument("--images", type=int, default=48, help="images for the feed model")
    ap.add_argument("--compute-images", type=int, default=4, help="images for the ViT-B/16 model (~2 s each here)")
    ap.add_argument("--skip-compute", action="store_true")
    ap.add_argument("--compute-sd-scripts", action="store_true", help="also run sd-scripts on the ViT model")
    ap.add_argument("--batch", type=int, default=8, help="batch for the feed model (a GPU's default)")
    ap.add_argument("--workers", type=int, default=None,
                    help="decoders for the feed model; default: what ours picks for a GPU (one per core)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the feed section; the best time counts")
    ap.add_argument("--compute-repeat", type=int, default=1, help="runs of the compute section (slow)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "train-style-bench-tagger")
    args = ap.parse_args()
    ok = True if args.skip_e2e else end_to_end(args)
    if args.e2e_only:
        sys.exit(0 if ok else 1)
    feed, vit = model_folder(args.cache, "feed"), None if args.skip_compute else model_folder(args.cache, "vit")
    if args.workers is None:
        args.workers = default_workers(["CUDA (a fast GPU)"])
    sd_setup = sd_scripts_setup()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print("making images ...", flush=True)
        paths = make_images(tmp / "images", args.images, seed=0)
        size = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{len(paths)} JPEGs (q92, half 1024×1365, half 2048×1536), {size:.0f} MB; {os.cpu_count()} cores")
        ok &= section("FEED model (v3 interface: average pool + matrix, 10,861 tags)", feed, paths, args, tmp,
                      sd_setup, compute=False)
        if vit is not None:
            compute_paths = make_images(tmp / "compute", args.compute_images, seed=1)
            ok &= section("COMPUTE model (random ViT-B/16 at 448, 10,861 tags)", vit, compute_paths, args, tmp,
                          sd_setup, compute=True)
    if not ok:
        print("FAILED: ours and the straightforward loop disagree on some image's tags")
        sys.exit(1)


if __name__ == "__main__":
    main()
