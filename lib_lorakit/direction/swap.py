"""Direction words and flip safety: the caption side of mirroring an image.

A mirrored image faces the other way, so its caption's direction words must swap too (`facing left` →
`facing right`, `hand on left hip` → `hand on right hip`, `left-handed` → `right-handed`). Words are swapped only
whole (`leftover`, `upright` and `copyright` stay), in any case, with `_` and `-` counted as word breaks (booru
spellings such as `facing_left`). Some images must not be mirrored at all: text and signatures read backwards,
and asymmetric features (an eyepatch, a side ponytail) would teach the model the wrong side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from ..captions.tags import tag_key

DEFAULT_SWAP_WORDS = "left:right"
DEFAULT_FLIP_UNSAFE = (
    "eyepatch", "side ponytail", "asymmetrical hair", "asymmetrical bangs", "single braid", "single hair bun",
    "hair over one eye", "single earring", "single glove", "single horn", "single wing", "single thighhigh",
    "single sleeve", "mismatched legwear", "heterochromia", "text", "signature", "watermark", "artist name",
    "logo", "character name", "speech bubble", "web address", "twitter username", "dated",
)

Pairs = tuple[tuple[str, str], ...]


def parse_swap_words(text: str) -> Pairs:
    """`"left:right, east:west"` → `(("left", "right"), ("east", "west"))`; raises ValueError naming the bad item."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in (p.strip() for p in str(text).split(",")):
        if not item:
            continue
        a, sep, b = (s.strip().lower() for s in item.partition(":"))
        if not sep or not a or not b or a == b:
            raise ValueError(f"{item!r}: expected two different words joined by ':', e.g. left:right")
        for word in (a, b):
            if word in seen:
                raise ValueError(f"{item!r}: {word!r} is already in another pair; a word swaps with one other only")
            seen.add(word)
        pairs.append((a, b))
    return tuple(pairs)


def parse_tag_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of tags, each as its key (case, `_` and spacing don't count)."""
    return tuple(dict.fromkeys(k for k in (tag_key(t) for t in str(text).split(",")) if k))


@lru_cache(maxsize=64)
def _swap_pattern(pairs: Pairs) -> tuple[re.Pattern, dict[str, str]]:
    mapping = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    words = sorted(mapping, key=len, reverse=True)  # longest first: "left-handed" style pairs before "left"
    alternation = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![^\W_])({alternation})(?![^\W_])", re.IGNORECASE), mapping


def _same_case(new: str, old: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def swap_words(text: str, pairs: Pairs, *, keep: Iterable[str] = ()) -> str:
    """`text` with each word of a pair replaced by the other (whole words, case kept). Comma-separated pieces whose
    tag key is in `keep` (the trigger words) are left exactly as they are."""
    if not pairs or not text:
        return text
    pattern, mapping = _swap_pattern(tuple(pairs))
    kept = {tag_key(k) for k in keep}

    def one(piece: str) -> str:
        if tag_key(piece) in kept:
            return piece
        return pattern.sub(lambda m: _same_case(mapping[m.group(1).lower()], m.group(1)), piece)

    return "".join(one(p) if p not in (",", "\n") else p for p in re.split(r"([,\n])", text))


def unsafe_tags(tags: Sequence[str], unsafe: Sequence[str]) -> list[str]:
    """The caption tags that make the image unsafe to flip: a tag holding an unsafe term as whole words
    (`text` finds `english text` but not `textured`)."""
    found = []
    for tag in tags:
        key = tag_key(tag)
        for term in unsafe:
            if re.search(rf"(?<![^\W_]){re.escape(term)}(?![^\W_])", key):
                found.append(tag)
                break
    return found
