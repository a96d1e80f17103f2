"""The webui's own DeepBooru and CLIP interrogators as taggers, reached through the Host (they exist only there).

Their models belong to the webui, which loads (and on first use fetches) them itself; we never download them.
Both answer with caption text, one image at a time; the tags are read back from that text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..captions.tags import split_tags
from ..host import Host
from .base import ImageTags, TagScore
from .wd14 import white_square

# A prepared image: the picture padded to a white square of this size (DeepBooru itself works at 512).
SIDE = 512
_RANKED = re.compile(r"^\((.+):([0-9.]+)\)$")  # "(tag:0.873)" when the webui is set to return ranks


@dataclass
class WebuiTagger:
    """`deepbooru` or `webui-clip`, run by the Host on the webui's own models."""

    host: Host
    which: str
    name: str = field(init=False)
    device: str = "the webui's device"
    batch_limit: int = 16

    def __post_init__(self) -> None:
        self.name = self.which

    def prepare(self, image: Image.Image) -> np.ndarray:
        return np.asarray(white_square(image.convert("RGB"), SIDE), dtype=np.uint8)

    def predict(self, batch: np.ndarray) -> list[ImageTags]:
        texts = self.host.interrogate(self.which, [Image.fromarray(a) for a in batch])
        return [ImageTags(tags=tuple(_scored(t, self.which) for t in split_tags(text))) for text in texts]

    def unload(self) -> None:
        """The webui unloads its interrogators after each call, as its settings say."""


def _scored(tag: str, category: str) -> TagScore:
    m = _RANKED.match(tag)
    if m:
        return TagScore(tag=m.group(1).strip(), score=float(m.group(2)), category=category)
    return TagScore(tag=tag, score=1.0, category=category)
