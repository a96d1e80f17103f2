"""The CLIP tagger: vocabulary files a user edits, and the ranking checked against open_clip computed by hand.

The model is a tiny random-weight CLIP (tests/tiny_clip.py): its answers mean nothing, but they are a function of
the image that the tagger must reproduce exactly: the same preprocessing, embeddings, softmax, top-k and
threshold as a reference written here with open_clip's own encode_image/encode_text.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from tiny_clip import register_tiny_clip, save_tiny_checkpoint

from lib_lorakit.errors import LorakitError, NotFound
from lib_lorakit.taggers.base import Tagger
from lib_lorakit.taggers.clip import (
    DEFAULT_CATEGORIES,
    DEFAULT_VOCAB_DIR,
    ClipOptions,
    ClipOptionsError,
    CLIPTagger,
    ensure_vocabularies,
    load_vocabularies,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_the_torchvision_fix_is_lazy_idempotent_and_lets_torchvision_import():
    code = ("import sys, lib_lorakit.torchvision_shim as shim\n"
            "assert 'torch' not in sys.modules, 'imported torch too early'\n"
            "first, again = shim.ensure_torchvision_importable(), shim.ensure_torchvision_importable()\n"
            "import torchvision.transforms, open_clip\n"
            "print(first, again, shim.ensure_torchvision_importable())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    first, again, after_import = out.stdout.split()
    assert first in ("True", "False")  # True where torchvision's compiled operators cannot load (CPU torch here)
    assert (again, after_import) == ("False", "False")


# --- vocabularies ------------------------------------------------------------------------------------------------


def test_the_default_vocabularies_cover_every_category_with_8_to_30_terms(tmp_path):
    vocab = load_vocabularies(DEFAULT_VOCAB_DIR)
    assert tuple(vocab) == DEFAULT_CATEGORIES
    assert all(8 <= len(terms) <= 30 for terms in vocab.values()), {c: len(t) for c, t in vocab.items()}
    # booru spellings, so CLIP's words and WD14's tags merge instead of repeating each other
    assert {"from above", "from below", "dutch angle", "pov", "straight-on"} <= set(vocab["camera angle"])
    assert {"close-up", "upper body", "cowboy shot", "full body", "wide shot"} <= set(vocab["shot distance"])
    assert {"looking at viewer", "looking away", "looking back", "closed eyes"} <= set(vocab["gaze"])


def test_vocabulary_files_skip_comments_blank_lines_and_repeats(tmp_path, caplog):
    (tmp_path / "camera_angle.txt").write_text(
        "# where the camera stands\n\nfrom above\n  from  above   # the same term, spaced\nFrom_Above\n"
        "dutch angle # tilted\n   \npov, straight-on\n", encoding="utf-8")
    (tmp_path / "weather.txt").write_text("rain\nsnow\n", encoding="utf-8")
    (tmp_path / "gaze.txt").write_text("# nothing yet\n\n", encoding="utf-8")
    (tmp_path / "style.txt").write_bytes("café racer\nfauvism\n".encode("cp1252"))
    with caplog.at_level(logging.WARNING, logger="lib_lorakit.taggers.clip"):
        vocab = load_vocabularies(tmp_path)
    assert vocab == {"style": ("café racer", "fauvism"),
                     "camera angle": ("from above", "dutch angle", "pov", "straight-on"),
                     "weather": ("rain", "snow")}  # the user's own category comes after the shipped ones
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "gaze.txt" in warnings and "skipped" in warnings
    assert "style.txt is not UTF-8" in warnings and "cp1252" in warnings


def test_a_missing_vocabulary_folder_is_named(tmp_path):
    with pytest.raises(NotFound, match="nowhere"):
        load_vocabularies(tmp_path / "nowhere")


def test_ensure_vocabularies_keeps_user_edits_and_restores_missing_files(tmp_path):
    folder = ensure_vocabularies(tmp_path / "vocab")
    shipped = sorted(p.name for p in DEFAULT_VOCAB_DIR.glob("*.txt"))
    assert sorted(p.name for p in folder.glob("*.txt")) == shipped
    assert (folder / "gaze.txt").read_bytes() == (DEFAULT_VOCAB_DIR / "gaze.txt").read_bytes()

    (folder / "lighting.txt").write_text("candlelight\nneon glow\n", encoding="utf-8")
    (folder / "gaze.txt").unlink()
    (folder / "weather.txt").write_text("fog\n", encoding="utf-8")
    ensure_vocabularies(folder)
    assert (folder / "lighting.txt").read_text(encoding="utf-8") == "candlelight\nneon glow\n"
    assert (folder / "gaze.txt").read_bytes() == (DEFAULT_VOCAB_DIR / "gaze.txt").read_bytes()
    vocab = load_vocabularies(folder)
    assert vocab["lighting"] == ("candlelight", "neon glow") and vocab["weather"] == ("fog",)


# --- options -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"top_k": 0}, "clip.top_k: expected an integer ≥ 1, got 0"),
    ({"top_k": True}, "clip.top_k: expected an integer ≥ 1, got True"),
    ({"min_score": 1.5}, "clip.min_score: expected a number from 0 to 1, got 1.5"),
    ({"model": " "}, "clip.model: expected a non-empty text, got ' '"),
    ({"categories": "gaze"}, "clip.categories: expected a list of category names or none, got 'gaze'"),
    ({"categories": ["gaze", 3]}, "clip.categories[1]: expected a category name, got 3"),
    ({"prompt": "a photo"}, "clip.prompt: must contain {term}"),
])
def test_bad_options_name_the_setting_and_the_value(kwargs, message):
    with pytest.raises(ClipOptionsError) as info:
        ClipOptions(**kwargs)
    assert message in str(info.value) and isinstance(info.value, LorakitError)


def test_options_round_trip_and_refuse_unknown_settings():
    opts = ClipOptions.from_dict({"categories": ["colour_grading", "gaze"], "top_k": 2, "min_score": 0})
    assert opts.categories == ("colour grading", "gaze") and opts.min_score == 0.0
    assert ClipOptions.from_dict(opts.to_dict()) == opts
    with pytest.raises(ClipOptionsError, match="unknown setting.*threshold"):
        ClipOptions.from_dict({"threshold": 0.3})


# --- the model ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model's name and its checkpoint file; open_clip itself (imported after the torchvision fix)."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    pytest.importorskip("torch")
    name = register_tiny_clip(folder)
    return name, save_tiny_checkpoint(folder / "tiny.pt")


@pytest.fixture
def make_tagger(tiny, tmp_path):
    def make(**options) -> CLIPTagger:
        name, checkpoint = tiny
        opts = ClipOptions(model=name, pretrained=str(checkpoint), **options)
        return CLIPTagger(opts, vocab_dir=tmp_path / "vocab", cache_dir=tmp_path / "cache")
    return make


def _images() -> list[Image.Image]:
    """Pictures that differ in colour, layout and shape (non-square, so cropping matters)."""
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    gradient = Image.fromarray(np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (40, 1)), "L").convert("RGB")
    shapes = Image.new("RGB", (50, 70), "navy")
    ImageDraw.Draw(shapes).ellipse((5, 10, 45, 60), fill="orange")
    return [noise, gradient, shapes, Image.new("RGBA", (33, 33), (200, 30, 30, 128))]


def _reference(tiny, images, vocab, *, top_k, min_score):
    """What the tagger must answer, computed directly with open_clip: [image][category] → [(term, score)]."""
    import open_clip
    import torch

    name, checkpoint = tiny
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        image_features = model.encode_image(torch.stack([preprocess(i) for i in images]), normalize=True)
        answer = [{} for _ in images]
        for category, terms in vocab.items():
            text_features = model.encode_text(tokenizer(list(terms)), normalize=True)
            probs = (model.logit_scale.exp() * image_features @ text_features.T).softmax(dim=-1).numpy()
            for i, row in enumerate(probs):
                best = sorted(range(len(terms)), key=lambda j: -row[j])[:top_k]
                answer[i][category] = [(terms[j], float(row[j])) for j in best if row[j] >= min_score]
    return answer


def test_prepare_is_open_clips_own_preprocessing(tiny, make_tagger):
    import open_clip

    _, _, preprocess = open_clip.create_model_and_transforms(tiny[0], pretrained=str(tiny[1]))
    tagger = make_tagger()
    for image in _images():
        prepared = tagger.prepare(image)
        assert prepared.dtype == np.float32 and prepared.shape == (3, 32, 32)
        np.testing.assert_allclose(prepared, preprocess(image).numpy(), atol=1e-6)
    assert not tagger.loaded  # preparing needs no model


def test_ranking_matches_open_clip_computed_by_hand(tiny, make_tagger, tmp_path):
    images = _images()
    wanted = ("gaze", "style", "lighting")  # asked out of order: answers come in the vocabulary's order
    vocab = {c: t for c, t in load_vocabularies(ensure_vocabularies(tmp_path / "vocab")).items() if c in wanted}
    everything = _reference(tiny, images, vocab, top_k=3, min_score=0.0)
    scores = sorted(s for per_image in everything for found in per_image.values() for _, s in found)
    threshold = scores[len(scores) // 2]  # half of the top-3 terms fall below it
    expected = _reference(tiny, images, vocab, top_k=3, min_score=threshold)

    tagger = make_tagger(categories=wanted, top_k=3, min_score=threshold)
    assert isinstance(tagger, Tagger)
    results = tagger.predict(np.stack([tagger.prepare(i) for i in images]))
    assert len(results) == len(images)
    for result, reference in zip(results, expected, strict=True):
        assert [t.category for t in result.tags] == [c for c in ("style", "lighting", "gaze")
                                                   for _ in reference[c]]
        assert result.names == [term for c in ("style", "lighting", "gaze")
                                for term, _ in reference[c]]
        np.testing.assert_allclose([t.score for t in result.tags],
                                   [s for c in ("style", "lighting", "gaze") for _, s in reference[c]], atol=1e-5)
    kept = sum(len(r.tags) for r in results)
    assert 0 < kept < len(scores)  # the threshold really dropped some and kept some


def test_one_image_alone_or_in_a_batch_gets_the_same_tags(make_tagger):
    tagger = make_tagger(top_k=2)
    prepared = tagger.prepare(_images()[2])
    alone = tagger.predict(prepared[None])[0]
    batch = tagger.predict(np.stack([prepared] * 4))
    for other in batch:
        assert other.names == alone.names
        np.testing.assert_allclose([t.score for t in other.tags], [t.score for t in alone.tags], atol=1e-6)
    assert [t.category for t in alone.tags][::2] == list(DEFAULT_CATEGORIES)  # default: every category, in order


def test_an_edited_vocabulary_changes_the_terms_offered_from_the_next_load(make_tagger, tmp_path):
    tagger = make_tagger(categories=["gaze"], top_k=50)
    prepared = np.stack([tagger.prepare(i) for i in _images()[:2]])
    before = tagger.predict(prepared)
    assert set(before[0].names) == set(load_vocabularies(DEFAULT_VOCAB_DIR)["gaze"])

    (tmp_path / "vocab" / "gaze.txt").write_text("# mine\nstaring at the sea\neyes half open\nwinking\n",
                                                 encoding="utf-8")
    assert tagger.predict(prepared)[0].names == before[0].names  # the loaded model keeps its terms
    tagger.unload()
    after = tagger.predict(prepared)
    assert all(set(r.names) == {"staring at the sea", "eyes half open", "winking"} for r in after)
    assert abs(sum(t.score for t in after[0].tags) - 1.0) < 1e-5  # the softmax runs over the new terms only


def test_unload_frees_the_model_and_predict_loads_it_again(make_tagger):
    tagger = make_tagger()
    prepared = tagger.prepare(_images()[0])[None]
    first = tagger.predict(prepared)
    model = weakref.ref(tagger._loaded.model)
    tagger.unload()
    gc.collect()
    assert not tagger.loaded and model() is None
    tagger.unload()  # unloading twice is harmless
    again = tagger.predict(prepared)
    assert tagger.loaded and again[0].names == first[0].names


def test_the_device_is_the_cpu_here(make_tagger):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    tagger = make_tagger()
    assert tagger.device == "CPU" and tagger.name.endswith("/tiny.pt")
    with pytest.raises(LorakitError, match="no CUDA GPU"):
        _ = CLIPTagger(tagger.options, vocab_dir=tagger.vocab_dir, cache_dir=tagger.cache_dir, device="cuda").device


def test_offline_without_cached_weights_says_what_to_fetch_and_where(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        from huggingface_hub import constants
    except ImportError:
        pass
    else:  # read once when huggingface_hub is imported, which may have happened already
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "clip cache"
    tagger = CLIPTagger(ClipOptions(model="ViT-B-32", pretrained="openai"), vocab_dir=tmp_path / "vocab",
                        cache_dir=cache)
    with pytest.raises(LorakitError) as info:
        tagger.predict(np.zeros((1, 3, 224, 224), np.float32))
    message = str(info.value)
    assert "'openai'" in message and "ViT-B-32" in message and str(cache) in message
    assert "huggingface.co/" in message or "openaipublic" in message
    assert not tagger.loaded


def test_unknown_weights_or_categories_are_clear_errors(make_tagger, tiny, tmp_path):
    with pytest.raises(NotFound, match="'hair'.*hair.txt"):
        make_tagger(categories=["gaze", "hair"]).predict(np.zeros((1, 3, 32, 32), np.float32))
    tagger = CLIPTagger(ClipOptions(model="ViT-B-32", pretrained="no-such-weights"), vocab_dir=tmp_path / "v",
                        cache_dir=tmp_path / "c")
    with pytest.raises(LorakitError, match="no-such-weights.*known: .*openai"):
        tagger.predict(np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(LorakitError, match="no model named 'ViT-Q-99'"):
        CLIPTagger(ClipOptions(model="ViT-Q-99"), vocab_dir=tmp_path / "v", cache_dir=tmp_path / "c").prepare(
            Image.new("RGB", (8, 8)))


def test_text_embeddings_are_kept_on_disk_and_reused_until_something_changes(make_tagger, tmp_path, monkeypatch):
    from lib_lorakit.taggers import clip as clip_module

    tagger = make_tagger(categories=["gaze", "style"])
    prepared = np.stack([tagger.prepare(i) for i in _images()[:2]])
    first = tagger.predict(prepared)
    kept = sorted((tmp_path / "cache" / "text-embeddings").glob("*.npy"))
    assert len(kept) == 2  # one file per category
    tagger.unload()
    encoded = []
    real = clip_module._embed
    monkeypatch.setattr(clip_module, "_embed", lambda *a: encoded.append(a[2]) or real(*a))
    again = tagger.predict(prepared)
    assert encoded == []  # the second load encoded no text
    for a, b in zip(first, again, strict=True):
        assert a.names == b.names
        np.testing.assert_allclose([t.score for t in a.tags], [t.score for t in b.tags], atol=1e-6)
    # an edited vocabulary is encoded afresh; a damaged cache file is rebuilt, not fatal
    (tmp_path / "vocab" / "gaze.txt").write_text("winking\nstaring\n", encoding="utf-8")
    for path in kept:
        path.write_bytes(b"not numpy")
    tagger.unload()
    assert all({t.tag for t in r.tags if t.category == "gaze"} <= {"winking", "staring"}
               for r in tagger.predict(prepared))
    assert sorted(map(len, encoded)) == [2, len(load_vocabularies(tmp_path / "vocab")["style"])]
