"""Evaluate: generate images with a LoRA through the Host, grids over epochs × weights × prompts, PNG Info.

The one generation interface every part codes against (issue 11): a `Generator` turns `GenRequest`s into
`GenImage`s with their infotext. Three implementations: in the webui (its own txt2img processing under its queue
lock, `webui_host.py`, the only core module that imports the webui), a webui elsewhere by URL
(`evaluate/remote.py`, `/sdapi/v1/txt2img`), and standalone through sd-scripts' own `gen_img.py` /
`sdxl_gen_img.py` in the trainer environment (`evaluate/sd_scripts_gen.py`). A generator that can make a whole X/Y/Z
grid itself (the webui's X/Y/Z plot script) also implements `XYZGenerator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

from PIL import Image

from ..progress import CancelFlag, ProgressFn


@dataclass(frozen=True)
class LoraUse:
    """A LoRA in a prompt: `name` as the webui's `<lora:NAME:WEIGHT>` names it (the file's stem / alias), the file
    itself where known (sd-scripts' generator needs the path)."""

    name: str
    weight: float = 1.0
    path: Optional[Path] = None


@dataclass(frozen=True)
class GenRequest:
    """One image to make. `prompt` holds no `<lora:…>` text: LoRAs are in `loras` and each generator writes them its
    own way (the webui's prompt syntax, sd-scripts' --network_weights/--network_mul). `checkpoint`: a name the Host
    knows (a webui checkpoint title or a file path); None: the Host's current / the project's base model."""

    prompt: str
    negative: str = ""
    seed: int = -1
    steps: int = 20
    sampler: str = "Euler a"
    cfg: float = 7.0
    width: int = 512
    height: int = 512
    checkpoint: Optional[str] = None
    loras: tuple[LoraUse, ...] = ()
    clip_skip: Optional[int] = None


@dataclass(frozen=True)
class GenImage:
    """One made image: the picture, its infotext in the webui's format (what PNG Info reads), the seed used."""

    image: Image.Image
    infotext: str
    seed: int
    request: Optional[GenRequest] = None


@dataclass(frozen=True)
class Axis:
    """One grid axis: a kind (`epoch`, `weight`, `prompt`, `checkpoint`, `seed`) and its values as shown."""

    kind: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class GridResult:
    """A grid made in one go (the webui's X/Y/Z plot): the grid picture with its own infotext, and every cell."""

    grid: Image.Image
    infotext: str
    cells: list[GenImage] = field(default_factory=list)


AxisSpec = tuple[str, Sequence[str]]  # (the X/Y/Z script's axis label, e.g. "Prompt S/R", the values as text)


@runtime_checkable
class Generator(Protocol):
    """Makes images. `name` says which (`webui`, `webui-api`, `sd-scripts`, or a test's)."""

    name: str

    def generate(self, requests: Sequence[GenRequest], *, progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelFlag] = None) -> list[GenImage]:
        """One image per request, in order; on cancel, the images made so far."""
        ...


@runtime_checkable
class XYZGenerator(Generator, Protocol):
    """A generator that makes a whole grid through the webui's X/Y/Z plot script (Prompt S/R axes over
    `<lora:NAME:WEIGHT>` text), so the grid PNG carries the webui's own grid infotext."""

    def xyz_grid(self, base: GenRequest, *, x: AxisSpec, y: Optional[AxisSpec] = None,
                 z: Optional[AxisSpec] = None, progress: Optional[ProgressFn] = None,
                 cancel: Optional[CancelFlag] = None) -> GridResult:
        """`x`/`y`/`z`: (axis label as the webui's X/Y/Z script names it, e.g. "Prompt S/R" or "Seed", values)."""
        ...
