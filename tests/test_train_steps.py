"""The step calculator: sd-scripts' step counts (reg sets, batch, accumulation, processes) and the rules of thumb,
with the "far off" thresholds pinned."""

from __future__ import annotations

import pytest

from lib_lorakit.errors import LorakitError
from lib_lorakit.train import steps as st
from lib_lorakit.train.steps import ConceptCount, plan_steps, reg_epoch_images, steps_per_image_band


def test_the_basic_sum():
    # 20 × 10 + 10 × 15 = 350 per epoch; batch 2 → 175 steps; 10 epochs → 1750
    p = plan_steps([(20, 10), (10, 15)], epochs=10, batch_size=2)
    assert (p.epoch_images, p.steps_per_epoch, p.total_steps, p.epochs) == (350, 175, 1750, 10)
    assert p.train_images == 30 and p.steps_per_image == pytest.approx(350 * 10 / 30, abs=0.01)


def test_rounding_up_accumulation_and_processes():
    p = plan_steps([(7, 1)], epochs=3, batch_size=2)  # ceil(7/2) = 4 batches
    assert (p.steps_per_epoch, p.total_steps) == (4, 12)
    p = plan_steps([(10, 1)], epochs=1, batch_size=1, gradient_accumulation_steps=3)  # ceil(10/3)
    assert p.steps_per_epoch == 4
    p = plan_steps([(10, 1)], epochs=1, batch_size=1, num_processes=4)  # ceil(10/4)
    assert p.steps_per_epoch == 3


def test_bucket_bound():
    p = plan_steps([(10, 1)], epochs=1, batch_size=4, buckets=3)
    assert (p.steps_per_epoch, p.steps_per_epoch_max) == (3, 5)
    assert plan_steps([(10, 1)], epochs=1, batch_size=1, buckets=3).steps_per_epoch_max == 10
    assert "per aspect-ratio bucket" in p.note


def test_max_train_steps_when_epochs_is_none():
    p = plan_steps([(20, 10)], epochs=None, max_train_steps=500)
    assert (p.total_steps, p.steps_per_epoch, p.epochs) == (500, 200, 3)  # sd-scripts rounds epochs up
    assert p.steps_per_image == 25.0
    assert plan_steps([(20, 10)], epochs=2, max_train_steps=500).total_steps == 400  # epochs win


@pytest.mark.parametrize("train, reg, expected", [
    (100, [(50, 1)], 100),  # too few: cycled up to the training count
    (100, [(500, 1)], 100),  # too many: cut
    (100, [(40, 3)], 34 * 3),  # whole images with their repeats until ≥ 100: 34 of the 40, 102 views
    (100, [(30, 3)], 100),  # 30 × 3 = 90, then one more view each until 100
    (100, [(10, 5), (20, 1)], 70 + 30),  # 50 + 20 = 70 < 100, then one more view each until 100
    (0, [(10, 1)], 0),
    (100, [], 0),
])
def test_reg_images_follow_sd_scripts(train, reg, expected):
    counted = [ConceptCount(images=i, repeats=r, is_reg=True) for i, r in reg]
    assert reg_epoch_images(train, counted) == expected


def test_reg_sets_double_the_epoch():
    p = plan_steps([ConceptCount(20, 10), ConceptCount(500, 1, is_reg=True)], epochs=10)
    assert (p.epoch_images, p.reg_epoch_images, p.steps_per_epoch, p.total_steps) == (200, 200, 400, 4000)
    assert p.steps_per_image == 100.0  # the training images' views only
    assert {"reg_doubles_epoch", "reg_unused"} <= set(p.codes())
    p = plan_steps([ConceptCount(20, 10), ConceptCount(5, 1, is_reg=True)], epochs=10)
    assert "reg_reused" in p.codes()


# --- rules of thumb ------------------------------------------------------------------------------------------------

def levels(p) -> dict[str, str]:
    return {w.code: w.level for w in p.warnings}


def test_a_plan_inside_every_rule_has_no_warnings():
    # 30 images × 10 repeats = 300 per epoch; 10 epochs; each image seen 100 times
    assert plan_steps([(10, 25)], epochs=10).warnings == ()  # 250/epoch, 250 views per image, 10 images


@pytest.mark.parametrize("epoch_images, code, level", [
    (199, "epoch_images_low", "info"), (100, "epoch_images_low", "info"), (99, "epoch_images_low", "warning"),
    (401, "epoch_images_high", "info"), (800, "epoch_images_high", "info"), (801, "epoch_images_high", "warning"),
])
def test_epoch_image_thresholds(epoch_images, code, level):
    assert st.EPOCH_IMAGES_TARGET == (200, 400) and st.EPOCH_IMAGES_FAR == (100, 800)
    p = plan_steps([(epoch_images, 1)], epochs=10)
    assert levels(p)[code] == level
    assert "users' rule: 200–400" in next(w.message for w in p.warnings if w.code == code)


@pytest.mark.parametrize("epochs, code, level", [
    (8, None, None), (12, None, None), (7, "epochs_low", "info"), (4, "epochs_low", "info"),
    (3, "epochs_low", "warning"), (13, "epochs_high", "info"), (25, "epochs_high", "info"),
    (26, "epochs_high", "warning"),
])
def test_epoch_thresholds(epochs, code, level):
    got = {c: lv for c, lv in levels(plan_steps([(300, 1)], epochs=epochs)).items() if c.startswith("epochs")}
    assert got == ({code: level} if code else {})


def test_steps_per_image_band_follows_seeds_002():
    assert steps_per_image_band(75) == (200, 300)
    assert steps_per_image_band(100) == (200, 300)
    assert steps_per_image_band(1000) == (30, 80)
    assert steps_per_image_band(5000) == (30, 80)
    lo, hi = steps_per_image_band(316)  # half-way on a log scale: geometric means
    assert lo == pytest.approx((200 * 30) ** 0.5, rel=0.01) and hi == pytest.approx((300 * 80) ** 0.5, rel=0.01)


@pytest.mark.parametrize("repeats, code, level", [
    (30, None, None),  # 300 views: top of the band
    (31, "steps_per_image_high", "info"),  # 310
    (60, "steps_per_image_high", "info"),  # 600 = 2 × 300
    (61, "steps_per_image_high", "warning"),  # far off: overcooking
    (19, "steps_per_image_low", "info"),  # 190: below, but only a note (DreamBooth counts)
    (1, "steps_per_image_low", "info"),
])
def test_steps_per_image_thresholds(repeats, code, level):
    assert st.FAR_FACTOR == 2.0
    got = {c: lv for c, lv in levels(plan_steps([(10, repeats)], epochs=10)).items() if c.startswith("steps")}
    assert got == ({code: level} if code else {})


def test_thousands_of_images_need_fewer_views():
    p = plan_steps([(2000, 1)], epochs=10)
    assert p.steps_per_image == 10 and levels(p)["steps_per_image_low"] == "info"
    assert "steps_per_image_high" in levels(plan_steps([(2000, 1)], epochs=170))  # 170 > 80


def test_empty_and_bad_inputs():
    p = plan_steps([(0, 5)], epochs=10)
    assert (p.total_steps, p.codes()) == (0, ["no_images"])
    assert plan_steps([(3, 1)], epochs=1, batch_size=8).codes().count("batch_larger_than_epoch") == 1
    with pytest.raises(LorakitError, match="concepts\\[0\\]: expected images ≥ 0 and repeats ≥ 1"):
        plan_steps([(3, 0)], epochs=1)
    with pytest.raises(LorakitError, match="batch_size: expected an integer ≥ 1, got 0"):
        plan_steps([(3, 1)], epochs=1, batch_size=0)
    with pytest.raises(LorakitError, match="Set max_train_epochs or max_train_steps"):
        plan_steps([(3, 1)], epochs=None)


def test_plan_project_counts_what_sd_scripts_globs(project):
    c = project.add_concept("alice", 10)
    for name in ("a.png", "b.JPG", "c.webp", "d.Png", "e.txt", "f.gif"):
        (c.folder / name).write_bytes(b"x")
    (c.folder / "sub").mkdir()
    (c.folder / "sub" / "g.png").write_bytes(b"x")
    r = project.add_concept("women", 1, kind="reg")
    (r.folder / "w.png").write_bytes(b"x")
    counts = st.project_counts(project)
    assert counts == [ConceptCount(3, 10, False, "alice"), ConceptCount(1, 1, True, "women")]
    settings = {"max_train_epochs": 2, "max_train_steps": None, "train_batch_size": 1,
                "gradient_accumulation_steps": 1}
    assert st.plan_project(project, settings).total_steps == 2 * (30 + 30)
