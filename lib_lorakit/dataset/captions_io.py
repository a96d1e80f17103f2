"""Reading caption files whatever their encoding, and the rules every caption text follows.

A caption is what sd-scripts reads as the prompt of one image: a line of tags or words. Text from files, uploads
and edits passes `clean_caption_text` (control characters and unpaired surrogates removed) and `check_caption_length`
(a caption longer than `MAX_CAPTION_CHARS` is refused: sd-scripts reads at most 225 tokens, a few hundred characters).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from ..errors import LorakitError

MAX_CAPTION_CHARS = 10_000  # 225 CLIP tokens are ~1,000 characters; ten times that is certainly not a caption
MAX_CAPTION_FILE_BYTES = 4 * MAX_CAPTION_CHARS + 4  # UTF-16/UTF-8 of MAX_CAPTION_CHARS characters, plus a BOM
# C0 and C1 control characters except tab and newline, and unpaired UTF-16 surrogates (not encodable as UTF-8)
_UNWANTED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class CaptionTooLong(LorakitError, ValueError):
    """A caption over MAX_CAPTION_CHARS characters."""


def clean_caption_text(text: str) -> str:
    """`text` with line ends unified, control characters and unpaired surrogates removed, ends stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _UNWANTED.sub("", text).strip()


def check_caption_length(text: str, *, what: str = "The caption") -> str:
    """Return `text`, or raise CaptionTooLong naming its length and the limit."""
    if len(text) > MAX_CAPTION_CHARS:
        raise CaptionTooLong(f"{what} is {len(text):,} characters long; the limit is {MAX_CAPTION_CHARS:,} "
                             "(sd-scripts reads at most 225 tokens, about 1,000 characters).")
    return text


@dataclass(frozen=True)
class DecodedCaption:
    text: str
    encoding: str
    fallback: bool  # True when the file was not valid UTF-8 and a guess was used


def decode_caption(data: bytes) -> DecodedCaption:
    """Decode caption bytes: BOMs first, then UTF-8, then Windows-1252, then Latin-1 (which never fails)."""
    for bom, enc in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return DecodedCaption(_clean(data.decode(enc)), enc, fallback=False)
            except UnicodeDecodeError:
                break
    try:
        return DecodedCaption(_clean(data.decode("utf-8")), "utf-8", fallback=False)
    except UnicodeDecodeError:
        pass
    try:
        return DecodedCaption(_clean(data.decode("cp1252")), "cp1252", fallback=True)
    except UnicodeDecodeError:
        return DecodedCaption(_clean(data.decode("latin-1")), "latin-1", fallback=True)


def _clean(text: str) -> str:
    return clean_caption_text(text)
