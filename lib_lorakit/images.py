"""The one place images are opened.

Every decode goes through here so that EXIF orientation, colour modes, animation and size limits are handled
once, and so that a bad file becomes an `ImageProblem` value with a reason a user understands instead of an
exception somewhere deep in a batch.
"""

from __future__ import annotations

import functools
import re
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
CAPTION_SUFFIXES = (".txt", ".caption")
UNSUPPORTED_SUFFIXES = {
    ".svg": "SVG is a vector format; export it to PNG first",
    ".svgz": "SVG is a vector format; export it to PNG first",
    ".psd": "Photoshop files are not read; export the flattened image to PNG first",
    ".kra": "Krita files are not read; export to PNG first",
    ".clip": "Clip Studio files are not read; export to PNG first",
    ".heic": "HEIC is not supported; convert it to JPEG or PNG first",
    ".heif": "HEIF is not supported; convert it to JPEG or PNG first",
    ".avif": "AVIF is not supported; convert it to PNG first",
    ".jxl": "JPEG XL is not supported; convert it to PNG first",
    ".ico": "icons are not training images",
    ".pdf": "PDF is not an image format; export its pages to PNG first",
}
# Pillow refuses images above twice its MAX_IMAGE_PIXELS (about 179 MP) no matter what; our limit stays below.
PIL_HARD_LIMIT = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
DEFAULT_MAX_PIXELS = 100_000_000
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error, zlib.error,
                  Image.DecompressionBombError, MemoryError)
# The formats we keep byte for byte when nothing about the picture needs changing.
_KEEP_AS_IS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
# The only formats Pillow is asked to recognise (whatever a file's name says), and the suffix a file of each gets.
# Others are refused before any of their decoder runs (EPS, for one, would start Ghostscript).
FORMAT_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                   "TIFF": ".tif"}
# A JPEG kept byte for byte is decoded for its perceptual hash only, at the smallest scale Pillow's `draft` offers
# (1/2 … 1/8) that leaves both sides at least this long: the hash looks at a 32×32 reduction. None: in full.
HASH_DRAFT_SIDE: int | None = 64


@functools.lru_cache(maxsize=1)
def _read_formats() -> tuple[str, ...]:
    """FORMAT_SUFFIXES' formats that this Pillow registers as openers (MPO comes through JPEG's in some versions)."""
    Image.init()
    return tuple(f for f in FORMAT_SUFFIXES if f in Image.OPEN)


@dataclass(frozen=True)
class ImageProblem:
    """Why a file cannot be used as a training image."""

    reason: str


@dataclass
class LoadedImage:
    """An image ready for training: upright, 8-bit RGB, one frame."""

    image: Image.Image
    source_format: str
    source_mode: str
    notes: list[str] = field(default_factory=list)
    keep_bytes_suffix: str | None = None  # set when the source file can be copied unchanged
    full_size: tuple[int, int] = (0, 0)  # the upright picture's size before any reduced decode

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def describe_unsupported(path: Path) -> str | None:
    """The reason a file is not imported, judged by its name alone; None if it may be an image."""
    suffix = path.suffix.lower()
    if suffix in UNSUPPORTED_SUFFIXES:
        return f"unsupported format ({suffix[1:].upper()}): {UNSUPPORTED_SUFFIXES[suffix]}"
    if suffix not in IMAGE_SUFFIXES:
        return f"not an image file type Train Style imports ({suffix or 'no extension'})"
    return None


@dataclass
class ImageFacts:
    """What the import and the dataset index need to know of an image file, all from one decode."""

    width: int  # upright, full size
    height: int
    format: str
    notes: list[str]
    keep_bytes_suffix: str | None  # set when the file itself can be the training copy
    phash: int  # `perceptual_hash` of the picture
    image: Image.Image | None  # the upright RGB picture; None when the file is kept (decoded reduced for the hash)


def describe_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                   background: tuple[int, int, int] = (255, 255, 255)) -> Union[ImageFacts, ImageProblem]:
    """Size, format, notes, whether the file can be kept byte for byte, and its perceptual hash, from one decode;
    or why it can't be used. Every perceptual hash of a file is made here, so a file always gets the same one.

    A JPEG that is kept as it is (upright, RGB, one frame) is needed for nothing but the hash, so it is decoded
    at reduced scale (`HASH_DRAFT_SIDE`; Pillow's `draft`, libjpeg's DCT scaling, which still reads every byte
    of the file, so a truncated or corrupt one is refused as before): ~35 % less work on a textured photo, more on
    a smooth one. Its hash is then that of the reduced decode. Measured on 200 photos: it differs from a full
    decode's by 2 of 64 bits on about one in ten (bits whose coefficient sits on the median, which any re-encoding
    flips as well); near-duplicates (re-encoded, resized, brightened, PNG against JPEG) stay 0–4 bits apart and
    distinct pictures ≥ 14, as with a full decode; only pairs right at the threshold (a slight crop: ~6 bits) can
    fall on the other side of it, either way, as they can after a re-encode.
    """
    loaded = _open(path, max_pixels=max_pixels, background=background, draft=None, for_hash=True)
    if isinstance(loaded, ImageProblem):
        return loaded
    reduced = loaded.image.size != loaded.full_size
    return ImageFacts(width=loaded.full_size[0], height=loaded.full_size[1], format=loaded.source_format,
                      notes=loaded.notes, keep_bytes_suffix=loaded.keep_bytes_suffix,
                      phash=perceptual_hash(loaded.image), image=None if reduced else loaded.image)


def open_training_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                        background: tuple[int, int, int] = (255, 255, 255),
                        draft: tuple[int, int] | None = None) -> Union[LoadedImage, ImageProblem]:
    """Decode `path` into an upright RGB image, or say why it can't be used.

    `draft` (width, height in the file's stored orientation) lets a JPEG decode at 1/2, 1/4 or 1/8 scale while
    both sides stay at least that size (Pillow's `draft`): much cheaper when only a small copy is needed, as for
    taggers. The size limit still applies to the full picture; a reduced decode is never kept byte for byte.
    """
    return _open(path, max_pixels=max_pixels, background=background, draft=draft, for_hash=False)


def _open(path: Path, *, max_pixels: int, background: tuple[int, int, int], draft: tuple[int, int] | None,
          for_hash: bool) -> Union[LoadedImage, ImageProblem]:
    max_pixels = min(max_pixels, PIL_HARD_LIMIT)
    try:
        size = Path(path).stat().st_size
    except OSError as e:
        return ImageProblem(f"cannot read the file: {e.strerror or e}")
    if size == 0:
        return ImageProblem("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path, formats=_read_formats())
            loaded: Union[LoadedImage, ImageProblem, None] = None
            try:
                loaded = _load(im, max_pixels=max_pixels, background=background, draft=draft, for_hash=for_hash)
                return loaded
            finally:
                if not (isinstance(loaded, LoadedImage) and loaded.image is im):  # else handed over, file closed
                    im.close()
    except Image.UnidentifiedImageError:
        return ImageProblem("not a recognisable image (the content is not JPEG, PNG, WebP, BMP, GIF or TIFF)")
    except Image.DecompressionBombError as e:
        return ImageProblem(_too_large_for_pillow(e, max_pixels))
    except PermissionError as e:
        return ImageProblem(f"cannot read the file: {e.strerror or e}")
    except MemoryError:
        return ImageProblem("not enough memory to decode this image")
    except _DECODE_ERRORS as e:
        return ImageProblem(f"truncated or corrupt image ({_short(e)})")


def _load(im: Image.Image, *, max_pixels: int, background: tuple[int, int, int],
          draft: tuple[int, int] | None = None, for_hash: bool = False) -> Union[LoadedImage, ImageProblem]:
    """Decode an opened file. `for_hash`: a JPEG that will be kept byte for byte is decoded at reduced scale
    (see `describe_image`) and stays marked as kept."""
    source_format, source_mode = im.format or "unknown", im.mode
    width, height = im.size
    if width < 1 or height < 1:
        return ImageProblem(f"the image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        return ImageProblem(f"{width}×{height} is {width * height / 1e6:.0f} MP, above the limit of "
                            f"{max_pixels / 1e6:.0f} MP (setting: largest image); scale it down first")
    notes: list[str] = []
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        im.seek(0)
        notes.append(f"animated ({frames} frames): the first frame is used")
    orientation = _exif_orientation(im)
    upright_size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    if for_hash and HASH_DRAFT_SIDE and source_format == "JPEG" and source_mode == "RGB" and not notes \
            and orientation not in (2, 3, 4, 5, 6, 7, 8):
        im.draft("RGB", (HASH_DRAFT_SIDE, HASH_DRAFT_SIDE))  # it will be kept as it is: only the hash needs pixels
    reduced = False  # reduced for a tagger: then not the file's picture, never kept
    if draft is not None and im.format in ("JPEG", "MPO"):
        im.draft("RGB", draft)
        reduced = im.size != (width, height)
    im.load()
    upright = ImageOps.exif_transpose(im) if orientation in (2, 3, 4, 5, 6, 7, 8) else im
    if upright is not im:
        notes.append(f"rotated upright (EXIF orientation {orientation})")
    # Pillow opens 16-bit grayscale PNGs as mode "I" in some versions: the format says they are 16-bit.
    sixteen_bit = source_mode.startswith("I;16") or (source_mode == "I" and source_format == "PNG")
    rgb = _to_rgb(upright, background=background, notes=notes, sixteen_bit=sixteen_bit)
    keep = _KEEP_AS_IS.get(source_format) if (rgb is upright and source_mode == "RGB" and not notes
                                              and not reduced) else None
    return LoadedImage(image=rgb if rgb is not im else _detached(im), source_format=source_format,
                       source_mode=source_mode, notes=notes, keep_bytes_suffix=keep, full_size=upright_size)


def _detached(im: Image.Image) -> Image.Image:
    """The decoded picture, usable after its file is closed. A loaded single-frame JPEG has closed its file
    already (Pillow does so after `load`), so it is handed over as it is: a copy would cost a quarter of the
    decode (fresh pages for a few megabytes). Other formats may keep their file open (frames): copied."""
    return im if im.format == "JPEG" and getattr(im, "fp", None) is None else im.copy()


def _exif_orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(0x0112)
    except _DECODE_ERRORS:
        return None


def _to_rgb(im: Image.Image, *, background: tuple[int, int, int], notes: list[str],
            sixteen_bit: bool = False) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on `background`."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        notes.append(f"converted from {'16-bit' if sixteen_bit else mode + '-mode'} grayscale to 8-bit RGB")
        return Image.fromarray(_to_8bit(np.asarray(im), sixteen_bit=sixteen_bit), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if alpha.min() < 255:
            notes.append("transparency composited on " + ("white" if background == (255, 255, 255) else
                                                            "#{:02x}{:02x}{:02x}".format(*background)))
            canvas = Image.new("RGB", rgba.size, background)
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        notes.append("alpha channel dropped (fully opaque)")
        return rgba.convert("RGB")
    label = {"CMYK": "CMYK", "P": "palette", "L": "grayscale", "1": "1-bit", "YCbCr": "YCbCr", "LAB": "Lab",
             "HSV": "HSV"}.get(mode, mode)
    notes.append(f"converted from {label} to RGB")
    return im.convert("RGB")


def _to_8bit(a: np.ndarray, *, sixteen_bit: bool = False) -> np.ndarray:
    """Scale to 0..255: 16-bit data always by its full range (a dark 16-bit image stays dark)."""
    a = a.astype(np.float64)
    if a.size and (sixteen_bit or a.max() > 255):
        top = 65535.0 if a.max() <= 65535 else float(a.max())
        a = a * (255.0 / top)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _too_large_for_pillow(e: Image.DecompressionBombError, max_pixels: int) -> str:
    """Pillow refuses such images in `Image.open`, before we see their size; its message holds the pixel count."""
    m = re.search(r"\((\d+) pixels\)", str(e))
    size = f"{int(m.group(1)) / 1e6:.0f} MP" if m else f"over {PIL_HARD_LIMIT / 1e6:.0f} MP"
    return (f"the image is {size}, above the limit of {max_pixels / 1e6:.0f} MP (setting: largest image); "
            "scale it down first")


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 120 else text[:117] + "..."


def perceptual_hash(image: Image.Image) -> int:
    """A 64-bit DCT hash: similar pictures give hashes a few bits apart, whatever their size or encoding."""
    small = image.convert("L").resize((32, 32), Image.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(small, dtype=np.float64)
    dct = _DCT32 @ pixels @ _DCT32.T
    low = dct[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits, bitorder="little").view("<u8")[0])  # bit i set when bits[i]


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT32 = _dct_matrix(32)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    format: str


def read_header(path: Path) -> Union[ImageHeader, ImageProblem]:
    """Size and format from the file header, without decoding pixels (for the index of training copies)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=_read_formats()) as im:
                w, h = im.size
                orientation = _exif_orientation(im)
                if orientation in (5, 6, 7, 8):
                    w, h = h, w
                return ImageHeader(width=w, height=h, format=im.format or "unknown")
    except Image.UnidentifiedImageError:
        return ImageProblem("not a recognisable image")
    except _DECODE_ERRORS as e:
        return ImageProblem(f"cannot read the image ({_short(e)})")
