"""A small classifier on image embeddings, in numpy: ridge regression to the classes on standardised features,
with a softmax whose temperature is fitted on held-out predictions, so that its confidences mean something.

Ridge has a closed form (one linear solve of the smaller of n × n and d × d), so 1,000 embeddings of 512 numbers train,
cross-validation included, in a fraction of a second. Cross-validation is leave-one-out for a few examples and
stratified k-fold beyond. The model is saved as JSON (classes, settings) and one `.npy` array — never pickled.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import LorakitError
from ..fsutil import atomic_write_bytes, atomic_write_json, read_json

L2 = 1.0  # ridge penalty per example, in units of a standardised feature's variance
BIAS_COLUMN = 10.0  # a constant feature this large carries the bias almost unpenalised
LEAVE_ONE_OUT_UP_TO = 30  # examples; beyond, k-fold
FOLDS = 5
DEFAULT_TEMPERATURE = 5.0  # when no example can be held out (a class with one example)


@dataclass(frozen=True)
class LinearClassifier:
    """Class probabilities = softmax(x @ weights + bias), standardisation and temperature folded in."""

    classes: tuple[str, ...]
    weights: np.ndarray  # d × k
    bias: np.ndarray  # k

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """n × k class probabilities of n embeddings."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.weights.shape[0]:
            raise LorakitError(f"The classifier takes vectors of {self.weights.shape[0]} numbers, got shape "
                               f"{x.shape}: it was trained with another embedder; train it again.")
        return _softmax(x @ self.weights + self.bias)

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class index, confidence = its probability) of each embedding."""
        p = self.probabilities(vectors)
        best = p.argmax(axis=1)
        return best, p[np.arange(len(p)), best]


@dataclass(frozen=True)
class Trained:
    model: LinearClassifier
    cv_accuracy: Optional[float]  # None: too few examples to hold any out
    temperature: float


def train(vectors: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], *, l2: float = L2) -> Trained:
    """Fit on n embeddings and their class indices; cross-validate; fit the softmax temperature on held-out scores."""
    x = np.asarray(vectors, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    if len(classes) < 2 or len(np.unique(y)) < 2:
        raise LorakitError("The sorter needs examples of at least two classes: label a few images of each.")
    held_scores = _held_out_scores(x, y, len(classes), l2)
    accuracy = None if held_scores is None else float((held_scores.argmax(axis=1) == y).mean())
    temperature = DEFAULT_TEMPERATURE if held_scores is None else _fit_temperature(held_scores, y)
    mean, scale, w, b = _ridge(x, y, len(classes), l2)
    weights = (w / scale[:, None]) * temperature
    bias = (b - (mean / scale) @ w) * temperature
    model = LinearClassifier(classes=tuple(classes), weights=weights.astype(np.float32), bias=bias.astype(np.float32))
    return Trained(model=model, cv_accuracy=accuracy, temperature=temperature)


def _ridge(x: np.ndarray, y: np.ndarray, k: int, l2: float) -> tuple[np.ndarray, ...]:
    """(mean, scale, weights d × k, bias k): scores = ((x − mean) / scale) @ weights + bias."""
    mean, scale = _scaling(x)
    a = _design(x, mean, scale)
    coef = _solve(a, np.eye(k)[y], l2)
    return mean, scale, coef[:-1], coef[-1] * BIAS_COLUMN


def _scaling(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    var = x.var(axis=0)
    # per-dimension scaling shrunk towards the average: a few examples estimate a dimension's spread poorly
    return mean, np.sqrt(0.5 * var + 0.5 * var.mean() + 1e-12).astype(np.float32)


def _design(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised features and the constant bias column, in float64 for the solve."""
    return np.hstack([(x - mean) / scale, np.full((len(x), 1), BIAS_COLUMN, dtype=np.float32)]).astype(np.float64)


def _solve(a: np.ndarray, targets: np.ndarray, l2: float, gram: Optional[tuple[np.ndarray, np.ndarray]] = None):
    """Ridge coefficients: through the p × p system (`gram` = (AᵀA, AᵀY) if already known) or, with fewer
    examples than features, the n × n one (the same solution)."""
    n, p = a.shape
    if n >= p:
        g, r = gram if gram is not None else (a.T @ a, a.T @ targets)
        return np.linalg.solve(g + l2 * n * np.eye(p), r)
    return a.T @ np.linalg.solve(a @ a.T + l2 * n * np.eye(n), targets)


def _held_out_scores(x: np.ndarray, y: np.ndarray, k: int, l2: float) -> Optional[np.ndarray]:
    """Each example's scores from a model trained without it (leave-one-out or k-fold); None when a class has
    fewer than two examples (a fold would lack it). The folds share the standardisation of all the examples (it
    uses no labels), so with many examples one Gram matrix serves every fold: each fold subtracts its own rows."""
    counts = np.bincount(y, minlength=k)
    if counts[counts > 0].min() < 2:
        return None
    folds = _folds(y, len(y) if len(y) <= LEAVE_ONE_OUT_UP_TO else min(FOLDS, int(counts[counts > 0].min())))
    mean, scale = _scaling(x)
    a = _design(x, mean, scale)
    targets = np.eye(k)[y]
    full = (a.T @ a, a.T @ targets) if len(a) >= a.shape[1] else None
    scores = np.zeros((len(y), k))
    for f in range(int(folds.max()) + 1):
        held = folds == f
        kept = a[~held]
        gram = None if full is None or len(kept) < a.shape[1] else \
            (full[0] - a[held].T @ a[held], full[1] - a[held].T @ targets[held])
        coef = _solve(kept, targets[~held], l2, gram)
        scores[held] = a[held] @ coef
    return scores


def _fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature that makes held-out scores most likely (golden-section search on its logarithm)."""
    def loss(log_t: float) -> float:
        z = np.exp(log_t) * scores
        z -= z.max(axis=1, keepdims=True)
        return float((np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]).mean())

    lo, hi = np.log(0.1), np.log(1000.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(m1) <= loss(m2):
            hi = m2
        else:
            lo = m1
    return float(np.exp((lo + hi) / 2))


def cross_validate(vectors: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> Optional[float]:
    """Accuracy on held-out examples (see `train`)."""
    return train(vectors, labels, classes).cv_accuracy


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _folds(y: np.ndarray, count: int) -> np.ndarray:
    """A fold number per example, each class dealt round-robin (deterministic; every fold sees every class)."""
    folds = np.zeros(len(y), dtype=np.int64)
    dealt = 0
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        folds[members] = (np.arange(len(members)) + dealt) % count
        dealt += len(members)
    return folds


# --- on disk ------------------------------------------------------------------------------------------------------

def store_classifier(folder: Path, model: LinearClassifier, info: dict[str, Any]) -> None:
    """`classifier.json` naming a `.npy` file of its arrays (written first), so a reader never sees a mismatch."""
    d, k = model.weights.shape
    if k > d:
        raise LorakitError(f"{k} classes on {d}-number embeddings: use fewer classes or a larger embedder.")
    bias = np.zeros(d, dtype=np.float32)
    bias[:k] = model.bias  # a row as long as the others
    arrays = np.vstack([model.weights.T, bias[None]]).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, arrays, allow_pickle=False)
    data = buffer.getvalue()
    name = f"classifier-{hashlib.sha256(data).hexdigest()[:16]}.npy"
    atomic_write_bytes(folder / name, data)
    atomic_write_json(folder / "classifier.json", {**info, "kind": "embedding", "classes": list(model.classes),
                                                   "arrays": name, "dim": int(d)})
    for old in folder.glob("classifier-*.npy"):
        if old.name != name:
            old.unlink(missing_ok=True)


def read_classifier(folder: Path) -> tuple[Optional[LinearClassifier], dict[str, Any]]:
    """(the classifier or None if none is saved or it is another kind, its JSON)."""
    try:
        info = read_json(folder / "classifier.json") or {}
    except ValueError as e:
        raise LorakitError(f"{folder / 'classifier.json'} is damaged ({e}); train the sorter again.") from e
    if info.get("kind") != "embedding":
        return None, info
    try:
        arrays = np.load(folder / Path(str(info["arrays"])).name, allow_pickle=False)
        classes = tuple(str(c) for c in info["classes"])
        k, d = len(classes), int(info["dim"])
        if arrays.shape != (k + 1, d):
            raise ValueError(f"arrays of shape {arrays.shape}, expected {(k + 1, d)}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LorakitError(f"The saved classifier in {folder} cannot be read ({e}); train the sorter again.") from e
    model = LinearClassifier(classes=classes, weights=arrays[:k].T.copy(), bias=arrays[k, :k].copy())
    return model, info
