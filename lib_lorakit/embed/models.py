"""Embedders from a spec: open_clip by `MODEL[:PRETRAINED]`, or `path/to/config.json:path/to/weights`.

The loading is the CLIP tagger's (taggers/clip.py): the same torchvision workaround, the same weights cache and
download messages, the same preprocessing. open_clip and torch are imported on first use, never at import time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from ..errors import LorakitError, NotFound
from ..taggers.clip import (
    ClipOptions,
    _autocast,
    _check_model,
    _eval_transform,
    _fetch_weights,
    _local_file,
    _open_clip,
    _weights_label,
)

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "ViT-B-32:laion2b_s34b_b79k"  # open_clip's ViT-B/32 (~600 MB, 224 px): fast enough on a CPU
EMBED_BATCH_LIMIT = 64


def parse_spec(spec: str) -> tuple[str, str, Optional[Path]]:
    """(model name, pretrained tag or weights path, model config file or None) from an embedder spec.

    `ViT-B-32` → open_clip's default weights for it are not guessed: a bare name means `openai` weights.
    `a/b.json:c/d.pt` → the config's stem is the model name and the weights are a file."""
    text = str(spec or "").strip()
    if not text:
        text = DEFAULT_EMBEDDER
    head, sep, tail = text.partition(".json:")
    if sep:
        config = Path(head + ".json").expanduser()
        if not tail.strip():
            raise LorakitError(f"Embedder {spec!r}: the weights file after the config is missing "
                               "(path/to/config.json:path/to/weights).")
        return config.stem, tail.strip(), config
    if text.endswith(".json"):
        raise LorakitError(f"Embedder {spec!r}: a model config needs its weights too: "
                           "path/to/config.json:path/to/weights.")
    if text.startswith("hf-hub:"):
        return text, "", None
    model, _, pretrained = text.partition(":")
    return model.strip(), (pretrained.strip() or "openai"), None


class OpenClipEmbedder:
    """The image (and text) tower of an open_clip model; implements `lib_lorakit.embed.Embedder`.

    Besides the protocol it offers the split the batched pipeline uses: `prepare` (CPU, thread-safe, no model)
    and `embed_prepared` (a stacked batch through the model).
    """

    batch_limit = EMBED_BATCH_LIMIT

    def __init__(self, model: str, pretrained: str, *, cache_dir: Path, config_file: Optional[Path] = None,
                 download: bool = True, device: Optional[str] = None):
        if config_file is not None and not config_file.is_file():
            raise NotFound(f"No open_clip model config at {config_file}.")
        if pretrained and "/" in pretrained and _local_file(pretrained) is None:
            raise NotFound(f"No weights file at {pretrained}.")
        self.options = ClipOptions(model=model, pretrained=pretrained or "openai")
        self.config_file = config_file
        self.cache_dir = Path(cache_dir)
        self.download = download
        self.id = _embedder_id(model, pretrained or "openai")
        self._requested_device = device
        self._lock = threading.Lock()
        self._transform_lock = threading.Lock()
        self._preprocess = None
        self._model: Any = None
        self._tokenizer: Any = None

    # --- the protocol -------------------------------------------------------------------------------------------
    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        return self.embed_prepared(np.stack([self.prepare(im) for im in images]))

    def embed_texts(self, texts: list[str]) -> np.ndarray | None:
        import torch

        model, dev = self._ensure_loaded()
        with torch.no_grad(), _autocast(torch, dev):
            features = model.encode_text(self._tokenizer(list(texts)).to(dev)).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy().astype(np.float32)

    # --- the pipeline's split -----------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        return self._torch_device().type.upper()

    @property
    def input_size(self) -> int:
        open_clip = self._library()
        size = open_clip.get_model_config(self.options.model)["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else max(size))

    def prepare(self, image: Image.Image) -> np.ndarray:
        with self._transform_lock:
            if self._preprocess is None:
                self._preprocess = _eval_transform(self._library(), self.options)
        return np.ascontiguousarray(self._preprocess(image).numpy(), dtype=np.float32)

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        import torch

        model, dev = self._ensure_loaded()
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(dev)
        with torch.no_grad(), _autocast(torch, dev):
            features = model.encode_image(x).float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy().astype(np.float32)

    def unload(self) -> None:
        with self._lock:
            self._model = None

    # --- inside -------------------------------------------------------------------------------------------------
    def _library(self):
        open_clip = _open_clip()
        if self.config_file is not None and self.options.model not in open_clip.list_models():
            open_clip.add_model_config(self.config_file)
        return open_clip

    def _torch_device(self):
        import torch

        return torch.device(self._requested_device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _ensure_loaded(self):
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model, self._torch_device()

    def _load(self):
        open_clip = self._library()
        opts = self.options
        _check_model(open_clip, opts.model)
        if not self.download and _local_file(opts.pretrained) is None:
            _require_cached(open_clip, opts, self.cache_dir)
        cfg = _fetch_weights(open_clip, opts, self.cache_dir)
        dev = self._torch_device()
        log.info("loading the embedder %s on %s", self.id, dev)
        try:
            model = open_clip.create_model_and_transforms(
                opts.model, pretrained=str(_local_file(opts.pretrained) or opts.pretrained), device=dev,
                cache_dir=str(self.cache_dir), force_quick_gelu=bool(cfg.get("quick_gelu", False)))[0]
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            raise LorakitError(f"The embedder {self.id} could not be loaded: {e}. If the weights file is damaged, "
                               f"delete it from {self.cache_dir} to fetch it again.") from e
        model.eval()
        self._tokenizer = open_clip.get_tokenizer(opts.model)
        return model


def _embedder_id(model: str, pretrained: str) -> str:
    """Names the model and its weights; a local weights file also by its size and time, so that replacing the file
    never serves vectors of the old one."""
    local = _local_file(pretrained)
    if local is None:
        return f"open_clip/{model}/{pretrained}"
    st = local.stat()
    stamp = hashlib.sha256(f"{local.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"open_clip/{model}/{_weights_label(pretrained)}#{stamp}"


def _require_cached(open_clip, opts: ClipOptions, cache_dir: Path) -> None:
    """With downloads off, weights that are not in the cache are an error that says how to get them."""
    cfg = open_clip.get_pretrained_cfg(opts.model, opts.pretrained) or {}
    hub = cfg.get("hf_hub") or ""
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, name = os.path.split(hub)
        for filename in (name, "open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if not filename:
                continue
            found = try_to_load_from_cache(repo, filename, cache_dir=str(cache_dir))
            if isinstance(found, str):
                return
    elif cfg.get("url") and (Path(cache_dir) / Path(cfg["url"]).name).is_file():
        return
    raise LorakitError(f"The embedder weights {opts.pretrained!r} for {opts.model} are not downloaded yet and "
                       f"downloading is off here. Run `python -m lib_lorakit embed PROJECT --embedder "
                       f"{opts.model}:{opts.pretrained}` once to fetch them into {cache_dir}.")


def embedder_from_spec(spec: str, models_root: Path, *, download: bool = True) -> OpenClipEmbedder:
    """An embedder from `MODEL[:PRETRAINED]` or `path/to/config.json:path/to/weights`; nothing loads until used.

    Weights of a named model are kept in `models_root` (shared with the CLIP tagger) and fetched there on first
    use unless `download` is false."""
    model, pretrained, config = parse_spec(spec)
    return OpenClipEmbedder(model, pretrained, cache_dir=Path(models_root), config_file=config, download=download)
