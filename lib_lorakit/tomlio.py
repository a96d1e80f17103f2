"""TOML in and out (tomllib on Python ≥ 3.11, tomli before: the webui still runs on 3.10)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import tomli_w

from .errors import LorakitError
from .fsutil import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised inside the webui's Python 3.10
    import tomli as tomllib


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise LorakitError(f"{path} is not valid TOML ({e}); fix or delete the file.") from e


def write_toml(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, tomli_w.dumps(data))
