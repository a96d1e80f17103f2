"""Names and paths that come from users: validated before they touch the file system."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from .errors import InvalidName, PathNotAllowed
from .fsutil import readable_name

_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
_FORBIDDEN_CHARS = set('/\\:*?"<>|')
MAX_NAME_LENGTH = 100


def check_name(name: str, *, what: str = "name") -> str:
    """Return `name` if it can be one folder name on every OS sd-scripts runs on, else raise InvalidName."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidName(f"The {what} is empty: type a name.")
    if name != name.strip():
        raise InvalidName(f"The {what} {name!r} starts or ends with a space: remove it.")
    if name in (".", "..") or name.startswith("."):
        raise InvalidName(f"The {what} {name!r} starts with a dot: such folders are hidden or escape the project.")
    bad = sorted({c for c in name if c in _FORBIDDEN_CHARS or unicodedata.category(c).startswith("C")})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidName(f"The {what} {name!r} contains {shown}: use letters, digits, spaces, '-' and '_'.")
    if name.endswith("."):
        raise InvalidName(f"The {what} {name!r} ends with a dot, which Windows drops: remove it.")
    if name.split(".")[0].lower() in _WINDOWS_RESERVED:
        raise InvalidName(f"The {what} {name!r} is a reserved device name on Windows: choose another.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"The {what} is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}.")
    return name


def safe_file_stem(stem: str, fallback: str = "image") -> str:
    """Turn any file name stem into one that is safe in a dataset folder (used for copies, never for originals)."""
    cleaned = "".join(c if (c.isalnum() or c in "-_ ()") else "_" for c in unicodedata.normalize("NFC", stem))
    cleaned = re.sub(r"_+", "_", cleaned).strip(" ._")[:80]
    if not cleaned or cleaned.split(".")[0].lower() in _WINDOWS_RESERVED:
        return fallback
    return cleaned


def resolve_inside(path: str | os.PathLike, roots: Iterable[Path]) -> Path:
    """Resolve `path` (symlinks included) and return it if it lies inside one of `roots`, else raise."""
    raw = os.fspath(path)
    if "\x00" in raw:
        raise PathNotAllowed("The path contains a NUL character.")
    if not raw.strip():
        raise PathNotAllowed("The path is empty.")
    try:
        resolved = Path(os.path.expanduser(raw)).resolve()
    except RuntimeError as e:  # Python < 3.13 on a symlink loop
        raise PathNotAllowed(f"{readable_name(raw)} cannot be resolved: symbolic link loop.") from e
    roots = [Path(r).resolve() for r in roots]
    for root in roots:
        if resolved == root or root in resolved.parents:
            return resolved
    allowed = readable_name(", ".join(str(r) for r in roots) or "none configured")
    raise PathNotAllowed(f"{readable_name(raw)} is outside the allowed folders ({allowed}). Add its folder to the "
                         "allowed folders in the Train Style settings, or upload the files instead.")


def is_inside(path: Path, root: Path) -> bool:
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents
