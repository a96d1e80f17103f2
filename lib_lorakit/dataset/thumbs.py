"""Small previews of training images for galleries, cached by content so they are made once."""

from __future__ import annotations

from pathlib import Path

from ..fsutil import atomic_save_image
from ..images import ImageProblem, open_training_image
from ..project import Project

THUMB_SIZE = 256


def thumbnail(project: Project, rel: str, sha256: str) -> Path | None:
    """The cached thumbnail of a training image (made on first use); None if the image can't be read."""
    out = project.state_dir / "thumbs" / f"{sha256[:32]}.webp"
    if out.is_file():
        return out
    loaded = open_training_image(project.root / rel, max_pixels=project.settings.max_image_pixels)
    if isinstance(loaded, ImageProblem):
        return None
    img = loaded.image
    img.thumbnail((THUMB_SIZE, THUMB_SIZE))
    atomic_save_image(img, out, quality=80)
    return out
