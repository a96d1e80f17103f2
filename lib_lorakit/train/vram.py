"""A rough VRAM estimate for a LoRA run, to warn before a run dies of out-of-memory minutes in.

The figures are coarse, from what users report for sd-scripts (SD1.5 LoRA at 512, batch 1, fp16: about 6 GB;
with gradient checkpointing about 4.5 GB; SDXL at 1024 with checkpointing: about 12 GB). They are meant to
catch the run that cannot fit, not to plan to the last megabyte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from .. import procs

# (weights and optimiser state, activations per image at the base resolution), in GB, by model family
_BASE = {"SD1": (3.0, 3.0, 512), "SD2": (3.5, 3.5, 768), "SDXL": (8.0, 12.0, 1024)}


@dataclass(frozen=True)
class VramEstimate:
    gb: float
    detail: str


def estimate_vram(family: str, settings: Mapping[str, Any]) -> VramEstimate:
    fixed, per_image, base_res = _BASE.get(family, _BASE["SD1"])
    res = int(settings.get("resolution") or base_res)
    batch = int(settings.get("train_batch_size") or 1)
    activations = per_image * batch * (res / base_res) ** 2
    if settings.get("gradient_checkpointing"):
        activations *= 0.5
    if str(settings.get("mixed_precision", "no")) == "no":
        fixed, activations = fixed * 1.6, activations * 1.8
    if not settings.get("cache_latents"):
        fixed += 0.3  # the VAE stays on the GPU to encode every step
    gb = round(fixed + activations, 1)
    return VramEstimate(gb, f"{family} at {res}px, batch {batch}, gradient checkpointing "
                            f"{'on' if settings.get('gradient_checkpointing') else 'off'}, precision "
                            f"{settings.get('mixed_precision', 'no')}")


def nvidia_smi_memory() -> Optional[tuple[int, int]]:
    """(free MB, total MB) of the first GPU from nvidia-smi, or None where there is none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        done = procs.run_captured([exe, "--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits"],
                                  env=os.environ, timeout_s=10)
        if done.returncode != 0:
            return None
        out = done.stdout
        free, total = (int(x) for x in out.splitlines()[0].split(","))
        return free, total
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
