"""Which way each subject faces: `left`, `right`, `front`, `away` (or `unknown`), with a confidence and its reason.

Directions are in the picture's terms: `left` means the subject faces the left edge of the image.

Every estimator has one signature, `opinions(evidence) -> {image: Opinion}`, an opinion being a probability over
the four directions, a weight and a reason; `combine` pools them (a weighted product, so "a side view" from the
tags and "rather left than right" from the embeddings add up to "left") and a user's label beats everything.

- `FewShot`: the user's labels on image embeddings. Mirroring turns a subject the other way, so each labelled image
  is two examples, and the side score `w · (e(x) − e(flip x))` is exactly antisymmetric: the mirror of an image
  gets exactly the opposite score. Front / away / side comes from the mirror-symmetric `e(x) + e(flip x)`.
- `ZeroShot`: CLIP text prompts, while the labels cannot yet tell the poses apart (antisymmetric the same way).
- `HeadPose`: a face box inside a head box; the face sits on the side the head turns to.
- `TagEvidence`: caption tags (`from side`, `profile`, `looking back`, `from behind`, `facing left`, …).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from ..captions.tags import tag_key

DIRECTIONS = ("left", "right", "front", "away")
UNKNOWN = "unknown"
MIRROR = {"left": "right", "right": "left", "front": "front", "away": "away", UNKNOWN: UNKNOWN}
UNKNOWN_BELOW = 0.4  # a pooled estimate less sure than this is reported as unknown
_FLOOR = 0.02  # no single estimator may rule a direction out entirely


@dataclass(frozen=True)
class Opinion:
    """What one estimator thinks of one image: probabilities over DIRECTIONS, how much it counts, and why."""

    probs: tuple[float, float, float, float]
    weight: float
    reason: str


@dataclass(frozen=True)
class Estimate:
    image: str
    direction: str  # one of DIRECTIONS or "unknown"
    confidence: float  # 0–1
    reason: str
    probabilities: dict[str, float] = field(default_factory=dict)
    labelled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "direction": self.direction, "confidence": round(self.confidence, 4),
                "reason": self.reason, "labelled": self.labelled,
                "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()}}


@dataclass
class Evidence:
    """Everything the estimators may use, for the images being estimated. `vectors[i]` and `flipped[i]` are the
    embeddings of `embedded[i]` and of its mirror image; `labels` are directions of the training copies as they are
    now; `boxes` hold detector boxes (objects with kind, left, top, right, bottom, score)."""

    images: list[str]
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, Sequence[str]] = field(default_factory=dict)
    embedded: list[str] = field(default_factory=list)
    vectors: Optional[np.ndarray] = None
    flipped: Optional[np.ndarray] = None
    embed_texts: Optional[Callable[[list[str]], Optional[np.ndarray]]] = None
    boxes: Mapping[str, Sequence[Any]] = field(default_factory=dict)


@runtime_checkable
class DirectionEstimator(Protocol):
    """One way of telling the direction; images it has nothing to say about are left out of its answer."""

    name: str

    def opinions(self, evidence: Evidence) -> dict[str, Opinion]: ...


# --- the few-shot classifier ---------------------------------------------------------------------------------------
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class LinearModel:
    """A multinomial logistic regression: probabilities = softmax(x @ weights + bias)."""

    weights: np.ndarray  # d × k
    bias: np.ndarray  # k

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return _softmax(np.asarray(x, dtype=np.float64) @ self.weights + self.bias)


def fit_linear(x: np.ndarray, y: np.ndarray, classes: int, *, l2: float = 0.01, bias: bool = True,
               iterations: int = 500) -> LinearModel:
    """Softmax regression with an L2 penalty, solved in the span of the examples (few examples, long vectors: the
    best weights lie in that span, so the work is n × n however long the vectors are). Deterministic."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    basis = vt[s > 1e-9 * max(float(s.max(initial=0.0)), 1e-30)].T  # d × r
    z = x @ basis
    n, r = z.shape
    onehot = np.eye(classes)[y]
    w, b = np.zeros((r, classes)), np.zeros(classes)
    step = 1.0 / (0.5 * float(np.linalg.norm(z, 2)) ** 2 / max(n, 1) + l2 + 1e-12)
    for _ in range(iterations):
        p = _softmax(z @ w + b)
        grad = p - onehot
        w -= step * (z.T @ grad / n + l2 * w)
        if bias:
            b -= step * grad.mean(axis=0)
    return LinearModel(weights=basis @ w, bias=b)


def side_model(differences: np.ndarray, left: np.ndarray, *, l2: float = 0.01) -> Callable[[np.ndarray], np.ndarray]:
    """P(left) for difference vectors `e(x) − e(flip x)`, taught by labelled differences (`left[i]` True/False).

    Each example also teaches its mirror (−d facing the other way) and the model has no bias, so the answer for a
    mirror image is exactly one minus the answer for the image: the score is antisymmetric by construction."""
    d = np.asarray(differences, dtype=np.float64)
    scale = float(np.mean(np.linalg.norm(d, axis=1))) or 1.0
    x = np.concatenate([d, -d]) / scale
    y = np.concatenate([np.where(left, 0, 1), np.where(left, 1, 0)])
    model = fit_linear(x, y, 2, l2=l2, bias=False)
    w = model.weights[:, 0] - model.weights[:, 1]

    def p_left(diff: np.ndarray) -> np.ndarray:
        score = np.asarray(diff, dtype=np.float64) @ w / scale
        return 1.0 / (1.0 + np.exp(-np.clip(score, -60, 60)))
    return p_left


def _unit_rows(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1.0)


POSES = ("side", "front", "away")


class FewShot:
    """The user's labels, taught to a classifier on image embeddings (see the module's docstring)."""

    name = "few-shot"

    def __init__(self, *, l2: float = 0.01, weight: float = 1.0):
        self.l2, self.weight = l2, weight

    def opinions(self, evidence: Evidence) -> dict[str, Opinion]:
        if evidence.vectors is None or evidence.flipped is None or not evidence.embedded:
            return {}
        row = {image: i for i, image in enumerate(evidence.embedded)}
        taught = {image: label for image, label in evidence.labels.items() if image in row and label in DIRECTIONS}
        sides = [(row[i], lab == "left") for i, lab in taught.items() if lab in ("left", "right")]
        if not sides:
            return {}
        vectors, flipped = np.asarray(evidence.vectors, np.float64), np.asarray(evidence.flipped, np.float64)
        diff = vectors - flipped
        p_left = side_model(diff[[r for r, _ in sides]], np.array([is_left for _, is_left in sides]), l2=self.l2)(diff)
        pose, pose_note = self._pose(_unit_rows(vectors + flipped), {row[i]: lab for i, lab in taught.items()},
                                     p_left)
        out = {}
        for image, i in row.items():
            side = pose[i, 0]
            probs = (side * p_left[i], side * (1 - p_left[i]), pose[i, 1], pose[i, 2])
            out[image] = Opinion(probs=probs, weight=self.weight,
                                 reason=f"few-shot on {len(taught)} label(s){pose_note}: "
                                        f"{_top(probs)} {max(probs):.2f}")
        return out

    def _pose(self, symmetric: np.ndarray, taught: Mapping[int, str], p_left: np.ndarray) -> tuple[np.ndarray, str]:
        """P(side, front, away) per image from the mirror-symmetric features. With only sides taught, how clearly
        an image is left or right is all there is: a clear side is likely a side view, an unclear one may be
        anything (the tags and the prompts decide)."""
        pose_of = {r: ("side" if lab in ("left", "right") else lab) for r, lab in taught.items()}
        present = sorted({POSES.index(p) for p in pose_of.values()})
        if len(present) < 2:
            side = 0.5 + 0.45 * np.abs(2 * p_left - 1)
            return np.stack([side, (1 - side) / 2, (1 - side) / 2], axis=1), " (sides only)"
        centred = symmetric - symmetric.mean(axis=0)
        rows = list(pose_of)
        scale = float(np.mean(np.linalg.norm(centred[rows], axis=1))) or 1.0
        y = np.array([present.index(POSES.index(pose_of[r])) for r in rows])
        model = fit_linear(centred[rows] / scale, y, len(present), l2=self.l2)
        probs = np.zeros((len(symmetric), 3))
        probs[:, present] = model.probabilities(centred / scale)
        return probs, ""


# --- zero-shot text prompts ----------------------------------------------------------------------------------------
PROMPTS = {
    "left": ("a picture of someone facing left", "a side view of a character facing to the left",
             "a profile facing the left side of the picture"),
    "right": ("a picture of someone facing right", "a side view of a character facing to the right",
              "a profile facing the right side of the picture"),
    "front": ("a picture of someone facing the viewer", "a front view of a character", "a face seen from the front"),
    "away": ("a picture of someone seen from behind", "a back view of a character facing away",
             "the back of a head"),
}
LOGIT_SCALE = 100.0  # CLIP's learned temperature, as its models ship


class ZeroShot:
    """CLIP text prompts per direction; the side part is made antisymmetric with the mirror image's embedding."""

    name = "zero-shot"

    def __init__(self, *, weight: float = 0.5):
        self.weight = weight

    def opinions(self, evidence: Evidence) -> dict[str, Opinion]:
        if evidence.vectors is None or evidence.flipped is None or evidence.embed_texts is None:
            return {}
        taught = {evidence.labels[i] for i in evidence.embedded if i in evidence.labels}
        if len({("side" if t in ("left", "right") else t) for t in taught}) >= 2:
            return {}  # the few-shot classifier can tell the poses apart: the labels know this project better
        texts = evidence.embed_texts([p for d in DIRECTIONS for p in PROMPTS[d]])
        if texts is None:
            return {}
        t = _unit_rows(np.asarray(texts, np.float64).reshape(len(DIRECTIONS), -1, texts.shape[-1]).mean(axis=1))
        vectors, flipped = np.asarray(evidence.vectors, np.float64), np.asarray(evidence.flipped, np.float64)
        side_score = LOGIT_SCALE * 0.5 * ((vectors - flipped) @ (t[0] - t[1]))
        p_left = 1.0 / (1.0 + np.exp(-np.clip(side_score, -60, 60)))
        sym = _unit_rows(vectors + flipped)
        pose = _softmax(LOGIT_SCALE * np.stack([sym @ _unit_rows((t[0] + t[1])[None])[0], sym @ t[2], sym @ t[3]], 1))
        out = {}
        for i, image in enumerate(evidence.embedded):
            probs = (pose[i, 0] * p_left[i], pose[i, 0] * (1 - p_left[i]), pose[i, 1], pose[i, 2])
            out[image] = Opinion(probs=probs, weight=self.weight,
                                 reason=f"CLIP prompts: {_top(probs)} {max(probs):.2f}")
        return out


# --- face inside head -----------------------------------------------------------------------------------------------
class HeadPose:
    """A face box inside a head box: the face's offset from the head's centre, in head widths, says which way the
    head turns (a small offset: it faces the viewer)."""

    name = "head-pose"

    def __init__(self, *, weight: float = 0.7, side_offset: float = 0.08):
        self.weight, self.side_offset = weight, side_offset

    def opinions(self, evidence: Evidence) -> dict[str, Opinion]:
        out = {}
        for image, boxes in evidence.boxes.items():
            pair = _face_in_head(boxes)
            if pair is None:
                continue
            face, head = pair
            offset = ((face.left + face.right) / 2 - (head.left + head.right) / 2) / max(head.right - head.left, 1e-6)
            p_left = 1.0 / (1.0 + math.exp(-25.0 * (-offset)))
            side = 0.8 if abs(offset) >= self.side_offset else 0.2
            probs = (side * p_left, side * (1 - p_left), (1 - side) * 0.9, (1 - side) * 0.1)
            out[image] = Opinion(probs=probs, weight=self.weight,
                                 reason=f"face {offset:+.2f} head widths from the head's centre: {_top(probs)}")
        return out


def _face_in_head(boxes: Sequence[Any]) -> Optional[tuple[Any, Any]]:
    heads = sorted((b for b in boxes if b.kind == "head"), key=lambda b: -b.score)
    faces = sorted((b for b in boxes if b.kind == "face"), key=lambda b: -b.score)
    for head in heads:
        for face in faces:
            cx, cy = (face.left + face.right) / 2, (face.top + face.bottom) / 2
            if head.left <= cx <= head.right and head.top <= cy <= head.bottom:
                return face, head
    return None


# --- caption tags ---------------------------------------------------------------------------------------------------
# tag key → (probabilities over DIRECTIONS); a side view without a side says nothing of left against right
_SIDE = (0.4, 0.4, 0.1, 0.1)
TAG_RULES: dict[str, tuple[float, float, float, float]] = {
    **dict.fromkeys(("facing left", "facing to the left", "looking left", "looking to the left"),
                    (0.8, 0.05, 0.1, 0.05)),
    **dict.fromkeys(("facing right", "facing to the right", "looking right", "looking to the right"),
                    (0.05, 0.8, 0.1, 0.05)),
    **dict.fromkeys(("from side", "profile", "side view", "facing to the side", "looking to the side", "looking back",
                     "looking afar"), _SIDE),
    **dict.fromkeys(("from behind", "facing away", "back view", "back focus"), (0.1, 0.1, 0.05, 0.75)),
    **dict.fromkeys(("facing viewer", "straight-on", "front view"), (0.1, 0.1, 0.75, 0.05)),
    "looking at viewer": (0.2, 0.2, 0.55, 0.05),
}


class TagEvidence:
    """Direction tags in the captions (`from side`, `profile`, `looking back`, `from behind`, `facing left`…)."""

    name = "tags"

    def __init__(self, *, weight: float = 0.6, rules: Mapping[str, tuple[float, ...]] = TAG_RULES):
        self.weight, self.rules = weight, rules

    def opinions(self, evidence: Evidence) -> dict[str, Opinion]:
        out = {}
        for image, tags in evidence.tags.items():
            found = [t for t in tags if tag_key(t) in self.rules]
            if not found:
                continue
            logp = sum(np.log(np.maximum(self.rules[tag_key(t)], _FLOOR)) for t in found)
            probs = tuple(float(p) for p in np.exp(logp - np.max(logp)) / np.exp(logp - np.max(logp)).sum())
            out[image] = Opinion(probs=probs, weight=self.weight,
                                 reason=f"tags {', '.join(repr(t) for t in found)}: {_side_words(probs)}")
        return out


def _top(probs: Sequence[float]) -> str:
    return DIRECTIONS[int(np.argmax(probs))]


def _side_words(probs: Sequence[float]) -> str:
    if abs(probs[0] - probs[1]) < 0.05 and probs[0] + probs[1] > 0.5:
        return "a side view"
    return _top(probs)


# --- pooling --------------------------------------------------------------------------------------------------------
def default_estimators() -> list[DirectionEstimator]:
    return [FewShot(), ZeroShot(), HeadPose(), TagEvidence()]


def combine(evidence: Evidence, estimators: Sequence[DirectionEstimator] | None = None) -> list[Estimate]:
    """One estimate per image: the user's label, else the estimators' opinions pooled (weighted product)."""
    found = [e.opinions(evidence) for e in (default_estimators() if estimators is None else estimators)]
    out = []
    for image in evidence.images:
        label = evidence.labels.get(image)
        if label in DIRECTIONS:
            probs = {d: float(d == label) for d in DIRECTIONS}
            out.append(Estimate(image=image, direction=label, confidence=1.0, reason="labelled by you",
                                probabilities=probs, labelled=True))
            continue
        out.append(pool(image, [ops[image] for ops in found if image in ops]))
    return out


def pool(image: str, opinions: Sequence[Opinion]) -> Estimate:
    """Opinions pooled as a weighted product of their probabilities (each floored, so none is a veto)."""
    if not opinions:
        return Estimate(image=image, direction=UNKNOWN, confidence=0.0,
                        reason="no evidence: label a few images, give an embedder, or tag their views")
    logp = sum(o.weight * np.log(np.maximum(np.asarray(o.probs, np.float64) / max(sum(o.probs), 1e-12), _FLOOR))
               for o in opinions)
    p = np.exp(logp - np.max(logp))
    p /= p.sum()
    best = int(np.argmax(p))
    reason = "; ".join(o.reason for o in opinions)
    direction = DIRECTIONS[best] if p[best] >= UNKNOWN_BELOW else UNKNOWN
    if direction == UNKNOWN:
        reason += f" (too unsure: {DIRECTIONS[best]} at {p[best]:.2f})"
    return Estimate(image=image, direction=direction, confidence=float(p[best]), reason=reason,
                    probabilities={d: float(v) for d, v in zip(DIRECTIONS, p, strict=True)})
