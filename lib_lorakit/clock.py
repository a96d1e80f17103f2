"""The one clock: UTC ISO-8601 times for what is written to disk, monotonic seconds for intervals and deadlines,
and the compact local stamp that names folders and files a person sorts by eye."""

from __future__ import annotations

import datetime as _dt
import time


def now_iso(*, timespec: str = "seconds") -> str:
    """Now in UTC, ISO-8601 with its offset (`2026-12-02T01:02:03+00:00`); `timespec="microseconds"` where two
    records written in one second must still sort in order."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec=timespec)


def monotonic() -> float:
    """Seconds on a clock that never goes back (for intervals and deadlines; meaningless across processes)."""
    return time.monotonic()


def stamp(*, micro: bool = False) -> str:
    """Local time as `YYYYmmdd-HHMMSS` (`-ffffff` with `micro`), for names that sort by when they were made."""
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f" if micro else "%Y%m%d-%H%M%S")


def zip_date_time() -> tuple[int, int, int, int, int, int]:
    """Local time as a ZIP entry records it (year, month, day, hour, minute, second)."""
    now = _dt.datetime.now()
    return (now.year, now.month, now.day, now.hour, now.minute, now.second)
