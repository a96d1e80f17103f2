"""One caption from several taggers: trigger words first, then each tagger's tags in its own order, no repeats."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from ..captions.tags import dedupe, escape_parentheses, join_tags, split_tags, tag_key
from .base import ImageTags

# The order taggers' tags appear in a combined caption: booru tags (subject, character, details) first, then
# CLIP's words for what booru tags miss (style, medium, lighting, camera), then the webui's interrogators.
TAGGER_ORDER = ("wd14", "clip", "deepbooru", "webui-clip")


def combine_tags(found: dict[str, ImageTags], *, trigger_words: Sequence[str] = (),
                 keep: Iterable[str] = ()) -> list[str]:
    """The tags of one image: triggers, then tags the caller keeps (e.g. hand-written ones), then each tagger's."""
    ordered = sorted(found, key=lambda name: TAGGER_ORDER.index(name) if name in TAGGER_ORDER else len(TAGGER_ORDER))
    tags = [*trigger_words, *keep]
    for name in ordered:
        tags += found[name].names
    return dedupe(tags)


def combined_caption(found: dict[str, ImageTags], *, trigger_words: Sequence[str] = (), old_text: str = "",
                     overwrite: bool = True, escape: bool = False) -> str:
    """The caption to write: with `overwrite` only the triggers survive from the old caption, else its tags stay
    before the new ones (nothing a user wrote is dropped). `escape` writes the taggers' brackets as `\\(` `\\)`
    for the webui's prompt syntax (sd-scripts reads them literally, so it is off by default)."""
    triggers = {tag_key(t) for t in trigger_words}
    kept = [] if overwrite else [t for t in split_tags(old_text) if tag_key(t) not in triggers]
    new = {name: ImageTags(tags=tuple(replace(t, tag=escape_parentheses(t.tag)) for t in tags.tags))
           for name, tags in found.items()} if escape else found
    return join_tags(combine_tags(new, trigger_words=trigger_words, keep=kept))
