"""The one shape of a long operation's reporting: `progress(done, total, message)` and a `cancel` flag.

Every long operation (import, scan, tagging, audit, trainer setup, a job's work) takes `progress=` and `cancel=` of
these types; a job (`jobs.JobManager`) passes its own, which write the job's file, and the CLI passes a printer.
(`train/progress.py` is another thing: it reads sd-scripts' console output.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

ProgressFn = Callable[[int, int, str], None]
"""Called as `progress(done, total, message)`: `done` of `total` units finished, `message` saying what runs now."""


class CancelFlag(Protocol):
    """Set when the user asked the work to stop (a `threading.Event` is one)."""

    def is_set(self) -> bool: ...
