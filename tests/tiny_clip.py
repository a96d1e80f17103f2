"""A tiny open_clip model for tests: the real CLIP architecture and tokenizer at toy size, random weights.

Registered with open_clip under `TINY_MODEL` (through `add_model_config`, which 2.20 and 2.32 both have) and saved
as a checkpoint file, so the tagger loads it the way it loads a user's local weights: `pretrained=<path>`.
Nothing is downloaded; building it takes well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from lib_lorakit.torchvision_shim import ensure_torchvision_importable

TINY_MODEL = "lorakit-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def register_tiny_clip(folder: Path) -> str:
    """Make `TINY_MODEL` known to open_clip (idempotent); returns its name."""
    ensure_torchvision_importable()
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        path = Path(folder) / f"{TINY_MODEL}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
        open_clip.add_model_config(path)
    return TINY_MODEL


def save_tiny_checkpoint(path: Path, *, seed: int = 0) -> Path:
    """Random weights for `TINY_MODEL` (the same for the same seed) saved as an open_clip checkpoint file."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_MODEL)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
