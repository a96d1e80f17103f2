"""The webui's infotext, written: the text PNG Info reads from an image (the PNG `parameters` chunk).

Every generator that does not get its infotext from the webui itself (sd-scripts' gen_img.py, a test's) writes it
here, in the webui 1.10.1 format (`modules/processing.py: create_infotext`):

    prompt <lora:NAME:0.8>
    Negative prompt: negative
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 0123456789, Model: sd15,
    Lora hashes: "NAME: 0123456789ab"

A value holding a comma, a colon or a line break is written as a JSON string (the webui's `quote`). LoRAs are in
the prompt as the webui shows them: `<lora:NAME:WEIGHT>` after the prompt, one space apart (how a card click adds
them), and in `Lora hashes` by name without `:` and `,` (the webui strips those).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..errors import LorakitError
from ..fsutil import atomic_save_image
from . import GenImage, LoraUse

# the webui 1.10.1 schedule labels a sampler name may end with ("DPM++ 2M Karras"; modules/sd_schedulers.py)
SCHEDULES = ("Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal",
             "Align Your Steps", "Simple", "Normal", "DDIM", "Beta")
_NAME_SYMBOLS = str.maketrans("", "", ":,")


def quote(value: Any) -> str:
    """A value as the webui writes it: as is, or as a JSON string when it holds `,`, `:` or a line break."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def number(value: float) -> str:
    """A number as people write it: 7.0 → "7", 0.8 → "0.8", 0.30000000000000004 → "0.3"."""
    text = f"{float(value):.6g}"
    return "0" if text == "-0" else text


def lora_tag(lora: LoraUse) -> str:
    """`<lora:NAME:WEIGHT>` as the webui's prompt syntax writes a LoRA."""
    return f"<lora:{lora.name}:{number(lora.weight)}>"


def prompt_with_loras(prompt: str, loras: Sequence[LoraUse]) -> str:
    """The prompt as the webui shows it with these LoRAs: each `<lora:…>` after the prompt, one space apart."""
    return " ".join([prompt, *(lora_tag(lora) for lora in loras)]) if prompt else " ".join(map(lora_tag, loras))


def split_sampler(name: str) -> tuple[str, Optional[str]]:
    """"DPM++ 2M Karras" → ("DPM++ 2M", "Karras"); "Euler a" → ("Euler a", None): the webui's split of a sampler
    name into sampler and schedule type (modules/sd_samplers.py: get_sampler_and_scheduler)."""
    for schedule in SCHEDULES:
        if name.lower().endswith(" " + schedule.lower()):
            return name[: -len(schedule) - 1], schedule
    return name, None


def lora_hashes(pairs: Sequence[tuple[str, str]]) -> str:
    """The `Lora hashes` value: `name: shorthash, …`, names without `:` and `,`, each name once."""
    seen: dict[str, str] = {}
    for name, short in pairs:
        seen.setdefault(name.translate(_NAME_SYMBOLS), short)
    return ", ".join(f"{name}: {short}" for name, short in seen.items())


def format_infotext(*, prompt: str, negative: str, params: Mapping[str, Any]) -> str:
    """The whole infotext: the prompt, `Negative prompt:` when there is one, then `key: value` pairs (a None value
    is left out), as the webui's create_infotext joins them."""
    fields = ", ".join(f"{key}: {quote(value)}" for key, value in params.items() if value is not None)
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{fields}".strip()


def save_png(image: GenImage, path: Path, *, extra: Optional[Mapping[str, str]] = None) -> Path:
    """Save a made image as a PNG whose `parameters` chunk holds its infotext (what PNG Info reads), atomically;
    `extra`: more tEXt chunks."""
    return save_picture(image.image, image.infotext, path, extra=extra)


def save_picture(picture: Image.Image, infotext: str, path: Path, *,
                 extra: Optional[Mapping[str, str]] = None) -> Path:
    """Any picture (a cell, a drawn grid) as a PNG with `infotext` in its `parameters` chunk (none when empty)."""
    info = PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    for key, value in (extra or {}).items():
        info.add_text(key, value)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LorakitError(f"Made images are saved as .png files (their infotext is a PNG chunk), not {path.name}.")
    atomic_save_image(picture, path, pnginfo=info)
    return path
