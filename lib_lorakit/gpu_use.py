"""Who has the GPU in this process: image generation (a grid, regularisation images) or a training run.

A generator marks its work with `generating(...)`; the training queue starts a run only inside
`training_may_start()`, which refuses while anything is generated. Both take one lock, so a generation that
checks "is a run training?" and a queue that checks "is anything generated?" cannot both pass at once.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Optional

from .errors import LorakitError

_lock = threading.Lock()
_generating: dict[int, str] = {}
_tokens = itertools.count(1)


@contextmanager
def generating(what: str, *, refuse: Callable[[], Optional[str]] = lambda: None) -> Iterator[None]:
    """Mark `what` (e.g. "an X/Y/Z grid") as generated for the block. `refuse()` is asked under the queue's lock
    first: a message (e.g. "a run is training") stops the generation with that message."""
    with _lock:
        reason = refuse()
        if reason:
            raise LorakitError(reason)
        token = next(_tokens)
        _generating[token] = what
    try:
        yield
    finally:
        with _lock:
            _generating.pop(token, None)


def generating_now() -> Optional[str]:
    """What is being generated in this process now (the oldest), or None."""
    with _lock:
        return next(iter(_generating.values()), None)


@contextmanager
def training_may_start() -> Iterator[None]:
    """Held while the queue starts a run: raises LorakitError saying what is generated when something is."""
    with _lock:
        if _generating:
            what = next(iter(_generating.values()))
            raise LorakitError(f"Training waits: {what} is being generated on this GPU; the run starts when it has "
                               "finished.")
        yield
