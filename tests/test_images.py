"""images.open_training_image on real files of every awkward kind: upright, 8-bit RGB, one frame, or a reason."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from awkward import RED, composite, encode, jpeg_bytes, pattern, png_header_only, stored_for_orientation
from PIL import Image

from lib_lorakit.images import (
    ImageHeader,
    ImageProblem,
    LoadedImage,
    describe_unsupported,
    hamming,
    open_training_image,
    perceptual_hash,
    read_header,
)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def loaded(path: Path, **kwargs) -> LoadedImage:
    result = open_training_image(path, **kwargs)
    assert isinstance(result, LoadedImage), result
    assert result.image.mode == "RGB"
    assert getattr(result.image, "n_frames", 1) == 1
    return result


def problem(path: Path, **kwargs) -> str:
    result = open_training_image(path, **kwargs)
    assert isinstance(result, ImageProblem), f"{path.name} was accepted: {result}"
    return result.reason


def close(actual, expected, tolerance: int) -> bool:
    return all(abs(int(a) - int(e)) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- orientation ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_comes_out_upright(tmp_path, orientation):
    upright = pattern(orientation, 120, 80)  # landscape, red marker top-left
    stored = stored_for_orientation(upright, orientation)
    path = write(tmp_path / f"rot{orientation}.jpg", jpeg_bytes(stored, orientation))
    assert Image.open(path).size == (stored.shape[1], stored.shape[0])  # what a naive viewer shows

    result = loaded(path)

    assert result.image.size == (120, 80)
    assert close(result.image.getpixel((8, 8)), RED, 30), "the marker must be top-left once upright"
    for x, y in ((111, 8), (8, 71), (111, 71)):
        assert not close(result.image.getpixel((x, y)), RED, 60), f"a marker-coloured corner at {(x, y)}"
        assert close(result.image.getpixel((x, y)), upright[y, x], 24)
    assert any(f"EXIF orientation {orientation}" in n for n in result.notes)
    assert result.keep_bytes_suffix is None, "a rotated picture cannot be copied as is"


def test_header_size_of_rotated_jpeg_is_upright(tmp_path):
    path = write(tmp_path / "r.jpg", jpeg_bytes(stored_for_orientation(pattern(1, 120, 80), 6), 6))
    assert read_header(path) == ImageHeader(width=120, height=80, format="JPEG")


def test_orientation_1_and_invalid_orientation_change_nothing(tmp_path):
    a = pattern(2, 64, 48)
    for orientation in (1, 0, 9):
        result = loaded(write(tmp_path / f"o{orientation}.jpg", jpeg_bytes(a, orientation)))
        assert result.image.size == (64, 48)
        assert close(result.image.getpixel((8, 8)), RED, 30)
        assert result.notes == [], f"orientation {orientation}: {result.notes}"
        assert result.keep_bytes_suffix == ".jpg"


# --- colour modes -----------------------------------------------------------------------------------------------

def test_cmyk_jpeg_becomes_rgb_with_its_colours(tmp_path):
    cmyk = np.zeros((40, 90, 4), np.uint8)
    cmyk[:, :30] = (0, 255, 255, 0)
    cmyk[:, 30:60] = (255, 0, 255, 0)
    cmyk[:, 60:] = (0, 0, 0, 255)
    result = loaded(write(tmp_path / "c.jpg", encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95)))
    assert result.source_mode == "CMYK"
    assert close(result.image.getpixel((15, 20)), (255, 0, 0), 40)
    assert close(result.image.getpixel((45, 20)), (0, 255, 0), 40)
    assert close(result.image.getpixel((75, 20)), (0, 0, 0), 40)
    assert result.keep_bytes_suffix is None


def _palette_with_transparent_half() -> Image.Image:
    idx = np.zeros((32, 64), np.uint8)
    idx[:, 32:] = 1
    idx[:16, 32:] = 2
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, 200, 30, 40, 10, 90, 220] + [0] * (253 * 3))
    return im


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 128, 0)])
def test_palette_png_with_transparency_is_composited(tmp_path, background):
    path = write(tmp_path / "p.png", encode(_palette_with_transparent_half(), "PNG", transparency=0))
    result = loaded(path, background=background)
    assert result.image.getpixel((10, 10)) == background
    assert result.image.getpixel((40, 24)) == (200, 30, 40)
    assert result.image.getpixel((40, 4)) == (10, 90, 220)
    assert any("transparency composited" in n for n in result.notes)
    assert result.keep_bytes_suffix is None


@pytest.mark.parametrize("background", [(255, 255, 255), (20, 40, 200)])
def test_rgba_is_composited_on_the_background(tmp_path, background):
    rgb = pattern(3, 64, 64)
    alpha = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))  # transparent left → opaque right
    path = write(tmp_path / "a.png", encode(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG"))
    out = np.asarray(loaded(path, background=background).image)
    expected = composite(rgb, alpha, background)
    assert np.abs(out.astype(int) - expected).max() <= 2
    assert tuple(out[32, 0]) == background


def test_la_is_composited_and_opaque_alpha_is_dropped(tmp_path):
    gray = pattern(4, 48, 48)[..., 0]
    alpha = np.full((48, 48), 255, np.uint8)
    alpha[:, :12] = 0
    out = loaded(write(tmp_path / "la.png", encode(Image.fromarray(np.dstack([gray, alpha]), "LA"), "PNG")),
                 background=(10, 20, 30))
    assert out.image.getpixel((5, 30)) == (10, 20, 30)
    assert out.image.getpixel((30, 30)) == (gray[30, 30],) * 3

    opaque = np.dstack([pattern(5, 40, 40), np.full((40, 40), 255, np.uint8)])
    result = loaded(write(tmp_path / "opaque.png", encode(Image.fromarray(opaque, "RGBA"), "PNG")))
    assert np.array_equal(np.asarray(result.image), opaque[..., :3])
    assert any("alpha channel dropped" in n for n in result.notes)


def test_16_bit_grayscale_keeps_its_tones(tmp_path):
    ramp16 = np.rint(np.linspace(0, 65535, 256))[None, :].repeat(16, 0).astype(np.uint16)
    path = write(tmp_path / "g16.png", encode(Image.fromarray(ramp16, "I;16"), "PNG"))
    out = np.asarray(loaded(path).image)
    assert out.shape == (16, 256, 3)
    assert np.abs(out[8, :, 0].astype(int) - np.arange(256)).max() <= 1, "the 16-bit ramp must map to 0..255"
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("TIFF", ".tif")])
def test_dark_16_bit_image_stays_dark(tmp_path, fmt, suffix):
    """Values up to 200 out of 65535 are nearly black; they must not be read as 8-bit values."""
    dark = np.rint(np.linspace(0, 200, 64))[None, :].repeat(8, 0).astype(np.uint16)
    out = np.asarray(loaded(write(tmp_path / f"dark{suffix}", encode(Image.fromarray(dark, "I;16"), fmt))).image)
    assert out.max() <= 1


def test_one_bit_image(tmp_path):
    bits = np.zeros((20, 40), bool)
    bits[:, 20:] = True
    result = loaded(write(tmp_path / "b.png", encode(Image.fromarray(bits), "PNG")))
    assert result.source_mode == "1"
    assert result.image.getpixel((5, 5)) == (0, 0, 0)
    assert result.image.getpixel((30, 5)) == (255, 255, 255)


# --- animation --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,suffix,extra", [("GIF", ".gif", {}), ("WEBP", ".webp", {"lossless": True})])
def test_animated_image_gives_its_first_frame_with_a_note(tmp_path, fmt, suffix, extra):
    frames = [Image.new("RGB", (40, 30), c) for c in ((250, 10, 10), (10, 10, 250), (10, 250, 10), (9, 9, 9))]
    path = write(tmp_path / f"anim{suffix}", encode(frames[0], fmt, save_all=True, append_images=frames[1:],
                                                    duration=50, loop=0, **extra))
    result = loaded(path)
    assert close(result.image.getpixel((20, 15)), (250, 10, 10), 6)
    assert any("animated (4 frames)" in n for n in result.notes)
    assert result.keep_bytes_suffix is None


# --- files that can't be used ------------------------------------------------------------------------------------

def test_truncated_jpeg_and_png(tmp_path):
    noisy = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    for name, data in (("t.jpg", jpeg_bytes(noisy)), ("t.png", encode(Image.fromarray(noisy), "PNG"))):
        reason = problem(write(tmp_path / name, data[: len(data) // 2]))
        assert "truncated or corrupt" in reason, reason


def test_empty_and_random_files(tmp_path):
    assert "empty file" in problem(write(tmp_path / "e.jpg", b""))
    reason = problem(write(tmp_path / "r.jpg", np.random.default_rng(1).bytes(4096)))
    assert "not a recognisable image" in reason


def test_missing_file_is_a_problem_not_an_exception(tmp_path):
    assert "cannot read the file" in problem(tmp_path / "nothing.png")


def test_unreadable_file(tmp_path):
    import os
    if os.geteuid() == 0:
        pytest.skip("running as root: every file is readable, so permission denied cannot happen")
    path = write(tmp_path / "locked.png", encode(Image.fromarray(pattern(6, 16, 16)), "PNG"))
    path.chmod(0)
    try:
        assert "cannot read the file" in problem(path)
    finally:
        path.chmod(0o644)


def test_huge_header_is_refused_before_decoding(tmp_path):
    path = write(tmp_path / "bomb.png", png_header_only(30000, 30000))
    start = time.perf_counter()
    reason = problem(path)
    assert time.perf_counter() - start < 0.5
    assert "900 MP" in reason and "limit of 100 MP" in reason, reason


def test_size_limit_setting_is_honoured(tmp_path):
    path = write(tmp_path / "big.png", png_header_only(12000, 12000))  # 144 MP: Pillow would only warn
    reason = problem(path)
    assert "12000×12000" in reason and "144 MP" in reason and "limit of 100 MP" in reason, reason
    small = write(tmp_path / "small.png", encode(Image.fromarray(pattern(7, 300, 200)), "PNG"))
    assert "limit of 0 MP" in problem(small, max_pixels=50_000)
    assert loaded(small, max_pixels=60_000).image.size == (300, 200)


# --- names and formats ------------------------------------------------------------------------------------------

def test_png_named_jpg_decodes_and_is_kept_as_png(tmp_path):
    a = pattern(8, 50, 40)
    result = loaded(write(tmp_path / "liar.jpg", encode(Image.fromarray(a), "PNG")))
    assert result.source_format == "PNG"
    assert result.keep_bytes_suffix == ".png"
    assert np.array_equal(np.asarray(result.image), a)


@pytest.mark.parametrize("name", ["UPPER.JPG", "Mixed.PnG", "x.JPEG", "y.WebP"])
def test_upper_case_extensions(tmp_path, name):
    a = pattern(9, 40, 30)
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[name.rsplit(".", 1)[1].lower()]
    path = write(tmp_path / name, encode(Image.fromarray(a), fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert describe_unsupported(path) is None
    assert loaded(path).image.size == (40, 30)


@pytest.mark.parametrize("fmt,expected", [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("BMP", None),
                                          ("TIFF", None)])
def test_keep_bytes_only_for_plain_rgb_jpeg_png_webp(tmp_path, fmt, expected):
    im = Image.fromarray(pattern(10, 32, 32))
    result = loaded(write(tmp_path / f"k.{fmt.lower()}", encode(im, fmt)))
    assert result.keep_bytes_suffix == expected


def test_keep_bytes_not_set_for_converted_modes(tmp_path):
    for mode in ("L", "P", "RGBA"):
        im = Image.fromarray(pattern(11, 32, 32)).convert(mode)
        assert loaded(write(tmp_path / f"m{mode}.png", encode(im, "PNG"))).keep_bytes_suffix is None, mode


@pytest.mark.parametrize("name,words", [("a.svg", "SVG"), ("b.PSD", "Photoshop"), ("c.heic", "HEIC"),
                                        ("d.txt", "not an image file type"), ("noext", "no extension")])
def test_unsupported_by_name(name, words):
    assert words in describe_unsupported(Path(name))


# --- perceptual hash --------------------------------------------------------------------------------------------

def test_perceptual_hash_survives_resize_and_reencode():
    original = Image.fromarray(pattern(12, 256, 192))
    copy = Image.open(io.BytesIO(jpeg_bytes(np.asarray(original.resize((128, 96), Image.LANCZOS)), quality=70)))
    other = Image.fromarray(pattern(13, 256, 192))
    h = perceptual_hash(original)
    assert hamming(h, perceptual_hash(copy)) <= 4
    assert hamming(h, perceptual_hash(other)) >= 16
    assert 0 <= h < 2 ** 64
