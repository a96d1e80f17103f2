"""A tiny TorchScript model in SSCD's input/output contract, random weights: plumbing, not copy detection.

SSCD's released `.torchscript.pt` files take a float batch [N, 3, H, W] (ImageNet-normalised RGB, any size) and
return [N, D] L2-normalised descriptors (D = 512 for the ResNet-50s). This one keeps that contract at toy size: two
strided convolutions, GeM pooling (as SSCD's head), a linear projection to `DIM`, L2 normalisation. Saved with
`torch.jit.script(...).save`, so the code under test loads it exactly as it loads SSCD's own file (torch.jit.load).
Random weights give vectors with no copy-detection meaning: tests use it for loading, batching, shapes, ids and the
store, never for what counts as a copy.
"""

from __future__ import annotations

import warnings
from pathlib import Path

DIM = 32


def save_tiny_sscd(path: Path, *, seed: int = 0, dim: int = DIM) -> Path:
    """Script and save the model (the same weights for the same seed); returns `path`."""
    import torch
    from torch import nn

    class TinySscd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 5, stride=4, padding=2), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
            self.p = 3.0  # GeM's exponent, as SSCD's pooling
            self.project = nn.Linear(32, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.body(x).clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
            return nn.functional.normalize(self.project(features), dim=1)

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # torch ≥ 2.10 marks TorchScript deprecated; SSCD's files are TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.script(TinySscd().eval())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return path
