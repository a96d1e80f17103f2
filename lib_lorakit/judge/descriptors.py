"""Copy-detection descriptors: `sscd`, `clip` and `perceptual`, each an `embed.Embedder` with its copy threshold.

* `sscd` — Meta's SSCD (Pizzi et al., "A Self-Supervised Descriptor for Image Copy Detection", CVPR 2022), the
  `sscd_disc_mixup` ResNet-50 released as TorchScript (facebookresearch/sscd-copy-detection, README "Pretrained
  models"). Input: the image resized to a 320 × 320 square (the README's `skew_320`: bilinear, aspect not kept,
  which batches well), scaled to 0…1 and normalised with ImageNet's mean and std; output: 512 floats, L2-normalised.
  Downloaded once into `<models>/sscd/`; `sscd:/path/to/file.pt` loads a local file instead.
* `clip` — the project's CLIP image embedder, as given.
* `perceptual` — computed from the pixels with numpy alone: no download, no torch (the fallback).

The perceptual descriptor, three parts, each L2-normalised before they are weighted and joined:
  1. layout: the image squeezed to 64 × 64 grey (box filter), contrast-normalised (zero mean, unit std), its 2-D
     DCT; the 54 coefficients with u + v < 10 except DC, each scaled by (1 + u + v)^0.5 (flattens the 1/f fall-off
     of natural images, so a few low frequencies do not make every picture look alike);
  2. colour layout: the Cb and Cr planes at 4 × 4 (weight 0.35; a grey picture's faint chroma stays faint);
  3. palette: a soft (trilinear) 5 × 5 × 5 RGB histogram of a 32 × 32 reduction, square-rooted (Hellinger).
Cosine similarity of two descriptors is then a weighted mean of the three parts' cosines: the palette part barely
moves under crops and resizes, the layout part tells apart pictures that share a palette.

Measured (judge/descriptors.py at this version). (1) 22 of scikit-image 0.26's `skimage/data/*.png` photos — the
grey twin of chessboard_RGB and the right half of the motorcycle stereo pair left out, being near-copies themselves —
and 20 generated drawings of random shapes on a light background (256 px), every pair and every near-copy:
  different images (861 pairs)     highest 0.655 (drawing vs drawing), photos among themselves 0.643, p99 0.60
  resized to ½ / 2×                 lowest 0.980 / 0.998
  centre crop to 90 % of each side  lowest 0.767 (brick.png, a pure texture), 0.822 for the rest
  JPEG quality 70                   lowest 0.999
  colour shift (+12, −8, +10 RGB)   lowest 0.927
  brightness × 1.1                  lowest 0.865
(2) At a dataset's scale: 300 new drawings each against its nearest of 200 training drawings, and the near-copies
of all 200. A new drawing's nearest reaches 0.813 (256 px; 512 px: 0.818): at 0.75, 2.3 % of them (8.3 % at
512 px) would count as copies, at 0.80 0.3 % (2.3 %). Resizes, JPEG and colour shifts stay ≥ 0.93; 0.5 % of the
90 % crops (1 % at 512 px: a shape cut at the border) fall below 0.80, as below 0.75.
Threshold 0.80: every near-copy of (1) but the crop of a pure texture is flagged, no pair of different images is,
and a new picture rarely is. A 90 % crop taken from a corner (a 5 % shift as well as the zoom) is harder: lowest
0.46 (chessboard_RGB, whose pattern a shift changes entirely), 0.55 for the rest, so some go unflagged; `sscd` is
the descriptor for those.

Loading SSCD: `torch.jit.load` reads TorchScript with its own C++ deserialiser (code and tensors from the zip
archive; its data.pkl is read by torch's restricted C++ unpickler, which knows tensors and TorchScript types only),
not Python's pickle: loading runs no Python code from the file, and its forward is TorchScript run by torch's own
interpreter.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from ..embed import Embedder
from ..errors import LorakitError, NotFound
from ..fsutil import create_temp
from . import DESCRIPTORS, Descriptor

log = logging.getLogger(__name__)

# --- SSCD ---------------------------------------------------------------------------------------------------------
SSCD_URL = "https://dl.fbaipublicfiles.com/sscd-copy-detection/sscd_disc_mixup.torchscript.pt"
SSCD_FILE = "sscd_disc_mixup.torchscript.pt"
SSCD_FOLDER = "sscd"
SSCD_SIDE = 320
# Somepalli et al., "Diffusion Art or Digital Forgery?" (CVPR 2023), count a generation as a replica of a training
# image at SSCD similarity > 0.5, as does their "Understanding and Mitigating Copying in Diffusion Models" (NeurIPS
# 2023); the SSCD README gives 0.75 for copies at 90 % precision on DISC, so 0.5 errs on the side of flagging.
SSCD_THRESHOLD = 0.5
SSCD_BATCH_CPU = 8
SSCD_BATCH_GPU = 64
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DOWNLOAD_TIMEOUT_S = 60

# --- CLIP ---------------------------------------------------------------------------------------------------------
# CLIP image embeddings place different pictures of one subject or style at ~0.8–0.9 cosine and resized, recompressed
# or slightly cropped copies of one picture at ≥ 0.95 (ViT-B/32): 0.95 flags copies, not mere likeness.
CLIP_THRESHOLD = 0.95

# --- perceptual ---------------------------------------------------------------------------------------------------
PERCEPTUAL_THRESHOLD = 0.80  # measured: see the module docstring
PERCEPTUAL_VERSION = 1
_SIDE = 64  # the grey image the DCT reads
_BAND = 10  # DCT coefficients with u + v < _BAND (DC excluded)
_FLATTEN = 0.5  # each coefficient × (1 + u + v) ** _FLATTEN
_CHROMA_SIDE = 4
_CHROMA_WEIGHT = 0.35
_CHROMA_FLOOR = 0.05
_LEVELS = 5  # palette histogram: levels per RGB channel
_PALETTE_SIDE = 32
_PALETTE_WEIGHT = 1.0
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

UNITS = {"sscd": "cosine similarity of SSCD descriptors",
         "clip": "cosine similarity of CLIP image embeddings",
         "perceptual": "cosine similarity of perceptual descriptors (DCT layout, colour layout, palette)"}


class PerceptualDescriptor:
    """The pixels' own descriptor (see the module docstring): numpy only, deterministic, ~1 ms an image.

    All the work happens in `prepare` (the store's decoding threads); `embed_prepared` just stacks."""

    name = "perceptual"
    id = f"perceptual/v{PERCEPTUAL_VERSION}"
    threshold = PERCEPTUAL_THRESHOLD
    unit = UNITS["perceptual"]
    device = "CPU"
    batch_limit = 256
    input_size = 2 * _SIDE  # JPEGs may decode at reduced scale down to twice this

    def __init__(self) -> None:
        self._dct = _dct_matrix(_SIDE)
        u = np.arange(_BAND)
        band = np.add.outer(u, u)
        self._mask = band < _BAND
        self._mask[0, 0] = False
        self._scale = ((1.0 + band) ** _FLATTEN)[self._mask].astype(np.float32)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.embed_prepared(np.stack([self.prepare(im) for im in images])) if images else _empty(self.dim)

    def embed_texts(self, texts: list[str]) -> None:
        return None

    @property
    def dim(self) -> int:
        return int(self._mask.sum()) + 2 * _CHROMA_SIDE ** 2 + _LEVELS ** 3

    def prepare(self, image: Image.Image) -> np.ndarray:
        rgb = image.convert("RGB")
        parts = [_unit(self._layout(rgb)), _CHROMA_WEIGHT * _chroma(rgb), _PALETTE_WEIGHT * _unit(_palette(rgb))]
        return _unit(np.concatenate(parts).astype(np.float32))

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)

    def _layout(self, rgb: Image.Image) -> np.ndarray:
        grey = np.asarray(rgb.resize((_SIDE, _SIDE), Image.Resampling.BOX), dtype=np.float32) @ _LUMA / 255.0
        grey = (grey - grey.mean()) / (grey.std() + 1e-3)
        coefficients = self._dct @ grey @ self._dct.T
        return coefficients[:_BAND, :_BAND][self._mask] * self._scale


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: `D @ x` transforms a column, `D @ X @ D.T` an image."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def _chroma(rgb: Image.Image) -> np.ndarray:
    small = np.asarray(rgb.resize((_CHROMA_SIDE, _CHROMA_SIDE), Image.Resampling.BOX), dtype=np.float32) / 255.0
    luma = small @ _LUMA
    planes = np.concatenate([(small[..., 2] - luma).ravel(), (small[..., 0] - luma).ravel()])
    planes = planes - planes.mean()
    return planes / (np.linalg.norm(planes) + _CHROMA_FLOOR)  # a grey picture's faint chroma stays faint


def _palette(rgb: Image.Image) -> np.ndarray:
    """A soft RGB histogram (each pixel shared among the 8 nearest bins), square-rooted."""
    pixels = np.asarray(rgb.resize((_PALETTE_SIDE, _PALETTE_SIDE), Image.Resampling.BOX), dtype=np.float32)
    pos = pixels.reshape(-1, 3) / 255.0 * (_LEVELS - 1)
    low = np.floor(pos).clip(0, _LEVELS - 2)
    frac = pos - low
    low = low.astype(np.int64)
    hist = np.zeros(_LEVELS ** 3, dtype=np.float64)
    for corner in np.ndindex(2, 2, 2):
        step = np.array(corner)
        weight = np.prod(np.where(step, frac, 1.0 - frac), axis=1)
        idx = ((low[:, 0] + step[0]) * _LEVELS + low[:, 1] + step[1]) * _LEVELS + low[:, 2] + step[2]
        hist += np.bincount(idx, weights=weight, minlength=_LEVELS ** 3)
    return np.sqrt(hist / max(hist.sum(), 1e-12)).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-9 else v


def _empty(dim: int) -> np.ndarray:
    return np.zeros((0, dim), dtype=np.float32)


# --- SSCD ---------------------------------------------------------------------------------------------------------

class SscdDescriptor:
    """An SSCD TorchScript model (or any TorchScript file with SSCD's contract: [N, 3, H, W] ImageNet-normalised in,
    [N, D] out). Loaded on first use with `torch.jit.load` (TorchScript's C++ deserialiser, not pickle); on the GPU
    when torch sees one; batched."""

    name = "sscd"
    threshold = SSCD_THRESHOLD
    unit = UNITS["sscd"]
    input_size = SSCD_SIDE

    def __init__(self, path: Path, *, model_id: str, device: Optional[str] = None):
        self.path = Path(path)
        self.id = model_id
        self._requested_device = device
        self._lock = threading.Lock()
        self._model: Any = None

    @property
    def device(self) -> str:
        return self._torch_device().type.upper()

    @property
    def batch_limit(self) -> int:
        return SSCD_BATCH_CPU if self.device == "CPU" else SSCD_BATCH_GPU

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        if not images:
            return _empty(0)
        rows = [self.embed_prepared(np.stack([self.prepare(im) for im in images[i:i + self.batch_limit]]))
                for i in range(0, len(images), self.batch_limit)]
        return np.concatenate(rows)

    def embed_texts(self, texts: list[str]) -> None:
        return None

    def prepare(self, image: Image.Image) -> np.ndarray:
        """SSCD's `skew_320`: a bilinear resize to the square, 0…1, ImageNet normalisation; CHW float32."""
        square = image.convert("RGB").resize((SSCD_SIDE, SSCD_SIDE), Image.Resampling.BILINEAR)
        x = (np.asarray(square, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        import torch

        model, dev = self._ensure_loaded()
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(dev)
        with torch.inference_mode():
            out = model(x)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LorakitError(f"The SSCD model {self.path} returned {shape} for {x.shape[0]} images; an SSCD "
                               "descriptor model returns one row per image.")
        return torch.nn.functional.normalize(out.float(), dim=1).cpu().numpy().astype(np.float32)

    def unload(self) -> None:
        with self._lock:
            self._model = None

    def _torch_device(self):
        import torch

        return torch.device(self._requested_device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def _ensure_loaded(self):
        with self._lock:
            dev = self._torch_device()
            if self._model is None:
                import torch

                log.info("loading the SSCD descriptor %s on %s", self.path, dev)
                try:
                    with warnings.catch_warnings():  # torch ≥ 2.10 marks TorchScript deprecated; SSCD ships it
                        warnings.simplefilter("ignore", DeprecationWarning)
                        model = torch.jit.load(str(self.path), map_location=dev)
                except (RuntimeError, ValueError, OSError) as e:
                    raise LorakitError(f"The SSCD model {self.path} could not be loaded ({_first_line(e)}). If the "
                                       "file is damaged, delete it to fetch it again, or place a good copy of "
                                       f"{SSCD_FILE} from {SSCD_URL} there.") from e
                self._model = model.eval()
            return self._model, dev


def sscd_model_file(models_root: Path, *, download: bool = True, url: Optional[str] = None) -> Path:
    """`<models_root>/sscd/sscd_disc_mixup.torchscript.pt`, downloaded there on first use (to a temporary file
    beside it, renamed into place once complete). Every failure says where to place the file by hand."""
    url = url or SSCD_URL
    folder = Path(models_root) / SSCD_FOLDER
    target = folder / SSCD_FILE
    if target.is_file() and target.stat().st_size > 0:
        return target
    if not download:
        raise LorakitError(_by_hand(folder, url, "it is not downloaded yet and downloading is off"))
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(folder, prefix=f".{SSCD_FILE}.", suffix=".download")
    log.info("downloading the SSCD copy-detection model from %s into %s", url, folder)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as answer:  # noqa: S310
            while chunk := answer.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if os.path.getsize(tmp) == 0:
            raise OSError("the server sent an empty file")
        os.replace(tmp, target)
    except (OSError, urllib.error.URLError, ValueError) as e:
        raise LorakitError(_by_hand(folder, url, f"downloading it failed ({_first_line(e)})")) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _by_hand(folder: Path, url: str, why: str) -> str:
    return (f"The SSCD copy-detection model is not available: {why}. Download {url} and place it in {folder} as "
            f"{SSCD_FILE} (or give a local file as sscd:/path/to/{SSCD_FILE}).")


def _first_line(e: BaseException) -> str:
    text = (str(e) or type(e).__name__).strip().splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."


def _local_id(path: Path) -> str:
    """A local file named by its path, size and time, so that replacing it never serves vectors of the old one."""
    st = path.stat()
    stamp = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"sscd/{path.stem}#{stamp}"


# --- CLIP ---------------------------------------------------------------------------------------------------------

class ClipDescriptor:
    """The project's CLIP image embedder as a copy descriptor (same vectors, same store entries)."""

    name = "clip"
    threshold = CLIP_THRESHOLD
    unit = UNITS["clip"]

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.id = embedder.id
        self.batch_limit = int(getattr(embedder, "batch_limit", 32))
        self.input_size = getattr(embedder, "input_size", None)
        split = callable(getattr(embedder, "prepare", None)) and callable(getattr(embedder, "embed_prepared", None))
        if split:
            self.prepare = embedder.prepare
            self.embed_prepared = embedder.embed_prepared

    @property
    def device(self) -> str:
        return str(getattr(self.embedder, "device", "CPU"))

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.embedder.embed_images(images)

    def embed_texts(self, texts: list[str]) -> None:
        return None

    def unload(self) -> None:
        unload = getattr(self.embedder, "unload", None)
        if callable(unload):
            unload()


# --- by name ------------------------------------------------------------------------------------------------------

def descriptor_from_name(name: str, *, models_root: Path, download: bool = True,
                         clip_embedder: Optional[Embedder] = None) -> Descriptor:
    """`sscd`, `sscd:/path/to/model.pt`, `clip` (needs `clip_embedder`) or `perceptual`. Loads no model: SSCD's
    file is found (or downloaded) here and loaded on first use."""
    text = str(name or "").strip()
    kind, _, local = text.partition(":")
    kind = kind.strip().lower()
    if kind == "perceptual" and not local:
        return PerceptualDescriptor()
    if kind == "clip" and not local:
        if clip_embedder is None:
            raise LorakitError("The clip descriptor needs the project's CLIP embedder; none was given.")
        return ClipDescriptor(clip_embedder)
    if kind == "sscd":
        _require_torch()
        if local.strip():
            path = Path(local.strip()).expanduser()
            if not path.is_file():
                raise NotFound(f"No SSCD model file at {path}.")
            return SscdDescriptor(path, model_id=_local_id(path))
        return SscdDescriptor(sscd_model_file(models_root, download=download), model_id="sscd/disc_mixup")
    raise LorakitError(f"descriptor: expected one of {', '.join(DESCRIPTORS)} (or sscd:/path/to/model.pt), "
                       f"got {text!r}")


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise LorakitError("The sscd descriptor needs torch, which is not installed here.") from e


def resolve_descriptor(name: str, *, models_root: Path, download: bool = True,
                       clip_embedder: Optional[Embedder] = None) -> tuple[Descriptor, str]:
    """The descriptor asked for, or — when `sscd` cannot be had (no torch, the download fails or is off) — the
    perceptual one, with the reason in words (`""` when the one asked for is used)."""
    try:
        return descriptor_from_name(name, models_root=models_root, download=download,
                                    clip_embedder=clip_embedder), ""
    except NotFound:  # a local model file that is not there: the user's to fix, not a reason to fall back
        raise
    except LorakitError as e:
        if not str(name or "").strip().lower().startswith("sscd"):
            raise
        reason = f"{e} The perceptual descriptor (no download) was used instead."
        log.warning("%s", reason)
        return PerceptualDescriptor(), reason
