"""The project's direction settings, declared once: the swap table, the flip-unsafe list, how sure an estimate must
be before Normalise flips its image. Stored in `.lorakit/direction/settings.json`; the CLI's `direction PROJECT
settings KEY=VALUE`, the API and the panel edit them through `DIRECTION_SCHEMA`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..schema import Field, Schema
from .swap import DEFAULT_FLIP_UNSAFE, DEFAULT_SWAP_WORDS, Pairs, parse_swap_words, parse_tag_list


def _combine(values: Mapping[str, Any]) -> list[str]:
    try:
        parse_swap_words(values["swap_words"])
    except ValueError as e:
        return [f"swap_words: {e}"]
    return []


DIRECTION_SCHEMA = Schema(noun="direction setting", groups=(("direction", "Direction"),), combine=_combine,
                          example="swap_words=left:right", fields=(
    Field(name="swap_words", type=str, default=DEFAULT_SWAP_WORDS, group="direction", label="Swap words",
          reason="Word pairs swapped in a flipped image's caption (a:b, comma-separated); whole words only, so "
                 "'facing left' becomes 'facing right' and 'leftover' stays."),
    Field(name="flip_unsafe", type=str, default=", ".join(DEFAULT_FLIP_UNSAFE), group="direction",
          label="Never flip images tagged",
          reason="Tags that make an image unsafe to mirror (text, signatures, asymmetric features), comma-"
                 "separated; such images are left alone and reported."),
    Field(name="min_confidence", type=float, default=0.6, minimum=0.0, maximum=1.0, group="direction",
          label="Flip when at least this sure",
          reason="Normalise flips only images whose estimate is at least this sure; label the others to include "
                 "them."),
))


@dataclass(frozen=True)
class DirectionSettings:
    """The settings, parsed for use."""

    swap_pairs: Pairs
    flip_unsafe: tuple[str, ...]
    min_confidence: float
    values: Mapping[str, Any]  # as declared (what is stored and shown)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DirectionSettings:
        values = DIRECTION_SCHEMA.from_dict(data or {}, path="direction")
        return cls(swap_pairs=parse_swap_words(values["swap_words"]),
                   flip_unsafe=parse_tag_list(values["flip_unsafe"]), min_confidence=values["min_confidence"],
                   values=values)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)
