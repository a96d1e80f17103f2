"""WD14 tagger on a tiny model built here: scores as an independent numpy computation says, thresholds,
categories, order, spelling options, and the model store's messages."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from awkward import pattern
from PIL import Image
from tiny_wd14 import (
    SIZE,
    TAGS,
    away_from,
    build_model,
    build_tiny_wd14,
    reference_scores,
    reference_tags,
    write_tags_csv,
)

from lib_lorakit.errors import LorakitError
from lib_lorakit.taggers.base import Tagger
from lib_lorakit.taggers.models import DEFAULT_WD14, KNOWN_WD14, MODEL_FILES, resolve_wd14_model
from lib_lorakit.taggers.wd14 import WD14Options, WD14Tagger, load_labels


def pictures() -> dict[str, Image.Image]:
    """Flat colours, a wide and a tall picture (padding matters), textured patterns."""
    pics = {c: Image.new("RGB", (48, 48), c) for c in ("red", "green", "blue", "white")}
    pics["teal wide"] = Image.new("RGB", (80, 30), (0, 200, 100))
    pics["dark tall"] = Image.new("RGB", (20, 70), (30, 30, 60))
    for seed in (1, 2, 3):
        pics[f"pattern {seed}"] = Image.fromarray(pattern(seed, 64 + 16 * seed, 56))
    return pics


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_wd14(tmp_path_factory.mktemp("wd14") / "tiny-wd14")


@pytest.fixture(scope="module")
def fixed_dir(tmp_path_factory) -> Path:
    return build_tiny_wd14(tmp_path_factory.mktemp("wd14") / "tiny-wd14-b1", fixed_batch=1)


def run(tagger: WD14Tagger, images: list[Image.Image]):
    return tagger.predict(np.stack([tagger.prepare(im) for im in images]))


def as_pairs(image_tags) -> list[tuple[str, str]]:
    return [(t.tag, t.category) for t in image_tags.tags]


# --- scores and tags --------------------------------------------------------------------------------------------

def test_it_is_a_tagger_on_the_cpu(model_dir, fixed_dir):
    tagger = WD14Tagger(model_dir)
    assert isinstance(tagger, Tagger)
    assert tagger.name == "tiny-wd14"
    assert tagger.device.startswith("CPU")
    assert tagger.input_size == SIZE
    assert tagger.batch_limit > 8, "a model with a free batch dimension takes large batches"
    assert WD14Tagger(fixed_dir).batch_limit == 1, "a model fixed to batch 1 says so"


def test_scores_match_an_independent_computation(model_dir, fixed_dir):
    pics = list(pictures().values())
    want = np.stack([reference_scores(p) for p in pics])
    for folder in (model_dir, fixed_dir):
        tagger = WD14Tagger(folder)
        got = tagger.scores(np.stack([tagger.prepare(p) for p in pics]))
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_default_tags_thresholds_categories_and_order(model_dir):
    pics = pictures()
    results = run(WD14Tagger(model_dir), list(pics.values()))
    seen = set()
    for (label, pic), found in zip(pics.items(), results, strict=True):
        scores = reference_scores(pic)
        assert away_from(scores), f"{label}: a score sits on a threshold; the test would prove nothing"
        assert as_pairs(found) == reference_tags(scores), label
        np.testing.assert_allclose([t.score for t in found.tags], sorted(
            [t.score for t in found.tags if t.category == "character"], reverse=True) + sorted(
            [t.score for t in found.tags if t.category == "general"], reverse=True), atol=0)
        seen |= {t.tag for t in found.tags}
    assert {"red theme", "blue theme", "green theme", "hatsune miku"} <= seen
    assert "red theme" in run(WD14Tagger(model_dir), [pics["red"]])[0].names
    assert "red theme" not in run(WD14Tagger(model_dir), [pics["blue"]])[0].names


def test_character_threshold_is_separate_from_general(model_dir):
    white = pictures()["white"]
    score = reference_scores(white)[[n for n, _ in TAGS].index("hatsune_miku")]
    assert 0.5 < score < 0.85
    assert "hatsune miku" not in run(WD14Tagger(model_dir), [white])[0].names
    found = run(WD14Tagger(model_dir, WD14Options(character_threshold=0.5)), [white])[0]
    assert found.tags[0].tag == "hatsune miku" and found.tags[0].category == "character"


def test_thresholds_and_rating_options(model_dir):
    pics = list(pictures().values())
    options = WD14Options(general_threshold=0.9, character_threshold=0.5, include_rating=True)
    for pic, found in zip(pics, run(WD14Tagger(model_dir, options), pics), strict=True):
        assert as_pairs(found) == reference_tags(reference_scores(pic), general=0.9, character=0.5, rating=True)
        assert found.tags[-1].category == "rating"
        assert [t.category for t in found.tags].count("rating") == 1
    plain = run(WD14Tagger(model_dir), pics)
    assert all(t.category != "rating" for found in plain for t in found.tags)


def test_exclusions_match_any_spelling(model_dir):
    pics = pictures()
    options = WD14Options(exclude=("Red Theme", "smile \\(happy\\)", "kirby_(series)"), include_rating=True)
    tagger = WD14Tagger(model_dir, options)
    red, blue, white = run(tagger, [pics["red"], pics["blue"], pics["white"]])
    assert "red theme" not in red.names and "kirby (series)" not in red.names
    assert "smile (happy)" not in blue.names and "blue theme" in blue.names
    assert "smile (happy)" not in white.names and "white background" in white.names
    no_rating = WD14Tagger(model_dir, WD14Options(exclude=("general",), include_rating=True))
    assert all(t.category != "rating" for t in run(no_rating, [pics["white"]])[0].tags), \
        "an excluded top rating is dropped, not replaced by a less likely one"


def test_underscores_kaomoji_and_escaping(model_dir):
    white = pictures()["white"]
    names = run(WD14Tagger(model_dir), [white])[0].names
    assert "^_^" in names and "long hair" in names and "smile (happy)" in names
    kept = run(WD14Tagger(model_dir, WD14Options(underscores_to_spaces=False)), [white])[0].names
    assert "long_hair" in kept and "smile_(happy)" in kept and "^_^" in kept
    escaped = run(WD14Tagger(model_dir, WD14Options(escape_parentheses=True)), [white])[0].names
    assert "smile \\(happy\\)" in escaped and "long hair" in escaped


@pytest.mark.parametrize("size", [SIZE, 448])
def test_prepare_is_exactly_pad_to_white_square_then_bicubic(tmp_path, size):
    tagger = WD14Tagger(build_tiny_wd14(tmp_path / "m", size=size))
    rng = np.random.default_rng(size)
    for w, h in [(2048, 1536), (1024, 1365), (640, 480), (101, 37), (37, 101), (33, 31), (5, 3), (450, 449),
                 (size, size // 2), (size + 1, size), (300, 300)]:
        picture = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        side = max(w, h)
        square = np.full((side, side, 3), 255, np.uint8)
        square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = picture
        want = np.asarray(Image.fromarray(square).resize((size, size), Image.BICUBIC))[:, :, ::-1]
        got = tagger.prepare(Image.fromarray(picture))
        assert got.dtype == np.float32 and got.flags.c_contiguous
        assert np.array_equal(got, want.astype(np.float32)), (w, h)


def test_model_fixed_to_batch_one_takes_a_batch_of_eight(fixed_dir):
    pics = list(pictures().values())[:8]
    found = run(WD14Tagger(fixed_dir), pics)
    assert [as_pairs(f) for f in found] == [reference_tags(reference_scores(p)) for p in pics]


def test_session_does_not_spin_idle_threads(model_dir):
    options = WD14Tagger(model_dir)._load().session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_unload_then_use_again(model_dir):
    tagger = WD14Tagger(model_dir)
    red = pictures()["red"]
    before = run(tagger, [red])[0]
    tagger.unload()
    assert run(tagger, [red])[0] == before


# --- options and files that are wrong ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needle", [
    ({"general_threshold": 1.5}, "general_threshold: expected a probability above 0 and at most 1, got 1.5"),
    ({"character_threshold": 0}, "character_threshold: expected a probability above 0 and at most 1, got 0"),
    ({"general_threshold": "high"}, "got 'high'"),
    ({"general_threshold": float("nan")}, "got nan"),
    ({"include_rating": "yes"}, "include_rating: expected true or false, got 'yes'"),
    ({"exclude": "red_theme"}, "exclude: expected a list of tags, got 'red_theme'"),
    ({"exclude": ("ok", 3)}, "exclude[1]: expected a tag (text), got 3"),
])
def test_bad_options_echo_the_value(kwargs, needle):
    with pytest.raises(LorakitError) as e:
        WD14Options(**kwargs)
    assert needle in str(e.value)


def test_exclude_given_as_a_list_becomes_a_tuple():
    assert WD14Options(exclude=["a", "b"]).exclude == ("a", "b")


def test_labels_read_and_malformed_csv(tmp_path):
    labels = load_labels(write_tags_csv(tmp_path / "ok.csv"))
    assert labels.names[4] == "red_theme" and list(labels.categories[:5]) == [9, 9, 9, 9, 0]
    cases = {
        "empty.csv": ("", "not a WD14 tag list"),
        "header.csv": ("id,tag,kind\n1,a,0\n", "tag_id,name,category,count"),
        "category.csv": ("tag_id,name,category,count\n1,a,0,5\n2,b,general,4\n", "line 3"),
        "short.csv": ("tag_id,name,category,count\n1,a\n", "line 2"),
        "nothing.csv": ("tag_id,name,category,count\n", "lists no tags"),
    }
    for name, (text, needle) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(LorakitError) as e:
            load_labels(tmp_path / name)
        assert needle in str(e.value) and name in str(e.value), (name, str(e.value))


def test_model_and_tag_list_of_different_sizes(tmp_path):
    folder = build_tiny_wd14(tmp_path / "m")
    write_tags_csv(folder / "selected_tags.csv", TAGS[:-1])
    tagger = WD14Tagger(folder)
    with pytest.raises(LorakitError, match="different models"):
        run(tagger, [pictures()["red"]])


def test_incomplete_model_file_says_what_to_do(tmp_path):
    folder = build_tiny_wd14(tmp_path / "m")
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(LorakitError) as e:
        _ = WD14Tagger(folder).device
    assert str(folder / "model.onnx") in str(e.value) and "download it again" in str(e.value)


def test_a_model_that_is_not_a_tagger_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "nchw",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 32, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path / "nchw"
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"))
    write_tags_csv(folder / "selected_tags.csv")
    with pytest.raises(LorakitError, match=r"not a WD14 tagger: its input is shaped \[1, 3, 32, 32\]"):
        _ = WD14Tagger(folder).batch_limit


# --- the model store --------------------------------------------------------------------------------------------

def test_store_knows_the_smilingwolf_models():
    assert DEFAULT_WD14 == "wd-vit-tagger-v3"
    assert KNOWN_WD14["wd-eva02-large-tagger-v3"] == "SmilingWolf/wd-eva02-large-tagger-v3"
    assert KNOWN_WD14["wd-v1-4-moat-tagger-v2"] == "SmilingWolf/wd-v1-4-moat-tagger-v2"
    assert len(KNOWN_WD14) == 10


def test_store_uses_a_local_folder_as_is(model_dir, tmp_path):
    assert resolve_wd14_model(str(model_dir), tmp_path / "store") == model_dir
    assert not (tmp_path / "store").exists()


def test_store_refuses_a_folder_missing_a_file(tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    write_tags_csv(folder / "selected_tags.csv")
    with pytest.raises(LorakitError) as e:
        resolve_wd14_model(str(folder), tmp_path / "store")
    assert str(folder) in str(e.value) and "lacks model.onnx" in str(e.value)


def test_store_refuses_an_unknown_name(tmp_path):
    with pytest.raises(LorakitError) as e:
        resolve_wd14_model("wd-made-up-tagger", tmp_path / "store")
    assert "wd-made-up-tagger" in str(e.value) and DEFAULT_WD14 in str(e.value)


def test_store_finds_a_known_model_already_in_place(tmp_path):
    root = tmp_path / "store"
    build_tiny_wd14(root / DEFAULT_WD14)
    assert resolve_wd14_model(DEFAULT_WD14, root) == root / DEFAULT_WD14
    assert resolve_wd14_model(f"SmilingWolf/{DEFAULT_WD14}", root, download=False) == root / DEFAULT_WD14


def _says_where_to_put_it(message: str, name: str, folder: Path) -> None:
    assert name in message and str(folder) in message
    assert all(f in message for f in MODEL_FILES)
    assert f"https://huggingface.co/SmilingWolf/{name}" in message


def test_store_without_download_says_where_to_put_the_files(tmp_path):
    root = tmp_path / "store"
    with pytest.raises(LorakitError) as e:
        resolve_wd14_model("wd-swinv2-tagger-v3", root, download=False)
    _says_where_to_put_it(str(e.value), "wd-swinv2-tagger-v3", root / "wd-swinv2-tagger-v3")


def test_store_offline_download_refused(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    root = tmp_path / "store"
    with pytest.raises(LorakitError) as e:
        resolve_wd14_model(DEFAULT_WD14, root)
    _says_where_to_put_it(str(e.value), DEFAULT_WD14, root / DEFAULT_WD14)
    assert list(root.iterdir()) == [], "nothing half-downloaded is left behind"


def test_store_without_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(LorakitError) as e:
        resolve_wd14_model(DEFAULT_WD14, tmp_path / "store")
    assert "huggingface_hub" in str(e.value)
    _says_where_to_put_it(str(e.value), DEFAULT_WD14, tmp_path / "store" / DEFAULT_WD14)


def _fake_hub(monkeypatch, fail_on: str | None = None) -> list[str]:
    """hf_hub_download writing a tiny model into local_dir, failing on one file if asked."""
    import huggingface_hub

    calls = []

    def fake(*, repo_id, filename, local_dir, **kwargs):
        calls.append(f"{repo_id}/{filename}")
        if filename == fail_on:
            raise OSError("connection reset")
        target = Path(local_dir) / filename
        if filename == "model.onnx":
            build_model(target)
        else:
            write_tags_csv(target)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return calls


def test_store_downloads_a_known_model_once(tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch)
    root = tmp_path / "store"
    folder = resolve_wd14_model("wd-convnext-tagger-v3", root)
    assert folder == root / "wd-convnext-tagger-v3"
    assert sorted(p.name for p in folder.iterdir()) == sorted(MODEL_FILES)
    assert [p.name for p in root.iterdir()] == ["wd-convnext-tagger-v3"], "no download folder left behind"
    assert calls == [f"SmilingWolf/wd-convnext-tagger-v3/{f}" for f in MODEL_FILES]
    assert resolve_wd14_model("wd-convnext-tagger-v3", root) == folder
    assert len(calls) == 2, "a model in place is not downloaded again"
    assert WD14Tagger(folder).device.startswith("CPU")


def test_interrupted_download_never_looks_complete(tmp_path, monkeypatch):
    _fake_hub(monkeypatch, fail_on="selected_tags.csv")
    root = tmp_path / "store"
    with pytest.raises(LorakitError) as e:
        resolve_wd14_model(DEFAULT_WD14, root)
    assert "connection reset" in str(e.value)
    _says_where_to_put_it(str(e.value), DEFAULT_WD14, root / DEFAULT_WD14)
    assert list(root.iterdir()) == [], "neither the model folder nor a part-download remains"
