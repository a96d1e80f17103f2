"""A WD14-format tagger small enough to build in a test: same files, same interface, known weights.

`model.onnx` takes float32 NHWC `[N, S, S, 3]` (BGR, 0–255) like SmilingWolf's models and returns sigmoid
probabilities `[N, len(TAGS)]`. Its features are the mean of each BGR channel over the whole picture and over
its top-left quarter (scaled to 0–1), so colour, padding and placement all change the scores:

    scores = sigmoid(features @ WEIGHTS + BIAS),  features = [B, G, R, B_tl, G_tl, R_tl] / 255

`selected_tags.csv` lists the tags in the order of the outputs, ratings first as in the real files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
# (name, category); category 9 rating, 0 general, 4 character
TAGS: list[tuple[str, int]] = [
    ("general", 9),
    ("sensitive", 9),
    ("questionable", 9),
    ("explicit", 9),
    ("red_theme", 0),
    ("green_theme", 0),
    ("blue_theme", 0),
    ("white_background", 0),
    ("^_^", 0),
    ("smile_(happy)", 0),
    ("long_hair", 0),
    ("dark", 0),
    ("hatsune_miku", 4),
    ("kirby_(series)", 4),
]
#               B     G     R   B_tl  G_tl  R_tl   bias
_ROWS = {
    "general":          (0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "sensitive":        (0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0),
    "questionable":     (2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    "explicit":         (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -5.0),
    "red_theme":        (-5.0, -5.0, 10.0, 0.0, 0.0, 0.0, -2.0),
    "green_theme":      (-5.0, 10.0, -5.0, 0.0, 0.0, 0.0, -2.0),
    "blue_theme":       (10.0, -5.0, -5.0, 0.0, 0.0, 0.0, -2.0),
    "white_background": (4.0, 4.0, 4.0, 0.0, 0.0, 0.0, -10.0),
    "^_^":              (0.0, 6.0, 0.0, 0.0, 0.0, 0.0, -3.0),
    "smile_(happy)":    (6.0, 0.0, 0.0, 0.0, 0.0, 0.0, -3.0),
    "long_hair":        (0.0, 0.0, -3.0, 0.0, 0.0, 8.0, -3.0),
    "dark":             (-4.0, -4.0, -4.0, 0.0, 0.0, 0.0, 3.0),
    "hatsune_miku":     (4.0, 6.0, -6.0, 0.0, 0.0, 0.0, -2.5),
    "kirby_(series)":   (-3.0, -3.0, 3.0, 0.0, 0.0, 6.0, -2.0),
}
WEIGHTS = np.asarray([_ROWS[name][:6] for name, _ in TAGS], dtype=np.float32).T  # [6, T]
BIAS = np.asarray([_ROWS[name][6] for name, _ in TAGS], dtype=np.float32)  # [T]


# --- an independent reference: what the tagger must give, computed without lib_lorakit ----------------------------

CATEGORY = {9: "rating", 4: "character", 0: "general"}


def reference_scores(image: Image.Image) -> np.ndarray:
    """What the tiny model must give: pad to a white square with numpy, bicubic resize, BGR, the known maths."""
    a = np.asarray(image.convert("RGB"))
    h, w = a.shape[:2]
    side = max(h, w)
    square = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = a
    small = np.asarray(Image.fromarray(square).resize((SIZE, SIZE), Image.BICUBIC), np.float64)[:, :, ::-1]
    half = SIZE // 2
    features = np.concatenate([small.mean(axis=(0, 1)), small[:half, :half].mean(axis=(0, 1))]) / 255.0
    return 1.0 / (1.0 + np.exp(-(features @ WEIGHTS.astype(np.float64) + BIAS)))


def reference_tags(scores: np.ndarray, *, general: float = 0.35, character: float = 0.85,
                   rating: bool = False) -> list[tuple[str, str]]:
    """(tag, category) expected: characters by score, general by score, the top rating last; names spaced."""
    def ranked(category: int, threshold: float) -> list[tuple[str, str]]:
        found = [(s, i) for i, ((name, cat), s) in enumerate(zip(TAGS, scores, strict=True))
                 if cat == category and s >= threshold]
        return [(TAGS[i][0], CATEGORY[category]) for s, i in sorted(found, key=lambda x: (-x[0], x[1]))]
    out = ranked(4, character) + ranked(0, general)
    if rating:
        ratings = [i for i, (_, cat) in enumerate(TAGS) if cat == 9]
        out.append((TAGS[max(ratings, key=lambda i: scores[i])][0], "rating"))
    return [(name if name == "^_^" else name.replace("_", " "), cat) for name, cat in out]


def away_from(scores: np.ndarray, thresholds=(0.35, 0.85, 0.5, 0.9)) -> bool:
    """No tag score (ratings are picked by rank, not threshold) lies within 1e-3 of a threshold used here."""
    tag_scores = [s for s, (_, cat) in zip(scores, TAGS, strict=True) if cat != 9]
    return all(abs(float(s) - t) > 1e-3 for s in tag_scores for t in thresholds)


def write_tags_csv(path: Path, tags: list[tuple[str, int]] = TAGS) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category) in enumerate(tags):
            w.writerow([100 + i, name, category, 1000 - i])
    return path


def build_model(path: Path, *, size: int = SIZE, fixed_batch: int | None = None) -> Path:
    """Write the ONNX graph: two ReduceMeans (whole picture, top-left quarter), MatMul, Add, Sigmoid."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    batch = fixed_batch if fixed_batch else "N"
    half = size // 2
    inits = [
        numpy_helper.from_array(WEIGHTS, "weights"),
        numpy_helper.from_array(BIAS, "bias"),
        numpy_helper.from_array(np.asarray([1.0 / 255.0], np.float32), "scale"),
        numpy_helper.from_array(np.asarray([0, 0, 0], np.int64), "tl_start"),
        numpy_helper.from_array(np.asarray([half, half, 3], np.int64), "tl_end"),
        numpy_helper.from_array(np.asarray([1, 2, 3], np.int64), "tl_axes"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean_all"], axes=[1, 2], keepdims=0),
        helper.make_node("Slice", ["input", "tl_start", "tl_end", "tl_axes"], ["top_left"]),
        helper.make_node("ReduceMean", ["top_left"], ["mean_tl"], axes=[1, 2], keepdims=0),
        helper.make_node("Concat", ["mean_all", "mean_tl"], ["features_255"], axis=1),
        helper.make_node("Mul", ["features_255", "scale"], ["features"]),
        helper.make_node("MatMul", ["features", "weights"], ["logits_0"]),
        helper.make_node("Add", ["logits_0", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_wd14",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, len(TAGS)])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tiny_wd14")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_tiny_wd14(folder: Path, *, size: int = SIZE, fixed_batch: int | None = None) -> Path:
    """A model folder as SmilingWolf publishes it: `model.onnx` + `selected_tags.csv`."""
    folder.mkdir(parents=True, exist_ok=True)
    build_model(folder / "model.onnx", size=size, fixed_batch=fixed_batch)
    write_tags_csv(folder / "selected_tags.csv")
    return folder
