"""Which model files a run may name, and who decides.

sd-scripts opens the base model, and any LoRA merged in first (`--base_weights`), with `safetensors` when the
name ends in `.safetensors` and with `torch.load` (a pickle: loading runs any code the file holds) otherwise. A
path typed into the tab or sent to the HTTP API may come from anyone who reaches the page: it must name one of
the Host's checkpoints, or a `.safetensors` file inside the models folder, the allowed folders (or, for a LoRA
merged in, the project), after resolving links. The command line runs with its user's own rights: any path
works, and a pickle gets a warning. The front end says which it is (`local_user`); the default is the confined
one.

The refusal for a path outside never depends on whether the file exists, so it tells nothing about the rest of
the disk; nothing is opened or checked before the path is known to be inside.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import PathNotAllowed
from ..host import Host

SAFE_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")


@dataclass(frozen=True)
class ModelPath:
    """A model file a run may use: `path` goes into the run's arguments; `warning` is for a local user's pickle."""

    path: Path
    warning: str = ""


def confine_model_path(host: Host, path: str | os.PathLike, *, local_user: bool, what: str = "base model",
                       extra_roots: Iterable[Path] = ()) -> ModelPath:
    """`path` checked for a run: for the local user (the CLI) as given, with a warning when sd-scripts would
    unpickle it; otherwise only a `.safetensors` file among the Host's checkpoints or inside the models folder,
    the allowed folders or `extra_roots`, links resolved. Raises PathNotAllowed (one text for every path outside,
    whether or not it exists)."""
    raw = os.fspath(path)
    if "\x00" in raw or not raw.strip():
        raise PathNotAllowed(f"The {what} path is empty or contains a NUL character: pick a model from the list.")
    given = Path(os.path.expanduser(raw))
    if local_user:
        return ModelPath(path=given.absolute(), warning=_pickle_warning(given, what))
    resolved = _resolve(given)
    roots = [Path(host.models_dir()), *host.allowed_roots(), *extra_roots]
    listed = {_resolve(Path(c.path)) for c in host.checkpoints()} - {None}
    if resolved is None or (resolved not in listed and not any(_inside(resolved, r) for r in roots)):
        shown = ", ".join(str(r) for r in roots)
        raise PathNotAllowed(f"The {what} {raw} is not one of the listed checkpoints, nor inside the models folder "
                             f"or the allowed folders ({shown}). Pick it from the list, or move it into the models "
                             "folder.")
    for name in (given.name, resolved.name):
        if not name.lower().endswith(SAFE_SUFFIX):
            raise PathNotAllowed(f"The {what} {raw} is not a .safetensors file. Other formats (.ckpt, .pt, .bin) "
                                 "are pickles whose loading can run any code they hold, so the tab and the HTTP API "
                                 "take only .safetensors: convert it, or train from the command line, which allows "
                                 "it with a warning.")
    return ModelPath(path=resolved)


def _pickle_warning(path: Path, what: str) -> str:
    if path.name.lower().endswith(SAFE_SUFFIX) or path.is_dir():
        return ""
    return (f"The {what} {path.name} is not a .safetensors file: sd-scripts loads it with torch.load, which runs "
            "any code the file holds. Use it only if you trust where it came from, or convert it to .safetensors.")


def _resolve(path: Path) -> Path | None:
    """The path with links resolved; None for a link loop (RuntimeError before Python 3.13), which counts as
    outside."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def _inside(path: Path, root: Path) -> bool:
    resolved = _resolve(root)
    return resolved is not None and (path == resolved or resolved in path.parents)
