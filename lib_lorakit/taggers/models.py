"""Where WD14 tagger models live, and how a known model gets there.

A WD14 model is a folder holding `model.onnx` and `selected_tags.csv` (SmilingWolf's layout on Hugging Face).
The user names either such a folder or one of the known models; a known model is kept in
`<models_root>/<name>/` and downloaded there on first use. A download lands in a temporary folder beside it and
its files are renamed into place whole, so an interrupted download never looks like a usable model.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

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
        folder = wd14_model_folder(name, models_root)
        if not _missing(folder):
            return folder
        if not download:
            raise LorakitError(_place_by_hand(name, folder, "it is not downloaded yet and downloading is off"))
        _download(name, folder)
        return folder
    folder = Path(os.path.expanduser(text))
    if folder.is_dir():
        missing = _missing(folder)
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


def _missing(folder: Path) -> list[str]:
    return [f for f in MODEL_FILES if not (folder / f).is_file()]


def _place_by_hand(name: str, folder: Path, why: str) -> str:
    return (f"The WD14 model {name} is not available: {why}. Download {' and '.join(MODEL_FILES)} from "
            f"https://huggingface.co/{KNOWN_WD14[name]} and place them in {folder}")


def _download(name: str, folder: Path) -> None:
    """Fetch the model's files into a temporary folder beside `folder`, then rename each into place."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise LorakitError(_place_by_hand(name, folder, "the huggingface_hub package is not installed, so it "
                                          "cannot be downloaded")) from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".download", dir=folder.parent))
    try:
        log.info("downloading WD14 model %s from https://huggingface.co/%s into %s", name, KNOWN_WD14[name], folder)
        for filename in MODEL_FILES:
            try:
                hf_hub_download(repo_id=KNOWN_WD14[name], filename=filename, local_dir=staging)
            except Exception as e:  # network, offline mode, HTTP and disk errors all come here; the cause is shown
                raise LorakitError(_place_by_hand(name, folder, f"downloading {filename} failed "
                                                  f"({_why_download_failed(e)})")) from e
        folder.mkdir(parents=True, exist_ok=True)
        # the tag list first, the model last: the folder counts as complete only once both are there
        for filename in reversed(MODEL_FILES):
            os.replace(staging / filename, folder / filename)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _why_download_failed(e: BaseException) -> str:
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
