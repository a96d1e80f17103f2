"""SmilingWolf's WD14 taggers (booru tags) through onnxruntime.

A model folder holds `model.onnx` and `selected_tags.csv` (see models.py). The model takes float32 NHWC
`[N, S, S, 3]`, BGR, 0–255, the picture padded to a white square and resized to S; it returns one sigmoid
probability per row of the csv. Character tags and general tags have their own thresholds; the rating is the
most likely of the rating rows. onnxruntime is imported when the model is first needed, never at import time.
"""

from __future__ import annotations

import csv
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..captions.tags import escape_parentheses, tag_key
from ..errors import LorakitError
from ..schema import Field
from .base import ImageTags, TagScore

log = logging.getLogger(__name__)

RATING, CHARACTER, GENERAL = 9, 4, 0
CATEGORY_NAMES = {RATING: "rating", CHARACTER: "character", GENERAL: "general"}
SYMBOLIC_BATCH_LIMIT = 64  # models that take any batch size: the pipeline's batches stay well below this
WHITE = (255, 255, 255)
# Booru tags that are faces drawn with underscores: replacing the underscore would break the face.
KAOMOJI = frozenset({
    "^_^", "^_^;", ">_<", ">_o", "o_<", "o_o", "o_O", "O_o", "0_0", "0_o", "o_0", "x_x", "X_X", "u_u", "=_=",
    "-_-", "-_-;", "@_@", "+_+", "+_-", "._.", "._.;", ";_;", "t_t", "T_T", "3_3", "6_9", "|_|", "||_||",
    "(o)_(o)", "<o>_<o>", "<|>_<|>", "(-_-)", "(^_^)", "(>_<)", "(o_o)", "(x_x)", "q_q", "p_p", "v_v", "~_~",
    "*_*", "$_$", "#_#", "%_%",
})


# --- the tag list -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Labels:
    """The rows of `selected_tags.csv`: one name and one category per model output, in output order."""

    names: tuple[str, ...]
    categories: np.ndarray  # int, one per name


def load_labels(csv_path: Path) -> Labels:
    """Read a WD14 `selected_tags.csv` (columns tag_id,name,category,count; category 9 rating, 4 character,
    0 general). A malformed file is a LorakitError naming the file and the line."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise LorakitError(f"Cannot read the WD14 tag list {csv_path}: {e}") from e
    if not rows or not {"name", "category"} <= {h.strip() for h in rows[0]}:
        header = ",".join(rows[0]) if rows else "(empty file)"
        raise LorakitError(f"{csv_path} is not a WD14 tag list: the first line must name the columns "
                           f"tag_id,name,category,count, got {header!r}")
    columns = [h.strip() for h in rows[0]]
    at_name, at_category = columns.index("name"), columns.index("category")
    names: list[str] = []
    categories: list[int] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            name, category = row[at_name].strip(), int(row[at_category])
        except (IndexError, ValueError):
            raise LorakitError(f"{csv_path}, line {line}: expected a tag name and a whole-number category, "
                               f"got {','.join(row)!r}") from None
        if not name:
            raise LorakitError(f"{csv_path}, line {line}: the tag name is empty")
        names.append(name)
        categories.append(category)
    if not names:
        raise LorakitError(f"{csv_path} lists no tags: download selected_tags.csv again")
    return Labels(names=tuple(names), categories=np.asarray(categories, dtype=np.int64))


def caption_name(raw: str, *, underscores_to_spaces: bool, escape: bool) -> str:
    """How a csv tag name is written in a caption: `long_hair` → `long hair` (faces like `^_^` keep theirs),
    brackets optionally escaped for the webui."""
    name = raw.replace("_", " ") if underscores_to_spaces and raw not in KAOMOJI else raw
    return escape_parentheses(name) if escape else name


# --- options ------------------------------------------------------------------------------------------------------

# declared once for the CLI, the API and the Captions panel (captions/service.py TAG_SCHEMA)
WD14_FIELDS: tuple[Field, ...] = (
    Field(name="general_threshold", type=float, default=0.35, minimum=0.01, maximum=1, group="wd14",
          label="General threshold",
          reason="A general tag is written when the model is at least this sure; lower writes more tags."),
    Field(name="character_threshold", type=float, default=0.85, minimum=0.01, maximum=1, group="wd14",
          label="Character threshold",
          reason="A character's name is written when the model is at least this sure."),
    Field(name="include_rating", type=bool, default=False, group="wd14", label="Write the rating tag",
          reason="Writes the most likely of general/sensitive/questionable/explicit last."),
    Field(name="underscores_to_spaces", type=bool, default=True, group="wd14", label="Underscores to spaces",
          reason="Writes long hair, not long_hair, as prompts are usually typed."),
    Field(name="escape_parentheses", type=bool, default=False, group="wd14",
          label="Escape ( ) for the webui's prompts",
          reason="Writes \\( and \\), so the webui reads brackets in tags literally."),
)
_WD14 = {f.name: f.default for f in WD14_FIELDS}


@dataclass(frozen=True)
class WD14Options:
    """How scores become a caption. Thresholds are probabilities: a tag is kept at or above its threshold."""

    general_threshold: float = _WD14["general_threshold"]
    character_threshold: float = _WD14["character_threshold"]
    include_rating: bool = _WD14["include_rating"]  # the most likely of general/…/explicit, written last
    exclude: tuple[str, ...] = ()  # tags never written, compared as captions compare tags (case, _ and \\( ignored)
    underscores_to_spaces: bool = _WD14["underscores_to_spaces"]
    escape_parentheses: bool = _WD14["escape_parentheses"]  # `\\(` and `\\)`: the webui reads brackets literally

    def __post_init__(self) -> None:
        for key in ("general_threshold", "character_threshold"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise LorakitError(f"{key}: expected a probability above 0 and at most 1, got {value!r}")
        for key in ("include_rating", "underscores_to_spaces", "escape_parentheses"):
            if not isinstance(getattr(self, key), bool):
                raise LorakitError(f"{key}: expected true or false, got {getattr(self, key)!r}")
        if isinstance(self.exclude, str) or not isinstance(self.exclude, (list, tuple)):
            raise LorakitError(f"exclude: expected a list of tags, got {self.exclude!r}")
        for i, tag in enumerate(self.exclude):
            if not isinstance(tag, str):
                raise LorakitError(f"exclude[{i}]: expected a tag (text), got {tag!r}")
        object.__setattr__(self, "exclude", tuple(self.exclude))


# --- the tagger ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Model:
    session: Any
    input_name: str
    input_dtype: Any
    size: int
    fixed_batch: int | None  # the batch size the file insists on, if any (the v1.4 family: 1)
    device: str


class WD14Tagger:
    """One WD14 model folder as a `Tagger`: `prepare` pads and resizes, `predict` runs onnxruntime and
    thresholds the scores. The session is created on first use (CUDA when onnxruntime offers it, else CPU)."""

    def __init__(self, folder: Path, options: WD14Options | None = None, *,
                 providers: Sequence[str] | None = None, name: str | None = None):
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.options = options or WD14Options()
        self._providers = tuple(providers) if providers else None
        self._labels = load_labels(self.folder / "selected_tags.csv")
        self._lock = threading.Lock()
        self._model: _Model | None = None
        self._shown = [caption_name(n, underscores_to_spaces=self.options.underscores_to_spaces,
                                    escape=self.options.escape_parentheses) for n in self._labels.names]
        excluded = {tag_key(t) for t in self.options.exclude}
        kept = np.asarray([tag_key(n) not in excluded for n in self._labels.names], dtype=bool)
        self._general = kept & (self._labels.categories == GENERAL)
        self._character = kept & (self._labels.categories == CHARACTER)
        self._ratings = np.flatnonzero(self._labels.categories == RATING)
        self._kept = kept

    # what the pipeline asks before it starts (each loads the model once)
    @property
    def device(self) -> str:
        return self._load().device

    @property
    def batch_limit(self) -> int:
        fixed = self._load().fixed_batch
        return fixed if fixed else SYMBOLIC_BATCH_LIMIT

    @property
    def input_size(self) -> int:
        return self._load().size

    @property
    def labels(self) -> Labels:
        return self._labels

    def prepare(self, image: Image.Image) -> np.ndarray:
        """The model's input for one picture: centred on a white square, resized (bicubic), BGR float32 0–255."""
        square = np.asarray(white_square(image if image.mode == "RGB" else image.convert("RGB"), self.input_size))
        bgr = np.empty(square.shape, np.float32)  # channel by channel: ~3x faster than a reversed-stride copy
        bgr[..., 0], bgr[..., 1], bgr[..., 2] = square[..., 2], square[..., 1], square[..., 0]
        return bgr

    def predict(self, batch: np.ndarray) -> list[ImageTags]:
        """Tags for each row of a stacked batch of `prepare` outputs, in the same order."""
        return [self.tags_from_scores(row) for row in self.scores(batch)]

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """The model's raw probabilities, `[len(batch), len(labels)]`; batches larger than the model takes are
        run in pieces (one image at a time for models fixed to batch 1)."""
        model = self._load()
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != (model.size, model.size, 3):
            raise ValueError(f"expected a batch shaped [N, {model.size}, {model.size}, 3], got {list(batch.shape)}")
        batch = batch.astype(model.input_dtype, copy=False)
        step = model.fixed_batch or SYMBOLIC_BATCH_LIMIT
        pieces = []
        for start in range(0, len(batch), step):
            piece = batch[start:start + step]
            n = len(piece)
            if model.fixed_batch and n < model.fixed_batch:  # a file fixed to batch k > 1: pad, then drop
                piece = np.concatenate([piece, np.zeros((model.fixed_batch - n, *piece.shape[1:]), piece.dtype)])
            pieces.append(np.asarray(model.session.run(None, {model.input_name: piece})[0])[:n])
        scores = np.concatenate(pieces) if pieces else np.zeros((0, len(self._labels.names)), np.float32)
        if scores.shape[1:] != (len(self._labels.names),):
            raise LorakitError(f"The WD14 model in {self.folder} gives {scores.shape[1:]} scores per image but "
                               f"selected_tags.csv lists {len(self._labels.names)} tags: the two files belong to "
                               "different models; download both again.")
        return scores.astype(np.float32, copy=False)

    def tags_from_scores(self, row: np.ndarray) -> ImageTags:
        """Threshold one image's scores: character tags by score, then general tags by score, then the rating."""
        o = self.options
        found = [*self._ranked(row, np.flatnonzero(self._character & (row >= o.character_threshold)), CHARACTER),
                 *self._ranked(row, np.flatnonzero(self._general & (row >= o.general_threshold)), GENERAL)]
        if o.include_rating and self._ratings.size:
            best = int(self._ratings[np.argmax(row[self._ratings])])  # ties: the first row of the csv
            if self._kept[best]:  # an excluded top rating is dropped, not replaced by a less likely one
                found.append(TagScore(tag=self._shown[best], score=float(row[best]), category="rating"))
        return ImageTags(tags=tuple(found))

    def _ranked(self, row: np.ndarray, indices: np.ndarray, category: int) -> list[TagScore]:
        order = sorted(indices.tolist(), key=lambda i: (-float(row[i]), i))
        return [TagScore(tag=self._shown[i], score=float(row[i]), category=CATEGORY_NAMES[category]) for i in order]

    def unload(self) -> None:
        """Drop the onnxruntime session (and its memory); the next use loads it again."""
        with self._lock:
            self._model = None

    # --- loading ------------------------------------------------------------------------------------------------

    def _load(self) -> _Model:
        with self._lock:
            if self._model is None:
                self._model = self._open_session()
            return self._model

    def _open_session(self) -> _Model:
        try:
            import onnxruntime as ort
        except ImportError:
            raise LorakitError("WD14 tagging needs onnxruntime: install onnxruntime (or onnxruntime-gpu for an "
                               "NVIDIA GPU) into the Python that runs Train Style.") from None
        path = self.folder / "model.onnx"
        options = ort.SessionOptions()
        # idle onnxruntime threads would otherwise spin and take the cores the image decoders need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = list(self._providers or _default_providers(ort.get_available_providers()))
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind error types for bad and missing files
            raise LorakitError(f"Cannot load the WD14 model {path} ({_first_line(e)}). The file may be incomplete "
                               f"or not an ONNX model: delete {self.folder} to download it again, or place a "
                               "complete model.onnx there.") from e
        model = _describe(session, path)
        log.info("WD14 model %s loaded on %s (input %d px, batch %s)", self.name, model.device, model.size,
                 model.fixed_batch or "any")
        return model


def white_square(image: Image.Image, size: int) -> Image.Image:
    """An RGB picture centred on a white square (padding split as sd-scripts and SmilingWolf do: the odd pixel
    goes after), resized bicubic to `size`×`size`."""
    width, height = image.size
    side = max(width, height)
    if side == size and width == height:
        return image
    if width > height:
        return _pad_rows_and_resize(image, size)
    if width != height:
        square = Image.new("RGB", (side, side), WHITE)
        square.paste(image, ((side - width) // 2, (side - height) // 2))
        image = square
    return image if side == size else image.resize((size, size), Image.Resampling.BICUBIC)


def _pad_rows_and_resize(image: Image.Image, size: int) -> Image.Image:
    """The same pixels as padding a landscape picture to a white square and resizing it (bicubic), for less work.

    Pillow resizes in two passes, rows first, each rounded to 8 bits: the row pass of a white padding row is
    one constant row, so only the picture's own rows need it; the column pass then runs on the assembled
    intermediate exactly as it would inside the one-step resize. Skips the square canvas and a quarter of
    the row pass for a 4:3 photo (tests compare against the plain computation pixel for pixel).
    """
    width, height = image.size
    rows = image.resize((size, height), Image.Resampling.BICUBIC)
    white = Image.new("RGB", (width, 1), WHITE).resize((size, 1), Image.Resampling.BICUBIC)
    tall = white.resize((size, width), Image.Resampling.NEAREST)
    tall.paste(rows, (0, (width - height) // 2))
    return tall.resize((size, size), Image.Resampling.BICUBIC)


def _default_providers(available: Sequence[str]) -> list[str]:
    """CUDA first when this onnxruntime has it (onnxruntime-gpu), CPU always as the fallback."""
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def _describe(session: Any, path: Path) -> _Model:
    """Read size, batch and device from a session; a model that does not look like a WD14 tagger is refused."""
    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    ok = len(shape) == 4 and shape[3] == 3 and isinstance(shape[1], int) and shape[1] == shape[2] and shape[1] > 0
    if not ok:
        raise LorakitError(f"{path} is not a WD14 tagger: its input is shaped {shape}, expected "
                           "[batch, size, size, 3] (NHWC, BGR)")
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
    if inp.type not in dtypes:
        raise LorakitError(f"{path} is not a WD14 tagger: its input is {inp.type}, expected float")
    batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    first = session.get_providers()[0]
    device = {"CUDAExecutionProvider": "CUDA (onnxruntime-gpu)", "CPUExecutionProvider": "CPU (onnxruntime)"}.get(
        first, f"{first.removesuffix('ExecutionProvider')} (onnxruntime)")
    return _Model(session=session, input_name=inp.name, input_dtype=dtypes[inp.type], size=shape[1],
                  fixed_batch=batch, device=device)


def _first_line(e: BaseException) -> str:
    text = (str(e) or type(e).__name__).strip().splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."
