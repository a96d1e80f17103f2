"""CLIP as a tagger: each image is ranked against vocabularies of terms (style, medium, lighting, colour grading,
camera angle, shot distance, gaze): the words booru taggers such as WD14 rarely give.

The vocabularies are plain text files, one term per line, copied on first use into a folder the user may edit
(`ensure_vocabularies`); a file that exists is never overwritten. Within a category the terms compete: the
image's cosine similarity to each term, times the model's logit scale, goes through a softmax, and the best
`top_k` terms scoring at least `min_score` are kept.

open_clip (and torch) are imported on first use. The code keeps to the open_clip API that 2.20.0 (the webui's
pin) and 2.32.0 share: `list_models`, `get_model_config`, `get_pretrained_cfg`, `list_pretrained_tags_by_model`,
`download_pretrained`, `create_model_and_transforms`, `get_tokenizer`, `image_transform`.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from ..captions.tags import dedupe, split_tags
from ..dataset.captions_io import decode_caption
from ..errors import LorakitError, NotFound
from ..fsutil import atomic_copy, atomic_write_bytes
from ..schema import Field
from .base import ImageTags, TagScore

logger = logging.getLogger(__name__)

DEFAULT_VOCAB_DIR = Path(__file__).with_name("vocab")
# The categories shipped with Train Style, in the order their tags appear in a caption; a user's own vocabulary
# files (any other `<name>.txt`) follow in alphabetical order.
DEFAULT_CATEGORIES = ("style", "medium", "lighting", "colour grading", "camera angle", "shot distance", "gaze")
# The text each term is encoded as. The bare term: it is exactly what lands in the caption, and SD's text
# encoder (SD1 uses this very CLIP ViT-L/14 text tower) will read it bare, so the ranking measures how well the
# caption's words match the picture. A shared prefix ("a picture, …") shifts every term of a category alike
# and so changes little in a softmax that only compares them; "a photo of …" would pull drawings towards
# photographic terms.
DEFAULT_PROMPT = "{term}"
_TEXT_CHUNK = 256  # terms encoded per forward pass


class ClipOptionsError(LorakitError, ValueError):
    """A CLIP tagger setting with a value it cannot take; the message names the setting and the value."""


# --- vocabularies ------------------------------------------------------------------------------------------------

def category_of(path: Path) -> str:
    """`colour_grading.txt` → `colour grading`."""
    return " ".join(Path(path).stem.replace("_", " ").split())


def vocabulary_file(folder: Path, category: str) -> Path:
    """Where a category's terms live: `colour grading` → `<folder>/colour_grading.txt`."""
    return Path(folder) / (category.replace(" ", "_") + ".txt")


def ensure_vocabularies(dest: Path) -> Path:
    """Copy the default vocabulary files into `dest` (created if needed); files already there are kept as they are,
    so the user's edits win, and a default file that is missing (new, or deleted by the user) is added."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(DEFAULT_VOCAB_DIR.glob("*.txt")):
        target = dest / src.name
        if not target.exists():
            atomic_copy(src, target)
            logger.info("added the default vocabulary %s", target)
    return dest


def parse_vocabulary(text: str) -> tuple[str, ...]:
    """The terms of a vocabulary file: one a line, `#` starts a comment, blank lines ignored, repeats dropped.

    A line holding commas gives one term per piece, since a comma would split the term in a caption anyway."""
    terms: list[str] = []
    for line in text.splitlines():
        terms += split_tags(line.split("#", 1)[0])
    return tuple(dedupe(terms))


def load_vocabularies(folder: Path) -> dict[str, tuple[str, ...]]:
    """Every `<category>.txt` in `folder`: the default categories first in their order, then the user's own.

    A file that is not UTF-8 is read as Windows-1252 (or Latin-1) with a warning; a category without terms is
    skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFound(f"The vocabulary folder {folder} does not exist.")
    vocab: dict[str, tuple[str, ...]] = {}
    for path in sorted(folder.glob("*.txt"), key=_file_order):
        category = category_of(path)
        terms = _read_terms(path)
        if not terms:
            logger.warning("The vocabulary %s has no terms; the category %r is skipped.", path, category)
            continue
        if category in vocab:
            logger.warning("%s repeats the category %r; its terms are added to it.", path, category)
            terms = tuple(dedupe(vocab[category] + terms))
        vocab[category] = terms
    return vocab


def _file_order(path: Path) -> tuple[int, str]:
    category = category_of(path)
    rank = DEFAULT_CATEGORIES.index(category) if category in DEFAULT_CATEGORIES else len(DEFAULT_CATEGORIES)
    return rank, path.name.lower()


def _read_terms(path: Path) -> tuple[str, ...]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LorakitError(f"Cannot read the vocabulary file {path}: {e.strerror or e}.") from e
    decoded = decode_caption(data)
    if decoded.fallback:
        logger.warning("The vocabulary %s is not UTF-8; it was read as %s. Save it as UTF-8 to be sure of its "
                       "accents.", path, decoded.encoding)
    return parse_vocabulary(decoded.text)


# --- options -----------------------------------------------------------------------------------------------------

# declared once for the CLI, the API and the Captions panel (captions/service.py TAG_SCHEMA, `clip_` + the name)
CLIP_FIELDS: tuple[Field, ...] = (
    Field(name="clip_model", type=str, default="ViT-L-14", group="clip", label="CLIP model",
          reason="An open_clip model name, or the path of an open_clip model config (<name>.json)."),
    Field(name="clip_pretrained", type=str, default="openai", group="clip", label="CLIP weights",
          reason="An open_clip weights tag (openai, laion2b_s32b_b82k, …) or the path of a checkpoint file."),
    Field(name="clip_top_k", type=int, default=1, minimum=1, maximum=100, group="clip", label="Terms per category",
          reason="Terms kept per vocabulary category, best first."),
)
_CLIP = {f.name: f.default for f in CLIP_FIELDS}


@dataclass(frozen=True)
class ClipOptions:
    """What the CLIP tagger runs and how many terms it keeps.

    `model` is an open_clip model name, or the path of an open_clip model config (`<name>.json`) for an
    architecture open_clip does not ship. `pretrained` is an open_clip weights tag (`openai`,
    `laion2b_s32b_b82k`, …) or the path of a checkpoint file. `categories` None means every vocabulary in the
    folder. `top_k` terms are kept per category, each only if its score (the softmax within its category, 0–1)
    is at least `min_score`.
    """

    model: str = _CLIP["clip_model"]
    pretrained: str = _CLIP["clip_pretrained"]
    categories: Optional[tuple[str, ...]] = None
    top_k: int = _CLIP["clip_top_k"]
    min_score: float = 0.0
    prompt: str = DEFAULT_PROMPT

    def __post_init__(self) -> None:
        for name in ("model", "pretrained", "prompt"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ClipOptionsError(f"clip.{name}: expected a non-empty text, got {value!r}")
        if "{term}" not in self.prompt:
            raise ClipOptionsError(f"clip.prompt: must contain {{term}} where the term goes, got {self.prompt!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ClipOptionsError(f"clip.top_k: expected an integer ≥ 1, got {self.top_k!r}")
        score = self.min_score
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
            raise ClipOptionsError(f"clip.min_score: expected a number from 0 to 1, got {score!r}")
        object.__setattr__(self, "min_score", float(score))
        object.__setattr__(self, "categories", _check_categories(self.categories))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipOptions:
        """Options from settings (JSON/TOML); unknown keys are refused, missing ones take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ClipOptionsError(f"clip: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["categories"] = None if self.categories is None else list(self.categories)
        return data


def _check_categories(value: Any) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ClipOptionsError(f"clip.categories: expected a list of category names or none, got {value!r}")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip():
            raise ClipOptionsError(f"clip.categories[{i}]: expected a category name, got {name!r}")
    if not value:
        raise ClipOptionsError("clip.categories: the list is empty; leave it out to use every category")
    return tuple(dict.fromkeys(" ".join(n.replace("_", " ").split()) for n in value))


# --- the tagger --------------------------------------------------------------------------------------------------

@dataclass
class _Category:
    name: str
    terms: tuple[str, ...]
    embeddings: Any  # torch.Tensor [terms, dim], L2-normalised, on the model's device


@dataclass
class _Loaded:
    model: Any
    torch_device: Any
    logit_scale: float
    categories: tuple[_Category, ...]


class CLIPTagger:
    """open_clip ranking vocabulary terms against images; implements `lib_lorakit.taggers.base.Tagger`.

    The model, its weights (from `cache_dir`, downloaded there on first use) and the text embeddings of every
    term load on the first `predict` and stay until `unload`; the vocabulary folder is read again at each load,
    so edits apply from the next batch of work.
    """

    batch_limit = 64

    def __init__(self, options: Optional[ClipOptions] = None, *, vocab_dir: Path, cache_dir: Path,
                 device: Optional[str] = None) -> None:
        self.options = options or ClipOptions()
        self._config_file: Optional[Path] = None
        if self.options.model.endswith(".json"):  # an architecture of one's own: open_clip's config format
            self._config_file = Path(self.options.model).expanduser()
            if not self._config_file.is_file():
                raise NotFound(f"No open_clip model config at {self._config_file}.")
            self.options = replace(self.options, model=self._config_file.stem)
        self.vocab_dir = Path(vocab_dir)
        self.cache_dir = Path(cache_dir)
        self.name = f"{self.options.model}/{_weights_label(self.options.pretrained)}"
        self._requested_device = device
        self._lock = threading.Lock()  # guards loading and unloading the model
        self._transform_lock = threading.Lock()  # apart, so that preparing images never waits for a load
        self._preprocess = None
        self._loaded: Optional[_Loaded] = None

    @property
    def device(self) -> str:
        """What runs the model, for the user: `CPU` or `CUDA (<GPU name>)`."""
        dev = self._torch_device()
        if dev.type == "cuda":
            import torch

            return f"CUDA ({torch.cuda.get_device_name(dev)})"
        return dev.type.upper()

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def vocabulary(self) -> dict[str, tuple[str, ...]]:
        """The terms this tagger offers, by category in caption order: the folder's files, filtered by the options."""
        vocab = load_vocabularies(ensure_vocabularies(self.vocab_dir))
        wanted = self.options.categories
        if wanted is None:
            chosen = vocab
        else:
            missing = [c for c in wanted if c not in vocab]
            if missing:
                raise NotFound(f"No vocabulary with terms for {', '.join(map(repr, missing))} in {self.vocab_dir}; "
                               f"there are: {', '.join(vocab) or 'none'}. Add "
                               f"{vocabulary_file(self.vocab_dir, missing[0]).name} (one term a line) or change "
                               "the chosen categories.")
            chosen = {c: terms for c, terms in vocab.items() if c in wanted}
        if not chosen:
            raise LorakitError(f"The vocabulary folder {self.vocab_dir} has no terms to rank; add some, one a line.")
        return chosen

    def prepare(self, image: Image.Image) -> np.ndarray:
        """open_clip's own evaluation preprocessing (resize, centre crop, normalise) as float32 CHW; thread-safe and
        needs no model."""
        return np.ascontiguousarray(self._transform()(image).numpy(), dtype=np.float32)

    def predict(self, batch: np.ndarray) -> list[ImageTags]:
        """The best terms of each category for each prepared image in `batch` ([N, 3, H, W])."""
        import torch

        if len(batch) == 0:
            return []
        state = self._ensure_loaded()
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(state.torch_device)
        found: list[list[TagScore]] = [[] for _ in range(len(batch))]
        with torch.no_grad():
            with _autocast(torch, state.torch_device):
                features = state.model.encode_image(x)
            features = torch.nn.functional.normalize(features.float(), dim=-1)
            for category in state.categories:
                probs = torch.softmax(state.logit_scale * features @ category.embeddings.T, dim=-1).cpu().numpy()
                for i, row in enumerate(probs):
                    found[i] += self._best(category, row)
        return [ImageTags(tags=tuple(tags)) for tags in found]

    def unload(self) -> None:
        """Drop the model and the text embeddings (and CUDA's cached memory); the next `predict` loads again."""
        with self._lock:
            state, self._loaded = self._loaded, None
        if state is None:
            return
        on_cuda = state.torch_device.type == "cuda"
        del state
        if on_cuda:
            import torch

            torch.cuda.empty_cache()
        logger.info("unloaded CLIP %s", self.name)

    # --- inside ---

    def _best(self, category: _Category, scores: np.ndarray) -> list[TagScore]:
        order = np.argsort(-scores, kind="stable")[: self.options.top_k]
        return [TagScore(tag=category.terms[j], score=float(scores[j]), category=category.name)
                for j in order if scores[j] >= self.options.min_score]

    def _torch_device(self):
        import torch

        wanted = self._requested_device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(wanted)
        except (RuntimeError, ValueError) as e:
            raise LorakitError(f"Unknown device {wanted!r} for CLIP: use cpu, cuda or cuda:<n>.") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise LorakitError(f"CLIP was asked to run on {wanted!r}, but torch sees no CUDA GPU here; use cpu.")
        return dev

    def _transform(self):
        with self._transform_lock:
            if self._preprocess is None:
                self._preprocess = _eval_transform(self._library(), self.options)
            return self._preprocess

    def _library(self):
        """open_clip, with the model config file of the options registered (it names the model by its stem)."""
        open_clip = _open_clip()
        if self._config_file is not None and self.options.model not in open_clip.list_models():
            open_clip.add_model_config(self._config_file)
        return open_clip

    def _ensure_loaded(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> _Loaded:
        # 1. the library and the model's name; 2. the weights, fetched into the cache on first use; 3. the model;
        # 4. every term's text embedding, once per load
        open_clip = self._library()
        opts = self.options
        _check_model(open_clip, opts.model)
        pretrained_cfg = _fetch_weights(open_clip, opts, self.cache_dir)
        vocab = self.vocabulary()
        dev = self._torch_device()
        logger.info("loading CLIP %s on %s", self.name, dev)
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                opts.model, pretrained=str(_local_file(opts.pretrained) or opts.pretrained), device=dev,
                cache_dir=str(self.cache_dir), force_quick_gelu=bool(pretrained_cfg.get("quick_gelu", False)))
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            raise LorakitError(f"CLIP {self.name} could not be loaded: {e}. If the weights file is damaged, delete "
                               f"it from {self.cache_dir} to fetch it again.") from e
        model.eval()
        tokenizer = open_clip.get_tokenizer(opts.model)
        cache = _EmbeddingCache(self.cache_dir / "text-embeddings", opts, open_clip)
        categories = tuple(_Category(name, terms, cache.get(terms, lambda t: _embed(model, tokenizer, t,
                                                                                    opts.prompt, dev), dev))
                           for name, terms in vocab.items())
        return _Loaded(model=model, torch_device=dev, logit_scale=float(model.logit_scale.exp().item()),
                       categories=categories)


def _weights_label(pretrained: str) -> str:
    """`openai` stays `openai`; a checkpoint path shows as its file name."""
    looks_like_path = _local_file(pretrained) is not None or "/" in pretrained or "\\" in pretrained
    return Path(pretrained).name if looks_like_path else pretrained


def _open_clip():
    """open_clip, imported on first use (after the torchvision workaround it may need)."""
    from ..torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    try:
        import open_clip
    except ImportError as e:
        raise LorakitError(f"The CLIP tagger needs open_clip, which cannot be imported ({e}). Install it with "
                           "`pip install open_clip_torch` in the Python environment Train Style runs in.") from e
    return open_clip


def _check_model(open_clip, model: str) -> None:
    if model not in open_clip.list_models():
        names = ", ".join(n for n in open_clip.list_models() if n.startswith(("ViT-B", "ViT-L", "ViT-H")))
        raise LorakitError(f"open_clip has no model named {model!r}. Some it has: {names}.")


def _local_file(pretrained: str) -> Optional[Path]:
    path = Path(pretrained).expanduser()
    return path if path.is_file() else None


def _fetch_weights(open_clip, opts: ClipOptions, cache_dir: Path) -> dict[str, Any]:
    """Make sure the weights are on disk (a local checkpoint, or the tag's file in `cache_dir`); their open_clip
    description (empty for a local file). Failing to fetch is the user's to fix, so the error says how."""
    if _local_file(opts.pretrained):
        return {}
    cfg = open_clip.get_pretrained_cfg(opts.model, opts.pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(opts.model)) or "none"
        raise LorakitError(f"{opts.pretrained!r} is neither a checkpoint file nor weights open_clip knows for "
                           f"{opts.model} (known: {tags}).")
    try:
        path = open_clip.download_pretrained(cfg, cache_dir=str(cache_dir))
    except Exception as e:  # network, hub, offline mode, checksum: all mean "not fetched"
        raise LorakitError(_fetch_failed(open_clip, opts, cfg, cache_dir, f"{type(e).__name__}: {e}")) from e
    if not path:
        reason = "open_clip has no download address for them"
        raise LorakitError(_fetch_failed(open_clip, opts, cfg, cache_dir, reason))
    return cfg


def _fetch_failed(open_clip, opts: ClipOptions, cfg: dict[str, Any], cache_dir: Path, reason: str) -> str:
    """What could not be fetched, from where, where it belongs, and how to put it there by hand."""
    hub_id, hub_file = os.path.split(cfg.get("hf_hub") or "")
    hub_page = f"https://huggingface.co/{hub_id}" if hub_id else ""
    sources = " or ".join(s for s in (hub_page, cfg.get("url")) if s) or "their source"
    if hub_page:
        # a plain state dict, which every open_clip loads from a path; the tag's QuickGELU flag goes with the tag
        quick = f"{opts.model}-quickgelu"
        trained_quick = cfg.get("quick_gelu") or opts.pretrained.lower() == "openai"
        needs_quick = trained_quick and quick in open_clip.list_models()
        by_hand = (f"download {hub_file or 'open_clip_pytorch_model.bin'} from {hub_page} and set the CLIP weights to "
                   f"that file's path" + (f" and the CLIP model to {quick}" if needs_quick else ""))
    else:
        by_hand = f"download {cfg['url']} and save it as {Path(cache_dir) / os.path.basename(cfg['url'])}"
    return (f"The CLIP weights {opts.pretrained!r} for {opts.model} could not be fetched from {sources} "
            f"({reason.splitlines()[0] if reason.strip() else 'no reason given'}). They belong in {cache_dir}: "
            f"connect to the internet once (with HF_HUB_OFFLINE unset) so they download there, or {by_hand}.")


def _eval_transform(open_clip, opts: ClipOptions):
    """The evaluation transform `create_model_and_transforms` would give, built from the configs alone."""
    _check_model(open_clip, opts.model)
    model_cfg = open_clip.get_model_config(opts.model)
    pretrained_cfg = {} if _local_file(opts.pretrained) else open_clip.get_pretrained_cfg(opts.model, opts.pretrained)
    accepted = inspect.signature(open_clip.image_transform).parameters
    # 2.32 also records the interpolation and resize mode of some weights; 2.20 knows neither
    extra = {k: pretrained_cfg[k] for k in ("interpolation", "resize_mode", "fill_color")
             if pretrained_cfg.get(k) is not None and k in accepted}
    return open_clip.image_transform(model_cfg["vision_cfg"]["image_size"], is_train=False,
                                     mean=pretrained_cfg.get("mean"), std=pretrained_cfg.get("std"), **extra)


def _embed(model, tokenizer, terms: tuple[str, ...], prompt: str, dev):
    """L2-normalised text embeddings of `terms` ([len(terms), dim]) on `dev`."""
    import torch

    chunks = []
    texts = [prompt.replace("{term}", t) for t in terms]
    with torch.no_grad(), _autocast(torch, dev):
        for start in range(0, len(texts), _TEXT_CHUNK):
            tokens = tokenizer(texts[start:start + _TEXT_CHUNK]).to(dev)
            chunks.append(model.encode_text(tokens).float())
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


class _EmbeddingCache:
    """Text embeddings of vocabulary terms kept on disk, so a load after the first costs no text encoding (ViT-L
    on a CPU spends ~12 s on the default vocabularies). Keyed by everything that shapes an embedding: the model,
    its weights (a local file by path, size and time), the prompt, the terms and open_clip's version."""

    def __init__(self, folder: Path, opts: ClipOptions, open_clip: Any):
        self.folder = folder
        local = _local_file(opts.pretrained)
        weights = f"{local.resolve()}:{local.stat().st_size}:{local.stat().st_mtime_ns}" if local else opts.pretrained
        self.base = {"model": opts.model, "weights": weights, "prompt": opts.prompt,
                     "open_clip": getattr(open_clip, "__version__", "")}

    def get(self, terms: tuple[str, ...], compute: Callable[[tuple[str, ...]], Any], dev: Any) -> Any:
        import torch

        key = hashlib.sha256(json.dumps({**self.base, "terms": list(terms)}).encode()).hexdigest()[:32]
        path = self.folder / f"{key}.npy"
        try:
            array = np.load(path, allow_pickle=False)
            if array.shape[0] == len(terms):
                return torch.from_numpy(array).to(dev)
        except (OSError, ValueError):
            pass  # absent or damaged: computed again below
        embeddings = compute(terms)
        buffer = io.BytesIO()
        np.save(buffer, embeddings.float().cpu().numpy(), allow_pickle=False)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as e:
            logger.warning("could not keep CLIP text embeddings in %s: %s", self.folder, e)
        return embeddings


def _autocast(torch, dev):
    """Half precision on CUDA (twice the throughput, scores equal to ~1e-3); exact float32 on CPU."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", enabled=False)
