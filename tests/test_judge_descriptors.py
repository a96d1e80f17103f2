"""Copy-detection descriptors (judge/descriptors.py) on real pictures: scikit-image's photos and drawings made here.

The perceptual descriptor must flag near-copies (½ and 2× resizes, a 90 % centre crop, JPEG quality 70, a small
colour shift) and must not flag different pictures of the same kind. SSCD's plumbing runs through a tiny TorchScript
model in SSCD's contract (tests/tiny_sscd.py, random weights: loading, batching, ids and downloads, not detection);
`clip` through the tiny open_clip model (tests/tiny_clip.py).
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from tiny_sscd import save_tiny_sscd

from lib_lorakit.errors import LorakitError, NotFound
from lib_lorakit.judge import DESCRIPTORS
from lib_lorakit.judge import descriptors as d

ROOT = Path(__file__).resolve().parents[1]
# Left out: the grey twin of chessboard_RGB and the right half of the motorcycle stereo pair (copies of others).
NOT_DISTINCT = {"chessboard_GRAY.png", "motorcycle_right.png"}
# A 90 % crop of a pure texture is another patch of the same texture to a global descriptor (0.77 for brick.png,
# below the perceptual threshold; see the measurements in judge/descriptors.py): left to SSCD.
TEXTURES = {"brick.png"}


# --- pictures -----------------------------------------------------------------------------------------------------

def skimage_photos() -> list[Path]:
    """scikit-image's sample photos (its wheel ships them), found without importing skimage; [] when absent."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.origin:
        return []
    folder = Path(spec.origin).parent / "data"
    return sorted(p for p in folder.glob("*.png") if p.name not in NOT_DISTINCT)


def drawing(seed: int, size: int = 256) -> Image.Image:
    """Random ellipses, boxes and strokes on a light background: pictures of one kind, each its own."""
    r = np.random.default_rng(seed)
    im = Image.new("RGB", (size, size), tuple(int(x) for x in r.integers(180, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(int(r.integers(4, 9))):
        x0, y0 = (int(v) for v in r.integers(0, size, 2))
        x1, y1 = x0 + int(r.integers(20, 140)), y0 + int(r.integers(20, 140))
        colour = tuple(int(x) for x in r.integers(0, 200, 3))
        kind = int(r.integers(0, 3))
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(r.integers(3, 12)))
    return im


def near_copies(im: Image.Image) -> dict[str, Image.Image]:
    """What a model that memorised `im` might give back: resized, cropped, recompressed, colour-shifted."""
    im = im.convert("RGB")
    w, h = im.size
    dx, dy = round(w * 0.05), round(h * 0.05)
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=70)
    shifted = np.clip(np.asarray(im, np.int16) + np.array([12, -8, 10]), 0, 255).astype(np.uint8)
    return {"half": im.resize((w // 2, h // 2), Image.Resampling.LANCZOS),
            "double": im.resize((w * 2, h * 2), Image.Resampling.BICUBIC),
            "crop90": im.crop((dx, dy, w - dx, h - dy)),
            "jpeg70": Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),
            "colour": Image.fromarray(shifted)}


def pictures() -> dict[str, Image.Image]:
    found = {p.name: Image.open(p).convert("RGB") for p in skimage_photos()}
    found.update({f"drawing{s}": drawing(s) for s in range(12)})
    return found


@pytest.fixture(scope="module")
def pics() -> dict[str, Image.Image]:
    return pictures()


# --- perceptual ---------------------------------------------------------------------------------------------------

def test_the_photos_are_there():
    """The threshold was tuned on these; without them the tests below see drawings only."""
    if not skimage_photos():
        pytest.skip("scikit-image is not installed here (pip install --no-deps scikit-image ships the photos)")
    assert len(skimage_photos()) >= 15


def test_perceptual_flags_every_near_copy(pics):
    desc = d.PerceptualDescriptor()
    originals = desc.embed_images(list(pics.values()))
    missed = []
    for (name, im), vector in zip(pics.items(), originals, strict=True):
        variants = near_copies(im)
        sims = desc.embed_images(list(variants.values())) @ vector
        missed += [(name, kind, round(float(s), 3)) for kind, s in zip(variants, sims, strict=True)
                   if s < desc.threshold and not (kind == "crop90" and name in TEXTURES)]
    assert not missed, f"near-copies below the threshold {desc.threshold}: {missed}"


def test_perceptual_does_not_flag_different_pictures_of_one_kind(pics):
    desc = d.PerceptualDescriptor()
    names = list(pics)
    v = desc.embed_images([pics[n] for n in names])
    flagged = [(names[i], names[j], round(float(v[i] @ v[j]), 3))
               for i, j in itertools.combinations(range(len(names)), 2) if v[i] @ v[j] >= desc.threshold]
    assert not flagged, f"different pictures at or above {desc.threshold}: {flagged}"


def test_perceptual_vectors_are_unit_rows_the_same_whatever_the_batch(pics):
    desc = d.PerceptualDescriptor()
    images = list(pics.values())[:5]
    together = desc.embed_images(images)
    alone = np.concatenate([desc.embed_images([im]) for im in images])
    assert together.dtype == np.float32 and together.shape == (5, desc.dim)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(together, alone)
    # grey, tiny and one-colour pictures are described without a division by zero
    odd = desc.embed_images([Image.new("L", (3, 2), 128), Image.new("RGB", (1, 1), (0, 0, 0)),
                             Image.new("RGBA", (40, 30), (10, 200, 30, 128))])
    assert np.isfinite(odd).all()


def test_each_descriptor_names_its_threshold_and_unit(tmp_path):
    perceptual = d.descriptor_from_name("perceptual", models_root=tmp_path)
    assert (perceptual.name, perceptual.threshold) == ("perceptual", d.PERCEPTUAL_THRESHOLD)
    assert "cosine similarity" in perceptual.unit and "perceptual" in perceptual.unit
    sscd = d.descriptor_from_name(f"sscd:{save_tiny_sscd(tmp_path / 'm.pt')}", models_root=tmp_path)
    assert (sscd.name, sscd.threshold, sscd.unit) == ("sscd", 0.5, "cosine similarity of SSCD descriptors")
    assert set(d.UNITS) == set(DESCRIPTORS)
    with pytest.raises(LorakitError, match="expected one of sscd, clip, perceptual"):
        d.descriptor_from_name("phash", models_root=tmp_path)
    with pytest.raises(LorakitError, match="CLIP embedder"):
        d.descriptor_from_name("clip", models_root=tmp_path)


def test_perceptual_needs_no_torch_and_sscd_then_falls_back(tmp_path):
    """In a process where torch cannot be imported, the perceptual descriptor works and `sscd` falls back."""
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from pathlib import Path\n"
        "from PIL import Image\n"
        "from lib_lorakit.judge.descriptors import resolve_descriptor\n"
        f"desc, why = resolve_descriptor('sscd', models_root=Path({str(tmp_path)!r}))\n"
        "v = desc.embed_images([Image.new('RGB', (64, 48), (200, 30, 30))])\n"
        "print(desc.name, v.shape[0], why)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("perceptual 1 ") and "needs torch" in out.stdout
    assert not (tmp_path / "sscd").exists()


# --- SSCD ---------------------------------------------------------------------------------------------------------

def test_a_local_sscd_torchscript_model_is_loaded_and_batched(tmp_path, pics):
    path = save_tiny_sscd(tmp_path / "tiny.pt")
    desc = d.descriptor_from_name(f"sscd:{path}", models_root=tmp_path / "models")
    images = list(pics.values())[:11]  # more than one CPU batch (8)
    together = desc.embed_images(images)
    alone = np.concatenate([desc.embed_images([im]) for im in images])
    assert together.shape == (11, 32) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # the input is SSCD's: a 320 px square, ImageNet-normalised, channels first
    x = desc.prepare(Image.new("RGB", (50, 90), (124, 116, 104)))  # ≈ ImageNet's mean colour
    assert x.shape == (3, 320, 320) and np.abs(x).max() < 0.02
    assert not (tmp_path / "models").exists(), "a local model downloads nothing"


def test_replacing_the_local_model_file_changes_the_id(tmp_path):
    path = save_tiny_sscd(tmp_path / "tiny.pt", seed=0)
    first = d.descriptor_from_name(f"sscd:{path}", models_root=tmp_path).id
    save_tiny_sscd(path, seed=1)
    assert d.descriptor_from_name(f"sscd:{path}", models_root=tmp_path).id != first


def test_a_file_that_is_not_torchscript_is_refused_with_words(tmp_path):
    bad = tmp_path / "not-a-model.pt"
    bad.write_bytes(b"\x80\x04K\x01.")  # a pickle: never unpickled
    desc = d.descriptor_from_name(f"sscd:{bad}", models_root=tmp_path)
    with pytest.raises(LorakitError, match="could not be loaded"):
        desc.embed_images([Image.new("RGB", (8, 8))])


def test_download_off_falls_back_to_perceptual_with_the_reason(tmp_path):
    desc, why = d.resolve_descriptor("sscd", models_root=tmp_path, download=False)
    assert desc.name == "perceptual"
    assert "downloading is off" in why and d.SSCD_URL in why and str(tmp_path / "sscd") in why
    assert "perceptual descriptor" in why
    with pytest.raises(LorakitError, match="place it in"):
        d.descriptor_from_name("sscd", models_root=tmp_path, download=False)
    with pytest.raises(NotFound, match="No SSCD model file"):  # a local file named but missing: no fallback
        d.resolve_descriptor(f"sscd:{tmp_path / 'none.pt'}", models_root=tmp_path)


def test_a_failed_download_falls_back_and_leaves_no_part_file(tmp_path, monkeypatch):
    monkeypatch.setattr(d, "SSCD_URL", "http://127.0.0.1:9/sscd_disc_mixup.torchscript.pt")  # nothing listens
    desc, why = d.resolve_descriptor("sscd", models_root=tmp_path)
    assert desc.name == "perceptual" and "downloading it failed" in why and "127.0.0.1:9" in why
    assert list((tmp_path / "sscd").iterdir()) == []


@pytest.fixture
def served(tmp_path):
    """A real HTTP server over a folder holding the tiny model under SSCD's file name."""
    folder = tmp_path / "site"
    save_tiny_sscd(folder / d.SSCD_FILE)
    (folder / "empty.pt").write_bytes(b"")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


def test_sscd_is_downloaded_once_into_the_models_folder(tmp_path, served, monkeypatch):
    monkeypatch.setattr(d, "SSCD_URL", f"{served}/{d.SSCD_FILE}")
    models = tmp_path / "models"
    desc, why = d.resolve_descriptor("sscd", models_root=models)
    assert why == "" and desc.name == "sscd" and desc.id == "sscd/disc_mixup"
    assert [p.name for p in (models / "sscd").iterdir()] == [d.SSCD_FILE]
    assert desc.embed_images([Image.new("RGB", (40, 40), (0, 90, 200))]).shape == (1, 32)
    monkeypatch.setattr(d, "SSCD_URL", "http://127.0.0.1:9/gone")  # a second use fetches nothing
    assert d.resolve_descriptor("sscd", models_root=models)[0].name == "sscd"


def test_an_empty_download_is_not_kept(tmp_path, served, monkeypatch):
    monkeypatch.setattr(d, "SSCD_URL", f"{served}/empty.pt")
    desc, why = d.resolve_descriptor("sscd", models_root=tmp_path)
    assert desc.name == "perceptual" and "empty file" in why
    assert list((tmp_path / "sscd").iterdir()) == []


# --- CLIP ---------------------------------------------------------------------------------------------------------

def test_clip_wraps_the_projects_embedder(tmp_path, pics):
    from tiny_clip import register_tiny_clip, save_tiny_checkpoint

    from lib_lorakit.embed.models import OpenClipEmbedder

    model = register_tiny_clip(tmp_path)
    weights = save_tiny_checkpoint(tmp_path / "tiny.pt")
    embedder = OpenClipEmbedder(model, str(weights), cache_dir=tmp_path / "cache", download=False)
    desc = d.descriptor_from_name("clip", models_root=tmp_path, clip_embedder=embedder)
    assert (desc.name, desc.threshold, desc.id) == ("clip", 0.95, embedder.id)
    assert desc.unit == "cosine similarity of CLIP image embeddings"
    images = list(pics.values())[:3]
    v = desc.embed_images(images)
    np.testing.assert_allclose(v, embedder.embed_images(images), atol=1e-6)
    np.testing.assert_allclose(desc.embed_prepared(np.stack([desc.prepare(im) for im in images])), v, atol=1e-5)
    assert desc.embed_texts(["a cat"]) is None
