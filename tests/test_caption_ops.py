"""Batch caption operations: the pure tag-list functions, the validated op, and plan/execute on real caption files
(the preview is exactly what gets written)."""

from __future__ import annotations

import pytest

from lib_lorakit.captions.ops import (
    CaptionOp,
    TagCount,
    add_tags,
    dedupe_tags,
    diff,
    execute,
    filter_records,
    frequency,
    plan,
    remove_tags,
    reorder_tags,
    replace_tag,
    set_triggers,
)
from lib_lorakit.captions.store import CaptionStore
from lib_lorakit.errors import LorakitError

T = ("zz style",)


# --- pure functions ---------------------------------------------------------------------------------------------
def test_set_triggers_puts_them_first_and_removes_old_copies():
    tags = ["smile", "old trig", "zz_style", "long hair"]
    assert set_triggers(tags, ["zz style", "second"], old=["old trig"]) == ["zz style", "second", "smile",
                                                                             "long hair"]
    assert set_triggers(["a", "ZZ Style", "b"], ["zz style"]) == ["zz style", "a", "b"]


def test_ops_keep_the_leading_trigger_words_first_and_untouched():
    tags = ["zz style", "smile", "long hair"]
    assert add_tags(tags, ["outdoors", "Smile"], "start", triggers=T) == ["zz style", "outdoors", "smile",
                                                                          "long hair"]
    assert add_tags(tags, ["outdoors"], "end", triggers=T) == ["zz style", "smile", "long hair", "outdoors"]
    assert remove_tags(tags, ["Long_Hair"], triggers=T) == ["zz style", "smile"]
    assert replace_tag(tags, "smile", ["grin", "open mouth"], triggers=T) == ["zz style", "grin", "open mouth",
                                                                              "long hair"]
    assert reorder_tags(["b", "zz style", "a"], order="alphabetical", triggers=T) == ["zz style", "a", "b"]


def test_replace_and_rename_work_in_place_by_key_without_repeating_tags():
    assert replace_tag(["a", "long_hair", "b"], "Long Hair", ["long hair"]) == ["a", "long hair", "b"]
    assert replace_tag(["a", "x", "b", "c"], "x", ["c", "d"]) == ["a", "c", "d", "b"]
    assert replace_tag(["a", "b"], "x", ["y"]) == ["a", "b"]
    assert replace_tag([r"smile \(happy\)", "b"], "smile (happy)", ["smile"]) == ["smile", "b"]


def test_reorder_by_frequency_alphabet_or_front():
    freq = {"a": 1, "b": 5, "c": 3}
    assert reorder_tags(["a", "b", "c"], order="frequency", frequency=freq) == ["b", "c", "a"]
    assert reorder_tags(["c", "a", "b"], order="front", front=["b", "missing", "a"]) == ["b", "a", "c"]
    assert reorder_tags(["x", "zz style"], order="frequency", frequency={}, triggers=T) == ["zz style", "x"]


def test_dedupe_keeps_first_spelling():
    assert dedupe_tags(["zz style", "a", "A", "zz_style", "b", "a"]) == ["zz style", "a", "b"]


# --- the op -----------------------------------------------------------------------------------------------------
def test_op_round_trips_and_accepts_comma_separated_tags():
    op = CaptionOp.from_dict({"op": "replace", "target": "long_hair", "replacement": "long hair, hair",
                              "concept": "alpha", "with_all": ["smile"]})
    assert op.replacement == ("long hair", "hair")
    assert CaptionOp.from_dict(op.to_dict()) == op
    assert CaptionOp.from_dict({"op": "dedupe", "concept": "", "kind": ""}) == CaptionOp(op="dedupe")
    assert op.describe() == "Replace 'long_hair' with 'long hair', 'hair' (concept 'alpha'; with smile)"


@pytest.mark.parametrize("data, message", [
    ({"op": "shuffle"}, "op: expected one of trigger, .* got 'shuffle'"),
    ({"op": "add"}, r"tags: the add op needs at least one tag, got \[\]"),
    ({"op": "add", "tags": ["a"], "position": "middle"}, "position: expected one of start, end, got 'middle'"),
    ({"op": "reorder", "order": "random"}, "order: expected one of frequency, alphabetical, front, got 'random'"),
    ({"op": "rename", "target": "a", "replacement": ["b", "c"]}, r"exactly one tag, got \['b', 'c'\]"),
    ({"op": "replace", "target": "", "replacement": ["b"]}, "target: the replace op needs the one tag"),
    ({"op": "remove", "tags": [3]}, r"tags: expected a list of strings, got \[3\]"),
    ({"op": "remove", "tags": ["a, b"]}, "'a, b' is not one tag"),
    ({"op": "prune", "tags": ["a"], "kind": "reg"}, "changes dataset captions only .* got 'reg'"),
    ({"op": "dedupe", "colour": "red"}, "unknown option\\(s\\) colour"),
    ("dedupe", "expected an object"),
])
def test_op_validation_names_the_bad_value(data, message):
    with pytest.raises(LorakitError, match=message):
        CaptionOp.from_dict(data)


# --- plan and execute on real files -----------------------------------------------------------------------------
@pytest.fixture
def tagged(project):
    """alpha (4 images), beta (2), a reg set; trigger word 'zz style'; one image without a caption."""
    project.update_settings(trigger_words=["zz style"])
    alpha = project.add_concept("alpha", repeats=2).folder
    beta = project.add_concept("beta").folder
    reg = project.add_concept("people", kind="reg").folder
    captions = {
        alpha / "a1.png": "zz style, 1girl, long_hair, smile, red dress",
        alpha / "a2.png": "zz style, 1girl, short hair, smile, smile",
        alpha / "a3.png": "zz style, 1girl, long hair, frown",
        alpha / "a4.png": None,
        beta / "b1.png": "zz style, 1boy, smile, armor",
        beta / "b2.png": "1boy, zz style, sitting",
        reg / "r1.png": "1girl, long hair, smile",
    }
    for image, text in captions.items():
        image.write_bytes(b"\x89PNG not decoded here")
        if text is not None:
            image.with_suffix(".txt").write_text(text + "\n")
    return project


def run(project, op: CaptionOp) -> dict[str, str]:
    store = CaptionStore(project)
    return plan(store.records(), op, trigger_words=project.settings.trigger_words)


def test_prune_removes_tags_from_dataset_captions_only(tagged):
    changes = run(tagged, CaptionOp(op="prune", tags=("1girl", "Long Hair")))
    assert changes == {"dataset/2_alpha/a1.png": "zz style, smile, red dress",
                       "dataset/2_alpha/a2.png": "zz style, short hair, smile, smile",
                       "dataset/2_alpha/a3.png": "zz style, frown"}


def test_remove_reaches_reg_captions_and_respects_the_scope(tagged):
    assert set(run(tagged, CaptionOp(op="remove", tags=("smile",)))) == {
        "dataset/2_alpha/a1.png", "dataset/2_alpha/a2.png", "dataset/1_beta/b1.png", "reg/1_people/r1.png"}
    assert set(run(tagged, CaptionOp(op="remove", tags=("smile",), concept="beta"))) == {"dataset/1_beta/b1.png"}
    assert set(run(tagged, CaptionOp(op="remove", tags=("smile",), kind="reg"))) == {"reg/1_people/r1.png"}
    assert set(run(tagged, CaptionOp(op="remove", tags=("smile",), with_all=("1girl",), without=("red dress",)))) \
        == {"dataset/2_alpha/a2.png", "reg/1_people/r1.png"}
    assert set(run(tagged, CaptionOp(op="remove", tags=("smile",), with_any=("armor", "red dress")))) == {
        "dataset/2_alpha/a1.png", "dataset/1_beta/b1.png"}
    assert set(run(tagged, CaptionOp(op="remove", tags=("smile",), images=("dataset/2_alpha/a2.png",)))) == {
        "dataset/2_alpha/a2.png"}


def test_add_creates_captions_only_for_images_named_explicitly(tagged):
    assert "dataset/2_alpha/a4.png" not in run(tagged, CaptionOp(op="add", tags=("outdoors",)))
    named = run(tagged, CaptionOp(op="add", tags=("outdoors",), position="start",
                                  images=("dataset/2_alpha/a4.png", "dataset/2_alpha/a1.png")))
    assert named == {"dataset/2_alpha/a4.png": "outdoors",
                     "dataset/2_alpha/a1.png": "zz style, outdoors, 1girl, long_hair, smile, red dress"}


def test_trigger_op_fixes_misplaced_triggers_and_leaves_reg_alone(tagged):
    changes = run(tagged, CaptionOp(op="trigger", tags=("new style",)))
    assert changes["dataset/1_beta/b2.png"] == "new style, 1boy, sitting"
    assert changes["dataset/2_alpha/a1.png"] == "new style, 1girl, long_hair, smile, red dress"
    assert not any(k.startswith("reg/") for k in changes) and "dataset/2_alpha/a4.png" not in changes


def test_replace_rename_reorder_dedupe_plan_only_what_changes(tagged):
    assert run(tagged, CaptionOp(op="rename", target="long hair", replacement=("long_hair",))) == {
        "dataset/2_alpha/a3.png": "zz style, 1girl, long_hair, frown",
        "reg/1_people/r1.png": "1girl, long_hair, smile"}
    assert run(tagged, CaptionOp(op="dedupe")) == {"dataset/2_alpha/a2.png": "zz style, 1girl, short hair, smile"}
    reorder = run(tagged, CaptionOp(op="reorder", order="front", tags=("smile",), concept="alpha"))
    assert reorder == {"dataset/2_alpha/a1.png": "zz style, smile, 1girl, long_hair, red dress",
                       "dataset/2_alpha/a2.png": "zz style, smile, smile, 1girl, short hair"}
    by_freq = run(tagged, CaptionOp(op="reorder", order="frequency", concept="beta"))
    # frequency over the whole project: smile (4 captions) before 1boy (2) before armor (1)
    assert by_freq == {"dataset/1_beta/b1.png": "zz style, smile, 1boy, armor",
                       "dataset/1_beta/b2.png": "zz style, 1boy, sitting"}


def test_trigger_words_are_not_arguments_of_other_ops(tagged):
    with pytest.raises(LorakitError, match="'ZZ_style': trigger words are changed with the trigger op"):
        run(tagged, CaptionOp(op="remove", tags=("ZZ_style",)))
    tagged.update_settings(trigger_words=[])
    with pytest.raises(LorakitError, match="set the trigger word first"):
        run(tagged, CaptionOp(op="prune", tags=("1girl",)))


def test_the_preview_is_what_execute_writes(tagged):
    store = CaptionStore(tagged)
    op = CaptionOp(op="replace", target="smile", replacement=("grin", "1girl"))
    preview = plan(store.records(), op, trigger_words=tagged.settings.trigger_words)
    entry = execute(store, op)
    assert entry.files == len(preview) == 4 and entry.label == op.describe()
    after = {r.image: r.text for r in store.records()}
    assert all(after[image] == text for image, text in preview.items())
    assert after["dataset/2_alpha/a1.png"] == "zz style, 1girl, long_hair, grin, red dress"
    store.undo()
    assert store.record("dataset/2_alpha/a1.png").text == "zz style, 1girl, long_hair, smile, red dress"


def test_diff_lists_added_and_removed_tags(tagged):
    records = CaptionStore(tagged).records()
    changes = plan(records, CaptionOp(op="replace", target="frown", replacement=("smile",)), trigger_words=T)
    [d] = diff(records, changes)
    assert (d.image, d.added, d.removed) == ("dataset/2_alpha/a3.png", ("smile",), ("frown",))


def test_frequency_counts_captions_per_concept(tagged):
    counts = frequency(CaptionStore(tagged).records())
    by_tag = {c.tag: c for c in counts}
    assert by_tag["smile"].total == 4  # a2 holds it twice: counted once
    assert by_tag["smile"].per_concept == {"alpha": 2, "beta": 1, "people (reg)": 1}
    assert by_tag["long hair"].total == 3  # 'long_hair' is the same tag
    assert [(c.tag, c.total) for c in counts[:3]] == [("zz style", 5), ("1girl", 4), ("smile", 4)]  # ties by name
    assert counts == sorted(counts, key=lambda c: (-c.total, c.tag.lower()))
    assert TagCount.from_dict(counts[0].to_dict()) == counts[0]


def test_filter_records_combines_conditions(tagged):
    records = CaptionStore(tagged).records()
    chosen = filter_records(records, with_all=["1girl"], with_any=["smile", "frown"], without=["red dress"],
                            kind="dataset")
    assert [r.image for r in chosen] == ["dataset/2_alpha/a2.png", "dataset/2_alpha/a3.png"]
