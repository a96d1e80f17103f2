"""Reading caption files whatever their encoding, and the rules every caption text follows.

A caption is what sd-scripts reads as the prompt of one image: a line of tags or words. Text from files, uploads
and edits passes `clean_caption_text` (control characters and unpaired surrogates removed) and `check_caption_length`
(a caption longer than `MAX_CAPTION_CHARS` is refused: sd-scripts reads at most 225 tokens, a few hundred characters).
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from dataclasses import dataclass

from ..errors import LorakitError
from ..fsutil import readable_name

MAX_CAPTION_CHARS = 10_000  # 225 CLIP tokens are ~1,000 characters; ten times that is certainly not a caption
MAX_CAPTION_FILE_BYTES = 4 * MAX_CAPTION_CHARS + 4  # UTF-16/UTF-8 of MAX_CAPTION_CHARS characters, plus a BOM
# C0 and C1 control characters except tab and newline, and unpaired UTF-16 surrogates (not encodable as UTF-8)
_UNWANTED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class CaptionTooLong(LorakitError, ValueError):
    """A caption over MAX_CAPTION_CHARS characters."""


class CaptionRefused(LorakitError):
    """A caption file that is not read: a symbolic link, not a regular file, or larger than a caption can be."""


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


def read_caption_bytes(path: str | os.PathLike[str]) -> bytes | None:
    """The bytes of the caption file at `path`, None when there is none.

    Only a regular file is read, never through a symbolic link at `path` (a link could make a caption show a file
    from anywhere, or `/proc/self/environ`), and never more than MAX_CAPTION_FILE_BYTES. Anything else raises
    CaptionRefused with what the user can do about it. Whether the folder holding `path` is where it should be is
    the caller's check.
    """
    name = readable_name(os.path.basename(os.fspath(path)))
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        if not nofollow and os.path.islink(path):  # no O_NOFOLLOW (Windows): ask first
            raise OSError(errno.ELOOP, "symbolic link")
        fd = os.open(path, os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK) or os.path.islink(path):
            raise CaptionRefused(f"{name} is a symbolic link; Train Style reads captions only from regular files "
                                 "(replace the link with a copy of the caption).") from e
        raise CaptionRefused(f"{name} cannot be read: {e.strerror or e}.") from e
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CaptionRefused(f"{name} is not a regular file; a caption is a small text file.")
        if info.st_size > MAX_CAPTION_FILE_BYTES:
            raise CaptionRefused(f"{name} is {info.st_size:,} bytes; a caption holds at most "
                                 f"{MAX_CAPTION_CHARS:,} characters ({MAX_CAPTION_FILE_BYTES:,} bytes): shorten it.")
        # only as many bytes as its size says: files like /proc's say 0, and a file growing meanwhile stops there
        chunks, left = [], info.st_size
        while left > 0:
            chunk = f.read(left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    return b"".join(chunks)


def read_caption_text(path: str | os.PathLike[str]) -> DecodedCaption | None:
    """`read_caption_bytes`, decoded and cleaned; a text over MAX_CAPTION_CHARS raises CaptionTooLong."""
    data = read_caption_bytes(path)
    if data is None:
        return None
    decoded = decode_caption(data)
    check_caption_length(decoded.text, what=readable_name(os.path.basename(os.fspath(path))))
    return decoded
