"""Semantic near-duplicates: pairs of images whose embeddings' cosine similarity reaches a threshold (as the Colab
dataset makers do with CLIP at 0.97–0.99). Pure numpy, in blocks, so 10,000 images never need a 10,000² matrix."""

from __future__ import annotations

import numpy as np

BLOCK = 1024  # rows compared at once: a BLOCK × n float32 matrix


def similar_pairs(vectors: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for i < j with cosine ≥ threshold, most similar first; rows are L2-normalised here too."""
    x = np.asarray(vectors, dtype=np.float32)
    if len(x) < 2:
        return []
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, len(x), BLOCK):
        sims = x[start:start + BLOCK] @ x.T
        rows, cols = np.nonzero(sims >= threshold)
        keep = cols > rows + start
        pairs += [(int(i) + start, int(j), float(sims[i, j])) for i, j in zip(rows[keep], cols[keep], strict=True)]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


def groups_of(pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    """The connected groups the pairs make (each sorted), largest first."""
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in list(parent):
        groups.setdefault(find(i), []).append(i)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g))
