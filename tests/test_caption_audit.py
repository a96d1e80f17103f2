"""The caption audit on real datasets: each planted defect is found with exactly its images, a clean dataset
raises nothing, and the categories file can be copied, edited and is checked."""

from __future__ import annotations

import functools
import random
import threading

import pytest
from awkward import encode, jpeg_bytes, pattern
from PIL import Image

from lib_lorakit.captions.audit import AuditReport, _similar_sets, audit, ensure_categories_file, load_categories
from lib_lorakit.captions.ops import CaptionOp, execute
from lib_lorakit.captions.store import CaptionStore
from lib_lorakit.errors import Cancelled, LorakitError, NotFound

TRIGGER = "zz style"
ANGLES = ["from above", "from below", "from side", "straight-on"]
DISTANCES = ["full body", "upper body", "cowboy shot", "portrait"]
GAZES = ["looking at viewer", "looking away", "looking up", "looking down"]
EYES = ["open eyes", "wink", "narrowed eyes", "wide-eyed"]
MOUTHS = ["smile", "open mouth", "closed mouth", "frown"]
POSES = ["standing", "sitting", "kneeling", "walking", "lying"]
CLOTHES = ["red dress", "school uniform", "leather jacket", "kimono", "swimsuit"]
BACKGROUNDS = ["forest", "city", "beach", "bedroom", "simple background"]


def caption(i: int, *, name: str, drop: tuple[str, ...] = (), extra: tuple[str, ...] = (),
            background: str | None = None, trigger: bool = True) -> str:
    """A well-formed caption: every category present, values rotating with `i`, one tag unique to the image."""
    parts = {"angle": ANGLES[i % 4], "distance": DISTANCES[(i + 1) % 4], "gaze": GAZES[(i + 2) % 4],
             "eyes": EYES[(i + 3) % 4], "mouth": MOUTHS[i % 4], "pose": POSES[i % 5], "clothes": CLOTHES[i % 5],
             "background": background or BACKGROUNDS[(i + 2) % 5]}
    tags = [v for k, v in parts.items() if k not in drop] + [f"detail {name}", *extra]
    return ", ".join(([TRIGGER] if trigger else []) + tags)


@functools.cache
def png(seed: int) -> bytes:
    return encode(Image.fromarray(pattern(seed, 64, 64)), "PNG")


def plant(folder, name: str, seed: int, text: str | None, ext: str = ".txt") -> str:
    (folder / f"{name}.png").write_bytes(png(seed))
    if text is not None:
        (folder / f"{name}{ext}").write_text(text + "\n", encoding="utf-8")
    return f"{folder.parent.name}/{folder.name}/{name}.png"


FILLER = ", ".join(f"extra detail number {n}" for n in range(12))  # ~110 CLIP tokens with the rest
HUGE = ", ".join(f"extra detail number {n}" for n in range(45))  # ~265 CLIP tokens


@pytest.fixture
def planted(project):
    """A project with one of every defect; returns (project, the images each finding must list)."""
    project.update_settings(trigger_words=[TRIGGER])
    alpha = project.add_concept("alpha", repeats=2).folder
    beta = project.add_concept("beta").folder
    gamma = project.add_concept("gamma").folder
    people = project.add_concept("people", kind="reg").folder
    big = ("large breasts",)
    a = {
        "a01": plant(alpha, "a01", 1, caption(0, name="pair", extra=big)),
        "a02": plant(alpha, "a02", 2, caption(0, name="pair", extra=big)),  # same caption, other picture
        "a03": plant(alpha, "a03", 3, caption(1, name="a03", extra=big, drop=("gaze",))),
        "a04": plant(alpha, "a04", 4, caption(2, name="a04", extra=big, drop=("pose",))),
        "a05": plant(alpha, "a05", 5, caption(3, name="a05", trigger=False)),
        "a06": plant(alpha, "a06", 6, caption(4, name="a06", extra=(TRIGGER, *big), trigger=False)),
        "a07": plant(alpha, "a07", 7, caption(5, name="a07", extra=(*big, FILLER))),
        "a08": plant(alpha, "a08", 8, TRIGGER),
        "a09": plant(alpha, "a09", 9, caption(6, name="a09"), ext=".caption"),
        "a10": plant(alpha, "a10", 10, None),
        "a12": plant(alpha, "a12", 12, caption(7, name="a12", extra=(HUGE,))),
        "a13": plant(alpha, "a13", 13, ""),
    }
    (alpha / "a11.png").write_bytes(png(11)[:150])  # unreadable: skipped, although its caption lacks everything
    (alpha / "a11.txt").write_text("broken")
    b = [plant(beta, f"b{i}", 20 + i, caption(i, name=f"b{i}", background="white background")) for i in range(5)]
    (gamma / "g1.png").write_bytes(png(30))
    (gamma / "g2.jpg").write_bytes(jpeg_bytes(pattern(30, 64, 64), quality=90))  # the same picture
    for stem in ("g1", "g2"):
        (gamma / f"{stem}.txt").write_text(caption(9, name="gamma") + "\n")
    p1 = plant(people, "p1", 40, None)  # reg images without captions are normal (class token)
    plant(people, "p2", 41, "woman, standing")
    p3 = plant(people, "p3", 42, "woman", ext=".caption")
    expected = {
        ("CAPTION_EXT_MISMATCH", "error"): [a["a09"], p3],
        ("OVERLONG_CAPTION", "error"): [a["a12"]],
        ("DOMINANT_TAG", "warning"): [a[k] for k in ("a01", "a02", "a03", "a04", "a06", "a07")],
        ("EMPTY_CAPTION", "warning"): [a["a08"], a["a13"]],
        ("IDENTICAL_CAPTIONS", "warning"): [a["a01"], a["a02"]],
        ("LOW_VARIETY", "warning"): b,
        ("OVERLONG_CAPTION", "warning"): [a["a07"]],
        ("TRIGGER_MISSING", "warning"): [a["a05"], a["a06"]],
        ("UNTAGGED_IMAGE", "warning"): [a["a10"]],
        ("MISSING_CATEGORY", "info"): [[a["a03"]], [a["a04"]]],
    }
    assert p1 not in str(expected)
    return project, expected


def found(report: AuditReport) -> dict:
    out: dict = {}
    for f in report.findings:
        key = (f.code, f.severity)
        if f.code == "MISSING_CATEGORY":
            out.setdefault(key, []).append(f.images)
        else:
            assert key not in out, f"{key} reported twice"
            out[key] = f.images
    return out


def test_every_planted_defect_is_found_with_exactly_its_images(planted):
    project, expected = planted
    report = audit(project)
    assert found(report) == expected
    assert report.codes() == ["CAPTION_EXT_MISMATCH", "OVERLONG_CAPTION", "DOMINANT_TAG", "EMPTY_CAPTION",
                              "IDENTICAL_CAPTIONS", "LOW_VARIETY", "OVERLONG_CAPTION", "TRIGGER_MISSING",
                              "UNTAGGED_IMAGE", "MISSING_CATEGORY", "MISSING_CATEGORY"]
    missing = {f.data["category"]: f.images for f in report.findings if f.code == "MISSING_CATEGORY"}
    assert missing == {"gaze": expected[("MISSING_CATEGORY", "info")][0],
                       "pose": expected[("MISSING_CATEGORY", "info")][1]}
    assert report.tokens_estimated is False


def test_findings_explain_themselves_and_carry_their_fix(planted):
    project, _ = planted
    report = audit(project)
    by_code = {f.code: f for f in report.findings}
    for f in report.findings:
        assert f.why.startswith(("seeds/000", "seeds/002", "seeds/003")) and "\n" not in f.why
        assert f.fix and f.detail
        assert set(f.to_dict()) == {"code", "severity", "images", "detail", "why", "fix", "data"}
    assert "third hand" in by_code["IDENTICAL_CAPTIONS"].why
    assert "busty" in by_code["DOMINANT_TAG"].why
    dominant = by_code["DOMINANT_TAG"]
    assert dominant.fix.startswith("Prune into trigger")
    assert (dominant.data["tag"], dominant.data["concept"]) == ("large breasts", "alpha")
    assert "'large breasts' is on 6 of 8 captioned images of concept 'alpha' (75%)" in dominant.detail
    assert by_code["TRIGGER_MISSING"].fix.startswith("Set the trigger word")
    assert by_code["UNTAGGED_IMAGE"].fix.startswith("Tag untagged images")
    assert by_code["LOW_VARIETY"].data["tag"] == "white background"
    assert AuditReport.from_dict(report.to_dict()) == report


def test_the_one_click_fixes_make_their_findings_go_away(planted):
    project, _ = planted
    store = CaptionStore(project)
    report = audit(project)
    for code in ("DOMINANT_TAG", "TRIGGER_MISSING"):
        op = next(f for f in report.findings if f.code == code).data["op"]
        execute(store, CaptionOp.from_dict(op))
    store.adopt_other_extension()
    codes = audit(project).codes()
    assert "DOMINANT_TAG" not in codes and "TRIGGER_MISSING" not in codes and "CAPTION_EXT_MISMATCH" not in codes
    assert "IDENTICAL_CAPTIONS" in codes


def test_thresholds_are_settings(planted):
    project, _ = planted
    codes = audit(project, dominant_threshold=0.8, max_tokens=150, low_variety_threshold=1.0).codes()
    assert "DOMINANT_TAG" not in codes  # 75% < 80%
    assert codes.count("OVERLONG_CAPTION") == 1  # only past 225 now
    assert "LOW_VARIETY" in codes  # 5 of 5 is 100%
    assert "LOW_VARIETY" not in audit(project, min_images=6).codes()  # beta has 5 images
    with pytest.raises(LorakitError, match="near_identical: expected a number from 0.01 to 1, got 1.5"):
        audit(project, near_identical=1.5)


@pytest.fixture
def clean(project):
    """Eight distinct pictures, well captioned, trigger first; a reg set of untagged images."""
    project.update_settings(trigger_words=[TRIGGER])
    folder = project.add_concept("clean", repeats=4).folder
    for i in range(8):
        plant(folder, f"c{i}", 100 + i, caption(i, name=f"c{i}"))
    people = project.add_concept("people", kind="reg").folder
    for i in range(3):
        plant(people, f"p{i}", 200 + i, None)
    return project


def test_a_clean_dataset_raises_nothing(clean):
    assert audit(clean).findings == []


def test_near_identical_captions_count_and_duplicates_do_not(clean):
    folder = clean.concept("clean").folder
    base = caption(0, name="c0")  # the trigger word and 9 tags
    plant(folder, "c8", 108, base + ", one more tag")  # c0's 9 tags of 10: Jaccard 0.9
    report = audit(clean, near_identical=0.9)
    [f] = [f for f in report.findings if f.code == "IDENTICAL_CAPTIONS"]
    assert f.images == ["dataset/4_clean/c0.png", "dataset/4_clean/c8.png"]
    assert "nearly the same" in f.detail
    assert "IDENTICAL_CAPTIONS" not in audit(clean, near_identical=0.95).codes()
    (folder / "c8.txt").write_text(base.replace("detail c0", "detail c8") + "\n")  # 8 shared of 10: 0.8
    assert "IDENTICAL_CAPTIONS" not in audit(clean).codes()
    (folder / "c8.png").write_bytes(jpeg_bytes(pattern(100, 64, 64), quality=85))  # now a copy of c0's picture
    (folder / "c8.txt").write_text(base + "\n")
    assert "IDENTICAL_CAPTIONS" not in audit(clean).codes()


def test_an_edited_categories_file_changes_the_audit(clean, tmp_path):
    dest = ensure_categories_file(tmp_path / "my" / "categories.toml")
    assert dest.read_text() == load_categories.__globals__["DEFAULT_CATEGORIES"].read_text()
    text = dest.read_text().replace('patterns = ["^looking\\\\b"]', 'patterns = ["^looking\\\\b", "^stares$"]')
    text += '\n[categories.lighting]\nrequired = true\ntags = ["backlighting", "rim light"]\n'
    dest.write_text(text)
    assert ensure_categories_file(dest).read_text() == text  # never overwritten
    [f] = audit(clean, categories_file=dest).findings
    assert (f.code, f.data["category"], len(f.images)) == ("MISSING_CATEGORY", "lighting", 8)


@pytest.mark.parametrize("body, message", [
    ("[categories.gaze]\ntags = 'looking up'\n", r"gaze.tags: expected a list of strings, got 'looking up'"),
    ("[categories.gaze]\ntags = ['a']\nrequired = 'yes'\n", "categories.gaze.required: expected true or false"),
    ("[categories.gaze]\ntags = ['a']\ncolour = 1\n", r"unknown key\(s\) colour"),
    ("[categories.gaze]\npatterns = ['(unclosed']\n", r"'\(unclosed' is not a valid regular expression"),
    ("[categories.gaze]\nrequired = true\n", "needs tags or patterns"),
    ("[gaze]\ntags = ['a']\n", r"expected \[categories.<name>\] tables"),
    ("[categories.gaze\n", "is not valid TOML"),
])
def test_a_bad_categories_file_is_reported_clearly(tmp_path, body, message):
    path = tmp_path / "categories.toml"
    path.write_text(body)
    with pytest.raises(LorakitError, match=message):
        load_categories(path)


def test_a_missing_categories_file_says_how_to_make_one(tmp_path):
    with pytest.raises(NotFound, match="ensure_categories_file"):
        load_categories(tmp_path / "none.toml")


def test_the_default_categories_cover_the_guide_and_the_clip_vocabularies():
    categories = {c.name: c for c in load_categories()}
    assert {n for n, c in categories.items() if c.required} == {"camera angle", "shot distance", "gaze",
                                                                "eye state", "mouth", "pose"}
    assert {n for n, c in categories.items() if c.variety} == {"clothing", "background"}
    assert categories["pose"].matches("sukhasana") and categories["gaze"].matches("looking to the left")
    assert categories["clothing"].matches("white shirt") and not categories["clothing"].matches("blue eyes")


def test_cancel_stops_the_audit(clean):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        audit(clean, cancel=cancel)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9])
def test_near_identical_search_finds_exactly_the_pairs_a_full_comparison_finds(threshold):
    rng = random.Random(threshold)
    base = [frozenset(rng.sample(range(40), rng.randint(3, 12))) for _ in range(30)]
    sets = list(dict.fromkeys([frozenset(map(str, s)) for s in base] +  # plus near copies of them
                              [frozenset(map(str, set(s) ^ {rng.randrange(40)})) for s in base]))
    brute = {(i, j) for i in range(len(sets)) for j in range(i + 1, len(sets))
             if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold}
    assert set(_similar_sets(sets, threshold)) == brute and brute
