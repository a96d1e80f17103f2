"""Captions as lists of tags: the one place a caption's text is split, joined and compared.

A caption is the comma-separated text sd-scripts reads (`shuffle_caption` and `keep_tokens` count commas).
Two spellings of one tag are the same tag: `long_hair`, `Long hair` and `long  hair` share a key, and so do
`smile \\(happy\\)` and `smile (happy)` (the webui's escaping of parentheses).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SPACES = re.compile(r"\s+")
_ESCAPED = re.compile(r"\\([()\[\]])")


def split_tags(text: str) -> list[str]:
    """The tags of a caption, in order: split on commas and line breaks, trimmed, empty pieces dropped."""
    return [t for t in (_SPACES.sub(" ", piece).strip() for piece in re.split(r"[,\n]", text)) if t]


def join_tags(tags: Iterable[str]) -> str:
    return ", ".join(tags)


def tag_key(tag: str) -> str:
    """What makes two tags the same: case, underscores, repeated spaces and escaped brackets don't count."""
    return _SPACES.sub(" ", _ESCAPED.sub(r"\1", tag).replace("_", " ")).strip().lower()


def dedupe(tags: Iterable[str]) -> list[str]:
    """Tags in order with later spellings of a tag already seen dropped."""
    seen: set[str] = set()
    out = []
    for t in tags:
        k = tag_key(t)
        if k and k not in seen:
            seen.add(k)
            out.append(t)
    return out


def escape_parentheses(tag: str) -> str:
    """`smile (happy)` → `smile \\(happy\\)`, so the webui reads the brackets literally, not as emphasis."""
    return re.sub(r"(?<!\\)([()])", r"\\\1", tag)
