"""The judge's arithmetic, pure numpy: a grid's samples and their vectors → the cells, epochs and recommendation of
judge.json (layout and units: `judge/__init__.py`).

Per cell (one epoch × weight, over its prompts and seeds):

* **copying** — the share of its samples whose nearest training image by the copy descriptor is at or above the
  threshold;
* **strength** — the mean CLIP cosine of its samples to the training images' centroid, placed on the way from the
  base model (the weight-0 cells: 0.0) to the training images themselves (their own mean cosine to the centroid: 1.0);
* **adherence** — the CLIP score of its off-dataset samples (each with its own prompt) divided by the weight-0
  cells' score (1.0: follows prompts as well as without the LoRA);
* **diversity** — the mean pairwise cosine distance of its samples in descriptor space.

Per epoch, the copying at weight 1 (or the highest weight at most 1, or the grid's highest); the first epoch whose
copy rate there is above `max_copy_rate`.

The recommendation, among cells with weight > 0, copying ≤ `max_copy_rate` and adherence ≥ the floor:

* `goal="style"`: the highest strength (ties — equal to 3 decimals — the earlier epoch, then the lower weight);
  the floor is `min_adherence`.
* `goal="character"`: consistency over smoothness (seeds/000). A character LoRA is meant to override more of the
  prompt, so the adherence floor is looser (`min_adherence` × CHARACTER_ADHERENCE_FACTOR); among the passing cells
  whose strength is within CHARACTER_STRENGTH_SLACK of the best one, the lowest diversity (the samples most alike:
  the same character every time), ties as for style.

A cell whose adherence cannot be measured (no off-dataset samples, or no weight-0 cells) is not held to the floor;
the reasons say it was not measured. No cell passes → no recommendation, and `why_none` says what failed and what to
try.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Optional

import numpy as np

from . import diversity, nearest

CHARACTER_ADHERENCE_FACTOR = 0.75
CHARACTER_STRENGTH_SLACK = 0.1
GOALS = ("style", "character")


@dataclass(frozen=True)
class Sample:
    """One made image of the grid: which cell of the grid, its file (project-relative) and what made it."""

    cell: int
    image: str
    epoch: str  # the epoch's label ("epoch 4", "final")
    weight: str  # as the grid writes it ("0.8")
    prompt: str
    kind: str  # "caption" (a training caption) or "off" (an off-dataset prompt)
    seed: int


@dataclass(frozen=True)
class Vectors:
    """The samples' vectors, row i for samples[i], and the training side's. All rows L2-normalised."""

    descriptor: np.ndarray  # samples × d (copy descriptor)
    clip: np.ndarray  # samples × c (CLIP image embedding)
    text: Optional[np.ndarray]  # samples × c: each sample's prompt embedded with CLIP's text tower (None: none)
    training_descriptor: np.ndarray  # training × d
    training_images: Sequence[str]  # the rows of training_descriptor, project-relative
    training_clip: np.ndarray  # training' × c (may hold other images than the descriptor's, e.g. one skipped)


@dataclass(frozen=True)
class Criteria:
    threshold: float
    max_copy_rate: float = 0.1
    min_adherence: float = 0.8
    goal: str = "style"

    @property
    def adherence_floor(self) -> float:
        return self.min_adherence * (CHARACTER_ADHERENCE_FACTOR if self.goal == "character" else 1.0)


@dataclass
class _Cell:
    epoch: str
    weight: str
    rows: list[int] = field(default_factory=list)


def score(samples: Sequence[Sample], vectors: Vectors, criteria: Criteria) -> dict[str, Any]:
    """`baseline`, `cells`, `epochs`, `first_copying_epoch`, `recommendation`, `why_none` of judge.json."""
    if criteria.goal not in GOALS:
        raise ValueError(f"goal: expected one of {', '.join(GOALS)}, got {criteria.goal!r}")
    idx, sims = nearest(vectors.descriptor, vectors.training_descriptor)
    copies = sims >= criteria.threshold
    to_centroid = _to_centroid(vectors.clip, vectors.training_clip)
    prompt_scores = _prompt_scores(samples, vectors)
    baseline = _baseline(samples, vectors, to_centroid, prompt_scores)
    groups = _groups(samples)
    cells = []
    for g in groups:
        cell = _cell(g, samples, vectors, baseline, to_centroid, prompt_scores, copies)
        cell["samples"] = [_sample(samples[i], vectors.training_images[idx[i]], sims[i], copies[i]) for i in g.rows]
        cells.append(cell)
    epochs = _epochs(cells, samples, copies, vectors)
    first = next((e["epoch"] for e in epochs if e["copy_rate"] > criteria.max_copy_rate), None)
    recommendation, why_none = recommend(cells, epochs, criteria)
    return {"baseline": baseline, "cells": cells, "epochs": epochs, "first_copying_epoch": first,
            "recommendation": recommendation, "why_none": why_none}


# --- the measures ---------------------------------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _to_centroid(clip: np.ndarray, training_clip: np.ndarray) -> tuple[np.ndarray, float]:
    """(each sample's cosine to the training centroid, the training images' own mean cosine to it)."""
    training_clip = np.asarray(training_clip, dtype=np.float32)
    if training_clip.ndim != 2 or len(training_clip) == 0:
        raise ValueError("no training CLIP vectors to measure strength against")
    centroid = _unit(training_clip.mean(axis=0))
    clip = np.asarray(clip, dtype=np.float32).reshape(-1, training_clip.shape[1])
    return clip @ centroid, float((training_clip @ centroid).mean())


def _prompt_scores(samples: Sequence[Sample], vectors: Vectors) -> np.ndarray:
    """Each off-dataset sample's cosine with its own prompt (NaN for caption samples or without text vectors)."""
    out = np.full(len(samples), np.nan, dtype=np.float64)
    if vectors.text is None:
        return out
    text = np.asarray(vectors.text, dtype=np.float32)
    clip = np.asarray(vectors.clip, dtype=np.float32)
    for i, s in enumerate(samples):
        if s.kind == "off":
            out[i] = float(clip[i] @ text[i])
    return out


def _zero(weight: str) -> bool:
    return Decimal(weight) == 0


def _baseline(samples: Sequence[Sample], vectors: Vectors, to_centroid: tuple[np.ndarray, float],
              prompt_scores: np.ndarray) -> Optional[dict[str, Any]]:
    rows = [i for i, s in enumerate(samples) if _zero(s.weight)]
    if not rows:
        return None
    sims, self_sim = to_centroid
    off = [prompt_scores[i] for i in rows if not np.isnan(prompt_scores[i])]
    return {"weight": "0", "clip_score": _round(np.mean(off)) if off else None,
            "similarity_to_training": _round(np.mean(sims[rows])), "training_self_similarity": _round(self_sim),
            "samples": len(rows)}


def _groups(samples: Sequence[Sample]) -> list[_Cell]:
    """The (epoch, weight) cells in grid order: epochs as they first appear, weights ascending."""
    by_key: dict[tuple[str, str], _Cell] = {}
    for i, s in enumerate(samples):
        by_key.setdefault((s.epoch, s.weight), _Cell(s.epoch, s.weight)).rows.append(i)
    epoch_order = list(dict.fromkeys(s.epoch for s in samples))
    return sorted(by_key.values(), key=lambda c: (epoch_order.index(c.epoch), Decimal(c.weight)))


def _cell(g: _Cell, samples: Sequence[Sample], vectors: Vectors, baseline: Optional[dict], to_centroid, prompt_scores,
          copies: np.ndarray) -> dict[str, Any]:
    sims, self_sim = to_centroid
    strength = None
    if baseline is not None:
        base = baseline["similarity_to_training"]
        span = self_sim - base
        strength = _round((float(np.mean(sims[g.rows])) - base) / span) if abs(span) > 1e-6 else None
    off = [prompt_scores[i] for i in g.rows if not np.isnan(prompt_scores[i])]
    clip_score = float(np.mean(off)) if off else None
    base_score = baseline.get("clip_score") if baseline else None
    adherence = _round(clip_score / base_score) if clip_score is not None and base_score and base_score > 0 else None
    unmeasured = {"strength": _why_no_strength(baseline, strength), "adherence": _why_no_adherence(
        clip_score, baseline, base_score, adherence)}
    div = diversity(np.asarray(vectors.descriptor)[g.rows])
    n_copies = int(sum(bool(copies[i]) for i in g.rows))
    return {"epoch": g.epoch, "weight": g.weight, "copy_rate": _round(n_copies / len(g.rows)),
            "copies": n_copies, "strength": strength, "adherence": adherence,
            "clip_score": None if clip_score is None else _round(clip_score),
            "diversity": None if div is None else _round(div),
            "unmeasured": {k: v for k, v in unmeasured.items() if v}}


def _why_no_strength(baseline: Optional[dict], strength: Optional[float]) -> str:
    if strength is not None:
        return ""
    if baseline is None:
        return "no weight-0 cells"
    return "the training images are no closer to their centre than the base model's samples are"


def _why_no_adherence(clip_score: Optional[float], baseline: Optional[dict], base_score: Optional[float],
                      adherence: Optional[float]) -> str:
    if adherence is not None:
        return ""
    if clip_score is None:
        return "no off-dataset prompts in this cell"
    if baseline is None or base_score is None:
        return "no weight-0 cells with off-dataset prompts"
    return (f"the base model's CLIP score is {base_score:.3f}, not above 0: this CLIP model cannot rate these "
            "prompts (random or unsuitable weights)")


def _sample(s: Sample, nearest_image: str, similarity: float, is_copy: bool) -> dict[str, Any]:
    return {"cell": s.cell, "image": s.image, "prompt": s.prompt, "kind": s.kind, "seed": s.seed,
            "nearest": nearest_image, "similarity": _round(similarity), "copy": bool(is_copy)}


def epoch_weight(weights: Sequence[str]) -> Optional[str]:
    """The weight an epoch's copying is read at: 1, else the highest weight above 0 and at most 1, else the grid's
    highest (None for no weights)."""
    if not weights:
        return None
    values = sorted(weights, key=Decimal)
    if any(Decimal(w) == 1 for w in values):
        return next(w for w in values if Decimal(w) == 1)
    below = [w for w in values if 0 < Decimal(w) <= 1]
    return below[-1] if below else values[-1]


def _epochs(cells: list[dict], samples: Sequence[Sample], copies: np.ndarray, vectors: Vectors) -> list[dict]:
    out = []
    for epoch in dict.fromkeys(c["epoch"] for c in cells):
        mine = [c for c in cells if c["epoch"] == epoch]
        weight = epoch_weight([c["weight"] for c in mine])
        cell = next(c for c in mine if c["weight"] == weight)
        out.append({"epoch": epoch, "weight": weight, "copy_rate": cell["copy_rate"], "diversity": cell["diversity"],
                    "copies": cell["copies"], "samples": len(cell["samples"])})
    return out


def _round(x: Any) -> float:
    return round(float(x), 4)


# --- the recommendation ---------------------------------------------------------------------------------------------
def failures(cell: dict, criteria: Criteria) -> list[str]:
    """Why a cell cannot be recommended, in words and numbers ([] when it can)."""
    out = []
    if Decimal(cell["weight"]) <= 0:
        out.append("weight 0 is the base model")
        return out
    if cell["copy_rate"] > criteria.max_copy_rate:
        out.append(f"copies {cell['copies']} of {len(cell['samples'])} samples "
                   f"({_pct(cell['copy_rate'])}, above {_pct(criteria.max_copy_rate)})")
    if cell["adherence"] is not None and cell["adherence"] < criteria.adherence_floor:
        out.append(f"adherence {cell['adherence']:.2f} of the base model's (below {criteria.adherence_floor:.2f})")
    return out


def recommend(cells: list[dict], epochs: list[dict], criteria: Criteria) -> tuple[Optional[dict], str]:
    """(recommendation, "") or (None, why none)."""
    order = list(dict.fromkeys(c["epoch"] for c in cells))
    passing = [c for c in cells if not failures(c, criteria)]
    if not passing:
        return None, why_none(cells, criteria)

    def key(c: dict) -> tuple:
        return -round(c["strength"] if c["strength"] is not None else -1e9, 3), order.index(c["epoch"]), \
            Decimal(c["weight"])

    ranked = sorted(passing, key=key)
    best = ranked[0]
    if criteria.goal == "character":
        top = best["strength"] if best["strength"] is not None else -1e9
        near = [c for c in ranked if c["strength"] is None or c["strength"] >= top - CHARACTER_STRENGTH_SLACK]
        best = sorted(near, key=lambda c: (round(c["diversity"] if c["diversity"] is not None else 9.0, 3),
                                           *key(c)))[0]
    reasons = _reasons(best, cells, epochs, passing, criteria)
    return {"epoch": best["epoch"], "weight": float(Decimal(best["weight"])), "goal": criteria.goal,
            "reasons": reasons, "scores": {"strength": best["strength"], "adherence": best["adherence"],
                                           "copy_rate": best["copy_rate"], "diversity": best["diversity"]}}, ""


def describe(cell: dict) -> str:
    """"epoch 4 at 0.8: strength 0.62 (62 % of the way to the training set), adherence 0.91 of the base model's,
    0 of 8 samples copy"."""
    parts = []
    s = cell["strength"]
    why = cell.get("unmeasured") or {}
    parts.append(f"strength not measured ({why.get('strength') or 'no weight-0 cells'})" if s is None
                 else f"strength {s:.2f} ({round(s * 100)} % of the way to the training set)")
    a = cell["adherence"]
    parts.append(f"adherence not measured ({why.get('adherence') or 'no off-dataset prompts or weight-0 cells'})"
                 if a is None else f"adherence {a:.2f} of the base model's")
    parts.append(f"{cell['copies']} of {len(cell['samples'])} samples copy")
    return f"{cell['epoch']} at {cell['weight']}: " + ", ".join(parts)


def _reasons(best: dict, cells: list[dict], epochs: list[dict], passing: list[dict], criteria: Criteria) -> list[str]:
    floor = criteria.adherence_floor
    rule = (f"the strongest of the {len(passing)} cells with weight above 0 that copy at most "
            f"{_pct(criteria.max_copy_rate)} of their samples and keep adherence ≥ {floor:.2f}")
    if criteria.goal == "character":
        rule = (f"goal character: of the {len(passing)} cells that copy at most {_pct(criteria.max_copy_rate)} and "
                f"keep adherence ≥ {floor:.2f} (looser for a character), the most consistent (diversity "
                f"{_num(best['diversity'])}) among those within {CHARACTER_STRENGTH_SLACK:g} of the best strength")
    out = [describe(best), f"Chosen as {rule}."]
    stronger = [c for c in cells if c not in passing and Decimal(c["weight"]) > 0 and c["strength"] is not None
                and best["strength"] is not None and c["strength"] > best["strength"]]
    for c in sorted(stronger, key=lambda c: -c["strength"])[:2]:
        out.append(f"Stronger but refused: {c['epoch']} at {c['weight']} (strength {c['strength']:.2f}): "
                   + "; ".join(failures(c, criteria)) + ".")
    copying = [e for e in epochs if e["copy_rate"] > criteria.max_copy_rate]
    if copying:
        e = copying[0]
        out.append(f"{e['epoch']} copies {e['copies']} of {e['samples']} at weight {e['weight']}: copying starts "
                   "there.")
    return out


def why_none(cells: list[dict], criteria: Criteria) -> str:
    live = [c for c in cells if Decimal(c["weight"]) > 0]
    if not live:
        return ("The grid has no cell with a weight above 0 (only the base model); judge a grid with the LoRA's "
                "weights, e.g. 0,0.4,0.8,1.")
    copying = [c for c in live if c["copy_rate"] > criteria.max_copy_rate]
    drifting = [c for c in live if c["adherence"] is not None and c["adherence"] < criteria.adherence_floor]
    parts = [f"No cell passes: of {len(live)} cells with weight above 0, {len(copying)} copy more than "
             f"{_pct(criteria.max_copy_rate)} of their samples and {len(drifting)} keep adherence below "
             f"{criteria.adherence_floor:.2f} of the base model's."]
    least = min(live, key=lambda c: (c["copy_rate"], -(c["adherence"] or 0)))
    parts.append(f"Closest: {describe(least)}.")
    if copying:
        parts.append("Copying: use an earlier epoch or lower weights, train less (fewer epochs or repeats, a lower "
                     "learning rate) or with more images, or raise max_copy_rate if these near-copies are acceptable.")
    if drifting:
        parts.append("Adherence: try lower weights or an earlier epoch, caption the dataset more fully so the "
                     "trigger holds the style, or lower min_adherence (or choose goal character).")
    return " ".join(parts)


def _pct(x: float) -> str:
    return f"{round(x * 100)} %"


def _num(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"
