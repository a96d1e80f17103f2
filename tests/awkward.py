"""Real files of every awkward kind, made on the spot, and what each one should become after import.

`build_awkward_folder(tmp)` writes `tmp/allowed/…` (the folder a user would import) and `tmp/elsewhere/…`
(outside the allowed root) and returns an `Awkward` that says, per file, either what the training copy must
look like or the reason it must be skipped. The expectations are computed from how the files were *made*
(the upright picture, the alpha maths, the EXIF specification), never from the code under test.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
MARK = 16  # side of the red marker drawn in the top-left corner of upright pictures


# --- pictures ---------------------------------------------------------------------------------------------------

def pattern(seed: int, width: int, height: int, marker: bool = True) -> np.ndarray:
    """A smooth, seed-specific RGB picture (uint8, H×W×3), distinct enough for perceptual hashes.

    Values stay in 40..215 so that nothing is mistaken for the red marker, white or black.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    out = np.zeros((height, width, 3))
    for c in range(3):
        acc = np.zeros((height, width))
        for _ in range(4):
            fx, fy = rng.uniform(0.5, 3.0, size=2)
            phase = rng.uniform(0, 2 * np.pi)
            acc += np.cos(2 * np.pi * (fx * x / width + fy * y / height) + phase) * rng.choice([-1, 1])
        out[..., c] = acc
    out = 40 + (out - out.min()) / (np.ptp(out) or 1) * 175
    a = np.rint(out).astype(np.uint8)
    if marker:
        a[:MARK, :MARK] = RED
    return a


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores so that a viewer honouring EXIF `orientation` shows `upright` (EXIF 2.3 §4.6.4).

    6: row 0 is the visual right edge, column 0 the visual top; 8: row 0 is the visual left edge, column 0 the
    visual bottom; 3: upside down.
    """
    return {1: upright, 3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]


def jpeg_bytes(a: np.ndarray, orientation: int | None = None, quality: int = 95) -> bytes:
    im = Image.fromarray(np.ascontiguousarray(a), "RGB")
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG claiming `width`×`height` RGB in its IHDR, with a tiny IDAT: cheap to make, a bomb to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def composite(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Straight-alpha "over" on an opaque background, in 8 bits."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb * a + np.array(background, dtype=np.float64) * (1 - a)).astype(np.uint8)


def points(a: np.ndarray, *, marker: bool = True) -> dict[tuple[int, int], tuple[int, int, int]]:
    """Sample pixels of an expected upright picture: the marker's centre and the middle of each quadrant."""
    h, w = a.shape[:2]
    xy = [(w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4), (3 * w // 4, 3 * h // 4), (w // 2, h // 2)]
    if marker:
        xy.append((MARK // 2, MARK // 2))
    return {(x, y): tuple(int(v) for v in a[y, x]) for x, y in xy}


# --- the folder -------------------------------------------------------------------------------------------------

@dataclass
class Good:
    """A file that must be imported, and what its training copy must be."""

    size: tuple[int, int]  # upright width, height
    pixels: dict[tuple[int, int], tuple[int, int, int]]
    tolerance: int = 3
    caption: str | None = None  # the UTF-8 text the training caption must hold
    warnings: tuple[str, ...] = ()  # substrings expected among the report's warnings for this file
    keep_suffix: str | None = None  # set when the training copy must be the original bytes with this suffix


@dataclass
class Awkward:
    root: Path  # the allowed folder the user imports
    outside: Path  # a folder outside the allowed root
    good: dict[str, Good] = field(default_factory=dict)  # relative path → expectation
    bad: dict[str, str] = field(default_factory=dict)  # relative path → substring of the skip reason
    ignored: list[str] = field(default_factory=list)  # files skipped silently (hidden, Thumbs.db)
    exact: tuple[str, ...] = ()  # relative paths with identical bytes
    near: tuple[str, ...] = ()  # relative paths of the same picture, resized and re-encoded

    def display(self, rel: str) -> str:
        """How the importer names a file found by walking `root`."""
        return os.path.join(str(self.root), *rel.split("/"))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_awkward_folder(tmp: Path) -> Awkward:
    """Write the awkward folder under `tmp` and return the expectations."""
    root = tmp / "allowed"
    outside = tmp / "elsewhere"
    root.mkdir(parents=True)
    outside.mkdir(parents=True)
    awk = Awkward(root=root, outside=outside)
    seed = iter(range(1000, 2000))

    def good(rel: str, data: bytes, expect: Good) -> None:
        _write(root / rel, data)
        awk.good[rel] = expect

    def bad(rel: str, data: bytes, reason: str) -> None:
        _write(root / rel, data)
        awk.bad[rel] = reason

    # 1. camera JPEGs: EXIF-rotated, upper-case suffixes, a plain one kept byte for byte
    for rel, orientation in (("photos/rot6.jpg", 6), ("photos/ROT3.JPG", 3), ("photos/rot8.jpeg", 8)):
        up = pattern(next(seed), 96, 64)
        good(rel, jpeg_bytes(stored_for_orientation(up, orientation), orientation),
             Good(size=(96, 64), pixels=points(up), tolerance=24, warnings=(f"EXIF orientation {orientation}",)))
    _write(root / "photos/rot6.txt", b"a photo, turned")
    awk.good["photos/rot6.jpg"].caption = "a photo, turned"
    plain = pattern(next(seed), 80, 72)
    good("photos/plain.jpg", jpeg_bytes(plain), Good(size=(80, 72), pixels=points(plain), tolerance=24,
                                                     keep_suffix=".jpg"))
    # 2. colour modes
    cmyk = np.zeros((48, 64, 4), np.uint8)
    cmyk[:, :32] = (0, 255, 255, 0)  # red
    cmyk[:, 32:] = (255, 0, 255, 0)  # green
    cmyk[:24, 32:] = (255, 255, 0, 0)  # blue
    good("modes/cmyk.jpg", encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95),
         Good(size=(64, 48), pixels={(12, 30): RED, (48, 40): (0, 255, 0), (48, 10): (0, 0, 255)}, tolerance=40,
              warnings=("CMYK",)))
    pal_rgb = pattern(next(seed), 64, 64, marker=False)
    pal = Image.fromarray(pal_rgb, "RGB").quantize(colors=32)
    idx = np.asarray(pal).copy()
    idx[:, :24] = 255  # left strip: a palette entry marked transparent
    pal_img = Image.fromarray(idx, "P")
    pal_img.putpalette(pal.getpalette()[:96] + [0, 0, 0] * 224)
    expected = np.asarray(pal_img.convert("RGB")).copy()
    expected[:, :24] = 255
    good("modes/palette transparent.png", encode(pal_img, "PNG", transparency=255),
         Good(size=(64, 64), pixels={**points(expected, marker=False), (5, 5): (255, 255, 255)},
              warnings=("composited on white",)))
    rgba_rgb = pattern(next(seed), 72, 56)
    alpha = np.full((56, 72), 255, np.uint8)
    alpha[36:, :] = 0
    alpha[28:36, :] = 128
    good("modes/rgba.PnG", encode(Image.fromarray(np.dstack([rgba_rgb, alpha]), "RGBA"), "PNG"),
         Good(size=(72, 56), pixels=points(composite(rgba_rgb, alpha, (255, 255, 255))), tolerance=2,
              warnings=("composited on white",)))
    gray = pattern(next(seed), 64, 64, marker=False)[..., 1]
    la_alpha = np.full((64, 64), 255, np.uint8)
    la_alpha[20:44, 20:44] = 0
    expect_la = composite(np.dstack([gray] * 3), la_alpha, (255, 255, 255))
    good("modes/gray alpha.png", encode(Image.fromarray(np.dstack([gray, la_alpha]), "LA"), "PNG"),
         Good(size=(64, 64), pixels=points(expect_la, marker=False), tolerance=2, warnings=("composited",)))
    ramp16 = np.rint(np.linspace(0, 65535, 128))[None, :].repeat(40, 0).astype(np.uint16)
    ramp8 = np.rint(ramp16 / 257.0).astype(np.uint8)
    good("modes/gray16.png", encode(Image.fromarray(ramp16, "I;16"), "PNG"),
         Good(size=(128, 40), pixels=points(np.dstack([ramp8] * 3), marker=False), tolerance=2,
              warnings=("to 8-bit RGB",)))
    bits = np.zeros((40, 64), bool)
    bits[:, 32:] = True
    bits[:20, :16] = True
    good("modes/one bit.png", encode(Image.fromarray(bits), "PNG"),
         Good(size=(64, 40), pixels={(8, 10): (255, 255, 255), (8, 30): (0, 0, 0), (24, 10): (0, 0, 0),
                                     (48, 20): (255, 255, 255)}, warnings=("1-bit",)))
    as_png = pattern(next(seed), 64, 48)
    good("modes/really a png.jpg", encode(Image.fromarray(as_png), "PNG"),
         Good(size=(64, 48), pixels=points(as_png), keep_suffix=".png"))
    # 3. animation: the first frame is used
    for rel, fmt, extra in (("anim/loop.gif", "GIF", {}), ("anim/loop.webp", "WEBP", {"lossless": True})):
        frames = [Image.new("RGB", (48, 40), c) for c in ("red", "blue", "green")]
        frames[0] = Image.fromarray(pattern(next(seed), 48, 40))
        if fmt == "GIF":
            frames[0] = frames[0].quantize(colors=255)
        expect = np.asarray(frames[0].convert("RGB"))  # GIF's palette and lossless WebP are exact
        good(rel, encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=80, loop=0, **extra),
             Good(size=(48, 40), pixels=points(expect), warnings=("animated (3 frames)",)))
    # 4. odd names, captions in odd encodings and places
    odd = ["odd names/sks woman (1).png", "odd names/キャラ.png", 'odd names/say "cheese".png',
           "odd names/it's here.png"]
    if os.name == "posix":
        odd.append("odd names/new\nline.png")
    for rel in odd:
        a = pattern(next(seed), 56, 56)
        good(rel, encode(Image.fromarray(a), "PNG"), Good(size=(56, 56), pixels=points(a), keep_suffix=".png"))
    _write(root / "odd names/sks woman (1).caption", b"sks woman, smiling")
    awk.good["odd names/sks woman (1).png"].caption = "sks woman, smiling"
    _write(root / "odd names/キャラ.txt", "キャラ, 笑顔".encode())
    awk.good["odd names/キャラ.png"].caption = "キャラ, 笑顔"
    for sub in ("a", "b"):  # same stem in two folders: both kept, each with its own caption
        a = pattern(next(seed), 60, 52)
        good(f"collide/{sub}/same.png", encode(Image.fromarray(a), "PNG"),
             Good(size=(60, 52), pixels=points(a), caption=f"from {sub}"))
        _write(root / f"collide/{sub}/same.txt", f"from {sub}".encode())
    for rel, data, text, warning in (
            ("captions/cp1252.png", "café, naïve".encode("cp1252"), "café, naïve", "not UTF-8"),
            ("captions/utf16.png", "tag one, été".encode("utf-16"), "tag one, été", None),
            ("captions/both.png", b"from txt", "from txt", "both.txt, both.caption")):
        a = pattern(next(seed), 50, 50)
        good(rel, encode(Image.fromarray(a), "PNG"), Good(size=(50, 50), pixels=points(a), caption=text,
                                                          warnings=(warning,) if warning else ()))
        _write(root / Path(rel).with_suffix(".txt"), data)
    _write(root / "captions/both.caption", b"from caption")
    # 5. duplicates: identical bytes under two names; the same picture resized and re-encoded
    twin = pattern(next(seed), 64, 64)
    twin_png = encode(Image.fromarray(twin), "PNG")
    for rel in ("dupes/twin a.png", "dupes/twin b.png"):
        good(rel, twin_png, Good(size=(64, 64), pixels=points(twin)))
    awk.exact = ("dupes/twin a.png", "dupes/twin b.png")
    big = pattern(next(seed), 200, 160)
    good("dupes/near big.png", encode(Image.fromarray(big), "PNG"), Good(size=(200, 160), pixels=points(big)))
    small = np.asarray(Image.fromarray(big).resize((120, 96), Image.LANCZOS))
    good("dupes/near small.jpg", jpeg_bytes(small, quality=80),
         Good(size=(120, 96), pixels=points(small, marker=False), tolerance=30))
    awk.near = ("dupes/near big.png", "dupes/near small.jpg")
    # 6. files that must be skipped, each with its reason
    full = jpeg_bytes(pattern(next(seed), 120, 90) + np.random.default_rng(1).integers(0, 30, (90, 120, 3),
                                                                                        dtype=np.uint8))
    bad("bad/truncated.jpg", full[: len(full) // 2], "truncated or corrupt")
    noisy = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    full_png = encode(Image.fromarray(noisy), "PNG")
    bad("bad/truncated.png", full_png[: len(full_png) // 2], "truncated or corrupt")
    bad("bad/empty.jpg", b"", "empty file")
    bad("bad/random.jpg", np.random.default_rng(3).bytes(2048), "not a recognisable image")
    bad("bad/huge.png", png_header_only(30000, 30000), "900 MP")
    bad("bad/drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>', "SVG")
    bad("bad/layers.psd", b"8BPS" + bytes(100), "Photoshop")
    bad("bad/notes.md", b"# not an image", "not an image file type")
    os.mkfifo(root / "bad/pipe.jpg")
    awk.bad["bad/pipe.jpg"] = "not a regular file"
    # 7. symbolic links: a loop to an ancestor, one to itself, a broken one, one leading outside
    (root / "links").mkdir()
    os.symlink("..", root / "links/back to top")
    awk.bad["links/back to top"] = "symbolic link loop"
    os.symlink("self.png", root / "links/self.png")
    awk.bad["links/self.png"] = "symbolic link loop"
    os.symlink("nowhere.png", root / "links/broken.png")
    awk.bad["links/broken.png"] = "broken symbolic link"
    _write(outside / "secret.png", encode(Image.fromarray(pattern(next(seed), 32, 32)), "PNG"))
    os.symlink(outside / "secret.png", root / "links/outside.png")
    awk.bad["links/outside.png"] = "outside the allowed folders"
    # 8. what is passed over silently
    _write(root / ".hidden.png", encode(Image.fromarray(pattern(next(seed), 32, 32)), "PNG"))
    _write(root / "Thumbs.db", b"\0" * 64)
    awk.ignored = [".hidden.png", "Thumbs.db"]
    return awk
