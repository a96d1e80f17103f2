"""Registration: every saved LoRA of a run appears in the webui's Lora folder with its card filled in.

    <Lora folder>/train-style/<project>/<file>.safetensors   hard link (or copy) of the run's file
                                       /<file>.json          the card: activation text, preferred weight, …
                                       /<file>.preview.png    the run's latest sample
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..fsutil import atomic_copy, atomic_write_json
from ..host import Host
from .lora_info import read_lora_info

SD_VERSIONS = {"sd_v1": "SD1", "sd_v2": "SD2", "sdxl": "SDXL"}


@dataclass(frozen=True)
class Registered:
    lora: Path
    card: Path
    preview: Optional[Path]

    def to_dict(self) -> dict:
        return {"lora": str(self.lora), "card": str(self.card), "preview": str(self.preview or "")}


def sd_version(base_model: str) -> str:
    for prefix, version in SD_VERSIONS.items():
        if base_model.startswith(prefix):
            return version
    return "Unknown"


def card_for(lora: Path, *, trigger_words: Sequence[str], weight: float, description: str) -> dict:
    info = read_lora_info(lora)
    return {"description": description, "sd version": sd_version(info.base_model),
            "activation text": ", ".join(trigger_words), "preferred weight": weight, "negative text": "",
            "notes": f"Trained by Train Style. sha256 {info.sha256}"}


def register_files(files: Sequence[Path], *, lora_dir: Path, project: str, trigger_words: Sequence[str],
                   description: str, preview: Optional[Path] = None, weight: float = 0.8,
                   host: Optional[Host] = None) -> list[Registered]:
    """Link (or copy) each LoRA into the Lora folder with its card and preview; then refresh the webui's list."""
    target = Path(lora_dir) / "train-style" / project
    target.mkdir(parents=True, exist_ok=True)
    done = []
    for src in files:
        dest = target / src.name
        _link_or_copy(src, dest)
        card = dest.with_suffix(".json")
        atomic_write_json(card, card_for(dest, trigger_words=trigger_words, weight=weight, description=description))
        shown = None
        if preview is not None and preview.is_file():
            shown = dest.with_name(dest.stem + ".preview.png")
            atomic_copy(preview, shown)
        done.append(Registered(lora=dest, card=card, preview=shown))
    if host is not None:
        host.refresh_loras()
    return done


def _link_or_copy(src: Path, dest: Path) -> None:
    if dest.exists() and os.path.samefile(src, dest):
        return
    tmp = dest.with_name(f".{dest.name}.link")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(src, tmp)
        os.replace(tmp, dest)
    except OSError:  # another file system, or links not allowed: copy instead
        atomic_copy(src, dest)
