"""Registering what a run saved: every LoRA file into the Host's Lora folder with its card.

Its own module so that the queue (which registers a finished run) and the training service (which registers on
request) both use it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LorakitError
from ..host import Host
from ..project import Project
from ..results.registry import Registered, register_files
from .runner import Runs


def register_run(host: Host, project: Project, run_id: str, *, weight: float = 0.8) -> list[Registered]:
    """The run's saved LoRAs registered with the project's trigger words, its newest sample as the preview."""
    snap = Runs(project).get(run_id)
    files = [snap.dir / f for f in snap.files]
    if not files:
        raise LorakitError(f"Run {run_id} has saved no LoRA yet.")
    preview = snap.dir / snap.samples[-1] if snap.samples else None
    steps = snap.progress.get("total") or "?"
    images = snap.meta.get("steps", {}).get("train_images", "?")
    description = f"Train Style run {run_id}: preset {snap.meta.get('preset')}, {steps} steps, {images} images"
    return register_files(files, lora_dir=Path(host.lora_dir()), project=project.name,
                          trigger_words=snap.meta.get("trigger_words", []), description=description,
                          preview=preview, weight=weight, host=host)
