"""Balancing repeats so each concept contributes about the same images × repeats to an epoch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import LorakitError
from ..project import MAX_REPEATS


@dataclass(frozen=True)
class RepeatChange:
    concept: str
    images: int
    repeats: int
    new_repeats: int

    @property
    def steps(self) -> int:
        return self.images * self.repeats

    @property
    def new_steps(self) -> int:
        return self.images * self.new_repeats

    def to_dict(self) -> dict:
        return {"concept": self.concept, "images": self.images, "repeats": self.repeats,
                "new_repeats": self.new_repeats, "images_x_repeats": self.steps,
                "new_images_x_repeats": self.new_steps}


def plan_balance(concepts: Sequence[tuple[str, int, int]], target: int | None = None) -> list[RepeatChange]:
    """For `(name, images, repeats)` triples, the repeats that bring images × repeats near `target`.

    Without a target, the largest concept's current images × repeats is the target, so no concept loses
    weight. Empty concepts keep their repeats.
    """
    if target is not None and target < 1:
        raise LorakitError(f"target: expected an integer ≥ 1, got {target}")
    filled = [c for c in concepts if c[1] > 0]
    goal = target if target is not None else max((n * r for _, n, r in filled), default=0)
    plan = []
    for name, images, repeats in concepts:
        new = repeats if images == 0 else min(MAX_REPEATS, max(1, round(goal / images)))
        plan.append(RepeatChange(concept=name, images=images, repeats=repeats, new_repeats=new))
    return plan
