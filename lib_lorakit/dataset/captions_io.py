"""Reading caption files whatever their encoding."""

from __future__ import annotations

import codecs
from dataclasses import dataclass


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
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()
