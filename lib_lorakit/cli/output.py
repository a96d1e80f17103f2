"""The CLI's one output layer: text that may hold other people's text (captions, file names, LoRA metadata)
reaches the terminal only through here, and long work shows one progress line."""

from __future__ import annotations

import re
import sys
from typing import Any

from ..progress import ProgressFn

# What a terminal would act on rather than show: C0/C1 controls but tab and line feed (ESC starts sequences that
# recolour, move the cursor or retitle the window), bidirectional overrides, and unpaired surrogates (unprintable)
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def terminal_safe(text: str, *, json_escapes: bool = False) -> str:
    """`text` with every character a terminal would act on written as an escape (`\\x1b`; `\\u001b` inside JSON,
    which stays valid JSON). Captions, file names and LoRA metadata are anyone's text."""
    def escape(m: re.Match) -> str:
        code = ord(m.group())
        return f"\\u{code:04x}" if json_escapes or code > 0xFF else f"\\x{code:02x}"
    return _TERMINAL_UNSAFE.sub(escape, text)


def say(text: str, *, file: Any = None) -> None:
    """Print text that may hold others' text (the CLI's one way to write text to the terminal)."""
    print(terminal_safe(text), file=file or sys.stdout)


def progress_printer() -> ProgressFn:
    def show(done: int, total: int, message: str) -> None:
        print(f"\r[{done}/{total}] {terminal_safe(message[-60:]):<60}", end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)
    return show
