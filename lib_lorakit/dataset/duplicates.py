"""Grouping exact and near duplicates among indexed images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class DuplicateGroup:
    kind: Literal["exact", "near"]
    images: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "images": list(self.images)}


def find_duplicates(items: Sequence[tuple[str, str, int]], max_distance: int) -> list[DuplicateGroup]:
    """Group `(path, sha256, phash)` items: same sha256 is exact; pHash within `max_distance` bits is near.

    A near group lists every image of the pictures involved, exact copies included; pictures that are only
    exact copies of each other appear once, as an exact group.
    """
    by_sha: dict[str, list[str]] = {}
    phash_of: dict[str, int] = {}
    for path, sha, ph in items:
        by_sha.setdefault(sha, []).append(path)
        phash_of.setdefault(sha, ph)
    groups = [DuplicateGroup("exact", tuple(sorted(p))) for p in by_sha.values() if len(p) > 1]
    shas = list(by_sha)
    for members in _near_components([phash_of[s] for s in shas], max_distance):
        groups.append(DuplicateGroup("near", tuple(sorted(p for i in members for p in by_sha[shas[i]]))))
    return sorted(groups, key=lambda g: (g.kind, g.images))


def _near_components(hashes: list[int], max_distance: int) -> list[list[int]]:
    n = len(hashes)
    if n < 2:
        return []
    h = np.array(hashes, dtype=np.uint64)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, n, 256):
        block = h[start:start + 256, None] ^ h[None, :]
        dist = _POPCOUNT[block.view(np.uint8)].reshape(block.shape + (8,)).sum(axis=-1)
        rows, cols = np.nonzero(dist <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            a, b = find(start + r), find(c)
            if a != b:
                parent[a] = b
    comps: dict[int, list[int]] = {}
    for i in range(n):
        comps.setdefault(find(i), []).append(i)
    return [m for m in comps.values() if len(m) > 1]
