"""Counting a caption's CLIP tokens the way the Stable Diffusion text encoder sees them.

sd-scripts feeds each caption to CLIP's tokenizer; with `--max_token_length` unset only the first 75 content
tokens reach the model (77 with the start and end tokens), and 150 or 225 are the longest it can be told to
read. Whatever lies past the limit is silently cut, so the caption tools show this count next to each caption.

This is CLIP's byte-level BPE written out here (no torch, no open_clip import): clean the text like CLIP
(ftfy when installed, HTML entities, runs of white space, lower case), split it into words, numbers and
punctuation runs, map each word's UTF-8 bytes to printable characters and merge pairs by rank from the
vocabulary file `bpe_simple_vocab_16e6.txt.gz` that open_clip (and OpenAI's `clip`) ship. Without that file
the count is a rough estimate, and says so.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import logging
import math
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger(__name__)

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
# The packages that ship the vocabulary file beside their code (looked up with find_spec, never imported).
VOCAB_PACKAGES = ("open_clip", "clip")
START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"
# sd-scripts' --max_token_length choices: 75 by default, 150 and 225 at most.
TOKEN_LIMITS = (75, 150, 225)
_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges of the file's list (its first line is a header)
_WORD_CLASSES = r"'s|'t|'re|'ve|'m|'ll|'d"
# Plain ASCII captions (nearly all of them) take a shorter road: ftfy, HTML unescaping and Unicode classes can
# change nothing there unless the text holds '&' or control characters, and `re` splits them faster than `regex`.
_NEEDS_FULL_CLEAN = re.compile(r"[&\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_SPLIT = re.compile(rf"[a-z]+|{re.escape(START_TOKEN)}|{re.escape(END_TOKEN)}|{_WORD_CLASSES}|[0-9]"
                          r"|[^\sa-z0-9]+")


@dataclass(frozen=True)
class TokenCount:
    """Content tokens of one caption (start and end tokens not counted); `estimated` when no vocabulary was found."""

    tokens: int
    estimated: bool

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "estimated": self.estimated}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenCount:
        return cls(tokens=int(data["tokens"]), estimated=bool(data["estimated"]))


def _byte_alphabet() -> dict[int, str]:
    """Each of the 256 byte values as one printable character: printable Latin-1 stays itself, the rest is
    moved above U+00FF, so that BPE never sees white space or control characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _compile_splitter() -> tuple[Callable[[str], list[str]], bool]:
    """CLIP's pre-tokeniser: special tokens, English contractions, letter runs, single digits, other runs.

    The `regex` package gives Unicode classes (\\p{L}, \\p{N}); without it `re` approximates them, which
    differs only for unusual numerals (e.g. "½"); the second value says whether the split is exact.
    """
    special = f"{re.escape(START_TOKEN)}|{re.escape(END_TOKEN)}"
    try:
        import regex
    except ImportError:
        pattern = re.compile(rf"{special}|{_WORD_CLASSES}|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)
        return pattern.findall, False
    pattern = regex.compile(rf"{special}|{_WORD_CLASSES}|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE)
    return pattern.findall, True


def _load_fix_text() -> Callable[[str], str]:
    """ftfy's mojibake repair when installed (CLIP and open_clip use it), else Unicode NFC, which ftfy also applies."""
    try:
        import ftfy
    except ImportError:
        return lambda text: unicodedata.normalize("NFC", text)
    return ftfy.fix_text


def clean_text(text: str, fix_text: Callable[[str], str] | None = None) -> str:
    """Text as CLIP's tokenizer reads it: repaired, HTML entities decoded (twice, as CLIP does), spaces squeezed,
    lower case."""
    text = (fix_text or _load_fix_text())(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class ClipBPE:
    """CLIP's tokenizer, from its vocabulary file. Thread-safe; words already seen come from a cache."""

    def __init__(self, vocab_file: Path):
        self.vocab_file = Path(vocab_file)
        merges = _read_merges(self.vocab_file)
        alphabet = _byte_alphabet()
        self._byte_char = [alphabet[b] for b in range(256)]
        symbols = list(alphabet.values())
        symbols += [s + "</w>" for s in symbols]
        symbols += ["".join(m) for m in merges]
        symbols += [START_TOKEN, END_TOKEN]
        self.encoder = {s: i for i, s in enumerate(symbols)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self._split, self.exact_split = _compile_splitter()
        self._fix_text = _load_fix_text()
        # The special tokens written literally in a caption stay one token each, as in transformers'
        # CLIPTokenizer, which sd-scripts uses (open_clip 2.32's SimpleTokenizer splits them like text).
        self._specials = {START_TOKEN: (self.encoder[START_TOKEN],), END_TOKEN: (self.encoder[END_TOKEN],)}
        self._cache: dict[str, tuple[int, ...]] = dict(self._specials)
        self._lock = threading.Lock()

    @property
    def start_id(self) -> int:
        return self.encoder[START_TOKEN]

    @property
    def end_id(self) -> int:
        return self.encoder[END_TOKEN]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`'s content, without the start and end tokens."""
        ids: list[int] = []
        for chunk in self._pieces(text):
            cached = self._cache.get(chunk)
            if cached is None:
                cached = self._encode_chunk(chunk)
                with self._lock:
                    if len(self._cache) > 200_000:  # a bound for long-running processes fed arbitrary text
                        self._cache = dict(self._specials)
                    self._cache[chunk] = cached
            ids.extend(cached)
        return ids

    def _pieces(self, text: str) -> list[str]:
        if text.isascii() and not _NEEDS_FULL_CLEAN.search(text):
            return _ASCII_SPLIT.findall(" ".join(text.split()).lower())
        return self._split(clean_text(text, self._fix_text))

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        chars = [self._byte_char[b] for b in chunk.encode("utf-8")]
        word = [*chars[:-1], chars[-1] + "</w>"]
        return tuple(self.encoder[s] for s in self._merge(word))

    def _merge(self, word: list[str]) -> list[str]:
        """Merge the lowest-ranked adjacent pair everywhere it occurs, until no known pair is left."""
        ranks = self.ranks
        while len(word) > 1:
            best = min(zip(word, word[1:], strict=False), key=lambda pair: ranks.get(pair, math.inf))
            if best not in ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word


def _read_merges(path: Path) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    return [tuple(line.split()) for line in lines[1:_MERGES + 1]]


def find_vocab(path: Path | None = None) -> Optional[Path]:
    """The vocabulary file: `path` when given (a file, or a folder holding it), else the copy inside an installed
    open_clip or clip package, located without importing the package (importing open_clip loads torch)."""
    if path is not None:
        p = Path(path)
        p = p / VOCAB_NAME if p.is_dir() else p
        return p if p.is_file() else None
    for package in VOCAB_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(folder) / VOCAB_NAME
            if candidate.is_file():
                return candidate
    return None


_loaded: dict[Optional[Path], Optional[ClipBPE]] = {}
_load_lock = threading.Lock()


def get_tokenizer(vocab: Path | None = None) -> Optional[ClipBPE]:
    """The tokenizer for `vocab` (or the installed vocabulary), loaded once per process; None when no file is
    found."""
    with _load_lock:
        if vocab not in _loaded:
            found = find_vocab(vocab)
            if found is None:
                logger.info("No CLIP vocabulary (%s) found; token counts are estimates.", VOCAB_NAME)
            _loaded[vocab] = ClipBPE(found) if found else None
        return _loaded[vocab]


def count_tokens(text: str, *, vocab: Path | None = None) -> TokenCount:
    """CLIP content tokens of `text` (start/end excluded), compared against the 75/150/225 limits of sd-scripts'
    `--max_token_length`. Without a vocabulary file, an estimate marked `estimated=True`."""
    tokenizer = get_tokenizer(vocab)
    if tokenizer is None:
        return TokenCount(tokens=estimate_tokens(text), estimated=True)
    return TokenCount(tokens=len(tokenizer.encode(text)), estimated=False)


def estimate_tokens(text: str) -> int:
    """A rough count for when the vocabulary is missing: common words are one token, long words about one per
    four letters, each digit one, punctuation one per two characters."""
    split, _ = _compile_splitter_cached()
    total = 0
    for chunk in split(clean_text(text, lambda t: unicodedata.normalize("NFC", t))):
        if chunk[0].isalpha():
            total += 1 if len(chunk) <= 6 else math.ceil(len(chunk) / 4)
        elif chunk[0].isdigit():
            total += 1
        else:
            total += math.ceil(len(chunk) / 2)
    return total


@lru_cache(maxsize=1)
def _compile_splitter_cached() -> tuple[Callable[[str], list[str]], bool]:
    return _compile_splitter()
