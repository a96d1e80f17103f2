"""The one model store: where downloaded models live, and how a known model gets there.

A stored model is a folder holding a few files taken from one Hugging Face repository (WD14 taggers: `model.onnx`
and `selected_tags.csv` from SmilingWolf's repos; detectors: `model.onnx` and `labels.json` from a subfolder of a
deepghs repo). `resolve_model` finds such a folder or downloads it on first use: a download lands in a temporary
folder beside it and its files are renamed into place whole, the main file last, so an interrupted download never
looks like a usable model. Offline mode (`HF_HUB_OFFLINE`) and a missing huggingface_hub become messages that say
which files to place in which folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..errors import LorakitError

log = logging.getLogger(__name__)

MODEL_FILES = ("model.onnx", "selected_tags.csv")
_OWNER = "SmilingWolf"
KNOWN_WD14: dict[str, str] = {name: f"{_OWNER}/{name}" for name in (
    # v3: any batch size, 448 px, 10,861 tags
    "wd-vit-tagger-v3",
    "wd-convnext-tagger-v3",
    "wd-swinv2-tagger-v3",
    "wd-vit-large-tagger-v3",
    "wd-eva02-large-tagger-v3",
    # v1.4 family ("-v2" releases): ONNX files fixed to batch 1
    "wd-v1-4-moat-tagger-v2",
    "wd-v1-4-swinv2-tagger-v2",
    "wd-v1-4-convnext-tagger-v2",
    "wd-v1-4-convnextv2-tagger-v2",
    "wd-v1-4-vit-tagger-v2",
)}
DEFAULT_WD14 = "wd-vit-tagger-v3"


# --- any stored model ---------------------------------------------------------------------------------------------

def resolve_model(*, repo: str, files: Sequence[str], folder: Path, download: bool = True,
                  what: str = "model") -> Path:
    """`folder` once it holds every one of `files` (paths inside the Hub repository `repo`, kept in `folder` under
    their base names; the first is the main file). Downloaded there when missing and `download` is true.

    Every failure is a LorakitError naming `what` and saying which files to place in which folder.
    """
    folder = Path(folder)
    if not missing_files(folder, files):
        return folder
    if not download:
        raise LorakitError(place_by_hand(what=what, repo=repo, files=files, folder=folder,
                                         why="it is not downloaded yet and downloading is off"))
    _download(repo=repo, files=files, folder=folder, what=what)
    return folder


def local_names(files: Sequence[str]) -> list[str]:
    """The names `files` get in a model's folder (their base names)."""
    return [PurePosixPath(f).name for f in files]


def missing_files(folder: Path, files: Sequence[str]) -> list[str]:
    """Which of `files` (by base name) `folder` lacks."""
    return [name for name in local_names(files) if not (Path(folder) / name).is_file()]


def hub_page(repo: str, files: Sequence[str]) -> str:
    """Where a person finds `files` on the Hub: the repository, or the folder inside it that holds them."""
    parents = {str(PurePosixPath(f).parent) for f in files}
    sub = parents.pop() if len(parents) == 1 else "."
    return f"https://huggingface.co/{repo}" + ("" if sub == "." else f"/tree/main/{sub}")


def place_by_hand(*, what: str, repo: str, files: Sequence[str], folder: Path, why: str) -> str:
    """The message for a model that is not there: why, and which files to put where by hand."""
    return (f"The {what} is not available: {why}. Download {' and '.join(local_names(files))} from "
            f"{hub_page(repo, files)} and place them in {folder}")


def _download(*, repo: str, files: Sequence[str], folder: Path, what: str) -> None:
    """Fetch `files` into a temporary folder beside `folder`, then rename each into place, the main file last."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise LorakitError(place_by_hand(what=what, repo=repo, files=files, folder=folder,
                                         why="the huggingface_hub package is not installed, so it cannot be "
                                             "downloaded")) from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".download", dir=folder.parent))
    try:
        log.info("downloading the %s from %s into %s", what, hub_page(repo, files), folder)
        fetched = []
        for filename in files:
            try:
                fetched.append(Path(hf_hub_download(repo_id=repo, filename=filename, local_dir=staging)))
            except Exception as e:  # network, offline mode, HTTP and disk errors all come here; the cause is shown
                raise LorakitError(place_by_hand(what=what, repo=repo, files=files, folder=folder,
                                                 why=f"downloading {filename} failed ({why_download_failed(e)})")
                                   ) from e
        folder.mkdir(parents=True, exist_ok=True)
        # the other files first, the main file last: the folder counts as complete only once all are there
        for path, name in reversed(list(zip(fetched, local_names(files), strict=True))):
            os.replace(path, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def why_download_failed(e: BaseException) -> str:
    """A download error in a few words: offline mode, no connection, or the error's first line."""
    from huggingface_hub import constants

    # by name: the classes moved between huggingface_hub releases (the webui's 0.x and our 1.x both reach here)
    if {"OfflineModeIsEnabled", "LocalEntryNotFoundError"} & {c.__name__ for c in type(e).__mro__}:
        offline = getattr(constants, "is_offline_mode", None)
        if offline() if callable(offline) else getattr(constants, "HF_HUB_OFFLINE", False):
            return "offline mode is on: HF_HUB_OFFLINE is set"
        return "the Hugging Face Hub cannot be reached from this machine"
    return f"{type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = (str(e) or type(e).__name__).strip().splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."


# --- WD14 taggers -------------------------------------------------------------------------------------------------

def resolve_wd14_model(name_or_dir: str, models_root: Path, *, download: bool = True) -> Path:
    """The folder holding `model.onnx` and `selected_tags.csv` for a known model name or a local folder.

    A known name (or its repo id, `SmilingWolf/<name>`) maps to `<models_root>/<name>/`, downloaded there when
    missing and `download` is true. Anything else must be a folder that holds both files. Every failure is a
    LorakitError that says which files to place in which folder.
    """
    text = str(name_or_dir).strip()
    if not text:
        raise LorakitError(f"No WD14 model given: choose one of {', '.join(KNOWN_WD14)} or a folder holding "
                           f"{' and '.join(MODEL_FILES)}.")
    name = text.removeprefix(f"{_OWNER}/")
    if name in KNOWN_WD14:
        return resolve_model(repo=KNOWN_WD14[name], files=MODEL_FILES, folder=wd14_model_folder(name, models_root),
                             download=download, what=f"WD14 model {name}")
    folder = Path(os.path.expanduser(text))
    if folder.is_dir():
        missing = missing_files(folder, MODEL_FILES)
        if missing:
            raise LorakitError(f"The WD14 model folder {folder} lacks {' and '.join(missing)}: place "
                               f"{' and '.join(MODEL_FILES)} there (as found on "
                               f"https://huggingface.co/{KNOWN_WD14[DEFAULT_WD14]}).")
        return folder
    raise LorakitError(f"Unknown WD14 model {text!r}: choose one of {', '.join(KNOWN_WD14)}, or give a folder "
                       f"holding {' and '.join(MODEL_FILES)}.")


def wd14_model_folder(name: str, models_root: Path) -> Path:
    """Where a known model is kept (whether or not it is there yet)."""
    return Path(models_root) / name
