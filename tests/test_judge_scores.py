"""judge/scores.py on vectors the tests place by hand.

Strength and adherence need a CLIP whose geometry means something (a random-weight tiny CLIP puts images and texts
anywhere), so these tests build the vectors themselves: the training images lie around a "style" direction, each
prompt has its own direction, and a sample is a mix of the base look, the style (more of it at higher weight) and
its prompt (less of it when the LoRA drowns the prompt). Copies are training descriptors with a little noise.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from lib_lorakit.judge.scores import (
    CHARACTER_ADHERENCE_FACTOR,
    Criteria,
    Sample,
    Vectors,
    describe,
    epoch_weight,
    failures,
    score,
)

D = 32  # CLIP space
DD = 256  # descriptor space: random directions in it are far apart (cosine ~ ±0.06)
RNG = np.random.default_rng(7)
STYLE, BASE = np.eye(D)[0], np.eye(D)[1]
PROMPTS = {"a cat riding a bicycle": np.eye(D)[2], "a city street at night": np.eye(D)[3]}
CAPTIONS = ["zyx style, a girl", "zyx style, a tree"]
TRAINING = [f"dataset/1_x/{i}.png" for i in range(6)]


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


TRAIN_DESC = np.stack([unit(RNG.normal(size=DD)) for _ in TRAINING])
TRAIN_CLIP = np.stack([unit(STYLE + 0.3 * RNG.normal(size=D) * (np.arange(D) >= 4)) for _ in TRAINING])


def grid(look, *, epochs=("epoch 1", "epoch 2", "epoch 3"), weights=("0", "0.4", "0.8", "1"), seeds=(1, 2)):
    """Samples and vectors of a grid; `look(epoch, weight, prompt, kind, seed)` → (descriptor, clip) of a sample."""
    samples, desc, clip, text = [], [], [], []
    prompts = [(p, "off") for p in PROMPTS] + [(c, "caption") for c in CAPTIONS]
    for seed in seeds:
        for prompt, kind in prompts:
            for epoch in epochs:
                for weight in weights:
                    i = len(samples)
                    samples.append(Sample(cell=i, image=f"eval/g/cells/{i:04d}.png", epoch=epoch, weight=weight,
                                          prompt=prompt, kind=kind, seed=seed))
                    d, c = look(epoch, float(weight), prompt, kind, seed)
                    desc.append(unit(d))
                    clip.append(unit(c))
                    text.append(PROMPTS.get(prompt, np.eye(D)[5]).astype(np.float32))
    return samples, Vectors(descriptor=np.stack(desc), clip=np.stack(clip), text=np.stack(text),
                            training_descriptor=TRAIN_DESC, training_images=TRAINING, training_clip=TRAIN_CLIP)


def fresh(seed_text):
    """A descriptor unlike every training image (its own random direction)."""
    return np.random.default_rng(zlib.crc32(repr(seed_text).encode())).normal(size=DD)


def healthy(epoch, w, prompt, kind, seed):
    """More style with weight (and a little with epoch), prompts followed, nothing copied."""
    e = int(epoch.split()[-1])
    topic = PROMPTS.get(prompt, np.eye(D)[5])
    return fresh((epoch, w, prompt, seed)), BASE * (1.2 - w) + STYLE * w * (0.6 + 0.1 * e) + topic


def copier(epoch, w, prompt, kind, seed):
    """`healthy`, except epoch 3 at weight ≥ 0.8 returns (lightly altered) training images."""
    if epoch == "epoch 3" and w >= 0.8:
        j = (seed + len(prompt)) % len(TRAINING)
        return TRAIN_DESC[j] + 0.05 * fresh((prompt, seed)), TRAIN_CLIP[j]
    return healthy(epoch, w, prompt, kind, seed)


def deaf(epoch, w, prompt, kind, seed):
    """`healthy`, except at weight ≥ 0.8 the prompt is ignored: every sample is the training style."""
    d, c = healthy(epoch, w, prompt, kind, seed)
    return (d, STYLE * 3 + BASE * 0.1) if w >= 0.8 else (d, c)


def cell(report, epoch, weight):
    return next(c for c in report["cells"] if c["epoch"] == epoch and c["weight"] == weight)


def test_copying_cells_are_flagged_and_the_recommendation_avoids_them():
    samples, vectors = grid(copier)
    report = score(samples, vectors, Criteria(threshold=0.5, max_copy_rate=0.1, min_adherence=0.5))
    for w in ("0.8", "1"):
        c = cell(report, "epoch 3", w)
        assert c["copy_rate"] == 1.0 and c["copies"] == 8
        assert all(s["copy"] and s["nearest"] in TRAINING and s["similarity"] >= 0.5 for s in c["samples"])
    assert cell(report, "epoch 3", "0.4")["copy_rate"] == 0.0
    assert report["first_copying_epoch"] == "epoch 3"
    assert report["epochs"][2] == {"epoch": "epoch 3", "weight": "1", "copy_rate": 1.0,
                                   "diversity": report["epochs"][2]["diversity"], "copies": 8, "samples": 8}
    rec = report["recommendation"]
    # the copying cells are the strongest of all; the recommendation takes the strongest that does not copy
    assert cell(report, "epoch 3", "1")["strength"] > cell(report, "epoch 2", "1")["strength"]
    assert (rec["epoch"], rec["weight"]) == ("epoch 2", 1.0)
    assert any("Stronger but refused: epoch 3 at 1" in r and "copies 8 of 8" in r for r in rec["reasons"])
    assert any(r.startswith("epoch 3 copies 8 of 8 at weight 1") for r in rec["reasons"])


def test_strength_runs_from_the_base_model_to_the_training_images():
    def look(epoch, w, prompt, kind, seed):
        if w == 0:
            return healthy(epoch, 0.0, prompt, kind, seed)
        j = seed % len(TRAINING)
        return fresh((epoch, w, prompt, seed)), TRAIN_CLIP[j] if w == 1 else healthy(epoch, w, prompt, kind, seed)[1]

    samples, vectors = grid(look, seeds=tuple(range(6)), epochs=("epoch 1",))
    report = score(samples, vectors, Criteria(threshold=0.5))
    assert cell(report, "epoch 1", "0")["strength"] == pytest.approx(0.0, abs=1e-3)
    assert cell(report, "epoch 1", "1")["strength"] == pytest.approx(1.0, abs=1e-3)  # the training images themselves
    assert 0 < cell(report, "epoch 1", "0.4")["strength"] < cell(report, "epoch 1", "0.8")["strength"] < 1
    base = report["baseline"]
    assert base["weight"] == "0" and base["samples"] == 24
    assert base["training_self_similarity"] > base["similarity_to_training"]


def test_a_lora_that_ignores_the_prompt_loses_adherence_and_is_not_recommended():
    samples, vectors = grid(deaf)
    report = score(samples, vectors, Criteria(threshold=0.5, min_adherence=0.8))
    assert cell(report, "epoch 2", "0")["adherence"] == pytest.approx(1.0, abs=0.05)
    assert cell(report, "epoch 2", "0.4")["adherence"] >= 0.8
    for w in ("0.8", "1"):
        assert cell(report, "epoch 2", w)["adherence"] < 0.3  # the off prompts' CLIP score collapses
        assert cell(report, "epoch 2", w)["copy_rate"] == 0.0
    rec = report["recommendation"]
    assert rec["weight"] == 0.4 and rec["scores"]["adherence"] >= 0.8
    assert any("Stronger but refused" in r and "adherence" in r and "below 0.80" in r for r in rec["reasons"])


def test_reasons_speak_in_words_and_numbers():
    samples, vectors = grid(copier)
    report = score(samples, vectors, Criteria(threshold=0.5, min_adherence=0.5))
    rec = report["recommendation"]
    c = cell(report, rec["epoch"], "1")
    first = rec["reasons"][0]
    assert first == describe(c)
    assert first.startswith("epoch 2 at 1: strength ")
    assert f"({round(c['strength'] * 100)} % of the way to the training set)" in first
    assert f"adherence {c['adherence']:.2f} of the base model's" in first and "0 of 8 samples copy" in first
    assert rec["scores"]["copy_rate"] == 0.0 and rec["goal"] == "style"


def test_no_cell_passes_gives_no_recommendation_and_says_what_to_try():
    def look(epoch, w, prompt, kind, seed):
        j = seed % len(TRAINING)
        return (TRAIN_DESC[j], TRAIN_CLIP[j]) if w > 0 else healthy(epoch, w, prompt, kind, seed)

    samples, vectors = grid(look)
    report = score(samples, vectors, Criteria(threshold=0.5, max_copy_rate=0.1))
    assert report["recommendation"] is None
    why = report["why_none"]
    assert "of 9 cells with weight above 0, 9 copy more than 10 %" in why
    assert "earlier epoch" in why and "max_copy_rate" in why
    assert report["first_copying_epoch"] == "epoch 1"


def test_ties_go_to_the_earlier_epoch_then_the_lower_weight():
    def look(epoch, w, prompt, kind, seed):  # every epoch alike; weights 0.8 and 1 the same strength
        topic = PROMPTS.get(prompt, np.eye(D)[5])
        return fresh((epoch, w, prompt, seed)), BASE * 0.2 + STYLE * min(w, 0.8) + topic

    samples, vectors = grid(look)
    rec = score(samples, vectors, Criteria(threshold=0.5, min_adherence=0.1))["recommendation"]
    assert (rec["epoch"], rec["weight"]) == ("epoch 1", 0.8)


def test_goal_character_prefers_consistent_samples_and_a_looser_adherence_floor():
    def look(epoch, w, prompt, kind, seed):
        d, c = healthy(epoch, w, prompt, kind, seed)
        topic = PROMPTS.get(prompt, np.eye(D)[5])
        if w == 1 and epoch == "epoch 1":  # strong, every sample different
            return d, STYLE * 1.55 + topic
        if w == 1 and epoch == "epoch 2":  # a little weaker, the same character in every sample
            return TRAIN_DESC[0] + 0.02 * fresh((prompt, seed)), STYLE * 1.5 + topic
        if w == 1 and epoch == "epoch 3":  # the strongest; its prompts slip below the style floor
            return d, STYLE * 1.5 + topic * 0.7
        return d, c

    samples, vectors = grid(look)
    criteria = dict(threshold=0.99, max_copy_rate=0.1, min_adherence=0.8)
    style = score(samples, vectors, Criteria(**criteria, goal="style"))
    character = score(samples, vectors, Criteria(**criteria, goal="character"))
    strongest = cell(style, "epoch 3", "1")
    assert 0.8 * CHARACTER_ADHERENCE_FACTOR <= strongest["adherence"] < 0.8
    assert strongest["strength"] > cell(style, "epoch 1", "1")["strength"] > cell(style, "epoch 2", "1")["strength"]
    assert failures(strongest, Criteria(**criteria, goal="style"))  # refused for a style …
    assert not failures(strongest, Criteria(**criteria, goal="character"))  # … fine for a character
    assert (style["recommendation"]["epoch"], style["recommendation"]["weight"]) == ("epoch 1", 1.0)
    rec = character["recommendation"]
    assert (rec["epoch"], rec["weight"]) == ("epoch 2", 1.0) and rec["goal"] == "character"
    assert cell(character, "epoch 2", "1")["diversity"] < 0.5 < cell(character, "epoch 1", "1")["diversity"]
    assert any("most consistent" in r and "adherence ≥ 0.60" in r for r in rec["reasons"])


def test_epoch_copying_is_read_at_weight_one_or_the_nearest_below():
    assert epoch_weight(["0", "0.5", "1", "1.2"]) == "1"
    assert epoch_weight(["0", "0.4", "0.8", "1.2"]) == "0.8"
    assert epoch_weight(["0", "1.2", "1.5"]) == "1.5"
    assert epoch_weight([]) is None


def test_a_grid_without_weight_zero_has_no_strength_nor_adherence():
    samples, vectors = grid(healthy, weights=("0.5", "1"))
    report = score(samples, vectors, Criteria(threshold=0.5))
    assert report["baseline"] is None
    assert all(c["strength"] is None and c["adherence"] is None for c in report["cells"])
    assert "not measured" in report["recommendation"]["reasons"][0]


def test_a_clip_that_cannot_rate_the_prompts_says_so_instead_of_blaming_the_grid():
    """A random-weight CLIP gives the base model a CLIP score at or below 0: adherence is then not a ratio of
    anything, and the reasons must say why (not "no off-dataset prompts", which the grid has)."""
    def blind(epoch, w, prompt, kind, seed):
        d, c = healthy(epoch, w, prompt, kind, seed)
        return d, c - 3 * PROMPTS.get(prompt, np.eye(D)[5])  # every sample points away from its own prompt

    samples, vectors = grid(blind)
    result = score(samples, vectors, Criteria(threshold=0.5))
    assert result["baseline"]["clip_score"] < 0
    cell = next(c for c in result["cells"] if c["weight"] == "0.8")
    assert cell["adherence"] is None
    assert "cannot rate these prompts" in cell["unmeasured"]["adherence"]
    text = describe(cell)
    assert "cannot rate these prompts" in text and "no off-dataset prompts" not in text
